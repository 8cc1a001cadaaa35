//! Streamable HTTP targets (MCP 2025-03-26 and later): every client message is a POST; the
//! answer is one JSON message or an SSE stream of messages ending with the response; a GET
//! opens the server's own stream; DELETE ends the session.
//!
//! Nothing here is held per session: the upstream session id travels in the sealed downstream
//! id, so any replica can continue the session.

use super::{Sink, UpstreamError};
use crate::{Body, HttpClient};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// Largest JSON answer read from an upstream.
const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;

pub struct HttpTarget {
    pub url: Uri,
    pub client: Arc<dyn HttpClient>,
    /// The target's `server/discover` result while its `ttlMs` lasts, when it is `public`:
    /// sessions opened meanwhile skip the era probe ([`super::modern`]).
    pub discovered: super::modern::Discovered,
    /// Modern targets' tools' `x-mcp-header` bindings, for the `Mcp-Param-*` headers.
    pub tool_headers: super::modern::ToolHeaders,
}

pub struct Posted {
    pub session_id: Option<String>,
    /// The upstream's messages for this POST; empty for an accepted notification.
    pub messages: mpsc::Receiver<Value>,
}

impl HttpTarget {
    fn request(
        &self,
        method: Method,
        fwd: &HeaderMap,
        session: Option<&str>,
        version: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Request<Body>, UpstreamError> {
        let mut req = Request::new(match body {
            Some(b) => crate::full(b),
            None => crate::empty(),
        });
        *req.method_mut() = method.clone();
        *req.uri_mut() = self.url.clone();
        let h = req.headers_mut();
        for (k, v) in fwd {
            h.append(k.clone(), v.clone());
        }
        let accept = if method == Method::GET {
            "text/event-stream"
        } else {
            "application/json, text/event-stream"
        };
        h.insert(header::ACCEPT, HeaderValue::from_static(accept));
        if method == Method::POST {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        if let Some(s) = session {
            let v = HeaderValue::from_str(s)
                .map_err(|_| UpstreamError::Failed("upstream session id is not a header".into()))?;
            h.insert(SESSION_HEADER, v);
        }
        if let Some(v) = version.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(VERSION_HEADER, v);
        }
        Ok(req)
    }

    /// POSTs one message. A request's answer streams into `messages` as it arrives.
    pub async fn post(
        &self,
        fwd: &HeaderMap,
        session: Option<&str>,
        version: Option<&str>,
        msg: &Value,
    ) -> Result<Posted, UpstreamError> {
        let body = Bytes::from(serde_json::to_vec(msg).unwrap_or_default());
        let req = self.request(Method::POST, fwd, session, version, Some(body))?;
        let resp = self.client.send(req).await.map_err(UpstreamError::Failed)?;
        let status = resp.status();
        let session_id = resp
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if status == StatusCode::NOT_FOUND && session.is_some() {
            return Err(UpstreamError::SessionGone);
        }
        let (tx, rx) = mpsc::channel(64);
        if status == StatusCode::ACCEPTED {
            return Ok(Posted {
                session_id,
                messages: rx,
            });
        }
        let is_sse = content_type(resp.headers()).starts_with("text/event-stream");
        if is_sse && status.is_success() {
            tokio::spawn(pump_sse(resp.into_body(), tx, true));
            return Ok(Posted {
                session_id,
                messages: rx,
            });
        }
        let bytes = read_limited(resp.into_body()).await?;
        match serde_json::from_slice::<Value>(&bytes) {
            // A JSON-RPC answer, success or error, is passed on whatever the status.
            Ok(v) if v.get("jsonrpc").is_some() => {
                let _ = tx.send(v).await;
            }
            Ok(Value::Array(items)) if status.is_success() => {
                for v in items {
                    let _ = tx.send(v).await;
                }
            }
            _ if status.is_success() && bytes.is_empty() => {}
            _ => {
                return Err(UpstreamError::Failed(format!(
                    "upstream answered {status}: {}",
                    snippet(&bytes)
                )))
            }
        }
        Ok(Posted {
            session_id,
            messages: rx,
        })
    }

    /// Opens the server stream and copies its messages into `sink` until either side ends.
    pub async fn listen(
        &self,
        fwd: &HeaderMap,
        session: Option<&str>,
        version: Option<&str>,
        sink: Sink,
    ) -> Result<(), UpstreamError> {
        let req = self.request(Method::GET, fwd, session, version, None)?;
        let resp = self.client.send(req).await.map_err(UpstreamError::Failed)?;
        match resp.status() {
            s if s.is_success()
                && content_type(resp.headers()).starts_with("text/event-stream") =>
            {
                pump_sse(resp.into_body(), sink, false).await;
                Ok(())
            }
            // The server offers no stream of its own: nothing to listen to.
            StatusCode::METHOD_NOT_ALLOWED => Ok(()),
            StatusCode::NOT_FOUND => Err(UpstreamError::SessionGone),
            s => Err(UpstreamError::Failed(format!("server stream refused: {s}"))),
        }
    }

    pub async fn delete(&self, fwd: &HeaderMap, session: &str, version: Option<&str>) {
        if let Ok(req) = self.request(Method::DELETE, fwd, Some(session), version, None) {
            if let Err(e) = self.client.send(req).await {
                tracing::debug!(error = %e, "closing upstream MCP session failed");
            }
        }
    }
}

fn content_type(h: &HeaderMap) -> &str {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]);
    s.trim().to_string()
}

async fn read_limited(body: Body) -> Result<Bytes, UpstreamError> {
    crate::read_body(body, MAX_JSON_BYTES)
        .await
        .map_err(|e| match e {
            crate::ReadError::TooLarge => UpstreamError::Failed(format!(
                "upstream answer larger than {MAX_JSON_BYTES} bytes"
            )),
            crate::ReadError::Broken(m) => {
                UpstreamError::Failed(format!("reading upstream answer: {m}"))
            }
        })
}

/// The body with its error as `std::io::Error`, which the SSE decoder wants. (A named type:
/// `map_err` with a closure trips a higher-ranked `Send` inference limit inside spawned tasks.)
pub(crate) struct IoBody(pub(crate) Body);

impl http_body::Body for IoBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        std::pin::Pin::new(&mut self.0)
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(std::io::Error::other)))
    }
}

/// Copies the JSON-RPC messages of an SSE body into `tx`. A POST stream ends at its response.
async fn pump_sse(body: Body, tx: Sink, stop_at_response: bool) {
    let body = IoBody(body);
    let mut events = sse_stream::SseStream::new(body);
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(error = %e, "upstream MCP stream broke");
                return;
            }
        };
        let Some(data) = ev.data.filter(|d| !d.is_empty()) else {
            continue; // priming events and keep-alives carry no message
        };
        let msg: Value = match serde_json::from_str(&data) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "upstream MCP stream sent an event that is not JSON");
                continue;
            }
        };
        let is_response = crate::jsonrpc::kind(&msg) == crate::jsonrpc::Kind::Response;
        if tx.send(msg).await.is_err() {
            return; // nobody reads any more
        }
        if stop_at_response && is_response {
            return;
        }
    }
}
