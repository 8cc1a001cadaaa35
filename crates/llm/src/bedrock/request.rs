//! OpenAI Chat Completions request -> Bedrock `Converse` request, and
//! Anthropic Messages -> Converse through the Anthropic -> OpenAI
//! translation.
//!
//! References: <https://platform.openai.com/docs/api-reference/chat/create>;
//! Bedrock `Converse` request (`messages`, `system`, `inferenceConfig`,
//! `toolConfig`, `additionalModelRequestFields`), `Message`, `ContentBlock`,
//! `ImageBlock`, `ToolUseBlock`, `ToolResultBlock`, `ReasoningContentBlock`,
//! `ToolConfiguration`, `ToolChoice`
//! (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>,
//! <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ContentBlock.html>).
//! The model is in the URL path (`/model/{modelId}/converse`), not the
//! body, and so is streaming (`/converse-stream`). Fields without a Converse
//! equivalent are dropped; see README.md.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::pivot::{
    assistant_tool_calls, function_tools, max_tokens, stop_sequences, text_parts_with, DataUrl,
    ToolChoice, UserPart,
};
use crate::LlmError;

/// What the Anthropic request carried that the OpenAI pivot cannot.
#[derive(Default)]
struct AnthropicExtras {
    /// Thinking blocks of each assistant message, in order.
    assistant_thinking: Vec<Vec<Value>>,
    /// `tool_use_id`s of `tool_result` blocks with `is_error: true`.
    error_results: HashSet<String>,
}

/// Converse-spelled top-level fields a client body (typically through
/// gateway overrides) may carry and that are passed through unchanged:
/// there is no OpenAI or Anthropic spelling for them.
const PASSTHROUGH_FIELDS: &[&str] = &[
    "additionalModelRequestFields",
    "guardrailConfig",
    "performanceConfig",
];

pub(crate) fn translate(req: Map<String, Value>) -> Result<Map<String, Value>, LlmError> {
    translate_with(req, &AnthropicExtras::default())
}

