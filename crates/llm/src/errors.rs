//! Error bodies: the public entry points, dispatched through the dialect
//! table (each dialect's shapes live in its folder: `openai/errors.rs`,
//! `anthropic/errors.rs`, `gemini/errors.rs`, `bedrock/errors.rs`).

use crate::dialect::table;
use crate::Format;

/// An error produced by the gateway itself, in the client's format (type chosen from status).
pub fn error_body(format: Format, status: u16, message: &str) -> Vec<u8> {
    table::of(format).error_body(status, message, None)
}

/// [`error_body`] carrying the gateway's stable `code` (e.g. `model_not_found`) where the
/// client's format has a field for it (OpenAI's `error.code`; Anthropic errors have none).
pub fn error_body_with_code(format: Format, status: u16, message: &str, code: &str) -> Vec<u8> {
    table::of(format).error_body(status, message, Some(code))
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
    let route = table::route(ingress, egress);
    Some(route.client.translate_error(route, status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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
