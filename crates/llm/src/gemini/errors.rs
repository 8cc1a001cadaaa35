//! Google API errors (`{"error":{"code","message","status","details"}}`) ->
//! the client's error body.

use serde_json::Value;

use crate::dialect::Route;

/// What a Google error means, independent of the client's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RateLimit,
    Overloaded,
    Server,
}

impl ErrorKind {
    /// Google canonical status (`google.rpc.Code` name) -> kind.
    fn from_google_status(status: &str) -> Option<ErrorKind> {
        Some(match status {
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => {
                ErrorKind::InvalidRequest
            }
            "UNAUTHENTICATED" => ErrorKind::Authentication,
            "PERMISSION_DENIED" => ErrorKind::Permission,
            "NOT_FOUND" => ErrorKind::NotFound,
            "RESOURCE_EXHAUSTED" => ErrorKind::RateLimit,
            "UNAVAILABLE" => ErrorKind::Overloaded,
            "INTERNAL" | "UNKNOWN" | "DEADLINE_EXCEEDED" | "ABORTED" | "DATA_LOSS"
            | "CANCELLED" => ErrorKind::Server,
            _ => return None,
        })
    }

    fn from_http_status(status: u16) -> ErrorKind {
        match status {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::RateLimit,
            503 => ErrorKind::Overloaded,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::InvalidRequest,
        }
    }

    /// Also the vocabulary `write_stream_error` maps from.
    pub(crate) fn anthropic_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Server => "api_error",
        }
    }
}

/// A parsed Google error object.
pub(crate) struct GoogleError {
    pub kind: Option<ErrorKind>,
    /// The canonical status string, e.g. `RESOURCE_EXHAUSTED`.
    pub status: Option<String>,
    pub message: String,
}

/// Parses `{"error":{"code","message","status","details"}}` (also as the
/// first element of an array, as non-SSE `streamGenerateContent` sends it).
/// A bad Gemini API key is 400 `INVALID_ARGUMENT` with reason
/// `API_KEY_INVALID` in `details`: that is an authentication error.
pub(crate) fn parse_google_error(v: &Value) -> Option<GoogleError> {
    let v = match v {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let err = v.get("error")?.as_object()?;
    let message = err.get("message").and_then(Value::as_str)?.to_owned();
    let status = err.get("status").and_then(Value::as_str).map(str::to_owned);
    let api_key_invalid = err
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"));
    let kind = if api_key_invalid {
        Some(ErrorKind::Authentication)
    } else {
        status.as_deref().and_then(ErrorKind::from_google_status)
    };
    Some(GoogleError {
        kind,
        status,
        message,
    })
}

/// Google error body -> error body in the client's format (OpenAI types
/// follow from the Anthropic one). The HTTP status
/// is kept by the caller; OpenAI clients get the Google status in `code`.
pub(crate) fn translate_error(route: Route, status: u16, body: &[u8]) -> Vec<u8> {
    let parsed = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| parse_google_error(&v));
    let (kind, code, message) = match parsed {
        Some(e) => (
            e.kind
                .unwrap_or_else(|| ErrorKind::from_http_status(status)),
            e.status,
            e.message,
        ),
        None => (
            ErrorKind::from_http_status(status),
            None,
            format!("upstream provider returned HTTP {status} with an unrecognised error body"),
        ),
    };
    route
        .client
        .mapped_error(kind.anthropic_type(), code.as_deref(), &message)
}
