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
    /// The client went quiet while sending its request body (`config.limits.bodyReadTimeout`).
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the client did not send the request body in time",
        )
    }
    /// A request body that could not be read: 408 when the client went quiet, else 400.
    pub fn reading_body(e: &(dyn std::error::Error + 'static)) -> Self {
        if body::is_read_timeout(e) {
            return Self::request_timeout();
        }
        Self::bad_request(format!("reading request body: {e}"))
    }
    /// The process is near a `config.limits.overload` ceiling: new work is shed.
    pub fn overloaded(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }

    pub fn into_response(self) -> Response<Body> {
        let bytes = match self.format {
            Some(f) => llm::error_body_with_code(f, self.status.as_u16(), &self.message, self.code),
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

/// Why a config cannot become a runtime snapshot: where (the config key) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// The config key, e.g. `binds[0].listeners[0].routes[1].backends[0].ai`; empty when
    /// the problem is not under one key (a port that cannot be bound).
    pub key: String,
    pub message: String,
}

impl CompileError {
    pub fn new(message: impl Into<String>) -> Self {
        CompileError {
            key: String::new(),
            message: message.into(),
        }
    }

    pub fn at(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        CompileError {
            key: key.into(),
            message: message.to_string(),
        }
    }

    /// Places the error under `prefix`: its key becomes `prefix` followed by its own.
    pub fn under(mut self, prefix: &str) -> Self {
        self.key = match self.key.as_bytes().first() {
            None => prefix.to_string(),
            Some(b'.' | b'[') => format!("{prefix}{}", self.key),
            Some(_) => format!("{prefix}.{}", self.key),
        };
        self
    }
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.key.is_empty() {
            true => f.write_str(&self.message),
            false => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for CompileError {}

impl From<crate::policy::PolicyError> for CompileError {
    fn from(e: crate::policy::PolicyError) -> Self {
        CompileError::new(e.0)
    }
}

/// A helper's message (TLS files, credentials) becomes an error without a key of its own;
/// the compiling caller places it with [`CompileError::under`].
impl From<String> for CompileError {
    fn from(message: String) -> Self {
        CompileError::new(message)
    }
}

impl From<&str> for CompileError {
    fn from(message: &str) -> Self {
        CompileError::new(message)
    }
}

/// Callers that report errors as text (the CLI, the admin server) keep using `?`.
impl From<CompileError> for String {
    fn from(e: CompileError) -> Self {
        e.to_string()
    }
}

#[cfg(test)]
mod compile_error_tests {
    use super::CompileError;

    #[test]
    fn keys_nest_and_display_as_key_colon_message() {
        let e = CompileError::at(".ai", "bad host").under("routes[0].backends[1]");
        assert_eq!(e.key, "routes[0].backends[1].ai");
        assert_eq!(e.to_string(), "routes[0].backends[1].ai: bad host");
        let e = CompileError::at("policies", "x").under("routes[0]");
        assert_eq!(e.key, "routes[0].policies");
        let e = CompileError::new("cannot listen").under("binds[0]");
        assert_eq!(e.to_string(), "binds[0]: cannot listen");
        assert_eq!(CompileError::new("plain").to_string(), "plain");
    }
}
