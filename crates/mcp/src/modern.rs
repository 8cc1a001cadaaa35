//! The modern protocol (2026-07-28): no `initialize` and no session; the protocol version,
//! the client's capabilities and its info travel in every request's `_meta`, mirrored in the
//! `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers. Served on the same route as
//! the legacy revisions, told apart by the request itself ([`era`]).
//!
//! The targets behind the route speak the legacy protocol, so this is a downgrade shim: the
//! gateway holds upstream sessions for modern clients ([`crate::pool`], per client identity
//! and declared capabilities), answers `server/discover` from what the targets offered when
//! those sessions opened, routes calls exactly as for a legacy session (prefixes, tool
//! authorization, guards), and turns a target's own requests (sampling, elicitation, roots)
//! into multi-round-trip `input_required` results ([`crate::mrtr`]).

use crate::authz::Caller;
use crate::downstream::{accepts_sse, json_response, ok, status_only};
use crate::jsonrpc::{self, Code, Kind};
use crate::pool::PoolKey;
use crate::upstream::http::{SESSION_HEADER, VERSION_HEADER};
use crate::upstream::CallCtx;
use crate::{Body, Downstream, Gateway, MODERN_VERSIONS};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, Response, StatusCode};
use rmcp::model::{ErrorCode, ServerCapabilities};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) const METHOD_HEADER: &str = "mcp-method";
pub(crate) const NAME_HEADER: &str = "mcp-name";
/// The HTTP headers of a request do not match its body (or are missing or malformed).
pub(crate) const HEADER_MISMATCH: ErrorCode = ErrorCode(-32020);

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// Keys of a request's `_meta` that are the protocol's, not the application's.
const META_PROTOCOL_PREFIX: &str = "io.modelcontextprotocol/";

/// Client requests of the revision this shim serves. Everything else (`ping`,
/// `logging/setLevel`, `resources/subscribe` were removed) is 404 / -32601, as the revision
/// has it.
const METHODS: [&str; 13] = [
    "server/discover",
    "subscriptions/listen",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "completion/complete",
    // The tasks extension (io.modelcontextprotocol/tasks), for tasks of legacy targets.
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
];

/// Log levels, least severe first (RFC 5424 order, as MCP has them).
const LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// Which protocol era a POSTed message speaks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Era {
    Legacy,
    Modern,
    /// A sessionless request naming a version in `_meta` that is not served that way.
    Unsupported(String),
}

/// A request whose `_meta` names a modern version is modern, with or without a session
/// header (the revision has such a header ignored). Without a session, a request naming
/// another version in `_meta` is refused with -32022, and one whose `MCP-Protocol-Version`
/// header is modern is modern (and is then refused for its missing `_meta`). Everything else,
/// `initialize` above all, is legacy, handled as before.
pub(crate) fn era(headers: &HeaderMap, msg: &Value) -> Era {
    if jsonrpc::method(msg) == "initialize" {
        return Era::Legacy;
    }
    let sessionless = !headers.contains_key(SESSION_HEADER);
    let in_meta = jsonrpc::params(msg)
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str);
    match in_meta {
        Some(v) if MODERN_VERSIONS.contains(&v) => Era::Modern,
        Some(v) if sessionless => Era::Unsupported(v.to_string()),
        Some(_) => Era::Legacy,
        None if sessionless
            && headers
                .get(VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| MODERN_VERSIONS.contains(&v)) =>
        {
            Era::Modern
        }
        None => Era::Legacy,
    }
}

/// What the shim knows of one modern request, for routing and for the exchange it starts.
pub(crate) struct Modern {
    /// Who is asking (API key name, JWT subject, or the route's anonymous pool): the
    /// upstream sessions used and the principal a `requestState` is bound to.
    pub principal: String,
    /// The client's declared capabilities: what input a target may ask of it.
    pub capabilities: Value,
    /// Index into [`LEVELS`] of the requested log level: none, no log messages.
    pub log_level: Option<usize>,
    pub method: String,
    /// Digest of the request's params (without `_meta` and MRTR fields): a `requestState` is
    /// only good for the request it was issued on.
    pub digest: String,
    /// Set when a target no longer knows the pooled upstream session: retried once on a new one.
    pub gone: AtomicBool,
    /// Answers to questions asked in an earlier round, for an exchange run again here.
    pub pre: Vec<crate::mrtr::PreAnswer>,
    /// Whether a target runs tool calls as tasks (the tasks extension is offered).
    pub tasks_offered: bool,
}

