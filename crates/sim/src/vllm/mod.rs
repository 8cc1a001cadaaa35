//! A simulated vLLM server, for benchmarking routing strategies against a fleet of pods.
//!
//! Why: a router's choices (random, least-request, prefix-cache affinity, KV-usage aware...)
//! only show their consequences if each backend behaves like a GPU: requests queue, batches
//! slow every sequence down, and a prompt whose prefix is already in a pod's KV cache is
//! cheaper *on that pod only*. The text is filler; the timing is the point.
//!
//! Timing model ([`engine`], a pure state machine on a virtual clock): continuous batching with
//! `max_num_seqs` running sequences and a `max_num_batched_tokens` budget per step (chunked
//! prefill); each step lasts `step_base + prefill_per_token × prefilled tokens + decode_per_seq
//! × decoding sequences` (defaults 2 ms, 60 µs, 250 µs), plus attention over each prefill
//! chunk's context and the KV reads of every sequence's context, and each request first spends
//! a fixed + per-prompt-token cost in a FIFO API server (both off by default;
//! [`EngineConfig::a100_llama8b`] is calibrated to a published vLLM measurement, and is what
//! `vllm-fleet` runs by default); a paged KV cache of `num_blocks` blocks
//! of `block_size` tokens with automatic prefix caching (hash-chained full blocks, LRU eviction
//! of freed blocks, preemption when full). So TTFT is queueing plus prefill of the uncached
//! prompt tokens, and inter-token latency is the step time of the batch the request shares.
//!
//! Here a tokio task runs that engine in real time (sleeping each step's duration, with
//! absolute deadlines so timer granularity does not accumulate) and serves vLLM's
//! OpenAI-compatible API: `POST /v1/chat/completions`, `POST /v1/completions` (JSON or SSE),
//! `GET /v1/models`, `/health`, `/ping`, `/version`, `/metrics` (vLLM's Prometheus metric names
//! with a `model_name` label), plus `/get_server_info`, `/get_model_info` and `/health_generate`
//! for routers that probe them. Every response carries `x-sim-pod: <name>`. Errors use vLLM's
//! `{"error": {"message", "type", "param", "code"}}` shape: 400 `BadRequestError`, 404
//! `NotFoundError` (unknown model), 429 when `max_waiting` requests already wait.

#![allow(clippy::result_large_err)]

pub mod engine;
mod metrics;
pub mod tokenizer;

pub use engine::{Engine, EngineConfig, Event, FinishReason, Rejected, Request, StepOutcome};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::{body, BoxError, JsonBodyError, SimBody, SimServer};

/// The header naming the pod that served a response.
pub const POD_HEADER: &str = "x-sim-pod";

/// Reported by `GET /version`.
pub const VLLM_VERSION: &str = "0.11.0";

#[derive(Clone, Debug)]
pub struct VllmOptions {
    /// The pod's name, sent as `x-sim-pod` and in `/get_server_info`.
    pub name: String,
    /// The served model name.
    pub model: String,
    /// LoRA adapters loaded on top of it: served under their own names too, listed by
    /// `/v1/models` with the base model as `parent` (as vLLM does).
    pub lora_adapters: Vec<String>,
    pub engine: EngineConfig,
    /// Seeds the completion lengths drawn for requests without `max_tokens`.
    pub seed: u64,
}

impl Default for VllmOptions {
    fn default() -> Self {
        VllmOptions {
            name: "vllm-sim".into(),
            model: "sim-llama".into(),
            lora_adapters: Vec::new(),
            engine: EngineConfig::default(),
            seed: 0,
        }
    }
}

/// What one engine step produced for one request.
#[derive(Debug, Default)]
struct Update {
    /// Set on the step that produced the first token: prefix-cache hits.
    first: Option<usize>,
    tokens: Vec<u32>,
    finished: Option<Finished>,
}

#[derive(Clone, Copy, Debug)]
struct Finished {
    prompt_tokens: usize,
    completion_tokens: u32,
    cached_tokens: usize,
    reason: FinishReason,
}

struct Core {
    engine: Engine,
    clients: HashMap<u64, mpsc::UnboundedSender<Update>>,
}

