//! Fault injection shared by both simulators.
//!
//! A request picks a fault with the `x-sim-fault` header; `Options::fault` applies one to every
//! request (the header wins). Error faults are rendered by each simulator in its provider's error
//! format; body faults (`reset`, `slow`) are applied here to the response body.

use std::time::Duration;

use http::HeaderMap;

/// The request header that injects a fault: `429`, `500`, `529`, `reset` or `slow`.
pub const FAULT_HEADER: &str = "x-sim-fault";

/// Gap between body chunks under [`Fault::Slow`].
pub(crate) const SLOW_GAP: Duration = Duration::from_millis(200);

/// A failure a simulator can be told to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `429`: rate limited, in the provider's error format, with `retry-after: 1`.
    RateLimit,
    /// `500`: internal server error in the provider's error format.
    ServerError,
    /// `529`: overloaded. Anthropic answers 529 `overloaded_error`; OpenAI has no 529 and answers
    /// 503, the status its docs give for an overloaded engine.
    Overloaded,
    /// `reset`: headers are sent, then the connection is dropped mid-body (streaming: after a few
    /// events), so the client sees a truncated body rather than a clean end.
    Reset,
    /// `slow`: body chunks trickle out at least 200 ms apart.
    Slow,
}

impl Fault {
    /// Parses a header value; unknown values are `None` (and so ignored).
    pub fn parse(value: &str) -> Option<Fault> {
        match value.trim().to_ascii_lowercase().as_str() {
            "429" | "rate_limit" => Some(Fault::RateLimit),
            "500" | "server_error" => Some(Fault::ServerError),
            "529" | "503" | "overloaded" => Some(Fault::Overloaded),
            "reset" => Some(Fault::Reset),
            "slow" => Some(Fault::Slow),
            _ => None,
        }
    }

    /// The fault for one request: the header's if it names one, else the configured one.
    pub(crate) fn for_request(headers: &HeaderMap, configured: Option<Fault>) -> Option<Fault> {
        headers
            .get(FAULT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Fault::parse)
            .or(configured)
    }

    /// Whether this fault replaces the response with an error status (as opposed to shaping the
    /// body of an otherwise normal response).
    pub(crate) fn is_error_status(self) -> bool {
        matches!(
            self,
            Fault::RateLimit | Fault::ServerError | Fault::Overloaded
        )
    }
}