/// Anthropic request -> OpenAI -> Converse. Thinking blocks in the history
/// (which Bedrock requires back, with their signatures, when extended
/// thinking is combined with tools) and `is_error` on tool results have no
/// OpenAI spelling in a request, so they are taken from the Anthropic
/// request first; `top_k` and `thinking` go to
/// `additionalModelRequestFields`, the field Bedrock passes to Anthropic
/// models unchanged.
pub(crate) fn translate_from_anthropic(
    req: Map<String, Value>,
) -> Result<Map<String, Value>, LlmError> {
    let mut extras = AnthropicExtras::default();
    for m in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let blocks = m.get("content").and_then(Value::as_array);
        match m.get("role").and_then(Value::as_str) {
            Some("assistant") => extras.assistant_thinking.push(
                blocks
                    .into_iter()
                    .flatten()
                    .filter(|b| {
                        matches!(
                            b.get("type").and_then(Value::as_str),
                            Some("thinking" | "redacted_thinking")
                        )
                    })
                    .cloned()
                    .collect(),
            ),
            Some("user") => {
                for b in blocks.into_iter().flatten() {
                    if b.get("type").and_then(Value::as_str) == Some("tool_result")
                        && b.get("is_error") == Some(&Value::Bool(true))
                    {
                        if let Some(id) = b.get("tool_use_id").and_then(Value::as_str) {
                            extras.error_results.insert(id.to_owned());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut additional = Map::new();
    if let Some(k) = req.get("top_k").filter(|v| v.is_number()) {
        additional.insert("top_k".into(), k.clone());
    }
    if let Some(t) = req.get("thinking").filter(|t| t.is_object()) {
        additional.insert("thinking".into(), t.clone());
    }
    // anthropic::client_request drops unknown fields; carry the Converse-spelled ones over.
    let passthrough: Vec<(String, Value)> = PASSTHROUGH_FIELDS
        .iter()
        .filter_map(|&k| req.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect();
    let mut openai = crate::anthropic::client_request::translate(req)?;
    openai.extend(passthrough);
    // anthropic::client_request emits exactly one assistant message per Anthropic
    // assistant message, in order: re-attach the thinking blocks there.
    if let Some(Value::Array(messages)) = openai.get_mut("messages") {
        let assistants = messages
            .iter_mut()
            .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
        for (m, thinking) in assistants.zip(std::mem::take(&mut extras.assistant_thinking)) {
            if !thinking.is_empty() {
                m["thinking_blocks"] = Value::Array(thinking);
            }
        }
    }
    let mut out = translate_with(openai, &extras)?;
    if !additional.is_empty() {
        let fields = out
            .entry("additionalModelRequestFields")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(fields) = fields {
            // Explicitly given fields win over the translated ones.
            for (k, v) in additional {
                fields.entry(k).or_insert(v);
            }
        }
    }
    Ok(out)
}

fn translate_with(
    mut req: Map<String, Value>,
    extras: &AnthropicExtras,
) -> Result<Map<String, Value>, LlmError> {
    let mut out = Map::new();
    let messages = match req.remove("messages") {
        Some(Value::Array(m)) => m,
        _ => Vec::new(),
    };
    let (system, messages) = translate_messages(messages, extras)?;
    let has_tool_blocks = messages.iter().any(|m| {
        m["content"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some())
    });
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let config = inference_config(&req);
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    if let Some(tool_config) = tool_config(&req, has_tool_blocks) {
        out.insert("toolConfig".into(), tool_config);
    }
    for &key in PASSTHROUGH_FIELDS {
        if let Some(v) = req.remove(key).filter(Value::is_object) {
            out.insert(key.into(), v);
        }
    }
    Ok(out)
}

fn inference_config(req: &Map<String, Value>) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(m) = max_tokens(req) {
        config.insert("maxTokens".into(), m.clone());
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            config.insert(to.into(), v.clone());
        }
    }
    if let Some(stops) = stop_sequences(req.get("stop")) {
        config.insert("stopSequences".into(), stops);
    }
    config
}

/// `tools` + `tool_choice` -> `toolConfig`. Converse has no "none" choice:
/// the tools are left out instead, unless the history holds tool blocks, in
/// which case Converse insists on a `toolConfig` and the tools are sent
/// without a choice (the model may still call one; README).
fn tool_config(req: &Map<String, Value>, has_tool_blocks: bool) -> Option<Value> {
    let tools: Vec<Value> = function_tools(req.get("tools"))
        .map(|f| {
            let mut spec = Map::new();
            spec.insert("name".into(), f.name.clone());
            if let Some(d) = f.description.filter(|d| d.is_string()) {
                spec.insert("description".into(), d.clone());
            }
            spec.insert(
                "inputSchema".into(),
                json!({ "json": f.parameters_or_empty() }),
            );
            json!({ "toolSpec": spec })
        })
        .collect();
    if tools.is_empty() {
        return None;
    }
    let choice = match ToolChoice::of(req.get("tool_choice")) {
        Some(ToolChoice::None) => {
            if !has_tool_blocks {
                return None;
            }
            None
        }
        Some(ToolChoice::Required) => Some(json!({ "any": {} })),
        Some(ToolChoice::Auto) => Some(json!({ "auto": {} })),
        Some(ToolChoice::Function(name)) => Some(json!({ "tool": { "name": name } })),
        None => None,
    };
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(tools));
    if let Some(c) = choice {
        config.insert("toolChoice".into(), c);
    }
    Some(Value::Object(config))
}

/// OpenAI messages -> (Converse `system` blocks, `messages`). Consecutive
/// messages of the same role are merged: Converse requires user and
/// assistant turns to alternate, and tool results (OpenAI `tool` messages)
/// are user content that must share the user turn after the calls.
fn translate_messages(
    messages: Vec<Value>,
    extras: &AnthropicExtras,
) -> Result<(Vec<Value>, Vec<Value>), LlmError> {
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, m) in messages.into_iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let (role, content) = match role {
            "system" | "developer" => {
                let text = crate::pivot::content_text(m.get("content"));
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
                continue;
            }
            "user" => ("user", user_content(i, m.get("content"))?),
            "assistant" => ("assistant", assistant_content(i, &m)?),
            "tool" => ("user", vec![tool_result(&m, extras)]),
            other => {
                return Err(LlmError::bad_request(format!(
                    "messages[{i}].role `{other}` is not supported for Bedrock (expected system, developer, user, assistant or tool)"
                )))
            }
        };
        if content.is_empty() {
            // Converse rejects empty content arrays; an empty turn says nothing.
            continue;
        }
        match out.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(blocks) = last["content"].as_array_mut() {
                    blocks.extend(content);
                }
            }
            _ => out.push(json!({ "role": role, "content": content })),
        }
    }
    Ok((system, out))
}

