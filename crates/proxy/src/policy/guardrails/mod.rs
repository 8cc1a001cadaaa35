//! `guardrails` (route phases: request body, upstream response, response body): guards on
//! the prompt and the completion of an LLM route, each with an action (`reject`, `mask`,
//! `audit`).
//!
//! - **Request**: every string of the JSON body except structural keys ([`SKIP`]): messages of
//!   every role, tool results and tool-call arguments, Responses `input`, Anthropic `system`
//!   and content blocks, whatever the dialect. A body that is not JSON is refused (a guard
//!   never silently skips). A reject answers 400 in the caller's dialect.
//! - **Response, whole JSON** (the `ai` adapter hands these over already read): guarded (regex
//!   guards, then remote ones) before the head leaves, so a refusal changes the status (400,
//!   or 503 when a remote guard fails closed) and the recorded error code. An answer that is
//!   neither JSON nor an event stream is refused (502 `guardrail_unsupported`).
//! - **Response, streamed**: OpenAI Chat chunks, Anthropic Messages events and Responses
//!   events, native or translated from Gemini and Bedrock, are rewritten as they stream in the
//!   caller's format ([`stream`]); remote guards on a stream hold it back per window
//!   ([`window`]).
//! - **Remote guards** ([`remote`]: a webhook, a moderation endpoint) run after the regex
//!   guards; on the prompt, then the route's prompt policy ([`prompt`]) adds its messages.
//! - **JSON texts** ([`JSON_TEXT`], tool-call arguments) are masked so that they stay JSON.

pub mod detectors;
pub mod prompt;
pub mod remote;
pub mod stream;
pub mod tools;
pub mod window;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use llm::Format;
use serde_json::Value;

use super::PolicyError;
use crate::body::{self, Body};
use crate::context::RequestCtx;
use crate::observe::LlmSlot;
use crate::pipeline::{ChunkFilter, Flow, Phase};
use detectors::Scanner;

/// Keys whose string values are structure, not text: never scanned nor masked. (`data` and
/// `url` carry base64 images and documents; `parameters`, `input_schema` and `schema` are
/// tool and output JSON schemas.)
pub const SKIP: &[&str] = &[
    "model",
    "role",
    "type",
    "id",
    "object",
    "name",
    "tool_call_id",
    "tool_use_id",
    "call_id",
    "media_type",
    "data",
    "url",
    "signature",
    "encrypted_content",
    "finish_reason",
    "stop_reason",
    "system_fingerprint",
    "service_tier",
    "status",
    "parameters",
    "input_schema",
    "schema",
    // MCP resource contents: the address, the type and base64 bytes.
    "uri",
    "mimeType",
    "blob",
];

/// Keys whose string values are JSON text (tool-call arguments): masked so they stay JSON.
pub const JSON_TEXT: &[&str] = &["arguments", "partial_json"];

/// The stable code of a guard's refusal.
pub const REJECTED: &str = "guardrail_rejected";
/// The stable code when a guard cannot run on this call (a streamed dialect not covered).
pub const UNSUPPORTED: &str = "guardrail_unsupported";

/// The guards of one side, compiled together.
pub struct Side {
    names: Vec<String>,
    pub scanner: Scanner,
    which: &'static str,
}

impl Side {
    fn compile(
        guards: &[config::Guard],
        which: &'static str,
    ) -> Result<Option<Arc<Self>>, PolicyError> {
        if guards.is_empty() {
            return Ok(None);
        }
        let scanner = Scanner::compile(guards).map_err(PolicyError::new)?;
        Ok(Some(Arc::new(Side {
            names: guards.iter().map(|g| g.name.clone()).collect(),
            scanner,
            which,
        })))
    }

    /// The guard a detector belongs to.
    pub fn guard_name(&self, detector: usize) -> &str {
        &self.names[self.scanner.detectors[detector].guard]
    }

    /// One log line and one `switchyard_guardrail_hits_total` count per hit: guard,
    /// detector, action, side; never the text.
    pub fn log_hits(&self, hits: &[usize]) {
        for &d in hits {
            let det = &self.scanner.detectors[d];
            let action = match det.action {
                config::GuardAction::Reject => "reject",
                config::GuardAction::Mask => "mask",
                config::GuardAction::Audit => "audit",
            };
            telemetry::Metrics::global()
                .guardrail_hits
                .get_or_create(&telemetry::metrics::GuardrailLabels {
                    guard: self.guard_name(d).to_string(),
                    detector: det.kind,
                    action,
                    side: self.which,
                })
                .inc();
            tracing::info!(
                guard = %self.guard_name(d),
                detector = det.kind,
                action,
                side = self.which,
                "guardrail matched"
            );
        }
    }

