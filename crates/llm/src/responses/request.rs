//! OpenAI Responses request (`POST /v1/responses`) -> OpenAI Chat
//! Completions request, then on through the existing Chat -> egress
//! translation (Chat is the pivot, so every provider format reachable from
//! Chat is reachable from Responses without further code here).
//!
//! References: create a response
//! (<https://platform.openai.com/docs/api-reference/responses/create>):
//! `instructions`, `input` as a string or a list of items (`message` with
//! `input_text` / `input_image` / `input_file` / `output_text` parts,
//! `function_call`, `function_call_output`, `reasoning`, `item_reference`),
//! `tools` (`{type:"function", name, description, parameters, strict}` and
//! built-in tools), `tool_choice`, `text.format`, `reasoning.effort`,
//! `max_output_tokens`; function calling guide
//! (<https://platform.openai.com/docs/guides/function-calling>) for
//! `function_call_output {call_id, output}`.
//!
//! The gateway is stateless: `previous_response_id`, `conversation`,
//! `item_reference` items, `prompt` templates and `background: true` need
//! stored state and are refused with 400; `store` is ignored (nothing is ever stored).
//! Everything dropped on the way is listed in README.md.

use serde_json::{json, Map, Value};

use crate::dialect::apply_request_options;
use crate::dialect::Route;
use crate::pivot::serialise_request;
use crate::{LlmError, PreparedRequest, RequestOptions};

/// Parameters surfaced in `PreparedRequest::params` (Responses spelling).
const RESPONSES_PARAMS: &[&str] = &["temperature", "top_p", "max_output_tokens", "reasoning"];

/// Top-level fields copied unchanged into the Chat request (same name and
/// meaning in both APIs).
const COPIED_FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "metadata",
    "user",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// `prepare_request` for a Responses client: options are applied to the
/// Responses body (so users write them in the client's spelling, as for the
/// other ingresses) and the model resolved, the body is translated to Chat,
/// and the Chat request object goes through the Chat client's pipeline
/// (as `prepare_request(OpenAiChat, egress, ..)` would, without serialising
/// and parsing it again) for the provider translation.
pub(crate) fn prepare(
    route: Route,
    mut req: Map<String, Value>,
    opts: &RequestOptions,
) -> Result<PreparedRequest, LlmError> {
    let (request_model, _) = apply_request_options(&mut req, opts);
    let params = crate::pivot::pick_params(&req, RESPONSES_PARAMS);

    let chat = to_chat(req)?;
    // Options and the model were applied above, in the client's format.
    let empty = Map::new();
    let chat_opts = RequestOptions {
        model_override: None,
        model_aliases: &[],
        defaults: &empty,
        overrides: &empty,
        default_max_tokens: opts.default_max_tokens,
    };
    let chat_route = super::response::chat_route(route.provider);
    let mut prepared = chat_route.client.prepare(chat_route, chat, &chat_opts)?;
    prepared.request_model = request_model;
    prepared.params = params;
    Ok(prepared)
}

/// `prepare_request` for a Responses client in front of a provider that has
/// the Responses API itself (OpenAI, Azure OpenAI, OpenAI-compatible
/// servers): options and the model are applied to the body, which is
/// otherwise forwarded as sent, so stateful fields (`previous_response_id`,
/// `conversation`, ...) reach the provider that stores the state. The prompt
/// is read through the Chat view when it can be; a stateful request whose
/// history lives at the provider yields what the body itself holds.
pub(crate) fn prepare_native(
    mut req: Map<String, Value>,
    opts: &RequestOptions,
) -> Result<PreparedRequest, LlmError> {
    let (request_model, upstream_model) = apply_request_options(&mut req, opts);
    let params = crate::pivot::pick_params(&req, RESPONSES_PARAMS);
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let prompt = native_prompt(&req);
    Ok(PreparedRequest {
        body: serialise_request(req)?,
        request_model,
        upstream_model,
        stream,
        params,
        prompt,
    })
}

