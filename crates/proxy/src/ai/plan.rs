//! Deciding one LLM call before anything is sent: answer locally, or what body, path and
//! credentials go to the provider and how its response is to be shaped.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Response, StatusCode};
use llm::Format;
use serde_json::Value;

use config::AiRouteType;

use super::{github, AiCall, AiTarget, Credentials, Operation, CLIENT_CREDENTIALS};
use std::sync::Arc;

use telemetry::LlmRecord;

use crate::body::{self, Body};
use crate::error::ProxyError;
use crate::observe::LlmSlot;

/// What the handler must do with one call, decided before anything is sent.
pub enum Plan {
    /// Answered by the gateway itself.
    Local(Response<Body>),
    Forward(Forward),
}

pub struct Forward {
    pub body: Body,
    /// The body's bytes when the gateway holds them (SigV4 signs the payload hash).
    pub payload: Option<Bytes>,
    /// The body was re-encoded by the gateway (length and encoding headers must go).
    pub rewrote_body: bool,
    /// Path to send instead of the client's (after `urlRewrite`).
    pub path: Option<PathAndQuery>,
    pub shape: Shape,
}

/// How the response is treated.
pub struct Shape {
    pub ingress: Format,
    pub egress: Format,
    /// Read the response for usage (and translate it when the dialects differ).
    pub inspect: bool,
    pub include_usage: bool,
    /// The provider's `gen_ai.provider.name`.
    pub provider: &'static str,
    /// The model sent upstream (reported where the provider's response names none).
    pub upstream_model: Option<String>,
    pub max_buffered: usize,
    /// Where the call's usage is recorded for telemetry.
    pub llm: Arc<LlmSlot>,
}

pub fn plan(
    ai: &AiTarget,
    call: AiCall,
    parts: &Parts,
    body: Body,
    raw: Option<&Bytes>,
    slot: &Arc<LlmSlot>,
) -> Result<Plan, ProxyError> {
    let egress = ai.provider.egress();
    let mut shape = Shape {
        ingress: call.ingress,
        egress,
        inspect: false,
        include_usage: false,
        provider: ai.provider.name(),
        upstream_model: None,
        max_buffered: ai.max_buffered,
        llm: slot.clone(),
    };
    let same_path = |op| match (&ai.path_override, ai.provider.keeps_client_path()) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => None,
        (None, false) => PathAndQuery::try_from(ai.provider_path(op)).ok(),
    };
    let needs_raw = || {
        raw.ok_or_else(|| {
            ProxyError::payload_too_large(ai.max_buffered).with_message(format!(
                "request body exceeds the {}-byte limit for LLM requests",
                ai.max_buffered
            ))
        })
    };
    match call.route {
        AiRouteType::Models => Ok(Plan::Local(models_response(ai, parts))),
        AiRouteType::AnthropicTokenCount if !ai.provider.counts_tokens() => {
            let prepared = llm::prepare_request(
                Format::AnthropicMessages,
                Format::AnthropicMessages,
                needs_raw()?,
                &ai.request_options(),
            )
            .map_err(llm_error)?;
            let n = llm::estimate_input_tokens(&prepared.prompt);
            Ok(Plan::Local(json_response(
                StatusCode::OK,
                serde_json::json!({ "input_tokens": n }).to_string(),
            )))
        }
        AiRouteType::Completions | AiRouteType::Messages | AiRouteType::Responses => {
            let raw = needs_raw()?;
            // OpenAI-style providers have the Responses API themselves: it goes as sent
            // (and stateful fields reach the provider that keeps the state).
            let egress = if call.ingress == Format::OpenAiResponses && egress == Format::OpenAiChat
            {
                Format::OpenAiResponses
            } else {
                egress
            };
            shape.egress = egress;
            let mut prepared =
                llm::prepare_request(call.ingress, egress, raw, &ai.request_options())
                    .map_err(llm_error)?;
            let translated = call.ingress != egress;
            shape.inspect = true;
            shape.include_usage = translated && wants_usage(call.ingress, raw);
            start_record(slot, ai, "chat", &mut prepared);
            shape.upstream_model = prepared.upstream_model.clone();
            let path = if translated {
                match &ai.path_override {
                    Some(p) => Some(p.clone()),
                    None => Some(
                        PathAndQuery::try_from(
                            ai.chat_path(prepared.upstream_model.as_deref(), prepared.stream)?,
                        )
                        .map_err(|_| ProxyError::bad_request("invalid provider path"))?,
                    ),
                }
            } else if call.ingress == Format::OpenAiResponses {
                same_path(Operation::Responses)
            } else {
                same_path(Operation::Chat)
            };
            let payload = Bytes::from(prepared.body);
            Ok(Plan::Forward(Forward {
                body: body::full(payload.clone()),
                payload: Some(payload),
                rewrote_body: true,
                path,
                shape,
            }))
        }
        AiRouteType::Embeddings => {
            if !ai.provider.serves_embeddings() {
                return Err(ProxyError::not_implemented(format!(
                    "{} has no OpenAI-compatible embeddings API",
                    ai.provider.name(),
                )));
            }
            let raw = needs_raw()?;
            let (rewritten, requested) = rewrite_model(ai, raw)?;
            *slot.record.lock().unwrap_or_else(|p| p.into_inner()) = Some(LlmRecord {
                provider: ai.provider.name(),
                operation: "embeddings",
                request_model: requested,
                ..Default::default()
            });
            shape.egress = Format::OpenAiChat;
            let payload = Bytes::from(rewritten);
            Ok(Plan::Forward(Forward {
                body: body::full(payload.clone()),
                payload: Some(payload),
                rewrote_body: true,
                path: same_path(Operation::Embeddings),
                shape,
            }))
        }
        AiRouteType::Detect => {
            shape.inspect = true;
            *slot.record.lock().unwrap_or_else(|p| p.into_inner()) = Some(LlmRecord {
                provider: ai.provider.name(),
                operation: "chat",
                ..Default::default()
            });
            Ok(Plan::Forward(Forward {
                body,
                payload: raw.cloned(),
                rewrote_body: false,
                path: ai.path_override.clone(),
                shape,
            }))
        }
        AiRouteType::AnthropicTokenCount => {
            // The provider counts for the model the call would use: the alias or forced model
            // is resolved (only the model: count_tokens takes no generation parameters, so
            // `defaults`/`overrides` are not applied).
            let raw = needs_raw()?;
            let payload = Bytes::from(resolve_model_only(ai, raw)?);
            Ok(Plan::Forward(Forward {
                body: body::full(payload.clone()),
                payload: Some(payload),
                rewrote_body: true,
                path: ai.path_override.clone(),
                shape,
            }))
        }
        AiRouteType::Passthrough => Ok(Plan::Forward(Forward {
            body,
            payload: raw.cloned(),
            rewrote_body: false,
            path: ai.path_override.clone(),
            shape,
        })),
    }
}