struct Shared {
    options: VllmOptions,
    core: Mutex<Core>,
    wake: Notify,
    start: Instant,
    next_id: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts a simulated vLLM pod on `listener` (call from within a tokio runtime).
pub fn serve(listener: TcpListener, options: VllmOptions) -> SimServer {
    let shared = Arc::new(Shared {
        core: Mutex::new(Core {
            engine: Engine::with_seed(options.engine.clone(), options.seed),
            clients: HashMap::new(),
        }),
        options,
        wake: Notify::new(),
        start: Instant::now(),
        next_id: AtomicU64::new(1),
    });
    let engine_task = tokio::spawn(run_engine(shared.clone()));
    let service: crate::Service = Arc::new(move |req| {
        let shared = shared.clone();
        Box::pin(async move {
            let mut resp = route(&shared, req).await;
            if let Ok(v) = HeaderValue::from_str(&shared.options.name) {
                resp.headers_mut().insert(POD_HEADER, v);
            }
            resp
        })
    });
    crate::serve_service(listener, None, service).with_companion(engine_task)
}

/// Binds 127.0.0.1:0 and starts a pod.
pub async fn spawn(options: VllmOptions) -> std::io::Result<SimServer> {
    Ok(serve(TcpListener::bind("127.0.0.1:0").await?, options))
}

/// The options of pod `index` of a fleet: named `pod-<index>`, seed offset by the index.
pub fn pod_options(base: &VllmOptions, index: usize) -> VllmOptions {
    VllmOptions {
        name: format!("pod-{index}"),
        seed: base.seed.wrapping_add(index as u64),
        ..base.clone()
    }
}

/// Starts `n` pods (`pod-0`...) on ephemeral ports of 127.0.0.1.
///
/// Panics if a port cannot be bound (use [`serve`] with [`pod_options`] to handle that).
pub async fn fleet(n: usize, base: VllmOptions) -> Vec<SimServer> {
    let mut pods = Vec::with_capacity(n);
    for i in 0..n {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for a simulated vLLM pod");
        pods.push(serve(listener, pod_options(&base, i)));
    }
    pods
}

/// Runs the engine in real time: step, sleep the step's duration, deliver what it produced.
async fn run_engine(shared: Arc<Shared>) {
    // End of the previous step while the engine stays busy: the next step starts there rather
    // than at "now", so timer overshoot does not add up over thousands of steps.
    let mut clock: Option<Duration> = None;
    loop {
        let step = {
            let mut core = shared.lock();
            if core.engine.has_work() {
                let elapsed = shared.start.elapsed();
                let now = match clock {
                    // Far behind (the machine stalled): resynchronise instead of bursting.
                    Some(end) if elapsed.saturating_sub(end) < Duration::from_millis(20) => end,
                    _ => elapsed,
                };
                Some((now, core.engine.step(now)))
            } else {
                None
            }
        };
        let Some((now, outcome)) = step else {
            clock = None;
            shared.wake.notified().await;
            continue;
        };
        let end = now + outcome.duration;
        tokio::time::sleep_until(shared.start + end).await;
        clock = Some(end);
        dispatch(&shared, outcome.events);
    }
}

/// Delivers a step's events, one [`Update`] per request; aborts requests whose client is gone.
fn dispatch(shared: &Shared, events: Vec<Event>) {
    let mut updates: Vec<(u64, Update)> = Vec::new();
    for event in events {
        let id = event.id();
        let i = match updates.iter().position(|(u, _)| *u == id) {
            Some(i) => i,
            None => {
                updates.push((id, Update::default()));
                updates.len() - 1
            }
        };
        let update = &mut updates[i].1;
        match event {
            Event::FirstToken {
                token,
                cached_tokens,
                ..
            } => {
                update.first = Some(cached_tokens);
                update.tokens.push(token);
            }
            Event::Token { token, .. } => update.tokens.push(token),
            Event::Finished {
                prompt_tokens,
                completion_tokens,
                cached_tokens,
                reason,
                ..
            } => {
                update.finished = Some(Finished {
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                    reason,
                });
            }
        }
    }
    let mut core = shared.lock();
    for (id, update) in updates {
        let done = update.finished.is_some();
        let delivered = core.clients.get(&id).map(|tx| tx.send(update).is_ok());
        match delivered {
            Some(true) if !done => {}
            Some(true) => {
                core.clients.remove(&id);
            }
            Some(false) => {
                core.clients.remove(&id);
                core.engine.abort(id);
            }
            None => {}
        }
    }
}

async fn route(shared: &Arc<Shared>, req: http::Request<Incoming>) -> Response<SimBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let get = method == Method::GET;
    match path.as_str() {
        "/health" | "/health_generate" if get => empty(StatusCode::OK),
        "/ping" if get || method == Method::POST => empty(StatusCode::OK),
        "/version" if get => ok_json(&json!({"version": VLLM_VERSION})),
        "/v1/models" if get => models(shared),
        "/metrics" if get => metrics_response(shared),
        "/get_server_info" if get => server_info(shared),
        "/get_model_info" if get => ok_json(&json!({
            "model_path": shared.options.model,
            "tokenizer_path": shared.options.model,
            "is_generation": true,
        })),
        "/tokenize" | "/v1/chat/completions/render" | "/v1/completions/render"
            if method == Method::POST =>
        {
            // vllm-router's kv_aware policy tokenizes every request on every worker.
            let body = match crate::read_json(req.into_body()).await {
                Ok(b) if b.is_object() => b,
                Ok(_) => return bad_request("The request body must be a JSON object."),
                Err(JsonBodyError::Unreadable) => {
                    return bad_request("Could not read the request body.")
                }
                Err(JsonBodyError::Malformed(e)) => {
                    return bad_request(&format!("JSON decode error: {e}"))
                }
            };
            let tokens = if body.get("messages").is_some() {
                chat_prompt(&body["messages"])
            } else {
                completion_prompt(&body["prompt"])
            };
            match tokens {
                Ok(t) if path == "/tokenize" => ok_json(&json!({
                    "count": t.len(),
                    "max_model_len": shared.options.engine.max_model_len,
                    "tokens": t,
                    "token_strs": null,
                })),
                Ok(t) => ok_json(&json!({"token_ids": t})),
                Err(resp) => resp,
            }
        }
        "/v1/chat/completions" | "/v1/completions" if method == Method::POST => {
            let kind = if path == "/v1/chat/completions" {
                Kind::Chat
            } else {
                Kind::Completion
            };
            match crate::read_json(req.into_body()).await {
                Ok(body) if body.is_object() => generate(shared, kind, &body).await,
                Ok(_) => bad_request("The request body must be a JSON object."),
                Err(JsonBodyError::Unreadable) => bad_request("Could not read the request body."),
                Err(JsonBodyError::Malformed(e)) => bad_request(&format!("JSON decode error: {e}")),
            }
        }
        "/health"
        | "/health_generate"
        | "/ping"
        | "/version"
        | "/v1/models"
        | "/metrics"
        | "/get_server_info"
        | "/get_model_info"
        | "/v1/chat/completions"
        | "/v1/completions" => {
            // FastAPI's answer to a known path with the wrong method.
            body::json(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"detail": "Method Not Allowed"}),
                None,
            )
        }
        _ => body::json(StatusCode::NOT_FOUND, &json!({"detail": "Not Found"}), None),
    }
}

