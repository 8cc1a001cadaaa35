//! Non-streaming response translation.
//!
//! References: OpenAI `chat.completion` object
//! (<https://platform.openai.com/docs/api-reference/chat/object>); Anthropic
//! Messages response (<https://docs.anthropic.com/en/api/messages>).
//! Reasoning is carried to OpenAI clients as `reasoning_content` (vLLM /
//! DeepSeek convention) plus LiteLLM-style `thinking_blocks` holding the
//! signatures, so a client that echoes the message back round-trips them.

use serde_json::{json, Map, Value};

use crate::wire::{
    anthropic_usage_json, finish_reason_from_anthropic, openai_usage_json, stop_reason_from_openai,
    unix_now, AnResponseView, AnUsage, OaResponseView, OaUsage,
};
use crate::{Format, LlmError, ResponseInfo};

/// Non-streaming successful (2xx) response body from the provider (egress
/// format) -> body for the client (ingress format). When ingress == egress
/// the returned body is `None` (forward the original bytes) and only the
/// info is extracted, through a small typed view rather than a full `Value`.
pub fn translate_response(
    ingress: Format,
    egress: Format,
    body: &[u8],
) -> Result<(Option<Vec<u8>>, ResponseInfo), LlmError> {
    translate_response_with_model(ingress, egress, body, None)
}

/// [`translate_response`], with the model sent upstream standing in where the
/// provider's body names none (a Bedrock Converse response never does).
pub fn translate_response_with_model(
    ingress: Format,
    egress: Format,
    body: &[u8],
    upstream_model: Option<&str>,
) -> Result<(Option<Vec<u8>>, ResponseInfo), LlmError> {
    if ingress == Format::OpenAiResponses && egress != Format::OpenAiResponses {
        // Through the OpenAI Chat pivot.
        return crate::responses::translate_response(egress, body, upstream_model);
    }
    let mut info = response_info(egress, body)?;
    if info.model.is_none() {
        info.model = upstream_model.filter(|m| !m.is_empty()).map(str::to_owned);
    }
    if ingress == egress {
        return Ok((None, info));
    }
    let value: Value = serde_json::from_slice(body).map_err(invalid_upstream)?;
    let Value::Object(resp) = value else {
        return Err(LlmError::bad_gateway(
            "upstream response is not a JSON object",
        ));
    };
    let out = match egress {
        Format::AnthropicMessages => anthropic_to_openai(resp, &info),
        Format::OpenAiChat => openai_to_anthropic(resp, &info),
        Format::Gemini => crate::gemini::to_client(ingress, resp, &info),
        Format::Bedrock => crate::bedrock::to_client(ingress, resp, &info),
        Format::OpenAiResponses => {
            return Err(LlmError::bad_gateway(
                "OpenAI Responses is a client format only, not a provider format",
            ))
        }
    };
    let bytes = serde_json::to_vec(&out)
        .map_err(|e| LlmError::bad_gateway(format!("cannot serialise response: {e}")))?;
    Ok((Some(bytes), info))
}

fn invalid_upstream(e: serde_json::Error) -> LlmError {
    LlmError::bad_gateway(format!("upstream response is not valid JSON: {e}"))
}

fn response_info(format: Format, body: &[u8]) -> Result<ResponseInfo, LlmError> {
    Ok(match format {
        Format::Gemini => crate::gemini::response_info(body)?,
        Format::Bedrock => crate::bedrock::response_info(body)?,
        Format::OpenAiResponses => crate::responses::response_info(body)?,
        Format::OpenAiChat => {
            let view: OaResponseView = serde_json::from_slice(body).map_err(invalid_upstream)?;
            ResponseInfo {
                usage: view
                    .usage
                    .as_ref()
                    .map(OaUsage::to_usage)
                    .unwrap_or_default(),
                completion: view
                    .choices
                    .iter()
                    .flatten()
                    .map(|c| {
                        c.message
                            .as_ref()
                            .and_then(|m| m.content.as_ref())
                            .map(|c| c.text())
                            .unwrap_or_default()
                    })
                    .collect(),
                model: view.model,
            }
        }
        Format::AnthropicMessages => {
            let view: AnResponseView = serde_json::from_slice(body).map_err(invalid_upstream)?;
            ResponseInfo {
                usage: view
                    .usage
                    .as_ref()
                    .map(AnUsage::to_usage)
                    .unwrap_or_default(),
                completion: vec![view.text()],
                model: view.model,
            }
        }
    })
}

