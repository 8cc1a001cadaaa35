//! What the Bedrock request, response and stream translators share: the
//! Converse wire format's usage and stop-reason mapping, ids and small readers.

use crate::pivot::unix_now;
use crate::{Format, Usage};
use serde_json::{Map, Value};

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
