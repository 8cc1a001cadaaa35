//! Request preparation: parse the client's body, apply gateway options,
//! pick the upstream model, extract prompt/params, translate.

use serde_json::{Map, Value};

use crate::{
    request_a2o, request_bedrock, request_gemini, request_o2a, Format, LlmError, PreparedRequest,
    PromptMessage, RequestOptions,
};

/// Parameters surfaced in `PreparedRequest::params`, per ingress format.
const OPENAI_PARAMS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "n",
    "reasoning_effort",
];
const ANTHROPIC_PARAMS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "stop_sequences",
];

/// Parse the client's body (ingress format), apply overrides/defaults/aliases/model_override,
/// translate to egress format.
///
/// Order: overrides (always set) then defaults (set when absent) are applied
/// to the ingress-format object; then the model is resolved
/// (`model_override`, else first matching alias, else as requested); then the
/// object is translated. When ingress == egress the object is re-serialised
/// with key order preserved and unknown fields kept.
pub fn prepare_request(
    ingress: Format,
    egress: Format,
    body: &[u8],
    opts: &RequestOptions,
) -> Result<PreparedRequest, LlmError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        LlmError::bad_request(format!(
            "request body is not valid JSON: {} at line {} column {}",
            describe_json_error(&e),
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(mut req) = value else {
        return Err(LlmError::bad_request("request body must be a JSON object"));
    };
    if ingress == Format::Gemini {
        return Err(LlmError::bad_request(
            "Gemini is a provider format only; clients speak OpenAI Chat or Anthropic Messages",
        ));
    }
    if ingress == Format::Bedrock {
        return Err(LlmError::bad_request(
            "Bedrock is a provider format only; clients speak OpenAI Chat or Anthropic Messages",
        ));
    }
    if egress == Format::OpenAiResponses && ingress != Format::OpenAiResponses {
        return Err(LlmError::bad_request(
            "only a Responses client can be sent to a provider's Responses API",
        ));
    }
    if ingress == Format::OpenAiResponses && egress == Format::OpenAiResponses {
        return crate::request_responses::prepare_native(req, opts);
    }
    if ingress == Format::OpenAiResponses {
        // Translated to OpenAI Chat, then prepared as a Chat request.
        return crate::request_responses::prepare(egress, req, opts);
    }
    match req.get("messages") {
        Some(Value::Array(_)) => {}
        Some(_) => return Err(LlmError::bad_request("`messages` must be an array")),
        None => {
            return Err(LlmError::bad_request(
                "request body is missing required field `messages`",
            ))
        }
    }

    let (request_model, upstream_model) = apply_request_options(&mut req, opts);

    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let param_names = match ingress {
        Format::OpenAiChat => OPENAI_PARAMS,
        Format::AnthropicMessages => ANTHROPIC_PARAMS,
        // Refused or delegated above.
        Format::Gemini | Format::OpenAiResponses | Format::Bedrock => &[],
    };
    let params: Map<String, Value> = param_names
        .iter()
        .filter_map(|&k| req.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect();
    let prompt = match ingress {
        Format::OpenAiChat => openai_prompt(&req)?,
        Format::AnthropicMessages => anthropic_prompt(&req)?,
        Format::Gemini | Format::OpenAiResponses | Format::Bedrock => Vec::new(),
    };

    let out = match (ingress, egress) {
        (Format::OpenAiChat, Format::AnthropicMessages) => {
            Value::Object(request_o2a::translate(req, opts.default_max_tokens)?)
        }
        (Format::AnthropicMessages, Format::OpenAiChat) => {
            Value::Object(request_a2o::translate(req)?)
        }
        (Format::OpenAiChat, Format::Gemini) => Value::Object(request_gemini::translate(req)?),
        (Format::AnthropicMessages, Format::Gemini) => {
            Value::Object(request_gemini::translate_from_anthropic(req)?)
        }
        (Format::OpenAiChat, Format::Bedrock) => Value::Object(request_bedrock::translate(req)?),
        (Format::AnthropicMessages, Format::Bedrock) => {
            Value::Object(request_bedrock::translate_from_anthropic(req)?)
        }
        _ => Value::Object(req),
    };
    let body = serde_json::to_vec(&out)
        .map_err(|e| LlmError::bad_request(format!("cannot serialise request: {e}")))?;
    Ok(PreparedRequest {
        body,
        request_model,
        upstream_model,
        stream,
        params,
        prompt,
    })
}

/// Applies `overrides` (always set), then `defaults` (set when absent), to a client's request
/// object, then its model: `model_override`, else the first matching alias, else as sent.
/// Returns (the model the client asked for, the model sent upstream); the latter is written
/// into the object.
pub fn apply_request_options(
    req: &mut Map<String, Value>,
    opts: &RequestOptions,
) -> (Option<String>, Option<String>) {
    let request_model = req.get("model").and_then(Value::as_str).map(str::to_owned);
    for (k, v) in opts.overrides {
        req.insert(k.clone(), v.clone());
    }
    for (k, v) in opts.defaults {
        if !req.contains_key(k) {
            req.insert(k.clone(), v.clone());
        }
    }
    let effective = req.get("model").and_then(Value::as_str).map(str::to_owned);
    let upstream_model = match opts.model_override {
        Some(m) => Some(m.to_owned()),
        None => effective.map(|m| {
            opts.model_aliases
                .iter()
                .find(|(pattern, _)| crate::glob_match(pattern, &m))
                .map_or(m.clone(), |(_, target)| target.clone())
        }),
    };
    if let Some(m) = &upstream_model {
        req.insert("model".into(), Value::String(m.clone()));
    }
    (request_model, upstream_model)
}

fn describe_json_error(e: &serde_json::Error) -> String {
    // serde_json's Display already appends " at line L column C"; keep the
    // cause only so the position is stated once.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

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

fn messages(req: &Map<String, Value>) -> &[Value] {
    req.get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn message_role(i: usize, m: &Value) -> Result<String, LlmError> {
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

pub(crate) fn openai_prompt(req: &Map<String, Value>) -> Result<Vec<PromptMessage>, LlmError> {
    messages(req)
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(PromptMessage {
                role: message_role(i, m)?,
                content: content_text(m.get("content")),
            })
        })
        .collect()
}

fn anthropic_prompt(req: &Map<String, Value>) -> Result<Vec<PromptMessage>, LlmError> {
    let mut out = Vec::new();
    if let Some(system) = req.get("system") {
        out.push(PromptMessage {
            role: "system".into(),
            content: content_text(Some(system)),
        });
    }
    for (i, m) in messages(req).iter().enumerate() {
        out.push(PromptMessage {
            role: message_role(i, m)?,
            content: content_text(m.get("content")),
        });
    }
    Ok(out)
}
