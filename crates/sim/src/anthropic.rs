//! An Anthropic Messages API server.
//!
//! Wire format per Anthropic's API reference: "Messages" (create; the message object with
//! `text`, `thinking` and `tool_use` content blocks; <https://docs.claude.com/en/api/messages>),
//! "Streaming Messages" (the event sequence and SSE framing, see [`stream`];
//! <https://docs.claude.com/en/docs/build-with-claude/streaming>), "Count Message tokens"
//! (`POST /v1/messages/count_tokens` → `{input_tokens}`), "List Models" (`GET /v1/models` →
//! `{data, has_more, first_id, last_id}`), and "Errors" (<https://docs.claude.com/en/api/errors>):
//! `{"type": "error", "error": {"type", "message"}, "request_id"}` with a `request-id` header on
//! every response, 429 `rate_limit_error` with `retry-after`, 500 `api_error`, 529
//! `overloaded_error`.
//!
//! Deterministic behaviour: the reply echoes the last user text; tool use follows
//! [`crate::tools`]; a conversation ending in `tool_result` blocks is answered by quoting them;
//! `thinking: {type: "enabled", budget_tokens}` adds a signed `thinking` block; `stop_sequences`
//! and `max_tokens` cut the text; a system prompt with a `cache_control` block is reported as
//! read from cache (`cache_read_input_tokens`).

pub mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::body::{self, Pacer};
use crate::tools::{self, ToolChoice, ToolDef};
use crate::{count_tokens, Fault, JsonBodyError, SimBody, SimServer};

#[derive(Clone, Debug)]
pub struct Options {
    /// The first model `GET /v1/models` lists when `models` is empty.
    pub default_model: String,
    /// Models listed by `GET /v1/models`.
    pub models: Vec<String>,
    /// Delay before the first streamed token.
    pub time_to_first_token: Duration,
    /// Delay between streamed tokens.
    pub inter_token_delay: Duration,
    /// A fault applied to every request; the `x-sim-fault` header overrides it per request.
    pub fault: Option<Fault>,
    /// When set, requests must carry this `x-api-key` (else 401 `authentication_error`).
    pub api_key: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_model: "claude-sim-1".into(),
            models: vec!["claude-sim-1".into(), "claude-sim-1-mini".into()],
            time_to_first_token: Duration::ZERO,
            inter_token_delay: Duration::ZERO,
            fault: None,
            api_key: None,
        }
    }
}

struct State {
    options: Options,
    next_id: AtomicU64,
}

/// Starts the simulator on `listener`.
pub fn serve(listener: TcpListener, options: Options) -> SimServer {
    crate::serve_service(listener, None, service(options))
}

/// Starts the simulator behind TLS on `listener`. ALPN offers `h2` and `http/1.1` unless `tls`
/// sets its own list.
pub fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    options: Options,
) -> SimServer {
    crate::serve_service(listener, Some(tls), service(options))
}

/// Binds 127.0.0.1:0 and starts the simulator.
pub async fn spawn(options: Options) -> std::io::Result<SimServer> {
    Ok(serve(TcpListener::bind("127.0.0.1:0").await?, options))
}

fn service(options: Options) -> crate::Service {
    let state = Arc::new(State {
        options,
        next_id: AtomicU64::new(1),
    });
    Arc::new(move |req| {
        let state = state.clone();
        Box::pin(async move {
            let n = state.next_id.fetch_add(1, Ordering::Relaxed);
            let request_id = format!("req_sim{n:016}");
            let mut resp = route(&state, req, &request_id, n).await;
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("request-id", v);
            }
            resp
        })
    })
}

/// An Anthropic error response.
fn error(status: StatusCode, kind: &str, message: &str, request_id: &str) -> Response<SimBody> {
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id
    });
    body::json(status, &body, None)
}

fn invalid(message: &str, request_id: &str) -> Response<SimBody> {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        request_id,
    )
}

