//! The upgrade shim: streamable-HTTP targets that speak only the modern revision
//! (2026-07-28: no `initialize`, no session), behind the same interface as legacy ones, so a
//! legacy client's session (or a pooled session of the downgrade shim) reaches them unchanged.
//!
//! - Era: a target that refuses `initialize` is probed with `server/discover`; one listing a
//!   modern version is modern. Its "upstream session" has no id and the modern version, so the
//!   era travels in the sealed session id and any replica knows it.
//! - Requests go out statelessly: the session's client capabilities and client info (its
//!   `initialize` params), the protocol version and the caller's `traceparent`/`tracestate` in
//!   `_meta`, mirrored in `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` (Base64 sentinel
//!   form where the value is not header-safe).
//! - A multi-round-trip answer (`resultType: "input_required"`) becomes the legacy server's
//!   own requests (sampling, elicitation, roots) on the call's stream; the client's answers
//!   (which reach [`deliver`] through [`super::Target::send`]) go back as `inputResponses`,
//!   with the `requestState`, on a retry of the request, round after round until the target
//!   completes. The rounds of one call run on the replica holding the call's stream.
//! - The final answer is the legacy one: `resultType` dropped (caching hints are kept: the
//!   gateway's list cache reads them, legacy clients ignore them).
//! - Tasks: a target offering the tasks extension (`io.modelcontextprotocol/tasks`) has the
//!   2025-11-25 `tasks` capability (tool calls, cancel; no list). A legacy task-augmented
//!   `tools/call` (`params.task`) goes out declaring the extension, and a `resultType: "task"`
//!   answer comes back as a `CreateTaskResult`; `tasks/get` and `tasks/cancel` map onto the
//!   extension's, and `tasks/result` polls `tasks/get` (at the task's `pollIntervalMs`) until
//!   the task ends. A task waiting for input (`input_required`) is not relayed.

use super::http::HttpTarget;
use super::{CallCtx, UpstreamError};
use crate::jsonrpc::{self, Kind};
use crate::params::Binding;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub const VERSION: &str = "2026-07-28";
pub(crate) const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub(crate) const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub(crate) const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";
/// How long a round waits for the client's answers.
const ANSWER_WITHIN: Duration = crate::mrtr::ANSWER_WITHIN;
/// Rounds one call may take before the gateway gives up on it.
const MAX_ROUNDS: usize = 16;

/// Whether an upstream session is one with a modern (stateless) target.
pub fn is_modern(version: &str) -> bool {
    crate::MODERN_VERSIONS.contains(&version)
}

