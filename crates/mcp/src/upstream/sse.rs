//! Legacy HTTP+SSE targets (MCP 2024-11-05): a GET opens an event stream whose first event,
//! `endpoint`, names the URL to POST messages to; every answer arrives on the stream. The
//! stream is the session, so the gateway holds one per downstream session, like a stdio child.

use super::mux::{Conn, Mux};
use super::stdio::ServerStream;
use super::UpstreamError;
use crate::{BoxFut, HttpClient};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderValue, Method, Request, Uri};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long the target may take to name its message endpoint.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SseTarget {
    pub url: Uri,
    pub client: Arc<dyn HttpClient>,
}

pub struct SseConn {
    mux: Arc<Mux>,
    endpoint: Uri,
    client: Arc<dyn HttpClient>,
    headers: HeaderMap,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SseConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// `endpoint` resolved against the stream's URL (it is usually a path with a query).
fn resolve(base: &Uri, endpoint: &str) -> Result<Uri, UpstreamError> {
    let bad = || {
        UpstreamError::Failed(format!(
            "the SSE target named an invalid endpoint {endpoint:?}"
        ))
    };
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint.parse().map_err(|_| bad());
    }
    let mut parts = base.clone().into_parts();
    let path = if endpoint.starts_with('/') {
        endpoint.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{endpoint}")
    };
    parts.path_and_query = Some(path.parse().map_err(|_| bad())?);
    Uri::from_parts(parts).map_err(|_| bad())
}

impl SseConn {
    pub async fn connect(
        target: Arc<str>,
        spec: &SseTarget,
        headers: &HeaderMap,
        server_stream: ServerStream,
    ) -> Result<Arc<SseConn>, UpstreamError> {
        let mut req = Request::new(crate::empty());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = spec.url.clone();
        for (k, v) in headers {
            req.headers_mut().append(k.clone(), v.clone());
        }
        req.headers_mut().insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let resp = spec.client.send(req).await.map_err(UpstreamError::Failed)?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Failed(format!(
                "the SSE target answered {}",
                resp.status()
            )));
        }
        let mux = Arc::new(Mux::new(target, server_stream));
        let (endpoint_tx, endpoint_rx) = oneshot::channel::<String>();
        let reader_mux = mux.clone();
        let reader = tokio::spawn(async move {
            let mut endpoint_tx = Some(endpoint_tx);
            let mut events = sse_stream::SseStream::new(super::http::IoBody(resp.into_body()));
            while let Some(Ok(ev)) = events.next().await {
                let Some(data) = ev.data else { continue };
                match ev.event.as_deref() {
                    Some("endpoint") => {
                        if let Some(tx) = endpoint_tx.take() {
                            let _ = tx.send(data.trim().to_string());
                        }
                    }
                    None | Some("message") => match serde_json::from_str::<Value>(&data) {
                        Ok(msg) => reader_mux.dispatch(msg).await,
                        Err(_) => {
                            tracing::debug!(mcp_target = %reader_mux.target, "SSE target sent an event that is not JSON")
                        }
                    },
                    Some(_) => {}
                }
            }
            reader_mux.died();
        });
        let endpoint = match tokio::time::timeout(ENDPOINT_TIMEOUT, endpoint_rx).await {
            Ok(Ok(e)) => resolve(&spec.url, &e)?,
            _ => {
                reader.abort();
                return Err(UpstreamError::Failed(
                    "the SSE target did not name its message endpoint".into(),
                ));
            }
        };
        Ok(Arc::new(SseConn {
            mux,
            endpoint,
            client: spec.client.clone(),
            headers: headers.clone(),
            reader,
        }))
    }

    async fn post(&self, msg: &Value) -> Result<(), UpstreamError> {
        let mut req = Request::new(crate::full(Bytes::from(
            serde_json::to_vec(msg).unwrap_or_default(),
        )));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.endpoint.clone();
        for (k, v) in &self.headers {
            req.headers_mut().append(k.clone(), v.clone());
        }
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let resp = self.client.send(req).await.map_err(UpstreamError::Failed)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(UpstreamError::Failed(format!(
                "the SSE target refused a message: {}",
                resp.status()
            )))
        }
    }
}

impl Conn for SseConn {
    fn mux(&self) -> &Mux {
        &self.mux
    }

    fn write<'a>(&'a self, msg: &'a Value) -> BoxFut<'a, Result<(), UpstreamError>> {
        Box::pin(self.post(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_resolve_against_the_stream_url() {
        let base: Uri = "http://127.0.0.1:3001/sse".parse().unwrap();
        assert_eq!(
            resolve(&base, "/message?sessionId=abc")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:3001/message?sessionId=abc"
        );
        let nested: Uri = "http://h:1/mcp/sse".parse().unwrap();
        assert_eq!(
            resolve(&nested, "messages?s=1").unwrap().to_string(),
            "http://h:1/mcp/messages?s=1"
        );
        assert_eq!(
            resolve(&base, "http://other:2/m").unwrap().to_string(),
            "http://other:2/m"
        );
    }
}
