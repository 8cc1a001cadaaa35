//! An OpenAI-compatible server (the shape vLLM, SGLang, Ollama and OpenAI itself serve).
//!
//! Wire format per the OpenAI API reference (<https://platform.openai.com/docs/api-reference>):
//! "Chat Completions" (create, the chat completion object, the chat completion chunk object,
//! `stream_options.include_usage`), "Embeddings" ([`embeddings`]), "Responses" ([`responses`])
//! and "Models" (list, retrieve). JSON keys are emitted in the order the reference shows them.
//! Chat streams are SSE `data: {chunk}\n\n` ending with `data: [DONE]\n\n`; streamed tool calls
//! carry `id`, `type` and `function.name` only on the first delta of each `index`, then
//! `function.arguments` fragments. Errors are `{"error": {"message", "type", "param", "code"}}`
//! (reference: "Error codes" guide, <https://platform.openai.com/docs/guides/error-codes>).

// Handlers return `Result<_, Response>` so a validation failure is the response itself; it is
// built once per request and returned at once, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod embeddings;
pub mod moderations;
pub mod responses;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::body::{self, Paced, Pacer};
use crate::tools::{self, PlannedCall, ToolChoice, ToolDef};
use crate::{Fault, JsonBodyError, SimServer};

pub use crate::{count_tokens, SimBody};

/// Reported as `system_fingerprint`.
const FINGERPRINT: &str = "fp_switchyard_sim";

#[derive(Clone, Debug)]
pub struct Options {
    /// Model reported when the request names none (only with `require_model: false`).
    pub default_model: String,
    /// Models listed by `GET /v1/models`.
    pub models: Vec<String>,
    /// Delay before the first streamed token.
    pub time_to_first_token: Duration,
    /// Delay between streamed tokens.
    pub inter_token_delay: Duration,
    /// A fault applied to every request; the `x-sim-fault` header overrides it per request.
    pub fault: Option<Fault>,
    /// Whether a request without `model` is a 400 (OpenAI) or served as `default_model` (vLLM).
    pub require_model: bool,
    /// Length of embedding vectors when the request sets no `dimensions`.
    pub embedding_dimensions: usize,
    /// When set, requests must carry `Authorization: Bearer <key>` (else 401 `invalid_api_key`).
    pub api_key: Option<String>,
    /// Serve Azure OpenAI's deployment URLs instead of OpenAI's (see [`Azure`]).
    pub azure: Option<Azure>,
}

/// Azure OpenAI's data-plane shape (Azure OpenAI REST API reference, "Data plane - inference"):
/// `POST /openai/deployments/{deployment}/chat/completions?api-version=...` (also `/embeddings`,
/// `/responses`), the key in an `api-key` header, the model fixed by the deployment (the body's
/// `model` is ignored). A request without `api-version` is a 404 "Resource not found", an
/// unknown deployment a 404 `DeploymentNotFound`, a wrong or missing key a 401; these errors
/// are Azure's `{"error": {"code", "message"}}`.
#[derive(Clone, Debug)]
pub struct Azure {
    /// (deployment name, model it serves).
    pub deployments: Vec<(String, String)>,
    pub api_key: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_model: "sim-gpt".into(),
            models: vec!["sim-gpt".into(), "sim-gpt-mini".into()],
            time_to_first_token: Duration::ZERO,
            inter_token_delay: Duration::ZERO,
            fault: None,
            require_model: true,
            embedding_dimensions: 64,
            api_key: None,
            azure: None,
        }
    }
}

pub(crate) struct State {
    options: Options,
    next_id: AtomicU64,
    /// Hashes of conversation prefixes already served, so a repeated prefix reports
    /// `cached_tokens` the way OpenAI's automatic prompt caching does.
    seen_prefixes: Mutex<HashSet<u64>>,
}