fn user_content(i: usize, content: Option<&Value>) -> Result<Vec<Value>, LlmError> {
    text_parts_with(i, content, |j, part| match part {
        UserPart::ImageUrl(url) => image_block(url.unwrap_or_default())
            .map(Some)
            .map_err(|why| LlmError::bad_request(format!("messages[{i}].content[{j}]: {why}"))),
        // input_audio, file, ...: dropped (README).
        _ => Ok(None),
    })
}

/// A `data:image/<type>;base64,<data>` URL -> Converse image block.
/// Converse takes image bytes only (or S3 locations), never an http URL,
/// and fetching URLs is not this library's business: those are a 400.
fn image_block(url: &str) -> Result<Value, String> {
    let (mime, data) = match DataUrl::parse(url) {
        DataUrl::Base64 { mime, data } => (mime, data),
        DataUrl::NotData => return Err(
            "Bedrock accepts images as base64 `data:` URLs only; remote image URLs cannot be sent"
                .into(),
        ),
        DataUrl::Malformed => return Err("malformed data URL (no comma)".into()),
        DataUrl::NotBase64 => return Err("data URL must be base64-encoded".into()),
    };
    let format = match mime.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(format!(
                "image type `{other}` is not supported by Bedrock (png, jpeg, gif, webp)"
            ))
        }
    };
    Ok(json!({ "image": { "format": format, "source": { "bytes": data } } }))
}

fn assistant_content(i: usize, m: &Value) -> Result<Vec<Value>, LlmError> {
    let mut blocks = Vec::new();
    // Reasoning goes first, as the model produced it. Only signed thinking
    // can be replayed (Bedrock validates the signature); bare
    // `reasoning_content` is dropped (README).
    for b in m
        .get("thinking_blocks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("thinking") => {
                let text = b
                    .get("thinking")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let mut reasoning = Map::new();
                reasoning.insert("text".into(), text.into());
                if let Some(sig) = b
                    .get("signature")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    reasoning.insert("signature".into(), sig.into());
                }
                blocks.push(json!({ "reasoningContent": { "reasoningText": reasoning } }));
            }
            Some("redacted_thinking") => {
                if let Some(data) = b.get("data").and_then(Value::as_str) {
                    blocks.push(json!({ "reasoningContent": { "redactedContent": data } }));
                }
            }
            _ => {}
        }
    }
    let text = crate::pivot::content_text(m.get("content"));
    if !text.is_empty() {
        blocks.push(json!({ "text": text }));
    }
    // Only JSON text is read as arguments: anything else counts as none.
    let calls = assistant_tool_calls(
        i,
        m.get("tool_calls"),
        true,
        "must be a JSON object for Bedrock",
    )?;
    for call in calls {
        blocks.push(json!({ "toolUse": {
            "toolUseId": call.id_str(),
            "name": call.name,
            "input": call.input,
        }}));
    }
    Ok(blocks)
}

/// A `tool` message -> `toolResult` block. Content that is a JSON object is
/// sent as a `json` block (models see structure), anything else as text.
fn tool_result(m: &Value, extras: &AnthropicExtras) -> Value {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let text = crate::pivot::content_text(m.get("content"));
    let content = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => json!({ "json": v }),
        _ => json!({ "text": text }),
    };
    let mut result = Map::new();
    result.insert("toolUseId".into(), id.into());
    result.insert("content".into(), json!([content]));
    if extras.error_results.contains(id) {
        result.insert("status".into(), "error".into());
    }
    json!({ "toolResult": result })
}
