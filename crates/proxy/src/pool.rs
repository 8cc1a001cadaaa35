//! `{pool: NAME}` backends (and `ai` backends with `pool`): the pod is picked per request by
//! the pool's strategy, tried in the picker's order on refused connections, and named in the
//! response's `target-pod` header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use picker::pool::{InFlight, Pick, PickError, Pod, Pool};
use picker::ParsedRequest;

use crate::error::ProxyError;
use crate::upstream::{Upstream, UpstreamKey};

/// Request header choosing a strategy for one request (AIBrix's name).
pub static ROUTING_STRATEGY: HeaderName = HeaderName::from_static("routing-strategy");
/// Response header naming the pod that served the request (AIBrix's name).
pub static TARGET_POD: HeaderName = HeaderName::from_static("target-pod");

/// Most pods one request tries before giving up on the pool.
const MAX_POD_TRIES: usize = 3;

/// Pools kept across reloads while their settings are unchanged, so prefix tables, session
/// stickiness, in-flight counts and scraped metrics survive a reload.
#[derive(Default)]
pub struct PoolCache {
    pools: Mutex<HashMap<String, Arc<Pool>>>,
}

impl PoolCache {
    /// The running pool for `cfg`: the cached one if its settings are the same, else a new
    /// one (started on the current runtime).
    pub fn get(&self, cfg: &config::Pool) -> Result<Arc<Pool>, String> {
        let spec = cfg.spec();
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pools.get(&cfg.name) {
            if p.spec() == &spec {
                return Ok(p.clone());
            }
        }
        let pool = Pool::new(spec)?;
        if tokio::runtime::Handle::try_current().is_ok() {
            pool.start();
        }
        pools.insert(cfg.name.clone(), pool.clone());
        Ok(pool)
    }

    /// Forgets pools the newest config no longer has (their tasks stop with the last user).
    pub fn retain(&self, names: &[&str]) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|k, _| names.contains(&k.as_str()));
    }
}

/// How a backend reaches the pods of its pool.
pub struct PoolTarget {
    pub pool: Arc<Pool>,
    /// Settings of each pod's client; host and port are the pod's.
    template: UpstreamKey,
    tls: Option<config::BackendTls>,
    clients: Mutex<HashMap<Arc<str>, Upstream>>,
}

impl PoolTarget {
    pub fn new(pool: Arc<Pool>, template: UpstreamKey, tls: Option<config::BackendTls>) -> Self {
        PoolTarget {
            pool,
            template,
            tls,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Parses the request and ranks the pods. An unknown `routing-strategy` is a 400 that
    /// lists the valid ones; no eligible pod is a 503.
    pub fn choose(&self, headers: &HeaderMap, body: Option<&Bytes>) -> Result<Choice, ProxyError> {
        let started = std::time::Instant::now();
        let result = self.choose_inner(headers, body);
        let (strategy, outcome) = match &result {
            Ok(c) => (c.pick.strategy.name(), "picked"),
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => ("unknown", "no_pod"),
            Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => ("unknown", "saturated"),
            Err(_) => ("unknown", "bad_request"),
        };
        telemetry::Metrics::global().observe_pick(
            self.pool.name(),
            strategy,
            outcome,
            started.elapsed(),
        );
        result
    }

    fn choose_inner(
        &self,
        headers: &HeaderMap,
        body: Option<&Bytes>,
    ) -> Result<Choice, ProxyError> {
        let strategy = headers
            .get(&ROUTING_STRATEGY)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ProxyError::bad_request("routing-strategy is not text"))
            })
            .transpose()?;
        let picker = self.pool.strategy(strategy).map_err(|u| {
            ProxyError::new(
                StatusCode::BAD_REQUEST,
                "unknown_routing_strategy",
                u.to_string(),
            )
        })?;
        // Only prompt-reading strategies (prefix-cache) pay for parsing the body.
        let mut parsed = match body {
            Some(b) if picker.needs_prompt() => {
                picker::parse_request(b).map_err(ProxyError::bad_request)?
            }
            _ => ParsedRequest::default(),
        };
        let session = headers
            .get(self.pool.session_header())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if parsed.user.is_none() {
            parsed.user = headers
                .get("user")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
        }
        let pick = self
            .pool
            .rank_with(picker, &parsed.pick_request(session.as_deref()))
            .map_err(|e| match e {
                PickError::UnknownStrategy(u) => ProxyError::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_routing_strategy",
                    u.to_string(),
                ),
                PickError::NoPod { .. } => ProxyError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_healthy_pod",
                    e.to_string(),
                ),
                PickError::Saturated { .. } => ProxyError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "pool_saturated",
                    e.to_string(),
                ),
            })?;
        Ok(Choice {
            pick,
            parsed,
            session,
            tried: 0,
        })
    }

    /// The pooled client for one pod, made on first use.
    pub fn upstream(&self, pod: &Pod) -> Result<Upstream, ProxyError> {
        let addr = pod.id.as_str();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = clients.get(addr) {
            return Ok(u.clone());
        }
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| ProxyError::upstream_error(format!("pod {addr} is not host:port")))?;
        let key = UpstreamKey {
            host: host.into(),
            port,
            ..self.template.clone()
        };
        let tls = self
            .tls
            .as_ref()
            .map(|t| crate::tls::client_config(t, host, key.http2))
            .transpose()
            .map_err(ProxyError::upstream_error)?;
        let upstream = Upstream::new(&key, tls);
        // Pods come and go: drop clients of pods that left once the map outgrows the pool.
        if clients.len() >= 2 * self.pool.pods().len() + 8 {
            let live = self.pool.pods();
            clients.retain(|a, _| live.iter().any(|p| p.id.as_str() == &**a));
        }
        clients.insert(addr.into(), upstream.clone());
        Ok(upstream)
    }
}

/// One request's pick and the pods tried so far.
pub struct Choice {
    pick: Pick,
    parsed: ParsedRequest,
    session: Option<String>,
    tried: usize,
}

impl Choice {
    /// The next pod to try, counted in flight while the guard lives; `None` when the
    /// candidates (or tries) ran out.
    pub fn next(&mut self, target: &PoolTarget) -> Option<(Arc<Pod>, InFlight)> {
        if self.tried >= MAX_POD_TRIES {
            return None;
        }
        let pod = self.pick.pods.get(self.tried)?.clone();
        self.tried += 1;
        let req = self.parsed.pick_request(self.session.as_deref());
        let guard = target.pool.begin(self.pick.strategy.as_ref(), &req, &pod);
        Some((pod, guard))
    }

    pub fn tried(&self) -> usize {
        self.tried
    }
}

/// Names the pod on the response.
pub fn mark_response<B>(resp: &mut http::Response<B>, pod: &Pod) {
    if let Ok(v) = HeaderValue::from_str(pod.id.as_str()) {
        resp.headers_mut().insert(TARGET_POD.clone(), v);
    }
}
