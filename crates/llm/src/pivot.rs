//! The pivot every translation goes through: OpenAI Chat Completions.
//! Requests are translated to and from a Chat request object
//! (`Map<String, Value>`, parsed once per request); non-streaming responses
//! to and from a `chat.completion`; streams to and from typed
//! `chat.completion.chunk` views ([`OaChunk`]). This module holds those typed
//! views (only the fields the gateway reads), the neutral usage mapping and
//! the helpers every dialect shares: content-part walking, `tool_choice`
//! mapping, tool-call arguments, data URLs and stream finishing.
//!
//! References: OpenAI `chat.completion` / `chat.completion.chunk` objects
//! (<https://platform.openai.com/docs/api-reference/chat/object>,
//! <https://platform.openai.com/docs/api-reference/chat/streaming>).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{Format, LlmError, Usage};

#[derive(Deserialize, Default, Clone, Debug)]
pub(crate) struct OaUsage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub prompt_tokens_details: Option<OaPromptDetails>,
    pub completion_tokens_details: Option<OaCompletionDetails>,
}

#[derive(Deserialize, Default, Clone, Debug)]
pub(crate) struct OaPromptDetails {
    pub cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Debug)]
pub(crate) struct OaCompletionDetails {
    pub reasoning_tokens: Option<u64>,
}

