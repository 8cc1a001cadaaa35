//! `guardrails` (route phase: request body, response headers, response body): regex guards on
//! the prompt and the completion of an LLM route, each with an action (`reject`, `mask`,
//! `audit`).
//!
//! - **Request**: every string of the JSON body except structural keys ([`SKIP`]): messages of
//!   every role, tool results and tool-call arguments, Responses `input`, Anthropic `system`
//!   and content blocks, whatever the dialect. A body that is not JSON is refused (a guard
//!   never silently skips). A reject answers 400 in the caller's dialect.
//! - **Response, whole JSON** (the `ai` adapter hands these over already read): masked or
//!   rejected in the response-headers phase, so a reject changes the status to 400.
//! - **Response, streamed**: OpenAI Chat chunks and Anthropic Messages events are rewritten as
//!   they stream ([`stream`]); other streamed dialects are refused at the request
//!   (`stream: true`) with `guardrail_unsupported`.
//! - **Remote guards** ([`remote`]: a webhook, a moderation endpoint) run on the prompt after
//!   the regex guards; then the route's prompt policy ([`prompt`]) adds its messages.

pub mod detectors;
pub mod prompt;
pub mod remote;
pub mod stream;
pub mod tools;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
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
];

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

    /// Masks every text of a JSON value in place; `Err(detector)` on a reject.
    pub fn walk(&self, v: &mut Value, changed: &mut bool) -> Result<(), usize> {
        match v {
            Value::String(s) => {
                let out = self.scanner.apply(s);
                self.log_hits(&out.hits);
                if let Some(d) = out.rejected {
                    self.log_hits(&[d]);
                    return Err(d);
                }
                if out.text != *s {
                    *s = out.text;
                    *changed = true;
                }
                Ok(())
            }
            Value::Array(items) => items.iter_mut().try_for_each(|i| self.walk(i, changed)),
            Value::Object(map) => map.iter_mut().try_for_each(|(k, i)| {
                if self.which == "response" && k == "logprobs" && !i.is_null() {
                    // Log-probabilities spell the text out token by token: dropped.
                    *i = Value::Null;
                    *changed = true;
                    return Ok(());
                }
                match SKIP.contains(&k.as_str()) {
                    true => Ok(()),
                    false => self.walk(i, changed),
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
    matches!(format, Format::OpenAiChat | Format::AnthropicMessages)
}

/// Marks a response whose JSON body the response-headers phase already guarded.
#[derive(Clone, Copy)]
struct Guarded;

pub struct Guardrails {
    request: Option<Arc<Side>>,
    response: Option<Arc<Side>>,
    /// Webhook and moderation guards on the prompt, in config order.
    remote: Vec<remote::RemoteGuard>,
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
        let mut remote = Vec::new();
        for guard in &g.request {
            if let Some(r) = remote::RemoteGuard::compile(guard).map_err(PolicyError::new)? {
                remote.push(r);
            }
        }
        Ok(Guardrails {
            request: Side::compile(&regex(&g.request), "request")?,
            response: Side::compile(&regex(&g.response), "response")?,
            remote,
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
        for guard in &self.remote {
            let texts = remote::texts(v);
            if texts.is_empty() {
                break;
            }
            let verdict = guard.check(&texts, &self.route, ctx.model.as_deref()).await;
            let hit = |action: &'static str| {
                telemetry::Metrics::global()
                    .guardrail_hits
                    .get_or_create(&telemetry::metrics::GuardrailLabels {
                        guard: guard.name.clone(),
                        detector: guard.kind(),
                        action,
                        side: "request",
                    })
                    .inc();
            };
            let audit = guard.action == config::GuardAction::Audit;
            match verdict {
                Err(e) if guard.fail_open => {
                    tracing::warn!(guard = %guard.name, error = %e, "guard unavailable; passed (failOpen)");
                }
                Err(e) => {
                    tracing::warn!(guard = %guard.name, error = %e, "guard unavailable; refused");
                    ctx.error = Some(UNAVAILABLE);
                    return Flow::Respond(error_response(
                        format,
                        StatusCode::SERVICE_UNAVAILABLE,
                        UNAVAILABLE,
                        &format!(
                            "{UNAVAILABLE}: guardrail {:?} could not be asked",
                            guard.name
                        ),
                    ));
                }
                Ok(remote::Verdict::Allow) => {}
                Ok(remote::Verdict::Reject(reason)) => {
                    tracing::info!(guard = %guard.name, detector = guard.kind(), reason = %reason, audit, "guardrail matched");
                    if audit {
                        hit("audit");
                        continue;
                    }
                    hit("reject");
                    ctx.error = Some(REJECTED);
                    ctx.trail.rec.request_body = None;
                    return Flow::Respond(error_response(
                        format,
                        StatusCode::BAD_REQUEST,
                        REJECTED,
                        &format!(
                            "{REJECTED}: the request was refused by guardrail {:?}",
                            guard.name
                        ),
                    ));
                }
                Ok(remote::Verdict::Mask(replacements)) => {
                    if audit {
                        hit("audit");
                        continue;
                    }
                    hit("mask");
                    remote::replace(v, &mut replacements.into_iter());
                    *changed = true;
                }
            }
        }
        Flow::Continue
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
    /// Labelled JSON but not JSON: the guards cannot read it.
    Unreadable,
}

impl Refusal {
    /// Status, code and message of the error sent instead.
    fn error(&self, side: &Side) -> (StatusCode, &'static str, String) {
        match self {
            Refusal::Rejected(d) => (StatusCode::BAD_REQUEST, REJECTED, side.rejection(*d)),
            Refusal::Unreadable => (
                StatusCode::BAD_GATEWAY,
                UNSUPPORTED,
                "guardrail_unsupported: the provider's answer is not the JSON it says it is"
                    .to_string(),
            ),
        }
    }
}

/// A whole JSON answer, guarded: the bytes to send (`None`: unchanged), or the refusal.
fn guard_json(side: &Side, bytes: &[u8]) -> Result<Option<Vec<u8>>, Refusal> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(bytes) else {
        return Err(Refusal::Unreadable);
    };
    let mut changed = false;
    side.walk(&mut v, &mut changed).map_err(Refusal::Rejected)?;
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

    fn response_headers(&self, ctx: &RequestCtx<'_>, resp: &mut Response<Body>) {
        let (Some(side), Some(format)) = (&self.response, ctx.dialect) else {
            return;
        };
        if !resp.status().is_success()
            || !content_type(resp.headers()).starts_with("application/json")
        {
            return;
        }
        // The `ai` adapter reads JSON answers whole: take the body now if it is all there, so
        // a refusal can still change the status.
        let inner = std::mem::replace(resp.body_mut(), body::empty());
        let bytes = match take_now(inner) {
            Ok(b) => b,
            Err(rest) => {
                *resp.body_mut() = rest;
                return;
            }
        };
        let slot = ctx.trail.llm.as_ref();
        let out = match guard_json(side, &bytes) {
            Ok(None) => bytes,
            Ok(Some(masked)) => {
                side.mask_record(slot, false);
                Bytes::from(masked)
            }
            Err(refusal) => {
                side.mask_record(slot, true);
                let (status, code, message) = refusal.error(side);
                *resp.status_mut() = status;
                Bytes::from(error_json(format, status.as_u16(), code, &message))
            }
        };
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        *resp.body_mut() = body::full(out);
        resp.extensions_mut().insert(Guarded);
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
        if ct.starts_with("application/json") {
            return Some(Box::new(WholeJson {
                side: side.clone(),
                format,
                limit: ctx.snapshot.limits.max_buffered_body_bytes,
                buf: Vec::new(),
                over: false,
                slot,
            }));
        }
        None
    }
}

/// The body's bytes if every frame is ready now; else the body, unchanged in content.
fn take_now(mut b: Body) -> Result<Bytes, Body> {
    use futures_util::FutureExt;
    let mut got = bytes::BytesMut::new();
    loop {
        match b.frame().now_or_never() {
            Some(None) => return Ok(got.freeze()),
            Some(Some(Ok(frame))) => {
                if let Ok(d) = frame.into_data() {
                    got.extend_from_slice(&d);
                }
            }
            Some(Some(Err(e))) => {
                let head =
                    futures_util::stream::iter([Ok(http_body::Frame::data(got.freeze())), Err(e)]);
                return Err(http_body_util::StreamBody::new(head).boxed_unsync());
            }
            None if got.is_empty() => return Err(b),
            None => {
                let head = futures_util::stream::once(async move {
                    Ok::<_, body::BoxError>(http_body::Frame::data(got.freeze()))
                });
                let rest = futures_util::StreamExt::map(b.into_data_stream(), |r| {
                    r.map(http_body::Frame::data)
                });
                let chained = futures_util::StreamExt::chain(head, rest);
                return Err(http_body_util::StreamBody::new(chained).boxed_unsync());
            }
        }
    }
}

/// A JSON answer that was not whole when its headers left: read to its end (up to the buffer
/// limit), then guarded. The status is already sent: a refusal (or an answer past the limit)
/// becomes the error body under the original status.
struct WholeJson {
    side: Arc<Side>,
    format: Format,
    limit: usize,
    buf: Vec<u8>,
    over: bool,
    slot: Option<Arc<LlmSlot>>,
}

impl ChunkFilter for WholeJson {
    fn chunk(&mut self, data: Bytes) -> Bytes {
        if !self.over {
            self.buf.extend_from_slice(&data);
            if self.buf.len() > self.limit {
                self.over = true;
                self.buf = Vec::new();
            }
        }
        Bytes::new()
    }

    fn finish(&mut self) -> Bytes {
        if self.over {
            self.side.mask_record(self.slot.as_ref(), true);
            return Bytes::from(error_json(
                self.format,
                502,
                UNSUPPORTED,
                "guardrail_unsupported: the response is larger than the guards may buffer (config.limits.maxBufferedBodyBytes)",
            ));
        }
        let buf = std::mem::take(&mut self.buf);
        match guard_json(&self.side, &buf) {
            Ok(None) => Bytes::from(buf),
            Ok(Some(masked)) => {
                self.side.mask_record(self.slot.as_ref(), false);
                Bytes::from(masked)
            }
            Err(refusal) => {
                self.side.mask_record(self.slot.as_ref(), true);
                let (status, code, message) = refusal.error(&self.side);
                Bytes::from(error_json(self.format, status.as_u16(), code, &message))
            }
        }
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