/// Whether a message from a target is relayed to a modern client while its request runs:
/// progress (the target only reports it for a request that asked), and log messages at or
/// above the level the request named (none without one).
pub(crate) fn relays(log_level: Option<usize>, m: &Value) -> bool {
    match jsonrpc::method(m) {
        "notifications/progress" => true,
        "notifications/message" => {
            let level = m
                .pointer("/params/level")
                .and_then(Value::as_str)
                .and_then(level_index);
            matches!((log_level, level), (Some(min), Some(l)) if l >= min)
        }
        _ => false,
    }
}

fn level_index(l: &str) -> Option<usize> {
    LEVELS.iter().position(|x| *x == l)
}

/// The identity a modern client's upstream sessions and request states belong to.
fn principal(down: &Downstream<'_>) -> String {
    principal_of(down.api_key.as_ref(), down.jwt)
}

/// The identity of a caller known by its API key (`apiKey` CEL value) or JWT claims.
pub(crate) fn principal_of(api_key: Option<&cel::Value>, jwt: Option<&Value>) -> String {
    if let Some(name) = api_key.and_then(|k| {
        cel::value_to_json(k)
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
    }) {
        return format!("apiKey:{name}");
    }
    if let Some(sub) = jwt.and_then(|j| j.get("sub")).and_then(Value::as_str) {
        let iss = jwt
            .and_then(|j| j.get("iss"))
            .and_then(Value::as_str)
            .unwrap_or("");
        return format!("jwt:{iss}|{sub}");
    }
    "anonymous".to_string()
}

/// A header's single value as text, or why it is not usable.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("{name} header given more than once"));
    }
    v.to_str()
        .map(Some)
        .map_err(|_| format!("{name} header has characters a header value may not carry"))
}

/// A header value in the revision's Base64 sentinel form (`=?base64?...?=`) decoded, else
/// the value itself.
fn decoded(v: &str) -> Result<String, String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(b64) => STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| format!("Mcp-Name header value {v:?} is not valid Base64 UTF-8")),
        None => Ok(v.to_string()),
    }
}

/// Checks the mirrored headers against the body: `MCP-Protocol-Version` against `_meta`,
/// `Mcp-Method` against `method`, and `Mcp-Name` (decoded) against `params.name` or
/// `params.uri` where the revision requires it.
pub(crate) fn check_headers(headers: &HeaderMap, msg: &Value, version: &str) -> Result<(), String> {
    let pairs = [
        (
            "MCP-Protocol-Version",
            VERSION_HEADER,
            Some(version.to_string()),
        ),
        (
            "Mcp-Method",
            METHOD_HEADER,
            Some(jsonrpc::method(msg).to_string()),
        ),
    ];
    for (shown, name, body) in pairs {
        match (header(headers, name)?, body) {
            (None, _) => return Err(format!("required {shown} header is missing")),
            (Some(h), Some(b)) if h != b => {
                return Err(format!(
                    "Header mismatch: {shown} header value '{h}' does not match body value '{b}'"
                ))
            }
            _ => {}
        }
    }
    let field = match jsonrpc::method(msg) {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        // The tasks extension routes by task: `Mcp-Name` carries the task id.
        "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
        _ => return Ok(()),
    };
    let body = jsonrpc::params(msg)
        .and_then(|p| p.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(h) = header(headers, NAME_HEADER)? else {
        return Err("required Mcp-Name header is missing".into());
    };
    let h = decoded(h)?;
    if h != body {
        return Err(format!(
            "Header mismatch: Mcp-Name header value '{h}' does not match body value '{body}'"
        ));
    }
    Ok(())
}

/// Removes what only the gateway reads from a request before a legacy target sees it: the
/// protocol's own `_meta` keys, and the MRTR fields.
fn strip(msg: &mut Value) {
    let params = jsonrpc::params_mut(msg);
    params.remove("inputResponses");
    params.remove("requestState");
    // Whether a call runs as a task is the server's decision under the tasks extension: the
    // gateway asks a legacy target for one itself ([`crate::tasks`]).
    params.remove("task");
    let empty = match params.get_mut("_meta") {
        Some(Value::Object(meta)) => {
            meta.retain(|k, _| !k.starts_with(META_PROTOCOL_PREFIX));
            meta.is_empty()
        }
        _ => false,
    };
    if empty {
        params.remove("_meta");
    }
}

pub(crate) fn server_info() -> Value {
    json!({"name": "switchyard", "version": env!("CARGO_PKG_VERSION")})
}

/// Results whose revision requires `ttlMs` and `cacheScope`.
fn cacheable(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "server/discover"
    )
}

