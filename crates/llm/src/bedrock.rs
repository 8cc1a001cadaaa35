//! Amazon Bedrock Runtime `Converse` / `ConverseStream` as a provider
//! format: response and error translation, usage and stop-reason mapping,
//! shared by the request (`request_bedrock.rs`) and stream
//! (`stream_bedrock.rs`) translators.
//!
//! Bedrock is egress only. OpenAI Chat is the pivot: OpenAI clients are
//! translated to and from Converse directly; Anthropic clients go through
//! the existing Anthropic <-> OpenAI translation chained with OpenAI <->
//! Converse.
//!
//! References: Bedrock API reference, `Converse`
//! (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>:
//! `output.message`, `ContentBlock`, `stopReason`, `TokenUsage`),
//! `ConverseStream` (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html>)
//! and its errors (`ValidationException` 400, `AccessDeniedException` 403,
//! `ResourceNotFoundException` 404, `ModelTimeoutException` 408,
//! `ModelErrorException` 424, `ThrottlingException` 429,
//! `InternalServerException` 500, `ServiceUnavailableException` 503; body
//! `{"message": "..."}`, type in the `x-amzn-ErrorType` header).

use serde_json::{json, Map, Value};

use crate::wire::{openai_usage_json, unix_now};
use crate::{Format, LlmError, ResponseInfo, Usage};

/// `TokenUsage` -> neutral usage. Bedrock's `inputTokens` excludes cache
/// reads and writes (as Anthropic's `input_tokens` does); the neutral
/// input count, like OpenAI's `prompt_tokens`, includes them.
pub(crate) fn usage_from_bedrock(usage: &Value) -> Usage {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64);
    let input = count("inputTokens");
    let read = count("cacheReadInputTokens");
    let write = count("cacheWriteInputTokens");
    Usage {
        input_tokens: (input.is_some() || read.is_some() || write.is_some())
            .then(|| input.unwrap_or(0) + read.unwrap_or(0) + write.unwrap_or(0)),
        output_tokens: count("outputTokens"),
        cached_input_tokens: read,
        reasoning_tokens: None,
    }
}

/// The Anthropic `usage` object for a Bedrock `TokenUsage`, keeping the
/// cache-write count that the OpenAI pivot cannot carry.
pub(crate) fn anthropic_usage_from_bedrock(usage: &Value) -> Value {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64);
    let mut out = Map::new();
    out.insert(
        "input_tokens".into(),
        count("inputTokens").unwrap_or(0).into(),
    );
    out.insert(
        "output_tokens".into(),
        count("outputTokens").unwrap_or(0).into(),
    );
    if let Some(r) = count("cacheReadInputTokens") {
        out.insert("cache_read_input_tokens".into(), r.into());
    }
    if let Some(w) = count("cacheWriteInputTokens") {
        out.insert("cache_creation_input_tokens".into(), w.into());
    }
    Value::Object(out)
}

/// Converse `stopReason` -> OpenAI `finish_reason`.
pub(crate) fn finish_reason_from_bedrock(stop: &str) -> &'static str {
    match stop {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        // end_turn, stop_sequence and anything new.
        _ => "stop",
    }
}

/// A made-up response id: Converse responses carry none (the request id is
/// only in the `x-amzn-RequestId` header). Anthropic clients get the
/// `msg_` spelling their SDKs expect.
pub(crate) fn response_id(ingress: Format) -> String {
    match ingress {
        Format::AnthropicMessages => format!("msg_gw_{}", unix_now()),
        _ => format!("chatcmpl-gw-{}", unix_now()),
    }
}