impl State {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Past this many remembered prefixes the cache is forgotten (bounded memory under benchmarks).
const MAX_SEEN_PREFIXES: usize = 4096;

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
        seen_prefixes: Mutex::new(HashSet::new()),
    });
    Arc::new(move |req| Box::pin(route(state.clone(), req)))
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<SimBody> {
    let mut azure_model = None;
    if let Some(azure) = &state.options.azure {
        match check_azure(azure, &req) {
            Ok(model) => azure_model = Some(model),
            Err(resp) => return resp,
        }
    } else if let Some(resp) = check_api_key(&state.options, req.headers()) {
        return resp;
    }
    let fault = Fault::for_request(req.headers(), state.options.fault);
    if let Some(f) = fault.filter(|f| f.is_error_status()) {
        return fault_error(f);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if method == Method::GET {
        if path.ends_with("/models") {
            return models(&state, fault);
        }
        if let Some((_, id)) = path.rsplit_once("/models/") {
            return model(&state, id, fault);
        }
    }
    if method == Method::POST {
        let handler: fn(&State, &Value, Option<Fault>) -> Response<SimBody> =
            if path.ends_with("/chat/completions") {
                chat
            } else if path.ends_with("/embeddings") {
                embeddings::create
            } else if path.ends_with("/responses") {
                responses::create
            } else if path.ends_with("/moderations") {
                moderations::create
            } else {
                return not_found(&method, &path);
            };
        return match read_json_object(req.into_body()).await {
            Ok(mut body) => {
                if let Some(model) = azure_model {
                    body["model"] = Value::String(model);
                }
                handler(&state, &body, fault)
            }
            Err(resp) => resp,
        };
    }
    not_found(&method, &path)
}

/// Azure's checks, in the order the service applies them; the deployment's model on success.
fn check_azure(azure: &Azure, req: &Request<Incoming>) -> Result<String, Response<SimBody>> {
    let azure_error = |status: StatusCode, code: &str, message: &str| {
        body::json(
            status,
            &json!({"error": {"code": code, "message": message}}),
            None,
        )
    };
    let has_version = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.starts_with("api-version=") && kv.len() > 12)
    });
    let deployment = req
        .uri()
        .path()
        .strip_prefix("/openai/deployments/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(d, _)| d);
    let (Some(deployment), true) = (deployment, has_version) else {
        return Err(azure_error(
            StatusCode::NOT_FOUND,
            "404",
            "Resource not found",
        ));
    };
    let key = req.headers().get("api-key").and_then(|v| v.to_str().ok());
    if key != Some(azure.api_key.as_str()) {
        return Err(azure_error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to \
             provide a valid key for an active subscription and use a correct regional API \
             endpoint for your resource.",
        ));
    }
    match azure.deployments.iter().find(|(d, _)| d == deployment) {
        Some((_, model)) => Ok(model.clone()),
        None => Err(azure_error(
            StatusCode::NOT_FOUND,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment \
             within the last 5 minutes, please wait a moment and try again.",
        )),
    }
}

/// The 401 OpenAI answers when `Options::api_key` is set and the bearer token differs.
fn check_api_key(options: &Options, headers: &http::HeaderMap) -> Option<Response<SimBody>> {
    let key = options.api_key.as_deref()?;
    let sent = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let (message, code) = match sent {
        Some(sent) if sent == key => return None,
        Some(_) => ("Incorrect API key provided.", Some("invalid_api_key")),
        None => (
            "You didn't provide an API key. You need to provide your API key in an \
             Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
        ),
    };
    Some(error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        message,
        code,
    ))
}

fn not_found(method: &Method, path: &str) -> Response<SimBody> {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!("Unknown request URL: {method} {path}. Please check the URL for typos."),
        Some("unknown_url"),
    )
}

/// Reads the body as a JSON object, or the 400 OpenAI answers otherwise.
async fn read_json_object(body: Incoming) -> Result<Value, Response<SimBody>> {
    let invalid = |message: &str| {
        Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            message,
            None,
        ))
    };
    match crate::read_json(body).await {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => invalid("The request body must be a JSON object."),
        Err(JsonBodyError::Unreadable) => invalid("Could not read the request body."),
        Err(JsonBodyError::Malformed(e)) => invalid(&format!(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.) ({e})"
        )),
    }
}

/// An OpenAI error body (`param` null).
pub fn error(
    status: StatusCode,
    kind: &str,
    message: &str,
    code: Option<&str>,
) -> Response<SimBody> {
    error_with_param(status, kind, message, None, code)
}

