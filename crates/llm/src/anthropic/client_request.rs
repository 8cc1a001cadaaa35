//! Anthropic Messages request -> OpenAI Chat Completions request.
//!
//! References: <https://docs.anthropic.com/en/api/messages>,
//! <https://platform.openai.com/docs/api-reference/chat/create>. Fields
//! without an OpenAI equivalent are dropped; see README.md.

use serde_json::{json, Map, Value};

use crate::LlmError;

pub(crate) fn translate(mut req: Map<String, Value>) -> Result<Map<String, Value>, LlmError> {
    let mut out = Map::new();
    if let Some(model) = req.remove("model") {
        out.insert("model".into(), model);
    }

    let mut messages = Vec::new();
    match req.remove("system") {
        Some(Value::String(s)) => messages.push(json!({ "role": "system", "content": s })),
        Some(Value::Array(blocks)) => {
            // Text parts keep the block structure; cache_control is dropped.
            let parts: Vec<Value> = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .map(|t| json!({ "type": "text", "text": t }))
                .collect();
            if !parts.is_empty() {
                messages.push(json!({ "role": "system", "content": parts }));
            }
        }
        _ => {}
    }
    if let Some(Value::Array(msgs)) = req.remove("messages") {
        for (i, m) in msgs.into_iter().enumerate() {
            translate_message(i, m, &mut messages)?;
        }
    }
    out.insert("messages".into(), Value::Array(messages));

    for key in ["max_tokens", "temperature", "top_p"] {
        if let Some(v) = req.remove(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v);
        }
    }
    if let Some(Value::Array(stops)) = req.remove("stop_sequences") {
        if !stops.is_empty() {
            out.insert("stop".into(), Value::Array(stops));
        }
    }
    if req.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), Value::Bool(true));
        // Anthropic clients always get usage in message_delta; ask for it.
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if let Some(user) = req
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .filter(|u| u.is_string())
    {
        out.insert("user".into(), user.clone());
    }

    let tools: Vec<Value> = match req.remove("tools") {
        Some(Value::Array(tools)) => tools.iter().filter_map(translate_tool).collect(),
        _ => Vec::new(),
    };
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = req.get("tool_choice") {
        if let Some(c) = translate_tool_choice(choice) {
            out.insert("tool_choice".into(), c);
        }
        if has_tools && choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(out)
}

fn translate_message(i: usize, msg: Value, out: &mut Vec<Value>) -> Result<(), LlmError> {
    let role = msg.get("role").and_then(Value::as_str).unwrap_or_default();
    let content = msg.get("content");
    match (role, content) {
        ("user" | "assistant", Some(Value::String(s))) => {
            out.push(json!({ "role": role, "content": s }));
            Ok(())
        }
        ("user", Some(Value::Array(blocks))) => {
            user_blocks(blocks, out);
            Ok(())
        }
        ("assistant", Some(Value::Array(blocks))) => {
            out.push(assistant_blocks(blocks));
            Ok(())
        }
        ("user" | "assistant", _) => Err(LlmError::bad_request(format!(
            "messages[{i}].content must be a string or an array"
        ))),
        (other, _) => Err(LlmError::bad_request(format!(
            "messages[{i}].role `{other}` is not supported (expected user or assistant)"
        ))),
    }
}

/// Tool results become `tool` messages (placed first, right after the
/// assistant's tool calls, as OpenAI requires); the remaining blocks become
/// one user message.
fn user_blocks(blocks: &[Value], out: &mut Vec<Value>) {
    let mut parts = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("tool_result") => {
                // is_error has no OpenAI equivalent; dropped (README).
                let text = crate::pivot::content_text(b.get("content"));
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::String(String::new())),
                    "content": text,
                }));
            }
            Some("text") => {
                let text = b.get("text").and_then(Value::as_str).unwrap_or_default();
                parts.push(json!({ "type": "text", "text": text }));
            }
            Some("image") => {
                if let Some(url) = b.get("source").and_then(image_url) {
                    parts.push(json!({ "type": "image_url", "image_url": { "url": url } }));
                }
            }
            // document, search_result, ...: dropped (README).
            _ => {}
        }
    }
    if parts.is_empty() {
        return;
    }
    // A single text part is sent as a plain string: accepted everywhere.
    let content = match parts.as_slice() {
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(parts),
    };
    out.push(json!({ "role": "user", "content": content }));
}

fn image_url(source: &Value) -> Option<String> {
    match source.get("type").and_then(Value::as_str)? {
        "base64" => {
            let media = source.get("media_type").and_then(Value::as_str)?;
            let data = source.get("data").and_then(Value::as_str)?;
            Some(format!("data:{media};base64,{data}"))
        }
        "url" => source.get("url").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn assistant_blocks(blocks: &[Value]) -> Value {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default())
            }
            Some("tool_use") => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": b.get("id").cloned().unwrap_or(Value::String(String::new())),
                    "type": "function",
                    "function": {
                        "name": b.get("name").cloned().unwrap_or(Value::String(String::new())),
                        "arguments": input.to_string(),
                    },
                }));
            }
            // thinking / redacted_thinking: OpenAI-compatible servers reject
            // or ignore reasoning in history; dropped (README).
            _ => {}
        }
    }
    let mut msg = Map::new();
    msg.insert("role".into(), "assistant".into());
    let has_calls = !tool_calls.is_empty();
    msg.insert(
        "content".into(),
        if text.is_empty() && has_calls {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if has_calls {
        msg.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    Value::Object(msg)
}

fn translate_tool(tool: &Value) -> Option<Value> {
    // Server tools (web_search_*, bash_*, ...) carry a versioned `type`;
    // only client tools (no type, or "custom") map to functions.
    if tool
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t != "custom")
    {
        return None;
    }
    let mut f = Map::new();
    f.insert("name".into(), tool.get("name")?.clone());
    if let Some(d) = tool.get("description") {
        f.insert("description".into(), d.clone());
    }
    f.insert(
        "parameters".into(),
        tool.get("input_schema")
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
    );
    Some(json!({ "type": "function", "function": f }))
}

fn translate_tool_choice(choice: &Value) -> Option<Value> {
    match choice.get("type").and_then(Value::as_str)? {
        "auto" => Some(json!("auto")),
        "none" => Some(json!("none")),
        "any" => Some(json!("required")),
        "tool" => {
            let name = choice.get("name")?;
            Some(json!({ "type": "function", "function": { "name": name } }))
        }
        _ => None,
    }
}
