//! The upgrade shim: legacy clients (sessions opened with `initialize`) through the gateway to
//! a target that speaks only the 2026-07-28 revision (`sim::mcp_modern`, written from the
//! revision's schema), beside a legacy target. The client is the official `mcp` Python SDK.

use crate::common::free_port;
use crate::harness::*;
use serde_json::{json, Value};

/// A route federating the legacy simulator (`sim`) and the modern one (`modern`).
pub fn two_era_config(port: u16, legacy: &str, modern: &str, extra_backend: &str) -> String {
    format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - backends:
      - mcp:
          sessionKey: test-session-key
          {extra_backend}
          targets:
          - name: sim
            mcp:
              host: {legacy}
          - name: modern
            mcp:
              host: {modern}
"#,
        admin = free_port(),
        stats = free_port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_session_reaches_a_modern_target_and_answers_its_rounds() {
    let legacy = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let modern = sim::mcp_modern::spawn(sim::mcp_modern::Options::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(
        dir.path(),
        port,
        &two_era_config(port, &legacy.url, &modern.url, ""),
    );
    let out = run_client("upgrade", port).await;

    // The client keeps its legacy session; both eras' tools are on it.
    assert_eq!(out["version"], "2025-11-25", "{out}");
    assert_eq!(out["has_session"], true);
    let tools = out["tools"].to_string();
    for t in ["modern_echo", "modern_two_step", "sim_add"] {
        assert!(tools.contains(t), "{t} missing: {tools}");
    }
    assert_eq!(out["echo"], "héllo");
    assert_eq!(out["legacy_add"], "7");
    // Each multi-round-trip answer became a request on the client's session, and its answer
    // went back as inputResponses.
    assert_eq!(out["color"], "color: teal", "{out}");
    assert_eq!(out["sample"], "sampled: re: what is MCP?", "{out}");
    assert_eq!(out["roots"], "roots: file:///srv/project", "{out}");
    assert_eq!(out["two_step"], "Ada: re: a line for Ada", "{out}");
    // The target refuses a call whose x-mcp-header argument is not mirrored in its
    // Mcp-Param-* header (here in the Base64 form: the value is not ASCII).
    assert_eq!(out["route"], "routed to zürich", "{out}");
    assert_eq!(out["elicit"], json!(["color?", "name?"]));
    assert_eq!(
        out["sampling"],
        json!(["what is MCP?", "a line for Ada"]),
        "{out}"
    );
    assert_eq!(out["count"], "counted to 3");
    assert_eq!(out["progress"], json!([1.0, 2.0, 3.0]), "{out}");
    assert_eq!(out["prompt"], "Write a haiku about gateways.");
    assert_eq!(out["read"], "A server of the 2026-07-28 revision.");

    // What the modern target saw: no initialize accepted, no session, and every request with
    // the revision's _meta and mirrored headers (the simulator refuses a mismatch with -32020,
    // so the calls above passing proves the headers matched).
    let seen = modern.requests();
    assert!(
        seen.iter().any(|r| r["method"] == "initialize"),
        "the gateway tried initialize first"
    );
    assert!(
        seen.iter().any(|r| r["method"] == "server/discover"),
        "and then discovered the target's era"
    );
    let calls: Vec<&Value> = seen
        .iter()
        .filter(|r| r["method"] == "tools/call")
        .collect();
    // two_step: 3 rounds; ask_color, sample, roots: 2 each; echo, slow_count, route: 1 each.
    assert_eq!(calls.len(), 12, "{calls:?}");
    for r in seen.iter().filter(|r| r["method"] != "initialize") {
        assert!(r["headers"]["mcp-session-id"].is_null(), "{r}");
        assert_eq!(r["headers"]["mcp-protocol-version"], "2026-07-28", "{r}");
        assert_eq!(r["headers"]["mcp-method"], r["method"], "{r}");
        let meta = &r["meta"];
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert_eq!(meta["io.modelcontextprotocol/clientInfo"]["name"], "mcp");
        // The capabilities the client declared in its initialize.
        let caps = &meta["io.modelcontextprotocol/clientCapabilities"];
        assert!(
            caps["sampling"].is_object() && caps["elicitation"].is_object(),
            "{r}"
        );
        assert!(caps["roots"].is_object(), "{r}");
        // The client's trace context, carried in _meta (W3C traceparent).
        assert_eq!(
            meta["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "{r}"
        );
    }
    let echo = calls
        .iter()
        .find(|r| r["params"]["name"] == "echo")
        .unwrap();
    assert_eq!(echo["headers"]["mcp-name"], "echo");
    // The second round of two_step carries the first answer's state and the model's answer.
    let last = calls
        .iter()
        .rfind(|r| r["params"]["name"] == "two_step")
        .unwrap();
    assert_eq!(last["params"]["requestState"], "two_step:416461");
    assert_eq!(
        last["params"]["inputResponses"]["line"]["content"]["text"],
        "re: a line for Ada"
    );
}

/// A legacy session over raw HTTP with the given `Authorization`: its session id.
fn session_with(port: u16, auth: &str) -> String {
    let (status, head, body) =
        exchange(port, "POST", &[JSON, ACCEPT, ("authorization", auth)], INIT);
    assert_eq!(status, 200, "{body}");
    header(&head, "mcp-session-id").unwrap().to_string()
}

fn list_tools(port: u16, session: &str, auth: &str) -> Value {
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (status, _, text) = exchange(
        port,
        "POST",
        &[
            JSON,
            ("accept", "application/json"),
            ("authorization", auth),
            ("mcp-session-id", session),
            ("mcp-protocol-version", "2025-06-18"),
        ],
        body,
    );
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// `listCache: true`: a modern target's list pages are kept for the `ttlMs` it declares,
/// shared when `public`, per caller when `private`; its public `server/discover` spares
/// later sessions the era probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_are_cached_for_their_ttl_and_scope() {
    let public = sim::mcp_modern::spawn(sim::mcp_modern::Options {
        name: Some("pub".into()),
        ttl_ms: 60_000,
        public: true,
    })
    .await
    .unwrap();
    let private = sim::mcp_modern::spawn(sim::mcp_modern::Options {
        name: Some("priv".into()),
        ttl_ms: 60_000,
        public: false,
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = two_era_config(port, &public.url, &private.url, "listCache: true")
        .replace("- name: sim", "- name: pub")
        .replace("- name: modern", "- name: priv");
    let _gw = start(dir.path(), port, &yaml);

    let (alice, bob) = ("Bearer alice", "Bearer bob");
    for (who, n) in [(alice, 3), (bob, 2), (alice, 1)] {
        let s = session_with(port, who);
        for _ in 0..n {
            let l = list_tools(port, &s, who);
            let names = l["result"]["tools"].to_string();
            assert!(
                names.contains("pub_echo") && names.contains("priv_echo"),
                "{l}"
            );
        }
    }
    // Public: fetched once for everyone. Private: once per caller (alice, bob).
    assert_eq!(public.count("tools/list"), 1);
    assert_eq!(private.count("tools/list"), 2);
    // The public target was probed once: its discover result said it holds for a minute.
    assert_eq!(public.count("initialize"), 1);
    assert_eq!(public.count("server/discover"), 1);
    assert_eq!(
        private.count("server/discover"),
        3,
        "a private discover is not kept"
    );

    // A modern client is told the merged list's hints: the shortest lifetime left, private
    // because one target's page is.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}}});
    let (status, _, text) = exchange(
        port,
        "POST",
        &[
            JSON,
            ("accept", "application/json"),
            ("authorization", alice),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ],
        &body.to_string(),
    );
    assert_eq!(status, 200, "{text}");
    let r: Value = serde_json::from_str(&text).unwrap();
    let ttl = r["result"]["ttlMs"].as_u64().unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{r}");
    assert_eq!(r["result"]["cacheScope"], "private", "{r}");
}

/// A legacy client that takes only JSON cannot be asked a modern target's questions: its call
/// fails at once, naming why, instead of waiting for answers that cannot come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_only_client_is_not_left_waiting_for_a_question() {
    let legacy = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let modern = sim::mcp_modern::spawn(sim::mcp_modern::Options::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(
        dir.path(),
        port,
        &two_era_config(port, &legacy.url, &modern.url, ""),
    );
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"elicitation":{}},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let (_, head, _) = exchange(port, "POST", &[JSON, ACCEPT], init);
    let session = header(&head, "mcp-session-id").unwrap().to_string();
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"modern_ask_color","arguments":{}}}"#;
    let started = std::time::Instant::now();
    let (status, _, body) = exchange(
        port,
        "POST",
        &[
            JSON,
            ("accept", "application/json"),
            ("mcp-session-id", &session),
            ("mcp-protocol-version", "2025-06-18"),
        ],
        call,
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], -32603, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("modern") && msg.contains("cannot be asked"),
        "{msg}"
    );
}

/// The era of a target travels in the sealed session id: a second replica (same session key)
/// continues a legacy session with a modern target without probing it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_continues_a_session_with_a_modern_target() {
    let legacy = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let modern = sim::mcp_modern::spawn(sim::mcp_modern::Options::default())
        .await
        .unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let _a = start(
        dir_a.path(),
        port_a,
        &two_era_config(port_a, &legacy.url, &modern.url, ""),
    );
    let _b = start(
        dir_b.path(),
        port_b,
        &two_era_config(port_b, &legacy.url, &modern.url, ""),
    );
    let session = raw_session(port_a);
    let probes = modern.count("server/discover");
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"modern_echo","arguments":{"text":"on b"}}}"#;
    let (status, _, body) = exchange(
        port_b,
        "POST",
        &[
            JSON,
            ("accept", "application/json"),
            ("mcp-session-id", &session),
            ("mcp-protocol-version", "2025-06-18"),
        ],
        call,
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "on b", "{v}");
    assert!(
        v["result"].get("resultType").is_none(),
        "a legacy answer: {v}"
    );
    assert_eq!(modern.count("server/discover"), probes, "no new probe on B");
}

