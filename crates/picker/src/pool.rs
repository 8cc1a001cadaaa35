//! A live pool: its pods, what the gateway knows about each (requests in flight, last
//! scraped metrics, ejection after refused connections), pod discovery and metrics scraping.
//! Both the gateway's `{pool: NAME}` backends and the `ext_proc` server pick through this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use crate::spec::{Endpoints, MetricsSpec, PoolSpec};
use crate::{
    parse_strategy_shared, rank, NoPod, ParsedRequest, PickRequest, Picker, PodId, PodMetrics,
    PodState, SharedState, UnknownStrategy,
};

/// Most distinct `routing-strategy` header values kept compiled per pool.
const MAX_CACHED_STRATEGIES: usize = 64;

/// One pod and what the pool knows about it.
pub struct Pod {
    pub id: PodId,
    in_flight: AtomicU32,
    state: Mutex<PodHealth>,
    /// Requests whose response ended (completed or not).
    pub finished: AtomicU64,
    /// Output tokens reported in responses' usage.
    pub output_tokens: AtomicU64,
}

#[derive(Default)]
struct PodHealth {
    metrics: Option<PodMetrics>,
    /// Consecutive refused connections.
    failures: u32,
    ejected_until: Option<Instant>,
}

impl Pod {
    fn new(id: PodId) -> Self {
        Pod {
            id,
            in_flight: AtomicU32::new(0),
            state: Mutex::new(PodHealth::default()),
            finished: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PodHealth> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Last scraped metrics, however old.
    pub fn metrics(&self) -> Option<PodMetrics> {
        self.lock().metrics.clone()
    }

    /// False while ejected after a refused connection.
    pub fn healthy(&self, now: Instant) -> bool {
        self.lock().ejected_until.is_none_or(|t| t <= now)
    }
}

/// A pick: candidate pods best-first and the strategy that ranked them.
pub struct Pick {
    pub pods: Vec<Arc<Pod>>,
    pub strategy: Arc<dyn Picker>,
}

/// Why a request could not be given a pod.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickError {
    /// The `routing-strategy` header named no strategy.
    #[error(transparent)]
    UnknownStrategy(#[from] UnknownStrategy),
    /// A strategy that reads the prompt could not read the body.
    #[error("{0}")]
    BadBody(String),
    /// No pod is eligible.
    #[error("pool {pool}: {reason}")]
    NoPod { pool: String, reason: NoPod },
    /// Every eligible pod is at `max_in_flight_per_pod`.
    #[error(
        "pool {pool}: all {pods} eligible pods are at their limit of {limit} requests in flight"
    )]
    Saturated {
        pool: String,
        pods: usize,
        limit: u32,
    },
}

impl PickError {
    /// The HTTP status the client gets (gateway response or ext_proc immediate response).
    pub fn status(&self) -> u16 {
        match self {
            PickError::UnknownStrategy(_) | PickError::BadBody(_) => 400,
            PickError::NoPod { .. } => 503,
            PickError::Saturated { .. } => 429,
        }
    }

    /// The stable error code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            PickError::UnknownStrategy(_) => "unknown_routing_strategy",
            PickError::BadBody(_) => "invalid_request",
            PickError::NoPod { .. } => "no_healthy_pod",
            PickError::Saturated { .. } => "pool_saturated",
        }
    }

    /// The `outcome` label of the pick metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            PickError::UnknownStrategy(_) | PickError::BadBody(_) => "bad_request",
            PickError::NoPod { .. } => "no_pod",
            PickError::Saturated { .. } => "saturated",
        }
    }
}

/// What the picker reads of a request besides its body.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestMeta<'a> {
    /// The `routing-strategy` header.
    pub strategy: Option<&'a str>,
    /// The pool's session header.
    pub session: Option<&'a str>,
    /// The `user` header (the body's `user` field wins).
    pub user: Option<&'a str>,
}