fn empty(status: StatusCode) -> Response<SimBody> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp
}

fn ok_json(value: &Value) -> Response<SimBody> {
    body::json(StatusCode::OK, value, None)
}

/// vLLM's error body: `{"error": {"message", "type", "param", "code"}}` with a numeric code.
pub fn error(status: StatusCode, kind: &str, message: &str) -> Response<SimBody> {
    body::json(
        status,
        &json!({"error": {
            "message": message,
            "type": kind,
            "param": null,
            "code": status.as_u16(),
        }}),
        None,
    )
}

fn bad_request(message: &str) -> Response<SimBody> {
    error(StatusCode::BAD_REQUEST, "BadRequestError", message)
}

fn models(shared: &Shared) -> Response<SimBody> {
    let model = &shared.options.model;
    let max_model_len = shared.lock().engine.config().max_model_len;
    let mut data = vec![json!({
        "id": model,
        "object": "model",
        "created": crate::unix_now(),
        "owned_by": "vllm",
        "root": model,
        "parent": null,
        "max_model_len": max_model_len,
        "permission": [],
    })];
    for adapter in &shared.options.lora_adapters {
        data.push(json!({
            "id": adapter,
            "object": "model",
            "created": crate::unix_now(),
            "owned_by": "vllm",
            "root": format!("/adapters/{adapter}"),
            "parent": model,
            "max_model_len": null,
            "permission": [],
        }));
    }
    ok_json(&json!({"object": "list", "data": data}))
}

fn server_info(shared: &Shared) -> Response<SimBody> {
    let core = shared.lock();
    let cfg = core.engine.config();
    let stats = core.engine.stats();
    ok_json(&json!({
        "pod": shared.options.name,
        "model": shared.options.model,
        "served_model_name": shared.options.model,
        "version": VLLM_VERSION,
        "max_model_len": cfg.max_model_len,
        "max_num_seqs": cfg.max_num_seqs,
        "max_num_batched_tokens": cfg.max_num_batched_tokens,
        "block_size": cfg.block_size,
        "num_gpu_blocks": cfg.num_blocks,
        "enable_prefix_caching": cfg.enable_prefix_caching,
        "num_requests_running": stats.running,
        "num_requests_waiting": stats.waiting,
        "kv_cache_usage_perc": stats.kv_usage,
    }))
}

