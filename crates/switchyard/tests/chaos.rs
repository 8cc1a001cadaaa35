//! Upstream chaos beyond kill/restart (issue 24), against the real `switchyard` binary: an
//! upstream that hangs before its headers, one that trickles a byte a second, one that sends
//! malformed SSE, and one that closes keep-alive connections at random, mixed from several
//! clients at once; an MCP stdio target killed in the middle of a tool call. Every client gets
//! a timely, well-formed answer (the right error in its dialect, an error event on a stream
//! already started, a visibly truncated body on plain proxying); no task or descriptor is
//! left behind; the gateway stays ready.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, spawn_ready, wait_until, Proc};
use serde_json::Value;

// ---------- the chaos upstream ----------

/// A raw HTTP/1.1 upstream whose behaviour each request picks with `x-chaos`.
struct Chaos {
    addr: SocketAddr,
    /// Connections the gateway holds open to it now.
    open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Chaos {
    fn start() -> Chaos {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, st) = (open.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (o, st) = (o.clone(), st.clone());
                o.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || {
                    let _ = serve_chaos(conn, &st);
                    o.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Chaos { addr, open, stop }
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

const COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

fn serve_chaos(conn: TcpStream, stop: &AtomicBool) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        // The request head and its body (Content-Length or chunked).
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_ascii_lowercase());
        }
        let header = |n: &str| {
            head.iter()
                .find_map(|l| l.strip_prefix(&format!("{n}: ")).map(str::to_string))
        };
        let mut body = Vec::new();
        if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk[..n]);
                if n == 0 {
                    break;
                }
            }
        }
        let stream = String::from_utf8_lossy(&body).contains("\"stream\":true");
        let anthropic = header("anthropic-version").is_some();
        let ctype = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        match header("x-chaos").as_deref().unwrap_or("") {
            // Never answers; returns when the gateway gives up and closes.
            "hang" => {
                let mut sink = [0u8; 1024];
                while r.read(&mut sink)? > 0 {}
                return Ok(());
            }
            // Headers, then a byte a second (for at most 30 s).
            "trickle" => {
                write!(w, "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ntransfer-encoding: chunked\r\n\r\n")?;
                let t = Instant::now();
                for b in b"data: {\"id\":\"chatcmpl-1\",\"choices\":[]}\n\n"
                    .iter()
                    .cycle()
                {
                    if stop.load(Ordering::Relaxed) || t.elapsed() > Duration::from_secs(30) {
                        return Ok(());
                    }
                    w.write_all(format!("1\r\n{}\r\n", *b as char).as_bytes())?;
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            // A stream of broken events, then a clean end of the body.
            "badsse" => {
                let events: &[u8] = if anthropic {
                    b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{broken\n\n\
                      event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":7,\"delta\":{\"type\":\"text_delta\",\"text\":12}}\n\n\
                      event: \xff\xfe\ndata: \x00\n\n\
                      data: [DONE]\n\n"
                } else {
                    b"data: {not json\n\n\
                      data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":12}}]}\n\n\
                      event: \xff\xfe\ndata: \x00\n\n\
                      : a comment\n\nretry: x\n\ndata: {\"choices\":\"nope\"}\n\n"
                };
                write!(w, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n", events.len())?;
                w.write_all(events)?;
            }
            // A good answer on a keep-alive connection, which is then closed half the time
            // without notice.
            "flaky" => {
                let body = if stream {
                    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"},\"finish_reason\":null}]}\n\n\
                     data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"
                        .to_string()
                } else {
                    COMPLETION.to_string()
                };
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )?;
                w.flush()?;
                if std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos()
                    .is_multiple_of(2)
                {
                    return Ok(());
                }
            }
            other => {
                let body = format!("{{\"error\":{{\"message\":\"unknown chaos {other}\"}}}}");
                write!(w, "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())?;
            }
        }
    }
}

// ---------- the gateway and a client ----------