/// A legacy target's answer as the revision has it: `resultType: "complete"`; `ttlMs` 0
/// (always stale: the gateway does not know how long a legacy target's lists hold) and
/// `cacheScope: "private"` (the upstream sessions are per identity) on cacheable results;
/// the gateway's `serverInfo` in `_meta`. A legacy "resource not found" (-32002) becomes the
/// revision's -32602.
pub(crate) fn complete(mut m: Value, method: &str) -> Value {
    if let Some(r) = m.get_mut("result").and_then(Value::as_object_mut) {
        decorate(r, method);
    } else if let Some(e) = m.get_mut("error").and_then(Value::as_object_mut) {
        if method == "resources/read" && e.get("code").and_then(Value::as_i64) == Some(-32002) {
            e.insert("code".into(), Value::from(Code::INVALID_PARAMS.0));
        }
    }
    m
}

fn decorate(r: &mut Map<String, Value>, method: &str) {
    r.entry("resultType").or_insert_with(|| json!("complete"));
    if cacheable(method) {
        r.entry("ttlMs").or_insert_with(|| json!(0));
        r.entry("cacheScope").or_insert_with(|| json!("private"));
    }
    let meta = r.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(META_SERVER_INFO.into(), server_info());
    }
}

/// `server/discover`, from what the targets offered when the pooled sessions opened (list
/// changes and resource subscriptions reach a modern client through `subscriptions/listen`,
/// [`crate::listen`]). Extensions and experimental capabilities of legacy targets are left
/// out: the shim does not carry them.
fn discover(caps: &ServerCapabilities, instructions: &[String], tasks: Option<&Value>) -> Value {
    let mut caps = caps.clone();
    caps.experimental = None;
    caps.extensions = None;
    let mut result = Map::new();
    result.insert("supportedVersions".into(), json!(crate::served_versions()));
    let mut caps = serde_json::to_value(caps).unwrap_or_else(|_| json!({}));
    // The tasks extension, when a target runs tool calls as tasks (2025-11-25 `tasks`).
    let tool_tasks = tasks
        .and_then(|t| t.get("requests"))
        .and_then(|r| r.get("tools"))
        .and_then(|t| t.get("call"))
        .is_some();
    if let (true, Some(c)) = (tool_tasks, caps.as_object_mut()) {
        c.insert("extensions".into(), json!({crate::tasks::EXTENSION: {}}));
    }
    result.insert("capabilities".into(), caps);
    if !instructions.is_empty() {
        result.insert("instructions".into(), json!(instructions.join("\n\n")));
    }
    decorate(&mut result, "server/discover");
    Value::Object(result)
}

fn bad_request(id: Value, code: ErrorCode, message: impl Into<String>) -> Response<Body> {
    json_response(StatusCode::BAD_REQUEST, &jsonrpc::error(id, code, message))
}