/// `_meta` of a modern request on behalf of a session: `init` is its `initialize` params.
fn meta(init: &Value, fwd: &HeaderMap, existing: Option<&Value>) -> Map<String, Value> {
    let mut meta = match existing {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    meta.insert(META_VERSION.into(), json!(VERSION));
    meta.insert(
        META_CAPABILITIES.into(),
        init.get("capabilities")
            .filter(|c| c.is_object())
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    meta.insert(
        META_CLIENT_INFO.into(),
        init.get("clientInfo")
            .filter(|c| c.is_object())
            .cloned()
            .unwrap_or_else(crate::modern::server_info),
    );
    // W3C trace context: the trace the gateway continues (its `traceparent` header on the
    // forwarded request, the gateway's span as the parent when tracing is on) wins over one
    // the client put in `_meta`.
    for key in ["traceparent", "tracestate"] {
        if let Some(v) = fwd.get(key).and_then(|v| v.to_str().ok()) {
            meta.insert(key.into(), json!(v));
        }
    }
    meta
}

/// A message as a modern request: `_meta` as the revision requires.
fn modernize(mut msg: Value, init: &Value, fwd: &HeaderMap) -> Value {
    let params = jsonrpc::params_mut(&mut msg);
    let m = meta(init, fwd, params.get("_meta"));
    params.insert("_meta".into(), Value::Object(m));
    msg
}

/// A header value as the revision sends it: as is when header-safe, else in the Base64
/// sentinel form.
pub(crate) fn header_value(v: &str) -> Option<HeaderValue> {
    let plain = v.bytes().all(|b| (0x20..=0x7e).contains(&b) || b == b'\t')
        && v.trim() == v
        && !(v.starts_with("=?base64?") && v.ends_with("?="));
    if plain {
        HeaderValue::from_str(v).ok()
    } else {
        HeaderValue::from_str(&format!("=?base64?{}?=", STANDARD.encode(v))).ok()
    }
}

/// The forwarded headers plus the ones mirroring the body: `Mcp-Method`, and `Mcp-Name` for
/// the methods that address something.
fn mirrored(fwd: &HeaderMap, msg: &Value) -> HeaderMap {
    let mut h = fwd.clone();
    let method = jsonrpc::method(msg);
    if let Ok(v) = HeaderValue::from_str(method) {
        h.insert(METHOD_HEADER, v);
    }
    let field = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    };
    if let Some(name) = field
        .and_then(|f| jsonrpc::params(msg)?.get(f))
        .and_then(Value::as_str)
        .and_then(header_value)
    {
        h.insert(NAME_HEADER, name);
    }
    h
}

/// Asks a target that refused `initialize` for `server/discover`: its result when the target
/// serves a modern version, else `None` (the target is not modern: the refusal stands).
pub(crate) async fn discover(h: &HttpTarget, ctx: &CallCtx<'_>) -> Option<Value> {
    let msg = modernize(
        json!({"jsonrpc": "2.0", "id": jsonrpc::gateway_id(), "method": "server/discover", "params": {}}),
        ctx.init,
        ctx.headers,
    );
    let posted = h
        .post(&mirrored(ctx.headers, &msg), None, Some(VERSION), &msg)
        .await
        .ok()?;
    let answer = super::answer(posted.messages, |_| {}).await.ok()?;
    let result = answer.get("result")?;
    let modern = result
        .get("supportedVersions")
        .and_then(Value::as_array)?
        .iter()
        .any(|v| v.as_str().is_some_and(is_modern));
    if !modern {
        return None;
    }
    h.discovered.remember(result);
    Some(result.clone())
}

/// A target's public `server/discover` result, kept for its `ttlMs`.
#[derive(Default)]
pub struct Discovered(Mutex<Option<(Instant, Value)>>);

impl Discovered {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Value)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept result, while fresh.
    pub(crate) fn fresh(&self) -> Option<Value> {
        match &*self.lock() {
            Some((expires, v)) if *expires > Instant::now() => Some(v.clone()),
            _ => None,
        }
    }

    /// Keeps a result that says it is the same for every caller, for as long as it says.
    pub(crate) fn remember(&self, result: &Value) {
        let (ttl, public) = crate::cache::hints(result);
        if public && !ttl.is_zero() {
            let ttl = ttl.min(Duration::from_secs(24 * 3600));
            *self.lock() = Some((Instant::now() + ttl, result.clone()));
        }
    }
}

/// The `x-mcp-header` bindings of a target's tools, learnt from its `tools/list` when a call
/// needs them (and again when they are older than [`BINDINGS_FOR`] or the tool is not known).
#[derive(Default)]
pub struct ToolHeaders(Mutex<Option<(Instant, Bindings)>>);

/// Each tool's bindings, by tool name.
type Bindings = HashMap<String, Vec<Binding>>;

/// How long learnt bindings are trusted.
const BINDINGS_FOR: Duration = Duration::from_secs(300);
/// `tools/list` pages read at most to learn them.
const MAX_PAGES: usize = 20;

impl ToolHeaders {
    fn get(&self, tool: &str) -> Option<Vec<Binding>> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*g {
            Some((at, map)) if at.elapsed() < BINDINGS_FOR => map.get(tool).cloned(),
            _ => None,
        }
    }

    fn set(&self, map: HashMap<String, Vec<Binding>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), map));
    }
}

