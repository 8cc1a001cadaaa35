//! A2A through the gateway, end to end: the real binary in front of an echo agent built on the
//! official `a2a-sdk` server (`tests/a2a/agent.py`), driven by the same SDK's client
//! (`tests/a2a/client.py`) on every binding and version the SDK speaks, and by raw HTTP for
//! the wire details the SDK hides (malformed JSON-RPC, push allow-list refusals, error shapes
//! when the agent is down, `X-Forwarded-Proto`).
//!
//! Needs the `.venv` that `.ci/run` creates from `tests/sdk/requirements.txt` (`a2a-sdk`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, http, http_with, python, wait_until, Proc, BIN};
use serde_json::Value;

fn tests_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/a2a")
}

/// The echo agent on a free port.
fn start_agent() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(python())
        .arg(tests_dir().join("agent.py"))
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("the agent", Duration::from_secs(30), || {
        http(addr, "GET", "/.well-known/agent-card.json", "").is_some_and(|(s, _)| s == 200)
    });
    (proc, port)
}

/// A gateway with the agent at `/agents/echo` (prefix rewritten to `/`) and a dead agent at
/// `/agents/dead`; its JSON access log lines are collected.
struct Gateway {
    _proc: Proc,
    addr: SocketAddr,
    stats: SocketAddr,
    log: Arc<Mutex<Vec<Value>>>,
    _dir: tempfile::TempDir,
}

