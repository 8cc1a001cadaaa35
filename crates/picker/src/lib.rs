//! Endpoint picker for self-hosted model pools (vLLM / SGLang pods).
//!
//! Strategies are modelled on AIBrix's gateway routing algorithms. A
//! [`Picker`] scores every pod (0..=1, 1 = best, `None` = not eligible) and
//! [`rank`] turns the scores into a best-first list of healthy pods. Strategies
//! can be combined with weights, e.g. `prefix-cache:2,least-request:1`
//! (see [`parse_strategy`]).
//!
//! This crate has no HTTP dependencies: the gateway counts in-flight requests,
//! scrapes `/metrics` (parsed with [`metrics::parse_vllm_metrics`]) and calls
//! [`Picker::observe`] with the pod it finally sent the request to.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod metrics;
#[cfg(feature = "runtime")]
pub mod pool;
pub mod prefix;
pub mod request;
pub mod spec;
pub mod strategies;

pub use request::{parse_request, ParsedRequest};
pub use spec::{Endpoints, MetricsSpec, PoolSpec};

pub use prefix::{PrefixCachePicker, PrefixConfig};
pub use strategies::{
    LeastKvCache, LeastLatency, LeastRequest, Random, SessionAffinity, Throughput, Weighted,
};

/// Address of a pod, `"host:port"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodId(pub Arc<str>);

impl PodId {
    pub fn new(addr: &str) -> Self {
        PodId(Arc::from(addr))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for PodId {
    fn from(s: &str) -> Self {
        PodId::new(s)
    }
}

impl fmt::Display for PodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Engine-side metrics of one pod, as scraped from its `/metrics` endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct PodMetrics {
    /// Requests currently running on the engine.
    pub running: f64,
    /// Requests queued on the engine.
    pub waiting: f64,
    /// KV-cache usage, 0..=1.
    pub kv_cache_usage: f64,
    /// Prefix-cache queries counter (cumulative).
    pub prefix_cache_queries: Option<f64>,
    /// Prefix-cache hits counter (cumulative).
    pub prefix_cache_hits: Option<f64>,
    /// Average time to first token (histogram `_sum / _count`).
    pub avg_ttft_seconds: Option<f64>,
    /// Average time per output token (histogram `_sum / _count`).
    pub avg_tpot_seconds: Option<f64>,
    /// Generation throughput; derived from two scrapes, see [`PodMetrics::derive_rates`].
    pub generation_tokens_per_second: Option<f64>,
    /// Raw `vllm:generation_tokens_total` counter.
    pub generation_tokens_total: Option<f64>,
    pub scraped_at: Instant,
    /// Requests this gateway had in flight to the pod when the scrape was stored: those it
    /// has sent since (not in `running`/`waiting` yet) are [`PodState::sent_since_scrape`].
    pub in_flight_at_scrape: u32,
}

impl PodMetrics {
    /// Metrics of an idle pod with nothing else known.
    pub fn idle(scraped_at: Instant) -> Self {
        PodMetrics {
            running: 0.0,
            waiting: 0.0,
            kv_cache_usage: 0.0,
            prefix_cache_queries: None,
            prefix_cache_hits: None,
            avg_ttft_seconds: None,
            avg_tpot_seconds: None,
            generation_tokens_per_second: None,
            generation_tokens_total: None,
            scraped_at,
            in_flight_at_scrape: 0,
        }
    }

    /// True when the scrape is at most `max_age` old at `now`.
    pub fn is_fresh(&self, max_age: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.scraped_at) <= max_age
    }

    /// Fills `generation_tokens_per_second` from the counter delta against the
    /// previous scrape of the same pod. Leaves it unchanged when the counter is
    /// missing, went backwards (engine restart) or no time elapsed.
    pub fn derive_rates(&mut self, prev: &PodMetrics) {
        let (Some(now_total), Some(prev_total)) =
            (self.generation_tokens_total, prev.generation_tokens_total)
        else {
            return;
        };
        let secs = self
            .scraped_at
            .saturating_duration_since(prev.scraped_at)
            .as_secs_f64();
        if secs > 0.0 && now_total >= prev_total {
            self.generation_tokens_per_second = Some((now_total - prev_total) / secs);
        }
    }
}

/// What the gateway knows about one pod at pick time.
#[derive(Clone, Debug)]
pub struct PodState {
    pub id: PodId,
    /// Requests the gateway currently has in flight to this pod.
    pub in_flight: u32,
    /// Of those, the ones whose answer has not begun: on an LLM engine, queued or in prefill.
    pub unanswered: u32,
    /// `None` = unknown or stale.
    pub metrics: Option<PodMetrics>,
    pub healthy: bool,
}

impl PodState {
    pub fn new(addr: &str) -> Self {
        PodState {
            id: PodId::new(addr),
            in_flight: 0,
            unanswered: 0,
            metrics: None,
            healthy: true,
        }
    }

