//! Anthropic error bodies: `{"type":"error","error":{"type","message"}}`
//! with types invalid_request_error (400), authentication_error (401),
//! permission_error (403), not_found_error (404), request_too_large (413),
//! rate_limit_error (429), api_error (500), overloaded_error (529)
//! (<https://docs.anthropic.com/en/api/errors>).

use serde_json::{json, Value};

use crate::sse::write_event;

pub(crate) fn anthropic_error(kind: &str, message: &str) -> Vec<u8> {
    let v = json!({ "type": "error", "error": { "type": kind, "message": message } });
    v.to_string().into_bytes()
}

pub(crate) fn anthropic_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// OpenAI (or already Anthropic) error type -> Anthropic error type.
/// OpenAI's 429 bodies use types like `requests`, `tokens` or
/// `insufficient_quota`; those fall through to the status mapping.
pub(crate) fn anthropic_type_for_openai_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" | "insufficient_quota" => "rate_limit_error",
        "request_too_large" => "request_too_large",
        "overloaded_error" => "overloaded_error",
        "server_error" | "api_error" => "api_error",
        _ => return None,
    })
}

/// In-stream error object for an Anthropic client.
pub(crate) fn stream_error_json(kind: Option<&str>, message: &str) -> Value {
    let mapped = kind
        .and_then(anthropic_type_for_openai_type)
        .unwrap_or("api_error");
    json!({ "type": "error", "error": { "type": mapped, "message": message } })
}

/// Appends an in-stream `event: error` for an Anthropic client.
pub(crate) fn write_stream_error(kind: Option<&str>, message: &str, out: &mut Vec<u8>) {
    write_event(
        out,
        Some("error"),
        &stream_error_json(kind, message).to_string(),
    );
}
