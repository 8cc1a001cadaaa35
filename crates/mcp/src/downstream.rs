//! The client side: MCP streamable HTTP at the route. POST carries one JSON-RPC message
//! (answered with JSON or an SSE stream), GET opens the session's server stream, DELETE ends
//! the session.

use crate::authz::Caller;
use crate::federate::{from_upstream, merge_capabilities};
use crate::jsonrpc::{self, Code, Kind};
use crate::local::LocalSession;
use crate::replay::StreamKind;
use crate::session::{now_secs, random_id, SessionState};
use crate::stream::{sse_response, Event, Opts};
use crate::upstream::http::{SESSION_HEADER, VERSION_HEADER};
use crate::upstream::CallCtx;
use crate::{boxed, Body, FailureMode, Gateway, Observed, SUPPORTED_VERSIONS};
use futures_util::future::join_all;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use rmcp::model::{ErrorCode, Implementation, InitializeResult, ServerCapabilities};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Largest JSON-RPC message accepted from a client.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// "Session not found", as the streamable HTTP transport's 404 answers carry.
pub(crate) const SESSION_NOT_FOUND: ErrorCode = ErrorCode(-32001);

/// The client side of one request, as the proxy knows it.
pub struct Downstream<'a> {
    pub source: SocketAddr,
    /// Verified JWT claims, when an authentication policy produced them.
    pub jwt: Option<&'a Value>,
    /// The caller's API key as the `apiKey` CEL variable, when `apiKeyAuth` identified it.
    pub api_key: Option<cel::Value>,
    /// The route's guards on tool calls and results.
    pub tool_guard: Option<std::sync::Arc<dyn crate::authz::ToolGuard>>,
    pub observed: &'a mut Observed,
}

/// The one revision with JSON-RPC batches.
const BATCH_VERSION: &str = "2025-03-26";
/// Most messages in one batch.
const MAX_BATCH: usize = 100;