impl OaUsage {
    pub fn to_usage(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens,
            cached_input_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

/// Text content of an OpenAI message: a string, or (some compatible servers)
/// an array of text parts.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(crate) enum OaContent {
    Text(String),
    Parts(Vec<OaTextPart>),
}

#[derive(Deserialize, Debug, Clone)]
pub(crate) struct OaTextPart {
    pub text: Option<String>,
}

impl OaContent {
    pub fn into_text(self) -> String {
        match self {
            OaContent::Text(s) => s,
            OaContent::Parts(p) => p.into_iter().filter_map(|p| p.text).collect(),
        }
    }
}

/// Cheap view of a non-streaming `chat.completion`.
#[derive(Deserialize, Default)]
pub(crate) struct OaResponseView {
    pub model: Option<String>,
    pub usage: Option<OaUsage>,
    #[serde(default)]
    pub choices: Option<Vec<OaChoiceView>>,
}

#[derive(Deserialize)]
pub(crate) struct OaChoiceView {
    pub message: Option<OaMessageView>,
}

#[derive(Deserialize)]
pub(crate) struct OaMessageView {
    pub content: Option<OaContent>,
}

/// One `chat.completion.chunk` (or an in-stream `{"error":...}` object).
#[derive(Deserialize, Default, Debug)]
pub(crate) struct OaChunk {
    pub id: Option<String>,
    pub model: Option<String>,
    pub choices: Option<Vec<OaChunkChoice>>,
    pub usage: Option<OaUsage>,
    pub error: Option<Value>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct OaChunkChoice {
    #[serde(default)]
    pub index: u64,
    pub delta: Option<OaDelta>,
    pub finish_reason: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
pub(crate) struct OaDelta {
    pub content: Option<String>,
    pub refusal: Option<String>,
    /// vLLM / DeepSeek convention for reasoning text.
    pub reasoning_content: Option<String>,
    /// Alternative spelling used by some OpenAI-compatible servers.
    pub reasoning: Option<String>,
    pub tool_calls: Option<Vec<OaToolCallDelta>>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct OaToolCallDelta {
    #[serde(default)]
    pub index: u64,
    pub id: Option<String>,
    pub function: Option<OaFunctionDelta>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct OaFunctionDelta {
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// OpenAI `usage` object built from neutral usage.
pub(crate) fn openai_usage_json(u: &Usage) -> Value {
    let prompt = u.input_tokens.unwrap_or(0);
    let completion = u.output_tokens.unwrap_or(0);
    let mut obj = Map::new();
    obj.insert("prompt_tokens".into(), prompt.into());
    obj.insert("completion_tokens".into(), completion.into());
    obj.insert("total_tokens".into(), (prompt + completion).into());
    if let Some(c) = u.cached_input_tokens {
        obj.insert(
            "prompt_tokens_details".into(),
            json!({ "cached_tokens": c }),
        );
    }
    if let Some(r) = u.reasoning_tokens {
        obj.insert(
            "completion_tokens_details".into(),
            json!({ "reasoning_tokens": r }),
        );
    }
    Value::Object(obj)
}

/// Seconds since the Unix epoch, for OpenAI's required `created` field
/// (Anthropic responses carry no timestamp).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------- shared helpers ----------

/// Text of a content value: a string, or the `text` of each part joined by "\n".
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let texts: Vec<String> = parts
                .iter()
                .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                    Some("text") | None => p.get("text").and_then(Value::as_str).map(str::to_owned),
                    // Anthropic tool results carry their own content.
                    Some("tool_result") => Some(content_text(p.get("content"))),
                    _ => None,
                })
                .collect();
            texts.join("\n")
        }
        _ => String::new(),
    }
}

/// The slot for `index` in a list grown on demand, `None` at `max` and
/// above (so a hostile index cannot make us allocate).
pub(crate) fn bounded_slot<T: Clone + Default>(
    list: &mut Vec<T>,
    index: u64,
    max: u64,
) -> Option<&mut T> {
    if index >= max {
        return None;
    }
    let i = index as usize;
    if list.len() <= i {
        list.resize(i + 1, T::default());
    }
    list.get_mut(i)
}

/// Picks the `names` present in a request object (`PreparedRequest::params`).
pub(crate) fn pick_params(req: &Map<String, Value>, names: &[&str]) -> Map<String, Value> {
    names
        .iter()
        .filter_map(|&k| req.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect()
}

// ---------- Chat requests, walked once for every provider ----------

/// `max_completion_tokens`, else `max_tokens` (nulls ignored).
pub(crate) fn max_tokens(req: &Map<String, Value>) -> Option<&Value> {
    req.get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| req.get("max_tokens").filter(|v| !v.is_null()))
}

/// `stop` (a string or a non-empty list) as a list of stop sequences.
pub(crate) fn stop_sequences(stop: Option<&Value>) -> Option<Value> {
    match stop {
        Some(Value::String(s)) => Some(json!([s])),
        Some(Value::Array(list)) if !list.is_empty() => Some(Value::Array(list.clone())),
        _ => None,
    }
}

/// A user message's `content`.
pub(crate) enum UserContent<'a> {
    /// A plain string (empty when the content was missing or null).
    Text(&'a str),
    /// An array of content parts; see [`UserPart::of`].
    Parts(&'a [Value]),
}

impl<'a> UserContent<'a> {
    /// `messages[i].content` of a user message; 400 when neither a string
    /// nor an array.
    pub(crate) fn of(i: usize, content: Option<&'a Value>) -> Result<Self, LlmError> {
        match content {
            Some(Value::String(s)) => Ok(UserContent::Text(s)),
            Some(Value::Array(parts)) => Ok(UserContent::Parts(parts)),
            Some(Value::Null) | None => Ok(UserContent::Text("")),
            Some(_) => Err(LlmError::bad_request(format!(
                "messages[{i}].content must be a string or an array"
            ))),
        }
    }
}

/// One content part of a user message, by its `type`.
pub(crate) enum UserPart<'a> {
    Text(&'a str),
    /// `image_url.url` (or a bare string `image_url`); `None` when missing.
    ImageUrl(Option<&'a str>),
    /// `input_audio.data` (`None` when missing) and `.format` (default `wav`).
    InputAudio {
        data: Option<&'a str>,
        format: &'a str,
    },
    /// `file.file_data` (a data URL), `None` when the file is referenced by id.
    File(Option<&'a str>),
    Other,
}

impl<'a> UserPart<'a> {
    pub(crate) fn of(part: &'a Value) -> Self {
        let str_at = |v: Option<&'a Value>| v.and_then(Value::as_str);
        match part.get("type").and_then(Value::as_str) {
            Some("text") => UserPart::Text(str_at(part.get("text")).unwrap_or_default()),
            Some("image_url") => UserPart::ImageUrl(str_at(
                part.get("image_url").and_then(|u| u.get("url").or(Some(u))),
            )),
            Some("input_audio") => {
                let audio = part.get("input_audio");
                UserPart::InputAudio {
                    data: str_at(audio.and_then(|a| a.get("data"))),
                    format: str_at(audio.and_then(|a| a.get("format"))).unwrap_or("wav"),
                }
            }
            Some("file") => {
                UserPart::File(str_at(part.get("file").and_then(|f| f.get("file_data"))))
            }
            _ => UserPart::Other,
        }
    }
}

/// The URL of `messages[i].content[j]`'s `image_url` part, or a 400.
pub(crate) fn required_image_url(i: usize, j: usize, url: Option<&str>) -> Result<&str, LlmError> {
    url.ok_or_else(|| {
        LlmError::bad_request(format!(
            "messages[{i}].content[{j}].image_url.url is missing"
        ))
    })
}

/// A `data:` URL, split.
pub(crate) enum DataUrl<'a> {
    /// Not a `data:` URL at all (e.g. http).
    NotData,
    Base64 {
        mime: &'a str,
        data: &'a str,
    },
    /// `data:` without a comma.
    Malformed,
    /// `data:` that is not base64-encoded.
    NotBase64,
}

impl<'a> DataUrl<'a> {
    pub(crate) fn parse(url: &'a str) -> Self {
        let Some(rest) = url.strip_prefix("data:") else {
            return DataUrl::NotData;
        };
        let Some((meta, data)) = rest.split_once(',') else {
            return DataUrl::Malformed;
        };
        match meta.strip_suffix(";base64") {
            Some(mime) => DataUrl::Base64 { mime, data },
            None => DataUrl::NotBase64,
        }
    }
}

/// `(mime, data)` of a base64 data URL in `messages[i].content[j]`, `None`
/// for a URL that is not a data URL, a 400 for a broken one.
pub(crate) fn base64_data_url(
    i: usize,
    j: usize,
    url: &str,
) -> Result<Option<(&str, &str)>, LlmError> {
    match DataUrl::parse(url) {
        DataUrl::NotData => Ok(None),
        DataUrl::Base64 { mime, data } => Ok(Some((mime, data))),
        DataUrl::Malformed => Err(LlmError::bad_request(format!(
            "messages[{i}].content[{j}]: malformed data URL (no comma)"
        ))),
        DataUrl::NotBase64 => Err(LlmError::bad_request(format!(
            "messages[{i}].content[{j}]: only base64 data URLs are supported"
        ))),
    }
}

/// Tool-call `arguments` as the JSON object providers want: JSON text
/// (blank = `{}`) or an object some clients send; anything else is `{}`.
/// `Err` carries text that is not a JSON object.
pub(crate) fn arguments_object(args: Option<&Value>) -> Result<Value, &str> {
    match args {
        Some(Value::String(s)) if s.trim().is_empty() => Ok(json!({})),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(s),
        },
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        _ => Ok(json!({})),
    }
}

/// A Chat `function` tool, read once for every provider.
pub(crate) struct FunctionTool<'a> {
    pub name: &'a Value,
    pub description: Option<&'a Value>,
    pub parameters: Option<&'a Value>,
}

impl FunctionTool<'_> {
    /// The parameters schema when it is an object, else an empty object
    /// schema (providers that require one).
    pub(crate) fn parameters_or_empty(&self) -> Value {
        self.parameters
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} }))
    }
}

