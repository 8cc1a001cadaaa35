//! OpenAI Chat Completions request -> Anthropic Messages request.
//!
//! References: <https://platform.openai.com/docs/api-reference/chat/create>,
//! <https://docs.anthropic.com/en/api/messages>. Fields without an
//! Anthropic equivalent are dropped; see README.md.

use serde_json::{json, Map, Value};

use crate::pivot::{
    assistant_texts, assistant_tool_calls, base64_data_url, function_tools, max_tokens,
    required_image_url, stop_sequences, ToolChoice, UserContent, UserPart,
};
use crate::LlmError;

pub(crate) fn translate(
    mut req: Map<String, Value>,
    default_max_tokens: u64,
) -> Result<Map<String, Value>, LlmError> {
    let mut out = Map::new();
    if let Some(model) = req.remove("model") {
        out.insert("model".into(), model);
    }

    let messages = match req.remove("messages") {
        Some(Value::Array(m)) => m,
        _ => Vec::new(),
    };
    let (system, messages) = translate_messages(messages)?;
    if let Some(system) = system {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), Value::Array(messages));

    let max_tokens = max_tokens(&req)
        .cloned()
        .unwrap_or_else(|| Value::from(default_max_tokens));
    out.insert("max_tokens".into(), max_tokens);

    if let Some(stops) = stop_sequences(req.get("stop")) {
        out.insert("stop_sequences".into(), stops);
    }
    for key in ["temperature", "top_p", "top_k", "stream"] {
        if let Some(v) = req.remove(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v);
        }
    }
    if let Some(Value::String(user)) = req.remove("user") {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    // Non-standard pass-through: an OpenAI client may send Anthropic's
    // `thinking` config (as several OpenAI-compatible gateways accept).
    if let Some(thinking @ Value::Object(_)) = req.remove("thinking") {
        out.insert("thinking".into(), thinking);
    }

    let tools = translate_tools(req.get("tools"));
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
    }
    let parallel_disabled = req.get("parallel_tool_calls") == Some(&Value::Bool(false));
    if let Some(mut choice) = ToolChoice::of(req.get("tool_choice")).map(translate_tool_choice) {
        if parallel_disabled && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
        out.insert("tool_choice".into(), choice);
    } else if parallel_disabled && has_tools {
        out.insert(
            "tool_choice".into(),
            json!({ "type": "auto", "disable_parallel_tool_use": true }),
        );
    }
    Ok(out)
}

/// Splits out system/developer messages (hoisted to the top-level `system`,
/// wherever they occur) and converts the rest.
fn translate_messages(messages: Vec<Value>) -> Result<(Option<Value>, Vec<Value>), LlmError> {
    let mut system_blocks: Vec<Value> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    // Index in `out` of the user message collecting consecutive tool results.
    let mut tool_result_msg: Option<usize> = None;

    for (i, msg) in messages.into_iter().enumerate() {
        let Value::Object(mut msg) = msg else {
            return Err(LlmError::bad_request(format!(
                "messages[{i}] must be an object"
            )));
        };
        let role = msg
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if role != "tool" {
            tool_result_msg = None;
        }
        match role.as_str() {
            "system" | "developer" => {
                system_blocks.extend(text_blocks(msg.remove("content")));
            }
            "user" => {
                let content = user_content(i, msg.get("content"))?;
                out.push(json!({ "role": "user", "content": content }));
            }
            "assistant" => out.push(assistant_message(i, msg)?),
            "tool" => {
                let block = json!({
                    "type": "tool_result",
                    "tool_use_id": msg.get("tool_call_id").cloned().unwrap_or(Value::String(String::new())),
                    "content": crate::pivot::content_text(msg.get("content")),
                });
                match tool_result_msg.and_then(|idx| out.get_mut(idx)) {
                    Some(existing) => {
                        if let Some(Value::Array(blocks)) = existing.get_mut("content") {
                            blocks.push(block);
                        }
                    }
                    None => {
                        out.push(json!({ "role": "user", "content": [block] }));
                        tool_result_msg = Some(out.len() - 1);
                    }
                }
            }
            other => {
                return Err(LlmError::bad_request(format!(
                    "messages[{i}].role `{other}` is not supported (expected system, developer, user, assistant or tool)"
                )))
            }
        }
    }

    let system = match system_blocks.len() {
        0 => None,
        1 => system_blocks.pop().and_then(|b| b.get("text").cloned()),
        _ => Some(Value::Array(system_blocks)),
    };
    Ok((system, out))
}