    /// Requests this gateway sent to the pod since its metrics were scraped and still has in
    /// flight: load the engine's own counts do not show yet. Strategies that read a scrape
    /// add it, or every pick until the next scrape goes to the pod that looked best at it.
    pub fn sent_since_scrape(&self) -> u32 {
        self.metrics
            .as_ref()
            .map_or(0, |m| self.in_flight.saturating_sub(m.in_flight_at_scrape))
    }
}

/// The request being routed.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickRequest<'a> {
    pub model: Option<&'a str>,
    /// Prompt text, or the chat messages concatenated.
    pub prompt: &'a str,
    pub user: Option<&'a str>,
    pub session: Option<&'a str>,
    /// Where `prefix-cache` keeps the prompt's block hashes for this request, so scoring and
    /// observing hash the prompt once. `None`: hashed on each use.
    pub block_hashes: Option<&'a std::sync::OnceLock<Vec<u64>>>,
}

/// A routing strategy.
pub trait Picker: Send + Sync {
    /// Strategy name as used in [`parse_strategy`] (`"weighted"` for combinations).
    fn name(&self) -> &'static str;

    /// One score per pod, in the same order: `Some(0..=1)` (1 = best) or `None`
    /// when the pod is not eligible. Unhealthy pods always score `None`.
    fn score(&self, req: &PickRequest, pods: &[PodState]) -> Vec<Option<f64>>;

    /// Tells a stateful strategy which pod the request was finally sent to.
    fn observe(&self, _req: &PickRequest, _chosen: &PodId) {}

    /// Whether scores depend on the prompt (else the body need not be parsed).
    fn needs_prompt(&self) -> bool {
        false
    }

    /// Drops any state about a pod that left the pool.
    fn forget(&self, _pod: &PodId) {}
}

impl<T: Picker + ?Sized> Picker for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn score(&self, req: &PickRequest, pods: &[PodState]) -> Vec<Option<f64>> {
        (**self).score(req, pods)
    }
    fn observe(&self, req: &PickRequest, chosen: &PodId) {
        (**self).observe(req, chosen)
    }
    fn needs_prompt(&self) -> bool {
        (**self).needs_prompt()
    }
    fn forget(&self, pod: &PodId) {
        (**self).forget(pod)
    }
}

/// State that stateful strategies keep per pool, shared by every strategy spec that names
/// them: `prefix-cache` and `prefix-cache:2,least-request:1` read one match table.
pub struct SharedState {
    pub prefix: Arc<PrefixCachePicker>,
    pub sessions: Arc<SessionAffinity>,
}

impl SharedState {
    pub fn new(cfg: PrefixConfig) -> Self {
        SharedState {
            prefix: Arc::new(PrefixCachePicker::new(cfg)),
            sessions: Arc::new(SessionAffinity::default()),
        }
    }

    /// Drops what the stateful strategies remember about a pod that left.
    pub fn forget(&self, pod: &PodId) {
        self.prefix.forget(pod);
        self.sessions.forget(pod);
    }
}

/// Why no pod could be picked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoPod {
    #[error("no pods in the pool")]
    NoPods,
    #[error("none of the {0} pods is healthy")]
    NoneHealthy(usize),
    #[error("none of the {healthy} healthy pods is eligible for strategy {strategy}")]
    NoneEligible {
        healthy: usize,
        strategy: &'static str,
    },
}

