//! Converse response -> `chat.completion` (the pivot), and on to the
//! client's format.

use serde_json::{json, Map, Value};

use crate::bedrock::wire::{
    anthropic_usage_from_bedrock, finish_reason_from_bedrock, response_id, usage_from_bedrock,
};
use crate::dialect::Route;
use crate::pivot::parse_object;
use crate::pivot::{assistant_message, openai_usage_json, tool_call, unix_now};
use crate::{Format, LlmError, ResponseInfo};

fn content_blocks(resp: &Value) -> &[Value] {
    resp.get("output")
        .and_then(|o| o.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Model (never in a Converse body: `None`), usage and the answer's text.
pub(crate) fn response_info(body: &[u8]) -> Result<ResponseInfo, LlmError> {
    let resp = Value::Object(parse_object(body)?);
    let text: String = content_blocks(&resp)
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    Ok(ResponseInfo {
        model: None,
        usage: resp
            .get("usage")
            .map(usage_from_bedrock)
            .unwrap_or_default(),
        completion: vec![text],
    })
}

/// Converse response -> the client's format. Anthropic clients get the
/// OpenAI translation passed through the OpenAI -> Anthropic one, with the
/// exact Bedrock usage split (cache writes included) put back.
pub(crate) fn to_client(route: Route, resp: Map<String, Value>, info: &ResponseInfo) -> Value {
    let ingress = route.ingress();
    let resp = Value::Object(resp);
    let mut out = match to_openai(&resp, info, response_id(ingress)) {
        Value::Object(chat) => route.client.response_from_pivot(chat, info),
        v => v,
    };
    if ingress == Format::AnthropicMessages {
        if let Some(usage) = resp.get("usage") {
            out["usage"] = anthropic_usage_from_bedrock(usage);
        }
    }
    out
}

fn to_openai(resp: &Value, info: &ResponseInfo, id: String) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    for block in content_blocks(resp) {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(r) = block.get("reasoningContent") {
            if let Some(rt) = r.get("reasoningText") {
                let t = rt.get("text").and_then(Value::as_str).unwrap_or_default();
                reasoning.push_str(t);
                thinking_blocks.push(json!({
                    "type": "thinking",
                    "thinking": t,
                    "signature": rt.get("signature").and_then(Value::as_str).unwrap_or_default(),
                }));
            } else if let Some(data) = r.get("redactedContent").and_then(Value::as_str) {
                thinking_blocks.push(json!({ "type": "redacted_thinking", "data": data }));
            }
        } else if let Some(tool) = block.get("toolUse") {
            tool_calls.push(openai_tool_call(tool));
        }
        // image, document, citationsContent, guardContent, ...: dropped (README).
    }
    let message = assistant_message(text, reasoning, thinking_blocks, tool_calls);
    let finish = resp
        .get("stopReason")
        .and_then(Value::as_str)
        .map(finish_reason_from_bedrock);
    json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": info.model.clone().unwrap_or_default(),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": openai_usage_json(&info.usage),
    })
}

/// A `toolUse` block -> OpenAI tool call (`arguments` as JSON text).
fn openai_tool_call(tool: &Value) -> Value {
    let input = tool.get("input").cloned().unwrap_or_else(|| json!({}));
    let str_at = |key: &str| tool.get(key).and_then(Value::as_str).unwrap_or_default();
    tool_call(str_at("toolUseId"), str_at("name"), input.to_string())
}