    /// Masks one text in place (`json`: the text is JSON, e.g. tool-call arguments, and
    /// stays valid JSON); `Err(detector)` on a reject.
    fn text(&self, s: &mut String, json: bool, log: bool, changed: &mut bool) -> Result<(), usize> {
        let out = match json {
            true => self.scanner.apply_json(s),
            false => self.scanner.apply(s),
        };
        if log {
            self.log_hits(&out.hits);
        }
        if let Some(d) = out.rejected {
            if log {
                self.log_hits(&[d]);
            }
            return Err(d);
        }
        if out.text != *s {
            *s = out.text;
            *changed = true;
        }
        Ok(())
    }

    /// Masks every text of a JSON value in place; `Err(detector)` on a reject.
    pub fn walk(&self, v: &mut Value, changed: &mut bool) -> Result<(), usize> {
        self.walk_with(v, true, changed)
    }

    /// [`Side::walk`] without logging or counting hits (texts already counted).
    pub fn walk_quiet(&self, v: &mut Value, changed: &mut bool) -> Result<(), usize> {
        self.walk_with(v, false, changed)
    }

    fn walk_with(&self, v: &mut Value, log: bool, changed: &mut bool) -> Result<(), usize> {
        match v {
            Value::String(s) => self.text(s, false, log, changed),
            Value::Array(items) => items
                .iter_mut()
                .try_for_each(|i| self.walk_with(i, log, changed)),
            Value::Object(map) => map.iter_mut().try_for_each(|(k, i)| {
                if self.which == "response" && k == "logprobs" && !i.is_null() {
                    // Log-probabilities spell the text out token by token: dropped (an empty
                    // list where the dialect has a list, Responses').
                    *i = match i {
                        Value::Array(_) => Value::Array(Vec::new()),
                        _ => Value::Null,
                    };
                    *changed = true;
                    return Ok(());
                }
                match (SKIP.contains(&k.as_str()), i) {
                    (true, _) => Ok(()),
                    (false, Value::String(s)) if JSON_TEXT.contains(&k.as_str()) => {
                        self.text(s, true, log, changed)
                    }
                    (false, i) => self.walk_with(i, log, changed),
                }
            }),
            _ => Ok(()),
        }
    }

    /// The message of a refusal: the guard's name and the stable code, never the text.
    pub fn rejection(&self, detector: usize) -> String {
        format!(
            "{REJECTED}: the {} was refused by guardrail {:?}",
            self.which,
            self.guard_name(detector)
        )
    }

    /// The LLM telemetry record keeps the completion as the caller got it.
    fn mask_record(&self, slot: Option<&Arc<LlmSlot>>, rejected: bool) {
        if let Some(slot) = slot {
            slot.update(|r| {
                if rejected {
                    r.completion.clear();
                    return;
                }
                for c in &mut r.completion {
                    let out = self.scanner.apply(c);
                    *c = match out.rejected {
                        Some(_) => String::new(),
                        None => out.text,
                    };
                }
            });
        }
    }
}

/// An error body in the caller's dialect with a stable code (OpenAI's `code` field; the
/// message starts with the code in every dialect).
pub fn error_json(format: Format, status: u16, code: &str, message: &str) -> Vec<u8> {
    let raw = llm::error_body(format, status, message);
    match serde_json::from_slice::<Value>(&raw) {
        Ok(mut v) => {
            if let Some(e) = v.get_mut("error").and_then(Value::as_object_mut) {
                if e.contains_key("code") {
                    e.insert("code".into(), Value::String(code.into()));
                }
            }
            serde_json::to_vec(&v).unwrap_or(raw)
        }
        Err(_) => raw,
    }
}