/// The bindings of `tool` on a modern target, from what was learnt or a fresh `tools/list`.
async fn bindings_of(h: &HttpTarget, ctx: &CallCtx<'_>, tool: &str) -> Vec<Binding> {
    if let Some(b) = h.tool_headers.get(tool) {
        return b;
    }
    let mut map = HashMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut params = Map::new();
        if let Some(c) = &cursor {
            params.insert("cursor".into(), json!(c));
        }
        let msg = modernize(
            json!({"jsonrpc": "2.0", "id": jsonrpc::gateway_id(), "method": "tools/list", "params": params}),
            ctx.init,
            ctx.headers,
        );
        let Ok(posted) = h
            .post(&mirrored(ctx.headers, &msg), None, Some(VERSION), &msg)
            .await
        else {
            break;
        };
        let Ok(a) = super::answer(posted.messages, |_| {}).await else {
            break;
        };
        for t in a
            .pointer("/result/tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = t.get("name").and_then(Value::as_str) {
                let schema = t.get("inputSchema").cloned().unwrap_or_default();
                map.insert(name.to_string(), crate::params::bindings(&schema));
            }
        }
        cursor = a
            .pointer("/result/nextCursor")
            .and_then(Value::as_str)
            .map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    let found = map.get(tool).cloned().unwrap_or_default();
    h.tool_headers.set(map);
    found
}

/// A discover result as the `initialize` result the rest of the gateway reads.
pub(crate) fn as_initialize(discovered: &Value) -> Value {
    let mut r = Map::new();
    r.insert("protocolVersion".into(), json!(VERSION));
    for k in ["capabilities", "serverInfo", "instructions"] {
        if let Some(v) = discovered.get(k) {
            r.insert(k.into(), v.clone());
        }
    }
    // The tasks extension, as the legacy capability: tool calls as tasks, and cancel.
    let tasks = discovered
        .pointer("/capabilities/extensions")
        .and_then(|e| e.get(crate::tasks::EXTENSION))
        .is_some();
    if let (true, Some(Value::Object(c))) = (tasks, r.get_mut("capabilities")) {
        c.insert(
            "tasks".into(),
            json!({"cancel": {}, "requests": {"tools": {"call": {}}}}),
        );
    }
    Value::Object(r)
}

/// Declares the tasks extension in a modern request's client capabilities.
fn with_tasks_extension(msg: &mut Value) {
    let caps = jsonrpc::params_mut(msg)
        .get_mut("_meta")
        .and_then(|m| m.get_mut(META_CAPABILITIES))
        .and_then(Value::as_object_mut);
    if let Some(caps) = caps {
        let ext = caps.entry("extensions").or_insert_with(|| json!({}));
        if let Some(e) = ext.as_object_mut() {
            e.insert(crate::tasks::EXTENSION.into(), json!({}));
        }
    }
}