struct Gateway {
    proc: Proc,
    addr: SocketAddr,
    stats: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(yaml: impl Fn(u16, u16, u16) -> String) -> Gateway {
        let (port, admin, stats) = (free_port(), free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("switchyard.yaml");
        std::fs::write(&file, yaml(port, admin, stats)).unwrap();
        let proc = spawn_ready(&["-f".as_ref(), file.as_os_str()], admin);
        Gateway {
            proc,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stats: SocketAddr::from(([127, 0, 0, 1], stats)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    fn metric(&self, name: &str) -> f64 {
        common::http(self.stats, "GET", "/metrics", "")
            .map(|(_, b)| b)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn ready(&self) -> bool {
        common::http(self.admin, "GET", "/healthz/ready", "").is_some_and(|(s, _)| s == 200)
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// What a client got.
#[derive(Debug)]
enum Got {
    /// A complete answer: status and de-chunked body.
    Answer(u16, String),
    /// The connection closed with the body incomplete.
    Truncated(u16),
    /// Nothing in time.
    Hang,
}

/// One request on its own connection (`Connection: close`), read whole.
fn request(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Got {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let complete = match s.read_to_end(&mut raw) {
        Ok(_) => true,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Got::Hang
        }
        Err(_) => false,
    };
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Got::Truncated(0);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let rest = &raw[split + 4..];
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if !head.contains("transfer-encoding: chunked") {
        return if complete {
            Got::Answer(status, text(rest))
        } else {
            Got::Truncated(status)
        };
    }
    // De-chunk (on bytes: a body need not be UTF-8); a missing last chunk is a truncated body.
    let mut body = Vec::new();
    let mut rest = rest;
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Got::Truncated(status);
        };
        let Ok(n) = usize::from_str_radix(text(&rest[..eol]).trim(), 16) else {
            return Got::Truncated(status);
        };
        let after = &rest[eol + 2..];
        if n == 0 {
            return Got::Answer(status, text(&body));
        }
        if after.len() < n + 2 {
            return Got::Truncated(status);
        }
        body.extend_from_slice(&after[..n]);
        rest = &after[n + 2..];
    }
}

/// What the answer is, as the test expects them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Ok,
    /// A JSON error with this status, in the caller's dialect.
    Error(u16),
    /// A 200 stream that ends with an error event.
    ErrorEvent,
    /// A 200 whose body breaks off (plain proxying cannot take back a status).
    Truncated,
    /// The upstream's malformed stream, byte for byte (a caller of the upstream's own dialect
    /// gets what it sent, as a transparent proxy).
    AsSent,
}

fn judge(got: &Got, stream: bool) -> Result<Expect, String> {
    match got {
        Got::Hang => Err("no answer in 8 s".into()),
        Got::Truncated(200) => Ok(Expect::Truncated),
        Got::Truncated(s) => Err(format!("{s} truncated")),
        Got::Answer(200, body) if stream && body.starts_with("data: {not json\n\n") => {
            if body.ends_with("data: {\"choices\":\"nope\"}\n\n") {
                Ok(Expect::AsSent)
            } else {
                Err(format!("the malformed stream, altered: {body:.300}"))
            }
        }
        Got::Answer(200, body) if stream => {
            let events: Vec<&str> = body
                .split("\n\n")
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect();
            if events
                .iter()
                .any(|e| e.contains("\"error\"") || e.starts_with("event: error"))
            {
                return Ok(Expect::ErrorEvent);
            }
            if events.last() == Some(&"data: [DONE]")
                && events.iter().any(|e| e.contains("\"content\""))
            {
                return Ok(Expect::Ok);
            }
            Err(format!(
                "a stream neither complete nor ended by an error event: {body:.300}"
            ))
        }
        Got::Answer(200, body) => {
            let v: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body:.200}"))?;
            if v["choices"][0]["message"]["content"].is_string() || v["ok"] == true {
                Ok(Expect::Ok)
            } else {
                Err(format!("200 without a completion: {body:.200}"))
            }
        }
        Got::Answer(s, body) => {
            let v: Value =
                serde_json::from_str(body).map_err(|e| format!("{s}: {e}: {body:.200}"))?;
            // OpenAI's error shape (the caller's dialect on every route here).
            if v["error"]["message"].is_string() {
                Ok(Expect::Error(*s))
            } else {
                Err(format!(
                    "{s} without an error in the caller's dialect: {body:.200}"
                ))
            }
        }
    }
}

/// `chat` (OpenAI upstream), `translated` (an Anthropic upstream behind an OpenAI caller) and
/// `plain` (as is), all to the chaos upstream: 1 s for its headers, 700 ms between its bytes.
fn chaos_yaml(up: SocketAddr) -> impl Fn(u16, u16, u16) -> String {
    move |port, admin, stats| {
        format!(
            "config:\n  adminAddr: 127.0.0.1:{admin}\n  statsAddr: 127.0.0.1:{stats}\n  limits: {{upstreamPoolIdleTimeout: 1s}}\n\
             binds:\n- port: {port}\n  address: 127.0.0.1\n  listeners:\n  - routes:\n\
             \x20   - name: plain\n      matches: [{{path: {{pathPrefix: /plain}}}}]\n      policies: {{timeout: {{backendRequestTimeout: 1s, idleTimeout: 700ms}}}}\n      backends:\n      - host: {up}\n\
             \x20   - name: translated\n      matches: [{{path: {{pathPrefix: /v1}}, headers: [{{name: x-target, value: {{exact: anthropic}}}}]}}]\n      policies: {{timeout: {{backendRequestTimeout: 1s, idleTimeout: 700ms}}}}\n\
             \x20     backends:\n      - ai: {{name: claude, hostOverride: '{up}', provider: {{anthropic: {{}}}}, policies: {{ai: {{modelAliases: {{'*': claude-sim-1}}}}}}}}\n\
             \x20   - name: chat\n      matches: [{{path: {{pathPrefix: /v1}}}}]\n      policies: {{timeout: {{backendRequestTimeout: 1s, idleTimeout: 700ms}}}}\n\
             \x20     backends:\n      - ai: {{name: sim, hostOverride: '{up}', provider: {{openAI: {{}}}}}}\n"
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Chat,
    Stream,
    Translated,
    Plain,
}

#[test]
fn chaotic_upstreams_get_every_client_a_timely_well_formed_answer() {
    let chaos = Chaos::start();
    let gw = Gateway::start(chaos_yaml(chaos.addr));
    let pid = gw.pid();
    let base_fds = fds(pid);
    let tasks = || gw.metric("switchyard_runtime_alive_tasks");
    let base_tasks = tasks();
    use Expect::*;
    use Kind::*;
    let cases: &[(Kind, &str, &[Expect])] = &[
        (Chat, "hang", &[Error(504)]),
        (Stream, "hang", &[Error(504)]),
        (Translated, "hang", &[Error(504)]),
        (Plain, "hang", &[Error(504)]),
        (Chat, "trickle", &[Error(504)]),
        (Stream, "trickle", &[ErrorEvent]),
        (Translated, "trickle", &[ErrorEvent]),
        (Plain, "trickle", &[Truncated]),
        // Passed through to a caller of the same dialect.
        (Stream, "badsse", &[AsSent]),
        // An Anthropic stream that ends without `message_stop` was cut short: an error event.
        (Translated, "badsse", &[ErrorEvent]),
        (Chat, "flaky", &[Ok]),
        (Stream, "flaky", &[Ok]),
        (Plain, "flaky", &[Ok]),
    ];
    let wrong = Mutex::new(Vec::new());
    let slowest = Mutex::new(Duration::ZERO);
    let t = Instant::now();
    std::thread::scope(|s| {
        for c in 0..8 {
            let (wrong, slowest, gw) = (&wrong, &slowest, &gw);
            s.spawn(move || {
                for i in 0..cases.len() * 2 {
                    let (kind, chaos, expect) = cases[(c * 5 + i) % cases.len()];
                    let stream = matches!(kind, Stream | Translated);
                    let body = format!(
                        r#"{{"model":"gpt-4o","stream":{stream},"messages":[{{"role":"user","content":"hi {c} {i}"}}]}}"#
                    );
                    let mut headers = vec![("x-chaos", chaos)];
                    let path = match kind {
                        Plain => "/plain/v1/chat/completions",
                        Translated => {
                            headers.push(("x-target", "anthropic"));
                            "/v1/chat/completions"
                        }
                        _ => "/v1/chat/completions",
                    };
                    let started = Instant::now();
                    let got = request(gw.addr, path, &headers, &body);
                    let took = started.elapsed();
                    if chaos == "badsse" && std::env::var("CHAOS_DEBUG").is_ok() {
                        eprintln!("{kind:?} badsse: {got:?}");
                    }
                    let mut sl = slowest.lock().unwrap();
                    *sl = (*sl).max(took);
                    drop(sl);
                    let verdict = judge(&got, stream && !matches!(got, Got::Answer(s, _) if s != 200));
                    let fine = match &verdict {
                        std::result::Result::Ok(e) => expect.contains(e),
                        Err(_) => false,
                    };
                    if !fine || took > Duration::from_secs(5) {
                        wrong.lock().unwrap().push(format!(
                            "{kind:?} with {chaos}: {verdict:?} in {took:?}, expected one of {expect:?}"
                        ));
                    }
                }
            });
        }
    });
    let wrong = wrong.into_inner().unwrap();
    eprintln!(
        "chaos: {} requests in {:?} (slowest answer {:?}), {} not as expected",
        8 * cases.len() * 2,
        t.elapsed(),
        slowest.into_inner().unwrap(),
        wrong.len()
    );
    assert!(wrong.is_empty(), "{:#?}", &wrong[..wrong.len().min(16)]);
    assert!(gw.ready(), "the gateway is still ready");
    // Nothing held: the upstream connections to the hanging and trickling upstream are closed,
    // every task and descriptor is back.
    wait_until(
        "upstream connections closed",
        Duration::from_secs(5),
        || chaos.open.load(Ordering::Relaxed) == 0,
    );
    wait_until("descriptors back", Duration::from_secs(5), || {
        fds(pid) <= base_fds
    });
    wait_until("tasks back", Duration::from_secs(5), || {
        tasks() <= base_tasks
    });
}

// ---------- an MCP stdio target killed mid-call ----------

fn everything() -> std::path::PathBuf {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        p.exists(),
        "the MCP tests need the reference server: npm install --prefix crates/switchyard/tests/mcp"
    );
    p
}

/// The process ids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// A JSON-RPC call on `/mcp`: (status, the JSON-RPC answer: the body, or its SSE `data`).
fn mcp(addr: SocketAddr, session: Option<&str>, body: &str) -> (u16, Option<String>, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let sid = session
        .map(|s| format!("mcp-session-id: {s}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: 2025-06-18\r\n{sid}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("an answer in time");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head[9..12].parse().unwrap();
    let session = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("mcp-session-id")
            .then(|| v.trim().to_string())
    });
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    // SSE: the last `data:` line that is a JSON-RPC answer (chunk sizes are skipped).
    let json = if head.to_ascii_lowercase().contains("text/event-stream") {
        body.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .rfind(|v| v.get("id").is_some())
            .unwrap_or(Value::Null)
    } else if chunked {
        body.lines()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .unwrap_or(Value::Null)
    } else {
        serde_json::from_str(body).unwrap_or(Value::Null)
    };
    (status, session, json)
}

#[test]
fn an_mcp_stdio_target_killed_mid_call_answers_with_an_error_and_comes_back() {
    let script = everything();
    let gw = Gateway::start(|port, admin, stats| {
        format!(
            "config:\n  adminAddr: 127.0.0.1:{admin}\n  statsAddr: 127.0.0.1:{stats}\n\
             binds:\n- port: {port}\n  address: 127.0.0.1\n  listeners:\n  - routes:\n\
             \x20   - backends:\n      - mcp:\n          targets:\n          - name: everything\n            stdio:\n              cmd: node\n              args: [\"{}\", \"stdio\"]\n",
            script.display()
        )
    });
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"chaos","version":"1"}}}"#;
    let (status, session, v) = mcp(gw.addr, None, init);
    assert_eq!(status, 200, "{v}");
    let session = session.expect("a session id");
    let (status, _, _) = mcp(
        gw.addr,
        Some(&session),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert!(status == 202 || status == 200, "{status}");
    let (_, _, tools) = mcp(
        gw.addr,
        Some(&session),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    let long = names
        .iter()
        .find(|n| n.contains("long-running"))
        .unwrap_or_else(|| panic!("a long-running tool among {names:?}"))
        .to_string();
    let echo = names
        .iter()
        .find(|n| n.ends_with("echo"))
        .unwrap_or_else(|| panic!("an echo tool among {names:?}"))
        .to_string();

    // A 10-second tool call; the target process is killed a second into it.
    let targets = children(gw.pid());
    assert!(!targets.is_empty(), "the stdio target runs as a child");
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"{long}","arguments":{{"duration":10,"steps":10}}}}}}"#
    );
    let (addr, sid) = (gw.addr, session.clone());
    let caller = std::thread::spawn(move || {
        let t = Instant::now();
        let r = mcp(addr, Some(&sid), &call);
        (r, t.elapsed())
    });
    std::thread::sleep(Duration::from_secs(1));
    for pid in &targets {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let ((status, _, answer), took) = caller.join().unwrap();
    eprintln!("killed mid-call: {status} after {took:?}: {answer}");
    assert!(
        took < Duration::from_secs(8),
        "the call answered {took:?} after it started (the tool takes 10 s)"
    );
    assert!(
        answer["error"]["message"].is_string() || answer["result"]["isError"] == true,
        "a JSON-RPC error for the killed call: {status} {answer}"
    );
    assert_eq!(answer["id"], 3, "{answer}");

    // The target comes back for the next call (a new process), and the gateway stays ready.
    let t = Instant::now();
    let mut last = Value::Null;
    while t.elapsed() < Duration::from_secs(15) {
        let call = format!(
            r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"{echo}","arguments":{{"message":"back"}}}}}}"#
        );
        let (status, _, v) = mcp(gw.addr, Some(&session), &call);
        if status == 200
            && v["result"]["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("back"))
        {
            last = v;
            break;
        }
        // A session bound to the dead process may have to start over.
        if status == 404 {
            let (_, s2, _) = mcp(gw.addr, None, init);
            if let Some(s2) = s2 {
                mcp(
                    gw.addr,
                    Some(&s2),
                    r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                );
                let (status, _, v) = mcp(gw.addr, Some(&s2), &call);
                if status == 200
                    && v["result"]["content"][0]["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("back"))
                {
                    last = v;
                    break;
                }
            }
        }
        last = v;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        last["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("back")),
        "the target answers again: {last}"
    );
    let now = children(gw.pid());
    assert!(
        now.iter().all(|p| !targets.contains(p)),
        "a new target process: {targets:?} -> {now:?}"
    );
    assert!(gw.ready());
}