fn error_with_param(
    status: StatusCode,
    kind: &str,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<SimBody> {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    body::json(status, &body, None)
}

/// A 400 `invalid_request_error` naming the offending parameter.
pub(crate) fn invalid_param(message: &str, param: &str, code: Option<&str>) -> Response<SimBody> {
    error_with_param(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        Some(param),
        code,
    )
}

pub(crate) fn missing_param(param: &str) -> Response<SimBody> {
    invalid_param(
        &format!("Missing required parameter: '{param}'."),
        param,
        Some("missing_required_parameter"),
    )
}

/// The error response for an error-status fault.
fn fault_error(fault: Fault) -> Response<SimBody> {
    let mut resp = match fault {
        Fault::RateLimit => error(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "Rate limit reached for requests (simulated by x-sim-fault). Please try again in 1s.",
            Some("rate_limit_exceeded"),
        ),
        Fault::Overloaded => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "The engine is currently overloaded, please try again later.",
            None,
        ),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error while processing your request. Sorry about that!",
            None,
        ),
    };
    if fault == Fault::RateLimit {
        let h = resp.headers_mut();
        h.insert("retry-after", HeaderValue::from_static("1"));
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
        h.insert("x-ratelimit-reset-requests", HeaderValue::from_static("1s"));
    }
    resp
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "switchyard-sim"})
}

fn models(state: &State, fault: Option<Fault>) -> Response<SimBody> {
    let data: Vec<Value> = state
        .options
        .models
        .iter()
        .map(|m| model_object(m))
        .collect();
    body::json(
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
        fault,
    )
}

fn model(state: &State, id: &str, fault: Option<Fault>) -> Response<SimBody> {
    if state.options.models.iter().any(|m| m == id) {
        return body::json(StatusCode::OK, &model_object(id), fault);
    }
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!("The model '{id}' does not exist"),
        Some("model_not_found"),
    )
}

/// The request's `model`, or the error response when it is missing.
pub(crate) fn model_of(state: &State, body: &Value) -> Result<String, Response<SimBody>> {
    match body["model"].as_str() {
        Some(m) => Ok(m.to_string()),
        None if !state.options.require_model => Ok(state.options.default_model.clone()),
        None => Err(missing_param("model")),
    }
}

/// The deterministic reply to a conversation: echoes the last user message.
pub fn reply_text(messages: &[Value]) -> String {
    crate::echo_reply(&last_user_text(messages))
}

fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default()
}

/// The text of a message `content`: a string, or the `text` of each part.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Function tools, from Chat Completions' `{type, function: {name, parameters}}` or the
/// Responses API's flat `{type, name, parameters}`. Entries without a name are skipped.
pub(crate) fn parse_tools(tools: &Value) -> Vec<ToolDef> {
    let Some(tools) = tools.as_array() else {
        return Vec::new();
    };
    tools
        .iter()
        .filter_map(|t| {
            let f = if t["function"].is_object() {
                &t["function"]
            } else {
                t
            };
            Some(ToolDef {
                name: f["name"].as_str().filter(|n| !n.is_empty())?.to_string(),
                schema: f["parameters"].clone(),
            })
        })
        .collect()
}

/// `tool_choice`: "none" | "auto" | "required" | `{type: "function", function: {name}}` (Chat)
/// or `{type: "function", name}` (Responses).
pub(crate) fn parse_tool_choice(choice: &Value) -> ToolChoice {
    match choice {
        Value::String(s) if s == "none" => ToolChoice::None,
        Value::String(s) if s == "required" => ToolChoice::Required,
        Value::Object(_) => {
            let name = choice["function"]["name"]
                .as_str()
                .or_else(|| choice["name"].as_str());
            name.map_or(ToolChoice::Auto, |n| ToolChoice::Named(n.to_string()))
        }
        _ => ToolChoice::Auto,
    }
}

/// What the simulated model answers.
pub(crate) enum Answer {
    Text { text: String, truncated: bool },
    Calls(Vec<(String, PlannedCall)>),
}

/// Applies `stop` sequences and a token limit to reply text.
pub(crate) fn shape_text(text: String, stops: &[String], max_tokens: Option<u64>) -> Answer {
    let text = crate::cut_at_stop(&text, stops).map_or(text, |(cut, _)| cut);
    match max_tokens.and_then(|max| crate::truncate_to_tokens(&text, max)) {
        Some(cut) => Answer::Text {
            text: cut,
            truncated: true,
        },
        None => Answer::Text {
            text,
            truncated: false,
        },
    }
}