async fn route(
    state: &State,
    req: Request<Incoming>,
    request_id: &str,
    n: u64,
) -> Response<SimBody> {
    if let Some(resp) = check_headers(&state.options, req.headers(), request_id) {
        return resp;
    }
    let fault = Fault::for_request(req.headers(), state.options.fault);
    if let Some(f) = fault.filter(|f| f.is_error_status()) {
        return fault_error(f, request_id);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if method == Method::GET && path.ends_with("/v1/models") {
        return list_models(state, req.uri().query().unwrap_or(""), fault);
    }
    if method == Method::GET {
        if let Some((_, id)) = path.rsplit_once("/v1/models/") {
            return get_model(state, id, request_id, fault);
        }
    }
    let counting = path.ends_with("/v1/messages/count_tokens");
    if method != Method::POST || !(counting || path.ends_with("/v1/messages")) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            &format!("Not found: {method} {path}"),
            request_id,
        );
    }
    let body = match crate::read_json(req.into_body()).await {
        Ok(v) if v.is_object() => v,
        Ok(_) => return invalid("The request body must be a JSON object.", request_id),
        Err(JsonBodyError::Unreadable) => {
            return invalid("Could not read the request body.", request_id)
        }
        Err(JsonBodyError::Malformed(e)) => {
            return invalid(
                &format!("There was an issue with the JSON body: {e}"),
                request_id,
            )
        }
    };
    let request = match MessagesRequest::parse(&body, !counting) {
        Ok(r) => r,
        Err(message) => return invalid(&message, request_id),
    };
    if counting {
        // The real API counts for a model it serves: an alias the gateway should have
        // resolved is a 404, as it is there.
        if !model_ids(&state.options).iter().any(|m| m == request.model) {
            return error(
                StatusCode::NOT_FOUND,
                "not_found_error",
                &format!("model: {}", request.model),
                request_id,
            );
        }
        let tokens = request.input_tokens();
        return body::json(StatusCode::OK, &json!({"input_tokens": tokens}), fault);
    }
    create_message(state, &request, n, fault)
}

/// Authentication and version checks, in the order the real API applies them.
fn check_headers(
    options: &Options,
    headers: &HeaderMap,
    request_id: &str,
) -> Option<Response<SimBody>> {
    if let Some(key) = &options.api_key {
        let message = match headers.get("x-api-key").map(|v| v.as_bytes()) {
            None => Some("x-api-key header is required"),
            Some(sent) if sent != key.as_bytes() => Some("invalid x-api-key"),
            Some(_) => None,
        };
        if let Some(message) = message {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                message,
                request_id,
            ));
        }
    }
    if !headers.contains_key("anthropic-version") {
        return Some(invalid("anthropic-version: header is required", request_id));
    }
    None
}

fn fault_error(fault: Fault, request_id: &str) -> Response<SimBody> {
    match fault {
        Fault::RateLimit => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Number of requests has exceeded your per-minute rate limit (simulated by x-sim-fault).",
                request_id,
            );
            let h = resp.headers_mut();
            h.insert("retry-after", HeaderValue::from_static("1"));
            h.insert(
                "anthropic-ratelimit-requests-limit",
                HeaderValue::from_static("50"),
            );
            h.insert(
                "anthropic-ratelimit-requests-remaining",
                HeaderValue::from_static("0"),
            );
            resp
        }
        Fault::Overloaded => error(
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error",
            "Overloaded",
            request_id,
        ),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "Internal server error",
            request_id,
        ),
    }
}

/// "claude-sim-1" → "Claude Sim 1".
fn display_name(id: &str) -> String {
    id.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map_or(String::new(), |f| f.to_uppercase().chain(c).collect())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn model_object(id: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": display_name(id),
           "created_at": "2025-01-01T00:00:00Z"})
}

fn model_ids(options: &Options) -> Vec<String> {
    if options.models.is_empty() {
        vec![options.default_model.clone()]
    } else {
        options.models.clone()
    }
}

/// `GET /v1/models`, with `limit` (default 20) and `after_id` pagination.
fn list_models(state: &State, query: &str, fault: Option<Fault>) -> Response<SimBody> {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let limit = param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 1000);
    let ids = model_ids(&state.options);
    let start = param("after_id")
        .and_then(|after| ids.iter().position(|m| *m == after).map(|i| i + 1))
        .unwrap_or(0);
    let page: Vec<&String> = ids.iter().skip(start).take(limit).collect();
    let resp = json!({
        "data": page.iter().map(|m| model_object(m)).collect::<Vec<_>>(),
        "has_more": start + page.len() < ids.len(),
        "first_id": page.first(),
        "last_id": page.last()
    });
    body::json(StatusCode::OK, &resp, fault)
}

fn get_model(state: &State, id: &str, request_id: &str, fault: Option<Fault>) -> Response<SimBody> {
    if model_ids(&state.options).iter().any(|m| m == id) {
        return body::json(StatusCode::OK, &model_object(id), fault);
    }
    error(
        StatusCode::NOT_FOUND,
        "not_found_error",
        &format!("model: {id}"),
        request_id,
    )
}

