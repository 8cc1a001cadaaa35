//! The legacy HTTP+SSE transport (MCP 2024-11-05) for clients that predate streamable HTTP.
//! On the same route: a GET without `Mcp-Session-Id` opens the event stream, whose first event
//! (`endpoint`) names `<route>?sessionId=<id>`; messages POSTed there are answered on the
//! stream. Each message is handled exactly as a streamable-HTTP POST would be; only the
//! delivery differs. The stream is this replica's, so these sessions do not move replicas.

use crate::federate::from_upstream;
use crate::session::random_id;
use crate::stream::{sse_response, Event, Guard, Opts};
use crate::upstream::http::SESSION_HEADER;
use crate::{Body, Downstream, Gateway};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::Value;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::mpsc;

/// One legacy client: its event stream and, once it initialized, its sealed session.
pub(crate) struct Legacy {
    tx: mpsc::Sender<Event>,
    sealed: Mutex<Option<String>>,
}

pub(crate) type Registry = Arc<Mutex<std::collections::HashMap<String, Arc<Legacy>>>>;

pub(crate) fn query_session(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("sessionId="))
        .filter(|v| !v.is_empty())
}

impl Gateway {
    /// GET without a session: a legacy client opening its event stream.
    pub(crate) fn legacy_open(&self, path: &str) -> Response<Body> {
        let id = random_id();
        let (tx, rx) = mpsc::channel(256);
        let legacy = Arc::new(Legacy {
            tx,
            sealed: Mutex::new(None),
        });
        lock(&self.legacy).insert(id.clone(), legacy);
        let registry: Weak<_> = Arc::downgrade(&self.legacy);
        let closed_id = id.clone();
        let endpoint = format!("event: endpoint\ndata: {path}?sessionId={id}\n\n");
        sse_response(
            rx,
            Opts {
                prelude: Some(Bytes::from(endpoint)),
                keepalive: Some(crate::stream::KEEPALIVE),
                guard: Guard {
                    tasks: Vec::new(),
                    on_drop: Some(Box::new(move || {
                        if let Some(r) = registry.upgrade() {
                            lock(&r).remove(&closed_id);
                        }
                    })),
                },
            },
        )
    }

    /// A message POSTed to a legacy endpoint: handled like any POST, answered on the stream.
    pub(crate) async fn legacy_post(
        &self,
        id: &str,
        headers: &HeaderMap,
        body: Body,
        fwd: &HeaderMap,
        down: &mut Downstream<'_>,
    ) -> Response<Body> {
        let Some(legacy) = lock(&self.legacy).get(id).cloned() else {
            let mut r = Response::new(crate::full("unknown or closed sessionId"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        };
        let mut headers = headers.clone();
        let sealed = lock(&legacy.sealed).clone();
        if let Some(v) = sealed.and_then(|s| HeaderValue::from_str(&s).ok()) {
            headers.insert(SESSION_HEADER, v);
        }
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        let resp = self.post(&headers, body, fwd, down).await;
        if let Some(sealed) = resp
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            *lock(&legacy.sealed) = Some(sealed.to_string());
            self.legacy_server_stream(sealed, &legacy);
        }
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let tx = legacy.tx.clone();
        tokio::spawn(async move {
            let body = resp.into_body();
            if is_sse {
                let mut events = sse_stream::SseStream::new(crate::upstream::http::IoBody(body));
                while let Some(Ok(ev)) = events.next().await {
                    let Some(msg) = ev.data.and_then(|d| serde_json::from_str::<Value>(&d).ok())
                    else {
                        continue;
                    };
                    if tx.send(Event::plain(msg)).await.is_err() {
                        return;
                    }
                }
            } else if let Ok(bytes) = crate::read_body(body, 16 << 20).await {
                if let Ok(msg) = serde_json::from_slice::<Value>(&bytes) {
                    let _ = tx.send(Event::plain(msg)).await;
                }
            }
        });
        if status.is_client_error() && status != StatusCode::BAD_REQUEST {
            // The session is gone (404): say so on the POST as well.
            let mut r = Response::new(crate::empty());
            *r.status_mut() = status;
            return r;
        }
        let mut r = Response::new(crate::full("Accepted"));
        *r.status_mut() = StatusCode::ACCEPTED;
        r
    }

    /// Messages stdio/SSE targets send on their own reach the legacy stream too.
    fn legacy_server_stream(&self, sealed: &str, legacy: &Legacy) {
        let Ok(state) = self.sealer.open(sealed) else {
            return;
        };
        let Some(local) = self.sessions.get(&state.id) else {
            return;
        };
        let (own_tx, mut own_rx) = mpsc::channel::<(Arc<str>, Value)>(256);
        *lock(&local.server_stream) = Some(own_tx);
        let tx = legacy.tx.clone();
        let prefixed = self.prefixed;
        tokio::spawn(async move {
            while let Some((name, m)) = own_rx.recv().await {
                if tx
                    .send(Event::plain(from_upstream(m, &name, prefixed)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_come_from_the_query() {
        assert_eq!(query_session(Some("sessionId=abc")), Some("abc"));
        assert_eq!(query_session(Some("x=1&sessionId=abc&y=2")), Some("abc"));
        assert_eq!(query_session(Some("sessionId=")), None);
        assert_eq!(query_session(None), None);
    }
}
