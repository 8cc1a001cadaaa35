//! OpenAI Chat Completions request -> Anthropic Messages request.
//!
//! References: <https://platform.openai.com/docs/api-reference/chat/create>,
//! <https://docs.anthropic.com/en/api/messages>. Fields without an
//! Anthropic equivalent are dropped; see README.md.

use serde_json::{json, Map, Value};

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

    let max_tokens = req
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| req.get("max_tokens").filter(|v| !v.is_null()))
        .cloned()
        .unwrap_or_else(|| Value::from(default_max_tokens));
    out.insert("max_tokens".into(), max_tokens);

    match req.remove("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) if !list.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(list));
        }
        _ => {}
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

    let tools = match req.remove("tools") {
        Some(Value::Array(tools)) => translate_tools(tools),
        _ => Vec::new(),
    };
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
    }
    let parallel_disabled = req.get("parallel_tool_calls") == Some(&Value::Bool(false));
    if let Some(mut choice) = req.get("tool_choice").and_then(translate_tool_choice) {
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
                let content = user_content(i, msg.remove("content"))?;
                out.push(json!({ "role": "user", "content": content }));
            }
            "assistant" => out.push(assistant_message(i, msg)?),
            "tool" => {
                let block = json!({
                    "type": "tool_result",
                    "tool_use_id": msg.get("tool_call_id").cloned().unwrap_or(Value::String(String::new())),
                    "content": crate::request::content_text(msg.get("content")),
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

fn user_content(i: usize, content: Option<Value>) -> Result<Value, LlmError> {
    let parts = match content {
        Some(Value::String(s)) => return Ok(Value::String(s)),
        Some(Value::Array(parts)) => parts,
        Some(Value::Null) | None => return Ok(Value::String(String::new())),
        Some(_) => {
            return Err(LlmError::bad_request(format!(
                "messages[{i}].content must be a string or an array"
            )))
        }
    };
    let mut blocks = Vec::new();
    for (j, part) in parts.into_iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = part.get("text").and_then(Value::as_str).unwrap_or_default();
                blocks.push(json!({ "type": "text", "text": text }));
            }
            Some("image_url") => {
                let url = part
                    .get("image_url")
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        LlmError::bad_request(format!(
                            "messages[{i}].content[{j}].image_url.url is missing"
                        ))
                    })?;
                blocks.push(json!({ "type": "image", "source": image_source(i, j, url)? }));
            }
            // input_audio, file, ...: no Anthropic equivalent here; dropped (README).
            _ => {}
        }
    }
    Ok(Value::Array(blocks))
}

/// `data:<media>;base64,<data>` -> base64 source; anything else -> url source.
fn image_source(i: usize, j: usize, url: &str) -> Result<Value, LlmError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(json!({ "type": "url", "url": url }));
    };
    let (meta, data) = rest.split_once(',').ok_or_else(|| {
        LlmError::bad_request(format!(
            "messages[{i}].content[{j}]: malformed data URL (no comma)"
        ))
    })?;
    let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
        LlmError::bad_request(format!(
            "messages[{i}].content[{j}]: only base64 data URLs are supported"
        ))
    })?;
    Ok(json!({ "type": "base64", "media_type": media_type, "data": data }))
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
    match msg.remove("content") {
        Some(Value::String(s)) if !s.is_empty() => {
            blocks.push(json!({ "type": "text", "text": s }))
        }
        Some(Value::Array(parts)) => {
            for p in parts {
                // Text and refusal parts both carry assistant-visible text.
                let text = p
                    .get("text")
                    .or_else(|| p.get("refusal"))
                    .and_then(Value::as_str);
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    blocks.push(json!({ "type": "text", "text": text }));
                }
            }
        }
        _ => {}
    }
    if let Some(Value::Array(calls)) = msg.remove("tool_calls") {
        for (j, call) in calls.into_iter().enumerate() {
            let func = call.get("function");
            let name = func
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let args = func.and_then(|f| f.get("arguments"));
            let input = match args {
                Some(Value::String(s)) if s.trim().is_empty() => json!({}),
                Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        return Err(LlmError::bad_request(format!(
                            "messages[{i}].tool_calls[{j}].function.arguments is not a JSON object; Anthropic requires tool input to be an object"
                        )))
                    }
                },
                Some(v @ Value::Object(_)) => v.clone(),
                _ => json!({}),
            };
            blocks.push(json!({
                "type": "tool_use",
                "id": call.get("id").cloned().unwrap_or(Value::String(String::new())),
                "name": name,
                "input": input,
            }));
        }
    }
    Ok(json!({ "role": "assistant", "content": blocks }))
}

fn translate_tools(tools: Vec<Value>) -> Vec<Value> {
    tools
        .into_iter()
        .filter_map(|t| {
            // Only function tools have an Anthropic equivalent.
            if t.get("type")
                .and_then(Value::as_str)
                .is_some_and(|ty| ty != "function")
            {
                return None;
            }
            let f = t.get("function")?;
            let mut out = Map::new();
            out.insert("name".into(), f.get("name")?.clone());
            if let Some(d) = f.get("description").filter(|d| !d.is_null()) {
                out.insert("description".into(), d.clone());
            }
            let schema = f
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
            out.insert("input_schema".into(), schema);
            Some(Value::Object(out))
        })
        .collect()
}

fn translate_tool_choice(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Some(json!({ "type": "auto" })),
            "none" => Some(json!({ "type": "none" })),
            "required" => Some(json!({ "type": "any" })),
            _ => None,
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)?;
            Some(json!({ "type": "tool", "name": name }))
        }
        _ => None,
    }
}
