//! Modern clients (MCP 2026-07-28: no `initialize`, no session, `_meta` and mirrored headers
//! on every request) through the downgrade shim to legacy targets: the in-repo simulator
//! (streamable HTTP) and the reference server `@modelcontextprotocol/server-everything` over
//! stdio and over streamable HTTP. No official SDK release speaks 2026-07-28 yet (the `mcp`
//! Python package in `.venv` is 1.30.0, newest revision 2025-11-25), so the client here is
//! written from the revision's schema and transport page.

use crate::common::{free_port, wait_until, Proc};
use crate::harness::*;
use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const VERSION: &str = "2026-07-28";

/// A client of the 2026-07-28 revision over streamable HTTP, written from the schema.
struct Client {
    port: u16,
    capabilities: Value,
    next_id: u64,
    /// An `Authorization` header, for routes that identify callers.
    auth: Option<String>,
}

/// What came back: the HTTP status, the final JSON-RPC message, and the notifications before
/// it (when the answer was an event stream).
struct Answer {
    status: u16,
    msg: Value,
    notes: Vec<Value>,
}

impl Answer {
    fn result(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.msg);
        assert!(self.msg.get("error").is_none(), "{}", self.msg);
        &self.msg["result"]
    }
    fn error_code(&self) -> i64 {
        self.msg["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not an error: {}", self.msg))
    }
    fn text(&self) -> String {
        self.result()["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `Mcp-Name` as the revision encodes it: plain when header-safe, else the Base64 sentinel.
fn name_header(v: &str) -> String {
    let plain = v.bytes().all(|b| (0x21..=0x7e).contains(&b) || b == b' ')
        && v.trim() == v
        && !(v.starts_with("=?base64?") && v.ends_with("?="));
    if plain {
        v.to_string()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(v)
        )
    }
}

/// One HTTP/1.1 exchange with the gateway's `/mcp`: (status, head, body), chunked bodies
/// decoded.
fn post(port: u16, headers: &[(String, String)], body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let out = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let chunked = header(head, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (head[9..12].parse().unwrap(), head.to_string(), body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

impl Client {
    fn new(port: u16, capabilities: Value) -> Client {
        Client {
            port,
            capabilities,
            next_id: 1,
            auth: None,
        }
    }

    fn with_key(mut self, key: &str) -> Client {
        self.auth = Some(format!("Bearer {key}"));
        self
    }

    /// The request's `_meta`, as the revision requires on every request.
    fn meta(&self) -> Value {
        json!({
            "io.modelcontextprotocol/protocolVersion": VERSION,
            "io.modelcontextprotocol/clientCapabilities": self.capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "schema-client", "version": "1.0.0"},
        })
    }

    fn body(&mut self, method: &str, mut params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let meta = params.get("_meta").cloned().unwrap_or_else(|| json!({}));
        let mut full = self.meta();
        for (k, v) in meta.as_object().unwrap() {
            full[k] = v.clone();
        }
        params["_meta"] = full;
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    }

    /// The standard headers for `body`: version, method and (where required) name.
    fn headers(&self, body: &Value) -> Vec<(String, String)> {
        let mut h = vec![
            ("content-type".into(), "application/json".into()),
            (
                "accept".into(),
                "application/json, text/event-stream".into(),
            ),
            ("mcp-protocol-version".into(), VERSION.into()),
            ("mcp-method".into(), body["method"].as_str().unwrap().into()),
        ];
        let name = match body["method"].as_str().unwrap() {
            "tools/call" | "prompts/get" => body["params"]["name"].as_str(),
            "resources/read" => body["params"]["uri"].as_str(),
            // The tasks extension: `Mcp-Name` carries the task id.
            "tasks/get" | "tasks/update" | "tasks/cancel" => body["params"]["taskId"].as_str(),
            _ => None,
        };
        if let Some(n) = name {
            h.push(("mcp-name".into(), name_header(n)));
        }
        if let Some(a) = &self.auth {
            h.push(("authorization".into(), a.clone()));
        }
        h
    }

    fn send(&self, body: &Value, headers: &[(String, String)]) -> Answer {
        let (status, head, text) = post(self.port, headers, &body.to_string());
        let sse = header(&head, "content-type").is_some_and(|v| v.starts_with("text/event-stream"));
        if !sse {
            let msg = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {head}\n{text}"));
            return Answer {
                status,
                msg,
                notes: Vec::new(),
            };
        }
        let mut notes = Vec::new();
        let mut last = Value::Null;
        for event in text.split("\n\n") {
            for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                let m: Value = serde_json::from_str(data).unwrap();
                if m.get("id").is_some() {
                    last = m;
                } else {
                    notes.push(m);
                }
            }
        }
        Answer {
            status,
            msg: last,
            notes,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Answer {
        let body = self.body(method, params);
        self.send(&body, &self.headers(&body))
    }

    /// A `tools/call` and, while the answer is `input_required`, its retries with the answers
    /// `answer` gives to each input request. Returns every round's answer.
    fn call_tool_answering(
        &mut self,
        name: &str,
        arguments: Value,
        mut answer: impl FnMut(&Value) -> Value,
    ) -> Vec<Answer> {
        let mut rounds = Vec::new();
        let mut params = json!({"name": name, "arguments": arguments});
        loop {
            let a = self.call("tools/call", params.clone());
            let result = a.result().clone();
            rounds.push(a);
            if result["resultType"] != "input_required" {
                return rounds;
            }
            let mut responses = serde_json::Map::new();
            for (key, request) in result["inputRequests"].as_object().unwrap() {
                responses.insert(key.clone(), answer(request));
            }
            params["inputResponses"] = Value::Object(responses);
            params["requestState"] = result["requestState"].clone();
            assert!(rounds.len() < 5, "too many rounds");
        }
    }
}

fn sampled(request: &Value) -> Value {
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    json!({
        "role": "assistant",
        "content": {"type": "text", "text": "sampled by the schema client"},
        "model": "test-model",
        "stopReason": "endTurn",
    })
}

fn elicited(request: &Value) -> Value {
    assert_eq!(request["method"], "elicitation/create", "{request}");
    assert!(request["params"]["requestedSchema"]["properties"]
        .get("name")
        .is_some());
    json!({"action": "accept", "content": {"name": "Ada Lovelace", "check": true, "integer": 7}})
}

/// The reference server on streamable HTTP, for a target that asks its questions on a POST's
/// event stream (answers go back as POSTs to its session).
fn everything_http() -> (Proc, u16) {
    let port = free_port();
    let p = Proc(
        Command::new("node")
            .arg(everything())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("reference server on HTTP", Duration::from_secs(20), || {
        TcpStream::connect(addr).is_ok()
    });
    (p, port)
}

fn web_target(port: u16) -> String {
    format!("          - name: web\n            mcp:\n              host: http://127.0.0.1:{port}/mcp\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_client_discovers_lists_and_calls_legacy_targets() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(dir.path(), port, &config(port, &sim.url, ""));
    let mut c = Client::new(port, json!({}));

    // server/discover, from the targets' merged offer.
    let d = c.call("server/discover", json!({}));
    let r = d.result();
    assert_eq!(r["resultType"], "complete");
    let versions = r["supportedVersions"].to_string();
    assert!(
        versions.contains("2026-07-28") && versions.contains("2025-11-25"),
        "{r}"
    );
    assert!(r["capabilities"]["tools"].is_object(), "{r}");
    assert!(r["capabilities"]["prompts"].is_object(), "{r}");
    assert_eq!(
        r["capabilities"]["tools"]["listChanged"], true,
        "list changes as the targets offer them (through subscriptions/listen): {r}"
    );
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "switchyard"
    );
    assert!(r["ttlMs"].is_number() && r["cacheScope"].is_string(), "{r}");

    // tools/list: the federation's names, the route's authorization, the revision's fields.
    let l = c.call("tools/list", json!({}));
    let r = l.result();
    let names: Vec<&str> = r["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for t in [
        "everything_echo",
        "everything_get-sum",
        "sim_echo",
        "sim_add",
    ] {
        assert!(names.contains(&t), "{t} missing from {names:?}");
    }
    assert!(
        !names.contains(&"everything_get-env"),
        "a denied tool is not listed"
    );
    assert_eq!(r["resultType"], "complete");
    assert_eq!(r["ttlMs"], 0);
    assert_eq!(r["cacheScope"], "private");
    let again = c.call("tools/list", json!({}));
    assert_eq!(
        again.result()["tools"],
        r["tools"],
        "the merged list is in a stable order"
    );

    // tools/call to the HTTP and the stdio target.
    let add = c.call(
        "tools/call",
        json!({"name": "sim_add", "arguments": {"a": 1, "b": 2}}),
    );
    assert_eq!(add.text(), "3");
    assert_eq!(add.result()["resultType"], "complete");
    let echo = c.call(
        "tools/call",
        json!({"name": "everything_echo", "arguments": {"message": "from 2026"}}),
    );
    assert!(echo.text().contains("from 2026"), "{}", echo.msg);
    let denied = c.call(
        "tools/call",
        json!({"name": "everything_get-env", "arguments": {}}),
    );
    assert!(denied.msg["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not permitted"));

    // Progress on the call's own event stream.
    let slow = c.call(
        "tools/call",
        json!({"name": "sim_slow_count", "arguments": {"n": 3}, "_meta": {"progressToken": "p1"}}),
    );
    assert_eq!(slow.text(), "counted to 3");
    assert_eq!(slow.notes.len(), 3, "{:?}", slow.notes);
    assert_eq!(slow.notes[2]["params"]["progressToken"], "p1");

    // resources and prompts.
    let res = c.call("resources/list", json!({}));
    assert!(res.result()["resources"]
        .to_string()
        .contains("sim+sim://readme"));
    let read = c.call("resources/read", json!({"uri": "sim+sim://readme"}));
    let r = read.result();
    assert_eq!(r["contents"][0]["uri"], "sim+sim://readme");
    assert_eq!(r["cacheScope"], "private");
    let missing = c.call("resources/read", json!({"uri": "sim+sim://nope"}));
    assert_eq!(
        missing.error_code(),
        -32602,
        "the revision's resource-not-found code"
    );
    let prompt = c.call(
        "prompts/get",
        json!({"name": "sim_greeting", "arguments": {"who": "Ada"}}),
    );
    assert!(prompt.result()["messages"]
        .to_string()
        .contains("Say hello to Ada"));

    // One pooled upstream session served every stateless request.
    assert_eq!(sim.sessions(), 1, "pooled, not one session per request");

    // Protocol errors of the revision.
    let ping = c.call("ping", json!({}));
    assert_eq!(
        (ping.status, ping.error_code()),
        (404, -32601),
        "ping was removed"
    );
    let mut bare = c.body("tools/list", json!({}));
    bare["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    let a = c.send(&bare, &c.headers(&bare));
    assert_eq!(
        (a.status, a.error_code()),
        (400, -32602),
        "capabilities are required"
    );
    let mut odd = c.body("tools/list", json!({}));
    odd["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let a = c.send(&odd, &c.headers(&odd));
    assert_eq!((a.status, a.error_code()), (400, -32022));
    assert!(a.msg["error"]["data"]["supported"]
        .to_string()
        .contains("2026-07-28"));

    // Legacy clients on the same route are unchanged.
    let sid = raw_session(port);
    let (status, _, body) = exchange(
        port,
        "POST",
        &[JSON, ("mcp-session-id", &sid)],
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"sim_add","arguments":{"a":2,"b":2}}}"#,
    );
    assert_eq!(status, 200);
    assert!(
        body.contains(r#""text":"4""#) && !body.contains("resultType"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_headers_that_differ_from_the_body_are_refused() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(dir.path(), port, &config(port, &sim.url, ""));
    let mut c = Client::new(port, json!({}));
    let body = c.body(
        "tools/call",
        json!({"name": "sim_add", "arguments": {"a": 1, "b": 1}}),
    );
    let good = c.headers(&body);
    assert_eq!(c.send(&body, &good).text(), "2");

    let with = |name: &str, value: &str| -> Vec<(String, String)> {
        let mut h: Vec<_> = good.iter().filter(|(k, _)| k != name).cloned().collect();
        h.push((name.to_string(), value.to_string()));
        h
    };
    let b64 = |s: &str| {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    let cases = [
        (
            "mcp-name",
            "sim_echo".to_string(),
            "another tool in Mcp-Name",
        ),
        ("mcp-name", b64("sim_echo"), "another tool, Base64-encoded"),
        (
            "mcp-name",
            "=?base64?not base64!?=".to_string(),
            "broken Base64",
        ),
        (
            "mcp-method",
            "tools/list".to_string(),
            "another method in Mcp-Method",
        ),
        (
            "mcp-protocol-version",
            "2025-11-25".to_string(),
            "another version",
        ),
    ];
    for (name, value, what) in &cases {
        let a = c.send(&body, &with(name, value));
        assert_eq!(
            (a.status, a.error_code()),
            (400, -32020),
            "{what}: {}",
            a.msg
        );
        assert!(
            a.msg["error"]["message"].as_str().unwrap().contains("Mcp")
                || a.msg["error"]["message"].as_str().unwrap().contains("MCP"),
            "{what}: {}",
            a.msg
        );
    }
    for missing in ["mcp-name", "mcp-method", "mcp-protocol-version"] {
        let h: Vec<_> = good.iter().filter(|(k, _)| k != missing).cloned().collect();
        let a = c.send(&body, &h);
        assert_eq!(
            (a.status, a.error_code()),
            (400, -32020),
            "without {missing}"
        );
    }
    // The Base64 form of the right name is the right name.
    assert_eq!(
        c.send(&body, &with("mcp-name", &b64("sim_add"))).text(),
        "2"
    );
    // A resource URI that is not header-safe travels Base64-encoded.
    let read = c.body("resources/read", json!({"uri": "sim+sim://readme"}));
    let mut h = c.headers(&read);
    h.retain(|(k, _)| k != "mcp-name");
    h.push(("mcp-name".into(), b64("sim+sim://readme")));
    assert!(c.send(&read, &h).result()["contents"].is_array());
    assert_eq!(sim.sessions(), 1);
}

/// A legacy target's sampling and elicitation requests reach a modern client as
/// `input_required` results, and its retries resume the same upstream exchange; forged,
/// replayed and misapplied `requestState`s are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_servers_questions_become_input_required_rounds() {
    let (_web, web_port) = everything_http();
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = config_with(port, &sim.url, "", &web_target(web_port));
    let _gw = start(dir.path(), port, &yaml);
    let mut c = Client::new(port, json!({"sampling": {}, "elicitation": {"form": {}}}));

    let tools = c.call("tools/list", json!({})).result()["tools"].to_string();
    for t in [
        "everything_trigger-sampling-request",
        "web_trigger-sampling-request",
        "web_trigger-elicitation-request",
    ] {
        assert!(
            tools.contains(t),
            "{t}: the pooled sessions declared the client's capabilities"
        );
    }
    // A client without those capabilities is offered no such tools (its own pooled sessions).
    let plain = Client::new(port, json!({})).call("tools/list", json!({}));
    assert!(!plain.result()["tools"]
        .to_string()
        .contains("trigger-sampling-request"));

    for target in ["web", "everything"] {
        let rounds = c.call_tool_answering(
            &format!("{target}_trigger-sampling-request"),
            json!({"prompt": "capital of France?", "maxTokens": 20}),
            sampled,
        );
        assert_eq!(rounds.len(), 2, "{target}: one question, then the answer");
        let first = rounds[0].result();
        assert_eq!(first["resultType"], "input_required");
        let (_, request) = first["inputRequests"]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        assert!(request["params"]["messages"]
            .to_string()
            .contains("capital of France?"));
        assert!(first["requestState"].as_str().unwrap().len() > 40);
        assert!(
            rounds[1].text().contains("sampled by the schema client"),
            "{target}: {}",
            rounds[1].msg
        );
        assert_eq!(rounds[1].result()["resultType"], "complete");
    }

    let rounds = c.call_tool_answering("web_trigger-elicitation-request", json!({}), elicited);
    assert_eq!(rounds.len(), 2);
    let done = rounds[1].text();
    assert!(
        done.contains("Ada Lovelace") && done.contains("Favorite Integer: 7"),
        "{done}"
    );

    // requestState misuse.
    let params = json!({"name": "web_trigger-sampling-request", "arguments": {"prompt": "again", "maxTokens": 5}});
    let first = c.call("tools/call", params.clone());
    let state = first.result()["requestState"].as_str().unwrap().to_string();
    let key = first.result()["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let retry = |state: &str, params: &Value| -> Value {
        let mut p = params.clone();
        p["requestState"] = json!(state);
        let mut responses = serde_json::Map::new();
        responses.insert(
            key.clone(),
            sampled(&json!({"method": "sampling/createMessage"})),
        );
        p["inputResponses"] = Value::Object(responses);
        p
    };
    // Altered: one character changed.
    let mut forged = state.clone().into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let a = c.call("tools/call", retry(&forged, &params));
    assert_eq!((a.status, a.error_code()), (400, -32602), "{}", a.msg);
    assert!(a.msg["error"]["message"]
        .as_str()
        .unwrap()
        .contains("requestState"));
    // A session id, or garbage, is not a requestState.
    let a = c.call("tools/call", retry(&raw_session(port), &params));
    assert_eq!(a.error_code(), -32602);
    // On another request (other arguments).
    let mut other = params.clone();
    other["arguments"]["prompt"] = json!("something else");
    let a = c.call("tools/call", retry(&state, &other));
    assert_eq!((a.status, a.error_code()), (400, -32602), "{}", a.msg);
    // The right retry resumes the exchange, once.
    let done = c.call("tools/call", retry(&state, &params));
    assert!(
        done.text().contains("sampled by the schema client"),
        "{}",
        done.msg
    );
    let replayed = c.call("tools/call", retry(&state, &params));
    assert_eq!(
        (replayed.status, replayed.error_code()),
        (400, -32602),
        "{}",
        replayed.msg
    );
    assert!(replayed.msg["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already used"));
}

/// A retry that reaches another replica (same session key) completes there: the request runs
/// again and the target's question, asked again, gets the client's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_a_second_replica_completes_the_call() {
    let (_web, web_port) = everything_http();
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let _a = start(
        dir_a.path(),
        port_a,
        &config_with(port_a, &sim.url, "", &web_target(web_port)),
    );
    let _b = start(
        dir_b.path(),
        port_b,
        &config_with(port_b, &sim.url, "", &web_target(web_port)),
    );
    let caps = json!({"sampling": {}, "elicitation": {}});
    let mut on_a = Client::new(port_a, caps.clone());
    let mut on_b = Client::new(port_b, caps);
    for tool in [
        "web_trigger-elicitation-request",
        "everything_trigger-sampling-request",
    ] {
        let mut params =
            json!({"name": tool, "arguments": {"prompt": "replicas", "maxTokens": 10}});
        if tool.starts_with("web") {
            params["arguments"] = json!({});
        }
        let first = on_a.call("tools/call", params.clone());
        let r = first.result();
        assert_eq!(r["resultType"], "input_required", "{r}");
        let mut responses = serde_json::Map::new();
        for (k, req) in r["inputRequests"].as_object().unwrap() {
            let answer = if tool.starts_with("web") {
                elicited(req)
            } else {
                sampled(req)
            };
            responses.insert(k.clone(), answer);
        }
        params["inputResponses"] = Value::Object(responses);
        params["requestState"] = r["requestState"].clone();
        let done = on_b.call("tools/call", params.clone());
        let text = done.text();
        assert!(
            text.contains("Ada Lovelace") || text.contains("sampled by the schema client"),
            "{tool}: {}",
            done.msg
        );
        // Replica B now knows the state as used.
        let again = on_b.call("tools/call", params);
        assert_eq!(again.error_code(), -32602, "{tool}");
    }
}

/// Upstream sessions are pooled per caller (here, per API key) and closed when idle; a
/// `requestState` is good only for the caller it was issued to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sessions_are_per_caller_and_close_when_idle() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
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
        apiKeyAuth:
          keys:
          - {{name: alice, key: sk-alice}}
          - {{name: bob, key: sk-bob}}
      backends:
      - mcp:
          sessionKey: test-session-key
          sessionIdleTimeout: 2s
          targets:
          - name: everything
            stdio:
              cmd: node
              args: ["{script}", "stdio"]
          - name: sim
            mcp:
              host: {url}
"#,
        admin = free_port(),
        stats = free_port(),
        script = everything().display(),
        url = sim.url,
    );
    let _gw = start(dir.path(), port, &yaml);
    let caps = json!({"sampling": {}});
    let mut alice = Client::new(port, caps.clone()).with_key("sk-alice");
    let mut bob = Client::new(port, caps).with_key("sk-bob");
    let add = json!({"name": "sim_add", "arguments": {"a": 2, "b": 3}});
    assert_eq!(alice.call("tools/call", add.clone()).text(), "5");
    assert_eq!(alice.call("tools/call", add.clone()).text(), "5");
    assert_eq!(sim.sessions(), 1);
    assert_eq!(bob.call("tools/call", add).text(), "5");
    assert_eq!(sim.sessions(), 2, "one set of upstream sessions per caller");

    let mut params = json!({"name": "everything_trigger-sampling-request", "arguments": {"prompt": "whose?", "maxTokens": 5}});
    let first = alice.call("tools/call", params.clone());
    let r = first.result();
    assert_eq!(r["resultType"], "input_required");
    let mut responses = serde_json::Map::new();
    for (k, req) in r["inputRequests"].as_object().unwrap() {
        responses.insert(k.clone(), sampled(req));
    }
    params["inputResponses"] = Value::Object(responses);
    params["requestState"] = r["requestState"].clone();
    let stolen = bob.call("tools/call", params.clone());
    assert_eq!((stolen.status, stolen.error_code()), (400, -32602));
    assert!(stolen.msg["error"]["message"]
        .as_str()
        .unwrap()
        .contains("another caller"));
    let done = alice.call("tools/call", params);
    assert!(
        done.text().contains("sampled by the schema client"),
        "{}",
        done.msg
    );

    // Idle for the backend's sessionIdleTimeout: the upstream sessions are closed (DELETE).
    wait_until("pooled sessions closed", Duration::from_secs(15), || {
        sim.sessions() == 0
    });
    // And opened again on the next request.
    let again = json!({"name": "sim_add", "arguments": {"a": 1, "b": 1}});
    assert_eq!(alice.call("tools/call", again).text(), "2");
    assert_eq!(sim.sessions(), 1);
}

/// Many modern clients of one caller share the pooled upstream session to an HTTP target at
/// once; each call's questions and answers stay with that call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rounds_on_one_pooled_session_never_cross() {
    let (_web, web_port) = everything_http();
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(
        dir.path(),
        port,
        &config_with(port, &sim.url, "", &web_target(web_port)),
    );
    let outcomes = tokio::task::spawn_blocking(move || {
        let threads: Vec<_> = (0..12)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut c = Client::new(port, json!({"sampling": {}}));
                    let prompt = format!("question {i}");
                    let rounds = c.call_tool_answering(
                        "web_trigger-sampling-request",
                        json!({"prompt": prompt, "maxTokens": 5}),
                        |req| {
                            // The question is this call's own, and so is the answer.
                            let text = req["params"]["messages"].to_string();
                            assert!(text.contains(&format!("question {i}\"")), "{text}");
                            let mut a = sampled(req);
                            a["content"]["text"] = json!(format!("answer {i}"));
                            a
                        },
                    );
                    (i, rounds.last().unwrap().text())
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (i, text) in outcomes {
        assert!(text.contains(&format!("answer {i}\"")), "{i}: {text}");
    }
}

/// Both shims at once: a modern client, the gateway, a target of the modern revision only.
/// The target's rounds reach the client as the gateway's own `input_required` rounds (sealed
/// `requestState`), including a retry that lands on a second replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_client_reaches_a_modern_target_round_by_round() {
    let legacy = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let modern = sim::mcp_modern::spawn(sim::mcp_modern::Options::default())
        .await
        .unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let config = |port| crate::upgrade::two_era_config(port, &legacy.url, &modern.url, "");
    let _a = start(dir_a.path(), port_a, &config(port_a));
    let _b = start(dir_b.path(), port_b, &config(port_b));
    let caps = json!({"sampling": {}, "elicitation": {"form": {}}});
    let mut c = Client::new(port_a, caps.clone());

    let d = c.call("server/discover", json!({}));
    assert!(d.result()["capabilities"]["tools"].is_object(), "{}", d.msg);
    let tools = c.call("tools/list", json!({})).result()["tools"].to_string();
    assert!(
        tools.contains("modern_two_step") && tools.contains("sim_echo"),
        "{tools}"
    );
    let a = c.call(
        "tools/call",
        json!({"name": "modern_echo", "arguments": {"text": "hi"}}),
    );
    assert_eq!(a.text(), "hi");
    assert_eq!(a.result()["resultType"], "complete");

    // Two questions in two rounds of the target: two rounds for the client too.
    let rounds = c.call_tool_answering("modern_two_step", json!({}), |r| {
        match r["method"].as_str() {
            Some("elicitation/create") => elicited(r),
            _ => sampled(r),
        }
    });
    assert_eq!(rounds.len(), 3, "{}", rounds[rounds.len() - 1].msg);
    assert_eq!(
        rounds[2].text(),
        "Ada Lovelace: sampled by the schema client"
    );
    let state = rounds[0].result()["requestState"].as_str().unwrap();
    assert!(
        !state.contains("two_step"),
        "the client sees the gateway's sealed state, not the target's"
    );

    // A retry on replica B runs the call again there, with the client's answer ready.
    let mut params = json!({"name": "modern_ask_color", "arguments": {}});
    let first = c.call("tools/call", params.clone());
    let r = first.result();
    assert_eq!(r["resultType"], "input_required", "{r}");
    let (key, request) = r["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(request["params"]["message"], "color?");
    params["inputResponses"] = json!({key: {"action": "accept", "content": {"color": "red"}}});
    params["requestState"] = r["requestState"].clone();
    let mut on_b = Client::new(port_b, caps.clone());
    let done = on_b.call("tools/call", params.clone());
    assert_eq!(done.text(), "color: red", "{}", done.msg);
    let mut forged = params.clone();
    forged["requestState"] = json!(format!("{}x", params["requestState"].as_str().unwrap()));
    assert_eq!(on_b.call("tools/call", forged).error_code(), -32602);

    // Mcp-Param-*: checked against the body (the tool's schema marks region x-mcp-header),
    // and mirrored to the target (which refuses a call without it).
    let route = json!({"name": "modern_route", "arguments": {"region": "eu-west"}});
    let body = c.body("tools/call", route.clone());
    let mut headers = c.headers(&body);
    headers.push(("mcp-param-region".into(), "us-east".into()));
    let a = c.send(&body, &headers);
    assert_eq!((a.status, a.error_code()), (400, -32020), "{}", a.msg);
    assert!(a.msg["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Mcp-Param-Region"));
    let body = c.body("tools/call", route.clone());
    let mut headers = c.headers(&body);
    headers.push(("mcp-param-region".into(), "eu-west".into()));
    assert_eq!(c.send(&body, &headers).text(), "routed to eu-west");
    assert_eq!(c.call("tools/call", route).text(), "routed to eu-west");

    // What the target saw: the modern client's own capabilities, and the target's questions
    // were only ever asked because the client declared them.
    for r in modern
        .requests()
        .iter()
        .filter(|r| r["method"] == "tools/call")
    {
        assert_eq!(
            r["meta"]["io.modelcontextprotocol/clientCapabilities"], caps,
            "{r}"
        );
        assert!(r["headers"]["mcp-session-id"].is_null());
    }
    // A client that declared no elicitation is not asked: the target says it cannot.
    let plain = Client::new(port_a, json!({})).call(
        "tools/call",
        json!({"name": "modern_ask_color", "arguments": {}}),
    );
    assert_eq!(plain.result()["isError"], true, "{}", plain.msg);
}

/// An open `subscriptions/listen` stream, read message by message (chunked SSE decoded).
struct Listener {
    s: std::io::BufReader<TcpStream>,
    /// Decoded body bytes not yet split into lines.
    pending: String,
}

impl Listener {
    fn open(c: &mut Client, notifications: Value) -> (Listener, Value) {
        let body = c.body(
            "subscriptions/listen",
            json!({"notifications": notifications}),
        );
        let mut s = TcpStream::connect(("127.0.0.1", c.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let extra: String = c
            .headers(&body)
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let text = body.to_string();
        write!(
            s,
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\n{extra}Content-Length: {}\r\n\r\n{text}",
            text.len()
        )
        .unwrap();
        let mut s = std::io::BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut s, &mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")),
            "{head}"
        );
        (
            Listener {
                s,
                pending: String::new(),
            },
            body["id"].clone(),
        )
    }

    /// The next JSON-RPC message on the stream.
    fn next(&mut self) -> Value {
        use std::io::BufRead;
        loop {
            if let Some(i) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=i).collect();
                if let Some(data) = line.trim_end().strip_prefix("data: ") {
                    return serde_json::from_str(data).unwrap();
                }
                continue;
            }
            let mut size = String::new();
            self.s.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            assert!(n > 0, "the stream ended");
            let mut chunk = vec![0; n + 2];
            self.s.read_exact(&mut chunk).unwrap();
            self.pending
                .push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        }
    }

    /// Messages until one `pick` takes (every message read is returned, in order).
    fn until(&mut self, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let m = self.next();
            let done = pick(&m);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
}

/// `subscriptions/listen` onto legacy targets: the pooled sessions' server stream, read once
/// for every listener, `resources/subscribe` on the target a URI belongs to, and each
/// listener given only what it opted in to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_streams_resource_updates_to_the_listeners_that_asked() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = start(dir.path(), port, &config(port, &sim.url, ""));
    let mut c = Client::new(port, json!({}));
    let d = c.call("server/discover", json!({}));
    assert_eq!(
        d.result()["capabilities"]["resources"]["subscribe"],
        true,
        "subscriptions are offered now that listen is served: {}",
        d.msg
    );
    let list = c.call("resources/list", json!({}));
    let uris: Vec<String> = list.result()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .filter(|u| u.starts_with("everything+"))
        .take(2)
        .map(str::to_string)
        .collect();
    assert_eq!(uris.len(), 2, "{}", list.msg);

    let (mut a, a_id) = Listener::open(&mut c, json!({"resourceSubscriptions": [uris[0]]}));
    let ack = a.next();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["notifications"],
        json!({"resourceSubscriptions": [uris[0]]}),
        "{ack}"
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        a_id
    );
    let (mut b, b_id) = Listener::open(
        &mut c,
        json!({"resourceSubscriptions": [uris[1], "nosuchtarget+x://y"]}),
    );
    let ack = b.next();
    assert_eq!(
        ack["params"]["notifications"],
        json!({"resourceSubscriptions": [uris[1]]}),
        "a URI no target takes is not acknowledged: {ack}"
    );

    // The reference server sends updates for the session's subscriptions once it is told to.
    let t = c.call(
        "tools/call",
        json!({"name": "everything_toggle-subscriber-updates", "arguments": {}}),
    );
    assert!(t.msg.get("result").is_some(), "{}", t.msg);
    let updated = |u: &str| {
        let u = u.to_string();
        move |m: &Value| m["method"] == "notifications/resources/updated" && m["params"]["uri"] == u
    };
    let (ua, ub) = (uris[0].clone(), uris[1].clone());
    let (seen_a, seen_b) =
        tokio::task::spawn_blocking(move || (a.until(updated(&ua)), b.until(updated(&ub))))
            .await
            .unwrap();
    for (seen, own, other, id) in [
        (&seen_a, &uris[0], &uris[1], &a_id),
        (&seen_b, &uris[1], &uris[0], &b_id),
    ] {
        let last = seen.last().unwrap();
        assert_eq!(&last["params"]["uri"], own);
        assert_eq!(
            &last["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
            id
        );
        assert!(
            !seen.iter().any(|m| &m["params"]["uri"] == other),
            "another listener's subscription leaked: {seen:?}"
        );
        assert!(
            seen.iter()
                .all(|m| m["method"] == "notifications/resources/updated"),
            "only what was opted in to (no log messages): {seen:?}"
        );
    }
    c.call(
        "tools/call",
        json!({"name": "everything_toggle-subscriber-updates", "arguments": {}}),
    );
}

/// The tasks extension (`io.modelcontextprotocol/tasks`, 2026-07-28) for a modern client of
/// a legacy target that runs a tool as a 2025-11-25 task (the reference server's
/// `simulate-research-query`, `taskSupport: required`): discovery, a call answered with
/// `resultType: "task"` under a sealed handle, polling to the inlined result, cancel, forged
/// and foreign handles, a client that did not declare the extension, and polling from a
/// second replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_client_gets_sealed_tasks_of_a_legacy_target() {
    let (_web, web_port) = everything_http();
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let _a = start(
        dir_a.path(),
        port_a,
        &config_with(port_a, &sim.url, "", &web_target(web_port)),
    );
    let _b = start(
        dir_b.path(),
        port_b,
        &config_with(port_b, &sim.url, "", &web_target(web_port)),
    );
    let ext = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    let mut c = Client::new(port_a, ext.clone());
    let mut on_b = Client::new(port_b, ext);

    // The extension is offered: a target runs tool calls as tasks.
    let d = c.call("server/discover", json!({}));
    assert!(
        d.result()["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"].is_object(),
        "{}",
        d.msg
    );
    assert!(
        d.result()["capabilities"].get("tasks").is_none(),
        "{}",
        d.msg
    );

    // A call answered with a task, under a sealed handle.
    let created = c.call(
        "tools/call",
        json!({"name": "web_simulate-research-query", "arguments": {"topic": "gateways"}}),
    );
    let r = created.result().clone();
    assert_eq!(r["resultType"], "task", "{r}");
    assert_eq!(r["status"], "working", "{r}");
    assert_eq!(r["ttlMs"], 300000, "{r}");
    assert_eq!(r["pollIntervalMs"], 1000, "{r}");
    assert!(r.get("task").is_none() && r.get("ttl").is_none(), "{r}");
    let handle = r["taskId"].as_str().unwrap().to_string();
    assert!(
        handle.len() > 80,
        "a sealed handle, not the target's own id: {handle}"
    );

    // Polled to completion; the result inlined in the completed task.
    let poll = |c: &mut Client, h: &str| -> (Vec<String>, Value) {
        let mut statuses = Vec::new();
        for _ in 0..60 {
            let g = c.call("tasks/get", json!({"taskId": h}));
            let t = g.result().clone();
            assert_eq!(t["resultType"], "complete", "{t}");
            assert_eq!(t["taskId"], h, "tasks/get answers under the handle: {t}");
            let s = t["status"].as_str().unwrap().to_string();
            statuses.push(s.clone());
            if ["completed", "failed", "cancelled"].contains(&s.as_str()) {
                return (statuses, t);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("task never finished: {statuses:?}");
    };
    let (statuses, done) = tokio::task::block_in_place(|| poll(&mut c, &handle));
    assert!(statuses.contains(&"working".to_string()), "{statuses:?}");
    assert_eq!(done["status"], "completed", "{done}");
    let text = done["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("Research Report: gateways"), "{done}");
    assert!(
        done["result"]["_meta"]["io.modelcontextprotocol/related-task"].is_null(),
        "the target's own task id stays at the gateway: {done}"
    );

    // Created on replica A, polled on replica B (same session key): the handle names the
    // target and the upstream session the task lives in.
    let other = c.call(
        "tools/call",
        json!({"name": "web_simulate-research-query", "arguments": {"topic": "replicas"}}),
    );
    let oh = other.result()["taskId"].as_str().unwrap().to_string();
    let (_, done_b) = tokio::task::block_in_place(|| poll(&mut on_b, &oh));
    assert_eq!(done_b["status"], "completed", "{done_b}");
    assert!(
        done_b["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Research Report: replicas"),
        "{done_b}"
    );

    // Cancel: acknowledged, and the task is cancelled.
    let third = c.call(
        "tools/call",
        json!({"name": "web_simulate-research-query", "arguments": {"topic": "cancel me"}}),
    );
    let th = third.result()["taskId"].as_str().unwrap().to_string();
    let ack = c.call("tasks/cancel", json!({"taskId": th}));
    assert_eq!(ack.result()["resultType"], "complete", "{}", ack.msg);
    let after = c.call("tasks/get", json!({"taskId": th}));
    assert_eq!(after.result()["status"], "cancelled", "{}", after.msg);
    // tasks/update: acknowledged (no input is outstanding for it).
    let upd = c.call(
        "tasks/update",
        json!({"taskId": th, "inputResponses": {"k": {"action": "accept"}}}),
    );
    assert_eq!(upd.result()["resultType"], "complete", "{}", upd.msg);

    // Forged and tampered handles, and a legacy session's handle, are refused.
    let mut tampered = handle.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for forged in ["786512e2-9e0d-44bd-8f29-789f320fe840", tampered.as_str()] {
        for method in ["tasks/get", "tasks/cancel"] {
            let f = c.call(method, json!({"taskId": forged}));
            assert_eq!(f.error_code(), -32602, "{method} {forged}: {}", f.msg);
            assert!(
                f.msg["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("unknown task"),
                "{}",
                f.msg
            );
        }
    }

    // Mcp-Name must carry the task id.
    let body = c.body("tasks/get", json!({"taskId": handle}));
    let mut h = c.headers(&body);
    h.retain(|(k, _)| k != "mcp-name");
    h.push(("mcp-name".into(), "another-task".into()));
    let mismatch = c.send(&body, &h);
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.error_code(), -32020, "{}", mismatch.msg);

    // A client that did not declare the extension: no tasks/*, and no task for its call.
    let mut plain = Client::new(port_a, json!({}));
    let g = plain.call("tasks/get", json!({"taskId": handle}));
    assert_eq!(g.error_code(), -32021, "{}", g.msg);
    assert!(
        g.msg["error"]["data"]["requiredCapabilities"]["extensions"]
            ["io.modelcontextprotocol/tasks"]
            .is_object(),
        "{}",
        g.msg
    );
    let call = plain.call(
        "tools/call",
        json!({"name": "web_simulate-research-query", "arguments": {"topic": "no tasks"}}),
    );
    assert_eq!(
        call.error_code(),
        -32021,
        "a tool that runs only as a task: {}",
        call.msg
    );
    // Asking for a task itself (the 2025-11-25 field) changes nothing: the server decides.
    let asked = plain.call(
        "tools/call",
        json!({"name": "web_simulate-research-query", "arguments": {"topic": "x"}, "task": {"ttl": 1000}}),
    );
    assert_eq!(asked.error_code(), -32021, "{}", asked.msg);
    let echo = c.call(
        "tools/call",
        json!({"name": "web_echo", "arguments": {"message": "hi"}, "task": {}}),
    );
    assert_eq!(echo.result()["resultType"], "complete", "{}", echo.msg);
    assert_eq!(
        echo.text(),
        "Echo: hi",
        "a tool that is not a task runs as a call"
    );
}

/// A modern client's task handle is bound to its caller: another API key's client cannot
/// read or cancel it (here with the reference server as a stdio target, whose task lives in
/// the caller's pooled upstream session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_handle_is_good_only_for_its_caller() {
    let dir = tempfile::tempdir().unwrap();
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
        apiKeyAuth:
          keys:
          - {{name: alice, key: sk-alice}}
          - {{name: bob, key: sk-bob}}
      backends:
      - mcp:
          sessionKey: test-session-key
          targets:
          - name: everything
            stdio:
              cmd: node
              args: ["{script}", "stdio"]
"#,
        admin = free_port(),
        stats = free_port(),
        script = everything().display(),
    );
    let _gw = start(dir.path(), port, &yaml);
    let ext = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    let mut alice = Client::new(port, ext.clone()).with_key("sk-alice");
    let mut bob = Client::new(port, ext).with_key("sk-bob");
    let created = alice.call(
        "tools/call",
        json!({"name": "simulate-research-query", "arguments": {"topic": "mine"}}),
    );
    assert_eq!(created.result()["resultType"], "task", "{}", created.msg);
    let h = created.result()["taskId"].as_str().unwrap().to_string();
    for method in ["tasks/get", "tasks/cancel"] {
        let stolen = bob.call(method, json!({"taskId": h}));
        assert_eq!(stolen.error_code(), -32602, "{method}: {}", stolen.msg);
    }
    let mine = alice.call("tasks/get", json!({"taskId": h}));
    assert_eq!(mine.result()["taskId"], h.as_str());
    assert_eq!(
        mine.result()["status"],
        "working",
        "bob's cancel did not reach it: {}",
        mine.msg
    );
}

/// A modern client's task on a modern target, through both shims: the target decides (its
/// `slow_job` runs as a task of the extension), the client gets a sealed handle, and polls it
/// to the inlined result from either replica; cancel reaches the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_clients_task_on_a_modern_target_goes_through_both_shims() {
    let legacy = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let modern = sim::mcp_modern::spawn(sim::mcp_modern::Options::default())
        .await
        .unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let config = |port| crate::upgrade::two_era_config(port, &legacy.url, &modern.url, "");
    let _a = start(dir_a.path(), port_a, &config(port_a));
    let _b = start(dir_b.path(), port_b, &config(port_b));
    let ext = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    let mut c = Client::new(port_a, ext.clone());
    let mut on_b = Client::new(port_b, ext);
    let d = c.call("server/discover", json!({}));
    assert!(
        d.result()["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"].is_object(),
        "{}",
        d.msg
    );
    let created = c.call(
        "tools/call",
        json!({"name": "modern_slow_job", "arguments": {"ms": 400, "text": "both"}}),
    );
    let r = created.result().clone();
    assert_eq!(r["resultType"], "task", "{r}");
    assert_eq!(
        (r["ttlMs"].as_u64(), r["pollIntervalMs"].as_u64()),
        (Some(60000), Some(100))
    );
    let h = r["taskId"].as_str().unwrap().to_string();
    assert!(h.len() > 80 && !h.starts_with("job-"), "{h}");
    let mut last = Value::Null;
    for _ in 0..40 {
        last = on_b
            .call("tasks/get", json!({"taskId": h}))
            .result()
            .clone();
        assert_eq!(last["taskId"], h.as_str(), "{last}");
        if last["status"] != "working" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["result"]["content"][0]["text"], "done: both", "{last}");

    let long = c.call(
        "tools/call",
        json!({"name": "modern_slow_job", "arguments": {"ms": 60000}}),
    );
    let lh = long.result()["taskId"].as_str().unwrap().to_string();
    let ack = c.call("tasks/cancel", json!({"taskId": lh}));
    assert_eq!(ack.result()["resultType"], "complete", "{}", ack.msg);
    let after = c.call("tasks/get", json!({"taskId": lh}));
    assert_eq!(after.result()["status"], "cancelled", "{}", after.msg);
    assert_eq!(modern.count("tasks/cancel"), 1);
    // Without the extension, the target's own refusal.
    let mut plain = Client::new(port_a, json!({}));
    let refused = plain.call(
        "tools/call",
        json!({"name": "modern_slow_job", "arguments": {}}),
    );
    assert_eq!(refused.error_code(), -32021, "{}", refused.msg);
}