/// The extension's `Task` as a legacy (2025-11-25) one: `ttlMs` and `pollIntervalMs` as `ttl`
/// and `pollInterval`; the inlined result, error and input requests left out.
fn legacy_task(t: &Value) -> Value {
    let mut out = Map::new();
    for k in [
        "taskId",
        "status",
        "statusMessage",
        "createdAt",
        "lastUpdatedAt",
    ] {
        if let Some(v) = t.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    out.insert("ttl".into(), t.get("ttlMs").cloned().unwrap_or(Value::Null));
    if let Some(v) = t.get("pollIntervalMs") {
        out.insert("pollInterval".into(), v.clone());
    }
    Value::Object(out)
}

/// One request of the tasks extension about `task`: its result, or the target's error.
async fn ask_task(
    h: &HttpTarget,
    ctx: &CallCtx<'_>,
    method: &str,
    task: &str,
) -> Result<Result<Value, Value>, UpstreamError> {
    let mut msg = modernize(
        json!({"jsonrpc": "2.0", "id": jsonrpc::gateway_id(), "method": method, "params": {"taskId": task}}),
        ctx.init,
        ctx.headers,
    );
    with_tasks_extension(&mut msg);
    let posted = h
        .post(&mirrored(ctx.headers, &msg), None, Some(VERSION), &msg)
        .await?;
    let a = super::answer(posted.messages, |_| {}).await?;
    match (a.get("result"), a.get("error")) {
        (Some(r), _) => Ok(Ok(r.clone())),
        (None, Some(e)) => Ok(Err(e.clone())),
        _ => Err(UpstreamError::Failed(format!(
            "it answered {method} with neither result nor error"
        ))),
    }
}

/// A legacy `tasks/*` request to a modern target, answered from the extension's methods.
async fn task_request(
    h: &HttpTarget,
    ctx: &CallCtx<'_>,
    msg: &Value,
) -> Result<Value, UpstreamError> {
    let id = jsonrpc::id(msg);
    let method = jsonrpc::method(msg);
    let task = jsonrpc::params(msg)
        .and_then(|p| p.get("taskId"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let refused = |e: Value| json!({"jsonrpc": "2.0", "id": id.clone(), "error": e});
    Ok(match method {
        "tasks/get" => match ask_task(h, ctx, "tasks/get", &task).await? {
            Ok(t) => jsonrpc::result(id, legacy_task(&t)),
            Err(e) => refused(e),
        },
        // The legacy answer is the task (cancellation is cooperative: it may still run).
        "tasks/cancel" => match ask_task(h, ctx, "tasks/cancel", &task).await? {
            Err(e) => refused(e),
            Ok(_) => match ask_task(h, ctx, "tasks/get", &task).await? {
                Ok(t) => jsonrpc::result(id, legacy_task(&t)),
                Err(e) => refused(e),
            },
        },
        "tasks/result" => {
            let deadline = Instant::now() + ANSWER_WITHIN;
            loop {
                let t = match ask_task(h, ctx, "tasks/get", &task).await? {
                    Ok(t) => t,
                    Err(e) => break refused(e),
                };
                match t.get("status").and_then(Value::as_str) {
                    Some("completed") => {
                        let mut r = t.get("result").cloned().unwrap_or_else(|| json!({}));
                        if let Some(o) = r.as_object_mut() {
                            o.remove("resultType");
                            let meta = o.entry("_meta").or_insert_with(|| json!({}));
                            if let Some(m) = meta.as_object_mut() {
                                m.insert(crate::tasks::RELATED.into(), json!({"taskId": task}));
                            }
                        }
                        break jsonrpc::result(id, r);
                    }
                    Some("failed") => {
                        break refused(t.get("error").cloned().unwrap_or_else(
                            || json!({"code": -32603, "message": "the task failed"}),
                        ))
                    }
                    Some("cancelled") => {
                        break jsonrpc::error(id, jsonrpc::Code::INVALID_PARAMS, "the task was cancelled")
                    }
                    Some("input_required") => {
                        break jsonrpc::error(
                            id,
                            jsonrpc::Code::INTERNAL_ERROR,
                            "the target's task waits for input, which the gateway does not relay to a legacy client",
                        )
                    }
                    _ => {}
                }
                if Instant::now() >= deadline {
                    break jsonrpc::error(
                        id,
                        jsonrpc::Code::INTERNAL_ERROR,
                        "the task did not end in time",
                    );
                }
                let every = t
                    .get("pollIntervalMs")
                    .and_then(Value::as_u64)
                    .unwrap_or(1000)
                    .clamp(50, 5000);
                tokio::time::sleep(Duration::from_millis(every)).await;
            }
        }
        _ => jsonrpc::error(
            id,
            jsonrpc::Code::METHOD_NOT_FOUND,
            format!("{method} is not in the tasks extension"),
        ),
    })
}

/// Questions asked of clients on this replica, by the id the client answers with.
type Waiting = HashMap<String, (Arc<str>, oneshot::Sender<Value>)>;
static WAITING: LazyLock<Mutex<Waiting>> = LazyLock::new(Default::default);

fn waiting() -> std::sync::MutexGuard<'static, Waiting> {
    WAITING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a round's questions when the round ends, answered or not.
struct Asked(Vec<String>);

impl Drop for Asked {
    fn drop(&mut self) {
        let mut w = waiting();
        for id in &self.0 {
            w.remove(id);
        }
    }
}

/// A client's answer to one of the questions a modern target's round put to it. False when no
/// question of this target waits under that id here.
pub(crate) fn deliver(target: &str, msg: &Value) -> bool {
    let Some(id) = msg.get("id").and_then(Value::as_str) else {
        return false;
    };
    let mut w = waiting();
    match w.get(id) {
        Some((t, _)) if &**t == target => {}
        _ => return false,
    }
    match w.remove(id) {
        Some((_, tx)) => tx.send(msg.clone()).is_ok(),
        None => false,
    }
}

/// Sends a request to a modern target; returns the stream of messages that ends with its
/// answer, as a legacy target's would be (questions as server requests).
pub(crate) async fn request(
    h: &HttpTarget,
    target: &Arc<str>,
    ctx: &CallCtx<'_>,
    msg: Value,
) -> Result<mpsc::Receiver<Value>, UpstreamError> {
    let id = jsonrpc::id(&msg);
    if jsonrpc::method(&msg).starts_with("tasks/") && jsonrpc::kind(&msg) == Kind::Request {
        let answer = task_request(h, ctx, &msg).await?;
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.send(answer).await;
        return Ok(rx);
    }
    // A legacy task-augmented call: the target decides under the extension, declared for it.
    let mut msg = msg;
    let as_task = jsonrpc::method(&msg) == "tools/call"
        && jsonrpc::params_mut(&mut msg)
            .remove("task")
            .is_some_and(|t| t.is_object());
    let mut msg = modernize(msg, ctx.init, ctx.headers);
    if as_task {
        with_tasks_extension(&mut msg);
    }
    let mut headers = mirrored(ctx.headers, &msg);
    // Arguments the tool's schema marks `x-mcp-header` go in `Mcp-Param-*` headers too.
    if jsonrpc::method(&msg) == "tools/call" {
        let params = jsonrpc::params(&msg);
        let tool = params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let b = bindings_of(h, ctx, tool).await;
        let args = params.and_then(|p| p.get("arguments")).cloned();
        for (k, v) in crate::params::mirror(&b, &args.unwrap_or_default()) {
            headers.insert(k, v);
        }
    }
    let posted = h.post(&headers, None, Some(VERSION), &msg).await?;
    if jsonrpc::kind(&msg) != Kind::Request {
        return Ok(posted.messages);
    }
    let (tx, rx) = mpsc::channel(64);
    let call = Call {
        h: HttpTarget {
            url: h.url.clone(),
            client: h.client.clone(),
            discovered: Default::default(),
            tool_headers: Default::default(),
        },
        target: target.clone(),
        headers,
        msg,
        id,
        tx,
    };
    tokio::spawn(call.run(posted.messages));
    Ok(rx)
}

/// One call to a modern target, round after round.
struct Call {
    h: HttpTarget,
    target: Arc<str>,
    headers: HeaderMap,
    msg: Value,
    /// The id the caller gave the request: the final answer carries it.
    id: Value,
    tx: mpsc::Sender<Value>,
}

impl Call {
    fn failed(&self, why: impl std::fmt::Display) -> Value {
        crate::route::target_failed(
            self.id.clone(),
            &self.target,
            &UpstreamError::Failed(why.to_string()),
        )
    }

    async fn run(mut self, mut messages: mpsc::Receiver<Value>) {
        for round in 0.. {
            // Read this round to its answer, relaying progress and log messages.
            let answer = loop {
                match messages.recv().await {
                    Some(m) if jsonrpc::kind(&m) == Kind::Response => break Some(m),
                    Some(m) if jsonrpc::kind(&m) == Kind::Notification => {
                        if self.tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    // The revision has servers send no requests of their own on a stream.
                    Some(_) => {}
                    None => break None,
                }
            };
            let Some(mut answer) = answer else {
                let _ = self
                    .tx
                    .send(self.failed("it closed the call without answering"))
                    .await;
                return;
            };
            let input_required = answer.pointer("/result/resultType").and_then(Value::as_str)
                == Some("input_required");
            if !input_required {
                answer["id"] = self.id.clone();
                let task =
                    answer.pointer("/result/resultType").and_then(Value::as_str) == Some("task");
                if task {
                    // The extension's CreateTaskResult as the legacy one.
                    let t = legacy_task(&answer["result"]);
                    answer["result"] = json!({"task": t});
                }
                if let Some(r) = answer.get_mut("result").and_then(Value::as_object_mut) {
                    r.remove("resultType");
                }
                let _ = self.tx.send(answer).await;
                return;
            }
            if round + 1 >= MAX_ROUNDS {
                let why = format!("it asked for input more than {MAX_ROUNDS} times");
                let _ = self.tx.send(self.failed(why)).await;
                return;
            }
            let result = answer.get("result").cloned().unwrap_or_default();
            let responses = match self.ask(&result).await {
                Ok(r) => r,
                Err(None) => return, // the client left
                Err(Some(why)) => {
                    let _ = self.tx.send(self.failed(why)).await;
                    return;
                }
            };
            let params = jsonrpc::params_mut(&mut self.msg);
            params.insert("inputResponses".into(), Value::Object(responses));
            match result.get("requestState") {
                Some(s) => params.insert("requestState".into(), s.clone()),
                None => params.remove("requestState"),
            };
            messages = match self
                .h
                .post(&self.headers, None, Some(VERSION), &self.msg)
                .await
            {
                Ok(p) => p.messages,
                Err(e) => {
                    let _ = self.tx.send(self.failed(e)).await;
                    return;
                }
            };
        }
    }

    /// Puts a round's `inputRequests` to the client as server requests and waits for every
    /// answer. `Err(None)`: the client went away; `Err(Some(why))`: the round cannot go on.
    async fn ask(&self, result: &Value) -> Result<Map<String, Value>, Option<String>> {
        let Some(requests) = result.get("inputRequests").and_then(Value::as_object) else {
            return Err(Some("input_required without inputRequests".into()));
        };
        let mut asked = Asked(Vec::with_capacity(requests.len()));
        let mut answers = Vec::with_capacity(requests.len());
        for (key, r) in requests {
            let Some(method) = r.get("method").and_then(Value::as_str) else {
                return Err(Some(format!("inputRequests.{key} has no method")));
            };
            let id = format!("sy-in-{}", crate::session::random_id());
            let (tx, rx) = oneshot::channel();
            waiting().insert(id.clone(), (self.target.clone(), tx));
            asked.0.push(id.clone());
            let mut q = json!({"jsonrpc": "2.0", "id": id, "method": method});
            if let Some(p) = r.get("params") {
                q["params"] = p.clone();
            }
            if self.tx.send(q).await.is_err() {
                return Err(None);
            }
            answers.push((key.clone(), method.to_string(), rx));
        }
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        let mut responses = Map::new();
        for (key, method, rx) in answers {
            let a = tokio::select! {
                a = rx => a.map_err(|_| None)?,
                _ = self.tx.closed() => return Err(None),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Some(format!("the client did not answer {method} in time")))
                }
            };
            match (a.get("result"), a.get("error")) {
                (Some(r), _) => {
                    responses.insert(key, r.clone());
                }
                (None, e) => {
                    let m = e
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                        .unwrap_or("no answer");
                    return Err(Some(format!("the client refused its {method}: {m}")));
                }
            }
        }
        drop(asked);
        Ok(responses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_sessions_meta_and_mirrored_headers() {
        let init =
            json!({"capabilities": {"sampling": {}}, "clientInfo": {"name": "c", "version": "1"}});
        let mut fwd = HeaderMap::new();
        fwd.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let msg = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "héllo", "arguments": {}, "_meta": {"progressToken": "p"}}});
        let m = modernize(msg, &init, &fwd);
        let meta = &m["params"]["_meta"];
        assert_eq!(meta[META_VERSION], VERSION);
        assert_eq!(meta[META_CAPABILITIES], json!({"sampling": {}}));
        assert_eq!(meta[META_CLIENT_INFO]["name"], "c");
        assert_eq!(meta["progressToken"], "p");
        assert_eq!(
            meta["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let h = mirrored(&fwd, &m);
        assert_eq!(h.get(METHOD_HEADER).unwrap(), "tools/call");
        let name = h.get(NAME_HEADER).unwrap().to_str().unwrap();
        assert_eq!(name, format!("=?base64?{}?=", STANDARD.encode("héllo")));
        let list = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"});
        assert!(mirrored(&fwd, &list).get(NAME_HEADER).is_none());
        assert_eq!(header_value("echo").unwrap(), "echo");
        assert_ne!(header_value(" echo").unwrap(), " echo");
    }

    #[test]
    fn answers_reach_only_their_targets_question() {
        let (tx, mut rx) = oneshot::channel();
        waiting().insert("sy-in-test".into(), ("a".into(), tx));
        let answer = json!({"jsonrpc": "2.0", "id": "sy-in-test", "result": {}});
        assert!(!deliver("b", &answer), "another target's answer");
        assert!(rx.try_recv().is_err());
        assert!(deliver("a", &answer));
        assert_eq!(rx.try_recv().unwrap(), answer);
        assert!(!deliver("a", &answer), "answered once");
    }
}