/// One request's ranked pods and the ones tried so far.
pub struct Choice {
    pick: Pick,
    parsed: ParsedRequest,
    session: Option<String>,
    tried: usize,
}

impl Choice {
    /// The strategy's own name (`weighted` for combinations).
    pub fn strategy_name(&self) -> &'static str {
        self.pick.strategy.name()
    }

    /// The next pod to try (at most `max_tries` in all), committed through
    /// [`Pool::begin`]: counted in flight while the guard lives.
    pub fn next(&mut self, pool: &Pool, max_tries: usize) -> Option<(Arc<Pod>, InFlight)> {
        if self.tried >= max_tries {
            return None;
        }
        let pod = self.pick.pods.get(self.tried)?.clone();
        self.tried += 1;
        let req = self.parsed.pick_request(self.session.as_deref());
        let guard = pool.begin(self.pick.strategy.as_ref(), &req, &pod);
        Some((pod, guard))
    }

    pub fn tried(&self) -> usize {
        self.tried
    }
}

/// Held while a request is on a pod: counts it in flight until dropped.
pub struct InFlight {
    pod: Arc<Pod>,
}

impl InFlight {
    pub fn pod(&self) -> &Arc<Pod> {
        &self.pod
    }

    /// Output tokens the response reported, for the pod's counters.
    pub fn record_output_tokens(&self, n: u64) {
        self.pod.output_tokens.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pod.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.pod.finished.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Pool {
    spec: PoolSpec,
    shared: SharedState,
    default: Arc<dyn Picker>,
    by_header: Mutex<HashMap<String, Arc<dyn Picker>>>,
    pods: ArcSwap<Vec<Arc<Pod>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl Pool {
    /// Builds the pool and reads a static list or endpoints file now (a missing file is an
    /// error); DNS names resolve once [`Pool::start`] runs.
    pub fn new(spec: PoolSpec) -> Result<Arc<Pool>, String> {
        let shared = SharedState::new(spec.prefix.clone());
        let default: Arc<dyn Picker> = parse_strategy_shared(&spec.strategy, &shared)
            .map_err(|e| e.to_string())?
            .into();
        let initial = match &spec.endpoints {
            Endpoints::Static(list) => list.clone(),
            Endpoints::File(path) => read_endpoints_file(path)?,
            Endpoints::Dns { .. } => Vec::new(),
        };
        let pool = Pool {
            spec,
            shared,
            default,
            by_header: Mutex::new(HashMap::new()),
            pods: ArcSwap::from_pointee(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        };
        pool.set_endpoints(initial);
        Ok(Arc::new(pool))
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &PoolSpec {
        &self.spec
    }

    /// Starts discovery and scraping on the current tokio runtime; they stop when the pool
    /// is dropped.
    pub fn start(self: &Arc<Self>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if !tasks.is_empty() {
            return;
        }
        let weak = Arc::downgrade(self);
        match &self.spec.endpoints {
            Endpoints::Static(_) => {}
            Endpoints::File(path) => {
                // The contents the pool was built from, read now (not when the task first
                // runs) so a change in between is not missed.
                let seen = std::fs::read(path).ok();
                tasks.push(tokio::spawn(watch_file(weak.clone(), path.clone(), seen)));
            }
            Endpoints::Dns {
                name,
                port,
                refresh,
            } => tasks.push(tokio::spawn(watch_dns(
                weak.clone(),
                format!("{name}:{port}"),
                *refresh,
            ))),
        }
        if let Some(m) = &self.spec.metrics {
            tasks.push(tokio::spawn(scrape_loop(weak, m.clone())));
        }
    }

    /// The pods now in the pool.
    pub fn pods(&self) -> Arc<Vec<Arc<Pod>>> {
        self.pods.load_full()
    }

    /// Replaces the pod list; pods that stay keep their counters and metrics, pods that
    /// left are forgotten by the stateful strategies.
    pub fn set_endpoints(&self, mut addrs: Vec<String>) {
        addrs.sort();
        addrs.dedup();
        let old = self.pods.load_full();
        if old.len() == addrs.len() && old.iter().zip(&addrs).all(|(p, a)| p.id.as_str() == a) {
            return;
        }
        let new: Vec<Arc<Pod>> = addrs
            .iter()
            .map(|a| {
                old.iter()
                    .find(|p| p.id.as_str() == a)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Pod::new(PodId::new(a))))
            })
            .collect();
        for gone in old
            .iter()
            .filter(|p| !addrs.iter().any(|a| a == p.id.as_str()))
        {
            self.shared.forget(&gone.id);
        }
        tracing::info!(pool = %self.spec.name, pods = ?addrs, "pool endpoints");
        self.pods.store(Arc::new(new));
    }

    /// The strategy for a request: its `routing-strategy` header, else the pool's default.
    pub fn strategy(&self, header: Option<&str>) -> Result<Arc<dyn Picker>, UnknownStrategy> {
        let Some(spec) = header.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(self.default.clone());
        };
        if spec == self.spec.strategy {
            return Ok(self.default.clone());
        }
        let mut cache = self.by_header.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(spec) {
            return Ok(p.clone());
        }
        let picker: Arc<dyn Picker> = parse_strategy_shared(spec, &self.shared)?.into();
        if cache.len() >= MAX_CACHED_STRATEGIES {
            cache.clear();
        }
        cache.insert(spec.to_string(), picker.clone());
        Ok(picker)
    }

    /// The request's session (from the pool's session header).
    pub fn session_header(&self) -> &str {
        &self.spec.session_header
    }

    /// A request's choice: the strategy its header names (or the default), the body parsed
    /// only when that strategy reads the prompt, the pods ranked.
    pub fn choose(&self, meta: RequestMeta, body: Option<&[u8]>) -> Result<Choice, PickError> {
        let strategy = self.strategy(meta.strategy)?;
        let mut parsed = match body {
            Some(b) if strategy.needs_prompt() => {
                crate::parse_request(b).map_err(PickError::BadBody)?
            }
            _ => ParsedRequest::default(),
        };
        if parsed.user.is_none() {
            parsed.user = meta.user.map(str::to_string);
        }
        let session = meta.session.map(str::to_string);
        let pick = self.rank_with(strategy, &parsed.pick_request(session.as_deref()))?;
        Ok(Choice {
            pick,
            parsed,
            session,
            tried: 0,
        })
    }

    /// Ranks the pool's pods for `req` with the strategy named by `strategy` (a
    /// `routing-strategy` header value) or the default.
    pub fn pick(&self, strategy: Option<&str>, req: &PickRequest) -> Result<Pick, PickError> {
        let picker = self.strategy(strategy)?;
        self.rank_with(picker, req)
    }

    /// Ranks the pods for `req` with `picker` (from [`Pool::strategy`]).
    pub fn rank_with(&self, picker: Arc<dyn Picker>, req: &PickRequest) -> Result<Pick, PickError> {
        let pods = self.pods.load();
        let now = Instant::now();
        let stale_after = self.spec.metrics.as_ref().map(|m| m.stale_after);
        let states: Vec<PodState> = pods
            .iter()
            .map(|p| {
                let h = p.lock();
                PodState {
                    id: p.id.clone(),
                    in_flight: p.in_flight(),
                    metrics: match stale_after {
                        Some(max) => h.metrics.clone().filter(|m| m.is_fresh(max, now)),
                        None => None,
                    },
                    healthy: h.ejected_until.is_none_or(|t| t <= now),
                }
            })
            .collect();
        let order = rank(picker.as_ref(), req, &states).map_err(|reason| PickError::NoPod {
            pool: self.spec.name.clone(),
            reason,
        })?;
        let eligible = order.len();
        let pods: Vec<Arc<Pod>> = order
            .iter()
            .filter_map(|id| pods.iter().find(|p| &p.id == id).cloned())
            .filter(|p| {
                self.spec
                    .max_in_flight_per_pod
                    .is_none_or(|cap| p.in_flight() < cap)
            })
            .collect();
        if pods.is_empty() {
            return Err(PickError::Saturated {
                pool: self.spec.name.clone(),
                pods: eligible,
                limit: self.spec.max_in_flight_per_pod.unwrap_or(0),
            });
        }
        Ok(Pick {
            pods,
            strategy: picker,
        })
    }

    /// Commits a request to `pod`: the strategy learns the choice (prefix tables, sessions)
    /// and the pod counts it in flight until the guard drops.
    pub fn begin(&self, strategy: &dyn Picker, req: &PickRequest, pod: &Arc<Pod>) -> InFlight {
        strategy.observe(req, &pod.id);
        pod.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { pod: pod.clone() }
    }

    /// The pod refused a connection: eject it for a backoff that doubles per failure.
    pub fn connect_failed(&self, pod: &Pod) {
        let mut h = pod.lock();
        h.failures = h.failures.saturating_add(1);
        let factor = 1u32 << (h.failures - 1).min(16);
        let backoff = self
            .spec
            .ejection_base
            .saturating_mul(factor)
            .min(self.spec.ejection_max);
        h.ejected_until = Some(Instant::now() + backoff);
        tracing::warn!(pool = %self.spec.name, pod = %pod.id, failures = h.failures, ?backoff, "pod ejected");
    }

    /// The pod answered: it is back in the pool.
    pub fn succeeded(&self, pod: &Pod) {
        let mut h = pod.lock();
        if h.failures > 0 || h.ejected_until.is_some() {
            h.failures = 0;
            h.ejected_until = None;
        }
    }
}

/// Parses an endpoints file: `host:port` per line (or separated by commas/spaces), `#`
/// starts a comment.
pub fn parse_endpoints(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for item in line.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
            let ok = item
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(format!(
                    "line {}: {item:?} is not host:port (e.g. 10.0.0.7:8000)",
                    i + 1
                ));
            }
            out.push(item.to_string());
        }
    }
    Ok(out)
}

