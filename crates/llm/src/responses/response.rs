//! OpenAI Responses API as a client dialect: the `response` object,
//! non-streaming response translation and error bodies, through the OpenAI
//! Chat pivot (provider -> `chat.completion` -> `response`).
//!
//! References: the response object
//! (<https://platform.openai.com/docs/api-reference/responses/object>):
//! `id` (`resp_...`), `object: "response"`, `created_at`, `status`
//! (`completed` / `incomplete` / `failed` / `in_progress`),
//! `incomplete_details.reason` (`max_output_tokens` / `content_filter`),
//! `output` items (`message` with `output_text {text, annotations}`,
//! `function_call {id, call_id, name, arguments, status}`), `usage`
//! (`input_tokens`, `input_tokens_details.cached_tokens`, `output_tokens`,
//! `output_tokens_details.reasoning_tokens`, `total_tokens`) and the echoed
//! request configuration (`instructions`, `tools`, `tool_choice`,
//! `temperature`, `top_p`, `parallel_tool_calls`, `metadata`, ...).
//! Errors use the OpenAI shape `{"error":{"message","type","param","code"}}`
//! (<https://platform.openai.com/docs/guides/error-codes>).
//!
//! `translate_response` gets no request, so the echoed configuration is the
//! documented defaults (README): `tools: []`, `tool_choice: "auto"`,
//! `parallel_tool_calls: true`, `temperature` / `top_p` / `instructions` /
//! `max_output_tokens` null, `store: false`, `metadata: {}`.

use serde_json::{json, Map, Value};

use crate::dialect::{Dialect, Route};
use crate::openai::errors::{openai_error, openai_type_for_status};
use crate::pivot::{parse_error, unix_now};
use crate::{Format, LlmError, ResponseInfo, Usage};

/// The route a Responses client's exchange takes inside: a Chat client of
/// the same provider.
pub(crate) fn chat_route(provider: &'static dyn Dialect) -> Route {
    Route {
        client: &crate::openai::OpenAiChat,
        provider,
    }
}

/// Provider response (egress format) -> Responses `response` object.
pub(crate) fn translate_response(
    provider: &'static dyn Dialect,
    body: &[u8],
    upstream_model: Option<&str>,
) -> Result<(Option<Vec<u8>>, ResponseInfo), LlmError> {
    let chat = chat_route(provider);
    let (chat_body, info) = match chat.client.translate_response(chat, body, upstream_model)? {
        (Some(chat), info) => (chat, info),
        // The provider speaks Chat already.
        (None, info) => (body.to_vec(), info),
    };
    let chat: Value = serde_json::from_slice(&chat_body)
        .map_err(|e| LlmError::bad_gateway(format!("upstream response is not valid JSON: {e}")))?;
    if !chat.is_object() {
        return Err(LlmError::bad_gateway(
            "upstream response is not a JSON object",
        ));
    }
    let out = from_chat_completion(&chat, &info);
    let bytes = serde_json::to_vec(&out)
        .map_err(|e| LlmError::bad_gateway(format!("cannot serialise response: {e}")))?;
    Ok((Some(bytes), info))
}

/// Ids of one response and its output items, derived from the provider's
/// id so they are stable per response: `resp_<base>`, `msg_<base>`,
/// `fc_<base>_<n>`.
pub(crate) struct ResponseIds {
    base: String,
}

impl ResponseIds {
    /// `provider_id` is the Chat completion id (`chatcmpl-...`, or an
    /// Anthropic `msg_...` carried through the pivot). Only characters safe
    /// in an id are kept; a missing id gets `gw<unix time>`.
    pub fn new(provider_id: Option<&str>) -> Self {
        let raw = provider_id.unwrap_or_default();
        let raw = ["chatcmpl-", "msg_", "resp_"]
            .iter()
            .find_map(|p| raw.strip_prefix(p))
            .unwrap_or(raw);
        let base: String = raw
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .take(128)
            .collect();
        let base = if base.is_empty() {
            format!("gw{}", unix_now())
        } else {
            base
        };
        ResponseIds { base }
    }

    pub fn response(&self) -> String {
        format!("resp_{}", self.base)
    }