/// Healthy, eligible pods best-first; equal scores are ordered randomly.
pub fn rank(
    picker: &dyn Picker,
    req: &PickRequest,
    pods: &[PodState],
) -> Result<Vec<PodId>, NoPod> {
    if pods.is_empty() {
        return Err(NoPod::NoPods);
    }
    let healthy = pods.iter().filter(|p| p.healthy).count();
    if healthy == 0 {
        return Err(NoPod::NoneHealthy(pods.len()));
    }
    let scores = picker.score(req, pods);
    let mut cands: Vec<(f64, u64, usize)> = scores
        .iter()
        .zip(pods)
        .enumerate()
        .filter_map(|(i, (s, p))| match s {
            Some(s) if p.healthy && !s.is_nan() => Some((*s, fastrand::u64(..), i)),
            _ => None,
        })
        .collect();
    if cands.is_empty() {
        return Err(NoPod::NoneEligible {
            healthy,
            strategy: picker.name(),
        });
    }
    cands.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(cands
        .into_iter()
        .map(|(_, _, i)| pods[i].id.clone())
        .collect())
}

/// The best pod only (see [`rank`]).
pub fn pick(picker: &dyn Picker, req: &PickRequest, pods: &[PodState]) -> Result<PodId, NoPod> {
    rank(picker, req, pods).map(|mut v| v.swap_remove(0))
}

/// Valid strategy names, as AIBrix names them.
pub const STRATEGIES: &[&str] = &[
    "random",
    "least-request",
    "least-kv-cache",
    "least-latency",
    "throughput",
    "prefix-cache",
    "session-affinity",
];

fn valid_names() -> String {
    STRATEGIES.join(", ")
}

/// A strategy spec that could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnknownStrategy {
    #[error(
        "unknown routing strategy {name:?}; valid strategies: {}",
        valid_names()
    )]
    Name { name: String },
    #[error(
        "invalid weight {weight:?} for strategy {name:?}: weights must be positive numbers \
         (e.g. prefix-cache:2,least-request:1); valid strategies: {}",
        valid_names()
    )]
    Weight { name: String, weight: String },
    #[error("empty routing strategy; valid strategies: {}", valid_names())]
    Empty,
}

fn build(name: &str, shared: &SharedState) -> Option<Box<dyn Picker>> {
    Some(match name {
        "random" => Box::new(Random),
        "least-request" => Box::new(LeastRequest),
        "least-kv-cache" => Box::new(LeastKvCache),
        "least-latency" => Box::new(LeastLatency),
        "throughput" => Box::new(Throughput),
        "prefix-cache" => Box::new(shared.prefix.clone()),
        "session-affinity" => Box::new(shared.sessions.clone()),
        _ => return None,
    })
}

/// Parses `"least-request"` or a weighted combination such as
/// `"prefix-cache:2,least-request:1"` (weight defaults to 1), with fresh state.
pub fn parse_strategy(spec: &str, cfg: &PrefixConfig) -> Result<Box<dyn Picker>, UnknownStrategy> {
    parse_strategy_shared(spec, &SharedState::new(cfg.clone()))
}

