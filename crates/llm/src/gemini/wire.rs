//! What the Gemini request, response and stream translators share: the
//! Gemini `generateContent` wire format's usage and stop-reason mapping, ids and small readers.

use crate::pivot::{tool_call, unix_now};
use crate::Usage;
use serde_json::Value;

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
    let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
    tool_call(&id, name, args)
}