/// The `function` tools of a Chat request (other tool types have no
/// equivalent elsewhere; a tool without a name is skipped).
pub(crate) fn function_tools(tools: Option<&Value>) -> impl Iterator<Item = FunctionTool<'_>> {
    tools
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| {
            t.get("type")
                .and_then(Value::as_str)
                .is_none_or(|ty| ty == "function")
        })
        .filter_map(|t| {
            let f = t.get("function")?;
            Some(FunctionTool {
                name: f.get("name")?,
                description: f.get("description"),
                parameters: f.get("parameters"),
            })
        })
}

/// A Chat `tool_choice`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum ToolChoice<'a> {
    Auto,
    None,
    Required,
    Function(&'a str),
}

impl<'a> ToolChoice<'a> {
    /// `auto` / `none` / `required` / `{"function":{"name"}}`; anything
    /// else (unknown strings, a function without a name) is `None`.
    pub(crate) fn of(choice: Option<&'a Value>) -> Option<Self> {
        match choice? {
            Value::String(s) => match s.as_str() {
                "auto" => Some(ToolChoice::Auto),
                "none" => Some(ToolChoice::None),
                "required" => Some(ToolChoice::Required),
                _ => None,
            },
            Value::Object(o) => o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(ToolChoice::Function),
            _ => None,
        }
    }
}

