//! Access log lines of MCP requests.

use crate::common::{free_port, wait_until, Proc, BIN};
use crate::harness::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

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
            found.push(v);
            // Lines are written after their responses, each by its own task: the call's line
            // may come before the initialize's. Read until both are in.
            let seen = |m: &str| found.iter().any(|l: &Value| l["mcp.method.name"] == m);
            if seen("tools/call") && seen("initialize") {
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
    let call = lines
        .iter()
        .find(|l| l["mcp.method.name"] == "tools/call")
        .unwrap();
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
