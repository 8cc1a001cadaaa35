//! The targets a federation talks to, behind one interface: initialize, request (a stream of
//! messages ending with the answer), send (notifications and answers to server requests),
//! listen (the server's own stream) and close.

pub mod http;
pub mod modern;
pub mod mux;
pub mod openapi;
pub mod sse;
pub mod stdio;

use crate::local::LocalSession;
use crate::session::TargetSession;
use ::http::HeaderMap;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Where an upstream's messages are delivered.
pub type Sink = mpsc::Sender<Value>;

#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamError {
    /// The upstream no longer knows this session (it answered 404).
    SessionGone,
    Failed(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::SessionGone => f.write_str("the upstream session expired"),
            UpstreamError::Failed(m) => f.write_str(m),
        }
    }
}

pub enum Transport {
    Http(http::HttpTarget),
    Stdio(stdio::StdioSpec),
    Sse(sse::SseTarget),
    OpenApi(openapi::OpenApiTarget),
}

pub struct Target {
    pub name: Arc<str>,
    pub transport: Transport,
}

/// What one call needs besides the message.
pub struct CallCtx<'a> {
    /// Downstream headers forwarded to HTTP targets (after the route's header policies).
    pub headers: &'a HeaderMap,
    pub local: &'a Arc<LocalSession>,
    /// The client's `initialize` params, replayed when a stdio target must be (re)started.
    pub init: &'a Value,
}