/// The prompt of a Responses body as the Chat view sees it: `instructions`
/// and the `input` items, skipping what only the provider's stored state can
/// resolve (`item_reference`).
fn native_prompt(req: &Map<String, Value>) -> Vec<crate::PromptMessage> {
    let mut view = Map::new();
    for key in ["instructions", "input"] {
        if let Some(v) = req.get(key) {
            view.insert(key.into(), v.clone());
        }
    }
    if let Some(Value::Array(items)) = view.get_mut("input") {
        items.retain(|i| i.get("type").and_then(Value::as_str) != Some("item_reference"));
    }
    if !view.contains_key("input") {
        view.insert("input".into(), Value::Array(Vec::new()));
    }
    to_chat(view)
        .and_then(|chat| crate::openai::openai_prompt(&chat))
        .unwrap_or_default()
}

/// Responses request object -> Chat Completions request object.
pub(crate) fn to_chat(mut req: Map<String, Value>) -> Result<Map<String, Value>, LlmError> {
    refuse_stateful(&req)?;
    let mut out = Map::new();
    if let Some(model) = req.remove("model") {
        out.insert("model".into(), model);
    }

    let mut messages = Vec::new();
    match req.remove("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({ "role": "system", "content": s })),
        Some(_) => return Err(LlmError::bad_request("`instructions` must be a string")),
    }
    match req.remove("input") {
        Some(Value::String(s)) => messages.push(json!({ "role": "user", "content": s })),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                translate_item(i, item, &mut messages)?;
            }
        }
        None | Some(Value::Null) => {
            return Err(LlmError::bad_request(
                "request body is missing required field `input` (this gateway is stateless, so the whole conversation must be sent)",
            ))
        }
        Some(_) => {
            return Err(LlmError::bad_request(
                "`input` must be a string or an array of input items",
            ))
        }
    }
    out.insert("messages".into(), Value::Array(messages));

    for &key in COPIED_FIELDS {
        if let Some(v) = req.remove(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v);
        }
    }
    if let Some(v) = req.remove("max_output_tokens").filter(|v| !v.is_null()) {
        out.insert("max_tokens".into(), v);
    }
    if req.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), Value::Bool(true));
        // `response.completed` carries usage; Chat servers only stream it when asked.
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if let Some(effort) = req
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|e| !e.is_null())
    {
        out.insert("reasoning_effort".into(), effort.clone());
    }
    if let Some(text) = req.get("text") {
        translate_text_config(text, &mut out)?;
    }
    if let Some(tools) = req.get("tools").filter(|t| !t.is_null()) {
        let Value::Array(tools) = tools else {
            return Err(LlmError::bad_request("`tools` must be an array"));
        };
        let tools = tools
            .iter()
            .enumerate()
            .map(|(i, t)| translate_tool(i, t))
            .collect::<Result<Vec<_>, _>>()?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = req.get("tool_choice").filter(|c| !c.is_null()) {
        out.insert("tool_choice".into(), translate_tool_choice(choice)?);
    }
    Ok(out)
}

fn refuse_stateful(req: &Map<String, Value>) -> Result<(), LlmError> {
    let present = |k: &str| req.get(k).is_some_and(|v| !v.is_null());
    if present("previous_response_id") {
        return Err(LlmError::bad_request(
            "`previous_response_id` is not supported: this gateway does not store responses; send the whole conversation in `input`",
        ));
    }
    if present("conversation") {
        return Err(LlmError::bad_request(
            "`conversation` is not supported: this gateway does not store conversations; send the whole conversation in `input`",
        ));
    }
    if present("prompt") {
        return Err(LlmError::bad_request(
            "`prompt` (a stored prompt template) is not supported: this gateway cannot reach OpenAI's prompt storage; send `instructions` and `input` instead",
        ));
    }
    if req.get("background") == Some(&Value::Bool(true)) {
        return Err(LlmError::bad_request(
            "`background: true` is not supported: this gateway does not store responses",
        ));
    }
    Ok(())
}

