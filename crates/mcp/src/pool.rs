//! Upstream sessions held for modern (stateless) clients. A modern client opens no session,
//! but the targets behind the route are legacy servers that need one, initialized with the
//! capabilities the client declares (a server may offer tools only to clients that can be
//! sampled or elicited). So the gateway keeps them: one set of upstream sessions (one per
//! target, opened together as for a legacy `initialize`) per client identity and declared
//! capabilities, on this replica; reused by every request of that identity, closed when
//! idle for the backend's `sessionIdleTimeout`, and opened again when a target forgets one.

use crate::downstream::RpcError;
use crate::local::{LocalSession, LocalSessions};
use crate::session::{SessionState, TargetSession};
use crate::upstream::{CallCtx, Target};
use crate::{Gateway, Observed, SUPPORTED_VERSIONS};
use futures_util::future::join_all;
use http::HeaderMap;
use rmcp::model::ServerCapabilities;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Sets of upstream sessions kept per replica; past this, the least recently used is closed.
const MAX_POOLED: usize = 256;

/// What a set of upstream sessions is kept for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub principal: String,
    /// The declared client capabilities, as canonical JSON.
    pub capabilities: String,
}

/// One set of upstream sessions and what the targets offered when they opened.
pub(crate) struct Pooled {
    pub state: SessionState,
    pub local: Arc<LocalSession>,
    pub caps: ServerCapabilities,
    pub instructions: Vec<String>,
    /// The targets' `tasks` capabilities (2025-11-25), merged: what the tasks extension
    /// is offered on.
    pub tasks: Option<Value>,
    targets: Vec<(Arc<Target>, TargetSession)>,
    /// Headers of the request that opened the sessions: they close them too.
    headers: HeaderMap,
    /// The sessions' own messages (server streams), for `subscriptions/listen`: started by
    /// the first listener, shared by the next ones.
    feed: Mutex<Option<Feed>>,
}

/// What the targets send on their own, by target name, and the tasks reading it.
type Feed = (
    tokio::sync::broadcast::Sender<(Arc<str>, Value)>,
    Vec<tokio::task::JoinHandle<()>>,
);

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some((_, tasks)) = lock(&self.feed).take() {
            for t in tasks {
                t.abort();
            }
        }
    }
}

impl Pooled {
    /// The targets' own messages on these sessions from now on: their server streams (HTTP
    /// targets' GET streams; stdio and SSE targets' messages outside any request), opened
    /// when nobody listens yet.
    pub fn feed(&self) -> tokio::sync::broadcast::Receiver<(Arc<str>, Value)> {
        let mut feed = lock(&self.feed);
        if let Some((tx, tasks)) = &*feed {
            if !tasks.iter().all(|t| t.is_finished()) {
                return tx.subscribe();
            }
        }
        let (tx, rx) = tokio::sync::broadcast::channel(256);
        let mut tasks = Vec::new();
        let (own_tx, mut own_rx) = tokio::sync::mpsc::channel::<(Arc<str>, Value)>(256);
        *lock(&self.local.server_stream) = Some(own_tx);
        {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(m) = own_rx.recv().await {
                    let _ = tx.send(m);
                }
            }));
        }
        for (t, ts) in &self.targets {
            let (t, ts, tx) = (t.clone(), ts.clone(), tx.clone());
            let (headers, local, init) = (
                self.headers.clone(),
                self.local.clone(),
                self.state.init.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let (raw_tx, mut raw_rx) = tokio::sync::mpsc::channel::<Value>(64);
                let name = t.name.clone();
                let relay = async {
                    while let Some(m) = raw_rx.recv().await {
                        let _ = tx.send((name.clone(), m));
                    }
                };
                let ctx = CallCtx {
                    headers: &headers,
                    local: &local,
                    init: &init,
                };
                let (r, ()) = tokio::join!(t.listen(&ctx, &ts, raw_tx), relay);
                if let Err(e) = r {
                    tracing::debug!(mcp_target = %t.name, error = %e, "pooled server stream ended");
                }
            }));
        }
        *feed = Some((tx, tasks));
        rx
    }

    /// The upstream sessions, by target.
    pub fn targets(&self) -> &[(Arc<Target>, TargetSession)] {
        &self.targets
    }

    /// The headers the sessions were opened with.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

struct Slot {
    ready: Mutex<Option<Arc<Pooled>>>,
    /// Held while the sessions open, so concurrent first requests open them once.
    opening: tokio::sync::Mutex<()>,
    last_used: Mutex<Instant>,
}

impl Slot {
    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }
    fn idle_for(&self) -> Duration {
        lock(&self.last_used).elapsed()
    }
}

pub(crate) struct Pool {
    slots: Mutex<HashMap<PoolKey, Arc<Slot>>>,
    idle: Duration,
    sessions: Arc<LocalSessions>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends a set of upstream sessions (DELETE to HTTP targets; stdio children go with the last
/// reference to its local state).
async fn close(p: Arc<Pooled>, sessions: Arc<LocalSessions>) {
    let ctx = CallCtx {
        headers: &p.headers,
        local: &p.local,
        init: &p.state.init,
    };
    join_all(
        p.targets
            .iter()
            .map(|(t, ts)| crate::boxed(t.close(&ctx, ts))),
    )
    .await;
    sessions.end(&p.state.id);
}

fn close_later(p: Arc<Pooled>, sessions: Arc<LocalSessions>) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(close(p, sessions));
    }
}

