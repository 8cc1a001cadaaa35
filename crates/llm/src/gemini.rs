//! Google Gemini (`generateContent`) as a provider format: response and
//! error translation, usage and finish-reason mapping, and the shared
//! helpers the request (`request_gemini.rs`) and stream
//! (`stream_gemini.rs`) translators use.
//!
//! Gemini is egress only. OpenAI Chat is the pivot: OpenAI clients are
//! translated to and from Gemini directly; Anthropic clients go through the
//! existing Anthropic <-> OpenAI translation chained with OpenAI <-> Gemini.
//!
//! References: Gemini API `models.generateContent` /
//! `models.streamGenerateContent` (<https://ai.google.dev/api/generate-content>:
//! `GenerateContentResponse`, `Candidate`, `FinishReason`, `UsageMetadata`),
//! function calling (<https://ai.google.dev/gemini-api/docs/function-calling>),
//! thinking and thought signatures
//! (<https://ai.google.dev/gemini-api/docs/thinking>), Vertex AI
//! `GenerateContentResponse` (same shape), and Google API errors
//! (<https://cloud.google.com/apis/design/errors>:
//! `{"error":{"code","message","status","details"}}`).

use serde_json::{json, Map, Value};

use crate::wire::{openai_usage_json, unix_now};
use crate::{Format, LlmError, ResponseInfo, Usage};

/// Separator between a tool-call id and the Gemini thought signature carried
/// inside it. Gemini 3 rejects a `functionCall` in the history that lacks
/// the signature it was generated with; clients echo tool-call ids verbatim,
/// so the id is the one place the signature survives a round trip through
/// an OpenAI or Anthropic client (the convention LiteLLM uses too).
pub(crate) const THOUGHT_SIGNATURE_SEPARATOR: &str = "__thought__";

/// Candidates with an index above this are ignored, so a hostile `index`
/// cannot make us allocate.
pub(crate) const MAX_CANDIDATES: u64 = 128;

/// `usageMetadata` -> neutral usage. Gemini's `promptTokenCount` already
/// includes cached tokens (like OpenAI's `prompt_tokens`); tokens spent on
/// thoughts are billed as output but reported apart from
/// `candidatesTokenCount`, so output = candidates + thoughts and the
/// thoughts are the reasoning tokens (OpenAI semantics). Prompt tokens of
/// tool use (grounding, code execution) count as input.
pub(crate) fn usage_from_metadata(meta: &Value) -> Usage {
    let count = |key: &str| meta.get(key).and_then(Value::as_u64);
    let prompt = count("promptTokenCount");
    let tool_prompt = count("toolUsePromptTokenCount");
    let candidates = count("candidatesTokenCount");
    let thoughts = count("thoughtsTokenCount");
    Usage {
        input_tokens: (prompt.is_some() || tool_prompt.is_some())
            .then(|| prompt.unwrap_or(0) + tool_prompt.unwrap_or(0)),
        output_tokens: (candidates.is_some() || thoughts.is_some())
            .then(|| candidates.unwrap_or(0) + thoughts.unwrap_or(0)),
        cached_input_tokens: count("cachedContentTokenCount"),
        reasoning_tokens: thoughts,
    }
}

/// Gemini `finishReason` -> OpenAI `finish_reason`. Gemini says `STOP` when
/// the turn ends in function calls, hence `has_tool_calls`.
pub(crate) fn finish_reason_from_gemini(reason: &str, has_tool_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if has_tool_calls => "tool_calls",
        // STOP, OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED and
        // anything new: no closer OpenAI value.
        _ => "stop",
    }
}

/// The OpenAI id for a response: Gemini's `responseId`, else one made up.
pub(crate) fn completion_id(resp: &Value) -> String {
    match resp.get("responseId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!("chatcmpl-gw-{}", unix_now()),
    }
}

/// Id for the `n`th function call of a response. Gemini has no call ids (or,
/// on newer models, optional ones, which win): `call_<responseId>_<n>`, or
/// `call_<n>` without a responseId, so ids are deterministic within a
/// response and do not repeat across turns. A thought signature rides along
/// after [`THOUGHT_SIGNATURE_SEPARATOR`].
pub(crate) fn tool_call_id(
    part_call: &Value,
    response_id: Option<&str>,
    n: u64,
    signature: Option<&str>,
) -> String {
    let base = match part_call.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => match response_id.filter(|r| !r.is_empty()) {
            Some(r) => format!("call_{r}_{n}"),
            None => format!("call_{n}"),
        },
    };
    match signature.filter(|s| !s.is_empty()) {
        Some(sig) => format!("{base}{THOUGHT_SIGNATURE_SEPARATOR}{sig}"),
        None => base,
    }
}