fn metrics_response(shared: &Shared) -> Response<SimBody> {
    let stats = shared.lock().engine.stats();
    let text = metrics::render(&shared.options.model, &stats);
    let mut resp = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// A validated generation request.
struct Generation {
    kind: Kind,
    model: String,
    prompt: Vec<u32>,
    max_tokens: Option<u32>,
    stream: bool,
    include_usage: bool,
}

fn parse(shared: &Shared, kind: Kind, body: &Value) -> Result<Generation, Response<SimBody>> {
    let model = match &body["model"] {
        Value::Null => shared.options.model.clone(),
        Value::String(m)
            if *m == shared.options.model || shared.options.lora_adapters.contains(m) =>
        {
            m.clone()
        }
        Value::String(m) => {
            return Err(error(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                &format!("The model `{m}` does not exist."),
            ))
        }
        _ => return Err(bad_request("`model` must be a string.")),
    };
    let prompt = match kind {
        Kind::Chat => chat_prompt(&body["messages"])?,
        Kind::Completion => completion_prompt(&body["prompt"])?,
    };
    let max_tokens = match body
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| body.get("max_tokens").filter(|v| !v.is_null()))
    {
        None => None,
        Some(v) => match v.as_u64() {
            Some(0) => return Err(bad_request("max_tokens must be at least 1, got 0.")),
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            None => return Err(bad_request("max_tokens must be a positive integer.")),
        },
    };
    let stream = match &body["stream"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => return Err(bad_request("`stream` must be a boolean.")),
    };
    let include_usage = body["stream_options"]["include_usage"] == true;
    Ok(Generation {
        kind,
        model,
        prompt,
        max_tokens,
        stream,
        include_usage,
    })
}

fn chat_prompt(messages: &Value) -> Result<Vec<u32>, Response<SimBody>> {
    let Some(messages) = messages.as_array().filter(|m| !m.is_empty()) else {
        return Err(bad_request(
            "`messages` is required and must be a non-empty list of messages.",
        ));
    };
    let mut rendered = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let Some(role) = m["role"].as_str() else {
            return Err(bad_request(&format!("messages[{i}].role is required.")));
        };
        let content = match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            Value::Null => String::new(),
            _ => {
                return Err(bad_request(&format!(
                    "messages[{i}].content must be a string or a list of parts."
                )))
            }
        };
        rendered.push((role.to_string(), content));
    }
    Ok(tokenizer::render_chat(
        rendered.iter().map(|(r, c)| (r.as_str(), c.as_str())),
    ))
}

fn completion_prompt(prompt: &Value) -> Result<Vec<u32>, Response<SimBody>> {
    let tokens = match prompt {
        Value::String(s) => tokenizer::tokenize(s),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => {
            tokenizer::tokenize(items[0].as_str().unwrap_or_default())
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => items
            .iter()
            .map(|t| t.as_u64().unwrap_or_default() as u32)
            .collect(),
        Value::Null => return Err(bad_request("`prompt` is required.")),
        _ => {
            return Err(bad_request(
                "`prompt` must be a string, a list of one string, or a list of token ids.",
            ))
        }
    };
    if tokens.is_empty() {
        return Err(bad_request("The prompt cannot be empty."));
    }
    Ok(tokens)
}

async fn generate(shared: &Arc<Shared>, kind: Kind, body: &Value) -> Response<SimBody> {
    let gen = match parse(shared, kind, body) {
        Ok(g) => g,
        Err(resp) => return resp,
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    {
        let mut core = shared.lock();
        let now = shared.start.elapsed();
        let request = Request {
            id,
            prompt_tokens: gen.prompt.clone(),
            max_tokens: gen.max_tokens,
        };
        match core.engine.add(now, request) {
            Ok(()) => {
                core.clients.insert(id, tx);
            }
            Err(rejected @ Rejected::QueueFull { .. }) => {
                return error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RateLimitError",
                    &rejected.to_string(),
                )
            }
            Err(rejected) => return bad_request(&rejected.to_string()),
        }
    }
    shared.wake.notify_one();
    let reply = Reply {
        kind: gen.kind,
        id: format!(
            "{}-{:016x}{:016x}",
            if kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            crate::stable_hash(shared.options.name.as_bytes()),
            tokenizer::mix(id)
        ),
        created: crate::unix_now(),
        model: gen.model,
        include_usage: gen.include_usage,
    };
    if gen.stream {
        stream_response(reply, rx)
    } else {
        whole_response(reply, rx).await
    }
}

/// The fields every response or chunk of one request shares.
struct Reply {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

fn text_of(tokens: &[u32]) -> Vec<&'static str> {
    tokens
        .iter()
        .map(|t| tokenizer::decode(*t).unwrap_or("?"))
        .collect()
}

fn usage(f: &Finished) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens as usize,
        "completion_tokens": f.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": f.cached_tokens},
    })
}

