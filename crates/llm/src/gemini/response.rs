//! Gemini `GenerateContentResponse` -> `chat.completion` (the pivot), and on
//! to the client's format.

use serde_json::{json, Map, Value};

use crate::dialect::Route;
use crate::gemini::wire::{
    candidate_index, candidate_parts, completion_id, finish_reason_from_gemini, is_thought,
    openai_tool_call, tool_call_id, usage_from_metadata, MAX_CANDIDATES,
};
use crate::pivot::parse_object;
use crate::pivot::{assistant_message, bounded_slot, openai_usage_json, unix_now};
use crate::{LlmError, ResponseInfo};

/// Model, usage and per-candidate text (thought parts excluded) of a
/// `GenerateContentResponse`.
pub(crate) fn response_info(body: &[u8]) -> Result<ResponseInfo, LlmError> {
    let resp = Value::Object(parse_object(body)?);
    let mut completion: Vec<String> = Vec::new();
    for (pos, candidate) in candidates(&resp).iter().enumerate() {
        let index = candidate_index(candidate, pos);
        if let Some(text) = bounded_slot(&mut completion, index, MAX_CANDIDATES) {
            text.push_str(&candidate_text(candidate));
        }
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
pub(crate) fn to_client(route: Route, resp: Map<String, Value>, info: &ResponseInfo) -> Value {
    match to_openai(&Value::Object(resp), info) {
        Value::Object(chat) => route.client.response_from_pivot(chat, info),
        v => v,
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
        let has_calls = !tool_calls.is_empty();
        let message = assistant_message(text, reasoning, Vec::new(), tool_calls);
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