/// The `parts` of a candidate (empty when missing or malformed).
pub(crate) fn candidate_parts(candidate: &Value) -> &[Value] {
    candidate
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A candidate's index (Gemini omits it for the first candidate).
pub(crate) fn candidate_index(candidate: &Value, position: usize) -> u64 {
    candidate
        .get("index")
        .and_then(Value::as_u64)
        .unwrap_or(position as u64)
}

pub(crate) fn is_thought(part: &Value) -> bool {
    part.get("thought") == Some(&Value::Bool(true))
}

/// A `functionCall` part -> OpenAI tool call (`arguments` as JSON text).
pub(crate) fn openai_tool_call(call: &Value, id: String) -> Value {
    let args = match call.get("args") {
        Some(a @ Value::Object(_)) => a.to_string(),
        _ => "{}".to_owned(),
    };
    json!({
        "id": id,
        "type": "function",
        "function": {
            "name": call.get("name").and_then(Value::as_str).unwrap_or_default(),
            "arguments": args,
        },
    })
}

fn parse_object(body: &[u8]) -> Result<Value, LlmError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| LlmError::bad_gateway(format!("upstream response is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(LlmError::bad_gateway(
            "upstream response is not a JSON object",
        ));
    }
    Ok(v)
}

/// Model, usage and per-candidate text (thought parts excluded) of a
/// `GenerateContentResponse`.
pub(crate) fn response_info(body: &[u8]) -> Result<ResponseInfo, LlmError> {
    let resp = parse_object(body)?;
    let mut completion: Vec<String> = Vec::new();
    for (pos, candidate) in candidates(&resp).iter().enumerate() {
        let index = candidate_index(candidate, pos);
        if index >= MAX_CANDIDATES {
            continue;
        }
        let i = index as usize;
        if completion.len() <= i {
            completion.resize(i + 1, String::new());
        }
        completion[i].push_str(&candidate_text(candidate));
    }
    Ok(ResponseInfo {
        model: resp
            .get("modelVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        usage: resp
            .get("usageMetadata")
            .map(usage_from_metadata)
            .unwrap_or_default(),
        completion,
    })
}

fn candidates(resp: &Value) -> &[Value] {
    resp.get("candidates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn candidate_text(candidate: &Value) -> String {
    candidate_parts(candidate)
        .iter()
        .filter(|p| !is_thought(p))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect()
}

/// `GenerateContentResponse` -> the client's format. Anthropic clients get
/// the OpenAI translation passed through the OpenAI -> Anthropic one.
pub(crate) fn to_client(ingress: Format, resp: Map<String, Value>, info: &ResponseInfo) -> Value {
    let openai = to_openai(&Value::Object(resp), info);
    match (ingress, openai) {
        (Format::AnthropicMessages, Value::Object(map)) => {
            crate::response::openai_to_anthropic(map, info)
        }
        (_, v) => v,
    }
}

fn to_openai(resp: &Value, info: &ResponseInfo) -> Value {
    let response_id = resp.get("responseId").and_then(Value::as_str);
    let mut next_call = 0u64;
    let mut choices = Vec::new();
    for (pos, candidate) in candidates(resp).iter().enumerate() {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        for part in candidate_parts(candidate) {
            if let Some(call) = part.get("functionCall") {
                let signature = part.get("thoughtSignature").and_then(Value::as_str);
                let id = tool_call_id(call, response_id, next_call, signature);
                next_call += 1;
                tool_calls.push(openai_tool_call(call, id));
            } else if let Some(t) = part.get("text").and_then(Value::as_str) {
                if is_thought(part) {
                    reasoning.push_str(t);
                } else {
                    text.push_str(t);
                }
            }
            // inlineData, executableCode, codeExecutionResult, ...: dropped (README).
        }
        let mut message = Map::new();
        message.insert("role".into(), "assistant".into());
        message.insert(
            "content".into(),
            if text.is_empty() && !tool_calls.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            },
        );
        if !reasoning.is_empty() {
            message.insert("reasoning_content".into(), Value::String(reasoning));
        }
        let has_calls = !tool_calls.is_empty();
        if has_calls {
            message.insert("tool_calls".into(), Value::Array(tool_calls));
        }
        let finish = candidate
            .get("finishReason")
            .and_then(Value::as_str)
            .map(|r| finish_reason_from_gemini(r, has_calls));
        choices.push(json!({
            "index": candidate_index(candidate, pos),
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }));
    }
    if choices.is_empty() {
        // The prompt itself was blocked (`promptFeedback.blockReason`): no
        // candidates. Report an empty, filtered answer rather than an error
        // so the client sees why.
        let blocked = resp
            .get("promptFeedback")
            .and_then(|f| f.get("blockReason"))
            .is_some();
        choices.push(json!({
            "index": 0,
            "message": { "role": "assistant", "content": "" },
            "logprobs": null,
            "finish_reason": if blocked { "content_filter" } else { "stop" },
        }));
    }
    json!({
        "id": completion_id(resp),
        "object": "chat.completion",
        "created": unix_now(),
        "model": info.model.clone().unwrap_or_default(),
        "choices": choices,
        "usage": openai_usage_json(&info.usage),
    })
}

// ---------- errors ----------

/// What a Google error means, independent of the client's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RateLimit,
    Overloaded,
    Server,
}