fn error_response(format: Format, status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = error_json(format, status.as_u16(), code, message);
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn content_type(h: &http::HeaderMap) -> &str {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_start()
}

/// Streamed dialects whose events the response guards rewrite.
pub fn streams_covered(format: Format) -> bool {
    matches!(
        format,
        Format::OpenAiChat | Format::AnthropicMessages | Format::OpenAiResponses
    )
}

/// Marks a response whose JSON body the response-headers phase already guarded.
#[derive(Clone, Copy)]
struct Guarded;

pub struct Guardrails {
    request: Option<Arc<Side>>,
    response: Option<Arc<Side>>,
    /// Webhook and moderation guards on the prompt, in config order.
    remote: Vec<remote::RemoteGuard>,
    /// Webhook and moderation guards on the answer, in config order.
    remote_response: Arc<[remote::RemoteGuard]>,
    prompt: Option<config::PromptPolicy>,
    /// The route's name, sent to webhooks.
    route: Arc<str>,
}

/// The stable code when a remote guard cannot be asked and the guard fails closed.
pub const UNAVAILABLE: &str = "guardrail_unavailable";

impl Guardrails {
    pub(crate) fn compile(
        g: &config::Guardrails,
        env: &crate::governance::PhaseEnv,
    ) -> Result<Self, PolicyError> {
        let regex = |guards: &[config::Guard]| -> Vec<config::Guard> {
            guards
                .iter()
                .filter(|g| g.regex.is_some())
                .cloned()
                .collect()
        };
        let remote_of = |guards: &[config::Guard]| -> Result<Vec<_>, PolicyError> {
            let mut remote = Vec::new();
            for guard in guards {
                if let Some(r) = remote::RemoteGuard::compile(guard).map_err(PolicyError::new)? {
                    remote.push(r);
                }
            }
            Ok(remote)
        };
        let remote = remote_of(&g.request)?;
        let remote_response = remote_of(&g.response)?.into();
        Ok(Guardrails {
            request: Side::compile(&regex(&g.request), "request")?,
            response: Side::compile(&regex(&g.response), "response")?,
            remote,
            remote_response,
            prompt: g.prompt.clone(),
            route: env.route.clone(),
        })
    }

    /// The regex guards on the prompt, and whether a stream can be guarded: the parsed
    /// (possibly masked) body and whether it changed, or the answer that ends the request.
    fn guard_prompt(
        &self,
        ctx: &mut RequestCtx<'_>,
        body: &Bytes,
    ) -> Result<Option<(Value, bool)>, Box<Flow>> {
        let format = ctx.dialect.unwrap_or(Format::OpenAiChat);
        if body.is_empty() {
            return Ok(None);
        }
        let needs_json = self.request.is_some() || !self.remote.is_empty();
        let mut v = match serde_json::from_slice::<Value>(body) {
            Ok(v) => v,
            Err(_) if !needs_json => return Ok(None),
            Err(_) => {
                ctx.error = Some(UNSUPPORTED);
                return Err(Box::new(Flow::Respond(error_response(
                    format,
                    StatusCode::BAD_REQUEST,
                    UNSUPPORTED,
                    "guardrail_unsupported: the request guards read JSON bodies and this one is not JSON",
                ))));
            }
        };
        let mut changed = false;
        if let Some(side) = &self.request {
            if let Err(d) = side.walk(&mut v, &mut changed) {
                ctx.error = Some(REJECTED);
                // Telemetry keeps no copy of a refused prompt.
                ctx.trail.rec.request_body = None;
                return Err(Box::new(Flow::Respond(error_response(
                    format,
                    StatusCode::BAD_REQUEST,
                    REJECTED,
                    &side.rejection(d),
                ))));
            }
        }
        if self.response.is_some()
            && v.get("stream") == Some(&Value::Bool(true))
            && !streams_covered(format)
        {
            ctx.error = Some(UNSUPPORTED);
            return Err(Box::new(Flow::Respond(error_response(
                format,
                StatusCode::BAD_REQUEST,
                UNSUPPORTED,
                &format!(
                    "guardrail_unsupported: response guards cannot run on streamed {format:?} \
                     responses; send the request without `stream`"
                ),
            ))));
        }
        Ok(Some((v, changed)))
    }

    /// Asks each remote guard in turn; a mask answer's texts replace the prompt's.
    async fn ask_remote(
        &self,
        ctx: &mut RequestCtx<'_>,
        v: &mut Value,
        changed: &mut bool,
    ) -> Flow {
        let format = ctx.dialect.unwrap_or(Format::OpenAiChat);
        let mut texts = remote::texts(v);
        let mut masked = false;
        let decision = remote::ask_all(
            &self.remote,
            &mut texts,
            &self.route,
            ctx.model.as_deref(),
            "request",
            &mut masked,
        )
        .await;
        match decision {
            remote::Decision::Pass => {
                if masked {
                    remote::replace(v, &mut texts.into_iter().map(|(_, t)| t));
                    *changed = true;
                }
                Flow::Continue
            }
            remote::Decision::Unavailable(name) => {
                ctx.error = Some(UNAVAILABLE);
                Flow::Respond(error_response(
                    format,
                    StatusCode::SERVICE_UNAVAILABLE,
                    UNAVAILABLE,
                    &format!("{UNAVAILABLE}: guardrail {name:?} could not be asked"),
                ))
            }
            remote::Decision::Reject(name) => {
                ctx.error = Some(REJECTED);
                ctx.trail.rec.request_body = None;
                Flow::Respond(error_response(
                    format,
                    StatusCode::BAD_REQUEST,
                    REJECTED,
                    &format!("{REJECTED}: the request was refused by guardrail {name:?}"),
                ))
            }
        }
    }

    /// The prompt policy, then the body as it will be sent.
    fn finish(&self, ctx: &mut RequestCtx<'_>, mut v: Value, mut changed: bool, body: &mut Bytes) {
        if let (Some(p), Some(format)) = (&self.prompt, ctx.dialect) {
            changed |= prompt::enrich(&mut v, format, p);
        }
        if changed {
            if let Ok(out) = serde_json::to_vec(&v) {
                *body = Bytes::from(out);
                if ctx.trail.rec.request_body.is_some() {
                    ctx.trail.rec.request_body = Some(body.clone());
                }
            }
        }
    }
}

/// Why a whole answer is not sent.
enum Refusal {
    /// A `reject` guard's detector matched.
    Rejected(usize),
    /// A remote guard refused (its name).
    Remote(String),
    /// A remote guard could not be asked and fails closed (its name).
    Unavailable(String),
    /// Larger than the guards may buffer.
    TooLarge,
    /// Labelled JSON but not JSON: the guards cannot read it.
    Unreadable,
}

impl Refusal {
    /// Status, code and message of the error sent instead.
    fn error(&self, side: Option<&Side>) -> (StatusCode, &'static str, String) {
        match self {
            Refusal::Rejected(d) => (
                StatusCode::BAD_REQUEST,
                REJECTED,
                side.map(|s| s.rejection(*d)).unwrap_or_default(),
            ),
            Refusal::Remote(name) => (
                StatusCode::BAD_REQUEST,
                REJECTED,
                format!("{REJECTED}: the response was refused by guardrail {name:?}"),
            ),
            Refusal::Unavailable(name) => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                format!("{UNAVAILABLE}: guardrail {name:?} could not be asked"),
            ),
            Refusal::TooLarge => (
                StatusCode::BAD_GATEWAY,
                UNSUPPORTED,
                "guardrail_unsupported: the response is larger than the guards may buffer \
                 (config.limits.maxBufferedBodyBytes)"
                    .to_string(),
            ),
            Refusal::Unreadable => (
                StatusCode::BAD_GATEWAY,
                UNSUPPORTED,
                "guardrail_unsupported: the provider's answer is neither JSON nor an event \
                 stream, which the response guards cannot read"
                    .to_string(),
            ),
        }
    }
}