/// `stop`: a string or an array of strings.
fn stop_sequences(stop: &Value) -> Vec<String> {
    match stop {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Tool calls with fresh `call_<n>` ids.
pub(crate) fn with_call_ids(state: &State, calls: Vec<PlannedCall>) -> Vec<(String, PlannedCall)> {
    calls
        .into_iter()
        .map(|c| (format!("call_{}", state.next_id()), c))
        .collect()
}

/// Prompt tokens already seen as a prefix of an earlier request (see [`State::seen_prefixes`]).
fn cached_prefix_tokens(state: &State, messages: &[Value]) -> u64 {
    let Some((_, prefix)) = messages.split_last() else {
        return 0;
    };
    if prefix.is_empty() {
        return 0;
    }
    let key = crate::stable_hash(Value::from(prefix.to_vec()).to_string().as_bytes());
    let mut seen = state
        .seen_prefixes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if seen.len() >= MAX_SEEN_PREFIXES {
        seen.clear();
    }
    if seen.insert(key) {
        0
    } else {
        prefix.iter().map(message_tokens).sum()
    }
}

fn message_tokens(message: &Value) -> u64 {
    // Per-message framing overhead, as OpenAI's token-counting cookbook describes.
    count_tokens(&content_text(&message["content"])) + 4
}

/// Hidden reasoning tokens reported for `reasoning_effort`.
pub(crate) fn reasoning_tokens(effort: &Value) -> u64 {
    match effort.as_str() {
        Some("low") => 16,
        Some("medium") => 32,
        Some("high") => 64,
        _ => 0,
    }
}

fn chat(state: &State, body: &Value, fault: Option<Fault>) -> Response<SimBody> {
    let model = match model_of(state, body) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let Some(messages) = body["messages"].as_array() else {
        return missing_param("messages");
    };
    if messages.is_empty() {
        return invalid_param(
            "[] is too short - 'messages'",
            "messages",
            Some("empty_array"),
        );
    }
    let tool_defs = parse_tools(&body["tools"]);
    let answer = chat_answer(state, body, messages, &tool_defs);

    let tools_tokens = if tool_defs.is_empty() {
        0
    } else {
        count_tokens(&body["tools"].to_string())
    };
    let prompt_tokens = messages.iter().map(message_tokens).sum::<u64>() + tools_tokens;
    let cached_tokens = cached_prefix_tokens(state, messages);
    let reasoning = reasoning_tokens(&body["reasoning_effort"]);
    let visible_tokens = match &answer {
        Answer::Text { text, .. } => count_tokens(text),
        Answer::Calls(calls) => calls
            .iter()
            .map(|(_, c)| count_tokens(&c.name) + count_tokens(&c.arguments.to_string()))
            .sum(),
    };
    let completion_tokens = visible_tokens + reasoning;
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    });
    let completion = Completion {
        id: format!("chatcmpl-sim{:08}", state.next_id()),
        created: crate::unix_now(),
        model,
        include_usage: body["stream_options"]["include_usage"].as_bool() == Some(true),
    };
    if body["stream"].as_bool() == Some(true) {
        let pacer = Pacer::new(
            state.options.time_to_first_token,
            state.options.inter_token_delay,
        );
        body::event_stream(completion.chunks(&answer, usage, pacer), fault)
    } else {
        body::json(StatusCode::OK, &completion.object(&answer, usage), fault)
    }
}

/// The answer to a chat request: quote tool results when the conversation ends with them, call
/// tools when the rules in [`crate::tools`] say so, else echo the user.
fn chat_answer(state: &State, body: &Value, messages: &[Value], tool_defs: &[ToolDef]) -> Answer {
    let trailing_results: Vec<String> = messages
        .iter()
        .rev()
        .take_while(|m| m["role"] == "tool")
        .map(|m| content_text(&m["content"]))
        .collect();
    let text = if trailing_results.is_empty() {
        let user_text = last_user_text(messages);
        let choice = parse_tool_choice(&body["tool_choice"]);
        let calls = tools::plan_calls(tool_defs, &choice, &user_text);
        if !calls.is_empty() {
            return Answer::Calls(with_call_ids(state, calls));
        }
        crate::echo_reply(&user_text)
    } else {
        let in_order: Vec<String> = trailing_results.into_iter().rev().collect();
        tools::reply_to_tool_results(&in_order)
    };
    let max_tokens = body["max_completion_tokens"]
        .as_u64()
        .or_else(|| body["max_tokens"].as_u64());
    shape_text(text, &stop_sequences(&body["stop"]), max_tokens)
}

