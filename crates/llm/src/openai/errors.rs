//! OpenAI error bodies: `{"error":{"message","type","param","code"}}`
//! (<https://platform.openai.com/docs/guides/error-codes>), and the mapping
//! of other dialects' error types into OpenAI's.

use serde_json::{json, Value};

use crate::sse::write_event;

pub(crate) fn openai_error(kind: &str, message: &str, code: Option<&str>) -> Vec<u8> {
    let v = json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
    v.to_string().into_bytes()
}

pub(crate) fn openai_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

/// Anthropic (or already OpenAI) error type -> OpenAI error type.
pub(crate) fn openai_type_for_anthropic_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "invalid_request_error" | "request_too_large" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" => "rate_limit_error",
        "api_error" | "overloaded_error" | "server_error" => "server_error",
        _ => return None,
    })
}

/// A provider error (type as the provider named it) for an OpenAI-shaped
/// client: the type mapped by name, else by status; the provider's own
/// type kept in `code` when the mapping lost detail.
pub(crate) fn from_upstream(kind: Option<String>, status: u16, message: &str) -> Vec<u8> {
    let mapped = kind
        .as_deref()
        .and_then(openai_type_for_anthropic_type)
        .unwrap_or_else(|| openai_type_for_status(status));
    let code = kind.filter(|k| k != mapped);
    openai_error(mapped, message, code.as_deref())
}

/// In-stream error object for an OpenAI-shaped client.
pub(crate) fn stream_error_json(kind: Option<&str>, message: &str) -> Value {
    let mapped = kind
        .and_then(openai_type_for_anthropic_type)
        .unwrap_or("server_error");
    json!({ "error": { "message": message, "type": mapped, "param": null, "code": null } })
}

/// Appends an in-stream error event for an OpenAI-shaped client (a bare
/// `data:` event).
pub(crate) fn write_stream_error(kind: Option<&str>, message: &str, out: &mut Vec<u8>) {
    write_event(out, None, &stream_error_json(kind, message).to_string());
}
