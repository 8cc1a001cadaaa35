//! stdio targets: the MCP server is a child process speaking newline-delimited JSON-RPC on
//! stdin/stdout. Each downstream session gets its own process (so notifications and
//! server-to-client requests belong to exactly one client), owned by this replica's session
//! state: it is killed, with its whole process group, when the session ends or idles out, when
//! the gateway shuts down, and (on Linux) when the gateway dies.

use super::mux::{Conn, Mux};
use super::UpstreamError;
use crate::BoxFut;

/// The session's server stream (the client's GET), if one is open: messages tagged by target.
pub type ServerStream = Arc<Mutex<Option<mpsc::Sender<(Arc<str>, Value)>>>>;
use serde_json::Value;
use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Longest line accepted from a child, so a broken server cannot grow the gateway unbounded.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct StdioSpec {
    pub cmd: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Process groups of every live child, killed on shutdown.
static CHILDREN: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn register(pgid: i32, add: bool) {
    let mut g = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    let set = g.get_or_insert_with(HashSet::new);
    if add {
        set.insert(pgid);
    } else {
        set.remove(&pgid);
    }
}

fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals the process group; no memory involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Kills every stdio child this process started. Called on shutdown.
pub fn kill_all() {
    let pgids: Vec<i32> = CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        .map(|s| s.drain().collect())
        .unwrap_or_default();
    for pgid in pgids {
        kill_group(pgid);
    }
}

pub struct StdioConn {
    mux: Arc<Mux>,
    stdin: mpsc::Sender<Vec<u8>>,
    pgid: i32,
    _child: tokio::process::Child,
}

impl Drop for StdioConn {
    fn drop(&mut self) {
        kill_group(self.pgid);
        register(self.pgid, false);
    }
}

impl StdioConn {
    pub fn spawn(
        target: Arc<str>,
        spec: &StdioSpec,
        server_stream: ServerStream,
    ) -> Result<Arc<StdioConn>, UpstreamError> {
        let mut cmd = tokio::process::Command::new(&spec.cmd);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl only sets this process's parent-death signal; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| UpstreamError::Failed(format!("cannot start `{}`: {e}", spec.cmd)))?;
        let pgid = child.id().map_or(0, |p| p as i32);
        register(pgid, true);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(UpstreamError::Failed("child has no stdio pipes".into()));
        };
        let (stdin_tx, mut stdin_rx) = mpsc::channel::<Vec<u8>>(64);
        let mux = Arc::new(Mux::new(target.clone(), server_stream));
        let conn = Arc::new(StdioConn {
            mux: mux.clone(),
            stdin: stdin_tx,
            pgid,
            _child: child,
        });
        tokio::spawn(async move {
            let mut stdin = stdin;
            while let Some(line) = stdin_rx.recv().await {
                if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        });
        let t = target.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "switchyard::mcp::stdio", mcp_target = %t, "{line}");
            }
        });
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(64 * 1024, stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                // A read error ends the child's stdout like EOF does.
                let n = (&mut reader)
                    .take(MAX_LINE_BYTES as u64)
                    .read_until(b'\n', &mut line)
                    .await
                    .unwrap_or_default();
                if n == 0 || (line.len() >= MAX_LINE_BYTES && !line.ends_with(b"\n")) {
                    mux.died();
                    return;
                }
                match serde_json::from_slice::<Value>(&line) {
                    Ok(msg) => mux.dispatch(msg).await,
                    Err(_) => {
                        tracing::debug!(mcp_target = %mux.target, "stdio target wrote a line that is not JSON")
                    }
                }
            }
        });
        Ok(conn)
    }

    async fn write_line(&self, msg: &Value) -> Result<(), UpstreamError> {
        let mut line = serde_json::to_vec(msg).unwrap_or_default();
        line.push(b'\n');
        self.stdin
            .send(line)
            .await
            .map_err(|_| UpstreamError::Failed("stdio MCP server is gone".into()))
    }
}

impl Conn for StdioConn {
    fn mux(&self) -> &Mux {
        &self.mux
    }

    fn write<'a>(&'a self, msg: &'a Value) -> BoxFut<'a, Result<(), UpstreamError>> {
        Box::pin(self.write_line(msg))
    }
}

/// Restart pacing for a target that keeps dying: 100 ms doubling to 30 s, reset once a
/// process has lived for a minute.
#[derive(Default)]
pub struct Backoff {
    failures: u32,
    last_start: Option<Instant>,
}

impl Backoff {
    /// How long to wait before the next start, given how long the previous process lived.
    pub fn next_delay(&mut self, previous_lived: Option<Duration>) -> Duration {
        if previous_lived.is_some_and(|d| d > Duration::from_secs(60)) {
            self.failures = 0;
        }
        let delay = match self.last_start {
            None => Duration::ZERO,
            Some(_) => {
                let d = Duration::from_millis(100) * 2u32.saturating_pow(self.failures.min(9));
                self.failures += 1;
                d.min(Duration::from_secs(30))
            }
        };
        self.last_start = Some(Instant::now());
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_resets_after_a_long_life() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(None), Duration::ZERO);
        assert_eq!(
            b.next_delay(Some(Duration::from_millis(5))),
            Duration::from_millis(100)
        );
        assert_eq!(
            b.next_delay(Some(Duration::from_millis(5))),
            Duration::from_millis(200)
        );
        assert_eq!(
            b.next_delay(Some(Duration::from_millis(5))),
            Duration::from_millis(400)
        );
        for _ in 0..20 {
            b.next_delay(Some(Duration::from_millis(5)));
        }
        assert_eq!(
            b.next_delay(Some(Duration::from_millis(5))),
            Duration::from_secs(30)
        );
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(120))),
            Duration::from_millis(100)
        );
    }

    #[tokio::test]
    async fn a_child_that_answers_and_one_that_dies() {
        // A shell "server": answers one request (after a notification of its own) and exits.
        let spec = StdioSpec {
            cmd: "sh".into(),
            args: vec![
                "-c".into(),
                r#"read line; echo '{"jsonrpc":"2.0","method":"notifications/message","params":{}}'; echo '{"jsonrpc":"2.0","id":1,"result":{"ok":true}}'; exit 0"#.into(),
            ],
            env: vec![],
        };
        let conn = StdioConn::spawn("t".into(), &spec, Arc::new(Mutex::new(None))).unwrap();
        let mut rx = conn
            .request(serde_json::json!({"jsonrpc":"2.0","id":"client-7","method":"ping"}))
            .await
            .unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!(first["method"], "notifications/message");
        let answer = rx.recv().await.unwrap();
        assert_eq!(answer["id"], "client-7", "the client's own id is restored");
        assert_eq!(answer["result"]["ok"], true);
        // The process exits: the connection notices and refuses new calls.
        for _ in 0..100 {
            if !conn.is_alive() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!conn.is_alive());
        assert!(conn
            .request(serde_json::json!({"jsonrpc":"2.0","id":2,"method":"ping"}))
            .await
            .is_err());
    }
}
