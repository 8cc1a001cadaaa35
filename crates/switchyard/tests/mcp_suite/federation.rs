//! Federation: tools, prompts and resources of several targets behind one endpoint, through
//! the official Python SDK; failure modes; server-to-client requests; paginated lists.

use crate::common::{free_port, wait_until};
use crate::harness::*;
use serde_json::Value;
use std::time::Duration;

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
    let (_, metrics) = crate::common::http(stats, "GET", "/metrics", "").unwrap();
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

/// A streamable-HTTP target built with the official `mcp` Python SDK whose tools ask the
/// client back (sampling; elicitation plain, with defaults, titled and multi-select enums),
/// beside a second target so names are federated: six sessions at once, five rounds each,
/// every exchange answered with its own session's reply (a request relayed to the wrong
/// session, or lost between the call's stream and the client's answer, fails it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_requests_to_many_sessions_at_once_are_never_lost_or_crossed() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let ref_port = free_port();
    // Spawned directly, not under `python_cmd`'s `timeout`: killing the wrapper would leave
    // the server running after the test.
    let _reference = crate::common::Proc(
        std::process::Command::new(crate::common::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/mcp/ref_server.py"
            ))
            .arg(ref_port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("reference server up", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", ref_port)).is_ok()
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
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
          - name: ref
            mcp:
              host: http://127.0.0.1:{ref_port}/mcp
          - name: sim
            mcp:
              host: {sim}
"#,
        admin = free_port(),
        sim = sim.url,
    );
    let _gw = start(dir.path(), port, &yaml);
    let out = run_client("callbacks_stress", port).await;
    assert_eq!(out["calls"], 150, "{out}");
    assert_eq!(out["failures"], serde_json::json!([]), "{out}");
}
