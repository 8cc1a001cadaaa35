//! What every MCP test uses: the gateway config and process, the reference server's path,
//! the Python SDK client, and raw HTTP exchanges with the gateway's `/mcp` endpoint.

use crate::common::{free_port, python, wait_until, Proc, BIN};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn everything() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        p.exists(),
        "the MCP tests need the reference server: npm install --prefix crates/switchyard/tests/mcp"
    );
    p
}

/// The Python client, bounded: a hung client fails its test instead of hanging the suite.
pub fn python_cmd() -> Command {
    let mut c = Command::new("timeout");
    c.arg("90").arg(python());
    c
}

/// The seed's port-3101 route (cors + an Authorization the client never has), federating the
/// reference server over stdio and the simulated server over HTTP.
pub fn config(port: u16, sim_url: &str, extra_backend: &str) -> String {
    config_with(port, sim_url, extra_backend, "")
}

pub fn config_with(port: u16, sim_url: &str, extra_backend: &str, extra_targets: &str) -> String {
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

pub fn start(dir: &std::path::Path, port: u16, yaml: &str) -> Proc {
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
    let mut proc = Proc(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("gateway up", Duration::from_secs(20), || {
        proc.assert_running();
        TcpStream::connect(addr).is_ok()
    });
    proc.assert_running();
    proc
}

/// A raw HTTP/1.1 exchange: (status, head, body).
pub fn exchange(
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
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
pub const JSON: (&str, &str) = ("content-type", "application/json");
pub const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");

/// Initializes over raw HTTP; returns the session id exactly as sent (case kept).
pub fn raw_session(port: u16) -> String {
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

pub async fn run_client(scenario: &'static str, port: u16) -> Value {
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

pub fn stats_addr(yaml: &str) -> SocketAddr {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix("statsAddr: "))
        .unwrap()
        .parse()
        .unwrap()
}