fn content_blocks(resp: &Value) -> &[Value] {
    resp.get("output")
        .and_then(|o| o.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Model (never in a Converse body: `None`), usage and the answer's text.
pub(crate) fn response_info(body: &[u8]) -> Result<ResponseInfo, LlmError> {
    let resp: Value = serde_json::from_slice(body)
        .map_err(|e| LlmError::bad_gateway(format!("upstream response is not valid JSON: {e}")))?;
    if !resp.is_object() {
        return Err(LlmError::bad_gateway(
            "upstream response is not a JSON object",
        ));
    }
    let text: String = content_blocks(&resp)
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    Ok(ResponseInfo {
        model: None,
        usage: resp
            .get("usage")
            .map(usage_from_bedrock)
            .unwrap_or_default(),
        completion: vec![text],
    })
}

/// Converse response -> the client's format. Anthropic clients get the
/// OpenAI translation passed through the OpenAI -> Anthropic one, with the
/// exact Bedrock usage split (cache writes included) put back.
pub(crate) fn to_client(ingress: Format, resp: Map<String, Value>, info: &ResponseInfo) -> Value {
    let resp = Value::Object(resp);
    let openai = to_openai(&resp, info, response_id(ingress));
    match (ingress, openai) {
        (Format::AnthropicMessages, Value::Object(map)) => {
            let mut out = crate::response::openai_to_anthropic(map, info);
            if let Some(usage) = resp.get("usage") {
                out["usage"] = anthropic_usage_from_bedrock(usage);
            }
            out
        }
        (_, v) => v,
    }
}

fn to_openai(resp: &Value, info: &ResponseInfo, id: String) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    for block in content_blocks(resp) {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(r) = block.get("reasoningContent") {
            if let Some(rt) = r.get("reasoningText") {
                let t = rt.get("text").and_then(Value::as_str).unwrap_or_default();
                reasoning.push_str(t);
                thinking_blocks.push(json!({
                    "type": "thinking",
                    "thinking": t,
                    "signature": rt.get("signature").and_then(Value::as_str).unwrap_or_default(),
                }));
            } else if let Some(data) = r.get("redactedContent").and_then(Value::as_str) {
                thinking_blocks.push(json!({ "type": "redacted_thinking", "data": data }));
            }
        } else if let Some(tool) = block.get("toolUse") {
            tool_calls.push(openai_tool_call(tool));
        }
        // image, document, citationsContent, guardContent, ...: dropped (README).
    }
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
    let finish = resp
        .get("stopReason")
        .and_then(Value::as_str)
        .map(finish_reason_from_bedrock);
    json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": info.model.clone().unwrap_or_default(),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": openai_usage_json(&info.usage),
    })
}

/// A `toolUse` block -> OpenAI tool call (`arguments` as JSON text).
fn openai_tool_call(tool: &Value) -> Value {
    let input = tool.get("input").cloned().unwrap_or_else(|| json!({}));
    json!({
        "id": tool.get("toolUseId").and_then(Value::as_str).unwrap_or_default(),
        "type": "function",
        "function": {
            "name": tool.get("name").and_then(Value::as_str).unwrap_or_default(),
            "arguments": input.to_string(),
        },
    })
}

// ---------- errors ----------

/// What a Bedrock error means, in Anthropic's error vocabulary (which
/// `errors::stream_error_json` also maps to OpenAI's).
pub(crate) fn anthropic_type_for_exception(exception: &str) -> &'static str {
    // Event-stream exception types are lowerCamelCase
    // (`throttlingException`), HTTP ones UpperCamelCase; compare loosely.
    match exception.to_ascii_lowercase().as_str() {
        "validationexception" => "invalid_request_error",
        "accessdeniedexception" => "permission_error",
        "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "missingauthenticationtokenexception"
        | "expiredtokenexception" => "authentication_error",
        "resourcenotfoundexception" => "not_found_error",
        "throttlingexception" | "servicequotaexceededexception" => "rate_limit_error",
        "serviceunavailableexception" => "overloaded_error",
        // internalServerException, modelStreamErrorException,
        // modelTimeoutException, modelErrorException, and anything new.
        _ => "api_error",
    }
}

/// The Bedrock exception name a status stands for (the body does not say).
fn exception_for_status(status: u16) -> &'static str {
    match status {
        400 => "ValidationException",
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        500..=599 => "InternalServerException",
        _ => "ValidationException",
    }
}

/// Bedrock error body -> error body in the client's format. The type is in
/// the `x-amzn-ErrorType` header, which is not passed here, so it comes
/// from a `__type` field when the body has one (AWS JSON protocols), else
/// from the status. OpenAI clients get the exception name in `code`.
pub(crate) fn translate_error(ingress: Format, status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.get("message")
            .or_else(|| v.get("Message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    // `__type` may be `com.amazon.coral.service#ThrottlingException` or
    // `ThrottlingException:http://internal.amazon.com/...`.
    let exception = parsed
        .as_ref()
        .and_then(|v| v.get("__type"))
        .and_then(Value::as_str)
        .map(|t| t.rsplit('#').next().unwrap_or(t))
        .map(|t| t.split(':').next().unwrap_or(t).to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| exception_for_status(status).to_owned());
    let message = message.unwrap_or_else(|| {
        format!("upstream provider returned HTTP {status} with an unrecognised error body")
    });
    let anthropic = anthropic_type_for_exception(&exception);
    match ingress {
        Format::AnthropicMessages => crate::errors::anthropic_error(anthropic, &message),
        _ => crate::errors::openai_error(openai_type(anthropic), &message, Some(&exception)),
    }
}

/// Anthropic error type (as produced above) -> OpenAI error type.
fn openai_type(anthropic: &str) -> &'static str {
    match anthropic {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" => "rate_limit_error",
        _ => "server_error",
    }
}
