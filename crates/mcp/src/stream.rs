//! Event streams to the client: JSON-RPC messages as SSE events with ids, keep-alive
//! comments, and the tasks feeding a stream stopped when the client goes away.

use crate::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::BodyExt;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// Aborts the tasks feeding a stream when the client goes away.
/// One message on a stream, with its event id when the stream is resumable.
pub(crate) struct Event {
    pub id: Option<String>,
    pub msg: Value,
}

impl Event {
    pub fn plain(msg: Value) -> Event {
        Event { id: None, msg }
    }
}

/// Stops what feeds a stream when the client goes away: tasks are aborted, `on_drop` runs.
#[derive(Default)]
pub(crate) struct Guard {
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

/// How a stream starts and is kept alive.
#[derive(Default)]
pub(crate) struct Opts {
    /// Raw bytes sent first (the legacy transport's `endpoint` event).
    pub prelude: Option<Bytes>,
    pub keepalive: Option<Duration>,
    pub guard: Guard,
}

impl Opts {
    /// A session's server stream: kept alive, fed by `tasks`.
    pub fn server_stream(tasks: Vec<tokio::task::JoinHandle<()>>) -> Opts {
        Opts {
            keepalive: Some(KEEPALIVE),
            guard: Guard {
                tasks,
                on_drop: None,
            },
            prelude: None,
        }
    }
}

/// Keep-alive comments on long-lived streams, so proxies in between do not time them out.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(15);

/// An SSE response of JSON-RPC messages.
pub(crate) fn sse_response(rx: mpsc::Receiver<Event>, opts: Opts) -> Response<Body> {
    struct State {
        rx: mpsc::Receiver<Event>,
        prelude: Option<Bytes>,
        tick: Option<tokio::time::Interval>,
        _guard: Guard,
    }
    let tick = opts.keepalive.map(|d| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let state = State {
        rx,
        prelude: opts.prelude,
        tick,
        _guard: opts.guard,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if let Some(p) = s.prelude.take() {
            return Some((Ok::<_, crate::BoxError>(http_body::Frame::data(p)), s));
        }
        let next = match &mut s.tick {
            Some(tick) => tokio::select! {
                m = s.rx.recv() => m.map(Some),
                _ = tick.tick() => Some(None),
            },
            None => s.rx.recv().await.map(Some),
        };
        let frame = match next? {
            Some(e) => {
                let data = serde_json::to_string(&e.msg).unwrap_or_default();
                Bytes::from(match e.id {
                    Some(id) => format!("id: {id}\nevent: message\ndata: {data}\n\n"),
                    None => format!("event: message\ndata: {data}\n\n"),
                })
            }
            None => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((Ok::<_, crate::BoxError>(http_body::Frame::data(frame)), s))
    });
    let mut r = Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