    /// Message item ids; `n` > 0 only when text resumes after a tool call.
    pub fn message(&self, n: usize) -> String {
        match n {
            0 => format!("msg_{}", self.base),
            n => format!("msg_{}_{n}", self.base),
        }
    }

    pub fn function_call(&self, n: usize) -> String {
        format!("fc_{}_{n}", self.base)
    }
}

/// Responses `status` and `incomplete_details` for a Chat `finish_reason`.
pub(crate) fn status_for_finish(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({ "reason": "max_output_tokens" })),
        Some("content_filter") => ("incomplete", json!({ "reason": "content_filter" })),
        _ => ("completed", Value::Null),
    }
}

/// Responses `usage` object from neutral usage.
pub(crate) fn usage_json(u: &Usage) -> Value {
    let input = u.input_tokens.unwrap_or(0);
    let output = u.output_tokens.unwrap_or(0);
    json!({
        "input_tokens": input,
        "input_tokens_details": { "cached_tokens": u.cached_input_tokens.unwrap_or(0) },
        "output_tokens": output,
        "output_tokens_details": { "reasoning_tokens": u.reasoning_tokens.unwrap_or(0) },
        "total_tokens": input + output,
    })
}

/// An assistant `message` output item with one `output_text` part.
pub(crate) fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [output_text_part(text)],
    })
}

pub(crate) fn output_text_part(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [] })
}

pub(crate) fn function_call_item(
    id: &str,
    status: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    })
}

/// The parts of a `response` object that vary.
pub(crate) struct ResponseState<'a> {
    pub id: &'a str,
    pub created_at: u64,
    pub model: &'a str,
    pub status: &'a str,
    pub incomplete_details: Value,
    pub error: Value,
    pub output: Vec<Value>,
    pub usage: Value,
}

/// A full `response` object; the echoed request configuration is the
/// documented defaults (see the module docs).
pub(crate) fn response_object(state: ResponseState) -> Value {
    json!({
        "id": state.id,
        "object": "response",
        "created_at": state.created_at,
        "status": state.status,
        "error": state.error,
        "incomplete_details": state.incomplete_details,
        "instructions": null,
        "max_output_tokens": null,
        "model": state.model,
        "output": state.output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": { "effort": null, "summary": null },
        "store": false,
        "temperature": null,
        "text": { "format": { "type": "text" } },
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": state.usage,
        "user": null,
        "metadata": {},
    })
}

/// `chat.completion` (choice 0) -> `response`.
fn from_chat_completion(chat: &Value, info: &ResponseInfo) -> Value {
    let ids = ResponseIds::new(chat.get("id").and_then(Value::as_str));
    let choice = chat
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let message = choice.and_then(|c| c.get("message"));
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str);
    let (status, incomplete_details) = status_for_finish(finish);

    let mut text = message
        .map(|m| crate::pivot::content_text(m.get("content")))
        .unwrap_or_default();
    // A refusal is the model's answer too; Responses would put it in a
    // `refusal` part, kept as text here as in streams (README).
    if let Some(refusal) = message
        .and_then(|m| m.get("refusal"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        text.push_str(refusal);
    }
    let calls = message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut output = Vec::new();
    // An answer that is only tool calls has no message item, as with OpenAI.
    if !text.is_empty() || calls.is_empty() {
        output.push(message_item(&ids.message(0), item_status(status), &text));
    }
    for (n, call) in calls.iter().enumerate() {
        let func = call.get("function");
        let str_at = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        output.push(function_call_item(
            &ids.function_call(n),
            item_status(status),
            &str_at(call.get("id")),
            &str_at(func.and_then(|f| f.get("name"))),
            &str_at(func.and_then(|f| f.get("arguments"))),
        ));
    }
    let created_at = chat
        .get("created")
        .and_then(Value::as_u64)
        .unwrap_or_else(unix_now);
    response_object(ResponseState {
        id: &ids.response(),
        created_at,
        model: info
            .model
            .as_deref()
            .or_else(|| chat.get("model").and_then(Value::as_str))
            .unwrap_or_default(),
        status,
        incomplete_details,
        error: Value::Null,
        output,
        usage: usage_json(&info.usage),
    })
}

