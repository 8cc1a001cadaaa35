//! Bedrock errors (HTTP bodies and event-stream exceptions) -> the client's
//! error body.

use serde_json::Value;

use crate::dialect::Route;

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
pub(crate) fn translate_error(route: Route, status: u16, body: &[u8]) -> Vec<u8> {
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
    route
        .client
        .mapped_error(anthropic, Some(&exception), &message)
}
