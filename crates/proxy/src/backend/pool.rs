//! `{pool: NAME}` backends (and `ai` backends with `pool`): the pod is picked per request by
//! the pool's strategy, tried in the picker's order on refused connections, and named in the
//! response's `target-pod` header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use picker::pool::{Choice, InFlight, Pod, Pool, RequestMeta};

use super::{Adapter, Attempt, Failure, Head, UpstreamRequest};
use crate::body::{self, Body};
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::policy::BackendPolicies;
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

    /// Parses the request (when the strategy reads the prompt) and ranks the pods; counts
    /// the pick in the metrics. Refusals carry the picker's status and code: 400 unknown
    /// strategy or unreadable body, 429 saturated, 503 no eligible pod.
    pub fn choose(&self, headers: &HeaderMap, body: Option<&Bytes>) -> Result<Choice, ProxyError> {
        let started = std::time::Instant::now();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let strategy = match headers.get(&ROUTING_STRATEGY) {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| ProxyError::bad_request("routing-strategy is not text"))?,
            ),
            None => None,
        };
        let meta = RequestMeta {
            strategy,
            session: text(self.pool.session_header()),
            user: text("user"),
        };
        let result = self.pool.choose(meta, body.map(|b| &b[..]));
        let (strategy, outcome) = match &result {
            Ok(c) => (c.strategy_name(), "picked"),
            Err(e) => ("unknown", e.outcome()),
        };
        telemetry::Metrics::global().observe_pick(
            self.pool.name(),
            strategy,
            outcome,
            started.elapsed(),
        );
        result.map_err(|e| {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            ProxyError::new(status, e.code(), e.to_string())
        })
    }

    /// The next pod to try for `choice` (at most [`MAX_POD_TRIES`]).
    pub fn next(&self, choice: &mut Choice) -> Option<(Arc<Pod>, InFlight)> {
        choice.next(&self.pool, MAX_POD_TRIES)
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

/// Names the pod on the response.
pub fn mark_response<B>(resp: &mut http::Response<B>, pod: &Pod) {
    if let Ok(v) = HeaderValue::from_str(pod.id.as_str()) {
        resp.headers_mut().insert(TARGET_POD.clone(), v);
    }
}

/// The `{pool: NAME}` backend: plain HTTP to the picked pod.
pub struct PoolBackend {
    pub target: PoolTarget,
}

impl Adapter for PoolBackend {
    fn kind(&self) -> &'static str {
        "pool"
    }

    fn head(&self, _req: &Parts) -> Head {
        // The picker parses the body (model, prompt) and a refused pod gets it resent.
        Head {
            needs_whole_body: true,
            dialect: None,
        }
    }

    async fn send(
        &self,
        policies: &BackendPolicies,
        attempt: Attempt<'_>,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<Response<Body>, Failure> {
        let raw = attempt.raw;
        let bodies = PodBodies {
            first: attempt.body,
            parsed: raw,
            resend: raw.cloned(),
        };
        let (resp, served) = dial(
            &self.target,
            policies,
            attempt.parts,
            &attempt.headers,
            bodies,
            None,
            ctx,
        )
        .await?;
        Ok(served.attach(resp, ctx))
    }
}

/// The bodies of a pooled call: the one to send first, the client's bytes (what the picker
/// parses), and the bytes to resend to the next pod (`None`: no second try).
pub(crate) struct PodBodies<'r> {
    pub first: Body,
    pub parsed: Option<&'r Bytes>,
    pub resend: Option<Bytes>,
}

/// The `ai` adapter's part of a pooled call: the pod stands where the provider's host would.
pub(crate) struct AiPod<'a> {
    pub ai: &'a crate::ai::AiTarget,
    pub path: Option<PathAndQuery>,
    /// The body's bytes when the adapter holds them (request signing reads them).
    pub payload: Option<&'a Bytes>,
}

/// The pod that answered, counted in flight until the response body ends.
pub(crate) struct Served(Arc<Pod>, InFlight);

impl Served {
    /// Names the pod on the response and hands its in-flight guard to the response body.
    pub fn attach(self, mut resp: Response<Body>, ctx: &mut RequestCtx<'_>) -> Response<Body> {
        mark_response(&mut resp, &self.0);
        ctx.trail.pod = Some(self.1);
        resp
    }
}

/// Sends to a pool's pods in the picker's order; a refused connection ejects the pod and the
/// next one is tried with the body resent. A pool is a way to dial that `host`-like and `ai`
/// backends share.
pub(crate) async fn dial(
    pt: &PoolTarget,
    policies: &BackendPolicies,
    parts: &Parts,
    headers: &HeaderMap,
    bodies: PodBodies<'_>,
    as_ai: Option<&AiPod<'_>>,
    ctx: &mut RequestCtx<'_>,
) -> Result<(Response<Body>, Served), Failure> {
    let PodBodies {
        first,
        parsed,
        resend,
    } = bodies;
    let mut choice = pt.choose(&parts.headers, parsed).map_err(Failure::Fatal)?;
    let mut first = Some(first);
    let mut refused = String::new();
    while let Some((pod, guard)) = pt.next(&mut choice) {
        let Some(body) = first.take().or_else(|| resend.clone().map(body::full)) else {
            break;
        };
        let upstream = pt.upstream(&pod).map_err(Failure::Fatal)?;
        let authority = match as_ai {
            Some(_) => Some(
                Authority::try_from(pod.id.as_str())
                    .map_err(|_| Failure::Fatal(ProxyError::bad_request("invalid pod address")))?,
            ),
            None => None,
        };
        let mut target = UpstreamRequest::to(&upstream);
        if let Some(a) = as_ai {
            target.authority = authority.as_ref();
            target.path = a.path.clone();
            target.backend_auth = false;
        }
        let mut req = target
            .build(parts, headers.clone(), body, policies, ctx)
            .map_err(Failure::Fatal)?;
        if let Some(a) = as_ai {
            crate::ai::authorize(a.ai, &mut req, a.payload)
                .await
                .map_err(Failure::Fatal)?;
        }
        ctx.upstream = Some(upstream.address.clone());
        let sent = std::time::Instant::now();
        match super::call_upstream(&upstream, req, policies).await {
            Ok(resp) => {
                ctx.upstream_time = Some(sent.elapsed());
                pt.pool.succeeded(&pod);
                return Ok((resp, Served(pod, guard)));
            }
            Err(Failure::Connect(msg)) => {
                pt.pool.connect_failed(&pod);
                refused = msg;
            }
            Err(e) => return Err(e),
        }
    }
    // Every pod tried refused: the caller may fail over to another backend.
    Err(Failure::Connect(format!(
        "pool {}: {} pod(s) refused the connection; last: {refused}",
        pt.pool.name(),
        choice.tried()
    )))
}