/// The JSON-RPC answer in a response body: plain JSON, or the last `data:` event carrying an
/// id (chunk-size lines of a chunked body are skipped).
fn answer_in(body: &str) -> Value {
    let mut last = None;
    for l in body.lines() {
        if let Some(d) = l.strip_prefix("data: ") {
            if let Ok(v) = serde_json::from_str::<Value>(d) {
                if v.get("id").is_some() {
                    last = Some(v);
                }
            }
        }
    }
    last.unwrap_or_else(|| {
        let (a, b) = (body.find('{').unwrap(), body.rfind('}').unwrap());
        serde_json::from_str(&body[a..=b]).unwrap_or_else(|e| panic!("{e}: {body}"))
    })
}

/// A legacy session's tasks (2025-11-25) on a modern target that runs tool calls as tasks of
/// the tasks extension: the capability, a task-augmented call, `tasks/get`, the blocking
/// `tasks/result` (polled by the gateway), `tasks/cancel`; the handles the client holds are
/// sealed, the target sees its own ids and the extension declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_sessions_tasks_run_on_a_modern_target() {
    let legacy = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let modern = sim::mcp_modern::spawn(sim::mcp_modern::Options::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(
        dir.path(),
        port,
        &two_era_config(port, &legacy.url, &modern.url, ""),
    );
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let (status, head, body) = exchange(port, "POST", &[JSON, ACCEPT], init);
    assert_eq!(status, 200, "{body}");
    let sid = header(&head, "mcp-session-id").unwrap().to_string();
    let init = answer_in(&body);
    assert!(
        init["result"]["capabilities"]["tasks"]["requests"]["tools"]["call"].is_object(),
        "{init}"
    );
    let headers = [
        JSON,
        ACCEPT,
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let mut next = 1;
    let mut rpc = |method: &str, params: Value| -> Value {
        next += 1;
        let body = json!({"jsonrpc": "2.0", "id": next, "method": method, "params": params});
        let (status, _, text) = exchange(port, "POST", &headers, &body.to_string());
        assert_eq!(status, 200, "{method}: {text}");
        answer_in(&text)
    };

    let created = rpc(
        "tools/call",
        json!({"name": "modern_slow_job", "arguments": {"ms": 600, "text": "legacy"}, "task": {"ttl": 60000}}),
    );
    let task = &created["result"]["task"];
    assert_eq!(task["status"], "working", "{created}");
    assert_eq!(task["ttl"], 60000, "{created}");
    assert_eq!(task["pollInterval"], 100, "{created}");
    assert!(created["result"].get("resultType").is_none(), "{created}");
    let handle = task["taskId"].as_str().unwrap().to_string();
    assert!(
        handle.len() > 80 && !handle.starts_with("job-"),
        "sealed: {handle}"
    );

    let got = rpc("tasks/get", json!({"taskId": handle}));
    assert_eq!(got["result"]["taskId"], handle.as_str(), "{got}");
    assert!(got["result"].get("result").is_none(), "{got}");
    // tasks/result waits for the end (the gateway polls the target's tasks/get).
    let done = rpc("tasks/result", json!({"taskId": handle}));
    assert_eq!(
        done["result"]["content"][0]["text"], "done: legacy",
        "{done}"
    );
    assert_eq!(
        done["result"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        handle.as_str(),
        "{done}"
    );
    let after = rpc("tasks/get", json!({"taskId": handle}));
    assert_eq!(after["result"]["status"], "completed", "{after}");

    // Cancel a long one.
    let long = rpc(
        "tools/call",
        json!({"name": "modern_slow_job", "arguments": {"ms": 60000}, "task": {}}),
    );
    let lh = long["result"]["task"]["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let cancelled = rpc("tasks/cancel", json!({"taskId": lh}));
    assert_eq!(cancelled["result"]["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["result"]["taskId"], lh.as_str());
    let r = rpc("tasks/result", json!({"taskId": lh}));
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{r}"
    );
    // tasks/list: the extension has none; the session's list leaves the target out.
    let listed = rpc("tasks/list", json!({}));
    assert_eq!(listed["result"]["tasks"], json!([]), "{listed}");
    // A forged handle never reaches the target.
    let forged = rpc("tasks/get", json!({"taskId": "job-0000000000000000"}));
    assert_eq!(forged["error"]["code"], -32602, "{forged}");

    // Not augmented: the extension is not declared for it, and the target refuses.
    let plain = rpc(
        "tools/call",
        json!({"name": "modern_slow_job", "arguments": {}}),
    );
    assert_eq!(plain["error"]["code"], -32021, "{plain}");

    // What the target saw: its own ids, in Mcp-Name, with the extension declared.
    let gets: Vec<Value> = modern
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "tasks/get")
        .collect();
    assert!(!gets.is_empty());
    for g in &gets {
        let id = g["params"]["taskId"].as_str().unwrap();
        assert!(id.starts_with("job-"), "{g}");
        assert_eq!(g["headers"]["mcp-name"], id, "{g}");
        assert!(
            g["meta"]["io.modelcontextprotocol/clientCapabilities"]["extensions"]
                ["io.modelcontextprotocol/tasks"]
                .is_object(),
            "{g}"
        );
    }
    assert_eq!(modern.count("tasks/cancel"), 1);
}
