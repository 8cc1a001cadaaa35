//! Governance state that outlives a config snapshot: the counting store (Redis or this
//! process) and the registry of virtual keys made through the admin API. Policies in
//! `policy/` (apiKeyAuth, localRateLimit, rateLimit and budgets) read and charge it.

pub mod admin;
pub mod estimate;
pub mod keys;
pub mod prices;
pub mod store;
pub mod usage;
pub mod windows;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use keys::{KeyEntry, VirtualKeys};
pub use store::{Adjustment, Charge, Reservation, Store, StoreError, UsageEntry};

/// Default wait for one Redis answer on the request path.
const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);

/// The store and the key registry, kept across reloads while `config.redis` is unchanged.
#[derive(Default)]
pub struct Governance {
    current: Mutex<Option<Arc<Shared>>>,
}

/// What policies of one snapshot share.
pub struct Shared {
    /// Identifies the settings it was made from (URL, timeout, prefix).
    fingerprint: String,
    pub store: Store,
    pub keys: Arc<VirtualKeys>,
    /// Usage per key, team, org and model, written to the store once a second.
    pub usage: Arc<usage::UsageBuffer>,
    /// Prefix of every store key.
    pub prefix: Arc<str>,
}

impl Governance {
    /// The shared state for a config: the previous one when `config.redis` did not change
    /// (connections, synced keys and local counters survive a reload).
    pub fn for_config(&self, redis: Option<&config::Redis>) -> Result<Arc<Shared>, String> {
        let fingerprint = match redis {
            Some(r) => format!(
                "{}|{:?}|{:?}",
                r.url.expose(),
                r.timeout.map(|d| d.0),
                r.key_prefix
            ),
            None => String::new(),
        };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = current.as_ref().filter(|c| c.fingerprint == fingerprint) {
            return Ok(c.clone());
        }
        let prefix: Arc<str> = redis
            .and_then(|r| r.key_prefix.clone())
            .unwrap_or_else(|| "switchyard".into())
            .into();
        let (store, keys) = match redis {
            Some(r) => {
                let timeout = r.timeout.map_or(DEFAULT_REDIS_TIMEOUT, |d| d.0);
                let redis = Arc::new(store::RedisStore::new(r.url.expose(), timeout)?);
                let keys = VirtualKeys::shared(redis.clone(), prefix.clone());
                (Store::Redis(redis), keys)
            }
            None => (
                Store::Local(Arc::default()),
                VirtualKeys::local(prefix.clone()),
            ),
        };
        let shared = Arc::new(Shared {
            fingerprint,
            usage: usage::UsageBuffer::new(store.clone(), prefix.clone()),
            store,
            keys: Arc::new(keys),
            prefix,
        });
        *current = Some(shared.clone());
        Ok(shared)
    }

    /// The state now in use (the admin API's view); `None` before the first config.
    pub fn current(&self) -> Option<Arc<Shared>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What compiling a route's policies needs beyond the policies themselves.
pub struct PhaseEnv {
    pub governance: Arc<Shared>,
    /// Every backend of the route is `ai`: requests are LLM calls whose body is read anyway,
    /// so a policy may read the model and estimate tokens without extra buffering.
    pub llm_route: bool,
    /// Every backend of the route is `mcp`: guards apply to tool calls.
    pub mcp_route: bool,
    /// Every backend of the route is `a2a`: the `a2a` variable (the operation, from the
    /// JSON-RPC body or the REST path) is known once the body is read.
    pub a2a_route: bool,
    /// The route's name, for store keys that must not collide across routes.
    pub route: Arc<str>,
}