/// A whole JSON answer, guarded by the regex guards then the remote ones: the bytes to send
/// (`None`: unchanged), or the refusal.
async fn guard_json(
    side: Option<&Side>,
    remote: &[remote::RemoteGuard],
    ask: (&str, Option<&str>),
    slot: Option<&Arc<LlmSlot>>,
    bytes: &[u8],
) -> Result<Option<Vec<u8>>, Refusal> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(bytes) else {
        return Err(Refusal::Unreadable);
    };
    let mut changed = false;
    if let Some(side) = side {
        side.walk(&mut v, &mut changed).map_err(Refusal::Rejected)?;
        if changed {
            side.mask_record(slot, false);
        }
    }
    if !remote.is_empty() {
        let mut texts = remote::texts(&v);
        let mut masked = false;
        match remote::ask_all(remote, &mut texts, ask.0, ask.1, "response", &mut masked).await {
            remote::Decision::Pass => {}
            remote::Decision::Reject(name) => return Err(Refusal::Remote(name)),
            remote::Decision::Unavailable(name) => return Err(Refusal::Unavailable(name)),
        }
        if masked {
            let before = remote::texts(&v);
            remote::replace(&mut v, &mut texts.iter().map(|(_, t)| t.clone()));
            changed = true;
            // The record keeps the completion as the caller gets it.
            if let Some(slot) = slot {
                slot.update(|r| {
                    for c in &mut r.completion {
                        if let Some(i) = before.iter().position(|(_, t)| t == c) {
                            *c = texts[i].1.clone();
                        }
                    }
                });
            }
        }
    }
    Ok(changed.then(|| serde_json::to_vec(&v).unwrap_or_else(|_| bytes.to_vec())))
}