/// The request side of the call's telemetry record.
/// The prompt and parameters move into the record: the request needs only the body after this.
fn start_record(
    slot: &LlmSlot,
    ai: &AiTarget,
    operation: &'static str,
    p: &mut llm::PreparedRequest,
) {
    let record = LlmRecord {
        provider: ai.provider.name(),
        operation,
        request_model: p.request_model.take(),
        streaming: p.stream,
        // Kept for telemetry until the call ends: each text capped (`maxRecordedTextBytes`).
        prompt: std::mem::take(&mut p.prompt)
            .into_iter()
            .map(|mut m| {
                llm::cap_text(&mut m.content, llm::recorded_text_cap());
                (m.role, m.content)
            })
            .collect(),
        params: std::mem::take(&mut p.params),
        ..Default::default()
    };
    *slot.record.lock().unwrap_or_else(|p| p.into_inner()) = Some(record);
}

/// Request headers for the provider: its credential instead of the client's, and the
/// headers its API requires.
pub fn provider_headers(ai: &AiTarget, headers: &mut HeaderMap, fwd: &Forward) {
    if !matches!(ai.credentials, Credentials::None) {
        for h in &CLIENT_CREDENTIALS {
            headers.remove(h);
        }
    }
    if let Credentials::Header(name, value) = &ai.credentials {
        headers.insert(name.clone(), value.clone());
    }
    ai.provider.required_headers(headers);
    if fwd.rewrote_body {
        // The body was re-encoded; hyper sets the new length.
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::CONTENT_ENCODING);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if fwd.shape.inspect {
        // The gateway reads the response, so it asks for it uncompressed.
        headers.remove(header::ACCEPT_ENCODING);
    }
}