fn start_gateway(agent_port: u16) -> Gateway {
    let port = free_port();
    let stats = free_port();
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
  logging:
    format: json
    fields:
      add:
        agent_said: 'a2a.method + "/" + a2a.task.state'
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - name: echo
      matches:
      - path:
          pathPrefix: /agents/echo
      policies:
        urlRewrite:
          path:
            prefix: /
      backends:
      - a2a:
          host: 127.0.0.1:{agent_port}
          pushNotificationAllowList: [hooks.example.com]
    - name: dead
      matches:
      - path:
          pathPrefix: /agents/dead
      policies:
        urlRewrite:
          path:
            prefix: /
      backends:
      - a2a:
          host: 127.0.0.1:{dead}
"#,
        admin = free_port(),
        dead = free_port(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a2a.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["-f", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("gateway up", Duration::from_secs(20), || {
        TcpStream::connect(addr).is_ok()
    });
    Gateway {
        _proc: Proc(child),
        addr,
        stats: format!("127.0.0.1:{stats}").parse().unwrap(),
        log,
        _dir: dir,
    }
}

impl Gateway {
    /// Waits for a log line that `f` accepts.
    fn log_line(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        wait_until(what, Duration::from_secs(10), || {
            found = self.log.lock().unwrap().iter().find(|l| f(l)).cloned();
            found.is_some()
        });
        found.unwrap()
    }
}

#[test]
fn the_sdk_client_works_through_the_gateway_on_every_binding_and_version() {
    let (_agent, agent_port) = start_agent();
    let gw = start_gateway(agent_port);
    let base = format!("http://{}/agents/echo", gw.addr);
    let out = Command::new("timeout")
        .arg("90")
        .arg(python())
        .arg(tests_dir().join("client.py"))
        .arg(&base)
        .arg(format!("http://127.0.0.1:{agent_port}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let count = |check: &str| reports.iter().filter(|r| r["check"] == check).count();
    for check in ["send", "stream", "get", "cancel", "resubscribe"] {
        assert_eq!(
            count(check),
            4,
            "{check} on each binding and version: {stdout}"
        );
    }
    assert_eq!(count("extended_card"), 2);
    assert_eq!(count("done"), 1);
    eprintln!("{stdout}");

    // The access log names the operation, binding, version, task and its final state, read
    // from the stream as it passed.
    let streamed = gw.log_line("a streamed send logged", |l| {
        l["a2a.method"] == "SendStreamingMessage"
            && l["a2a.binding"] == "HTTP+JSON"
            && l["a2a.version"] == "1.0"
    });
    assert_eq!(streamed["a2a.task.state"], "completed", "{streamed}");
    assert_eq!(streamed["a2a.artifacts"], 1, "{streamed}");
    assert!(streamed["a2a.events"].as_u64().unwrap() >= 5, "{streamed}");
    assert!(streamed["a2a.task.id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(streamed["a2a.context.id"].is_string());
    let old = gw.log_line("a v0.3 JSON-RPC stream logged", |l| {
        l["a2a.method"] == "SendStreamingMessage"
            && l["a2a.version"] == "0.3"
            && l["a2a.binding"] == "JSONRPC"
    });
    assert_eq!(old["a2a.task.state"], "completed", "{old}");
    let cancel = gw.log_line("a cancel logged", |l| l["a2a.method"] == "CancelTask");
    assert_eq!(cancel["a2a.task.state"], "canceled", "{cancel}");
    assert_eq!(
        cancel["agent_said"], "CancelTask/canceled",
        "CEL fields read `a2a`: {cancel}"
    );
    let get = gw.log_line("a get logged", |l| {
        l["a2a.method"] == "GetTask" && l["a2a.binding"] == "JSONRPC"
    });
    assert_eq!(get["a2a.task.state"], "completed", "{get}");
    let card = gw.log_line("the card fetch logged", |l| {
        l["a2a.method"] == "GetAgentCard"
    });
    assert_eq!(card["route"], "echo");
    gw.log_line("a resubscribe logged", |l| {
        l["a2a.method"] == "SubscribeToTask" && l["a2a.task.state"] == "completed"
    });

    // The bounded metric: agent (backend name), operation, last task state.
    let (_, metrics) = http(gw.stats, "GET", "/metrics", "").unwrap();
    let streamed = metrics
        .lines()
        .find(|l| {
            l.starts_with("switchyard_a2a_requests_total{")
                && l.contains("a2a_method=\"SendStreamingMessage\"")
                && l.contains("a2a_task_state=\"completed\"")
        })
        .unwrap_or_else(|| panic!("no a2a metric in:\n{metrics}"));
    assert!(
        streamed.contains(&format!("backend=\"127.0.0.1:{agent_port}\"")),
        "{streamed}"
    );
    let n: f64 = streamed.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 4.0, "{streamed}");
}

#[test]
fn wire_errors_come_in_the_callers_binding() {
    let (_agent, agent_port) = start_agent();
    let gw = start_gateway(agent_port);
    let rpc = |path: &str, body: &str| {
        http_with(gw.addr, "POST", path, &[("A2A-Version", "1.0")], body).unwrap()
    };

    // Malformed JSON-RPC never reaches the agent.
    let (status, body) = rpc("/agents/echo/jsonrpc", "{\"jsonrpc\": \"2.0\", ");
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], -32700, "{v}");
    let (status, body) = rpc(
        "/agents/echo/jsonrpc",
        r#"[{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"x"}}]"#,
    );
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        -32600
    );

    // A push-notification URL outside the allow-list is refused, in each binding's shape.
    let (status, body) = rpc(
        "/agents/echo/jsonrpc",
        r#"{"jsonrpc":"2.0","id":"p1","method":"CreateTaskPushNotificationConfig","params":{"taskId":"t","url":"http://169.254.169.254/latest/meta-data"}}"#,
    );
    assert_eq!(status, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        ("p1".into(), (-32602).into())
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("169.254.169.254"));
    let (status, body) = http_with(
        gw.addr,
        "POST",
        "/agents/echo/rest/message:send",
        &[("A2A-Version", "1.0")],
        r#"{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"hi"}]},"configuration":{"taskPushNotificationConfig":{"url":"http://10.1.2.3/hook"}}}"#,
    )
    .unwrap();
    assert_eq!(status, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "a2a_push_url_not_allowed", "{v}");
    assert_eq!(v["status"], 403);
    // An allowed host passes the gateway (the agent answers for itself).
    let (status, body) = http_with(
        gw.addr,
        "POST",
        "/agents/echo/rest/message:send",
        &[("A2A-Version", "1.0")],
        r#"{"message":{"messageId":"m2","role":"ROLE_USER","parts":[{"text":"hi"}]},"configuration":{"taskPushNotificationConfig":{"url":"https://hooks.example.com/a2a"}}}"#,
    )
    .unwrap();
    assert_ne!(status, 403, "{body}");
    assert!(!body.contains("a2a_push_url_not_allowed"), "{body}");

    // The agent is down: JSON-RPC callers get a JSON-RPC error with their id, HTTP+JSON
    // callers a problem document.
    let (status, body) = rpc(
        "/agents/dead/jsonrpc",
        r#"{"jsonrpc":"2.0","id":42,"method":"GetTask","params":{"id":"t"}}"#,
    );
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], 42);
    assert_eq!(v["error"]["code"], -32603);
    assert_eq!(v["error"]["data"]["code"], "upstream_unavailable");
    let (status, body) = http_with(
        gw.addr,
        "GET",
        "/agents/dead/rest/tasks/t-1",
        &[("A2A-Version", "1.0")],
        "",
    )
    .unwrap();
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "about:blank", "{v}");
    assert_eq!(v["code"], "upstream_unavailable");

    // Behind a TLS-terminating proxy the card's URLs say https.
    let (status, body) = http_with(
        gw.addr,
        "GET",
        "/agents/echo/.well-known/agent-card.json",
        &[("X-Forwarded-Proto", "https")],
        "",
    )
    .unwrap();
    assert_eq!(status, 200);
    let card: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        card["url"], "https://localhost/agents/echo/jsonrpc",
        "{card}"
    );
    assert_eq!(
        card["supportedInterfaces"][1]["url"],
        "https://localhost/agents/echo/rest"
    );
    // The refusals are in the log with their reason.
    let refused = gw.log_line("a refusal logged", |l| {
        l["error"] == "a2a_push_url_not_allowed"
            && l["a2a.method"] == "CreateTaskPushNotificationConfig"
    });
    assert_eq!(refused["status"], 403);
}
