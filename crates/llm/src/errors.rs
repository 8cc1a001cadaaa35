//! Error bodies in each dialect.
//!
//! OpenAI: `{"error":{"message","type","param","code"}}`
//! (<https://platform.openai.com/docs/guides/error-codes>).
//! Anthropic: `{"type":"error","error":{"type","message"}}` with types
//! invalid_request_error (400), authentication_error (401), permission_error
//! (403), not_found_error (404), request_too_large (413), rate_limit_error
//! (429), api_error (500), overloaded_error (529)
//! (<https://docs.anthropic.com/en/api/errors>).

use serde_json::{json, Value};

use crate::Format;

/// An error produced by the gateway itself, in the client's format (type chosen from status).
pub fn error_body(format: Format, status: u16, message: &str) -> Vec<u8> {
    match format {
        // Gemini and Bedrock are never client formats; OpenAI's shape is
        // the fallback. Responses clients use the same error body as Chat
        // clients.
        Format::OpenAiChat | Format::Gemini | Format::OpenAiResponses | Format::Bedrock => {
            openai_error(openai_type_for_status(status), message, None)
        }
        Format::AnthropicMessages => anthropic_error(anthropic_type_for_status(status), message),
    }
}

/// Provider error body (any non-2xx) -> error body in the client's format,
/// keeping the message and mapping the type. `None` when ingress == egress
/// (forward unchanged).
pub fn translate_error(
    ingress: Format,
    egress: Format,
    status: u16,
    body: &[u8],
) -> Option<Vec<u8>> {
    if ingress == egress {
        return None;
    }
    if ingress == Format::OpenAiResponses {
        return Some(crate::responses::translate_error(egress, status, body));
    }
    if egress == Format::Gemini {
        return Some(crate::gemini::translate_error(ingress, status, body));
    }
    if egress == Format::Bedrock {
        return Some(crate::bedrock::translate_error(ingress, status, body));
    }
    let parsed = parse_error(egress, body);
    let (kind, message) = match parsed {
        Some((kind, message)) => (kind, message),
        None => (
            None,
            format!("upstream provider returned HTTP {status} with an unrecognised error body"),
        ),
    };
    Some(match ingress {
        Format::OpenAiChat | Format::Gemini | Format::OpenAiResponses | Format::Bedrock => {
            let mapped = kind
                .as_deref()
                .and_then(openai_type_for_anthropic_type)
                .unwrap_or_else(|| openai_type_for_status(status));
            // Keep the provider's own type in `code` when the mapping lost detail.
            let code = kind.filter(|k| k != mapped);
            openai_error(mapped, &message, code.as_deref())
        }
        Format::AnthropicMessages => {
            let mapped = kind
                .as_deref()
                .and_then(anthropic_type_for_openai_type)
                .unwrap_or_else(|| anthropic_type_for_status(status));
            anthropic_error(mapped, &message)
        }
    })
}

/// In-stream error object for the client's format, as a JSON value (used by
/// the stream translator, which frames it itself).
pub(crate) fn stream_error_json(format: Format, kind: Option<&str>, message: &str) -> Value {
    match format {
        // Responses streams frame their own typed `error` event
        // (`stream_responses.rs`); this is only the fallback shape.
        Format::OpenAiChat | Format::Gemini | Format::OpenAiResponses | Format::Bedrock => {
            let mapped = kind
                .and_then(openai_type_for_anthropic_type)
                .unwrap_or("server_error");
            json!({ "error": { "message": message, "type": mapped, "param": null, "code": null } })
        }
        Format::AnthropicMessages => {
            let mapped = kind
                .and_then(anthropic_type_for_openai_type)
                .unwrap_or("api_error");
            json!({ "type": "error", "error": { "type": mapped, "message": message } })
        }
    }
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

pub(crate) fn openai_error(kind: &str, message: &str, code: Option<&str>) -> Vec<u8> {
    let v = json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
    v.to_string().into_bytes()
}

pub(crate) fn anthropic_error(kind: &str, message: &str) -> Vec<u8> {
    let v = json!({ "type": "error", "error": { "type": kind, "message": message } });
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

/// Anthropic (or already OpenAI) error type -> OpenAI error type.
fn openai_type_for_anthropic_type(kind: &str) -> Option<&'static str> {
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

/// OpenAI (or already Anthropic) error type -> Anthropic error type.
/// OpenAI's 429 bodies use types like `requests`, `tokens` or
/// `insufficient_quota`; those fall through to the status mapping.
fn anthropic_type_for_openai_type(kind: &str) -> Option<&'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v(b: &[u8]) -> Value {
        serde_json::from_slice(b).expect("json")
    }

    #[test]
    fn rate_limit_anthropic_to_openai_and_back() {
        let an = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
        let oa = translate_error(Format::OpenAiChat, Format::AnthropicMessages, 429, an)
            .expect("translated");
        assert_eq!(
            v(&oa),
            json!({"error":{"message":"Number of request tokens has exceeded your per-minute rate limit","type":"rate_limit_error","param":null,"code":null}})
        );
        // Real OpenAI 429 bodies carry type "requests"/"tokens": status decides.
        let oa429 = br#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let back = translate_error(Format::AnthropicMessages, Format::OpenAiChat, 429, oa429)
            .expect("translated");
        assert_eq!(
            v(&back),
            json!({"type":"error","error":{"type":"rate_limit_error","message":"Rate limit reached for requests"}})
        );
    }

    #[test]
    fn overloaded_keeps_detail_in_code() {
        let an = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let oa = v(
            &translate_error(Format::OpenAiChat, Format::AnthropicMessages, 529, an).expect("t"),
        );
        assert_eq!(oa["error"]["type"], "server_error");
        assert_eq!(oa["error"]["code"], "overloaded_error");
        assert_eq!(oa["error"]["message"], "Overloaded");
    }

    #[test]
    fn unrecognised_body_gets_generic_message_with_status() {
        let out = translate_error(
            Format::AnthropicMessages,
            Format::OpenAiChat,
            502,
            b"<html>bad gateway</html>",
        )
        .expect("t");
        let out = v(&out);
        assert_eq!(out["type"], "error");
        assert_eq!(out["error"]["type"], "api_error");
        assert!(out["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("502"));
    }

    #[test]
    fn same_format_is_forwarded() {
        assert_eq!(
            translate_error(Format::OpenAiChat, Format::OpenAiChat, 400, b"{}"),
            None
        );
    }

    #[test]
    fn gateway_errors_by_status() {
        assert_eq!(
            v(&error_body(Format::AnthropicMessages, 413, "too big")),
            json!({"type":"error","error":{"type":"request_too_large","message":"too big"}})
        );
        assert_eq!(
            v(&error_body(Format::OpenAiChat, 401, "no key")),
            json!({"error":{"message":"no key","type":"authentication_error","param":null,"code":null}})
        );
        assert_eq!(
            v(&error_body(Format::AnthropicMessages, 529, "x"))["error"]["type"],
            "overloaded_error"
        );
        assert_eq!(
            v(&error_body(Format::OpenAiChat, 504, "x"))["error"]["type"],
            "server_error"
        );
    }
}
