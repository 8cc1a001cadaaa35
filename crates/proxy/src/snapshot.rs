//! The runtime form of a config: compiled once per load, shared immutably by every request
//! that starts while it is current (`Arc`), replaced atomically on reload.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use config::{BackendKind, Config, ListenerProtocol, Loaded, Policies};

use crate::backend::{ai::AiBackend, host::HostBackend, pool::PoolBackend, Backend};
use crate::error::CompileError;
use crate::policy::backend_tls::Connection;
use crate::policy::{layered, BackendPolicies, RoutePolicies};
use crate::routes::{HostPattern, Matcher, RouteTable};
use crate::upstream::{Upstream, UpstreamKey};

/// Identifies a bind across reloads: same key = same socket keeps serving.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BindKey {
    pub address: IpAddr,
    pub port: u16,
    /// Position in the file, only for `port: 0` (each such bind is its own socket).
    pub ephemeral_index: Option<usize>,
}

pub struct Snapshot {
    pub binds: Vec<Arc<BindRt>>,
    pub limits: config::Limits,
    pub config: Arc<Config>,
    /// Access log, tracing and metrics as this config asks for them.
    pub telemetry: Arc<telemetry::Telemetry>,
    /// Model pools by name (kept across reloads while unchanged).
    pub pools: HashMap<String, Arc<picker::pool::Pool>>,
}

impl Snapshot {
    /// Serves nothing; the state before the first config is installed.
    pub fn empty() -> Self {
        Snapshot {
            binds: Vec::new(),
            limits: config::Limits::default(),
            config: Arc::new(Config::default()),
            telemetry: Arc::new(telemetry::Telemetry::metrics_only()),
            pools: HashMap::new(),
        }
    }

    pub fn bind(&self, key: &BindKey) -> Option<&Arc<BindRt>> {
        self.binds.iter().find(|b| &b.key == key)
    }
}

pub struct BindRt {
    pub key: BindKey,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Most specific hostname first; a listener without hostname last.
    pub listeners: Vec<ListenerRt>,
}

impl BindRt {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.key.address, self.key.port)
    }

    pub fn listener_for(&self, host: Option<&str>) -> Option<&ListenerRt> {
        self.listeners.iter().find(|l| match (&l.hostname, host) {
            (None, _) => true,
            (Some(p), Some(h)) => p.matches(h),
            (Some(_), None) => false,
        })
    }
}

pub struct ListenerRt {
    pub name: Arc<str>,
    pub hostname: Option<HostPattern>,
    pub routes: RouteTable<RouteRt>,
    /// `a2a.catalogPath`: the listener's A2A agent catalog.
    pub a2a_catalog: Option<Arc<crate::catalog::Catalog>>,
    /// A route of the listener has an `a2a` backend: an A2A call no route serves is answered
    /// 404 in its binding's shape.
    pub serves_a2a: bool,
}

pub struct RouteRt {
    pub name: Arc<str>,
    pub backends: Vec<BackendRt>,
    total_weight: u64,
    /// The route's own policies: its phases, retries and deadline. Never a backend's.
    pub policies: RoutePolicies,
}

impl RouteRt {
    /// Backends in the order to try them: one weighted-random pick, then the others by
    /// weight for failover. Zero-weight backends are never picked first; under a `failover`
    /// policy they are standbys, tried last, and otherwise never chosen (Gateway API).
    pub fn backend_order(&self) -> smallvec_like::Order {
        let mut order = smallvec_like::Order::new();
        if self.backends.len() <= 1 {
            if !self.backends.is_empty() && self.total_weight > 0 {
                order.push(0);
            }
            return order;
        }
        let mut ticket = fastrand::u64(0..self.total_weight);
        let mut first = 0;
        for (i, b) in self.backends.iter().enumerate() {
            let w = b.weight as u64;
            if ticket < w {
                first = i;
                break;
            }
            ticket -= w;
        }
        order.push(first);
        let standbys = self.policies.failover.is_some();
        let mut rest: Vec<usize> = (0..self.backends.len())
            .filter(|&i| i != first && (self.backends[i].weight > 0 || standbys))
            .collect();
        rest.sort_by_key(|&i| std::cmp::Reverse(self.backends[i].weight));
        for i in rest {
            order.push(i);
        }
        order
    }
}

/// A tiny fixed-capacity index list, so picking backends does not allocate for small routes.
pub mod smallvec_like {
    #[derive(Debug, Default)]
    pub struct Order {
        inline: [u16; 8],
        len: usize,
        spill: Vec<usize>,
    }
    impl Order {
        pub fn new() -> Self {
            Self::default()
        }
        pub fn push(&mut self, i: usize) {
            if self.len < 8 && self.spill.is_empty() {
                self.inline[self.len] = i as u16;
                self.len += 1;
            } else {
                if self.spill.is_empty() {
                    self.spill = self.inline[..self.len]
                        .iter()
                        .map(|&x| x as usize)
                        .collect();
                }
                self.spill.push(i);
            }
        }
        pub fn len(&self) -> usize {
            if self.spill.is_empty() {
                self.len
            } else {
                self.spill.len()
            }
        }
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
        pub fn get(&self, n: usize) -> usize {
            if self.spill.is_empty() {
                self.inline[n] as usize
            } else {
                self.spill[n]
            }
        }
    }
}