/// One `input` item -> Chat messages appended to `messages`.
fn translate_item(i: usize, item: &Value, messages: &mut Vec<Value>) -> Result<(), LlmError> {
    if !item.is_object() {
        return Err(LlmError::bad_request(format!(
            "input[{i}] must be an object"
        )));
    }
    // `type` is optional on messages ("easy input message").
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "message" => messages.push(translate_message(i, item)?),
        "function_call" => {
            let call_id = required_str(item, "call_id", i)?;
            let name = required_str(item, "name", i)?;
            let arguments = match item.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => "{}".to_owned(),
                // Lenient: some clients send the object itself.
                Some(other) => other.to_string(),
            };
            let call = json!({
                "id": call_id, "type": "function",
                "function": { "name": name, "arguments": arguments },
            });
            // Consecutive calls (and calls right after the assistant's text)
            // belong to one assistant turn in Chat.
            match messages.last_mut() {
                Some(last) if last.get("role").and_then(Value::as_str) == Some("assistant") => {
                    match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => last["tool_calls"] = json!([call]),
                    }
                }
                _ => messages.push(json!({
                    "role": "assistant", "content": null, "tool_calls": [call],
                })),
            }
        }
        "function_call_output" => {
            let call_id = required_str(item, "call_id", i)?;
            let content = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                // A list of input_text / input_image / input_file: Chat tool
                // messages carry text only (README).
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("input_text"))
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                None | Some(Value::Null) => String::new(),
                Some(other) => other.to_string(),
            };
            messages.push(json!({ "role": "tool", "tool_call_id": call_id, "content": content }));
        }
        // Reasoning items are the provider's own (encrypted) state; other
        // providers cannot take them back (README).
        "reasoning" => {}
        "item_reference" => {
            return Err(LlmError::bad_request(format!(
                "input[{i}] is an `item_reference`, which needs stored responses; this gateway is stateless, so send the item itself"
            )))
        }
        other => {
            return Err(LlmError::bad_request(format!(
                "input[{i}] has type `{other}`, which this gateway cannot translate (only message, function_call, function_call_output and reasoning items; built-in tools are not supported)"
            )))
        }
    }
    Ok(())
}

fn required_str(item: &Value, key: &str, i: usize) -> Result<String, LlmError> {
    item.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            LlmError::bad_request(format!("input[{i}].{key} is missing or not a string"))
        })
}

fn translate_message(i: usize, item: &Value) -> Result<Value, LlmError> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("user") => "user",
        Some("assistant") => "assistant",
        // `developer` is OpenAI's newer name for `system`; `system` is what
        // every Chat-compatible server (and the Anthropic / Gemini
        // translations) understands.
        Some("system") | Some("developer") => "system",
        Some(other) => {
            return Err(LlmError::bad_request(format!(
                "input[{i}].role `{other}` is not supported (expected user, assistant, system or developer)"
            )))
        }
        None => {
            return Err(LlmError::bad_request(format!(
                "input[{i}].role is missing or not a string"
            )))
        }
    };
    let content = match item.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => {
            let parts = parts
                .iter()
                .enumerate()
                .map(|(j, p)| translate_part(i, j, p))
                .collect::<Result<Vec<_>, _>>()?;
            let all_text = parts.iter().all(|p| p["type"] == "text");
            if role != "user" || all_text {
                // Assistant and system content is text in Chat; a plain
                // string is what every server accepts.
                if !all_text {
                    return Err(LlmError::bad_request(format!(
                        "input[{i}]: only text content is supported in {role} messages"
                    )));
                }
                let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
                Value::String(texts.join("\n"))
            } else {
                Value::Array(parts)
            }
        }
        None | Some(Value::Null) => Value::String(String::new()),
        Some(_) => {
            return Err(LlmError::bad_request(format!(
                "input[{i}].content must be a string or an array of content parts"
            )))
        }
    };
    Ok(json!({ "role": role, "content": content }))
}

