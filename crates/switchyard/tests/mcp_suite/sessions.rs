//! Sessions: resumption after a gateway restart, stream resumption with `Last-Event-ID`,
//! and stateless mode.

use crate::common::free_port;
use crate::harness::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

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