pub struct BackendRt {
    pub name: Arc<str>,
    pub weight: u32,
    pub adapter: Backend,
    /// The backend's policies, layered over the route's at compile time.
    pub policies: BackendPolicies,
    /// How its recent answers went (cooldown, circuit) and its load, for `failover` and
    /// `balance`.
    pub health: Arc<crate::policy::failover::Health>,
}

/// Upstream clients shared between snapshots, so a reload keeps warm connection pools.
#[derive(Default)]
pub struct ClientCache {
    clients: Mutex<HashMap<UpstreamKey, Upstream>>,
    /// Trace exporters, kept across reloads like the upstream clients.
    exporters: telemetry::ExporterCache,
    /// MCP gateways by config fingerprint: a reload that leaves an `mcp` backend unchanged
    /// keeps its sessions' stdio children, event logs and legacy streams.
    pub(crate) mcp: crate::backend::mcp::GatewayCache,
    /// Model pools, kept across reloads while their settings are unchanged.
    pools: crate::backend::pool::PoolCache,
    /// The limits store and virtual keys, kept while `config.redis` is unchanged.
    pub(crate) governance: Arc<crate::governance::Governance>,
}

impl ClientCache {
    fn get_or_create(
        &self,
        key: UpstreamKey,
        make_tls: impl FnOnce() -> Result<Option<crate::tls::ClientTls>, String>,
        used: &mut Vec<UpstreamKey>,
    ) -> Result<Upstream, String> {
        used.push(key.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = clients.get(&key) {
            return Ok(u.clone());
        }
        let upstream = Upstream::new(&key, make_tls()?);
        clients.insert(key, upstream.clone());
        Ok(upstream)
    }

    /// Forgets clients the newest snapshot does not use; old snapshots keep theirs alive
    /// until their last request ends.
    fn retain(&self, used: &[UpstreamKey]) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.retain(|k, _| used.contains(k));
    }
}

pub fn compile(loaded: &Loaded, cache: &ClientCache) -> Result<Snapshot, CompileError> {
    let config = &loaded.config;
    let limits = config.config.limits.clone();
    let mut used = Vec::new();
    let mut binds = Vec::new();
    let mut pools = HashMap::new();
    for (pi, p) in config.pools.iter().enumerate() {
        let pool = cache
            .pools
            .get(p)
            .map_err(|e| CompileError::at(format!("pools[{pi}]"), format!("({}) {e}", p.name)))?;
        pools.insert(p.name.clone(), pool);
    }
    let governance = cache
        .governance
        .for_config(config.config.redis.as_ref())
        .map_err(|e| CompileError::at("config.redis", e))?;
    let ctx = CompileCtx {
        limits: &limits,
        cache,
        pools: &pools,
        governance: &governance,
    };
    for (bi, bind) in config.binds.iter().enumerate() {
        let key = BindKey {
            address: bind.address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            port: bind.port,
            ephemeral_index: (bind.port == 0).then_some(bi),
        };
        let protocols: Vec<_> = bind.listeners.iter().map(|l| l.protocol).collect();
        if protocols.iter().any(|p| *p != protocols[0]) {
            return Err(CompileError::at(
                format!("binds[{bi}]"),
                "listeners on one port must all be HTTP or all be HTTPS",
            ));
        }
        let tls = if protocols[0] == ListenerProtocol::Https {
            let files: Vec<_> = bind
                .listeners
                .iter()
                .filter_map(|l| {
                    l.tls
                        .as_ref()
                        .map(|t| (l.hostname.clone(), t.cert.as_path(), t.key.as_path()))
                })
                .collect();
            Some(
                crate::tls::server_config(&files)
                    .map_err(|e| CompileError::at(format!("binds[{bi}]"), e))?,
            )
        } else {
            None
        };
        let mut listeners = Vec::new();
        for (li, l) in bind.listeners.iter().enumerate() {
            let lkey = format!("binds[{bi}].listeners[{li}]");
            let mut routes = Vec::new();
            let mut named = Vec::new();
            for (ri, r) in l.routes.iter().enumerate() {
                let rkey = format!("{lkey}.routes[{ri}]");
                let route = compile_route(r, &rkey, &ctx, &mut used)?;
                named.push((route.name.clone(), r));
                let matchers = if r.matches.is_empty() {
                    vec![Matcher::any()]
                } else {
                    r.matches
                        .iter()
                        .map(Matcher::compile)
                        .collect::<Result<_, _>>()
                        .map_err(|e| CompileError::at(format!("{rkey}.matches"), e))?
                };
                let hostnames = r.hostnames.iter().map(|h| HostPattern::parse(h)).collect();
                routes.push((hostnames, matchers, Arc::new(route)));
            }
            listeners.push(ListenerRt {
                name: l
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("listener{li}"))
                    .into(),
                hostname: l.hostname.as_deref().map(HostPattern::parse),
                routes: RouteTable::new(routes),
                a2a_catalog: l
                    .a2a
                    .as_ref()
                    .and_then(|a| a.catalog_path.as_deref())
                    .map(|path| Arc::new(crate::catalog::Catalog::compile(path, &named))),
                serves_a2a: l.routes.iter().any(|r| {
                    r.backends
                        .iter()
                        .any(|b| matches!(b.kind, BackendKind::A2a(_)))
                }),
            });
        }
        listeners.sort_by_key(|l| {
            std::cmp::Reverse(
                l.hostname
                    .as_ref()
                    .map_or(0, |h| h.specificity().saturating_add(1)),
            )
        });
        binds.push(Arc::new(BindRt {
            key,
            tls,
            listeners,
        }));
    }
    cache.retain(&used);
    let names: Vec<&str> = pools.keys().map(String::as_str).collect();
    cache.pools.retain(&names);
    let telemetry = telemetry::Telemetry::compile(&config.config, &cache.exporters)
        .map_err(CompileError::new)?;
    Ok(Snapshot {
        binds,
        limits,
        config: Arc::new(config.clone()),
        telemetry: Arc::new(telemetry),
        pools,
    })
}

