//! A live pool: its pods, what the gateway knows about each (requests in flight, last
//! scraped metrics, ejection after refused connections), pod discovery and metrics scraping.
//! Both the gateway's `{pool: NAME}` backends and the `ext_proc` server pick through this.

mod discovery;
mod scrape;

pub use discovery::parse_endpoints;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::spec::{Endpoints, PoolSpec};
use crate::{
    parse_strategy_shared, rank, NoPod, ParsedRequest, PickRequest, Picker, PodId, PodMetrics,
    PodState, SharedState, UnknownStrategy,
};

use discovery::{read_endpoints_file, watch_dns, watch_file};
use scrape::scrape_loop;

/// Most distinct `routing-strategy` header values kept compiled per pool.
const MAX_CACHED_STRATEGIES: usize = 64;

/// One pod and what the pool knows about it.
pub struct Pod {
    pub id: PodId,
    in_flight: AtomicU32,
    /// Of those in flight, the requests whose answer has not sent a body byte yet: on an LLM
    /// engine, still queued or in prefill (see [`InFlight::answered`]).
    unanswered: AtomicU32,
    state: Mutex<PodHealth>,
    /// Requests whose response ended (completed or not).
    pub finished: AtomicU64,
    /// Output tokens reported in responses' usage.
    pub output_tokens: AtomicU64,
}

#[derive(Default)]
struct PodHealth {
    metrics: Option<PodMetrics>,
    /// The models (and LoRA adapters) the pod serves, from its `/v1/models`; `None` until
    /// read (a pod whose list is unknown is taken to serve any model).
    models: Option<Arc<[String]>>,
    /// Consecutive refused connections.
    failures: u32,
    ejected_until: Option<Instant>,
}

impl Pod {
    fn new(id: PodId) -> Self {
        Pod {
            id,
            in_flight: AtomicU32::new(0),
            unanswered: AtomicU32::new(0),
            state: Mutex::new(PodHealth::default()),
            finished: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PodHealth> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The models the pod serves, when its `/v1/models` has been read.
    pub fn models(&self) -> Option<Arc<[String]>> {
        self.lock().models.clone()
    }

    pub(crate) fn set_models(&self, models: Vec<String>) {
        self.lock().models = Some(models.into());
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests in flight whose answer has not begun (queued or in prefill).
    pub fn unanswered(&self) -> u32 {
        self.unanswered.load(Ordering::Relaxed)
    }

    /// Last scraped metrics, however old.
    pub fn metrics(&self) -> Option<PodMetrics> {
        self.lock().metrics.clone()
    }

    /// Stores `m` as the pod's latest scraped metrics, exactly as the scrape loop does (rates
    /// derived against the previous scrape). For benchmarks and tests that drive a pool
    /// without scraping.
    pub fn set_metrics(&self, mut m: PodMetrics) {
        m.in_flight_at_scrape = self.in_flight();
        let mut h = self.lock();
        if let Some(prev) = &h.metrics {
            m.derive_rates(prev);
        }
        h.metrics = Some(m);
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
    /// No pod serves the requested model (their `/v1/models` lists say so).
    #[error("pool {pool}: no pod serves the model {model:?}")]
    ModelNotFound { pool: String, model: String },
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
            PickError::ModelNotFound { .. } => 404,
            PickError::Saturated { .. } => 429,
        }
    }

    /// The stable error code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            PickError::UnknownStrategy(_) => "unknown_routing_strategy",
            PickError::BadBody(_) => "invalid_request",
            PickError::NoPod { .. } => "no_healthy_pod",
            PickError::ModelNotFound { .. } => "model_not_found",
            PickError::Saturated { .. } => "pool_saturated",
        }
    }

    /// The `outcome` label of the pick metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            PickError::UnknownStrategy(_) | PickError::BadBody(_) => "bad_request",
            PickError::NoPod { .. } => "no_pod",
            PickError::ModelNotFound { .. } => "no_model",
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

/// Held while a request is on a pod: counts it in flight until dropped, and unanswered until
/// [`InFlight::answered`] or the drop.
pub struct InFlight {
    pod: Arc<Pod>,
    answered: bool,
}

impl InFlight {
    pub fn pod(&self) -> &Arc<Pod> {
        &self.pod
    }

