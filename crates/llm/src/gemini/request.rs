//! OpenAI Chat Completions request -> Gemini `GenerateContentRequest`, and
//! Anthropic Messages -> Gemini through the Anthropic -> OpenAI translation.
//!
//! References: <https://platform.openai.com/docs/api-reference/chat/create>;
//! Gemini `GenerateContentRequest`, `Content`, `Part`, `Tool`,
//! `ToolConfig`, `GenerationConfig`
//! (<https://ai.google.dev/api/generate-content>,
//! <https://ai.google.dev/api/caching#Content>,
//! <https://ai.google.dev/gemini-api/docs/function-calling>). The model is
//! not part of the body (it is in the URL path) and neither is `stream`
//! (the method is `streamGenerateContent`). Fields without a Gemini
//! equivalent are dropped; see README.md.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::gemini::schema;
use crate::gemini::wire::THOUGHT_SIGNATURE_SEPARATOR;
use crate::pivot::{
    assistant_texts, assistant_tool_calls, base64_data_url, function_tools, max_tokens,
    required_image_url, stop_sequences, text_parts_with, FunctionTool, ToolChoice, UserPart,
};
use crate::LlmError;

/// `reasoning_effort` -> `thinkingConfig.thinkingBudget`, the mapping
/// Google's own OpenAI-compatible endpoint documents.
fn thinking_budget_for_effort(effort: &str) -> Option<u64> {
    Some(match effort {
        "none" => 0,
        "minimal" | "low" => 1024,
        "medium" => 8192,
        "high" => 24576,
        _ => return None,
    })
}

pub(crate) fn translate(mut req: Map<String, Value>) -> Result<Map<String, Value>, LlmError> {
    let mut out = Map::new();
    let messages = match req.remove("messages") {
        Some(Value::Array(m)) => m,
        _ => Vec::new(),
    };
    let (system, contents) = translate_messages(messages)?;
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }

    let declarations: Vec<Value> = function_tools(req.get("tools"))
        .map(function_declaration)
        .collect();
    let has_tools = !declarations.is_empty();
    if has_tools {
        out.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
    }
    if let Some(config) = ToolChoice::of(req.get("tool_choice")).map(function_calling_config) {
        if has_tools {
            out.insert(
                "toolConfig".into(),
                json!({ "functionCallingConfig": config }),
            );
        }
    }

    let config = generation_config(&req);
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(out)
}

/// Anthropic request -> OpenAI -> Gemini. `top_k` and `thinking` have no
/// OpenAI spelling, so they are taken from the Anthropic request first and
/// set on the Gemini `generationConfig` directly.
pub(crate) fn translate_from_anthropic(
    req: Map<String, Value>,
) -> Result<Map<String, Value>, LlmError> {
    let top_k = req.get("top_k").filter(|v| v.is_number()).cloned();
    let thinking_budget = req
        .get("thinking")
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("enabled"))
        .and_then(|t| t.get("budget_tokens"))
        .and_then(Value::as_u64);
    let openai = crate::anthropic::client_request::translate(req)?;
    let mut out = translate(openai)?;
    if top_k.is_some() || thinking_budget.is_some() {
        let config = out
            .entry("generationConfig")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(config) = config {
            if let Some(k) = top_k {
                config.insert("topK".into(), k);
            }
            if let Some(budget) = thinking_budget {
                config.insert(
                    "thinkingConfig".into(),
                    json!({ "thinkingBudget": budget, "includeThoughts": true }),
                );
            }
        }
    }
    Ok(out)
}

fn generation_config(req: &Map<String, Value>) -> Map<String, Value> {
    let mut config = Map::new();
    let mut copy = |from: &str, to: &str| {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            config.insert(to.into(), v.clone());
        }
    };
    copy("temperature", "temperature");
    copy("top_p", "topP");
    copy("top_k", "topK");
    copy("n", "candidateCount");
    copy("seed", "seed");
    copy("presence_penalty", "presencePenalty");
    copy("frequency_penalty", "frequencyPenalty");
    if let Some(m) = max_tokens(req) {
        config.insert("maxOutputTokens".into(), m.clone());
    }
    if let Some(stops) = stop_sequences(req.get("stop")) {
        config.insert("stopSequences".into(), stops);
    }
    match req.get("response_format") {
        Some(f) if f.get("type").and_then(Value::as_str) == Some("json_object") => {
            config.insert("responseMimeType".into(), "application/json".into());
        }
        Some(f) if f.get("type").and_then(Value::as_str) == Some("json_schema") => {
            config.insert("responseMimeType".into(), "application/json".into());
            if let Some(schema) = f.get("json_schema").and_then(|s| s.get("schema")) {
                config.insert("responseSchema".into(), schema::sanitize(schema));
            }
        }
        _ => {}
    }
    if let Some(budget) = req
        .get("reasoning_effort")
        .and_then(Value::as_str)
        .and_then(thinking_budget_for_effort)
    {
        config.insert(
            "thinkingConfig".into(),
            json!({ "thinkingBudget": budget, "includeThoughts": budget > 0 }),
        );
    }
    config
}