/// The fields every chat completion object or chunk of one response shares.
/// The fields every Chat Completions / Completions object and chunk starts with, in the
/// order OpenAI-compatible servers send them (shared with the vLLM simulator).
pub(crate) fn envelope(
    id: &str,
    object: &str,
    created: u64,
    model: &str,
    choices: Value,
    usage: Option<Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    out.insert("object".into(), json!(object));
    out.insert("created".into(), json!(created));
    out.insert("model".into(), json!(model));
    out.insert("choices".into(), choices);
    if let Some(usage) = usage {
        out.insert("usage".into(), usage);
    }
    out
}

struct Completion {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Completion {
    fn envelope(&self, object: &str, choices: Value, usage: Option<Value>) -> Value {
        let mut out = envelope(&self.id, object, self.created, &self.model, choices, usage);
        out.insert("service_tier".into(), json!("default"));
        out.insert("system_fingerprint".into(), json!(FINGERPRINT));
        Value::Object(out)
    }

    /// The non-streamed `chat.completion` object.
    fn object(&self, answer: &Answer, usage: Value) -> Value {
        let (message, finish) = match answer {
            Answer::Text { text, truncated } => (
                json!({"role": "assistant", "content": text, "refusal": null, "annotations": []}),
                if *truncated { "length" } else { "stop" },
            ),
            Answer::Calls(calls) => {
                let tool_calls: Vec<Value> = calls
                    .iter()
                    .map(|(id, c)| {
                        json!({"id": id, "type": "function", "function": {
                            "name": c.name, "arguments": c.arguments.to_string()
                        }})
                    })
                    .collect();
                (
                    json!({"role": "assistant", "content": null, "tool_calls": tool_calls,
                           "refusal": null, "annotations": []}),
                    "tool_calls",
                )
            }
        };
        let choice =
            json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish});
        self.envelope("chat.completion", json!([choice]), Some(usage))
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Paced {
        let choices =
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
        // With include_usage every chunk carries `usage: null` except the last, per the reference.
        let usage = self.include_usage.then_some(Value::Null);
        Paced {
            delay: Duration::ZERO,
            data: body::sse_data(&self.envelope("chat.completion.chunk", choices, usage)),
        }
    }

    /// The SSE events of a streamed `chat.completion.chunk` sequence.
    fn chunks(&self, answer: &Answer, usage: Value, mut pacer: Pacer) -> Vec<Paced> {
        let mut events = Vec::new();
        let mut token = |mut event: Paced| {
            event.delay = pacer.token();
            event
        };
        let finish = match answer {
            Answer::Text { text, truncated } => {
                events.push(token(self.chunk(
                    json!({"role": "assistant", "content": "", "refusal": null}),
                    None,
                )));
                for piece in crate::stream_pieces(text) {
                    events.push(token(self.chunk(json!({"content": piece}), None)));
                }
                if *truncated {
                    "length"
                } else {
                    "stop"
                }
            }
            Answer::Calls(calls) => {
                events.push(token(self.chunk(
                    json!({"role": "assistant", "content": null, "refusal": null}),
                    None,
                )));
                for (index, (id, call)) in calls.iter().enumerate() {
                    let first = json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                        "function": {"name": call.name, "arguments": ""}}]});
                    events.push(token(self.chunk(first, None)));
                    for fragment in crate::split_fragments(&call.arguments.to_string(), 4) {
                        let delta = json!({"tool_calls": [{"index": index,
                            "function": {"arguments": fragment}}]});
                        events.push(token(self.chunk(delta, None)));
                    }
                }
                "tool_calls"
            }
        };
        events.push(self.chunk(json!({}), Some(finish)));
        if self.include_usage {
            let last = self.envelope("chat.completion.chunk", json!([]), Some(usage));
            events.push(Paced {
                delay: Duration::ZERO,
                data: body::sse_data(&last),
            });
        }
        events.push(Paced {
            delay: Duration::ZERO,
            data: bytes::Bytes::from_static(b"data: [DONE]\n\n"),
        });
        events
    }
}
