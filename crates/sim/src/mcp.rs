//! A small MCP server over streamable HTTP (MCP 2025-03-26 .. 2025-11-25), for `switchyard demo`
//! and tests: tools `echo`, `add`, `slow_count` (which reports progress over an SSE
//! response) and `crash` (which resets the connection mid-answer), a `greeting` prompt and a `sim://readme` resource. Sessions are issued on
//! `initialize` and enforced afterwards (404 for an unknown one); `required_auth` makes every
//! request without that exact `Authorization` a 401.

use crate::{SimBody, SimServer};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

const VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

#[derive(Clone, Default)]
pub struct Options {
    /// The `Authorization` value every request must carry.
    pub required_auth: Option<String>,
    /// Server name in `initialize` (tells federated servers apart in tests).
    pub name: Option<String>,
    /// Tools per `tools/list` page (cursor pagination); default: all on one page.
    pub page_size: Option<usize>,
}

#[derive(Default)]
struct State {
    sessions: Mutex<HashSet<String>>,
    options: Options,
    /// `Authorization` values seen, for tests.
    seen_auth: Mutex<Vec<String>>,
}

/// A running simulated MCP server; `url` is its endpoint.
pub struct McpSim {
    pub server: SimServer,
    pub url: String,
    state: Arc<State>,
}

impl McpSim {
    pub fn sessions(&self) -> usize {
        self.state.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }
    pub fn seen_authorization(&self) -> Vec<String> {
        self.state
            .seen_auth
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

pub async fn spawn(options: Options) -> std::io::Result<McpSim> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let state = Arc::new(State {
        options,
        ..Default::default()
    });
    let s = state.clone();
    let server = crate::serve_service(
        listener,
        None,
        Arc::new(move |req| {
            let s = s.clone();
            Box::pin(async move { handle(&s, req).await })
        }),
    );
    let url = format!("http://{}/mcp", server.addr);
    Ok(McpSim { server, url, state })
}

fn json_body(status: StatusCode, v: &Value) -> Response<SimBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(v.to_string()))
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<SimBody> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(a) = &auth {
        if let Ok(mut seen) = state.seen_auth.lock() {
            seen.push(a.clone());
        }
    }
    if let Some(required) = &state.options.required_auth {
        if auth.as_deref() != Some(required.as_str()) {
            return json_body(StatusCode::UNAUTHORIZED, &json!({"error": "unauthorized"}));
        }
    }
    let session = req
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let known = |s: &Option<String>| {
        s.as_ref().is_some_and(|s| {
            state
                .sessions
                .lock()
                .map(|m| m.contains(s))
                .unwrap_or(false)
        })
    };
    match *req.method() {
        Method::DELETE => {
            let removed = session.as_ref().is_some_and(|s| {
                state
                    .sessions
                    .lock()
                    .map(|mut m| m.remove(s))
                    .unwrap_or(false)
            });
            let status = if removed {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            return json_body(status, &json!({}));
        }
        Method::GET => {
            // No server-initiated stream in this simulator.
            return json_body(StatusCode::METHOD_NOT_ALLOWED, &json!({}));
        }
        Method::POST => {}
        _ => return json_body(StatusCode::METHOD_NOT_ALLOWED, &json!({})),
    }
    let body = match http_body_util::Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_body(
                StatusCode::BAD_REQUEST,
                &rpc_error(Value::Null, -32600, "bad body"),
            )
        }
    };
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return json_body(
                StatusCode::BAD_REQUEST,
                &rpc_error(Value::Null, -32700, "parse error"),
            )
        }
    };
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    let id = msg.get("id").cloned();
    if method == "initialize" {
        let requested = msg["params"]["protocolVersion"].as_str().unwrap_or("");
        let version = VERSIONS
            .iter()
            .find(|v| **v == requested)
            .unwrap_or(&VERSIONS[0]);
        let sid = format!("sim-{:016x}", fastrand::u64(..));
        if let Ok(mut s) = state.sessions.lock() {
            s.insert(sid.clone());
        }
        let name = state
            .options
            .name
            .clone()
            .unwrap_or_else(|| "switchyard-sim-mcp".into());
        let result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}, "prompts": {}, "resources": {}},
            "serverInfo": {"name": name, "version": "1.0.0"},
            "instructions": "A simulated MCP server: echo, add, slow_count."
        });
        let mut r = json_body(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": id, "result": result}),
        );
        if let Ok(v) = HeaderValue::from_str(&sid) {
            r.headers_mut().insert("mcp-session-id", v);
        }
        return r;
    }
    if !known(&session) {
        let status = if session.is_some() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        return json_body(status, &rpc_error(Value::Null, -32001, "session not found"));
    }
    let Some(id) = id else {
        // A notification or a response: accepted.
        let mut r = Response::new(
            Full::new(Bytes::new())
                .map_err(|n| match n {})
                .boxed_unsync(),
        );
        *r.status_mut() = StatusCode::ACCEPTED;
        return r;
    };
    let result = match method {
        "ping" => json!({}),
        "tools/list" => {
            let all = tools().as_array().cloned().unwrap_or_default();
            let start: usize = msg["params"]["cursor"]
                .as_str()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let size = state.options.page_size.unwrap_or(all.len()).max(1);
            let page: Vec<Value> = all.iter().skip(start).take(size).cloned().collect();
            let mut r = json!({"tools": page});
            if start + size < all.len() {
                r["nextCursor"] = json!((start + size).to_string());
            }
            r
        }
        "prompts/list" => {
            json!({"prompts": [{"name": "greeting", "description": "Greets someone", "arguments": [{"name": "who", "required": true}]}]})
        }
        "prompts/get" => {
            let who = msg["params"]["arguments"]["who"]
                .as_str()
                .unwrap_or("world");
            json!({"messages": [{"role": "user", "content": {"type": "text", "text": format!("Say hello to {who}.")}}]})
        }
        "resources/list" => {
            json!({"resources": [{"uri": "sim://readme", "name": "readme", "mimeType": "text/plain"}]})
        }
        "resources/read" => match msg["params"]["uri"].as_str() {
            Some("sim://readme") => {
                json!({"contents": [{"uri": "sim://readme", "mimeType": "text/plain", "text": "Switchyard's simulated MCP server."}]})
            }
            _ => return json_body(StatusCode::OK, &rpc_error(id, -32002, "resource not found")),
        },
        "tools/call" => return call_tool(id, &msg["params"]),
        _ => return json_body(StatusCode::OK, &rpc_error(id, -32601, "method not found")),
    };
    json_body(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "result": result}),
    )
}

