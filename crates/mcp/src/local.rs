//! What a replica holds for a session beyond the sealed id: stdio children, the sink of the
//! client's server stream, and when the session was last used. A session this replica has
//! never seen is created on first use (resumption); one it closed or idled out is remembered
//! for a while so its id answers 404.

use crate::session::TargetSession;
use crate::session::MAX_SESSION_AGE_SECS;
use crate::upstream::mux::Conn;
use crate::upstream::stdio::{Backoff, ServerStream};
use crate::upstream::{CallCtx, Target, UpstreamError};
use crate::BoxFut;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A restart delay longer than this fails the call instead of holding it.
const MAX_WAIT_FOR_RESTART: Duration = Duration::from_secs(2);

#[derive(Default)]
struct ConnSlot {
    conn: Option<Arc<dyn Conn>>,
    backoff: Backoff,
}

pub struct LocalSession {
    last_used: Mutex<Instant>,
    slots: Mutex<HashMap<Arc<str>, ConnSlot>>,
    spawn_lock: tokio::sync::Mutex<()>,
    pub server_stream: ServerStream,
    /// Events sent in this session, for `Last-Event-ID` resumption.
    pub events: Arc<crate::replay::EventLog>,
}

impl LocalSession {
    fn new() -> LocalSession {
        LocalSession {
            last_used: Mutex::new(Instant::now()),
            slots: Mutex::new(HashMap::new()),
            spawn_lock: tokio::sync::Mutex::new(()),
            server_stream: Arc::new(Mutex::new(None)),
            events: Default::default(),
        }
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// The live connection to a stdio or SSE target, if there is one.
    pub fn live(&self, target: &str) -> Option<Arc<dyn Conn>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .get(target)
            .and_then(|s| s.conn.clone())
            .filter(|c| c.is_alive())
    }

    /// The connection to a stdio or SSE target, opened (or reopened, with backoff) when there
    /// is none. A reopen within an established session replays the handshake (`reinit`).
    pub async fn conn<'c>(
        &self,
        target: &Arc<str>,
        connect: impl FnOnce() -> BoxFut<'c, Result<Arc<dyn Conn>, UpstreamError>>,
        reinit: Option<(&CallCtx<'_>, &TargetSession)>,
    ) -> Result<Arc<dyn Conn>, UpstreamError> {
        if let Some(c) = self.live(target) {
            return Ok(c);
        }
        let _serial = self.spawn_lock.lock().await;
        if let Some(c) = self.live(target) {
            return Ok(c);
        }
        let delay = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let slot = slots.entry(target.clone()).or_default();
            let lived = slot.conn.as_ref().map(|c| c.started().elapsed());
            slot.backoff.next_delay(lived)
        };
        if delay > MAX_WAIT_FOR_RESTART {
            return Err(UpstreamError::Failed(format!(
                "MCP target {target} keeps failing; next reconnect in {}s",
                delay.as_secs()
            )));
        }
        tokio::time::sleep(delay).await;
        if reinit.is_some() {
            tracing::info!(mcp_target = %target, "reconnecting an MCP target for a resumed session");
        }
        let conn = connect().await?;
        if let Some((ctx, ts)) = reinit {
            Target::reinitialize(conn.as_ref(), ctx.init, &ts.version).await?;
        }
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.clone())
            .or_default()
            .conn = Some(conn.clone());
        Ok(conn)
    }
}

pub struct LocalSessions {
    live: Mutex<HashMap<String, Arc<LocalSession>>>,
    /// Ids this replica closed or expired, and when.
    ended: Mutex<HashMap<String, Instant>>,
    idle_timeout: Duration,
}

impl LocalSessions {
    pub fn new(idle_timeout: Duration) -> Arc<LocalSessions> {
        let sessions = Arc::new(LocalSessions {
            live: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashMap::new()),
            idle_timeout,
        });
        let weak = Arc::downgrade(&sessions);
        let every = (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(s) = weak.upgrade() else { return };
                    s.reap();
                }
            });
        }
        sessions
    }

    /// This replica's state for a session, created on first use; `None` once it ended here.
    pub fn get(&self, id: &str) -> Option<Arc<LocalSession>> {
        if self
            .ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
        {
            return None;
        }
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let s = live
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(LocalSession::new()))
            .clone();
        s.touch();
        Some(s)
    }

    /// Ends a session here: its children are killed when the last call using them finishes.
    pub fn end(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), Instant::now());
    }

    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn reap(&self) {
        let idle: Vec<String> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, s)| s.idle_for() > self.idle_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            tracing::debug!(session = %id, "MCP session idle: closed");
            self.end(&id);
        }
        let keep = Duration::from_secs(MAX_SESSION_AGE_SECS);
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| t.elapsed() < keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_sessions_end_and_stay_ended() {
        let s = LocalSessions::new(Duration::from_millis(100));
        assert!(s.get("a").is_some());
        assert_eq!(s.len(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(s.is_empty(), "the idle session was reaped");
        assert!(s.get("a").is_none(), "an expired id is not revived");
        assert!(s.get("b").is_some(), "an id never seen here is resumed");
        s.end("b");
        assert!(s.get("b").is_none());
    }
}
