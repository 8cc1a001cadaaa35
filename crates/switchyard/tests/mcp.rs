//! MCP gateway end to end: the real binary federating the MCP reference server
//! (`@modelcontextprotocol/server-everything` from npm, over stdio) and the simulated MCP server
//! (streamable HTTP), driven by the official `mcp` Python SDK (`tests/mcp/client.py`) and by
//! raw HTTP for the wire details (CORS preflight, session errors, bad input).
//!
//! Needs `node`, `npm install --prefix crates/switchyard/tests/mcp` and the `.venv` that
//! `.ci/run` creates.

mod common;

use common::{free_port, python, wait_until, Proc, BIN};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn everything() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        p.exists(),
        "the MCP tests need the reference server: npm install --prefix crates/switchyard/tests/mcp"
    );
    p
}

/// The Python client, bounded: a hung client fails its test instead of hanging the suite.
fn python_cmd() -> Command {
    let mut c = Command::new("timeout");
    c.arg("90").arg(python());
    c
}

/// The seed's port-3101 route (cors + an Authorization the client never has), federating the
/// reference server over stdio and the simulated server over HTTP.
fn config(port: u16, sim_url: &str, extra_backend: &str) -> String {
    config_with(port, sim_url, extra_backend, "")
}

fn config_with(port: u16, sim_url: &str, extra_backend: &str, extra_targets: &str) -> String {
    let node_script = everything();
    format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - policies:
        cors:
          allowOrigins:
            - "*"
          allowHeaders:
            - mcp-protocol-version
            - content-type
            - cache-control
        requestHeaderModifier:
          add:
            Authorization: "Bearer abc"
        mcpAuthorization:
          rules:
          - '!(mcp.tool.target == "everything" && mcp.tool.name == "get-env")'
      backends:
      - mcp:
          sessionKey: test-session-key
          {extra_backend}
          targets:
          - name: everything
            stdio:
              cmd: node
              args: ["{}", "stdio"]
          - name: sim
            mcp:
              host: {sim_url}
{extra_targets}"#,
        node_script.display(),
        admin = free_port(),
        stats = free_port(),
    )
}

fn start(dir: &std::path::Path, port: u16, yaml: &str) -> Proc {
    let path = dir.join("mcp.yaml");
    std::fs::write(&path, yaml).unwrap();
    let child = Command::new(BIN)
        .args(["-f", path.to_str().unwrap()])
        .env(
            "RUST_LOG",
            std::env::var("MCP_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("gateway up", Duration::from_secs(20), || {
        TcpStream::connect(addr).is_ok()
    });
    Proc(child)
}

/// A raw HTTP/1.1 exchange: (status, head, body).
fn exchange(
    port: u16,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head[9..12].parse().unwrap(),
        head.to_string(),
        body.to_string(),
    )
}

/// A header's value from a response head (name matched case-insensitively).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
const JSON: (&str, &str) = ("content-type", "application/json");
const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");