/// Credentials that depend on the finished request: a fresh OAuth token, or a SigV4 signature.
pub async fn authorize(
    ai: &AiTarget,
    req: &mut http::Request<Body>,
    payload: Option<&Bytes>,
) -> Result<(), ProxyError> {
    match &ai.credentials {
        Credentials::Google(source) => {
            let value = source.authorization().await.map_err(|e| {
                ProxyError::upstream_unavailable(format!(
                    "cannot obtain a Vertex access token: {e}"
                ))
            })?;
            req.headers_mut().insert(header::AUTHORIZATION, value);
        }
        Credentials::Aws(signer) => {
            let Some(payload) = payload else {
                return Err(ProxyError::payload_too_large(ai.max_buffered).with_message(
                    "a Bedrock request must be buffered to be signed, and this one is too large",
                ));
            };
            signer.sign(req, payload).map_err(|e| {
                ProxyError::new(StatusCode::INTERNAL_SERVER_ERROR, "signing_failed", e)
            })?;
        }
        Credentials::Copilot(source) => {
            let value = source.authorization().await.map_err(|e| {
                ProxyError::upstream_unavailable(format!("cannot obtain a Copilot token: {e}"))
            })?;
            req.headers_mut().insert(header::AUTHORIZATION, value);
            for (name, value) in &github::REQUIRED_HEADERS {
                if !req.headers().contains_key(name) {
                    req.headers_mut().insert(name.clone(), value.clone());
                }
            }
        }
        Credentials::None | Credentials::Header(..) => {}
    }
    Ok(())
}

/// OpenAI callers ask for the final usage chunk with `stream_options.include_usage`.
fn wants_usage(ingress: Format, raw: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Req {
        stream_options: Option<StreamOptions>,
    }
    #[derive(serde::Deserialize)]
    struct StreamOptions {
        include_usage: Option<bool>,
    }
    ingress == Format::OpenAiChat
        && serde_json::from_slice::<Req>(raw)
            .ok()
            .and_then(|r| r.stream_options)
            .and_then(|s| s.include_usage)
            .unwrap_or(false)
}

/// Applies the forced model or an alias to a body that is not translated.
fn rewrite_model(ai: &AiTarget, raw: &[u8]) -> Result<(Vec<u8>, Option<String>), ProxyError> {
    let mut v: Value = serde_json::from_slice(raw)
        .map_err(|e| ProxyError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(ProxyError::bad_request(
            "request body must be a JSON object",
        ));
    };
    let (requested, _) = llm::apply_request_options(obj, &ai.request_options());
    let out = serde_json::to_vec(&v).map_err(|e| ProxyError::bad_request(e.to_string()))?;
    Ok((out, requested))
}

/// The body with its `model` resolved (forced model, else the first matching alias), nothing
/// else changed.
fn resolve_model_only(ai: &AiTarget, raw: &[u8]) -> Result<Vec<u8>, ProxyError> {
    let mut v: Value = serde_json::from_slice(raw)
        .map_err(|e| ProxyError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(ProxyError::bad_request(
            "request body must be a JSON object",
        ));
    };
    let none = serde_json::Map::new();
    let opts = llm::RequestOptions {
        defaults: &none,
        overrides: &none,
        ..ai.request_options()
    };
    llm::apply_request_options(obj, &opts);
    serde_json::to_vec(&v).map_err(|e| ProxyError::bad_request(e.to_string()))
}

fn llm_error(e: llm::LlmError) -> ProxyError {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let code = if status == StatusCode::BAD_REQUEST {
        "bad_request"
    } else {
        "llm_error"
    };
    ProxyError::new(status, code, e.message)
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(body::full(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `/v1/models` answered from config, in the caller's dialect (Anthropic clients send
/// `anthropic-version`).
fn models_response(ai: &AiTarget, parts: &Parts) -> Response<Body> {
    let models = ai.model_models();
    let body = if parts.headers.contains_key("anthropic-version") {
        let data: Vec<Value> = models
            .iter()
            .map(|m| {
                serde_json::json!({
                    "type": "model", "id": m, "display_name": m,
                    "created_at": "1970-01-01T00:00:00Z"
                })
            })
            .collect();
        serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": models.first(),
            "last_id": models.last(),
        })
    } else {
        let data: Vec<Value> = models
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m, "object": "model", "created": 0, "owned_by": ai.provider.name()
                })
            })
            .collect();
        serde_json::json!({ "object": "list", "data": data })
    };
    json_response(StatusCode::OK, body.to_string())
}
