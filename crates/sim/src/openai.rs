//! An OpenAI-compatible chat server (the shape vLLM, SGLang, Ollama and OpenAI itself serve).
//!
//! Wire format per the OpenAI API reference, "Chat Completions" (create, the chat completion
//! object, the chat completion chunk object) and "Models" (list): JSON bodies, SSE streams of
//! `data: {chunk}\n\n` ending with `data: [DONE]\n\n`, and error bodies of the form
//! `{"error": {"message", "type", "param", "code"}}`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::SimServer;

pub type SimBody = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone, Debug)]
pub struct Options {
    /// Model reported when the request names none.
    pub default_model: String,
    /// Models listed by `GET /v1/models`.
    pub models: Vec<String>,
    /// Delay before the first streamed token.
    pub time_to_first_token: Duration,
    /// Delay between streamed tokens.
    pub inter_token_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_model: "sim-gpt".into(),
            models: vec!["sim-gpt".into(), "sim-gpt-mini".into()],
            time_to_first_token: Duration::ZERO,
            inter_token_delay: Duration::ZERO,
        }
    }
}

struct State {
    options: Options,
    next_id: AtomicU64,
}

/// Starts the simulator on `listener`.
pub fn serve(listener: TcpListener, options: Options) -> SimServer {
    let state = Arc::new(State {
        options,
        next_id: AtomicU64::new(1),
    });
    crate::spawn_http(listener, move |req| {
        let state = state.clone();
        Box::pin(async move { Ok(route(state, req).await) })
    })
}

/// Binds 127.0.0.1:0 and starts the simulator.
pub async fn spawn(options: Options) -> std::io::Result<SimServer> {
    Ok(serve(TcpListener::bind("127.0.0.1:0").await?, options))
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<SimBody> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::POST, p) if p.ends_with("/chat/completions") => chat(state, req).await,
        (&Method::GET, p) if p.ends_with("/models") => models(&state),
        _ => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &format!("Unknown request URL: {} {}", req.method(), path),
            None,
        ),
    }
}

fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<SimBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

/// An OpenAI error body.
pub fn error(
    status: StatusCode,
    kind: &str,
    message: &str,
    code: Option<&str>,
) -> Response<SimBody> {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    full(status, "application/json", body.to_string())
}

fn models(state: &State) -> Response<SimBody> {
    let data: Vec<Value> = state
        .options
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "switchyard-sim"}))
        .collect();
    full(
        StatusCode::OK,
        "application/json",
        json!({"object": "list", "data": data}).to_string(),
    )
}

/// The deterministic reply to a conversation: echoes the last user message.
pub fn reply_text(messages: &[Value]) -> String {
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default();
    format!("Hello! You said: {last_user}")
}

fn content_text(content: &Value) -> String {
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

/// A rough token count (words and punctuation), stable for assertions.
pub fn count_tokens(text: &str) -> u64 {
    text.split(|c: char| c.is_whitespace() || c.is_ascii_punctuation())
        .filter(|w| !w.is_empty())
        .count() as u64
}

async fn chat(state: Arc<State>, req: Request<Incoming>) -> Response<SimBody> {
    let bytes = match req.into_body().collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "could not read body",
                None,
            )
        }
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("We could not parse the JSON body of your request. ({e})"),
                None,
            )
        }
    };
    let Some(messages) = body["messages"].as_array() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Missing required parameter: 'messages'.",
            Some("missing_required_parameter"),
        );
    };
    let model = body["model"]
        .as_str()
        .unwrap_or(&state.options.default_model)
        .to_string();
    let text = reply_text(messages);
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| count_tokens(&content_text(&m["content"])) + 4)
        .sum();
    let completion_tokens = count_tokens(&text);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}
    });
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let id = format!("chatcmpl-sim{n:08}");
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    if body["stream"].as_bool() != Some(true) {
        let resp = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": usage
        });
        return full(StatusCode::OK, "application/json", resp.to_string());
    }

    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let chunk = move |delta: Value, finish: Value, usage: Value| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if include_usage {
            c["usage"] = usage;
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
        Value::Null,
    )];
    let words: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
    for w in words {
        events.push(chunk(json!({"content": w}), Value::Null, Value::Null));
    }
    events.push(chunk(json!({}), json!("stop"), Value::Null));
    if include_usage {
        // Per the reference: a final chunk with empty choices carries the usage.
        let last = chunk(json!({}), Value::Null, usage.clone());
        let mut v: Value = serde_json::from_slice(&last[6..last.len() - 2]).unwrap_or_default();
        v["choices"] = json!([]);
        events.push(Bytes::from(format!("data: {v}\n\n")));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));

    let ttft = state.options.time_to_first_token;
    let gap = state.options.inter_token_delay;
    let stream = futures_util::stream::unfold(
        (events.into_iter(), true),
        move |(mut it, first)| async move {
            let ev = it.next()?;
            let wait = if first { ttft } else { gap };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Some((Ok::<_, Infallible>(Frame::data(ev)), (it, false)))
        },
    );
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}
