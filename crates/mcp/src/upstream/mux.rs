//! Request/answer matching for targets the gateway holds a connection to per session (a stdio
//! child, a legacy SSE stream): the gateway's own ids on the wire, the client's restored on
//! the way back, and the target's own messages routed to the call they belong to.

use super::stdio::ServerStream;
use super::{Sink, UpstreamError};
use crate::BoxFut;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// A per-session connection to a target: a [`Mux`] for matching answers, and a way to put a
/// message on the wire. Requests, sends and liveness follow from those two.
pub trait Conn: Send + Sync {
    fn mux(&self) -> &Mux;
    /// Puts one message on the wire.
    fn write<'a>(&'a self, msg: &'a Value) -> BoxFut<'a, Result<(), UpstreamError>>;

    fn is_alive(&self) -> bool {
        self.mux().is_alive()
    }

    fn started(&self) -> Instant {
        self.mux().started
    }

    /// Sends a request; its answer (and what the target sends meanwhile) arrives on the
    /// returned channel.
    fn request(&self, mut msg: Value) -> BoxFut<'_, Result<mpsc::Receiver<Value>, UpstreamError>> {
        Box::pin(async move {
            let (id, rx) = self.mux().register(&mut msg)?;
            if let Err(e) = self.write(&msg).await {
                self.mux().forget(id);
                return Err(e);
            }
            Ok(rx)
        })
    }

    /// Sends a notification, or an answer to one of the target's requests.
    fn send<'a>(&'a self, msg: &'a Value) -> BoxFut<'a, Result<(), UpstreamError>> {
        self.write(msg)
    }
}

struct Pending {
    original_id: Value,
    /// The call's `_meta.progressToken`: its progress notifications go to it.
    progress_token: Option<Value>,
    tx: Sink,
}

pub struct Mux {
    pub target: Arc<str>,
    pending: Mutex<BTreeMap<u64, Pending>>,
    next_id: AtomicU64,
    /// Where the target's own messages go when no call is in flight.
    server_stream: ServerStream,
    alive: AtomicBool,
    pub started: Instant,
}

impl Mux {
    pub fn new(target: Arc<str>, server_stream: ServerStream) -> Mux {
        Mux {
            target,
            pending: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            server_stream,
            alive: AtomicBool::new(true),
            started: Instant::now(),
        }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// The connection is gone: every waiting call learns no answer is coming.
    pub fn died(&self) {
        self.alive.store(false, Ordering::Release);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        tracing::warn!(mcp_target = %self.target, "MCP target connection closed");
    }

    /// Gives `msg` one of our ids and returns it with the channel its answer will arrive on.
    pub fn register(&self, msg: &mut Value) -> Result<(u64, mpsc::Receiver<Value>), UpstreamError> {
        if !self.is_alive() {
            return Err(UpstreamError::Failed("the MCP target is gone".into()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let original_id = std::mem::replace(&mut msg["id"], Value::from(id));
        let progress_token = msg.pointer("/params/_meta/progressToken").cloned();
        let (tx, rx) = mpsc::channel(64);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Pending {
                    original_id,
                    progress_token,
                    tx,
                },
            );
        Ok((id, rx))
    }

    pub fn forget(&self, id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Routes one message from the target.
    pub async fn dispatch(&self, mut msg: Value) {
        use crate::jsonrpc::{kind, Kind};
        if kind(&msg) == Kind::Response {
            let ours = msg.get("id").and_then(Value::as_u64);
            let pending = ours.and_then(|id| {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id)
            });
            if let Some(p) = pending {
                msg["id"] = p.original_id;
                let _ = p.tx.send(msg).await;
            }
            return;
        }
        // The target's own messages: progress to the call it reports on; list changes and
        // resource updates to the session's server stream when one is open; requests
        // (sampling, elicitation...) and logging to the oldest call in flight, which they
        // usually serve, else the server stream.
        let method = crate::jsonrpc::method(&msg);
        let session_wide =
            method.ends_with("/list_changed") || method == "notifications/resources/updated";
        let stream = self
            .server_stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|tx| !tx.is_closed()); // the client's GET may have gone
        let call = if session_wide && stream.is_some() {
            None
        } else {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let mut calls = pending.values();
            match msg
                .pointer("/params/progressToken")
                .filter(|_| method == "notifications/progress")
            {
                Some(t) => calls.find(|p| p.progress_token.as_ref() == Some(t)),
                None => calls.next(),
            }
            .map(|p| p.tx.clone())
        };
        if let Some(tx) = call {
            let _ = tx.send(msg).await;
        } else if let Some(tx) = stream {
            let _ = tx.send((self.target.clone(), msg)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn target_messages_go_to_the_call_or_the_open_server_stream() {
        let stream: ServerStream = Arc::new(Mutex::new(None));
        let mux = Mux::new("t".into(), stream.clone());
        let mut call = json!({"jsonrpc": "2.0", "id": "c1", "method": "tools/call",
            "params": {"_meta": {"progressToken": "p"}}});
        let (_, mut rx) = mux.register(&mut call).unwrap();
        let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});

        // No server stream: a list change goes to the call in flight.
        mux.dispatch(changed.clone()).await;
        assert_eq!(
            rx.recv().await.unwrap()["method"],
            "notifications/tools/list_changed"
        );

        // An open server stream takes it; progress still goes to its call.
        let (tx, mut server) = mpsc::channel(4);
        *stream.lock().unwrap() = Some(tx);
        mux.dispatch(changed.clone()).await;
        assert_eq!(
            server.recv().await.unwrap().1["method"],
            "notifications/tools/list_changed"
        );
        mux.dispatch(json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "p", "progress": 1}}))
            .await;
        assert_eq!(rx.recv().await.unwrap()["params"]["progress"], 1);

        // The client's GET went away: back to the call, not lost.
        drop(server);
        mux.dispatch(changed).await;
        assert_eq!(
            rx.recv().await.unwrap()["method"],
            "notifications/tools/list_changed"
        );

        // The answer gets the client's id back.
        mux.dispatch(json!({"jsonrpc": "2.0", "id": 1, "result": {}}))
            .await;
        assert_eq!(rx.recv().await.unwrap()["id"], "c1");
    }
}