/// Text parts of a content value as Anthropic text blocks.
fn text_blocks(content: Option<Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![json!({ "type": "text", "text": s })],
        Some(Value::Array(parts)) => parts
            .into_iter()
            .filter_map(|p| {
                let text = p.get("text").and_then(Value::as_str)?;
                Some(json!({ "type": "text", "text": text }))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn user_content(i: usize, content: Option<&Value>) -> Result<Value, LlmError> {
    let parts = match UserContent::of(i, content)? {
        UserContent::Text(s) => return Ok(Value::String(s.to_owned())),
        UserContent::Parts(parts) => parts,
    };
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match UserPart::of(part) {
            UserPart::Text(text) => blocks.push(json!({ "type": "text", "text": text })),
            UserPart::ImageUrl(url) => {
                let url = required_image_url(i, j, url)?;
                let source = match base64_data_url(i, j, url)? {
                    Some((media_type, data)) => {
                        json!({ "type": "base64", "media_type": media_type, "data": data })
                    }
                    None => json!({ "type": "url", "url": url }),
                };
                blocks.push(json!({ "type": "image", "source": source }));
            }
            // input_audio, file, ...: no Anthropic equivalent here; dropped (README).
            _ => {}
        }
    }
    Ok(Value::Array(blocks))
}

fn assistant_message(i: usize, mut msg: Map<String, Value>) -> Result<Value, LlmError> {
    let mut blocks: Vec<Value> = Vec::new();
    // Thinking must come first. Only blocks with a signature (LiteLLM-style
    // `thinking_blocks`, as this crate emits) can be replayed to Anthropic; a
    // bare `reasoning_content` has none and is dropped.
    if let Some(Value::Array(thinking)) = msg.remove("thinking_blocks") {
        for b in thinking {
            match b.get("type").and_then(Value::as_str) {
                Some("thinking")
                    if b.get("signature")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty()) =>
                {
                    blocks.push(json!({
                        "type": "thinking",
                        "thinking": b.get("thinking").cloned().unwrap_or(Value::String(String::new())),
                        "signature": b["signature"].clone(),
                    }));
                }
                Some("redacted_thinking") => {
                    if let Some(data) = b.get("data") {
                        blocks.push(json!({ "type": "redacted_thinking", "data": data }));
                    }
                }
                _ => {}
            }
        }
    }
    for text in assistant_texts(msg.get("content")) {
        blocks.push(json!({ "type": "text", "text": text }));
    }
    let calls = assistant_tool_calls(
        i,
        msg.get("tool_calls"),
        false,
        "is not a JSON object; Anthropic requires tool input to be an object",
    )?;
    for call in calls {
        blocks.push(json!({
            "type": "tool_use",
            "id": call.id.cloned().unwrap_or(Value::String(String::new())),
            "name": call.name,
            "input": call.input,
        }));
    }
    Ok(json!({ "role": "assistant", "content": blocks }))
}

fn translate_tools(tools: Option<&Value>) -> Vec<Value> {
    function_tools(tools)
        .map(|f| {
            let mut out = Map::new();
            out.insert("name".into(), f.name.clone());
            if let Some(d) = f.description.filter(|d| !d.is_null()) {
                out.insert("description".into(), d.clone());
            }
            out.insert("input_schema".into(), f.parameters_or_empty());
            Value::Object(out)
        })
        .collect()
}

fn translate_tool_choice(choice: ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!({ "type": "auto" }),
        ToolChoice::None => json!({ "type": "none" }),
        ToolChoice::Required => json!({ "type": "any" }),
        ToolChoice::Function(name) => json!({ "type": "tool", "name": name }),
    }
}