/// [`parse_strategy`] over a pool's [`SharedState`].
pub fn parse_strategy_shared(
    spec: &str,
    shared: &SharedState,
) -> Result<Box<dyn Picker>, UnknownStrategy> {
    let mut parts: Vec<(Box<dyn Picker>, f64)> = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(UnknownStrategy::Empty);
        }
        let (name, weight) = match part.split_once(':') {
            Some((n, w)) => {
                let n = n.trim();
                let w_str = w.trim();
                match w_str.parse::<f64>() {
                    Ok(w) if w.is_finite() && w > 0.0 => (n, w),
                    _ => {
                        return Err(UnknownStrategy::Weight {
                            name: n.to_string(),
                            weight: w_str.to_string(),
                        })
                    }
                }
            }
            None => (part, 1.0),
        };
        let picker = build(name, shared).ok_or_else(|| UnknownStrategy::Name {
            name: name.to_string(),
        })?;
        parts.push((picker, weight));
    }
    if parts.len() == 1 {
        return Ok(parts.pop().map(|(p, _)| p).expect("one part"));
    }
    Ok(Box::new(Weighted::new(parts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pods(in_flight: &[u32]) -> Vec<PodState> {
        in_flight
            .iter()
            .enumerate()
            .map(|(i, &n)| PodState {
                in_flight: n,
                ..PodState::new(&format!("10.0.0.{i}:8000"))
            })
            .collect()
    }

    #[test]
    fn rank_orders_best_first_and_skips_unhealthy() {
        let mut ps = pods(&[5, 1, 3, 0]);
        ps[3].healthy = false;
        let r = rank(&LeastRequest, &PickRequest::default(), &ps).unwrap();
        let names: Vec<&str> = r.iter().map(|p| p.as_str()).collect();
        assert_eq!(names, ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.0:8000"]);
    }

    #[test]
    fn rank_errors_explain_why() {
        let req = PickRequest::default();
        assert_eq!(rank(&LeastRequest, &req, &[]), Err(NoPod::NoPods));
        let mut ps = pods(&[0, 0]);
        ps.iter_mut().for_each(|p| p.healthy = false);
        let e = rank(&LeastRequest, &req, &ps).unwrap_err();
        assert_eq!(e, NoPod::NoneHealthy(2));
        assert_eq!(e.to_string(), "none of the 2 pods is healthy");
        struct Never;
        impl Picker for Never {
            fn name(&self) -> &'static str {
                "never"
            }
            fn score(&self, _: &PickRequest, pods: &[PodState]) -> Vec<Option<f64>> {
                vec![None; pods.len()]
            }
        }
        let e = rank(&Never, &req, &pods(&[0, 0, 0])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "none of the 3 healthy pods is eligible for strategy never"
        );
    }

    #[test]
    fn ties_are_broken_randomly() {
        let ps = pods(&[0, 0, 0, 0]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(pick(&LeastRequest, &PickRequest::default(), &ps).unwrap());
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn parse_single_and_weighted() {
        let cfg = PrefixConfig::default();
        for name in STRATEGIES {
            assert_eq!(parse_strategy(name, &cfg).unwrap().name(), *name);
        }
        let p = parse_strategy(" prefix-cache:2 , least-request:1 ", &cfg).unwrap();
        assert_eq!(p.name(), "weighted");
        assert_eq!(
            parse_strategy("least-request:3", &cfg).unwrap().name(),
            "least-request"
        );
    }

    #[test]
    fn parse_errors_list_valid_names() {
        let cfg = PrefixConfig::default();
        let e = parse_strategy("least-requests", &cfg).err().unwrap();
        let msg = e.to_string();
        assert!(msg.contains("\"least-requests\""), "{msg}");
        for name in STRATEGIES {
            assert!(msg.contains(name), "{msg} lacks {name}");
        }
        for bad in [
            "prefix-cache:0",
            "prefix-cache:-1",
            "prefix-cache:x",
            "random:inf",
        ] {
            let e = parse_strategy(bad, &cfg).err().unwrap();
            assert!(matches!(e, UnknownStrategy::Weight { .. }), "{bad}");
            assert!(e.to_string().contains("session-affinity"));
        }
        assert_eq!(
            parse_strategy("random,", &cfg).err(),
            Some(UnknownStrategy::Empty)
        );
        assert_eq!(parse_strategy("", &cfg).err(), Some(UnknownStrategy::Empty));
    }

    #[test]
    fn metrics_freshness_and_rates() {
        let t0 = Instant::now();
        let mut prev = PodMetrics::idle(t0);
        prev.generation_tokens_total = Some(1000.0);
        let mut cur = PodMetrics::idle(t0 + Duration::from_secs(2));
        cur.generation_tokens_total = Some(1500.0);
        cur.derive_rates(&prev);
        assert_eq!(cur.generation_tokens_per_second, Some(250.0));
        assert!(cur.is_fresh(Duration::from_secs(5), t0 + Duration::from_secs(6)));
        assert!(!cur.is_fresh(Duration::from_secs(5), t0 + Duration::from_secs(8)));
        // Counter reset: no rate.
        let mut reset = PodMetrics::idle(t0 + Duration::from_secs(4));
        reset.generation_tokens_total = Some(10.0);
        reset.derive_rates(&cur);
        assert_eq!(reset.generation_tokens_per_second, None);
    }
}