impl Reply {
    fn envelope(&self, object: &str, choices: Value, usage: Option<Value>) -> Value {
        Value::Object(crate::openai::envelope(
            &self.id,
            object,
            self.created,
            &self.model,
            choices,
            usage,
        ))
    }

    fn object(&self, text: &str, f: &Finished) -> Value {
        let finish = f.reason.as_str();
        match self.kind {
            Kind::Chat => {
                let choice = json!({
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null,
                                "tool_calls": [], "reasoning_content": null},
                    "logprobs": null,
                    "finish_reason": finish,
                    "stop_reason": null,
                });
                self.envelope("chat.completion", json!([choice]), Some(usage(f)))
            }
            Kind::Completion => {
                let choice = json!({"index": 0, "text": text, "logprobs": null,
                                    "finish_reason": finish, "stop_reason": null});
                self.envelope("text_completion", json!([choice]), Some(usage(f)))
            }
        }
    }

    fn chunk_object(&self) -> &'static str {
        match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        }
    }

    /// One streamed chunk. With `include_usage`, every chunk but the usage one has `usage: null`.
    fn chunk(&self, delta: Value, finish: Option<FinishReason>) -> Bytes {
        let finish = finish.map(FinishReason::as_str);
        let choice = match self.kind {
            Kind::Chat => json!({"index": 0, "delta": delta, "logprobs": null,
                                 "finish_reason": finish}),
            Kind::Completion => json!({"index": 0, "text": delta["content"].as_str().unwrap_or(""),
                                       "logprobs": null, "finish_reason": finish,
                                       "stop_reason": null}),
        };
        let usage = self.include_usage.then_some(Value::Null);
        body::sse_data(&self.envelope(self.chunk_object(), json!([choice]), usage))
    }

    /// The SSE frames for one engine update; `sent` counts tokens streamed so far.
    fn frames(&self, update: &Update, sent: &mut usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        if update.first.is_some() && self.kind == Kind::Chat {
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        let words = text_of(&update.tokens);
        for (i, word) in words.iter().enumerate() {
            let piece = if *sent == 0 {
                (*word).to_string()
            } else {
                format!(" {word}")
            };
            *sent += 1;
            let last = i + 1 == words.len();
            let finish = update.finished.filter(|_| last).map(|f| f.reason);
            out.push(self.chunk(json!({"content": piece}), finish));
        }
        if let Some(f) = &update.finished {
            if words.is_empty() {
                out.push(self.chunk(json!({}), Some(f.reason)));
            }
            if self.include_usage {
                out.push(body::sse_data(&self.envelope(
                    self.chunk_object(),
                    json!([]),
                    Some(usage(f)),
                )));
            }
            out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        out
    }
}

async fn whole_response(
    reply: Reply,
    mut rx: mpsc::UnboundedReceiver<Update>,
) -> Response<SimBody> {
    let mut tokens = Vec::new();
    while let Some(update) = rx.recv().await {
        tokens.extend(update.tokens);
        if let Some(f) = update.finished {
            let text = text_of(&tokens).join(" ");
            return ok_json(&reply.object(&text, &f));
        }
    }
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        "The engine dropped the request.",
    )
}

fn stream_response(reply: Reply, rx: mpsc::UnboundedReceiver<Update>) -> Response<SimBody> {
    struct State {
        reply: Reply,
        rx: mpsc::UnboundedReceiver<Update>,
        sent: usize,
        done: bool,
    }
    let state = State {
        reply,
        rx,
        sent: 0,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let update = st.rx.recv().await?;
        st.done = update.finished.is_some();
        let frames = st.reply.frames(&update, &mut st.sent);
        let data = Bytes::from(frames.concat());
        Some((Ok::<_, BoxError>(Frame::data(data)), st))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