impl Gateway {
    /// Serves one modern request.
    pub(crate) async fn modern(
        &self,
        mut msg: Value,
        kind: Kind,
        headers: &HeaderMap,
        fwd: &HeaderMap,
        down: &mut Downstream<'_>,
    ) -> Response<Body> {
        let id = jsonrpc::id(&msg);
        match kind {
            // The revision defines no client notification over HTTP.
            Kind::Notification => return status_only(StatusCode::ACCEPTED),
            Kind::Response => {
                return bad_request(
                    id,
                    Code::INVALID_REQUEST,
                    "a 2026-07-28 client sends no JSON-RPC responses: answers to a server's \
                     questions go in inputResponses on a retry of the request",
                )
            }
            _ => {}
        }
        let method = jsonrpc::method(&msg).to_string();
        let meta = jsonrpc::params(&msg)
            .and_then(|p| p.get("_meta"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let Some(version) = meta.get(META_VERSION).and_then(Value::as_str) else {
            return bad_request(
                id,
                Code::INVALID_PARAMS,
                format!("params._meta must carry {META_VERSION}"),
            );
        };
        if let Err(why) = check_headers(headers, &msg, version) {
            return bad_request(id, HEADER_MISMATCH, why);
        }
        let Some(capabilities) = meta.get(META_CAPABILITIES).filter(|c| c.is_object()) else {
            return bad_request(
                id,
                Code::INVALID_PARAMS,
                format!("params._meta must carry {META_CAPABILITIES} (an object)"),
            );
        };
        if !METHODS.contains(&method.as_str()) {
            return json_response(
                StatusCode::NOT_FOUND,
                &jsonrpc::error(
                    id,
                    Code::METHOD_NOT_FOUND,
                    format!("method {method} is not served at {version}"),
                ),
            );
        }
        let params = jsonrpc::params(&msg).cloned().unwrap_or_default();
        let mut m = Modern {
            principal: principal(down),
            capabilities: capabilities.clone(),
            log_level: meta
                .get(META_LOG_LEVEL)
                .and_then(Value::as_str)
                .and_then(level_index),
            method: method.clone(),
            digest: crate::mrtr::digest(&params),
            gone: AtomicBool::new(false),
            pre: Vec::new(),
            tasks_offered: false,
        };
        let init = json!({
            "capabilities": capabilities,
            "clientInfo": meta.get(META_CLIENT_INFO).cloned().unwrap_or_else(server_info),
        });
        let key = PoolKey {
            principal: m.principal.clone(),
            capabilities: crate::mrtr::canonical(capabilities),
        };
        strip(&mut msg);
        let sse = accepts_sse(headers);
        if let Some(state) = params.get("requestState") {
            let responses = params.get("inputResponses");
            match self
                .resume(state, responses, &m, id.clone(), sse, fwd)
                .await
            {
                crate::mrtr::Resumed::Answered(r) => return r,
                crate::mrtr::Resumed::RunAgain(pre) => m.pre = pre,
            }
        }
        let caller = Caller {
            headers,
            source: down.source,
            jwt: down.jwt,
            api_key: down.api_key.as_ref(),
            tool_guard: down.tool_guard.as_ref(),
        };
        for attempt in 0..2 {
            let pooled = match self.pool.get(self, &key, &init, fwd, down.observed).await {
                Ok(p) => p,
                Err(e) => return ok(&complete(e.with_id(id), &method)),
            };
            down.observed.session_id = Some(pooled.state.id.clone());
            m.tasks_offered = pooled.tasks.is_some();
            if method == "server/discover" {
                let result = discover(&pooled.caps, &pooled.instructions, pooled.tasks.as_ref());
                return ok(&jsonrpc::result(id, result));
            }
            if method == "subscriptions/listen" {
                return self.listen(&pooled, id, &params, sse).await;
            }
            if method.starts_with("tasks/") {
                let answer = match crate::tasks::declared(capabilities) {
                    false => crate::tasks::missing_extension(
                        id,
                        "tasks/* needs the io.modelcontextprotocol/tasks extension",
                    ),
                    true => {
                        self.modern_task(
                            &pooled,
                            &m.principal,
                            &method,
                            &params,
                            id,
                            fwd,
                            down.tool_guard.clone(),
                            down.observed,
                        )
                        .await
                    }
                };
                return ok(&answer);
            }
            let ctx = CallCtx {
                headers: fwd,
                local: &pooled.local,
                init: &pooled.state.init,
            };
            // Arguments mirrored in `Mcp-Param-*` headers must be what the body says (a route
            // or an intermediary may have acted on the headers).
            if method == "tools/call" && crate::params::any(headers) {
                let name = params.get("name").and_then(Value::as_str).unwrap_or("");
                if let Some(schema) = self.tool_schema(&ctx, &pooled.state, name).await {
                    let b = crate::params::bindings(&schema);
                    let args = params.get("arguments").cloned().unwrap_or_default();
                    if let Err(why) = crate::params::check(headers, &b, &args) {
                        return bad_request(id, HEADER_MISMATCH, why);
                    }
                }
            }
            let resp = self
                .request(
                    &ctx,
                    &pooled.state,
                    msg.clone(),
                    &caller,
                    sse,
                    down.observed,
                    Some(&m),
                )
                .await;
            if m.gone.swap(false, Ordering::AcqRel) && attempt == 0 {
                tracing::info!(session = %pooled.state.id, "a target forgot a pooled MCP session: opening a new one");
                self.pool.evict(&key, &pooled);
                continue;
            }
            return resp;
        }
        ok(&jsonrpc::error(
            id,
            Code::INTERNAL_ERROR,
            "the MCP targets keep forgetting their sessions",
        ))
    }
}

impl Gateway {
    /// The `inputSchema` of the tool a (prefixed) name addresses, from its target's list.
    async fn tool_schema(
        &self,
        ctx: &CallCtx<'_>,
        state: &crate::session::SessionState,
        name: &str,
    ) -> Option<Value> {
        let (target, original) = match self.prefixed {
            true => {
                let (t, n) = crate::names::split_name(name)?;
                (Some(t), n)
            }
            false => (None, name),
        };
        for (t, ts) in self.joined(state) {
            if target.is_some_and(|x| *t.name != *x) {
                continue;
            }
            let mut cursor: Option<String> = None;
            for _ in 0..20 {
                let Ok(page) = self
                    .list_one(ctx, t, ts, "tools/list", cursor.as_deref(), None)
                    .await
                else {
                    break;
                };
                let found = page
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|x| x.get("name").and_then(Value::as_str) == Some(original));
                if let Some(tool) = found {
                    return tool.get("inputSchema").cloned();
                }
                cursor = page
                    .get("nextCursor")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if cursor.is_none() {
                    break;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn modern_call(name: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": name, "arguments": {},
            "_meta": {META_VERSION: "2026-07-28", META_CAPABILITIES: {}}}})
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_era_comes_from_the_request() {
        let call = modern_call("x");
        assert_eq!(era(&HeaderMap::new(), &call), Era::Modern);
        let session = headers(&[(SESSION_HEADER, "s")]);
        assert_eq!(era(&session, &call), Era::Modern, "a session id is ignored");
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
        assert_eq!(era(&HeaderMap::new(), &init), Era::Legacy);
        let legacy = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        assert_eq!(era(&session, &legacy), Era::Legacy);
        assert_eq!(era(&HeaderMap::new(), &legacy), Era::Legacy);
        let by_header = headers(&[(VERSION_HEADER, "2026-07-28")]);
        assert_eq!(era(&by_header, &legacy), Era::Modern);
        let mut odd = call.clone();
        odd["params"]["_meta"][META_VERSION] = json!("2099-01-01");
        assert_eq!(
            era(&HeaderMap::new(), &odd),
            Era::Unsupported("2099-01-01".into())
        );
    }

    #[test]
    fn headers_must_mirror_the_body() {
        let call = modern_call("sim_echo");
        let good = [
            (VERSION_HEADER, "2026-07-28"),
            (METHOD_HEADER, "tools/call"),
            (NAME_HEADER, "sim_echo"),
        ];
        assert_eq!(check_headers(&headers(&good), &call, "2026-07-28"), Ok(()));
        let b64 = format!("=?base64?{}?=", STANDARD.encode("sim_echo"));
        let encoded = [good[0], good[1], (NAME_HEADER, b64.as_str())];
        assert_eq!(
            check_headers(&headers(&encoded), &call, "2026-07-28"),
            Ok(())
        );
        let wrong = [good[0], good[1], (NAME_HEADER, "sim_add")];
        let e = check_headers(&headers(&wrong), &call, "2026-07-28").unwrap_err();
        assert!(
            e.contains("'sim_add' does not match body value 'sim_echo'"),
            "{e}"
        );
        let b64 = format!("=?base64?{}?=", STANDARD.encode("sim_add"));
        let wrong = [good[0], good[1], (NAME_HEADER, b64.as_str())];
        assert!(check_headers(&headers(&wrong), &call, "2026-07-28").is_err());
        let broken = [good[0], good[1], (NAME_HEADER, "=?base64?%%%?=")];
        assert!(check_headers(&headers(&broken), &call, "2026-07-28").is_err());
        let method = [good[0], (METHOD_HEADER, "tools/list"), good[2]];
        assert!(check_headers(&headers(&method), &call, "2026-07-28").is_err());
        assert!(check_headers(&headers(&good[1..]), &call, "2026-07-28").is_err());
        assert!(check_headers(&headers(&good[..2]), &call, "2026-07-28").is_err());
        let twice = [good[0], good[1], good[1], good[2]];
        assert!(check_headers(&headers(&twice), &call, "2026-07-28").is_err());
    }

    #[test]
    fn legacy_answers_are_completed_for_the_revision() {
        let list = complete(
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}),
            "tools/list",
        );
        assert_eq!(list["result"]["resultType"], "complete");
        assert_eq!(list["result"]["ttlMs"], 0);
        assert_eq!(list["result"]["cacheScope"], "private");
        assert_eq!(
            list["result"]["_meta"][META_SERVER_INFO]["name"],
            "switchyard"
        );
        let call = complete(
            json!({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}),
            "tools/call",
        );
        assert!(call["result"].get("ttlMs").is_none());
        let missing = complete(
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32002, "message": "x"}}),
            "resources/read",
        );
        assert_eq!(missing["error"]["code"], -32602);
    }

    #[test]
    fn protocol_meta_stays_at_the_gateway() {
        let mut call = modern_call("x");
        call["params"]["_meta"]["progressToken"] = json!("p");
        call["params"]["requestState"] = json!("s");
        call["params"]["inputResponses"] = json!({});
        strip(&mut call);
        assert_eq!(call["params"]["_meta"], json!({"progressToken": "p"}));
        assert!(call["params"].get("requestState").is_none());
        let mut bare = modern_call("x");
        strip(&mut bare);
        assert!(bare["params"].get("_meta").is_none());
    }

    #[test]
    fn callers_are_told_apart_by_key_then_token_subject() {
        let mut observed = crate::Observed::default();
        let claims = json!({"sub": "u1", "iss": "https://idp"});
        let mut key = cel::MapBuilder::with_capacity(1);
        key.insert("name", "alice");
        let key = key.build();
        let mut down = Downstream {
            source: "127.0.0.1:1".parse().unwrap(),
            jwt: Some(&claims),
            api_key: Some(key),
            tool_guard: None,
            observed: &mut observed,
        };
        assert_eq!(principal(&down), "apiKey:alice");
        down.api_key = None;
        assert_eq!(principal(&down), "jwt:https://idp|u1");
        down.jwt = None;
        assert_eq!(principal(&down), "anonymous");
    }

    #[test]
    fn log_messages_only_at_the_requested_level() {
        let warn = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "warning", "data": "x"}});
        assert!(!relays(None, &warn));
        assert!(!relays(level_index("error"), &warn));
        assert!(relays(level_index("info"), &warn));
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}});
        assert!(relays(None, &progress));
        let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        assert!(!relays(level_index("debug"), &changed));
    }
}