fn initialize_msg(init: &Value, version: &str) -> Value {
    let mut params = match init {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    params.insert("protocolVersion".into(), Value::from(version));
    serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
}

const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// Reads the answer to a request off a message stream, passing everything else to `others`.
pub async fn answer(
    mut rx: mpsc::Receiver<Value>,
    mut others: impl FnMut(Value),
) -> Result<Value, UpstreamError> {
    while let Some(msg) = rx.recv().await {
        if crate::jsonrpc::kind(&msg) == crate::jsonrpc::Kind::Response {
            return Ok(msg);
        }
        others(msg);
    }
    Err(UpstreamError::Failed(
        "the upstream closed the exchange before answering".into(),
    ))
}

impl Target {
    /// Opens an upstream session: `initialize`, then `notifications/initialized` for targets the
    /// gateway owns the lifecycle of (stdio; an HTTP target gets the client's own notification).
    /// Returns the upstream's result and its session.
    pub async fn initialize(
        &self,
        ctx: &CallCtx<'_>,
        version: &str,
    ) -> Result<(Value, TargetSession), UpstreamError> {
        let msg = initialize_msg(ctx.init, version);
        let (answer_msg, session_id) = match &self.transport {
            Transport::Http(h) => {
                if let Some(found) = h.discovered.fresh() {
                    return Ok((modern::as_initialize(&found), self.modern_session()));
                }
                let legacy = match h.post(ctx.headers, None, None, &msg).await {
                    Ok(posted) => answer(posted.messages, |_| {})
                        .await
                        .map(|a| (a, posted.session_id)),
                    Err(e) => Err(e),
                };
                match legacy {
                    Ok((a, sid)) if a.get("error").is_none() => (a, sid),
                    // Refused: a target of the modern revision only says so on discover.
                    refused => match modern::discover(h, ctx).await {
                        Some(found) => {
                            return Ok((modern::as_initialize(&found), self.modern_session()))
                        }
                        None => refused?,
                    },
                }
            }
            Transport::Stdio(_) | Transport::Sse(_) => {
                let conn = self.conn(ctx, None).await?;
                let rx = conn.request(msg).await?;
                (answer(rx, |_| {}).await?, None)
            }
            Transport::OpenApi(o) => (o.answer(&msg, ctx.headers).await?, None),
        };
        if let Some(e) = answer_msg.get("error") {
            return Err(UpstreamError::Failed(format!(
                "initialize was refused: {}",
                e.get("message").and_then(Value::as_str).unwrap_or("error")
            )));
        }
        let result = answer_msg.get("result").cloned().unwrap_or(Value::Null);
        let agreed = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(version)
            .to_string();
        if matches!(self.transport, Transport::Stdio(_) | Transport::Sse(_)) {
            if let Some(conn) = ctx.local.live(&self.name) {
                let _ = conn
                    .send(&serde_json::from_str(INITIALIZED).unwrap_or_default())
                    .await;
            }
        }
        Ok((
            result,
            TargetSession {
                target: self.name.to_string(),
                session_id,
                version: agreed,
            },
        ))
    }

    /// The "session" with a modern target: no id, the modern version.
    fn modern_session(&self) -> TargetSession {
        TargetSession {
            target: self.name.to_string(),
            session_id: None,
            version: modern::VERSION.to_string(),
        }
    }

    /// Sends a request; returns the stream of messages that ends with its answer.
    pub async fn request(
        &self,
        ctx: &CallCtx<'_>,
        ts: &TargetSession,
        msg: Value,
    ) -> Result<mpsc::Receiver<Value>, UpstreamError> {
        match &self.transport {
            Transport::Http(h) if modern::is_modern(&ts.version) => {
                modern::request(h, &self.name, ctx, msg).await
            }
            Transport::Http(h) => Ok(h
                .post(
                    ctx.headers,
                    ts.session_id.as_deref(),
                    Some(&ts.version),
                    &msg,
                )
                .await?
                .messages),
            Transport::Stdio(_) | Transport::Sse(_) => {
                let conn = self.conn(ctx, Some(ts)).await?;
                conn.request(msg).await
            }
            Transport::OpenApi(o) => {
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.send(o.answer(&msg, ctx.headers).await?).await;
                Ok(rx)
            }
        }
    }

    /// Sends a notification, or the client's answer to one of the server's requests.
    pub async fn send(
        &self,
        ctx: &CallCtx<'_>,
        ts: &TargetSession,
        msg: &Value,
    ) -> Result<(), UpstreamError> {
        match &self.transport {
            // A modern target takes no notifications; answers go to the round that asked.
            Transport::Http(_) if modern::is_modern(&ts.version) => {
                if crate::jsonrpc::kind(msg) == crate::jsonrpc::Kind::Response
                    && !modern::deliver(&self.name, msg)
                {
                    tracing::debug!(mcp_target = %self.name, "answer to a question no call here waits for");
                }
                Ok(())
            }
            Transport::Http(h) => {
                h.post(
                    ctx.headers,
                    ts.session_id.as_deref(),
                    Some(&ts.version),
                    msg,
                )
                .await?;
                Ok(())
            }
            Transport::Stdio(_) | Transport::Sse(_) => {
                // The gateway ran this connection's handshake itself.
                if crate::jsonrpc::method(msg) == "notifications/initialized" {
                    return Ok(());
                }
                // Anything else goes to the live connection, opened (and re-initialized) first
                // when this session resumed here: the client may be answering its request.
                let conn = self.conn(ctx, Some(ts)).await?;
                conn.send(msg).await
            }
            // The gateway is this target's server: nothing to notify.
            Transport::OpenApi(_) => Ok(()),
        }
    }

    /// Copies the server's own stream into `sink` until it ends.
    pub async fn listen(
        &self,
        ctx: &CallCtx<'_>,
        ts: &TargetSession,
        sink: Sink,
    ) -> Result<(), UpstreamError> {
        match &self.transport {
            // The revision has no server stream.
            Transport::Http(_) if modern::is_modern(&ts.version) => Ok(()),
            Transport::Http(h) => {
                h.listen(
                    ctx.headers,
                    ts.session_id.as_deref(),
                    Some(&ts.version),
                    sink,
                )
                .await
            }
            // A connection's own messages reach the session's server stream directly.
            Transport::Stdio(_) | Transport::Sse(_) | Transport::OpenApi(_) => Ok(()),
        }
    }

    pub async fn close(&self, ctx: &CallCtx<'_>, ts: &TargetSession) {
        if let (Transport::Http(h), Some(sid)) = (&self.transport, &ts.session_id) {
            h.delete(ctx.headers, sid, Some(&ts.version)).await;
        }
    }

    /// This session's connection to a stdio or SSE target, (re)opened when needed; `resumed`
    /// replays the handshake on a new connection.
    async fn conn(
        &self,
        ctx: &CallCtx<'_>,
        resumed: Option<&TargetSession>,
    ) -> Result<Arc<dyn mux::Conn>, UpstreamError> {
        let server_stream = ctx.local.server_stream.clone();
        let name = self.name.clone();
        let headers = ctx.headers;
        let connect = || -> crate::BoxFut<'_, Result<Arc<dyn mux::Conn>, UpstreamError>> {
            Box::pin(async move {
                match &self.transport {
                    Transport::Stdio(spec) => {
                        Ok(stdio::StdioConn::spawn(name, spec, server_stream)?
                            as Arc<dyn mux::Conn>)
                    }
                    Transport::Sse(spec) => {
                        Ok(
                            sse::SseConn::connect(name, spec, headers, server_stream).await?
                                as Arc<dyn mux::Conn>,
                        )
                    }
                    Transport::Http(_) | Transport::OpenApi(_) => {
                        Err(UpstreamError::Failed("not a connection target".into()))
                    }
                }
            })
        };
        ctx.local
            .conn(&self.name, connect, resumed.map(|ts| (ctx, ts)))
            .await
    }

    /// Re-runs the handshake on a new connection, at the version the session agreed; used by
    /// [`LocalSession::conn`].
    pub(crate) async fn reinitialize(
        conn: &dyn mux::Conn,
        init: &Value,
        version: &str,
    ) -> Result<(), UpstreamError> {
        let rx = conn.request(initialize_msg(init, version)).await?;
        let a = answer(rx, |_| {}).await?;
        if a.get("error").is_some() {
            return Err(UpstreamError::Failed(
                "the restarted server refused initialize".into(),
            ));
        }
        conn.send(&serde_json::from_str(INITIALIZED).unwrap_or_default())
            .await
    }
}
