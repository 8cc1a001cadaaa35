//! A small MCP server of the 2026-07-28 revision only, over streamable HTTP, written from the
//! revision's schema and transport page: no `initialize` and no session; every request carries
//! its protocol version, client capabilities and client info in `_meta`, mirrored in the
//! `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers (checked: -32020 with HTTP 400
//! on a mismatch); a request naming another version (a legacy `initialize` above all) gets
//! -32022 with the supported versions. Tools that need the client's input answer with
//! `resultType: "input_required"` (multi round-trip requests) and finish on the retry that
//! carries `inputResponses` and the `requestState`:
//!
//! - `echo`, `add`: plain tools;
//! - `ask_color`: asks an elicitation; `sample`: asks for sampling; `roots`: asks `roots/list`;
//! - `two_step`: an elicitation, then (a second round, the first answer in `requestState`)
//!   sampling;
//! - `slow_count`: progress notifications on an SSE answer;
//! - `whoami`: the `_meta` the request carried (client info, `traceparent`);
//! - `route`: its `region` argument is marked `x-mcp-header: "Region"`, so a call needs a
//!   matching `Mcp-Param-Region` header (-32020 otherwise);
//! - `slow_job`: runs as a task of the tasks extension (`io.modelcontextprotocol/tasks`,
//!   advertised in `server/discover`) for `ms` milliseconds: `resultType: "task"`, then
//!   `tasks/get` (the result inlined once completed), `tasks/update`, `tasks/cancel`, with
//!   `Mcp-Name` carrying the task id; -32021 to a client that did not declare the extension.
//!
//! List and read results carry `ttlMs` and `cacheScope` (from [`Options`]). Every request is
//! recorded ([`ModernMcpSim::requests`]) for tests to assert on what reached the server.

use crate::{SimBody, SimServer};
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

pub const VERSION: &str = "2026-07-28";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

#[derive(Clone, Default)]
pub struct Options {
    /// `serverInfo.name` (tells servers apart in tests).
    pub name: Option<String>,
    /// `ttlMs` on list, read and discover results (default 0).
    pub ttl_ms: u64,
    /// `cacheScope` on those results: `public` when set, else `private`.
    pub public: bool,
}

#[derive(Default)]
struct State {
    options: Options,
    /// What each request carried: method, mirrored headers, `_meta`, params.
    requests: Mutex<Vec<Value>>,
    /// `slow_job` tasks, by task id.
    tasks: Mutex<std::collections::HashMap<String, SimTask>>,
}

const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

struct SimTask {
    started: std::time::Instant,
    created_at: String,
    runs_for: std::time::Duration,
    cancelled: bool,
    text: String,
}

impl SimTask {
    /// The task as `tasks/get` answers it (`resultType` as given).
    fn detailed(&self, id: &str, result_type: &str) -> Value {
        let done = self.started.elapsed() >= self.runs_for;
        let status = match (self.cancelled, done) {
            (true, _) => "cancelled",
            (false, true) => "completed",
            (false, false) => "working",
        };
        let mut t = json!({"resultType": result_type, "taskId": id, "status": status,
            "createdAt": self.created_at, "lastUpdatedAt": self.created_at,
            "ttlMs": 60000, "pollIntervalMs": 100});
        if status == "completed" {
            t["result"] = json!({"content": [{"type": "text", "text": format!("done: {}", self.text)}], "isError": false});
        }
        t
    }
}

fn missing_tasks_extension(id: Value) -> Response<SimBody> {
    json_body(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32021,
            "message": "Missing required client capability",
            "data": {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}}}),
    )
}

/// A running simulated 2026-07-28 server; `url` is its endpoint.
pub struct ModernMcpSim {
    pub server: SimServer,
    pub url: String,
    state: Arc<State>,
}

impl ModernMcpSim {
    /// Every request received so far (including refused ones), oldest first, as
    /// `{"method", "headers": {...}, "meta", "params"}`.
    pub fn requests(&self) -> Vec<Value> {
        self.state
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// How many requests of `method` were received.
    pub fn count(&self, method: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["method"] == method)
            .count()
    }
}