/// Output item status for a response status.
pub(crate) fn item_status(response_status: &str) -> &'static str {
    match response_status {
        "incomplete" => "incomplete",
        _ => "completed",
    }
}

/// Info from a Responses body, for a Responses client in front of a
/// provider's own Responses API.
pub(crate) fn response_info(body: &[u8]) -> Result<ResponseInfo, LlmError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| LlmError::bad_gateway(format!("upstream response is not valid JSON: {e}")))?;
    Ok(info_of(&v))
}

/// Model, usage and output text of a Responses `response` object.
pub(crate) fn info_of(v: &Value) -> ResponseInfo {
    let num = |u: &Value, path: &[&str]| {
        path.iter()
            .try_fold(u, |v, k| v.get(k))
            .and_then(Value::as_u64)
    };
    let usage = v
        .get("usage")
        .map(|u| Usage {
            input_tokens: num(u, &["input_tokens"]),
            output_tokens: num(u, &["output_tokens"]),
            cached_input_tokens: num(u, &["input_tokens_details", "cached_tokens"]),
            reasoning_tokens: num(u, &["output_tokens_details", "reasoning_tokens"]),
        })
        .unwrap_or_default();
    let text: String = v
        .get("output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("message"))
        .filter_map(|item| item.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("output_text"))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    ResponseInfo {
        model: v.get("model").and_then(Value::as_str).map(str::to_owned),
        usage,
        completion: vec![text],
    }
}

/// Provider error -> OpenAI-shaped error for a Responses client (the same
/// body Chat clients get). A Chat provider's own well-formed OpenAI error is
/// kept byte for byte (its `code` and `param` are already right).
pub(crate) fn translate_error(provider: &'static dyn Dialect, status: u16, body: &[u8]) -> Vec<u8> {
    if provider.format() != Format::OpenAiChat {
        let chat = chat_route(provider);
        return chat.client.translate_error(chat, status, body);
    }
    let well_formed = serde_json::from_slice::<Map<String, Value>>(body)
        .ok()
        .and_then(|v| v.get("error").cloned())
        .is_some_and(|e| e.get("message").is_some_and(Value::is_string));
    if well_formed {
        return body.to_vec();
    }
    let message = match parse_error(Format::OpenAiChat, body) {
        Some((_, message)) => message,
        None => format!("upstream provider returned HTTP {status} with an unrecognised error body"),
    };
    openai_error(openai_type_for_status(status), &message, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_and_sanitised() {
        let ids = ResponseIds::new(Some("chatcmpl-AbC123"));
        assert_eq!(ids.response(), "resp_AbC123");
        assert_eq!(ids.message(0), "msg_AbC123");
        assert_eq!(ids.message(2), "msg_AbC123_2");
        assert_eq!(ids.function_call(1), "fc_AbC123_1");
        assert_eq!(ResponseIds::new(Some("a\"b c/")).response(), "resp_abc");
        assert!(ResponseIds::new(None).response().starts_with("resp_gw"));
    }

    #[test]
    fn finish_reasons_map_to_status() {
        assert_eq!(status_for_finish(Some("stop")).0, "completed");
        assert_eq!(status_for_finish(Some("tool_calls")).0, "completed");
        assert_eq!(
            status_for_finish(Some("length")),
            ("incomplete", json!({ "reason": "max_output_tokens" }))
        );
        assert_eq!(
            status_for_finish(Some("content_filter")).1,
            json!({ "reason": "content_filter" })
        );
    }

    #[test]
    fn chat_error_with_loose_shape_is_normalised() {
        let out = translate_error(
            &crate::openai::OpenAiChat,
            400,
            br#"{"error":"bad things"}"#,
        );
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            v,
            json!({"error":{"message":"bad things","type":"invalid_request_error","param":null,"code":null}})
        );
        let ok = br#"{"error":{"message":"m","type":"invalid_request_error","param":"input","code":"x"}}"#;
        assert_eq!(
            translate_error(&crate::openai::OpenAiChat, 400, ok),
            ok.to_vec()
        );
    }
}