/// Builds `contents` and the system parts. Consecutive messages of the same
/// Gemini role are merged into one `Content` (tool results must all sit in
/// the turn right after the model's function calls).
fn translate_messages(messages: Vec<Value>) -> Result<(Vec<Value>, Vec<Value>), LlmError> {
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<(String, Vec<Value>)> = Vec::new();
    // Tool-call id -> function name, from the assistant messages seen so far;
    // a later call with the same id replaces an earlier one.
    let mut call_names: HashMap<String, String> = HashMap::new();

    for (i, msg) in messages.into_iter().enumerate() {
        let Value::Object(msg) = msg else {
            return Err(LlmError::bad_request(format!(
                "messages[{i}] must be an object"
            )));
        };
        let role = msg.get("role").and_then(Value::as_str).unwrap_or_default();
        let (gemini_role, parts) = match role {
            "system" | "developer" => {
                system.extend(text_parts(msg.get("content")));
                continue;
            }
            "user" => ("user", user_parts(i, msg.get("content"))?),
            "assistant" => ("model", model_parts(i, &msg, &mut call_names)?),
            "tool" | "function" => ("user", vec![function_response(i, &msg, &call_names)?]),
            other => {
                return Err(LlmError::bad_request(format!(
                    "messages[{i}].role `{other}` is not supported (expected system, developer, user, assistant or tool)"
                )))
            }
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((last_role, last_parts)) if last_role == gemini_role => last_parts.extend(parts),
            _ => contents.push((gemini_role.to_owned(), parts)),
        }
    }
    let contents = contents
        .into_iter()
        .map(|(role, parts)| json!({ "role": role, "parts": parts }))
        .collect();
    Ok((system, contents))
}

fn text_parts(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) if !s.is_empty() => vec![json!({ "text": s })],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .filter(|t| !t.is_empty())
            .map(|t| json!({ "text": t }))
            .collect(),
        _ => Vec::new(),
    }
}

/// Empty text parts are left out: Gemini rejects them ("empty text parameter").
fn user_parts(i: usize, content: Option<&Value>) -> Result<Vec<Value>, LlmError> {
    text_parts_with(i, content, |j, part| match part {
        UserPart::ImageUrl(url) => url_part(i, j, required_image_url(i, j, url)?).map(Some),
        UserPart::InputAudio {
            data: Some(data),
            format,
        } => Ok(Some(
            json!({ "inlineData": { "mimeType": format!("audio/{format}"), "data": data } }),
        )),
        // Only inline file data maps; OpenAI `file_id`s mean nothing to Google.
        UserPart::File(Some(url)) if url.starts_with("data:") => url_part(i, j, url).map(Some),
        _ => Ok(None),
    })
}

/// `data:<mime>;base64,<data>` -> `inlineData`; any other URL -> `fileData`
/// with the MIME type guessed from the extension (Gemini requires one).
fn url_part(i: usize, j: usize, url: &str) -> Result<Value, LlmError> {
    Ok(match base64_data_url(i, j, url)? {
        Some((mime, data)) => json!({ "inlineData": { "mimeType": mime, "data": data } }),
        None => json!({ "fileData": { "mimeType": mime_from_extension(url), "fileUri": url } }),
    })
}

fn mime_from_extension(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        // jpg, jpeg and unknown: an image_url is most likely a JPEG.
        _ => "image/jpeg",
    }
}

fn model_parts(
    i: usize,
    msg: &Map<String, Value>,
    call_names: &mut HashMap<String, String>,
) -> Result<Vec<Value>, LlmError> {
    // reasoning_content / thinking_blocks: Gemini thoughts cannot be replayed
    // (only their signatures, which ride in tool-call ids); dropped (README).
    let mut parts: Vec<Value> = assistant_texts(msg.get("content"))
        .into_iter()
        .map(|text| json!({ "text": text }))
        .collect();
    let calls = assistant_tool_calls(
        i,
        msg.get("tool_calls"),
        false,
        "is not a JSON object; Gemini requires function call args to be an object",
    )?;
    for call in calls {
        let (id, name, args) = (call.id_str(), call.name, call.input);
        if !id.is_empty() {
            call_names.insert(id.to_owned(), name.to_owned());
        }
        let mut part = json!({ "functionCall": { "name": name, "args": args } });
        if let Some((_, signature)) = id.split_once(THOUGHT_SIGNATURE_SEPARATOR) {
            part["thoughtSignature"] = Value::String(signature.to_owned());
        }
        parts.push(part);
    }
    Ok(parts)
}

/// A `tool` (or legacy `function`) message -> `functionResponse`. Gemini
/// matches responses to calls by function NAME, which OpenAI tool messages
/// do not carry: it is looked up from the assistant tool call with the same
/// id, falling back to the message's own `name`.
fn function_response(
    i: usize,
    msg: &Map<String, Value>,
    call_names: &HashMap<String, String>,
) -> Result<Value, LlmError> {
    let id = msg.get("tool_call_id").and_then(Value::as_str);
    let name = id
        .and_then(|id| call_names.get(id).cloned())
        .or_else(|| msg.get("name").and_then(Value::as_str).map(str::to_owned))
        .ok_or_else(|| {
            LlmError::bad_request(format!(
                "messages[{i}]: tool_call_id {:?} matches no earlier assistant tool call; Gemini needs the function name",
                id.unwrap_or_default()
            ))
        })?;
    let text = crate::pivot::content_text(msg.get("content"));
    // A JSON object result is passed as the response struct; anything else
    // (text, arrays, numbers) is wrapped, since `response` must be an object.
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => json!({ "result": other }),
        Err(_) => json!({ "result": text }),
    };
    Ok(json!({ "functionResponse": { "name": name, "response": response } }))
}

fn function_declaration(f: FunctionTool) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), f.name.clone());
    if let Some(d) = f.description.filter(|d| d.is_string()) {
        out.insert("description".into(), d.clone());
    }
    if let Some(params) = f.parameters {
        let params = schema::sanitize(params);
        if schema::has_properties(&params) {
            out.insert("parameters".into(), params);
        }
    }
    Value::Object(out)
}

fn function_calling_config(choice: ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!({ "mode": "AUTO" }),
        ToolChoice::None => json!({ "mode": "NONE" }),
        ToolChoice::Required => json!({ "mode": "ANY" }),
        ToolChoice::Function(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
    }
}
