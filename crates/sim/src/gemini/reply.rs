//! What the simulated Gemini model answers: request parsing, the deterministic reply, and its
//! `GenerateContentResponse` form, whole or as stream chunks.
//!
//! Shapes per the Gemini API reference (<https://ai.google.dev/api/generate-content>):
//! `candidates[].content.parts[]` with `text`, `{text, thought: true}` and
//! `{functionCall: {name, args}}` parts (the first function call carries a `thoughtSignature`, as
//! Gemini 3 models do), `finishReason`, `index`; `usageMetadata` with `promptTokenCount`,
//! `candidatesTokenCount`, `totalTokenCount`, `cachedContentTokenCount`, `thoughtsTokenCount`,
//! `promptTokensDetails`; `modelVersion`; `responseId`. Streamed, every chunk is a whole
//! `GenerateContentResponse` with a piece of the text (function calls are never split) and the
//! usage so far; the last one carries `finishReason` and the final usage.

use serde_json::{json, Map, Value};

use crate::body::Pacer;
use crate::count_tokens;
use crate::tools::{self, ToolChoice, ToolDef};

/// Stream pieces (words) per SSE chunk: Gemini sends a few words at a time, not one token.
const WORDS_PER_CHUNK: usize = 3;

/// The parts of a `GenerateContentRequest` the simulator acts on, validated.
pub(crate) struct GenerateRequest {
    contents: Vec<Value>,
    system_text: String,
    tools: Vec<ToolDef>,
    tool_choice: ToolChoice,
    max_output_tokens: Option<u64>,
    stop_sequences: Vec<String>,
    candidate_count: u64,
    thinking: bool,
    /// `responseSchema` when JSON output was asked for (`Value::Null` for schemaless JSON).
    json_schema: Option<Value>,
    /// An explicit context cache was named (`cachedContent`): the system instruction counts as
    /// read from it.
    cached: bool,
}