pub async fn spawn(options: Options) -> std::io::Result<ModernMcpSim> {
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
    Ok(ModernMcpSim { server, url, state })
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

fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response<SimBody> {
    json_body(
        status,
        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    )
}

fn header_text(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Mcp-Name` decoded from the Base64 sentinel form when it is in it.
fn decode_name(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_string()),
    }
}

/// The caching hints every cacheable result carries.
fn cacheable(state: &State, mut result: Value) -> Value {
    result["resultType"] = json!("complete");
    result["ttlMs"] = json!(state.options.ttl_ms);
    result["cacheScope"] = json!(if state.options.public {
        "public"
    } else {
        "private"
    });
    result
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<SimBody> {
    if req.method() != Method::POST {
        // No GET stream and no sessions to delete in this revision.
        return json_body(StatusCode::METHOD_NOT_ALLOWED, &json!({}));
    }
    let headers = req.headers().clone();
    let body = match http_body_util::Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return rpc_error(StatusCode::BAD_REQUEST, Value::Null, -32600, "bad body"),
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(StatusCode::BAD_REQUEST, Value::Null, -32700, "parse error");
    };
    let method = msg["method"].as_str().unwrap_or("").to_string();
    let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
    let meta = params.get("_meta").cloned().unwrap_or_else(|| json!({}));
    if let Ok(mut r) = state.requests.lock() {
        r.push(json!({
            "method": method,
            "headers": {
                "mcp-protocol-version": header_text(&headers, "mcp-protocol-version"),
                "mcp-method": header_text(&headers, "mcp-method"),
                "mcp-name": header_text(&headers, "mcp-name"),
                "mcp-session-id": header_text(&headers, "mcp-session-id"),
                "authorization": header_text(&headers, "authorization"),
            },
            "meta": meta,
            "params": params,
        }));
    }
    let Some(id) = msg.get("id").cloned() else {
        // The revision defines no client notification over HTTP: accepted and ignored.
        let mut r = Response::new(
            Full::new(Bytes::new())
                .map_err(|n| match n {})
                .boxed_unsync(),
        );
        *r.status_mut() = StatusCode::ACCEPTED;
        return r;
    };
    let version = meta.get(META_VERSION).and_then(Value::as_str);
    if version != Some(VERSION) {
        let shown = version.unwrap_or("none");
        return json_body(
            StatusCode::BAD_REQUEST,
            &json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": -32022,
                "message": format!("Unsupported protocol version: {shown}"),
                "data": {"supported": [VERSION], "requested": version},
            }}),
        );
    }
    let mismatch = |what: &str| rpc_error(StatusCode::BAD_REQUEST, id.clone(), -32020, what);
    if header_text(&headers, "mcp-protocol-version").as_deref() != Some(VERSION) {
        return mismatch("MCP-Protocol-Version header missing or not the body's version");
    }
    if header_text(&headers, "mcp-method").as_deref() != Some(method.as_str()) {
        return mismatch("Mcp-Method header missing or not the body's method");
    }
    let named = match method.as_str() {
        "tools/call" | "prompts/get" => params["name"].as_str(),
        "resources/read" => params["uri"].as_str(),
        "tasks/get" | "tasks/update" | "tasks/cancel" => params["taskId"].as_str(),
        _ => None,
    };
    if let Some(body_name) = named {
        let h = header_text(&headers, "mcp-name").and_then(|v| decode_name(&v));
        if h.as_deref() != Some(body_name) {
            return mismatch("Mcp-Name header missing or not the body's name");
        }
    }
    if method == "tools/call" {
        if let Err(why) = check_param_headers(&headers, &params) {
            return mismatch(&why);
        }
    }
    let Some(caps) = meta.get(META_CAPABILITIES).filter(|c| c.is_object()) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            -32602,
            "_meta must carry the client's capabilities",
        );
    };
    let name = state
        .options
        .name
        .clone()
        .unwrap_or_else(|| "switchyard-sim-modern-mcp".into());
    let result = match method.as_str() {
        "server/discover" => cacheable(
            state,
            json!({
                "supportedVersions": [VERSION],
                "capabilities": {"tools": {}, "prompts": {}, "resources": {},
                    "extensions": {TASKS_EXTENSION: {}}},
                "serverInfo": {"name": name, "version": "1.0.0"},
                "instructions": "A simulated 2026-07-28 MCP server.",
            }),
        ),
        "tools/list" => cacheable(state, json!({"tools": tools()})),
        "prompts/list" => cacheable(
            state,
            json!({"prompts": [{"name": "haiku", "description": "A haiku about a topic",
                "arguments": [{"name": "topic", "required": true}]}]}),
        ),
        "prompts/get" => {
            let topic = params["arguments"]["topic"].as_str().unwrap_or("rain");
            json!({"resultType": "complete", "messages": [{"role": "user",
                "content": {"type": "text", "text": format!("Write a haiku about {topic}.")}}]})
        }
        "resources/list" => cacheable(
            state,
            json!({"resources": [{"uri": "modern://readme", "name": "readme", "mimeType": "text/plain"}]}),
        ),
        "resources/templates/list" => cacheable(state, json!({"resourceTemplates": []})),
        "resources/read" => match params["uri"].as_str() {
            Some("modern://readme") => cacheable(
                state,
                json!({"contents": [{"uri": "modern://readme", "mimeType": "text/plain",
                    "text": "A server of the 2026-07-28 revision."}]}),
            ),
            _ => {
                return rpc_error(StatusCode::OK, id, -32602, "resource not found");
            }
        },
        "tools/call" => return call_tool(state, id, &params, caps, &meta),
        "tasks/get" | "tasks/update" | "tasks/cancel" => {
            if caps["extensions"].get(TASKS_EXTENSION).is_none() {
                return missing_tasks_extension(id);
            }
            let task_id = params["taskId"].as_str().unwrap_or("");
            let mut tasks = state.tasks.lock().unwrap_or_else(|p| p.into_inner());
            let Some(t) = tasks.get_mut(task_id) else {
                return rpc_error(
                    StatusCode::OK,
                    id,
                    -32602,
                    "Failed to retrieve task: Task not found",
                );
            };
            match method.as_str() {
                "tasks/get" => t.detailed(task_id, "complete"),
                "tasks/cancel" => {
                    if t.started.elapsed() < t.runs_for {
                        t.cancelled = true;
                    }
                    json!({"resultType": "complete"})
                }
                _ => json!({"resultType": "complete"}),
            }
        }
        _ => {
            return rpc_error(
                StatusCode::NOT_FOUND,
                id,
                -32601,
                &format!("method {method} not found"),
            )
        }
    };
    json_body(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "result": result}),
    )
}

fn tools() -> Value {
    let object = json!({"type": "object"});
    json!([
        {"name": "echo", "description": "Returns its text", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"name": "add", "description": "Adds two numbers", "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}},
        {"name": "ask_color", "description": "Asks the user for a color (elicitation)", "inputSchema": object},
        {"name": "sample", "description": "Asks the client's model (sampling)", "inputSchema": {"type": "object", "properties": {"prompt": {"type": "string"}}}},
        {"name": "roots", "description": "Asks the client for its roots", "inputSchema": object},
        {"name": "two_step", "description": "Asks a name, then the model, in two rounds", "inputSchema": object},
        {"name": "slow_count", "description": "Counts to n, reporting progress", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        {"name": "whoami", "description": "The request's _meta", "inputSchema": object},
        {"name": "route", "description": "Routes by region (mirrored in Mcp-Param-Region)", "inputSchema": {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}, "note": {"type": "string"}}}},
        {"name": "slow_job", "description": "Runs as a task for ms milliseconds", "inputSchema": {"type": "object", "properties": {"ms": {"type": "integer"}, "text": {"type": "string"}}}},
    ])
}

/// Checks a call's `Mcp-Param-*` headers against the tool's `x-mcp-header` arguments
/// (top-level properties): a non-null argument needs its header, equal once decoded.
fn check_param_headers(headers: &HeaderMap, params: &Value) -> Result<(), String> {
    let name = params["name"].as_str().unwrap_or("");
    let Some(tool) = tools()
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == name).cloned())
    else {
        return Ok(());
    };
    let props = tool["inputSchema"]["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (key, prop) in props {
        let Some(h) = prop["x-mcp-header"].as_str() else {
            continue;
        };
        let v = &params["arguments"][&key];
        if v.is_null() {
            continue;
        }
        let want = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        let got = header_text(headers, &format!("mcp-param-{}", h.to_ascii_lowercase()))
            .and_then(|g| decode_name(&g));
        if got.as_deref() != Some(want.as_str()) {
            return Err(format!(
                "Mcp-Param-{h} header missing or not the body's {key}"
            ));
        }
    }
    Ok(())
}

fn text_result(text: String) -> Value {
    json!({"resultType": "complete", "content": [{"type": "text", "text": text}], "isError": false})
}

fn tool_error(text: &str) -> Value {
    json!({"resultType": "complete", "content": [{"type": "text", "text": text}], "isError": true})
}

fn input_required(asks: Value, state: Option<String>) -> Value {
    let mut r = json!({"resultType": "input_required", "inputRequests": asks});
    if let Some(s) = state {
        r["requestState"] = json!(s);
    }
    r
}

fn elicit(message: &str, field: &str) -> Value {
    json!({"method": "elicitation/create", "params": {
        "mode": "form",
        "message": message,
        "requestedSchema": {"type": "object", "properties": {field: {"type": "string"}}, "required": [field]},
    }})
}

fn sampling(prompt: &str) -> Value {
    json!({"method": "sampling/createMessage", "params": {
        "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
        "maxTokens": 50,
    }})
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// An accepted elicitation's field, or why there is none.
fn elicited(r: &Value, field: &str) -> Result<String, String> {
    match r["action"].as_str() {
        Some("accept") => r["content"][field]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("accepted without {field}")),
        Some(other) => Err(other.to_string()),
        None => Err("not an elicitation result".into()),
    }
}

fn sampled(r: &Value) -> String {
    r["content"]["text"].as_str().unwrap_or("").to_string()
}

fn call_tool(
    sim: &State,
    id: Value,
    params: &Value,
    caps: &Value,
    meta: &Value,
) -> Response<SimBody> {
    let args = &params["arguments"];
    let responses = params.get("inputResponses").cloned().unwrap_or(Value::Null);
    let state = params["requestState"].as_str();
    let can = |c: &str| caps.get(c).is_some();
    let result = match params["name"].as_str().unwrap_or("") {
        "echo" => text_result(args["text"].as_str().unwrap_or("").to_string()),
        "add" => {
            let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
            text_result(format!("{sum}"))
        }
        "whoami" => text_result(meta.to_string()),
        "slow_job" => {
            if caps["extensions"].get(TASKS_EXTENSION).is_none() {
                return missing_tasks_extension(id);
            }
            let task_id = format!("job-{:016x}", fastrand::u64(..));
            let t = SimTask {
                started: std::time::Instant::now(),
                created_at: "2026-07-28T00:00:00Z".into(),
                runs_for: std::time::Duration::from_millis(args["ms"].as_u64().unwrap_or(300)),
                cancelled: false,
                text: args["text"].as_str().unwrap_or("").to_string(),
            };
            let created = t.detailed(&task_id, "task");
            sim.tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(task_id, t);
            created
        }
        "route" => text_result(format!(
            "routed to {}",
            args["region"].as_str().unwrap_or("nowhere")
        )),
        "ask_color" => match responses.get("color") {
            Some(r) => match elicited(r, "color") {
                Ok(c) => text_result(format!("color: {c}")),
                Err(why) => text_result(format!("no color: {why}")),
            },
            None if !can("elicitation") => tool_error("the client cannot elicit"),
            None => input_required(json!({"color": elicit("color?", "color")}), None),
        },
        "sample" => match responses.get("answer") {
            Some(r) => text_result(format!("sampled: {}", sampled(r))),
            None if !can("sampling") => tool_error("the client cannot sample"),
            None => {
                let prompt = args["prompt"].as_str().unwrap_or("hello");
                input_required(json!({"answer": sampling(prompt)}), None)
            }
        },
        "roots" => match responses.get("roots") {
            Some(r) => {
                let uris: Vec<&str> = r["roots"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x["uri"].as_str())
                    .collect();
                text_result(format!("roots: {}", uris.join(",")))
            }
            None if !can("roots") => tool_error("the client has no roots"),
            None => input_required(
                json!({"roots": {"method": "roots/list", "params": {}}}),
                None,
            ),
        },
        "two_step" => {
            // Round 1 asks the name; round 2 (the name carried in requestState) asks the model.
            let carried = state
                .and_then(|s| s.strip_prefix("two_step:"))
                .map(|h| unhex(h).ok_or(()));
            match (carried, responses.get("name"), responses.get("line")) {
                (Some(Err(())), _, _) => {
                    return rpc_error(StatusCode::OK, id, -32602, "requestState is not ours")
                }
                (None, None, _) => input_required(json!({"name": elicit("name?", "name")}), None),
                (None, Some(r), _) => match elicited(r, "name") {
                    Ok(name) => input_required(
                        json!({"line": sampling(&format!("a line for {name}"))}),
                        Some(format!("two_step:{}", hex(&name))),
                    ),
                    Err(why) => text_result(format!("no name: {why}")),
                },
                (Some(Ok(name)), _, Some(r)) => text_result(format!("{name}: {}", sampled(r))),
                (Some(Ok(_)), _, None) => {
                    return rpc_error(StatusCode::OK, id, -32602, "the line was not answered")
                }
            }
        }
        "slow_count" => {
            let n = args["n"].as_u64().unwrap_or(3).min(50);
            let token = meta["progressToken"].clone();
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
        other => {
            return rpc_error(
                StatusCode::OK,
                id,
                -32602,
                &format!("unknown tool: {other}"),
            )
        }
    };
    json_body(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "result": result}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_text_round_trips() {
        assert_eq!(unhex(&hex("Zoë")).as_deref(), Some("Zoë"));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
        assert_eq!(decode_name("=?base64?ZWNobw==?=").as_deref(), Some("echo"));
        assert_eq!(decode_name("echo").as_deref(), Some("echo"));
    }
}