fn read_endpoints_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("endpoints file {}: {e}", path.display()))?;
    parse_endpoints(&text).map_err(|e| format!("endpoints file {}: {e}", path.display()))
}

/// Re-reads the endpoints file when its contents change (polled: works on every
/// filesystem, including Kubernetes ConfigMap symlink swaps). A broken file keeps the
/// last good list.
async fn watch_file(pool: Weak<Pool>, path: std::path::PathBuf, mut last: Option<Vec<u8>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = std::fs::read(&path).ok();
        if now == last {
            continue;
        }
        last = now;
        match read_endpoints_file(&path) {
            Ok(list) => pool.set_endpoints(list),
            Err(e) => tracing::warn!(pool = %pool.name(), error = %e, "keeping the last endpoints"),
        }
    }
}

async fn watch_dns(pool: Weak<Pool>, target: String, refresh: Duration) {
    loop {
        match tokio::net::lookup_host(target.as_str()).await {
            Ok(addrs) => {
                let list: Vec<String> = addrs.map(|a: SocketAddr| a.to_string()).collect();
                let Some(pool) = pool.upgrade() else { return };
                pool.set_endpoints(list);
            }
            Err(e) => {
                let Some(pool) = pool.upgrade() else { return };
                tracing::warn!(pool = %pool.name(), name = %target, error = %e, "DNS lookup failed; keeping the last endpoints");
            }
        }
        tokio::time::sleep(refresh).await;
    }
}

type ScrapeClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

async fn scrape_loop(pool: Weak<Pool>, spec: MetricsSpec) {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(spec.timeout));
    connector.set_nodelay(true);
    let client: ScrapeClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(spec.interval * 4)
            .build(connector);
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(p) = pool.upgrade() else { return };
        let pods = p.pods();
        drop(p);
        let scrapes = pods.iter().map(|pod| {
            let client = &client;
            let spec = &spec;
            let pool = &pool;
            async move {
                let result = scrape(client, &pod.id, spec).await;
                let Some(pool) = pool.upgrade() else { return };
                apply_scrape(&pool, pod, result);
            }
        });
        futures_util::future::join_all(scrapes).await;
    }
}

enum ScrapeError {
    /// Nothing listens there: the pod is down.
    Refused(String),
    Other(String),
}

async fn scrape(
    client: &ScrapeClient,
    pod: &PodId,
    spec: &MetricsSpec,
) -> Result<PodMetrics, ScrapeError> {
    let uri: http::Uri = format!("http://{}{}", pod, spec.path)
        .parse()
        .map_err(|e| ScrapeError::Other(format!("bad metrics URL: {e}")))?;
    let fetch = async {
        let resp = client.get(uri).await.map_err(|e| {
            if e.is_connect() {
                ScrapeError::Refused(format!("{e:?}"))
            } else {
                ScrapeError::Other(e.to_string())
            }
        })?;
        if !resp.status().is_success() {
            return Err(ScrapeError::Other(format!("status {}", resp.status())));
        }
        let body = http_body_util::Limited::new(resp.into_body(), 4 << 20)
            .collect()
            .await
            .map_err(|e| ScrapeError::Other(e.to_string()))?
            .to_bytes();
        let text =
            std::str::from_utf8(&body).map_err(|_| ScrapeError::Other("not UTF-8".into()))?;
        crate::metrics::parse_vllm_metrics(text, Instant::now()).map_err(ScrapeError::Other)
    };
    match tokio::time::timeout(spec.timeout, fetch).await {
        Ok(r) => r,
        Err(_) => Err(ScrapeError::Other(format!(
            "timed out after {:?}",
            spec.timeout
        ))),
    }
}