impl GenerateRequest {
    /// Validates `body`; the error is the `INVALID_ARGUMENT` message.
    pub fn parse(body: &Value) -> Result<Self, String> {
        let contents = match body.get("contents") {
            Some(Value::Array(c)) if !c.is_empty() => c.clone(),
            _ => return Err("* GenerateContentRequest.contents: contents is not specified".into()),
        };
        for (i, c) in contents.iter().enumerate() {
            match c.get("role").and_then(Value::as_str) {
                None | Some("user" | "model" | "function") => {}
                Some(_) => return Err("Please use a valid role: user, model.".into()),
            }
            if !c.get("parts").is_some_and(Value::is_array) {
                return Err(format!(
                    "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
                ));
            }
        }
        let system_text = body
            .get("systemInstruction")
            .map(|s| parts_text(s.get("parts")))
            .unwrap_or_default();
        let mut tools: Vec<ToolDef> = body
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
            .flatten()
            .filter_map(|f| {
                Some(ToolDef {
                    name: f
                        .get("name")?
                        .as_str()
                        .filter(|n| !n.is_empty())?
                        .to_string(),
                    schema: lowercase_types(
                        f.get("parameters")
                            .or_else(|| f.get("parametersJsonSchema"))
                            .unwrap_or(&Value::Null),
                        0,
                    ),
                })
            })
            .collect();
        let calling = &body["toolConfig"]["functionCallingConfig"];
        let allowed: Vec<&str> = calling["allowedFunctionNames"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !allowed.is_empty() {
            tools.retain(|t| allowed.contains(&t.name.as_str()));
        }
        let tool_choice = match calling["mode"].as_str() {
            Some("NONE") => ToolChoice::None,
            Some("ANY") if allowed.len() == 1 => ToolChoice::Named(allowed[0].to_string()),
            Some("ANY") => ToolChoice::Required,
            _ => ToolChoice::Auto,
        };
        let config = &body["generationConfig"];
        let thinking = config["thinkingConfig"]["includeThoughts"] == json!(true);
        let json_schema = (config["responseMimeType"] == "application/json").then(|| {
            config
                .get("responseSchema")
                .or_else(|| config.get("responseJsonSchema"))
                .map(|s| lowercase_types(s, 0))
                .unwrap_or(Value::Null)
        });
        Ok(GenerateRequest {
            contents,
            system_text,
            tools,
            tool_choice,
            max_output_tokens: config["maxOutputTokens"].as_u64(),
            stop_sequences: config["stopSequences"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            candidate_count: config["candidateCount"].as_u64().unwrap_or(1).clamp(1, 8),
            thinking,
            json_schema,
            cached: body["cachedContent"].is_string(),
        })
    }

    /// Prompt tokens: system instruction, every part (3 tokens of framing per content) and the
    /// function declarations.
    fn prompt_tokens(&self) -> u64 {
        let contents: u64 = self
            .contents
            .iter()
            .map(|c| count_tokens(&all_text(c.get("parts"))) + 3)
            .sum();
        let tools: u64 = self
            .tools
            .iter()
            .map(|t| count_tokens(&t.name) + count_tokens(&t.schema.to_string()))
            .sum();
        count_tokens(&self.system_text) + contents + tools
    }

    fn last_user_text(&self) -> String {
        self.contents
            .iter()
            .rev()
            .find(|c| c.get("role").and_then(Value::as_str).unwrap_or("user") == "user")
            .map(|c| parts_text(c.get("parts")))
            .unwrap_or_default()
    }

    /// The `functionResponse`s of the final turn (name and response JSON), if it has any.
    fn trailing_function_responses(&self) -> Vec<String> {
        let Some(last) = self.contents.last() else {
            return Vec::new();
        };
        last["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("functionResponse"))
            .map(|r| {
                format!(
                    "{} -> {}",
                    r["name"].as_str().unwrap_or_default(),
                    r["response"]
                )
            })
            .collect()
    }
}

/// Text parts joined by spaces (thoughts and other parts excluded).
fn parts_text(parts: Option<&Value>) -> String {
    parts
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p["thought"] != json!(true))
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every piece of text in `parts`, function calls and responses included, for token counts.
fn all_text(parts: Option<&Value>) -> String {
    parts
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            if let Some(t) = p["text"].as_str() {
                t.to_string()
            } else if let Some(call) = p.get("functionCall") {
                call.to_string()
            } else if let Some(resp) = p.get("functionResponse") {
                resp.to_string()
            } else {
                String::new()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Gemini schemas may spell types in upper case (`"OBJECT"`); the shared argument builder wants
/// JSON Schema's lower case.
fn lowercase_types(schema: &Value, depth: usize) -> Value {
    if depth > 32 {
        return Value::Null;
    }
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let v = match (k.as_str(), v) {
                    ("type", Value::String(t)) => Value::String(t.to_lowercase()),
                    ("properties", Value::Object(props)) => Value::Object(
                        props
                            .iter()
                            .map(|(name, sub)| (name.clone(), lowercase_types(sub, depth + 1)))
                            .collect(),
                    ),
                    ("items", sub) => lowercase_types(sub, depth + 1),
                    _ => v.clone(),
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// One part of the reply.
pub(crate) enum Part {
    Thought(String),
    Text(String),
    FunctionCall { name: String, args: Value },
}

impl Part {
    fn tokens(&self) -> u64 {
        match self {
            Part::Thought(t) | Part::Text(t) => count_tokens(t),
            Part::FunctionCall { name, args } => {
                count_tokens(name) + count_tokens(&args.to_string())
            }
        }
    }
}

/// The reply to a request: its parts and `finishReason`.
pub(crate) struct Reply {
    parts: Vec<Part>,
    finish_reason: &'static str,
}

pub(crate) fn reply(request: &GenerateRequest) -> Reply {
    let user_text = request.last_user_text();
    let mut parts = Vec::new();
    if request.thinking {
        parts.push(Part::Thought(format!(
            "The user said: {user_text}. I will answer deterministically."
        )));
    }
    let responses = request.trailing_function_responses();
    let calls = if responses.is_empty() {
        tools::plan_calls(&request.tools, &request.tool_choice, &user_text)
    } else {
        Vec::new()
    };
    if !calls.is_empty() {
        parts.extend(calls.into_iter().map(|c| Part::FunctionCall {
            name: c.name,
            args: c.arguments,
        }));
        // Gemini reports STOP for a turn that ends in function calls.
        return Reply {
            parts,
            finish_reason: "STOP",
        };
    }
    let mut text = if !responses.is_empty() {
        tools::reply_to_tool_results(&responses)
    } else if let Some(schema) = &request.json_schema {
        match tools::arguments_for(schema, 0, "") {
            Value::Null => json!({ "reply": crate::echo_reply(&user_text) }).to_string(),
            v => v.to_string(),
        }
    } else {
        crate::echo_reply(&user_text)
    };
    let mut finish_reason = "STOP";
    // Gemini stops *before* a stop sequence and reports plain STOP.
    if let Some((cut, _)) = crate::cut_at_stop(&text, &request.stop_sequences) {
        text = cut;
    }
    if let Some(max) = request.max_output_tokens {
        let thought_tokens: u64 = parts.iter().map(Part::tokens).sum();
        if let Some(cut) = crate::truncate_to_tokens(&text, max.saturating_sub(thought_tokens)) {
            text = cut;
            finish_reason = "MAX_TOKENS";
        }
    }
    parts.push(Part::Text(text));
    Reply {
        parts,
        finish_reason,
    }
}

/// A deterministic stand-in for Gemini's opaque thought signature.
pub(crate) fn thought_signature(seed: &str) -> String {
    let h = crate::stable_hash(seed.as_bytes()).to_le_bytes();
    let bytes: Vec<u8> = h.iter().cycle().take(36).copied().collect();
    crate::base64(&bytes)
}

fn part_json(part: &Part, first_call: bool) -> Value {
    match part {
        Part::Thought(t) => json!({"text": t, "thought": true}),
        Part::Text(t) => json!({"text": t}),
        Part::FunctionCall { name, args } => {
            let mut v = json!({"functionCall": {"name": name, "args": args}});
            if first_call {
                v["thoughtSignature"] = Value::String(thought_signature(name));
            }
            v
        }
    }
}

/// Identity of one response, shared by all its chunks.
pub(crate) struct ResponseMeta<'a> {
    pub model: &'a str,
    pub response_id: &'a str,
}

fn usage(request: &GenerateRequest, output_parts: &[&Part]) -> Value {
    let prompt = request.prompt_tokens();
    let thoughts: u64 = output_parts
        .iter()
        .filter(|p| matches!(p, Part::Thought(_)))
        .map(|p| p.tokens())
        .sum();
    let candidates: u64 = output_parts
        .iter()
        .filter(|p| !matches!(p, Part::Thought(_)))
        .map(|p| p.tokens())
        .sum::<u64>()
        * request.candidate_count;
    let mut u = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]
    });
    if thoughts > 0 {
        u["thoughtsTokenCount"] = thoughts.into();
    }
    if request.cached {
        u["cachedContentTokenCount"] = count_tokens(&request.system_text).into();
    }
    u
}

fn candidates(request: &GenerateRequest, parts: Value, finish: Option<&str>) -> Value {
    let list: Vec<Value> = (0..request.candidate_count)
        .map(|index| {
            let mut c = json!({"content": {"role": "model", "parts": parts}, "index": index});
            if let Some(f) = finish {
                c["finishReason"] = f.into();
            }
            c
        })
        .collect();
    Value::Array(list)
}

/// The whole (non-streamed) `GenerateContentResponse`.
pub(crate) fn response_json(
    request: &GenerateRequest,
    reply: &Reply,
    meta: &ResponseMeta,
) -> Value {
    let mut first_call = true;
    let parts: Vec<Value> = reply
        .parts
        .iter()
        .map(|p| {
            let is_call = matches!(p, Part::FunctionCall { .. });
            let v = part_json(p, is_call && first_call);
            first_call &= !is_call;
            v
        })
        .collect();
    let all: Vec<&Part> = reply.parts.iter().collect();
    json!({
        "candidates": candidates(request, Value::Array(parts), Some(reply.finish_reason)),
        "usageMetadata": usage(request, &all),
        "modelVersion": meta.model,
        "responseId": meta.response_id
    })
}

/// The streamed form: one `GenerateContentResponse` per chunk, with a pacing delay for each.
pub(crate) fn stream_chunks(
    request: &GenerateRequest,
    reply: &Reply,
    meta: &ResponseMeta,
    mut pacer: Pacer,
) -> Vec<(std::time::Duration, Value)> {
    // (index of the reply part the piece belongs to, JSON of the piece)
    let mut pieces: Vec<(usize, Value)> = Vec::new();
    let mut first_call = true;
    for (index, part) in reply.parts.iter().enumerate() {
        match part {
            Part::Thought(t) | Part::Text(t) => {
                let words = crate::stream_pieces(t);
                for group in words.chunks(WORDS_PER_CHUNK) {
                    let mut v = json!({"text": group.concat()});
                    if matches!(part, Part::Thought(_)) {
                        v["thought"] = Value::Bool(true);
                    }
                    pieces.push((index, v));
                }
                if words.is_empty() {
                    pieces.push((index, json!({"text": ""})));
                }
            }
            Part::FunctionCall { .. } => {
                pieces.push((index, part_json(part, first_call)));
                first_call = false;
            }
        }
    }
    let last = pieces.len().saturating_sub(1);
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, (part_index, piece))| {
            let finish = (i == last).then_some(reply.finish_reason);
            // Usage so far counts every part started up to here, whole (Gemini's running counts
            // are coarse too); the last chunk carries the exact total.
            let started: Vec<&Part> = reply.parts.iter().take(part_index + 1).collect();
            let chunk = json!({
                "candidates": candidates(request, json!([piece]), finish),
                "usageMetadata": usage(request, &started),
                "modelVersion": meta.model,
                "responseId": meta.response_id
            });
            (pacer.token(), chunk)
        })
        .collect()
}