impl ErrorKind {
    /// Google canonical status (`google.rpc.Code` name) -> kind.
    fn from_google_status(status: &str) -> Option<ErrorKind> {
        Some(match status {
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => {
                ErrorKind::InvalidRequest
            }
            "UNAUTHENTICATED" => ErrorKind::Authentication,
            "PERMISSION_DENIED" => ErrorKind::Permission,
            "NOT_FOUND" => ErrorKind::NotFound,
            "RESOURCE_EXHAUSTED" => ErrorKind::RateLimit,
            "UNAVAILABLE" => ErrorKind::Overloaded,
            "INTERNAL" | "UNKNOWN" | "DEADLINE_EXCEEDED" | "ABORTED" | "DATA_LOSS"
            | "CANCELLED" => ErrorKind::Server,
            _ => return None,
        })
    }

    fn from_http_status(status: u16) -> ErrorKind {
        match status {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::RateLimit,
            503 => ErrorKind::Overloaded,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::InvalidRequest,
        }
    }

    pub(crate) fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Overloaded | ErrorKind::Server => "server_error",
        }
    }

    /// Also the vocabulary `write_stream_error` maps from.
    pub(crate) fn anthropic_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Server => "api_error",
        }
    }
}

/// A parsed Google error object.
pub(crate) struct GoogleError {
    pub kind: Option<ErrorKind>,
    /// The canonical status string, e.g. `RESOURCE_EXHAUSTED`.
    pub status: Option<String>,
    pub message: String,
}

/// Parses `{"error":{"code","message","status","details"}}` (also as the
/// first element of an array, as non-SSE `streamGenerateContent` sends it).
/// A bad Gemini API key is 400 `INVALID_ARGUMENT` with reason
/// `API_KEY_INVALID` in `details`: that is an authentication error.
pub(crate) fn parse_google_error(v: &Value) -> Option<GoogleError> {
    let v = match v {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let err = v.get("error")?.as_object()?;
    let message = err.get("message").and_then(Value::as_str)?.to_owned();
    let status = err.get("status").and_then(Value::as_str).map(str::to_owned);
    let api_key_invalid = err
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"));
    let kind = if api_key_invalid {
        Some(ErrorKind::Authentication)
    } else {
        status.as_deref().and_then(ErrorKind::from_google_status)
    };
    Some(GoogleError {
        kind,
        status,
        message,
    })
}

/// Google error body -> error body in the client's format. The HTTP status
/// is kept by the caller; OpenAI clients get the Google status in `code`.
pub(crate) fn translate_error(ingress: Format, status: u16, body: &[u8]) -> Vec<u8> {
    let parsed = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| parse_google_error(&v));
    let (kind, code, message) = match parsed {
        Some(e) => (
            e.kind
                .unwrap_or_else(|| ErrorKind::from_http_status(status)),
            e.status,
            e.message,
        ),
        None => (
            ErrorKind::from_http_status(status),
            None,
            format!("upstream provider returned HTTP {status} with an unrecognised error body"),
        ),
    };
    match ingress {
        Format::AnthropicMessages => {
            crate::errors::anthropic_error(kind.anthropic_type(), &message)
        }
        _ => crate::errors::openai_error(kind.openai_type(), &message, code.as_deref()),
    }
}