/// The parts of a Messages request the simulator acts on, validated.
struct MessagesRequest<'a> {
    model: &'a str,
    messages: &'a [Value],
    max_tokens: u64,
    system_text: String,
    /// Whether a system block carries `cache_control`.
    system_cached: bool,
    tools: Vec<ToolDef>,
    tools_json: Option<String>,
    tool_choice: ToolChoice,
    thinking: bool,
    stop_sequences: Vec<String>,
    stream: bool,
}

impl<'a> MessagesRequest<'a> {
    /// Validates `body`; the error is the `invalid_request_error` message. `needs_max_tokens` is
    /// false for count_tokens, which takes no `max_tokens`.
    fn parse(body: &'a Value, needs_max_tokens: bool) -> Result<Self, String> {
        let model = body["model"].as_str().ok_or("model: Field required")?;
        let max_tokens = match &body["max_tokens"] {
            Value::Null if !needs_max_tokens => 0,
            Value::Null => return Err("max_tokens: Field required".into()),
            v => v
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or("max_tokens: Input should be a valid integer greater than or equal to 1")?,
        };
        let messages = body["messages"]
            .as_array()
            .ok_or("messages: Field required")?;
        for (i, m) in messages.iter().enumerate() {
            if m["role"] != "user" && m["role"] != "assistant" {
                return Err(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                ));
            }
            if !m["content"].is_string() && !m["content"].is_array() {
                return Err(format!("messages.{i}.content: Field required"));
            }
        }
        let (system_text, system_cached) = match &body["system"] {
            Value::String(s) => (s.clone(), false),
            Value::Array(blocks) => (
                crate::openai::content_text(&body["system"]),
                blocks.iter().any(|b| b["cache_control"].is_object()),
            ),
            _ => (String::new(), false),
        };
        let thinking = match body["thinking"]["type"].as_str() {
            Some("enabled") => {
                let budget = body["thinking"]["budget_tokens"]
                    .as_u64()
                    .ok_or("thinking.enabled.budget_tokens: Field required")?;
                if budget < 1024 {
                    return Err("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024".into());
                }
                if needs_max_tokens && budget >= max_tokens {
                    return Err("`max_tokens` must be greater than `thinking.budget_tokens`".into());
                }
                true
            }
            _ => false,
        };
        let tools: Vec<ToolDef> = body["tools"]
            .as_array()
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| {
                        Some(ToolDef {
                            name: t["name"].as_str().filter(|n| !n.is_empty())?.to_string(),
                            schema: t["input_schema"].clone(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let tool_choice = match body["tool_choice"]["type"].as_str() {
            Some("none") => ToolChoice::None,
            Some("any") => ToolChoice::Required,
            Some("tool") => ToolChoice::Named(
                body["tool_choice"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
            _ => ToolChoice::Auto,
        };
        let stop_sequences = body["stop_sequences"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(MessagesRequest {
            model,
            messages,
            max_tokens,
            system_text,
            system_cached,
            tools_json: (!tools.is_empty()).then(|| body["tools"].to_string()),
            tools,
            tool_choice,
            thinking,
            stop_sequences,
            stream: body["stream"].as_bool() == Some(true),
        })
    }

    fn system_tokens(&self) -> u64 {
        count_tokens(&self.system_text)
    }

    /// All input tokens: system prompt, messages (3 tokens of framing each) and tool definitions.
    fn input_tokens(&self) -> u64 {
        let messages: u64 = self
            .messages
            .iter()
            .map(|m| count_tokens(&message_text(&m["content"])) + 3)
            .sum();
        let tools = self.tools_json.as_deref().map_or(0, count_tokens);
        self.system_tokens() + messages + tools
    }

    /// The text of the last user turn (text blocks only).
    fn last_user_text(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(|m| match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(blocks) => blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            })
            .unwrap_or_default()
    }

    /// The contents of `tool_result` blocks in the final user turn, if it has any.
    fn trailing_tool_results(&self) -> Vec<String> {
        let Some(last) = self.messages.last().filter(|m| m["role"] == "user") else {
            return Vec::new();
        };
        last["content"]
            .as_array()
            .map(|blocks| {
                blocks
                    .iter()
                    .filter(|b| b["type"] == "tool_result")
                    .map(|b| crate::openai::content_text(&b["content"]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Every piece of text in a message `content`: text, tool inputs and tool results.
fn message_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b["type"].as_str() {
                Some("tool_use") => b["input"].to_string(),
                Some("tool_result") => crate::openai::content_text(&b["content"]),
                Some("thinking") => b["thinking"].as_str().unwrap_or_default().to_string(),
                _ => b["text"].as_str().unwrap_or_default().to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// One content block of the reply.
pub(crate) enum Block {
    Thinking {
        thinking: String,
        signature: String,
    },
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

impl Block {
    /// The finished block, as in a non-streamed message.
    fn finished(&self) -> Value {
        match self {
            Block::Thinking {
                thinking,
                signature,
            } => json!({"type": "thinking", "thinking": thinking, "signature": signature}),
            Block::Text(text) => json!({"type": "text", "text": text}),
            Block::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        }
    }

    fn output_tokens(&self) -> u64 {
        match self {
            Block::Thinking { thinking, .. } => count_tokens(thinking),
            Block::Text(text) => count_tokens(text),
            Block::ToolUse { name, input, .. } => {
                count_tokens(name) + count_tokens(&input.to_string())
            }
        }
    }
}

/// A deterministic stand-in for the opaque signature of a thinking block.
fn thinking_signature(thinking: &str) -> String {
    let h = crate::stable_hash(thinking.as_bytes()).to_le_bytes();
    let bytes: Vec<u8> = h.iter().cycle().take(48).copied().collect();
    crate::base64(&bytes)
}

/// The reply: its blocks, `stop_reason` and `stop_sequence`.
struct Reply {
    blocks: Vec<Block>,
    stop_reason: &'static str,
    stop_sequence: Option<String>,
}

fn reply(request: &MessagesRequest, n: u64) -> Reply {
    let user_text = request.last_user_text();
    let mut blocks = Vec::new();
    if request.thinking {
        let thinking = format!("The user said: {user_text}. I will answer deterministically.");
        blocks.push(Block::Thinking {
            signature: thinking_signature(&thinking),
            thinking,
        });
    }
    let results = request.trailing_tool_results();
    let calls = if results.is_empty() {
        tools::plan_calls(&request.tools, &request.tool_choice, &user_text)
    } else {
        Vec::new()
    };
    if !calls.is_empty() {
        if request.tool_choice == ToolChoice::Auto {
            // With `auto`, Claude usually says what it is about to do before the tool_use
            // blocks; with `any`/`tool` the call comes straight away.
            let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
            blocks.push(Block::Text(format!("I'll use {}.", names.join(" and "))));
        }
        for (i, call) in calls.into_iter().enumerate() {
            blocks.push(Block::ToolUse {
                id: format!("toolu_sim{n:08}_{i}"),
                name: call.name,
                input: call.arguments,
            });
        }
        return Reply {
            blocks,
            stop_reason: "tool_use",
            stop_sequence: None,
        };
    }
    let mut text = if results.is_empty() {
        crate::echo_reply(&user_text)
    } else {
        tools::reply_to_tool_results(&results)
    };
    let mut stop_reason = "end_turn";
    let mut stop_sequence = None;
    if let Some((cut, stop)) = crate::cut_at_stop(&text, &request.stop_sequences) {
        text = cut;
        stop_reason = "stop_sequence";
        stop_sequence = Some(stop.to_string());
    }
    let thinking_tokens: u64 = blocks.iter().map(Block::output_tokens).sum();
    let budget = request.max_tokens.saturating_sub(thinking_tokens);
    if let Some(cut) = crate::truncate_to_tokens(&text, budget) {
        text = cut;
        stop_reason = "max_tokens";
        stop_sequence = None;
    }
    blocks.push(Block::Text(text));
    Reply {
        blocks,
        stop_reason,
        stop_sequence,
    }
}

/// `usage` as the message object and `message_start` report it.
fn usage(request: &MessagesRequest, output_tokens: u64) -> Value {
    let total = request.input_tokens();
    let cached = if request.system_cached {
        request.system_tokens()
    } else {
        0
    };
    json!({
        "input_tokens": total - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output_tokens
    })
}

fn create_message(
    state: &State,
    request: &MessagesRequest,
    n: u64,
    fault: Option<Fault>,
) -> Response<SimBody> {
    let reply = reply(request, n);
    let output_tokens: u64 = reply.blocks.iter().map(Block::output_tokens).sum();
    let id = format!("msg_sim{n:016}");
    if request.stream {
        let pacer = Pacer::new(
            state.options.time_to_first_token,
            state.options.inter_token_delay,
        );
        let start = stream::MessageStart {
            id: &id,
            model: request.model,
            usage: usage(request, 1),
        };
        let end = stream::MessageEnd {
            stop_reason: reply.stop_reason,
            stop_sequence: reply.stop_sequence.as_deref(),
            output_tokens,
        };
        return body::event_stream(stream::events(&start, &reply.blocks, &end, pacer), fault);
    }
    let message = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": reply.blocks.iter().map(Block::finished).collect::<Vec<_>>(),
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "usage": usage(request, output_tokens)
    });
    body::json(StatusCode::OK, &message, fault)
}