// ---------- Chat responses and chunks, built once for every provider ----------

/// The assistant `message` of a `chat.completion`: `content` is `null`
/// only when the answer is tool calls alone, as OpenAI sends it.
pub(crate) fn assistant_message(
    text: String,
    reasoning: String,
    thinking_blocks: Vec<Value>,
    tool_calls: Vec<Value>,
) -> Map<String, Value> {
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
    message
}

/// A Chat tool call (`arguments` as JSON text).
pub(crate) fn tool_call(id: &str, name: &str, arguments: String) -> Value {
    json!({
        "id": id,
        "type": "function",
        "function": { "name": name, "arguments": arguments },
    })
}

/// A `chat.completion.chunk` with the given `choices`.
pub(crate) fn chunk_json(id: &str, created: u64, model: &str, choices: Value) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    })
}

/// The `choices` of a chunk carrying one delta.
pub(crate) fn delta_choices(index: u64, delta: Value) -> Value {
    json!([{ "index": index, "delta": delta, "logprobs": null, "finish_reason": null }])
}

/// The `choices` of a chunk carrying a finish reason.
pub(crate) fn finish_choices(index: u64, finish: &str) -> Value {
    json!([{ "index": index, "delta": {}, "logprobs": null, "finish_reason": finish }])
}

/// The non-empty texts of an assistant message's `content`: the string, or
/// each `text` / `refusal` part (both carry assistant-visible text).
pub(crate) fn assistant_texts(content: Option<&Value>) -> Vec<&str> {
    match content {
        Some(Value::String(s)) if !s.is_empty() => vec![s.as_str()],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").or_else(|| p.get("refusal")))
            .filter_map(Value::as_str)
            .filter(|t| !t.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// One tool call of an assistant message in a Chat request.
pub(crate) struct AssistantToolCall<'a> {
    /// `id` as sent (normally a string).
    pub id: Option<&'a Value>,
    pub name: &'a str,
    /// The arguments as a JSON object.
    pub input: Value,
}

impl<'a> AssistantToolCall<'a> {
    pub(crate) fn id_str(&self) -> &'a str {
        self.id.and_then(Value::as_str).unwrap_or_default()
    }
}

/// The `tool_calls` of `messages[i]`, arguments read as a JSON object
/// ([`arguments_object`]; with `text_only`, non-string arguments count as
/// none). Arguments that are text but not an object are a 400 that
/// `requirement` completes (what the provider requires).
pub(crate) fn assistant_tool_calls<'a>(
    i: usize,
    tool_calls: Option<&'a Value>,
    text_only: bool,
    requirement: &str,
) -> Result<Vec<AssistantToolCall<'a>>, LlmError> {
    tool_calls
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(j, call)| {
            let func = call.get("function");
            let args = func
                .and_then(|f| f.get("arguments"))
                .filter(|a| !text_only || a.is_string());
            let input = arguments_object(args).map_err(|_| {
                LlmError::bad_request(format!(
                    "messages[{i}].tool_calls[{j}].function.arguments {requirement}"
                ))
            })?;
            Ok(AssistantToolCall {
                id: call.get("id"),
                name: func
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                input,
            })
        })
        .collect()
}

/// A user message's content as `{"text"}` parts, the spelling Gemini and
/// Converse share (empty texts left out: both reject them); every other
/// part goes through `other` (`messages[i].content[j]`), which may add one.
pub(crate) fn text_parts_with(
    i: usize,
    content: Option<&Value>,
    mut other: impl FnMut(usize, UserPart) -> Result<Option<Value>, LlmError>,
) -> Result<Vec<Value>, LlmError> {
    let parts = match UserContent::of(i, content)? {
        UserContent::Text("") => return Ok(Vec::new()),
        UserContent::Text(s) => return Ok(vec![json!({ "text": s })]),
        UserContent::Parts(parts) => parts,
    };
    let mut out = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match UserPart::of(part) {
            UserPart::Text("") => {}
            UserPart::Text(text) => out.push(json!({ "text": text })),
            part => out.extend(other(j, part)?),
        }
    }
    Ok(out)
}

impl OaChunk {
    /// An in-stream `{"error": {...}}` object: (type, message).
    pub(crate) fn error_parts(&self) -> Option<(Option<&str>, &str)> {
        let err = self.error.as_ref()?;
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("upstream stream error");
        Some((err.get("type").and_then(Value::as_str), message))
    }
}

