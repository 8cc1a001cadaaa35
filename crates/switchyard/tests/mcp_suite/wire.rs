//! Wire details over raw HTTP: CORS preflight, bad input, session errors, an upstream dying
//! mid-call, DELETE.

use crate::common::free_port;
use crate::harness::*;

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
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01"}}}"#,
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("-32022") && body.contains("2025-11-25") && body.contains("2026-07-28"),
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

/// DNS rebinding: a browser page on another origin must not reach the MCP endpoint. Without a
/// CORS policy no origin is allowed; with one, only its origins; clients that send no `Origin`
/// (SDKs, CLIs) are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_the_route_does_not_allow_is_refused() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (port, strict_port) = (free_port(), free_port());
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: sim
            mcp:
              host: {url}
- port: {strict_port}
  address: 127.0.0.1
  listeners:
  - routes:
    - policies:
        cors:
          allowOrigins: [https://app.example]
      backends:
      - mcp:
          targets:
          - name: sim
            mcp:
              host: {url}
"#,
        admin = free_port(),
        url = sim.url,
    );
    let _gw = start(dir.path(), port, &yaml);
    let evil = [JSON, ACCEPT, ("origin", "http://evil.example")];
    let (status, _, body) = exchange(port, "POST", &evil, INIT);
    assert_eq!(status, 403, "no CORS policy, a foreign origin: {body}");
    assert!(body.contains("origin_not_allowed"), "{body}");
    let (status, _, body) = exchange(port, "POST", &[JSON, ACCEPT], INIT);
    assert_eq!(status, 200, "no Origin (not a browser): {body}");

    let (status, _, body) = exchange(strict_port, "POST", &evil, INIT);
    assert_eq!(status, 403, "an origin the policy does not list: {body}");
    let (status, head, body) = exchange(
        strict_port,
        "POST",
        &[JSON, ACCEPT, ("origin", "https://app.example")],
        INIT,
    );
    assert_eq!(status, 200, "the listed origin: {body}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("https://app.example")
    );
}

/// JSON-RPC batches exist only in 2025-03-26: a session that agreed to it may send one (the
/// answers to its requests come back as one array); later revisions' sessions are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_on_2025_03_26_sessions_only() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(dir.path(), port, &config(port, &sim.url, ""));
    let session = |version: &str| {
        let init = INIT.replace("2025-06-18", version);
        let (status, head, body) = exchange(port, "POST", &[JSON, ACCEPT], &init);
        assert_eq!(status, 200, "{body}");
        header(&head, "mcp-session-id").unwrap().to_string()
    };
    let batch = r#"[{"jsonrpc":"2.0","method":"notifications/initialized"},
        {"jsonrpc":"2.0","id":"a","method":"tools/list"},
        {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"sim_echo","arguments":{"text":"in a batch"}}},
        {"jsonrpc":"2.0","id":"c","method":"no/such"}]"#;
    let old = session("2025-03-26");
    let (status, _, body) = exchange(
        port,
        "POST",
        &[JSON, ACCEPT, ("mcp-session-id", &old)],
        batch,
    );
    assert_eq!(status, 200, "{body}");
    let answers: serde_json::Value = serde_json::from_str(&body).unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 3, "{body}");
    let by_id = |id: &str| answers.iter().find(|a| a["id"] == id).unwrap().clone();
    assert!(by_id("a")["result"]["tools"].as_array().unwrap().len() > 1);
    assert!(
        by_id("b")["result"].to_string().contains("in a batch"),
        "{body}"
    );
    assert!(by_id("c")["error"].is_object());
    // Only notifications: 202, no body.
    let (status, _, _) = exchange(
        port,
        "POST",
        &[JSON, ACCEPT, ("mcp-session-id", &old)],
        r#"[{"jsonrpc":"2.0","method":"notifications/initialized"}]"#,
    );
    assert_eq!(status, 202);
    // A 2025-06-18 session: refused.
    let new = session("2025-06-18");
    let (status, _, body) = exchange(
        port,
        "POST",
        &[JSON, ACCEPT, ("mcp-session-id", &new)],
        batch,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("2025-03-26"), "{body}");
}