/// Request headers that are the gateway's business with the client, not the upstream's.
fn forwarded_headers(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len());
    for (k, v) in h {
        let drop = matches!(
            k.as_str(),
            "host"
                | "content-length"
                | "content-type"
                | "accept"
                | "accept-encoding"
                | "origin"
                | "referer"
                | "cookie"
                | "last-event-id"
                | SESSION_HEADER
                | VERSION_HEADER
                // The client's names; a target knows its items by others.
                | crate::modern::METHOD_HEADER
                | crate::modern::NAME_HEADER
        ) || k.as_str().starts_with("access-control-")
            // The client's `Mcp-Param-*`: a modern target gets the gateway's own.
            || k.as_str().starts_with(crate::params::PREFIX);
        if !drop {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(crate::full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn ok(v: &Value) -> Response<Body> {
    json_response(StatusCode::OK, v)
}

pub(crate) fn status_only(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(crate::empty());
    *r.status_mut() = status;
    r
}

pub(crate) fn accepts_sse(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream") || v.contains("*/*"))
}

pub(crate) fn error_text(e: &Value) -> String {
    e.get("error")
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("error")
        .to_string()
}

/// A session to continue, or the answer explaining why there is none.
struct Opened {
    state: SessionState,
    local: Arc<LocalSession>,
}

impl Gateway {
    /// Serves one client request on the route. (Boxed: the future is large and its type would
    /// otherwise be checked for `Send` again inside every caller.)
    pub fn serve<'a>(
        &'a self,
        req: http::Request<Body>,
        down: Downstream<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send + 'a>> {
        Box::pin(self.serve_inner(req, down))
    }

    async fn serve_inner(
        &self,
        req: http::Request<Body>,
        mut down: Downstream<'_>,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let fwd = forwarded_headers(&parts.headers);
        if !self.stateful && parts.method != Method::POST {
            let mut r = status_only(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let streamable = parts.headers.contains_key(SESSION_HEADER);
        let legacy_id = crate::legacy::query_session(parts.uri.query()).filter(|_| !streamable);
        match parts.method {
            Method::POST => match legacy_id {
                Some(id) => {
                    self.legacy_post(id, &parts.headers, body, &fwd, &mut down)
                        .await
                }
                None => self.post(&parts.headers, body, &fwd, &mut down).await,
            },
            // Without a session, an event-stream GET is a legacy (2024-11-05) client.
            Method::GET if !streamable && accepts_sse(&parts.headers) => {
                down.observed.method = Some("GET".into());
                self.legacy_open(parts.uri.path())
            }
            Method::GET => self.get(&parts.headers, &fwd, &mut down).await,
            Method::DELETE => self.delete(&parts.headers, &fwd, &mut down).await,
            _ => {
                let mut r = status_only(StatusCode::METHOD_NOT_ALLOWED);
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                r
            }
        }
    }

    #[allow(clippy::result_large_err)]
    fn open(
        &self,
        headers: &HeaderMap,
        down: &mut Downstream<'_>,
    ) -> Result<Opened, Response<Body>> {
        let Some(sid) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return Err(json_response(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(
                    Value::Null,
                    Code::INVALID_REQUEST,
                    "missing Mcp-Session-Id header: send initialize first",
                ),
            ));
        };
        let state = self.sealer.open(sid).map_err(|why| {
            json_response(
                StatusCode::NOT_FOUND,
                &jsonrpc::error(
                    Value::Null,
                    SESSION_NOT_FOUND,
                    format!("{why}: start a new session with initialize"),
                ),
            )
        })?;
        down.observed.session_id = Some(state.id.clone());
        let local = self.sessions.get(&state.id).ok_or_else(|| {
            json_response(
                StatusCode::NOT_FOUND,
                &jsonrpc::error(
                    Value::Null,
                    SESSION_NOT_FOUND,
                    "session ended: start a new session with initialize",
                ),
            )
        })?;
        if let Some(v) = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()) {
            if !SUPPORTED_VERSIONS.contains(&v) {
                return Err(unsupported_version(Value::Null, v));
            }
        }
        Ok(Opened { state, local })
    }

    pub(crate) async fn post(
        &self,
        headers: &HeaderMap,
        body: Body,
        fwd: &HeaderMap,
        down: &mut Downstream<'_>,
    ) -> Response<Body> {
        let bytes = match crate::read_body(body, MAX_MESSAGE_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                let (status, msg) = match e {
                    crate::ReadError::TooLarge => (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("message larger than {MAX_MESSAGE_BYTES} bytes"),
                    ),
                    crate::ReadError::Broken(m) => (
                        StatusCode::BAD_REQUEST,
                        format!("reading the request body: {m}"),
                    ),
                };
                return json_response(
                    status,
                    &jsonrpc::error(Value::Null, Code::INVALID_REQUEST, msg),
                );
            }
        };
        let msg: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &jsonrpc::error(Value::Null, Code::PARSE_ERROR, format!("invalid JSON: {e}")),
                )
            }
        };
        if let Value::Array(batch) = msg {
            return self.batch(batch, headers, fwd, down).await;
        }
        let kind = jsonrpc::kind(&msg);
        if kind == Kind::Invalid {
            return json_response(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(
                    jsonrpc::id(&msg),
                    Code::INVALID_REQUEST,
                    "not a JSON-RPC 2.0 request, notification or response",
                ),
            );
        }
        if kind != Kind::Response {
            down.observed.method = Some(jsonrpc::method(&msg).to_string());
        }
        if kind == Kind::Request && jsonrpc::method(&msg) == "initialize" {
            return self.initialize(msg, fwd, down).await;
        }
        match crate::modern::era(headers, &msg) {
            crate::modern::Era::Modern => {
                return self.modern(msg, kind, headers, fwd, down).await;
            }
            crate::modern::Era::Unsupported(v) => {
                return unsupported_version(jsonrpc::id(&msg), &v);
            }
            crate::modern::Era::Legacy => {}
        }
        if !self.stateful {
            return self.stateless(msg, kind, headers, fwd, down).await;
        }
        let opened = match self.open(headers, down) {
            Ok(o) => o,
            Err(r) => return r,
        };
        let ctx = CallCtx {
            headers: fwd,
            local: &opened.local,
            init: &opened.state.init,
        };
        match kind {
            Kind::Notification => {
                self.notify_all(&ctx, &opened.state, &msg).await;
                status_only(StatusCode::ACCEPTED)
            }
            Kind::Response => {
                self.answer_server(&ctx, &opened.state, msg).await;
                status_only(StatusCode::ACCEPTED)
            }
            _ => {
                let caller = Caller {
                    headers,
                    source: down.source,
                    jwt: down.jwt,
                    api_key: down.api_key.as_ref(),
                    tool_guard: down.tool_guard.as_ref(),
                };
                self.request(
                    &ctx,
                    &opened.state,
                    msg,
                    &caller,
                    accepts_sse(headers),
                    down.observed,
                    None,
                )
                .await
            }
        }
    }

    /// A JSON-RPC batch: allowed on sessions that agreed to 2025-03-26 (the only revision
    /// that has them; removed in 2025-06-18). Each message is handled as if sent alone; the
    /// answers to its requests come back as one JSON array (202 when it held none).
    async fn batch(
        &self,
        batch: Vec<Value>,
        headers: &HeaderMap,
        fwd: &HeaderMap,
        down: &mut Downstream<'_>,
    ) -> Response<Body> {
        let refuse = |why: &str| {
            json_response(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(Value::Null, Code::INVALID_REQUEST, why.to_string()),
            )
        };
        if batch.is_empty() {
            return refuse("an empty JSON-RPC batch");
        }
        if batch.len() > MAX_BATCH {
            return refuse("a JSON-RPC batch of more than 100 messages");
        }
        if !self.stateful {
            return refuse("JSON-RPC batches need a session (2025-03-26)");
        }
        let opened = match self.open(headers, down) {
            Ok(o) => o,
            Err(r) => return r,
        };
        if opened.state.version != BATCH_VERSION {
            return refuse(
                "JSON-RPC batches are not supported on this session: they exist only in \
                 2025-03-26 (removed in 2025-06-18)",
            );
        }
        if batch
            .iter()
            .any(|m| jsonrpc::kind(m) == Kind::Request && jsonrpc::method(m) == "initialize")
        {
            return refuse("initialize cannot be part of a JSON-RPC batch");
        }
        let ctx = CallCtx {
            headers: fwd,
            local: &opened.local,
            init: &opened.state.init,
        };
        let caller = Caller {
            headers,
            source: down.source,
            jwt: down.jwt,
            api_key: down.api_key.as_ref(),
            tool_guard: down.tool_guard.as_ref(),
        };
        let mut answers = Vec::new();
        for msg in batch {
            match jsonrpc::kind(&msg) {
                Kind::Invalid => answers.push(jsonrpc::error(
                    jsonrpc::id(&msg),
                    Code::INVALID_REQUEST,
                    "not a JSON-RPC 2.0 request, notification or response",
                )),
                Kind::Notification => self.notify_all(&ctx, &opened.state, &msg).await,
                Kind::Response => self.answer_server(&ctx, &opened.state, msg).await,
                Kind::Request => {
                    if down.observed.method.is_none() {
                        down.observed.method = Some(jsonrpc::method(&msg).to_string());
                    }
                    let resp = self
                        .request(
                            &ctx,
                            &opened.state,
                            msg,
                            &caller,
                            false,
                            down.observed,
                            None,
                        )
                        .await;
                    let bytes = crate::read_body(resp.into_body(), MAX_MESSAGE_BYTES)
                        .await
                        .unwrap_or_default();
                    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                        answers.push(v);
                    }
                }
            }
        }
        if answers.is_empty() {
            return status_only(StatusCode::ACCEPTED);
        }
        json_response(StatusCode::OK, &Value::Array(answers))
    }

    async fn initialize(
        &self,
        msg: Value,
        fwd: &HeaderMap,
        down: &mut Downstream<'_>,
    ) -> Response<Body> {
        let id = jsonrpc::id(&msg);
        let mut init = jsonrpc::params(&msg).cloned().unwrap_or_default();
        let requested = init
            .remove("protocolVersion")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        // The client's version when we speak it, else our newest (the client then decides).
        let version = SUPPORTED_VERSIONS
            .iter()
            .find(|v| **v == requested)
            .unwrap_or(&SUPPORTED_VERSIONS[0])
            .to_string();
        let joined = match self
            .join_targets(fwd, Value::Object(init), version.clone(), down.observed)
            .await
        {
            Ok(j) => j,
            Err(e) => return ok(&e.with_id(id)),
        };
        let tasks = joined.tasks.clone();
        let mut result = InitializeResult::new(joined.caps)
            .with_server_info(Implementation::new("switchyard", env!("CARGO_PKG_VERSION")));
        if !joined.instructions.is_empty() {
            result = result.with_instructions(joined.instructions.join("\n\n"));
        }
        let mut result = serde_json::to_value(result).unwrap_or_default();
        result["protocolVersion"] = Value::from(version);
        // Tasks outlive the request that made them: not without sessions (statefulMode: false).
        let tasks = tasks.filter(|_| self.stateful);
        if let (Some(t), Some(Value::Object(caps))) = (tasks, result.get_mut("capabilities")) {
            caps.insert("tasks".into(), t);
        }
        let mut resp = ok(&jsonrpc::result(id, result));
        if self.stateful {
            let sealed = match self.sealer.seal(&joined.state) {
                Ok(s) => s,
                Err(why) => {
                    self.leave(fwd, &joined.state, &joined.local).await;
                    return ok(&jsonrpc::error(
                        jsonrpc::id(&msg),
                        Code::INTERNAL_ERROR,
                        why,
                    ));
                }
            };
            if let Ok(v) = HeaderValue::from_str(&sealed) {
                resp.headers_mut().insert(SESSION_HEADER, v);
            }
        } else {
            self.leave(fwd, &joined.state, &joined.local).await;
        }
        resp
    }

    /// Opens one upstream session per target (per `failureMode`), merging what they offer.
    pub(crate) async fn join_targets(
        &self,
        fwd: &HeaderMap,
        init: Value,
        version: String,
        observed: &mut Observed,
    ) -> Result<Joined, RpcError> {
        let sid = random_id();
        observed.session_id = Some(sid.clone());
        let local = self
            .sessions
            .get(&sid)
            .ok_or_else(|| RpcError::new(Code::INTERNAL_ERROR, "session id collision"))?;
        let ctx = CallCtx {
            headers: fwd,
            local: &local,
            init: &init,
        };
        let outcomes = join_all(
            self.targets
                .iter()
                .map(|t| boxed(t.initialize(&ctx, &version))),
        )
        .await;
        let mut joined = Vec::new();
        let mut caps = ServerCapabilities::default();
        let mut tasks = None;
        let mut instructions = Vec::new();
        for (t, outcome) in self.targets.iter().zip(outcomes) {
            match outcome {
                Ok((result, ts)) => {
                    merge_capabilities(&mut caps, result.get("capabilities"));
                    crate::tasks::merge_capability(&mut tasks, result.get("capabilities"));
                    if let Some(i) = result.get("instructions").and_then(Value::as_str) {
                        instructions.push(if self.targets.len() > 1 {
                            format!("{}: {i}", t.name)
                        } else {
                            i.to_string()
                        });
                    }
                    joined.push(ts);
                }
                Err(e) if self.failure == FailureMode::FailOpen => {
                    tracing::warn!(mcp_target = %t.name, error = %e, "MCP target left out of the session (failOpen)");
                }
                Err(e) => {
                    tracing::warn!(mcp_target = %t.name, error = %e, "MCP target failed to initialize (failClosed)");
                    self.sessions.end(&sid);
                    return Err(RpcError {
                        code: Code::INTERNAL_ERROR,
                        message: format!("MCP target {} is unavailable: {e}", t.name),
                        data: Some(json!({"target": &*t.name})),
                    });
                }
            }
        }
        if joined.is_empty() {
            self.sessions.end(&sid);
            return Err(RpcError::new(
                Code::INTERNAL_ERROR,
                "no MCP target is available",
            ));
        }
        let state = SessionState {
            id: sid,
            iat: now_secs(),
            version,
            targets: joined,
            init,
        };
        Ok(Joined {
            state,
            local,
            caps,
            tasks,
            instructions,
        })
    }

    /// Ends a session's upstream sessions (DELETE, or the end of a stateless request).
    async fn leave(&self, fwd: &HeaderMap, state: &SessionState, local: &Arc<LocalSession>) {
        let ctx = CallCtx {
            headers: fwd,
            local,
            init: &state.init,
        };
        join_all(self.joined(state).map(|(t, ts)| boxed(t.close(&ctx, ts)))).await;
        self.sessions.end(&state.id);
    }

    /// `statefulMode: false`: no session outlives a request. Each request opens upstream
    /// sessions, is answered in one JSON response, and closes them; notifications and answers
    /// to server requests have no session to go to and are accepted and dropped.
    async fn stateless(
        &self,
        msg: Value,
        kind: Kind,
        headers: &HeaderMap,
        fwd: &HeaderMap,
        down: &mut Downstream<'_>,
    ) -> Response<Body> {
        if kind != Kind::Request {
            return status_only(StatusCode::ACCEPTED);
        }
        let id = jsonrpc::id(&msg);
        let version = headers
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| SUPPORTED_VERSIONS.contains(v))
            .unwrap_or(SUPPORTED_VERSIONS[0])
            .to_string();
        let init = json!({"capabilities": {}, "clientInfo": {"name": "switchyard", "version": env!("CARGO_PKG_VERSION")}});
        let joined = match self.join_targets(fwd, init, version, down.observed).await {
            Ok(j) => j,
            Err(e) => return ok(&e.with_id(id)),
        };
        let ctx = CallCtx {
            headers: fwd,
            local: &joined.local,
            init: &joined.state.init,
        };
        let caller = Caller {
            headers,
            source: down.source,
            jwt: down.jwt,
            api_key: down.api_key.as_ref(),
            tool_guard: down.tool_guard.as_ref(),
        };
        let resp = self
            .request(
                &ctx,
                &joined.state,
                msg,
                &caller,
                false,
                down.observed,
                None,
            )
            .await;
        self.leave(fwd, &joined.state, &joined.local).await;
        resp
    }

    async fn get(
        &self,
        headers: &HeaderMap,
        fwd: &HeaderMap,
        down: &mut Downstream<'_>,
    ) -> Response<Body> {
        if !accepts_sse(headers) {
            return status_only(StatusCode::NOT_ACCEPTABLE);
        }
        let opened = match self.open(headers, down) {
            Ok(o) => o,
            Err(r) => return r,
        };
        down.observed.method = Some("GET".into());
        let (tx, rx) = mpsc::channel::<Event>(crate::replay::MAX_EVENTS_PER_STREAM);
        let log = opened.local.events.clone();
        let mut tasks = Vec::new();
        // A client resuming a broken stream gets what it missed on that stream first.
        let resumed = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::replay::parse_id)
            .filter(|(s, _)| log.kind(*s).is_some());
        let stream = match resumed {
            Some((s, after)) if log.kind(s) == Some(StreamKind::Post) => {
                // The rest of a POST's answer, then the stream ends as that answer would have.
                let l = log.clone();
                tasks.push(tokio::spawn(async move { l.follow(s, after, tx).await }));
                return sse_response(rx, Opts::server_stream(tasks));
            }
            Some((s, after)) => {
                // What the server stream sent after `after` (at most a stream's log, which the
                // channel holds), then it goes on live under the same stream id.
                for e in log.since(s, after).0 {
                    let _ = tx.try_send(e);
                }
                s
            }
            None => log.open(StreamKind::Server),
        };
        let (own_tx, mut own_rx) = mpsc::channel::<(Arc<str>, Value)>(256);
        *opened
            .local
            .server_stream
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(own_tx);
        let prefixed = self.prefixed;
        let (sealer, scope) = (self.sealer.clone(), opened.state.id.clone());
        let record = Arc::new(move |log: &crate::replay::EventLog, name: &str, m: Value| {
            let mut m = from_upstream(m, name, prefixed);
            crate::tasks::seal_message(&sealer, &scope, name, &mut m);
            Event {
                id: Some(log.record(stream, &m)),
                msg: m,
            }
        });
        {
            let (tx, log, record) = (tx.clone(), log.clone(), record.clone());
            tasks.push(tokio::spawn(async move {
                while let Some((name, m)) = own_rx.recv().await {
                    if tx.send(record(&log, &name, m)).await.is_err() {
                        return;
                    }
                }
            }));
        }
        for (t, ts) in self.joined(&opened.state) {
            let (t, ts, tx, log) = (t.clone(), ts.clone(), tx.clone(), log.clone());
            let (fwd, local, init) = (fwd.clone(), opened.local.clone(), opened.state.init.clone());
            let record = record.clone();
            tasks.push(tokio::spawn(async move {
                let (raw_tx, mut raw_rx) = mpsc::channel::<Value>(64);
                let name = t.name.clone();
                let relay = async {
                    while let Some(m) = raw_rx.recv().await {
                        if tx.send(record(&log, &name, m)).await.is_err() {
                            return;
                        }
                    }
                };
                let ctx = CallCtx {
                    headers: &fwd,
                    local: &local,
                    init: &init,
                };
                let listen = t.listen(&ctx, &ts, raw_tx);
                let (r, ()) = tokio::join!(listen, relay);
                if let Err(e) = r {
                    tracing::debug!(mcp_target = %t.name, error = %e, "server stream ended");
                }
            }));
        }
        drop(tx);
        sse_response(rx, Opts::server_stream(tasks))
    }

    async fn delete(
        &self,
        headers: &HeaderMap,
        fwd: &HeaderMap,
        down: &mut Downstream<'_>,
    ) -> Response<Body> {
        let opened = match self.open(headers, down) {
            Ok(o) => o,
            Err(r) => return r,
        };
        down.observed.method = Some("DELETE".into());
        self.leave(fwd, &opened.state, &opened.local).await;
        status_only(StatusCode::OK)
    }
}

pub(crate) fn unsupported_version(id: Value, v: &str) -> Response<Body> {
    let served = crate::served_versions();
    let how = if SUPPORTED_VERSIONS.contains(&v) {
        format!(
            "protocol version {v} opens a session with initialize; requests without one are \
             served at {}",
            crate::MODERN_VERSIONS.join(", ")
        )
    } else {
        format!(
            "protocol version {v} is not supported; this gateway speaks {}",
            served.join(", ")
        )
    };
    json_response(
        StatusCode::BAD_REQUEST,
        &jsonrpc::error_with(
            id,
            ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
            how,
            Some(json!({"supported": served, "requested": v})),
        ),
    )
}

pub(crate) struct RpcError {
    pub code: ErrorCode,
    pub message: String,
    pub data: Option<Value>,
}

pub(crate) struct Joined {
    pub state: SessionState,
    pub local: Arc<LocalSession>,
    pub caps: ServerCapabilities,
    /// The targets' `tasks` capabilities, merged (rmcp's capabilities have no such field).
    pub tasks: Option<Value>,
    pub instructions: Vec<String>,
}

impl RpcError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub(crate) fn with_id(self, id: Value) -> Value {
        jsonrpc::error_with(id, self.code, self.message, self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_headers_stay_at_the_gateway() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc".parse().unwrap());
        h.insert(SESSION_HEADER, "sealed".parse().unwrap());
        h.insert("origin", "http://x".parse().unwrap());
        h.insert("content-length", "10".parse().unwrap());
        let f = forwarded_headers(&h);
        assert_eq!(f.get("authorization").unwrap(), "Bearer abc");
        assert_eq!(f.len(), 1);
    }
}