    /// The answer's first body byte arrived. An LLM engine sends its response headers at once
    /// but the first body byte only with the first token, so until then the request is queued
    /// or in prefill, which is what delays another prompt sent to the same pod; decoding
    /// requests delay it far less. Called once per request; later calls do nothing.
    pub fn answered(&mut self) {
        if !self.answered {
            self.answered = true;
            self.pod.unanswered.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Output tokens the response reported, for the pod's counters.
    pub fn record_output_tokens(&self, n: u64) {
        self.pod.output_tokens.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.answered();
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
        // The model picks the pods when they serve different models.
        let mut parsed = match body {
            Some(b) if strategy.needs_prompt() || self.serves_several_models() => {
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

    /// Whether the pods' model lists name more than one model (then requests are read for
    /// their model and only pods serving it are ranked).
    pub fn serves_several_models(&self) -> bool {
        let pods = self.pods.load();
        let mut first: Option<String> = None;
        for p in pods.iter() {
            let Some(models) = p.models() else { continue };
            for m in models.iter() {
                match &first {
                    None => first = Some(m.clone()),
                    Some(f) if f != m => return true,
                    _ => {}
                }
            }
        }
        false
    }

    /// Ranks the pods for `req` with `picker` (from [`Pool::strategy`]). With a model named,
    /// only pods serving it are ranked (a pod whose list is unknown may serve it).
    pub fn rank_with(&self, picker: Arc<dyn Picker>, req: &PickRequest) -> Result<Pick, PickError> {
        let all = self.pods.load();
        let serving: Vec<Arc<Pod>>;
        let pods: &[Arc<Pod>] = match req.model {
            Some(model) if all.iter().any(|p| p.models().is_some()) => {
                serving = all
                    .iter()
                    .filter(|p| p.models().is_none_or(|ms| ms.iter().any(|m| m == model)))
                    .cloned()
                    .collect();
                if serving.is_empty() {
                    return Err(PickError::ModelNotFound {
                        pool: self.spec.name.clone(),
                        model: model.to_string(),
                    });
                }
                &serving
            }
            _ => &all,
        };
        let now = Instant::now();
        let stale_after = self.spec.metrics.as_ref().map(|m| m.stale_after);
        let states: Vec<PodState> = pods
            .iter()
            .map(|p| {
                let h = p.lock();
                PodState {
                    id: p.id.clone(),
                    in_flight: p.in_flight(),
                    unanswered: p.unanswered(),
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
        pod.unanswered.fetch_add(1, Ordering::Relaxed);
        InFlight {
            pod: pod.clone(),
            answered: false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(super) fn spec(pods: &[&str]) -> PoolSpec {
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
    fn a_request_still_unanswered_weighs_more_than_decoding_ones() {
        let pool = Pool::new(spec(&["a:1", "b:1"])).unwrap();
        let req = PickRequest::default();
        let strategy = pool.pick(None, &req).unwrap().strategy;
        let (a, b) = (pool.pods()[0].clone(), pool.pods()[1].clone());
        // Two requests on `a` whose answers are streaming (decoding) ...
        let mut decoding: Vec<InFlight> =
            (0..2).map(|_| pool.begin(&*strategy, &req, &a)).collect();
        decoding.iter_mut().for_each(InFlight::answered);
        // ... and one on `b` that has not answered yet (queued or in prefill).
        let mut prefill = pool.begin(&*strategy, &req, &b);
        assert_eq!((a.in_flight(), a.unanswered()), (2, 0));
        assert_eq!((b.in_flight(), b.unanswered()), (1, 1));
        for _ in 0..20 {
            assert_eq!(pool.pick(None, &req).unwrap().pods[0].id, a.id);
        }
        // Once `b`'s answer begins it is the lighter pod again; a second call counts nothing.
        prefill.answered();
        prefill.answered();
        assert_eq!((b.in_flight(), b.unanswered()), (1, 0));
        assert_eq!(pool.pick(None, &req).unwrap().pods[0].id, b.id);
        // Guards release both counts whether or not the answer began.
        let unanswered = pool.begin(&*strategy, &req, &a);
        assert_eq!(a.unanswered(), 1);
        drop((decoding, prefill, unanswered));
        for p in [&a, &b] {
            assert_eq!((p.in_flight(), p.unanswered()), (0, 0));
        }
    }

    #[test]
    fn with_model_lists_only_pods_serving_the_model_are_ranked() {
        let pool = Pool::new(spec(&["a:1", "b:1", "c:1"])).unwrap();
        let req = |model| PickRequest {
            model: Some(model),
            ..Default::default()
        };
        // No list known yet: every pod may serve anything.
        assert_eq!(pool.pick(None, &req("x")).unwrap().pods.len(), 3);
        assert!(!pool.serves_several_models());
        let pods = pool.pods();
        pods[0].set_models(vec!["llama".into(), "sql-lora".into()]);
        pods[1].set_models(vec!["qwen".into()]);
        assert!(pool.serves_several_models());
        let ids = |model| -> Vec<String> {
            pool.pick(None, &req(model))
                .unwrap()
                .pods
                .iter()
                .map(|p| p.id.to_string())
                .collect()
        };
        // c's list is unknown: it stays a candidate.
        let mut lora = ids("sql-lora");
        lora.sort();
        assert_eq!(lora, ["a:1", "c:1"]);
        pods[2].set_models(vec!["qwen".into()]);
        assert_eq!(ids("sql-lora"), ["a:1"]);
        let e = pool.pick(None, &req("gpt-9")).map(|_| ()).unwrap_err();
        assert!(matches!(e, PickError::ModelNotFound { .. }));
        assert_eq!((e.status(), e.code()), (404, "model_not_found"));
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
}
