//! The one place proxy failures become HTTP responses: a small JSON body with a stable `code`.

use std::borrow::Cow;

use http::{header, Response, StatusCode};

use crate::body::{self, Body};

#[derive(Debug, Clone)]
pub struct ProxyError {
    pub status: StatusCode,
    /// Stable, machine-readable; documented in the README.
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// LLM routes answer in the caller's own API dialect (OpenAI or Anthropic error JSON).
    pub format: Option<llm::Format>,
}

impl ProxyError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ProxyError {
            status,
            code,
            message: message.into(),
            format: None,
        }
    }

    pub fn with_format(mut self, format: llm::Format) -> Self {
        self.format = Some(format);
        self
    }

    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = message.into();
        self
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn no_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no_route",
            "no route matches this request",
        )
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds the {limit}-byte limit"),
        )
    }
    pub fn upstream_unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unavailable",
            message,
        )
    }
    pub fn upstream_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "the upstream did not respond in time",
        )
    }
    pub fn upstream_error(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
    }
    pub fn not_implemented(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", message)
    }

    pub fn into_response(self) -> Response<Body> {
        let bytes = match self.format {
            Some(f) => llm::error_body(f, self.status.as_u16(), &self.message),
            None => serde_json::json!({
                "error": { "code": self.code, "message": self.message }
            })
            .to_string()
            .into_bytes(),
        };
        let mut resp = Response::new(body::full(bytes));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        resp
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}
