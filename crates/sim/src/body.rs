//! Response bodies: whole JSON bodies, paced SSE streams, and the body faults (`reset`, `slow`)
//! applied to both.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

use crate::fault::{Fault, SLOW_GAP};
use crate::{BoxError, SimBody};

/// How many events a `reset` stream delivers before dropping the connection.
const EVENTS_BEFORE_RESET: usize = 3;

/// Pause before a `reset` body fails. Hyper flushes what it has buffered when the body is
/// pending; failing immediately could discard the head or the last events unsent, and the point
/// of the fault is that the client sees them and *then* the truncation.
const FLUSH_BEFORE_RESET: Duration = Duration::from_millis(30);

/// Pieces of a split body under `slow`, for non-streaming responses.
const SLOW_PIECES: usize = 4;

/// One chunk of a streamed body and the delay before it is sent.
pub(crate) struct Paced {
    pub delay: Duration,
    pub data: Bytes,
}

/// Hands out per-event delays: time-to-first-token before the first token, the inter-token
/// delay before each later one, nothing before framing events.
pub(crate) struct Pacer {
    ttft: Duration,
    itl: Duration,
    started: bool,
}

impl Pacer {
    pub fn new(ttft: Duration, itl: Duration) -> Self {
        Pacer {
            ttft,
            itl,
            started: false,
        }
    }

    /// The delay before an event that carries a token.
    pub fn token(&mut self) -> Duration {
        if std::mem::replace(&mut self.started, true) {
            self.itl
        } else {
            self.ttft
        }
    }
}

/// `data: {json}\n\n`: an SSE event without a name (OpenAI Chat Completions).
pub(crate) fn sse_data(json: &Value) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

/// `event: name\ndata: {json}\n\n`: a named SSE event (Anthropic, OpenAI Responses).
pub(crate) fn sse_event(name: &str, json: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

enum Step {
    Send(Duration, Bytes),
    Fail(Duration),
}

fn body_from_steps(steps: VecDeque<Step>) -> SimBody {
    let stream = futures_util::stream::unfold(steps, |mut steps| async move {
        let item = match steps.pop_front()? {
            Step::Send(delay, data) => {
                sleep(delay).await;
                Ok(Frame::data(data))
            }
            Step::Fail(delay) => {
                sleep(delay).await;
                Err::<Frame<Bytes>, BoxError>(Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "x-sim-fault: reset",
                )))
            }
        };
        Some((item, steps))
    });
    StreamBody::new(stream).boxed_unsync()
}

async fn sleep(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// A streamed body of `events`, shaped by `fault`.
pub(crate) fn streamed(events: Vec<Paced>, fault: Option<Fault>) -> SimBody {
    let mut steps: VecDeque<Step> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| match fault {
            Some(Fault::Slow) if i > 0 => Step::Send(e.delay.max(SLOW_GAP), e.data),
            _ => Step::Send(e.delay, e.data),
        })
        .collect();
    if fault == Some(Fault::Reset) {
        // Never deliver the final event: the stream must look cut off, not finished.
        let keep = EVENTS_BEFORE_RESET.min(steps.len().saturating_sub(1));
        steps.truncate(keep);
        steps.push_back(Step::Fail(FLUSH_BEFORE_RESET));
    }
    body_from_steps(steps)
}

/// A whole (non-streamed) body, shaped by `fault`.
pub(crate) fn whole(data: Bytes, fault: Option<Fault>) -> SimBody {
    match fault {
        Some(Fault::Reset) => body_from_steps(VecDeque::from([Step::Fail(FLUSH_BEFORE_RESET)])),
        Some(Fault::Slow) => {
            let size = data.len().div_ceil(SLOW_PIECES).max(1);
            let steps = (0..data.len())
                .step_by(size)
                .enumerate()
                .map(|(i, at)| {
                    let delay = if i == 0 { Duration::ZERO } else { SLOW_GAP };
                    Step::Send(delay, data.slice(at..(at + size).min(data.len())))
                })
                .collect();
            body_from_steps(steps)
        }
        _ => Full::new(data)
            .map_err(|never| match never {})
            .boxed_unsync(),
    }
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &Value, fault: Option<Fault>) -> Response<SimBody> {
    let mut resp = Response::new(whole(Bytes::from(value.to_string()), fault));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A `text/event-stream` response.
pub(crate) fn event_stream(events: Vec<Paced>, fault: Option<Fault>) -> Response<SimBody> {
    let mut resp = Response::new(streamed(events, fault));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