/// Initializes over raw HTTP; returns the session id exactly as sent (case kept).
fn raw_session(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{INIT}",
        INIT.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            k.eq_ignore_ascii_case("mcp-session-id")
                .then(|| v.trim().to_string())
        })
        .expect("initialize returns a session id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_client_through_federated_stdio_and_http_targets() {
    let sim = sim::mcp::spawn(sim::mcp::Options {
        required_auth: Some("Bearer abc".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(dir.path(), port, &config(port, &sim.url, ""));
    let v = run_client("federation", port).await;
    assert_eq!(v["server"], "switchyard");
    assert_eq!(
        v["version"], "2025-11-25",
        "the SDK's newest version is spoken"
    );
    let tools: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for t in [
        "everything_echo",
        "everything_get-sum",
        "sim_echo",
        "sim_add",
        "sim_slow_count",
    ] {
        assert!(tools.contains(&t), "{t} missing from {tools:?}");
    }
    assert!(
        !tools.contains(&"everything_get-env"),
        "a denied tool is not listed"
    );
    assert!(
        v["stdio_echo"]
            .as_str()
            .unwrap()
            .contains("hi from the sdk"),
        "{v}"
    );
    assert_eq!(v["http_add"], "5");
    assert_eq!(v["http_progress"], serde_json::json!([1.0, 2.0, 3.0]));
    assert_eq!(v["http_slow"], "counted to 3");
    assert!(
        v["stdio_progress"].as_u64().unwrap() >= 1,
        "stdio progress relayed: {v}"
    );
    assert!(
        v["denied"].as_str().unwrap().contains("not permitted"),
        "{v}"
    );
    assert!(
        v["unknown"].as_str().unwrap().contains("unknown tool"),
        "{v}"
    );
    let prompts = v["prompts"].to_string();
    assert!(
        prompts.contains("everything_simple-prompt") && prompts.contains("sim_greeting"),
        "{prompts}"
    );
    assert_eq!(v["prompt_text"], "Say hello to ops.");
    assert!(
        v["resources"].to_string().contains("sim+sim://readme"),
        "{v}"
    );
    assert!(
        v["resources"].to_string().contains("everything+demo://"),
        "{v}"
    );
    assert_eq!(v["resource_text"], "Switchyard's simulated MCP server.");
    assert_eq!(v["resource_uri"], "sim+sim://readme");
    // The upstream saw the Authorization the route added; the client never had it.
    let seen = sim.seen_authorization();
    assert!(
        !seen.is_empty() && seen.iter().all(|a| a == "Bearer abc"),
        "{seen:?}"
    );
    // The SDK's DELETE on exit closed the upstream session.
    wait_until("upstream session closed", Duration::from_secs(5), || {
        sim.sessions() == 0
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_across_a_gateway_restart() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = config(port, &sim.url, "");
    let gw = start(dir.path(), port, &yaml);
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut client = python_cmd()
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.py"))
        .args(["resume", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    let ready = tokio::task::spawn_blocking(move || {
        stdout.read_line(&mut line).unwrap();
        (line, stdout)
    });
    let (line, mut stdout) = tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .unwrap()
        .unwrap();
    assert!(line.starts_with("READY "), "{line}");
    // A new gateway process: same key, no memory of the session, stdio child gone.
    drop(gw);
    let _gw2 = start(dir.path(), port, &yaml);
    client.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        let status = client.wait().unwrap();
        (rest, status)
    });
    let (rest, status) = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{rest}");
    let v: Value = serde_json::from_str(rest.trim()).unwrap();
    assert!(v["before"].as_str().unwrap().contains("before"));
    assert!(
        v["after"].as_str().unwrap().contains("after"),
        "the stdio target was restarted and re-initialized: {v}"
    );
    assert_eq!(v["after_http"], "2");
    assert_eq!(
        line.trim().strip_prefix("READY ").unwrap(),
        v["session_after"].as_str().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_details_cors_errors_and_failure_modes() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(dir.path(), port, &config(port, &sim.url, ""));

    // Browser preflight, as the seed's cors policy allows it.
    let (status, head, _) = exchange(
        port,
        "OPTIONS",
        &[
            ("origin", "http://app.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "mcp-protocol-version, content-type",
            ),
        ],
        "",
    );
    assert!(status == 200 || status == 204, "{head}");
    assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
    assert!(header(&head, "access-control-allow-headers")
        .unwrap()
        .contains("mcp-protocol-version"));
    // The actual request: the session id is exposed to browser code.
    let (status, head, body) = exchange(
        port,
        "POST",
        &[JSON, ACCEPT, ("origin", "http://app.example")],
        INIT,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
    assert_eq!(
        header(&head, "access-control-expose-headers"),
        Some("mcp-session-id")
    );
    let sid = raw_session(port);
    assert!(
        !sid.contains("sim-"),
        "upstream session ids are sealed, not readable"
    );

    // Bad input.
    let (status, _, body) = exchange(port, "POST", &[JSON, ("mcp-session-id", &sid)], "{not json");
    assert_eq!(status, 400);
    assert!(body.contains("-32700"), "{body}");
    let (status, _, body) = exchange(
        port,
        "POST",
        &[JSON],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    assert_eq!(status, 400, "no session: {body}");
    let (status, _, body) = exchange(
        port,
        "POST",
        &[JSON, ("mcp-session-id", "forged")],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    assert_eq!(status, 404, "unknown session: {body}");
    let (status, _, body) = exchange(
        port,
        "POST",
        &[JSON, ("mcp-session-id", &sid)],
        r#"{"jsonrpc":"2.0","id":3,"method":"nope/nope"}"#,
    );
    assert_eq!(status, 200);
    assert!(body.contains("-32601"), "{body}");
    let (status, _, body) = exchange(
        port,
        "POST",
        &[JSON],
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("-32022") && body.contains("2025-11-25"),
        "{body}"
    );

    // An upstream dying mid-call: that call gets an error answer, the gateway stays up.
    let (status, _, body) = exchange(
        port,
        "POST",
        &[JSON, ACCEPT, ("mcp-session-id", &sid)],
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"sim_crash","arguments":{}}}"#,
    );
    assert_eq!(status, 200);
    assert!(
        body.contains(r#""id":5"#)
            && body.contains("-32603")
            && body.contains("MCP target sim failed"),
        "{body}"
    );
    let (status, _, body) = exchange(
        port,
        "POST",
        &[JSON, ("mcp-session-id", &sid)],
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"everything_echo","arguments":{"message":"still up"}}}"#,
    );
    assert_eq!(status, 200);
    assert!(body.contains("still up"), "{body}");
    let (_, _, body) = exchange(
        port,
        "POST",
        &[JSON, ("mcp-session-id", &sid)],
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"sim_add","arguments":{"a":1,"b":2}}}"#,
    );
    assert!(body.contains(r#""text":"3""#), "{body}");

    // DELETE ends the session; the id is then refused.
    let (status, _, _) = exchange(port, "DELETE", &[("mcp-session-id", &sid)], "");
    assert_eq!(status, 200);
    let (status, _, _) = exchange(
        port,
        "POST",
        &[JSON, ("mcp-session-id", &sid)],
        r#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#,
    );
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_leaves_a_dead_target_out() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dead = format!("http://127.0.0.1:{}/mcp", free_port());
    let _gw = start(
        dir.path(),
        port,
        &config(port, &dead, "failureMode: failOpen"),
    );
    let sid = raw_session(port);
    let (_, _, body) = exchange(
        port,
        "POST",
        &[JSON, ("mcp-session-id", &sid)],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"everything_echo"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("sim_")), "{names:?}");

    // The same dead target with failClosed: initialize itself fails, naming it.
    let port2 = free_port();
    let dir2 = tempfile::tempdir().unwrap();
    let _gw2 = start(dir2.path(), port2, &config(port2, &dead, ""));
    let (status, _, body) = exchange(port2, "POST", &[JSON, ACCEPT], INIT);
    assert_eq!(status, 200);
    assert!(body.contains("MCP target sim is unavailable"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_clients_and_targets() {
    // The reference server on its legacy HTTP+SSE transport, as a third target.
    let sse_port = free_port();
    let _old = Proc(
        Command::new("node")
            .arg(everything())
            .arg("sse")
            .env("PORT", sse_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sse_addr: SocketAddr = format!("127.0.0.1:{sse_port}").parse().unwrap();
    wait_until("legacy SSE server up", Duration::from_secs(20), || {
        TcpStream::connect(sse_addr).is_ok()
    });
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let targets = format!("          - name: old\n            sse:\n              host: http://127.0.0.1:{sse_port}/sse\n");
    let _gw = start(dir.path(), port, &config_with(port, &sim.url, "", &targets));
    // A legacy client (the SDK's SSE transport) through the gateway.
    let v = run_client("legacy", port).await;
    let tools = v["tools"].to_string();
    for t in ["everything_echo", "old_echo", "sim_add"] {
        assert!(tools.contains(t), "{t} missing: {tools}");
    }
    assert!(v["old_echo"].as_str().unwrap().contains("via sse"), "{v}");
    assert!(
        v["stdio_echo"].as_str().unwrap().contains("via stdio"),
        "{v}"
    );
    assert_eq!(v["http_add"], "7");
}

/// A tiny HTTP service that answers every request with what it received, as JSON.
async fn echo_service() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break (head.to_string(), body.to_string());
                        }
                    }
                };
                let line = head.lines().next().unwrap_or("").to_string();
                let mut it = line.split(' ');
                let (method, target) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                let key = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("x-api-key: ")
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                let reply = serde_json::json!({"method": method, "target": target, "body": body, "key": key}).to_string();
                let status = if target.contains("/missing") {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}", reply.len()).as_bytes())
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_operations_are_tools() {
    let service = echo_service().await;
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pets.yaml"),
        r##"openapi: 3.0.3
info: {title: pets, version: "1"}
paths:
  /pets/{petId}:
    parameters:
    - {name: petId, in: path, required: true, schema: {type: integer}}
    get:
      operationId: getPet
      summary: Get a pet
      parameters:
      - {name: verbose, in: query, schema: {type: boolean}}
      - {name: x-api-key, in: header, schema: {type: string}}
  /pets:
    post:
      operationId: createPet
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Pet"}
components:
  schemas:
    Pet: {type: object, properties: {name: {type: string}}}
"##,
    )
    .unwrap();
    let port = free_port();
    // The schema path is relative to the config file.
    let targets = format!("          - name: pets\n            openapi:\n              schema: pets.yaml\n              host: http://{service}/api\n");
    let _gw = start(dir.path(), port, &config_with(port, &sim.url, "", &targets));
    let sid = raw_session(port);
    let call = |id: u32, body: &str| {
        let (status, _, out) = exchange(
            port,
            "POST",
            &[JSON, ("mcp-session-id", &sid)],
            &format!(r#"{{"jsonrpc":"2.0","id":{id},{body}}}"#),
        );
        assert_eq!(status, 200, "{out}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let list = call(2, r#""method":"tools/list""#);
    let tools = list["result"]["tools"].as_array().unwrap();
    let get = tools
        .iter()
        .find(|t| t["name"] == "pets_getPet")
        .expect("getPet is a tool");
    assert_eq!(get["description"], "Get a pet");
    assert_eq!(get["inputSchema"]["required"], serde_json::json!(["petId"]));
    let create = tools
        .iter()
        .find(|t| t["name"] == "pets_createPet")
        .unwrap();
    assert_eq!(
        create["inputSchema"]["properties"]["body"]["properties"]["name"]["type"],
        "string"
    );

    let r = call(
        3,
        r#""method":"tools/call","params":{"name":"pets_getPet","arguments":{"petId":7,"verbose":true,"x-api-key":"k1"}}"#,
    );
    let seen = &r["result"]["structuredContent"];
    assert_eq!(seen["method"], "GET", "{r}");
    assert_eq!(seen["target"], "/api/pets/7?verbose=true");
    assert_eq!(seen["key"], "k1");
    assert_eq!(r["result"]["isError"], false);
    let r = call(
        4,
        r#""method":"tools/call","params":{"name":"pets_createPet","arguments":{"body":{"name":"rex"}}}"#,
    );
    let seen = &r["result"]["structuredContent"];
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], r#"{"name":"rex"}"#);
    let r = call(
        5,
        r#""method":"tools/call","params":{"name":"pets_getPet","arguments":{}}"#,
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing path parameter petId"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_requests_reach_the_client_and_its_answers_return() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = config(port, &sim.url, "");
    let _gw = start(dir.path(), port, &yaml);
    let out = run_client("callbacks", port).await;
    assert_eq!(
        out["has_sampling_tool"], true,
        "client capabilities reached the target: {out}"
    );
    assert!(
        out["sampling_prompt"]
            .as_str()
            .unwrap()
            .contains("what is MCP?"),
        "{out}"
    );
    assert!(
        out["sampling"].as_str().unwrap().contains("sampled!"),
        "{out}"
    );
    assert!(
        out["roots"]
            .as_str()
            .unwrap()
            .contains("file:///srv/project"),
        "{out}"
    );
    assert!(
        out["elicitation"].as_str().unwrap().contains("blue"),
        "{out}"
    );
    // MCP metrics, labelled by method, target and tool.
    let stats = stats_addr(&yaml);
    let (_, metrics) = common::http(stats, "GET", "/metrics", "").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_mcp_requests_total{")
                && l.contains(r#"mcp_method_name="tools/call""#)
                && l.contains(r#"target="everything""#)
                && l.contains(r#"gen_ai_tool_name="trigger-sampling-request""#)),
        "{metrics}"
    );
}

async fn run_client(scenario: &'static str, port: u16) -> Value {
    let url = format!("http://127.0.0.1:{port}/mcp");
    let out = tokio::task::spawn_blocking(move || {
        python_cmd()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.py"))
            .args([scenario, &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

fn stats_addr(yaml: &str) -> SocketAddr {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix("statsAddr: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_call_stream_resumes_with_last_event_id() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(dir.path(), port, &config(port, &sim.url, ""));
    let sid = raw_session(port);
    // A long call with progress; the client reads its first event and goes away.
    let call = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"everything_trigger-long-running-operation","arguments":{"duration":1.5,"steps":3},"_meta":{"progressToken":"tok"}}}"#;
    let first_id = tokio::task::spawn_blocking({
        let sid = sid.clone();
        move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            write!(
                s,
                "POST /mcp HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-session-id: {sid}\r\nContent-Length: {}\r\n\r\n{call}",
                call.len()
            )
            .unwrap();
            let mut seen = String::new();
            let mut buf = [0u8; 1024];
            // Up to the first progress event.
            while !seen.contains(r#""progress":1"#) {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "stream ended early: {seen}");
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            let event = seen
                .split("\n\n")
                .find(|e| e.contains(r#""progress":1"#))
                .unwrap();
            // The event's own `id:` line (not the response head's x-request-id).
            let id = event.split("\nid: ").nth(1).unwrap().lines().next().unwrap().trim().to_string();
            id // the socket closes here, mid-call
        }
    })
    .await
    .unwrap();
    let (status, head, body) = tokio::task::spawn_blocking(move || {
        exchange(
            port,
            "GET",
            &[
                ("accept", "text/event-stream"),
                ("mcp-session-id", &sid),
                ("last-event-id", &first_id),
            ],
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(
        !body.contains(r#""progress":1,"#),
        "what the client saw is not sent again: {body}"
    );
    assert!(
        body.contains(r#""progress":3"#),
        "the missed progress arrives: {body}"
    );
    assert!(
        body.contains(r#""id":9"#) && body.contains("Long running operation completed"),
        "and the answer: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_mode_needs_no_session() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(
        dir.path(),
        port,
        &config(port, &sim.url, "statefulMode: false"),
    );
    let (status, head, body) = exchange(port, "POST", &[JSON, ACCEPT], INIT);
    assert_eq!(status, 200, "{body}");
    assert!(
        header(&head, "mcp-session-id").is_none(),
        "no session is issued"
    );
    assert!(body.contains(r#""tools""#), "{body}");
    let (_, _, body) = exchange(
        port,
        "POST",
        &[JSON, ACCEPT],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sim_add","arguments":{"a":20,"b":22}}}"#,
    );
    assert!(body.contains(r#""text":"42""#), "{body}");
    let (_, _, body) = exchange(
        port,
        "POST",
        &[JSON],
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
    );
    assert!(
        body.contains("everything_echo") && body.contains("sim_echo"),
        "{body}"
    );
    assert_eq!(
        sim.sessions(),
        0,
        "every request closed the upstream sessions it opened"
    );
    let (status, _, _) = exchange(port, "GET", &[("accept", "text/event-stream")], "");
    assert_eq!(status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_authorization_by_jwt_claims() {
    use base64::Engine as _;
    let secret = b"switchyard-mcp-jwt-test-secret-0123456789";
    let jwks = format!(
        r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{}"}}]}}"#,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks).unwrap();
    let port = free_port();
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - policies:
        jwtAuth:
          issuer: https://idp.example
          audiences: [mcp]
          jwks: {{file: jwks.json}}
        mcpAuthorization:
          rules:
          - 'mcp.tool.name == "echo"'
          - 'jwt.groups.exists(g, g == "math") && mcp.tool.name in ["add", "slow_count"]'
      backends:
      - mcp:
          targets:
          - name: sim
            mcp: {{host: "{url}"}}
"#,
        admin = free_port(),
        stats = free_port(),
        url = sim.url
    );
    let _gw = start(dir.path(), port, &yaml);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |groups: &[&str]| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("k1".into());
        let claims = serde_json::json!({"sub": "u", "iss": "https://idp.example", "aud": "mcp", "exp": now + 600, "groups": groups});
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(secret))
                .unwrap()
        )
    };
    // No token: refused before any MCP handling.
    let (status, head, body) = exchange(port, "POST", &[JSON, ACCEPT], INIT);
    assert_eq!(status, 401, "{body}");
    assert_eq!(header(&head, "www-authenticate"), Some("Bearer"));
    let tools_for = |auth: &str| {
        let (status, head, body) =
            exchange(port, "POST", &[JSON, ACCEPT, ("authorization", auth)], INIT);
        assert_eq!(status, 200, "{body}");
        let sid = header(&head, "mcp-session-id").unwrap().to_string();
        let (_, _, body) = exchange(
            port,
            "POST",
            &[JSON, ("authorization", auth), ("mcp-session-id", &sid)],
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        let mut names: Vec<String> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        let (_, _, call) = exchange(
            port,
            "POST",
            &[JSON, ("authorization", auth), ("mcp-session-id", &sid)],
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":1}}}"#,
        );
        (names, call)
    };
    let (math, call) = tools_for(&token(&["math"]));
    assert_eq!(math, ["add", "echo", "slow_count"]);
    assert!(call.contains(r#""text":"2""#), "{call}");
    let (plain, call) = tools_for(&token(&["ops"]));
    assert_eq!(
        plain,
        ["echo"],
        "tools the claims do not allow are not listed"
    );
    assert!(call.contains("not permitted"), "{call}");
}

/// Live (not zombie) processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name; a zombie is already dead.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_children_never_outlive_the_gateway() {
    for signal in ["TERM", "KILL"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let yaml = format!(
            r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
  drainTimeout: 1s
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: everything
            stdio:
              cmd: node
              args: ["{script}", "stdio"]
"#,
            admin = free_port(),
            stats = free_port(),
            script = everything().display()
        );
        let mut gw = start(dir.path(), port, &yaml);
        raw_session(port);
        let gw_pid = gw.0.id();
        let children = children_of(gw_pid);
        assert!(!children.is_empty(), "the session started a stdio child");
        Command::new("kill")
            .args(["-s", signal, &gw_pid.to_string()])
            .status()
            .unwrap();
        let _ = gw.0.wait();
        wait_until(
            &format!("stdio children gone after SIG{signal}"),
            Duration::from_secs(10),
            || children.iter().all(|c| !is_running(*c)),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pagination_spans_targets() {
    // Two paginating targets, two tools per page each: the client pages through one cursor.
    let a = sim::mcp::spawn(sim::mcp::Options {
        page_size: Some(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let b = sim::mcp::spawn(sim::mcp::Options {
        page_size: Some(3),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let targets = format!(
        "          - name: other\n            mcp:\n              host: {}\n",
        b.url
    );
    // Replace the stdio target: only the two HTTP targets here.
    let yaml = config_with(port, &a.url, "", &targets);
    let yaml = {
        let start = yaml.find("          - name: everything").unwrap();
        let end = yaml.find("          - name: sim").unwrap();
        format!("{}{}", &yaml[..start], &yaml[end..])
    };
    let _gw = start(dir.path(), port, &yaml);
    let sid = raw_session(port);
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = match &cursor {
            Some(c) => format!(r#","params":{{"cursor":"{c}"}}"#),
            None => String::new(),
        };
        let (_, _, body) = exchange(
            port,
            "POST",
            &[JSON, ("mcp-session-id", &sid)],
            &format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list"{params}}}"#),
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        names.extend(
            v["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match v["result"]["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "pagination must end");
    }
    names.sort();
    let expected: Vec<String> = ["sim", "other"]
        .iter()
        .flat_map(|t| ["add", "crash", "echo", "slow_count"].map(|n| format!("{t}_{n}")))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names, expected, "every tool of every target, once");
    assert_eq!(pages, 2, "pages of both targets are fetched together");
    let (_, _, body) = exchange(
        port,
        "POST",
        &[JSON, ("mcp-session-id", &sid)],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"garbage!"}}"#,
    );
    assert!(body.contains("-32602"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_name_the_mcp_method_tool_target_and_session() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = config(port, &sim.url, "").replacen(
        "config:\n",
        "config:\n  logging:\n    format: json\n    fields:\n      add:\n        tool_rule: 'mcp.tool.target + \"/\" + mcp.tool.name'\n",
        1,
    );
    let path = dir.path().join("mcp.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["-f", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let gw = Proc(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("gateway up", Duration::from_secs(20), || {
        TcpStream::connect(addr).is_ok()
    });
    let sid = raw_session(port);
    exchange(
        port,
        "POST",
        &[JSON, ("mcp-session-id", &sid)],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sim_add","arguments":{"a":1,"b":2}}}"#,
    );
    let lines = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(_) => continue,
            };
            let done = v["mcp.method.name"] == "tools/call";
            found.push(v);
            if done {
                break;
            }
        }
        found
    });
    let lines = tokio::time::timeout(Duration::from_secs(20), lines)
        .await
        .unwrap()
        .unwrap();
    drop(gw);
    let init = lines
        .iter()
        .find(|l| l["mcp.method.name"] == "initialize")
        .expect("initialize logged");
    let call = lines.last().unwrap();
    assert_eq!(call["mcp.method.name"], "tools/call", "{call}");
    assert_eq!(call["gen_ai.tool.name"], "add");
    assert_eq!(call["mcp.target"], "sim");
    assert_eq!(call["tool_rule"], "sim/add", "CEL fields see mcp.*: {call}");
    let session = call["mcp.session.id"].as_str().unwrap();
    assert_eq!(
        init["mcp.session.id"].as_str(),
        Some(session),
        "one session id from initialize on"
    );
    assert!(
        !sid.contains(session) && session.len() == 32,
        "the log names the session, not its sealed id"
    );
}