fn anthropic_to_openai(resp: Map<String, Value>, info: &ResponseInfo) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    for block in resp
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or_default());
                thinking_blocks.push(block.clone());
            }
            Some("redacted_thinking") => thinking_blocks.push(block.clone()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::String(String::new())),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::String(String::new())),
                    "arguments": block.get("input").cloned().unwrap_or_else(|| json!({})).to_string(),
                },
            })),
            // server_tool_use, web_search_tool_result, ...: dropped (README).
            _ => {}
        }
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
    if !thinking_blocks.is_empty() {
        message.insert("thinking_blocks".into(), Value::Array(thinking_blocks));
    }
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    let finish = resp
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(finish_reason_from_anthropic);
    let an_usage: AnUsage = resp
        .get("usage")
        .and_then(|u| serde_json::from_value(u.clone()).ok())
        .unwrap_or_default();
    json!({
        "id": resp.get("id").cloned().unwrap_or(Value::String(String::new())),
        "object": "chat.completion",
        "created": unix_now(),
        "model": info.model.clone().unwrap_or_default(),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": openai_usage_json(&an_usage.to_usage()),
    })
}

pub(crate) fn openai_to_anthropic(resp: Map<String, Value>, info: &ResponseInfo) -> Value {
    // Only the first choice: Anthropic has no `n` (README).
    let choice = resp
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let message = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    if let Some(m) = message {
        thinking_to_blocks(m, &mut content);
        let text = m
            .get("content")
            .map(|c| crate::request::content_text(Some(c)))
            .unwrap_or_default();
        if !text.is_empty() {
            content.push(json!({ "type": "text", "text": text }));
        }
        if let Some(refusal) = m
            .get("refusal")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            content.push(json!({ "type": "text", "text": refusal }));
        }
        for call in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            content.push(tool_call_to_block(call));
        }
    }
    let stop_reason = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .map(stop_reason_from_openai);
    let usage: OaUsage = resp
        .get("usage")
        .and_then(|u| serde_json::from_value(u.clone()).ok())
        .unwrap_or_default();
    let id = match resp.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        // `id` is required in an Anthropic message; invent one only when absent.
        None => format!("msg_gw_{}", unix_now()),
    };
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": info.model.clone().unwrap_or_default(),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": anthropic_usage_json(&usage.to_usage()),
    })
}

/// OpenAI-side reasoning -> Anthropic thinking blocks. `thinking_blocks`
/// (with signatures) win; otherwise `reasoning_content` / `reasoning` becomes
/// one thinking block with an empty signature (none exists).
fn thinking_to_blocks(message: &Value, out: &mut Vec<Value>) {
    if let Some(blocks) = message.get("thinking_blocks").and_then(Value::as_array) {
        for b in blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("thinking") => out.push(json!({
                    "type": "thinking",
                    "thinking": b.get("thinking").cloned().unwrap_or(Value::String(String::new())),
                    "signature": b.get("signature").cloned().unwrap_or(Value::String(String::new())),
                })),
                Some("redacted_thinking") => out.push(json!({
                    "type": "redacted_thinking",
                    "data": b.get("data").cloned().unwrap_or(Value::String(String::new())),
                })),
                _ => {}
            }
        }
        if !blocks.is_empty() {
            return;
        }
    }
    let reasoning = message
        .get("reasoning_content")
        .or_else(|| message.get("reasoning"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    if let Some(r) = reasoning {
        out.push(json!({ "type": "thinking", "thinking": r, "signature": "" }));
    }
}

/// OpenAI tool call -> Anthropic tool_use block. Arguments that are not a
/// JSON object (a model can emit broken JSON) are kept as
/// `{"_raw_arguments": "<text>"}` rather than lost (README).
pub(crate) fn tool_call_to_block(call: &Value) -> Value {
    let func = call.get("function");
    let args = func
        .and_then(|f| f.get("arguments"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let input = if args.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str::<Value>(args) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({ "_raw_arguments": args }),
        }
    };
    json!({
        "type": "tool_use",
        "id": call.get("id").cloned().unwrap_or(Value::String(String::new())),
        "name": func.and_then(|f| f.get("name")).cloned().unwrap_or(Value::String(String::new())),
        "input": input,
    })
}