/// What compiling a route needs besides the route.
struct CompileCtx<'a> {
    governance: &'a Arc<crate::governance::Shared>,
    limits: &'a config::Limits,
    cache: &'a ClientCache,
    pools: &'a HashMap<String, Arc<picker::pool::Pool>>,
}

impl CompileCtx<'_> {
    /// A pool backend's per-pod client settings, from the backend's layered policies.
    fn pool_target(
        &self,
        name: &str,
        policies: &Policies,
    ) -> Result<crate::backend::pool::PoolTarget, CompileError> {
        let pool = self
            .pools
            .get(name)
            .ok_or_else(|| CompileError::new(format!("unknown pool {name:?}")))?
            .clone();
        let conn = Connection::of(policies, None);
        let template = UpstreamKey {
            host: "".into(),
            port: 0,
            http2: conn.http2,
            tls_fingerprint: conn.tls.map(tls_fingerprint),
            connect_timeout: self.limits.upstream_connect_timeout.0,
            pool_idle_timeout: self.limits.upstream_pool_idle_timeout.0,
            pool_max_idle: self.limits.upstream_pool_max_idle,
        };
        Ok(crate::backend::pool::PoolTarget::new(
            pool,
            template,
            conn.tls.cloned(),
        ))
    }
}

fn compile_route(
    r: &config::Route,
    rkey: &str,
    ctx: &CompileCtx<'_>,
    used: &mut Vec<UpstreamKey>,
) -> Result<RouteRt, CompileError> {
    let route_policies = r.policies.as_ref();
    let mut backends = Vec::new();
    for (bi, b) in r.backends.iter().enumerate() {
        let bkey = format!("{rkey}.backends[{bi}]");
        // An `ai` backend's own `policies` sit over its backend entry's, and both over the
        // route's: decided here, once.
        let own = match (&b.kind, b.policies.as_ref()) {
            (BackendKind::Ai(ai), entry) if ai.policies.is_some() => {
                Some(layered(entry, ai.policies.as_ref()))
            }
            (_, entry) => entry.map(std::borrow::Cow::Borrowed),
        };
        let policies = layered(route_policies, own.as_deref());
        backends.push(compile_backend(b, bi, &policies, ctx, used).map_err(|e| e.under(&bkey))?);
    }
    crate::backend::a2a::share_tasks(&mut backends, route_policies)
        .map_err(|e| CompileError::at(format!("{rkey}.policies.a2a.taskKey"), e))?;
    let total_weight = backends.iter().map(|b| b.weight as u64).sum();
    let name: Arc<str> = r.name.clone().unwrap_or_else(|| rkey.to_string()).into();
    let env = crate::governance::PhaseEnv {
        governance: ctx.governance.clone(),
        llm_route: !r.backends.is_empty()
            && r.backends
                .iter()
                .all(|b| matches!(b.kind, BackendKind::Ai(_))),
        mcp_route: !r.backends.is_empty()
            && r.backends
                .iter()
                .all(|b| matches!(b.kind, BackendKind::Mcp(_))),
        a2a_route: !r.backends.is_empty()
            && r.backends
                .iter()
                .all(|b| matches!(b.kind, BackendKind::A2a(_))),
        route: name.clone(),
    };
    Ok(RouteRt {
        name,
        backends,
        total_weight,
        policies: RoutePolicies::compile(route_policies, &env)
            .map_err(|e| CompileError::from(e).under(&format!("{rkey}.policies")))?,
    })
}