fn tools() -> Value {
    json!([
        {"name": "echo", "description": "Returns its text", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"name": "add", "description": "Adds two numbers", "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}},
        {"name": "crash", "description": "Dies in the middle of answering", "inputSchema": {"type": "object"}},
        {"name": "slow_count", "description": "Counts to n, reporting progress", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}}
    ])
}

fn text_result(text: String) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": false})
}

fn call_tool(id: Value, params: &Value) -> Response<SimBody> {
    let args = &params["arguments"];
    let result = match params["name"].as_str().unwrap_or("") {
        "echo" => text_result(args["text"].as_str().unwrap_or("").to_string()),
        "add" => {
            let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
            text_result(format!("{sum}"))
        }
        "slow_count" => {
            // Progress notifications, then the result, as one SSE response.
            let n = args["n"].as_u64().unwrap_or(3).min(50);
            let token = params["_meta"]["progressToken"].clone();
            let mut out = String::new();
            for i in 1..=n {
                if !token.is_null() {
                    let p = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": i, "total": n}});
                    out.push_str(&format!("event: message\ndata: {p}\n\n"));
                }
            }
            let done = json!({"jsonrpc": "2.0", "id": id, "result": text_result(format!("counted to {n}"))});
            out.push_str(&format!("event: message\ndata: {done}\n\n"));
            let mut r = Response::new(
                Full::new(Bytes::from(out))
                    .map_err(|n| match n {})
                    .boxed_unsync(),
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            return r;
        }
        "crash" => {
            // Starts an SSE answer, then resets the connection: an upstream dying mid-call.
            let first = format!(
                "event: message\ndata: {}\n\n",
                json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "about to crash"}})
            );
            let frames: Vec<Result<http_body::Frame<Bytes>, crate::BoxError>> = vec![
                Ok(http_body::Frame::data(Bytes::from(first))),
                Err("simulated crash".into()),
            ];
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            let mut r = Response::new(body.boxed_unsync());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            return r;
        }
        other => {
            return json_body(
                StatusCode::OK,
                &rpc_error(id, -32602, &format!("unknown tool: {other}")),
            );
        }
    };
    json_body(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "result": result}),
    )
}