/// One content part -> a Chat content part.
fn translate_part(i: usize, j: usize, part: &Value) -> Result<Value, LlmError> {
    let at = format!("input[{i}].content[{j}]");
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "input_text" | "output_text" | "text" => {
            let text = part.get("text").and_then(Value::as_str).ok_or_else(|| {
                LlmError::bad_request(format!("{at}.text is missing or not a string"))
            })?;
            Ok(json!({ "type": "text", "text": text }))
        }
        // An assistant refusal replayed in history: keep its words as text.
        "refusal" => Ok(json!({
            "type": "text",
            "text": part.get("refusal").and_then(Value::as_str).unwrap_or_default(),
        })),
        "input_image" => {
            let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                return Err(LlmError::bad_request(if part.get("file_id").is_some() {
                    format!("{at}: `input_image.file_id` is not supported (it refers to OpenAI file storage); send `image_url` (an https or data: URL) instead")
                } else {
                    format!("{at}.image_url is missing or not a string")
                }));
            };
            let mut image_url = json!({ "url": url });
            if let Some(detail) = part.get("detail").filter(|d| d.is_string()) {
                image_url["detail"] = detail.clone();
            }
            Ok(json!({ "type": "image_url", "image_url": image_url }))
        }
        "input_file" => {
            let Some(data) = part.get("file_data").and_then(Value::as_str) else {
                return Err(LlmError::bad_request(format!(
                    "{at}: only `input_file` with inline `file_data` is supported (`file_id` and `file_url` refer to storage this gateway cannot reach)"
                )));
            };
            let mut file = json!({ "file_data": data });
            if let Some(name) = part.get("filename").filter(|n| n.is_string()) {
                file["filename"] = name.clone();
            }
            Ok(json!({ "type": "file", "file": file }))
        }
        other => Err(LlmError::bad_request(format!(
            "{at} has unsupported type `{other}` (expected input_text, input_image, input_file or output_text)"
        ))),
    }
}

/// `text.format` -> `response_format`; `text.verbosity` -> `verbosity`.
fn translate_text_config(text: &Value, out: &mut Map<String, Value>) -> Result<(), LlmError> {
    if let Some(verbosity) = text.get("verbosity").filter(|v| v.is_string()) {
        out.insert("verbosity".into(), verbosity.clone());
    }
    let Some(format) = text.get("format").filter(|f| !f.is_null()) else {
        return Ok(());
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            out.insert("response_format".into(), json!({ "type": "json_object" }));
        }
        Some("json_schema") => {
            // Responses flattens what Chat nests under `json_schema`.
            let mut schema = Map::new();
            for key in ["name", "schema", "description", "strict"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            out.insert(
                "response_format".into(),
                json!({ "type": "json_schema", "json_schema": schema }),
            );
        }
        _ => {
            return Err(LlmError::bad_request(
                "`text.format.type` must be text, json_object or json_schema",
            ))
        }
    }
    Ok(())
}

/// A Responses function tool -> a Chat tool. Built-in tools run inside
/// OpenAI's service and cannot be provided by another model: 400.
fn translate_tool(i: usize, tool: &Value) -> Result<Value, LlmError> {
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {
            let name = tool.get("name").and_then(Value::as_str).ok_or_else(|| {
                LlmError::bad_request(format!("tools[{i}].name is missing or not a string"))
            })?;
            let mut function = json!({ "name": name });
            for key in ["description", "parameters", "strict"] {
                if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                    function[key] = v.clone();
                }
            }
            Ok(json!({ "type": "function", "function": function }))
        }
        Some(other) => Err(LlmError::bad_request(format!(
            "tools[{i}] has type `{other}`: built-in tools are not supported by this gateway, only `function` tools"
        ))),
        None => Err(LlmError::bad_request(format!(
            "tools[{i}].type is missing or not a string"
        ))),
    }
}

fn translate_tool_choice(choice: &Value) -> Result<Value, LlmError> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "none" | "auto" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").and_then(Value::as_str).ok_or_else(|| {
                LlmError::bad_request("`tool_choice.name` is missing or not a string")
            })?;
            Ok(json!({ "type": "function", "function": { "name": name } }))
        }
        Value::Object(o) => Err(LlmError::bad_request(format!(
            "`tool_choice` of type `{}` is not supported (use none, auto, required or a function)",
            o.get("type").and_then(Value::as_str).unwrap_or("?")
        ))),
        _ => Err(LlmError::bad_request(
            "`tool_choice` must be none, auto, required or {\"type\":\"function\",\"name\":...}",
        )),
    }
}
