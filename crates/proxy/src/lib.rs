//! Switchyard's data plane: binds, listeners, routes, policies, backends, upstream pool.

pub mod ai;
pub mod backend;
pub mod body;
pub mod catalog;
pub mod context;
pub mod error;
pub mod governance;
pub mod headers;
pub mod observe;
pub mod overload;
pub mod pipeline;
pub mod policy;
pub mod routes;
mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

pub use error::CompileError;
use snapshot::{BindKey, ClientCache, Snapshot};

/// State every connection and request reads.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// Connections and memory against `config.limits.overload`.
    pub overload: Arc<overload::Overload>,
}

/// A running gateway: its binds and the current config snapshot.
pub struct Gateway {
    shared: Arc<Shared>,
    clients: ClientCache,
    binds: tokio::sync::Mutex<HashMap<BindKey, server::BindTask>>,
}

impl Gateway {
    /// Compiles the config and opens every bind. Fails if a port cannot be bound.
    pub async fn start(loaded: &config::Loaded) -> Result<Arc<Gateway>, CompileError> {
        let clients = ClientCache::default();
        let snapshot = snapshot::compile(loaded, &clients)?;
        let gw = Arc::new(Gateway {
            shared: Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(Snapshot::empty()),
                overload: Default::default(),
            }),
            clients,
            binds: tokio::sync::Mutex::new(HashMap::new()),
        });
        gw.install(snapshot).await?;
        overload::spawn_sampler(Arc::downgrade(&gw.shared));
        Ok(gw)
    }

    /// Applies a new config. On any error the old config keeps serving untouched.
    /// Requests already in flight finish on the snapshot they started with.
    pub async fn reload(&self, loaded: &config::Loaded) -> Result<(), CompileError> {
        self.install(snapshot::compile(loaded, &self.clients)?)
            .await
    }

    /// Makes `snapshot` current: opens its new ports first (so a port that cannot be bound
    /// refuses the whole config), switches, then closes ports it no longer has.
    async fn install(&self, snapshot: Snapshot) -> Result<(), CompileError> {
        let mut binds = self.binds.lock().await;
        let mut opened = Vec::new();
        for b in &snapshot.binds {
            if !binds.contains_key(&b.key) {
                let l = server::bind_socket(b.socket_addr()).await.map_err(|e| {
                    CompileError::new(format!("cannot listen on {}: {e}", b.socket_addr()))
                })?;
                opened.push((b.key.clone(), l));
            }
        }
        let keep: Vec<BindKey> = snapshot.binds.iter().map(|b| b.key.clone()).collect();
        llm::set_recorded_text_cap(snapshot.limits.max_recorded_text_bytes);
        self.shared.snapshot.store(Arc::new(snapshot));
        for (key, listener) in opened {
            let task = server::spawn_bind(self.shared.clone(), key.clone(), listener);
            tracing::info!(addr = %task.local_addr, "listening");
            binds.insert(key, task);
        }
        let removed: Vec<BindKey> = binds
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        for key in removed {
            if let Some(task) = binds.remove(&key) {
                tracing::info!(addr = %task.local_addr, "closing removed bind");
                let _ = task.stop.send(true);
            }
        }
        Ok(())
    }

    /// The address each configured bind listens on, in config order.
    pub async fn local_addrs(&self) -> Vec<SocketAddr> {
        let snapshot = self.shared.snapshot.load_full();
        let binds = self.binds.lock().await;
        snapshot
            .binds
            .iter()
            .filter_map(|b| binds.get(&b.key).map(|t| t.local_addr))
            .collect()
    }

    /// Why new work is being shed now (`config.limits.overload`), or `None`.
    pub fn overload_pressure(&self) -> Option<String> {
        self.shared
            .overload
            .pressure(&self.shared.snapshot.load().limits)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// The limits store and virtual keys (the admin API's keys and usage endpoints).
    pub fn governance(&self) -> Arc<governance::Governance> {
        self.clients.governance.clone()
    }

    /// Stops accepting, lets in-flight requests finish, and returns when all connections
    /// have closed or `deadline` has passed. Returns false if the deadline cut it short.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let mut binds = self.binds.lock().await;
        let tasks: Vec<_> = binds.drain().map(|(_, t)| t).collect();
        for t in &tasks {
            let _ = t.stop.send(true);
        }
        let all = futures_util::future::join_all(tasks.into_iter().map(|t| t.done));
        let drained = async {
            all.await;
            observe::records_settled().await;
        };
        tokio::time::timeout(deadline, drained).await.is_ok()
    }
}

/// Boxes the future `make` returns, built in its box rather than on the stack and copied in:
/// the pipeline's futures are several KiB (their size is fixed by their largest state), and
/// `Box::pin(fut)` copies all of it for every request even though a future not yet polled
/// holds only its arguments.
pub(crate) fn boxed_in_place<F: std::future::Future>(
    make: impl FnOnce() -> F,
) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}
