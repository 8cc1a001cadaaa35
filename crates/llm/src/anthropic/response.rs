//! Non-streaming responses, Anthropic side: an Anthropic `message` from the
//! provider -> `chat.completion` (typed, the hot path), and a
//! `chat.completion` (the pivot) -> an Anthropic `message` for the client.
//!
//! References: OpenAI `chat.completion` object
//! (<https://platform.openai.com/docs/api-reference/chat/object>); Anthropic
//! Messages response (<https://docs.anthropic.com/en/api/messages>).
//! Reasoning is carried to OpenAI clients as `reasoning_content` (vLLM /
//! DeepSeek convention) plus LiteLLM-style `thinking_blocks` holding the
//! signatures, so a client that echoes the message back round-trips them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::anthropic::wire::{
    anthropic_usage_json, finish_reason_from_anthropic, stop_reason_from_openai, AnUsage,
};
use crate::pivot::invalid_upstream;
use crate::pivot::{arguments_object, openai_usage_json, unix_now, OaUsage};
use crate::{LlmError, ResponseInfo};

/// Anthropic `message` -> OpenAI `chat.completion`, read through a borrowed view and
/// written from typed structs (no `Value` trees: this is the hot translated path).
pub(crate) fn anthropic_to_openai(body: &[u8], info: &ResponseInfo) -> Result<Vec<u8>, LlmError> {
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        id: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        content: Option<Vec<&'a RawValue>>,
        #[serde(borrow)]
        stop_reason: Option<Cow<'a, str>>,
        #[serde(default)]
        usage: Option<AnUsage>,
    }
    #[derive(Deserialize)]
    struct Block<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow)]
        text: Option<Cow<'a, str>>,
        #[serde(borrow)]
        thinking: Option<Cow<'a, str>>,
        #[serde(borrow)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        name: Option<Cow<'a, str>>,
        #[serde(borrow)]
        input: Option<&'a RawValue>,
    }
    #[derive(Serialize)]
    struct ToolCall<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        function: Function<'a>,
    }
    #[derive(Serialize)]
    struct Function<'a> {
        name: &'a str,
        arguments: &'a str,
    }
    #[derive(Serialize)]
    struct OutMessage<'a> {
        role: &'static str,
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reasoning_content: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        thinking_blocks: Option<&'a [&'a RawValue]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_calls: Option<&'a [ToolCall<'a>]>,
    }
    #[derive(Serialize)]
    struct Choice<'a> {
        index: u64,
        message: OutMessage<'a>,
        logprobs: (),
        finish_reason: Option<&'static str>,
    }
    #[derive(Serialize)]
    struct Completion<'a> {
        id: &'a str,
        object: &'static str,
        created: u64,
        model: &'a str,
        choices: [Choice<'a>; 1],
        usage: Value,
    }

    let resp: Message = serde_json::from_slice(body).map_err(invalid_upstream)?;
    let content = resp.content.unwrap_or_default();
    // A block that is not an object is skipped like an unknown block type.
    let blocks: Vec<(Block, &RawValue)> = content
        .iter()
        .filter_map(|raw| Some((serde_json::from_str(raw.get()).ok()?, *raw)))
        .collect();
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    for (block, raw) in &blocks {
        match block.kind.as_deref() {
            Some("text") => text.push_str(block.text.as_deref().unwrap_or_default()),
            Some("thinking") => {
                reasoning.push_str(block.thinking.as_deref().unwrap_or_default());
                thinking_blocks.push(*raw);
            }
            Some("redacted_thinking") => thinking_blocks.push(*raw),
            Some("tool_use") => tool_calls.push((
                block,
                block
                    .input
                    .map_or_else(|| "{}".to_string(), |i| compact_json(i.get())),
            )),
            // server_tool_use, web_search_tool_result, ...: dropped (README).
            _ => {}
        }
    }
    let tool_calls: Vec<ToolCall> = tool_calls
        .iter()
        .map(|(block, arguments)| ToolCall {
            id: block.id.as_deref().unwrap_or_default(),
            kind: "function",
            function: Function {
                name: block.name.as_deref().unwrap_or_default(),
                arguments,
            },
        })
        .collect();
    let out = Completion {
        id: resp.id.as_deref().unwrap_or_default(),
        object: "chat.completion",
        created: unix_now(),
        model: info.model.as_deref().unwrap_or_default(),
        choices: [Choice {
            index: 0,
            message: OutMessage {
                role: "assistant",
                // `null` only when the answer is tool calls alone, as OpenAI sends it.
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(text.as_str()),
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning.as_str()),
                thinking_blocks: (!thinking_blocks.is_empty()).then_some(&thinking_blocks[..]),
                tool_calls: (!tool_calls.is_empty()).then_some(&tool_calls[..]),
            },
            logprobs: (),
            finish_reason: resp
                .stop_reason
                .as_deref()
                .map(finish_reason_from_anthropic),
        }],
        usage: openai_usage_json(&resp.usage.unwrap_or_default().to_usage()),
    };
    serde_json::to_vec(&out)
        .map_err(|e| LlmError::bad_gateway(format!("cannot serialise response: {e}")))
}

/// JSON text without insignificant whitespace (tool arguments as OpenAI writes them).
fn compact_json(raw: &str) -> String {
    serde_json::from_str::<Value>(raw).map_or_else(|_| raw.to_string(), |v| v.to_string())
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
            .map(|c| crate::pivot::content_text(Some(c)))
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
    // Only JSON text is read: anything else counts as no arguments.
    let args = func
        .and_then(|f| f.get("arguments"))
        .filter(|a| a.is_string());
    let input = arguments_object(args).unwrap_or_else(|raw| json!({ "_raw_arguments": raw }));
    json!({
        "type": "tool_use",
        "id": call.get("id").cloned().unwrap_or(Value::String(String::new())),
        "name": func.and_then(|f| f.get("name")).cloned().unwrap_or(Value::String(String::new())),
        "input": input,
    })
}