/// One backend: its adapter by kind, and its layered policies. Errors start with the key
/// under the backend (`.ai: ...`, `: ...`).
fn compile_backend(
    b: &config::Backend,
    bi: usize,
    policies: &Policies,
    ctx: &CompileCtx<'_>,
    used: &mut Vec<UpstreamKey>,
) -> Result<BackendRt, CompileError> {
    let (limits, cache) = (ctx.limits, ctx.cache);
    let backend_policies = BackendPolicies::compile(policies)?;
    let (name, adapter): (Arc<str>, Backend) = match &b.kind {
        BackendKind::Host(hp) => {
            let conn = Connection::of(policies, None);
            let upstream = upstream_with(hp.host(), hp.port(), conn, limits, cache, used)?;
            (
                hp.0.clone(),
                Backend::Host(Box::new(HostBackend { upstream })),
            )
        }
        BackendKind::Ai(ai) => {
            let (host, port, tls_by_default) =
                crate::ai::dial_target(ai).map_err(|e| e.under(".ai"))?;
            let default_tls = config::BackendTls::default();
            let conn = Connection::of(policies, tls_by_default.then_some(&default_tls));
            let upstream = upstream_with(&host, port, conn, limits, cache, used)?;
            let mut target = crate::ai::AiTarget::compile(
                crate::ai::AiCompileInput {
                    ai,
                    policies,
                    limits,
                },
                upstream,
            )
            .map_err(|e| e.under(".ai"))?;
            if let Some(p) = &ai.pool {
                let pt = ctx
                    .pool_target(p, policies)
                    .map_err(|e| e.under(".ai.pool"))?;
                target.pool = Some(Box::new(pt));
            }
            (
                ai.name.as_str().into(),
                Backend::Ai(Box::new(AiBackend { target })),
            )
        }
        BackendKind::Mcp(m) => {
            let adapter = crate::backend::mcp::compile(m, policies, limits, cache, used)
                .map_err(|e| e.under(".mcp"))?;
            (format!("mcp{bi}").into(), Backend::Mcp(adapter))
        }
        BackendKind::A2a(a) => {
            let conn = Connection::of(policies, None);
            let upstream = upstream_with(a.host.host(), a.host.port(), conn, limits, cache, used)?;
            let adapter = crate::backend::a2a::A2aBackend::compile(a, upstream)
                .map_err(|e| CompileError::at(".a2a", e))?;
            (a.host.0.clone(), Backend::A2a(Box::new(adapter)))
        }
        BackendKind::Pool(name) => {
            let target = ctx
                .pool_target(name, policies)
                .map_err(|e| e.under(".pool"))?;
            (
                name.as_str().into(),
                Backend::Pool(Box::new(PoolBackend { target })),
            )
        }
    };
    Ok(BackendRt {
        name,
        weight: b.weight,
        adapter,
        policies: backend_policies,
        health: Default::default(),
    })
}

/// The pooled client for `host:port` with `conn`'s TLS and HTTP version, shared across
/// snapshots while its settings are unchanged.
pub(crate) fn upstream_with(
    host: &str,
    port: u16,
    conn: Connection<'_>,
    limits: &config::Limits,
    cache: &ClientCache,
    used: &mut Vec<UpstreamKey>,
) -> Result<Upstream, CompileError> {
    let key = UpstreamKey {
        host: host.into(),
        port,
        http2: conn.http2,
        tls_fingerprint: conn.tls.map(tls_fingerprint),
        connect_timeout: limits.upstream_connect_timeout.0,
        pool_idle_timeout: limits.upstream_pool_idle_timeout.0,
        pool_max_idle: limits.upstream_pool_max_idle,
    };
    cache
        .get_or_create(
            key,
            || {
                conn.tls
                    .map(|t| crate::tls::client_config(t, host, conn.http2))
                    .transpose()
            },
            used,
        )
        .map_err(CompileError::new)
}

/// Settings plus the bytes of every file they name, so a rotated CA or cert makes a new client.
fn tls_fingerprint(t: &config::BackendTls) -> u64 {
    let mut h = DefaultHasher::new();
    t.hostname.hash(&mut h);
    t.insecure_skip_verify.hash(&mut h);
    let extra = t
        .root
        .is_none()
        .then(crate::tls::extra_roots_file)
        .flatten();
    for path in [&t.root, &t.cert, &t.key, &extra].into_iter().flatten() {
        path.hash(&mut h);
        std::fs::read(path).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}