fn apply_scrape(pool: &Pool, pod: &Pod, result: Result<PodMetrics, ScrapeError>) {
    match result {
        Ok(mut m) => {
            {
                let mut h = pod.lock();
                if let Some(prev) = &h.metrics {
                    m.derive_rates(prev);
                }
                h.metrics = Some(m);
            }
            pool.succeeded(pod);
        }
        Err(ScrapeError::Refused(e)) => {
            tracing::debug!(pool = %pool.name(), pod = %pod.id, error = %e, "metrics scrape refused");
            pod.lock().metrics = None;
            let ejected = pod.lock().ejected_until.is_some_and(|t| t > Instant::now());
            if !ejected {
                pool.connect_failed(pod);
            }
        }
        Err(ScrapeError::Other(e)) => {
            // Stale metrics age out on their own (`stale_after`); keep the last ones.
            tracing::debug!(pool = %pool.name(), pod = %pod.id, error = %e, "metrics scrape failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pods: &[&str]) -> PoolSpec {
        let mut s = PoolSpec::with_endpoints("p", pods);
        s.metrics = None;
        s.ejection_base = Duration::from_millis(50);
        s.ejection_max = Duration::from_millis(200);
        s
    }

    #[test]
    fn in_flight_counts_steer_least_request_and_guards_release() {
        let pool = Pool::new(spec(&["a:1", "b:1"])).unwrap();
        let req = PickRequest::default();
        let pick = pool.pick(None, &req).unwrap();
        let first = pick.pods[0].clone();
        let g = pool.begin(pick.strategy.as_ref(), &req, &first);
        assert_eq!(first.in_flight(), 1);
        let next = pool.pick(None, &req).unwrap();
        assert_ne!(next.pods[0].id, first.id, "the busy pod is not first");
        drop(g);
        assert_eq!(first.in_flight(), 0);
        assert_eq!(first.finished.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn refused_pods_are_ejected_with_growing_backoff_then_return() {
        let pool = Pool::new(spec(&["a:1", "b:1"])).unwrap();
        let a = pool.pods()[0].clone();
        pool.connect_failed(&a);
        let req = PickRequest::default();
        for _ in 0..20 {
            let pick = pool.pick(None, &req).unwrap();
            assert_eq!(pick.pods.len(), 1);
            assert_eq!(pick.pods[0].id.as_str(), "b:1");
        }
        pool.connect_failed(&a);
        let until = a.lock().ejected_until.unwrap();
        assert!(
            until > Instant::now() + Duration::from_millis(60),
            "second ejection is longer"
        );
        pool.succeeded(&a);
        assert!(a.healthy(Instant::now()));
        let b = pool.pods()[1].clone();
        pool.connect_failed(&a);
        pool.connect_failed(&b);
        let err = pool.pick(None, &req).err().unwrap();
        assert_eq!(err.to_string(), "pool p: none of the 2 pods is healthy");
    }

    #[test]
    fn header_strategies_share_prefix_state_and_unknown_names_are_refused() {
        let pool = Pool::new(spec(&["a:1", "b:1", "c:1"])).unwrap();
        let prompt = "system: the long shared policy text. ".repeat(20);
        let req = PickRequest {
            prompt: &prompt,
            ..Default::default()
        };
        let pick = pool.pick(Some("prefix-cache"), &req).unwrap();
        let chosen = pick.pods[0].clone();
        drop(pool.begin(pick.strategy.as_ref(), &req, &chosen));
        for spec in ["prefix-cache", "prefix-cache:3,least-request:1"] {
            let again = pool.pick(Some(spec), &req).unwrap();
            assert_eq!(again.pods[0].id, chosen.id, "{spec} sees the shared table");
        }
        let e = pool.pick(Some("fastest"), &req).err().unwrap();
        assert!(matches!(e, PickError::UnknownStrategy(_)));
        assert!(e.to_string().contains("least-kv-cache"), "{e}");
    }

    #[test]
    fn endpoint_changes_keep_survivors_and_forget_leavers() {
        let pool = Pool::new(spec(&["a:1", "b:1"])).unwrap();
        let a = pool.pods()[0].clone();
        let req = PickRequest::default();
        let _g = pool.begin(pool.strategy(None).unwrap().as_ref(), &req, &a);
        pool.set_endpoints(vec!["c:1".into(), "a:1".into()]);
        let ids: Vec<_> = pool.pods().iter().map(|p| p.id.to_string()).collect();
        assert_eq!(ids, ["a:1", "c:1"]);
        assert!(Arc::ptr_eq(&pool.pods()[0], &a), "a kept its counters");
        assert_eq!(pool.pods()[0].in_flight(), 1);
    }

    #[test]
    fn pods_at_their_in_flight_cap_are_skipped_then_the_pool_refuses() {
        let mut s = spec(&["a:1", "b:1"]);
        s.max_in_flight_per_pod = Some(1);
        let pool = Pool::new(s).unwrap();
        let req = PickRequest::default();
        let mut guards = Vec::new();
        for _ in 0..2 {
            let pick = pool.pick(Some("random"), &req).unwrap();
            assert_eq!(
                pick.pods.len(),
                2 - guards.len(),
                "busy pods are not candidates"
            );
            guards.push(pool.begin(pick.strategy.as_ref(), &req, &pick.pods[0]));
        }
        let e = pool.pick(None, &req).err().unwrap();
        assert!(
            matches!(
                e,
                PickError::Saturated {
                    pods: 2,
                    limit: 1,
                    ..
                }
            ),
            "{e}"
        );
        drop(guards.pop());
        assert!(
            pool.pick(None, &req).is_ok(),
            "a finished request frees its pod"
        );
    }

    #[test]
    fn endpoints_file_syntax() {
        let list = parse_endpoints("# pods\n10.0.0.1:8000\n10.0.0.2:8000, pod-3.svc:9000 # x\n\n")
            .unwrap();
        assert_eq!(list, ["10.0.0.1:8000", "10.0.0.2:8000", "pod-3.svc:9000"]);
        let e = parse_endpoints("10.0.0.1:8000\n10.0.0.2\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }

    /// A pod that answers every request with this vLLM metrics page while `answer` is set,
    /// and accepts but never answers when it is not (a hung pod).
    async fn metrics_pod(page: &'static str) -> (String, Arc<std::sync::atomic::AtomicBool>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let answer = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = answer.clone();
        tokio::spawn(async move {
            let mut hung = Vec::new();
            while let Ok((mut s, _)) = l.accept().await {
                if !flag.load(Ordering::Relaxed) {
                    hung.push(s);
                    continue;
                }
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (addr, answer)
    }

    #[tokio::test]
    async fn scraped_metrics_steer_picks_and_go_stale() {
        let (busy, busy_answers) = metrics_pod(
            "vllm:num_requests_running{model_name=\"m\"} 9\nvllm:num_requests_waiting{model_name=\"m\"} 4\nvllm:kv_cache_usage_perc{model_name=\"m\"} 0.9\n",
        )
        .await;
        let (idle, _) = metrics_pod(
            "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc 0.1\n",
        )
        .await;
        let mut s = spec(&[&busy, &idle]);
        s.strategy = "least-kv-cache".into();
        s.metrics = Some(MetricsSpec {
            path: "/metrics".into(),
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(200),
            stale_after: Duration::from_millis(300),
        });
        let pool = Pool::new(s).unwrap();
        pool.start();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.pods().iter().any(|p| p.metrics().is_none()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let busy_pod = pool
            .pods()
            .iter()
            .find(|p| p.id.as_str() == busy)
            .unwrap()
            .clone();
        let m = busy_pod.metrics().expect("scraped");
        assert_eq!((m.running, m.waiting, m.kv_cache_usage), (9.0, 4.0, 0.9));
        let req = PickRequest::default();
        for _ in 0..10 {
            let pick = pool.pick(None, &req).unwrap();
            assert_eq!(pick.pods[0].id.as_str(), idle, "the emptier KV cache wins");
        }
        // The busy pod hangs (scrapes time out): after staleAfter its metrics are unknown —
        // not idle — so least-kv-cache, which has fresh metrics for another pod, leaves it out.
        busy_answers.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            busy_pod.healthy(Instant::now()),
            "a slow pod is not ejected"
        );
        let pick = pool.pick(None, &req).unwrap();
        assert_eq!(pick.pods.len(), 1);
        assert_eq!(pick.pods[0].id.as_str(), idle);
    }

    #[tokio::test]
    async fn dns_discovery_resolves_every_address() {
        let mut s = spec(&[]);
        s.endpoints = Endpoints::Dns {
            name: "localhost".into(),
            port: 8123,
            refresh: Duration::from_millis(100),
        };
        let pool = Pool::new(s).unwrap();
        assert!(pool.pods().is_empty(), "nothing until the name resolves");
        pool.start();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.pods().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ids: Vec<String> = pool.pods().iter().map(|p| p.id.to_string()).collect();
        assert!(ids.contains(&"127.0.0.1:8123".to_string()), "{ids:?}");
    }

    #[tokio::test]
    async fn file_discovery_follows_changes() {
        let dir = std::env::temp_dir().join(format!("picker-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pods.txt");
        std::fs::write(&path, "a:1\n").unwrap();
        let mut s = spec(&[]);
        s.endpoints = Endpoints::File(path.clone());
        let pool = Pool::new(s).unwrap();
        pool.start();
        assert_eq!(pool.pods().len(), 1);
        std::fs::write(&path, "a:1\nb:2\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.pods().len() != 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pool.pods().len(), 2);
        std::fs::write(&path, "garbage\n").unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(pool.pods().len(), 2, "a broken file keeps the last list");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