// ---------- requests and responses as JSON objects ----------

/// The `messages` array of a request (empty when missing).
pub(crate) fn messages(req: &Map<String, Value>) -> &[Value] {
    req.get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The role of `messages[i]`; 400 when the message is not an object or has none.
pub(crate) fn message_role(i: usize, m: &Value) -> Result<String, LlmError> {
    if !m.is_object() {
        return Err(LlmError::bad_request(format!(
            "messages[{i}] must be an object"
        )));
    }
    m.get("role")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            LlmError::bad_request(format!("messages[{i}].role is missing or not a string"))
        })
}

/// A request object, serialised for the provider.
pub(crate) fn serialise_request(req: Map<String, Value>) -> Result<Vec<u8>, LlmError> {
    let req = Value::Object(req);
    // Sized up front: grown by doubling, a large prompt's buffer would end up to twice its
    // size (and be sent and held like that for the whole call).
    let mut out = Vec::with_capacity(json_len_hint(&req, 0));
    serde_json::to_writer(&mut out, &req)
        .map_err(|e| LlmError::bad_request(format!("cannot serialise request: {e}")))?;
    Ok(out)
}

/// About the length of `v` serialised: exact for strings without escapes, a little over for
/// numbers. (A parsed value is at most serde_json's 128 levels deep; past 256 this stops.)
fn json_len_hint(v: &Value, depth: usize) -> usize {
    if depth > 256 {
        return 0;
    }
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => {
            2 + a
                .iter()
                .map(|x| json_len_hint(x, depth + 1) + 1)
                .sum::<usize>()
        }
        Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, x)| k.len() + 4 + json_len_hint(x, depth + 1))
                .sum::<usize>()
        }
    }
}

pub(crate) fn invalid_upstream(e: serde_json::Error) -> LlmError {
    LlmError::bad_gateway(format!("upstream response is not valid JSON: {e}"))
}

/// A provider's response body as a JSON object (502 otherwise).
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, LlmError> {
    match serde_json::from_slice(body).map_err(invalid_upstream)? {
        Value::Object(resp) => Ok(resp),
        _ => Err(LlmError::bad_gateway(
            "upstream response is not a JSON object",
        )),
    }
}

/// A translated response, serialised for the client.
pub(crate) fn serialise(out: &Value) -> Result<Vec<u8>, LlmError> {
    serde_json::to_vec(out)
        .map_err(|e| LlmError::bad_gateway(format!("cannot serialise response: {e}")))
}

/// Extracts (type, message) from an error body in `format`. Accepts the
/// documented shapes plus the common `{"error":"text"}` / `{"message":..}`
/// variants of OpenAI-compatible servers.
pub(crate) fn parse_error(format: Format, body: &[u8]) -> Option<(Option<String>, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let err = v.get("error");
    let str_of = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    match (format, err) {
        (_, Some(Value::Object(e))) => {
            let message = str_of(e.get("message"))?;
            Some((str_of(e.get("type")), message))
        }
        (Format::OpenAiChat, Some(Value::String(s))) => Some((None, s.clone())),
        (Format::OpenAiChat, None) => str_of(v.get("message")).map(|m| (None, m)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(json: &str) -> Result<Option<String>, serde_json::Error> {
        let view: OaMessageView = serde_json::from_str(json)?;
        Ok(view.content.map(OaContent::into_text))
    }

    #[test]
    fn content_is_read_as_text_or_parts_and_nothing_else() {
        assert_eq!(
            content(r#"{"content":"a\"b\u00e9"}"#).unwrap().as_deref(),
            Some("a\"bé")
        );
        assert_eq!(
            content(r#"{"content":[{"type":"text","text":"x"},{"type":"image"},{"text":"y"}]}"#)
                .unwrap()
                .as_deref(),
            Some("xy")
        );
        assert_eq!(content(r#"{"content":null}"#).unwrap(), None);
        assert_eq!(content(r#"{}"#).unwrap(), None);
        for bad in [
            r#"{"content":5}"#,
            r#"{"content":{"text":"x"}}"#,
            r#"{"content":["x"]}"#,
        ] {
            assert!(content(bad).is_err(), "{bad} was accepted");
        }
    }
}
