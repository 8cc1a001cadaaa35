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
    assert!(
        r["capabilities"]["tools"].get("listChanged").is_none(),
        "no list changes without subscriptions/listen: {r}"
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
