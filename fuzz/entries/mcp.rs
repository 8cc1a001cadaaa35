// Fuzz entry points for crates/mcp. Included with `#[path]` by fuzz/fuzz_targets/*.rs and by
// crates/mcp/tests/fuzz_replay.rs.

use std::sync::OnceLock;

use mcp::session::{Sealer, SessionState};
use serde_json::Value;

fn sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(|| Sealer::new(Some("fuzz-session-key")).expect("a keyed sealer"))
}

/// `[mode][rest...]`: mode even: `rest` is a client's `Mcp-Session-Id` header, unsealed;
/// mode odd: `rest` is a session state as JSON, which must survive seal then open (the
/// fuzzer cannot forge AES-GCM, so this is how it reaches the state parsing behind it).
pub fn mcp_session(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = sealer().open(&String::from_utf8_lossy(rest));
        return;
    }
    let Ok(mut state) = serde_json::from_slice::<SessionState>(rest) else {
        return;
    };
    state.iat = mcp::session::now_secs();
    let sealed = sealer().seal(&state).expect("a state seals");
    let opened = sealer().open(&sealed).expect("a sealed state opens");
    // NaN cannot appear in JSON, so a state equals itself.
    assert_eq!(opened, state);
}

/// A JSON-RPC message as a client or an upstream sends it, through the helpers the gateway
/// routes with: kind, method, params, ids tagged and untagged, federated names.
pub fn mcp_jsonrpc(data: &[u8]) {
    let Ok(mut msg) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let kind = mcp::jsonrpc::kind(&msg);
    let method = mcp::jsonrpc::method(&msg).to_owned();
    let _ = mcp::jsonrpc::params(&msg);
    let id = mcp::jsonrpc::id(&msg);
    let _ = mcp::jsonrpc::is_error(&msg);
    let tagged = mcp::jsonrpc::tag_server_id("target-a", &id);
    let (target, original) = mcp::jsonrpc::untag_server_id(&tagged).expect("a tagged id untags");
    assert_eq!(target, "target-a");
    assert_eq!(original, id);
    let _ = mcp::jsonrpc::untag_server_id(&id);
    if kind == mcp::jsonrpc::Kind::Request {
        let params = mcp::jsonrpc::params_mut(&mut msg);
        for field in ["name", "uri"] {
            if let Some(Value::String(s)) = params.get(field) {
                let _ = mcp::names::split_name(s);
                let _ = mcp::names::split_uri(s);
            }
        }
    }
    if let Some(n) = msg.get("name").and_then(Value::as_str) {
        let prefixed = mcp::names::prefix_name("t", n);
        assert_eq!(
            mcp::names::split_name(&prefixed),
            Some(("t", n)).filter(|_| !n.is_empty())
        );
    }
    // A list result (or the message itself) rewritten for the federation.
    let list_method = match msg.get("result") {
        Some(_) if method.is_empty() => "tools/list",
        _ => method.as_str(),
    };
    if let Some((list, field)) = mcp::names::list_key(list_method) {
        let items = msg
            .get_mut("result")
            .and_then(|r| r.get_mut(list))
            .and_then(Value::as_array_mut);
        if let Some(items) = items {
            for item in items {
                mcp::names::prefix_item(item, field, "target-a");
            }
        }
    }
    let _ = mcp::jsonrpc::error(id, mcp::jsonrpc::Code::INVALID_REQUEST, "fuzz");
}

/// A fake upstream MCP server: answers `initialize`, accepts notifications, and answers
/// everything else with the fuzzer's reply bytes (or an empty result when there are none).
struct FakeUpstream {
    reply: bytes::Bytes,
}

impl mcp::HttpClient for FakeUpstream {
    fn send(
        &self,
        req: http::Request<mcp::Body>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<http::Response<mcp::Body>, String>> + Send>,
    > {
        let reply = self.reply.clone();
        Box::pin(async move {
            use http_body_util::BodyExt;
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let id = msg.get("id").cloned();
            let out = match (mcp::jsonrpc::method(&msg), id) {
                ("initialize", Some(id)) => serde_json::json!({"jsonrpc": "2.0", "id": id,
                    "result": {"protocolVersion": "2025-06-18",
                        "capabilities": {"tools": {}, "prompts": {}, "resources": {}},
                        "serverInfo": {"name": "fake", "version": "1"}}})
                .to_string()
                .into(),
                (_, None) => bytes::Bytes::new(),
                (_, Some(_)) if !reply.is_empty() => reply,
                (_, Some(id)) => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {}})
                    .to_string()
                    .into(),
            };
            let status = if out.is_empty() { 202 } else { 200 };
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("mcp-session-id", "upstream-session")
                .body(mcp::full(out))
                .map_err(|e| e.to_string())
        })
    }
}

/// `[flags][client body] NUL [upstream reply]`: one MCP gateway (two HTTP targets served by
/// [`FakeUpstream`]) answers a client POST: the body is the client's JSON-RPC message (or
/// batch), sent on a session opened by a real `initialize` (flags bit 0) or none, accepting
/// SSE (bit 1) or JSON only. Whatever the targets answer comes from the reply bytes. Runs on a
/// current-thread runtime; nothing leaves the process.
pub fn mcp_serve(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (body, reply) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let cfg: config::McpBackend = serde_json::from_value(serde_json::json!({
        "targets": [
            {"name": "alpha", "mcp": {"host": "http://alpha.invalid/mcp"}},
            {"name": "beta", "mcp": {"host": "http://beta.invalid/mcp"}}
        ],
        "sessionKey": "fuzz-session-key"
    }))
    .expect("an MCP backend config");
    let reply = bytes::Bytes::copy_from_slice(reply);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    rt.block_on(async move {
        let gateway = mcp::Gateway::compile(&cfg, None, |_, _| {
            Ok(std::sync::Arc::new(FakeUpstream {
                reply: reply.clone(),
            }) as std::sync::Arc<dyn mcp::HttpClient>)
        })
        .expect("the MCP gateway compiles");
        let accept = if flags & 2 != 0 {
            "application/json, text/event-stream"
        } else {
            "application/json"
        };
        let post = |body: bytes::Bytes, session: Option<String>| {
            let mut b = http::Request::post("http://gw/mcp")
                .header("content-type", "application/json")
                .header("accept", accept);
            if let Some(s) = session {
                b = b.header("mcp-session-id", s);
            }
            b.body(mcp::full(body)).expect("a request")
        };
        let source = std::net::SocketAddr::from(([127, 0, 0, 1], 5000));
        let mut session = None;
        if flags & 1 != 0 {
            let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}}"#;
            let mut observed = mcp::Observed::default();
            let down = mcp::Downstream {
                source,
                jwt: None,
                api_key: None,
                tool_guard: None,
                observed: &mut observed,
            };
            let resp = gateway.serve(post(bytes::Bytes::from_static(init), None), down).await;
            session = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            drain(resp).await;
        }
        let mut observed = mcp::Observed::default();
        let down = mcp::Downstream {
            source,
            jwt: None,
            api_key: None,
            tool_guard: None,
            observed: &mut observed,
        };
        let resp = gateway
            .serve(post(bytes::Bytes::copy_from_slice(body), session), down)
            .await;
        drain(resp).await;
    });
}

/// Reads a response body to its end (an SSE answer ends after its last event), giving up
/// after a while so a stream left open does not hang the fuzzer.
async fn drain(resp: http::Response<mcp::Body>) {
    use http_body_util::BodyExt;
    let collect = resp.into_body().collect();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), collect).await;
}