impl Pool {
    pub fn new(idle: Duration, sessions: Arc<LocalSessions>) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            slots: Mutex::new(HashMap::new()),
            idle,
            sessions,
        });
        let weak: Weak<Pool> = Arc::downgrade(&pool);
        let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(p) = weak.upgrade() else { return };
                    p.reap();
                }
            });
        }
        pool
    }

    fn slot(&self, key: &PoolKey) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        if let Some(s) = slots.get(key) {
            s.touch();
            return s.clone();
        }
        if slots.len() >= MAX_POOLED {
            let oldest = slots
                .iter()
                .min_by_key(|(_, s)| *lock(&s.last_used))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                if let Some(p) = slots.remove(&k).and_then(|s| lock(&s.ready).take()) {
                    close_later(p, self.sessions.clone());
                }
            }
        }
        let s = Arc::new(Slot {
            ready: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            last_used: Mutex::new(Instant::now()),
        });
        slots.insert(key.clone(), s.clone());
        s
    }

    /// The upstream sessions for `key`, opened with the client's `init` (capabilities and
    /// client info) when there are none.
    pub async fn get(
        &self,
        gw: &Gateway,
        key: &PoolKey,
        init: &Value,
        fwd: &HeaderMap,
        observed: &mut Observed,
    ) -> Result<Arc<Pooled>, RpcError> {
        let slot = self.slot(key);
        if let Some(p) = lock(&slot.ready).clone() {
            return Ok(p);
        }
        let _opening = slot.opening.lock().await;
        if let Some(p) = lock(&slot.ready).clone() {
            return Ok(p);
        }
        let joined = gw
            .join_targets(
                fwd,
                init.clone(),
                SUPPORTED_VERSIONS[0].to_string(),
                observed,
            )
            .await?;
        // Nobody else will say it: HTTP targets learn the session is ready (stdio and SSE
        // targets heard it from the gateway when they were initialized).
        let ctx = CallCtx {
            headers: fwd,
            local: &joined.local,
            init: &joined.state.init,
        };
        let initialized =
            serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        gw.notify_all(&ctx, &joined.state, &initialized).await;
        let targets = gw
            .joined(&joined.state)
            .map(|(t, ts)| (t.clone(), ts.clone()))
            .collect();
        let p = Arc::new(Pooled {
            state: joined.state,
            local: joined.local,
            caps: joined.caps,
            instructions: joined.instructions,
            tasks: joined.tasks,
            targets,
            headers: fwd.clone(),
            feed: Mutex::new(None),
        });
        tracing::debug!(session = %p.state.id, principal = %key.principal, "opened pooled upstream MCP sessions");
        *lock(&slot.ready) = Some(p.clone());
        Ok(p)
    }

    /// Drops `pooled` (a target forgot its session): the next request opens new sessions.
    pub fn evict(&self, key: &PoolKey, pooled: &Arc<Pooled>) {
        let slot = lock(&self.slots).get(key).cloned();
        if let Some(slot) = slot {
            let mut ready = lock(&slot.ready);
            if ready.as_ref().is_some_and(|p| Arc::ptr_eq(p, pooled)) {
                *ready = None;
            }
        }
        close_later(pooled.clone(), self.sessions.clone());
    }

    fn reap(&self) {
        let idle: Vec<Arc<Slot>> = {
            let mut slots = lock(&self.slots);
            let keys: Vec<PoolKey> = slots
                .iter()
                .filter(|(_, s)| s.idle_for() > self.idle)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| slots.remove(k)).collect()
        };
        for slot in idle {
            if let Some(p) = lock(&slot.ready).take() {
                tracing::debug!(session = %p.state.id, "pooled upstream MCP sessions idle: closed");
                close_later(p, self.sessions.clone());
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }
}

impl Drop for Pool {
    /// The backend's config was replaced: its upstream sessions end with it.
    fn drop(&mut self) {
        let slots = std::mem::take(&mut *lock(&self.slots));
        for (_, slot) in slots {
            if let Some(p) = lock(&slot.ready).take() {
                close_later(p, self.sessions.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str) -> PoolKey {
        PoolKey {
            principal: p.into(),
            capabilities: "{}".into(),
        }
    }

    #[tokio::test]
    async fn slots_are_per_key_and_reaped_when_idle() {
        let pool = Pool::new(
            Duration::from_millis(100),
            LocalSessions::new(Duration::from_secs(60)),
        );
        let a = pool.slot(&key("a"));
        assert!(Arc::ptr_eq(&a, &pool.slot(&key("a"))), "reused");
        pool.slot(&key("b"));
        assert_eq!(pool.len(), 2);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(pool.len(), 0, "idle slots are reaped");
    }

    #[tokio::test]
    async fn the_least_recently_used_slot_makes_room() {
        let pool = Pool::new(
            Duration::from_secs(60),
            LocalSessions::new(Duration::from_secs(60)),
        );
        pool.slot(&key("first"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        for i in 1..MAX_POOLED {
            pool.slot(&key(&i.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        pool.slot(&key("first"));
        pool.slot(&key("new"));
        assert_eq!(pool.len(), MAX_POOLED);
        let slots = lock(&pool.slots);
        assert!(slots.contains_key(&key("first")), "recently used: kept");
        assert!(slots.contains_key(&key("new")));
        let kept = (1..MAX_POOLED)
            .filter(|i| slots.contains_key(&key(&i.to_string())))
            .count();
        assert_eq!(
            kept,
            MAX_POOLED - 2,
            "one of the least recently used made room"
        );
    }
}