impl Phase for Guardrails {
    fn reads_request_body(&self) -> bool {
        true
    }

    fn request_body(&self, ctx: &mut RequestCtx<'_>, _req: &Parts, body: &mut Bytes) -> Flow {
        if !self.remote.is_empty() {
            return Flow::Wait;
        }
        match self.guard_prompt(ctx, body) {
            Err(flow) => *flow,
            Ok(None) => Flow::Continue,
            Ok(Some((v, changed))) => {
                self.finish(ctx, v, changed, body);
                Flow::Continue
            }
        }
    }

    fn request_body_async<'a>(
        &'a self,
        ctx: &'a mut RequestCtx<'_>,
        req: &'a Parts,
        body: &'a mut Bytes,
    ) -> crate::pipeline::PhaseFuture<'a> {
        Box::pin(async move {
            crate::policy::read_model(ctx, req, body);
            let (mut v, mut changed) = match self.guard_prompt(ctx, body) {
                Err(flow) => return *flow,
                Ok(None) => return Flow::Continue,
                Ok(Some(found)) => found,
            };
            if let Flow::Respond(r) = self.ask_remote(ctx, &mut v, &mut changed).await {
                return Flow::Respond(r);
            }
            self.finish(ctx, v, changed, body);
            Flow::Continue
        })
    }

    fn awaits_response(&self) -> bool {
        self.response.is_some() || !self.remote_response.is_empty()
    }

    /// A whole JSON answer is read (the `ai` adapter hands it over read already) and guarded
    /// before its head leaves, so a refusal changes the status and the recorded error code.
    /// A stream with remote guards gets its window ([`window`]); with regex guards only, it is
    /// rewritten by the response-body filter.
    fn upstream_response<'a>(
        &'a self,
        ctx: &'a mut RequestCtx<'_>,
        resp: &'a mut Response<Body>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let Some(format) = ctx.dialect else {
                return;
            };
            if !resp.status().is_success() {
                return;
            }
            let ct = content_type(resp.headers());
            if ct.starts_with("text/event-stream") {
                if self.remote_response.is_empty() {
                    return;
                }
                let inner = std::mem::replace(resp.body_mut(), body::empty());
                let regex = self
                    .response
                    .as_ref()
                    .map(|side| stream::SseGuard::new(side.clone(), format, ctx.trail.llm.clone()));
                let w = window::Window::new(
                    inner,
                    regex,
                    self.remote_response.clone(),
                    format,
                    self.route.clone(),
                    ctx.model.clone().map(|m| m.to_string()),
                    ctx.trail.llm.clone(),
                );
                *resp.body_mut() = w.into_body();
                resp.headers_mut().remove(header::CONTENT_LENGTH);
                resp.extensions_mut().insert(Guarded);
                return;
            }
            let json = ct.starts_with("application/json");
            let inner = std::mem::replace(resp.body_mut(), body::empty());
            let limit = ctx.snapshot.limits.max_buffered_body_bytes;
            let slot = ctx.trail.llm.clone();
            let result = match body::read_limited(inner, limit).await {
                // An answer the guards cannot read is not sent unread (an empty one is fine).
                Ok(bytes) if !json && !bytes.iter().all(u8::is_ascii_whitespace) => {
                    Err(Refusal::Unreadable)
                }
                Ok(bytes) => guard_json(
                    self.response.as_deref(),
                    &self.remote_response,
                    (&self.route, ctx.model.as_deref()),
                    slot.as_ref(),
                    &bytes,
                )
                .await
                .map(|masked| masked.map(Bytes::from).unwrap_or(bytes)),
                Err(body::ReadError::TooLarge) => Err(Refusal::TooLarge),
                Err(body::ReadError::Body(e)) => {
                    tracing::debug!(error = %e, "reading the answer to guard it failed");
                    Err(Refusal::Unreadable)
                }
            };
            let out = match result {
                Ok(bytes) => bytes,
                Err(refusal) => {
                    if let Some(side) = &self.response {
                        side.mask_record(slot.as_ref(), true);
                    } else if let Some(slot) = &slot {
                        slot.update(|r| r.completion.clear());
                    }
                    let (status, code, message) = refusal.error(self.response.as_deref());
                    *resp.status_mut() = status;
                    ctx.error = Some(code);
                    Bytes::from(error_json(format, status.as_u16(), code, &message))
                }
            };
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
            *resp.body_mut() = body::full(out);
            resp.extensions_mut().insert(Guarded);
        })
    }

    fn filters_response_body(&self) -> bool {
        self.response.is_some()
    }

    fn response_body(
        &self,
        ctx: &RequestCtx<'_>,
        head: &Response<Body>,
    ) -> Option<Box<dyn ChunkFilter>> {
        let side = self.response.as_ref()?;
        let format = ctx.dialect?;
        if head.extensions().get::<Guarded>().is_some() || !head.status().is_success() {
            return None;
        }
        let ct = content_type(head.headers());
        let slot = ctx.trail.llm.clone();
        if ct.starts_with("text/event-stream") {
            return Some(Box::new(stream::SseGuard::new(side.clone(), format, slot)));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_refusal_carries_the_code_and_the_guard_never_the_text() {
        let v: Value = serde_json::from_slice(&error_json(
            Format::OpenAiChat,
            400,
            REJECTED,
            "guardrail_rejected: x",
        ))
        .unwrap();
        assert_eq!(v["error"]["code"], REJECTED);
        let v: Value = serde_json::from_slice(&error_json(
            Format::AnthropicMessages,
            400,
            REJECTED,
            "guardrail_rejected: x",
        ))
        .unwrap();
        assert_eq!(v["type"], "error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(REJECTED));
    }

    #[test]
    fn walk_masks_texts_and_skips_structure() {
        let g: config::Guard = serde_json::from_value(serde_json::json!({
            "name": "pii", "regex": {"builtins": ["email"]}, "action": "mask"
        }))
        .unwrap();
        let side = Side::compile(&[g], "request").unwrap().unwrap();
        let mut v = serde_json::json!({
            "model": "a@example.com",
            "system": [{"type": "text", "text": "admin is a@example.com"}],
            "messages": [
                {"role": "user", "content": "mail b@example.com"},
                {"role": "assistant", "tool_calls": [{"id": "c@example.com", "function": {"name": "f", "arguments": "{\"to\":\"c@example.com\"}"}}]},
                {"role": "tool", "tool_call_id": "1", "content": [{"type": "text", "text": "d@example.com"}]}
            ],
            "input": "e@example.com"
        });
        let mut changed = false;
        side.walk(&mut v, &mut changed).unwrap();
        assert!(changed);
        let s = v.to_string();
        assert_eq!(s.matches("@example.com").count(), 2, "{s}");
        assert_eq!(v["model"], "a@example.com");
        assert_eq!(v["messages"][1]["tool_calls"][0]["id"], "c@example.com");
        assert_eq!(
            v["messages"][1]["tool_calls"][0]["function"]["arguments"],
            "{\"to\":\"<EMAIL>\"}"
        );
        assert_eq!(v["input"], "<EMAIL>");
    }

    #[test]
    fn a_whole_answer_is_masked_and_its_logprobs_dropped() {
        let g: config::Guard = serde_json::from_value(serde_json::json!({
            "name": "pii", "regex": {"builtins": ["email"]}, "action": "mask"
        }))
        .unwrap();
        let side = Side::compile(&[g], "response").unwrap().unwrap();
        let mut v = serde_json::json!({"id": "x", "object": "chat.completion", "choices": [{
            "index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "at a@example.com", "reasoning_content": "b@example.com?"},
            "logprobs": {"content": [{"token": "a@example.com", "logprob": -0.1}]}}]});
        let mut changed = false;
        side.walk(&mut v, &mut changed).unwrap();
        assert!(changed);
        assert_eq!(v["choices"][0]["message"]["content"], "at <EMAIL>");
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "<EMAIL>?");
        assert!(v["choices"][0]["logprobs"].is_null());
        assert!(!v.to_string().contains("example.com"));
    }
}
