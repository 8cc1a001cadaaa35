//! Stateless strategies, session affinity and weighted combinations.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{PickRequest, Picker, PodId, PodState};

/// Min-max normalisation of a lower-is-better value over healthy pods that
/// have one: best → 1, worst → 0, all equal → 1. Other pods → `None`.
fn min_max_lower_better(
    pods: &[PodState],
    value: impl Fn(&PodState) -> Option<f64>,
) -> Vec<Option<f64>> {
    let vals: Vec<Option<f64>> = pods
        .iter()
        .map(|p| value(p).filter(|v| p.healthy && v.is_finite()))
        .collect();
    let (lo, hi) = vals
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let span = hi - lo;
    vals.into_iter()
        .map(|v| v.map(|v| if span > 0.0 { (hi - v) / span } else { 1.0 }))
        .collect()
}

/// How many decoding requests one not yet answered (queued or in prefill) weighs as, on top
/// of its own count. A new prompt sent behind a prefill waits for all of it, while each
/// decoding request adds one sequence's share to a step. Measured on the routing bench
/// (no-sharing, 8 simulated A100 pods @ 40 req/s): TTFT p90 382 ms with 0, 166 ms with 1,
/// 137 ms with 4 (round robin's), 138 ms with 1000; 4 keeps decode load in the balance.
const UNANSWERED_WEIGHT: f64 = 4.0;

/// A pod's load as least-request sees it. The two counters are read apart, so a racing
/// pick may see more unanswered than in flight.
fn request_load(p: &PodState) -> f64 {
    p.in_flight as f64 + UNANSWERED_WEIGHT * p.unanswered.min(p.in_flight) as f64
}

/// Least-request scores: `(min + 1) / (load + 1)` over healthy pods, so the least-loaded pod
/// scores 1 and the score falls with relative extra load.
pub(crate) fn least_request_scores(pods: &[PodState]) -> Vec<Option<f64>> {
    let min = pods
        .iter()
        .filter(|p| p.healthy)
        .map(request_load)
        .fold(f64::INFINITY, f64::min);
    pods.iter()
        .map(|p| p.healthy.then(|| (min + 1.0) / (request_load(p) + 1.0)))
        .collect()
}

/// Uniformly random scores: a random pick on its own, noise in a combination.
#[derive(Debug, Default, Clone, Copy)]
pub struct Random;

impl Picker for Random {
    fn name(&self) -> &'static str {
        "random"
    }
    fn score(&self, _req: &PickRequest, pods: &[PodState]) -> Vec<Option<f64>> {
        pods.iter().map(|p| p.healthy.then(fastrand::f64)).collect()
    }
}

/// Fewest requests in flight from this gateway.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastRequest;

impl Picker for LeastRequest {
    fn name(&self) -> &'static str {
        "least-request"
    }
    fn score(&self, _req: &PickRequest, pods: &[PodState]) -> Vec<Option<f64>> {
        least_request_scores(pods)
    }
}

/// Lowest KV-cache usage, damped by the requests sent since: score =
/// `(1 - kv_cache_usage) × least-request score`. The usage is a scrape old (up to an
/// interval); without the in-flight factor every pick until the next scrape goes to the same
/// pod (the benchmark measured runs of 25 in a row and worse TTFT than random under load).
/// Pods with unknown metrics are ineligible, unless no healthy pod has metrics (then
/// least-request alone decides).
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastKvCache;

impl Picker for LeastKvCache {
    fn name(&self) -> &'static str {
        "least-kv-cache"
    }
    fn score(&self, _req: &PickRequest, pods: &[PodState]) -> Vec<Option<f64>> {
        let any_known = pods.iter().any(|p| p.healthy && p.metrics.is_some());
        let load = least_request_scores(pods);
        pods.iter()
            .zip(load)
            .map(|(p, load)| {
                let kv = match &p.metrics {
                    Some(m) if m.kv_cache_usage.is_finite() => {
                        1.0 - m.kv_cache_usage.clamp(0.0, 1.0)
                    }
                    Some(_) => return None,
                    None if any_known => return None,
                    None => 1.0,
                };
                load.map(|l| kv * l)
            })
            .collect()
    }
}

/// Lowest estimated latency: `(waiting + running + sent since the scrape) × avg_tpot +
/// avg_ttft`, min-max normalised. If any healthy pod lacks the metrics needed, all pods
/// are scored by least-request instead (seconds and counts do not mix).
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastLatency;

fn latency_estimate(p: &PodState) -> Option<f64> {
    let m = p.metrics.as_ref()?;
    let queue = m.waiting + m.running + p.sent_since_scrape() as f64;
    Some(queue * m.avg_tpot_seconds? + m.avg_ttft_seconds?)
}

impl Picker for LeastLatency {
    fn name(&self) -> &'static str {
        "least-latency"
    }
    fn score(&self, _req: &PickRequest, pods: &[PodState]) -> Vec<Option<f64>> {
        let est = latency_estimate;
        let all_known = pods
            .iter()
            .filter(|p| p.healthy)
            .all(|p| est(p).is_some_and(f64::is_finite));
        if all_known {
            min_max_lower_better(pods, est)
        } else {
            least_request_scores(pods)
        }
    }
}

/// Lowest generation throughput (the least busy pod, as AIBrix does),
/// min-max normalised; falls back to least-request like [`LeastLatency`]. The scraped rate
/// is raised by what each request sent since the scrape will add (the pool's mean rate per
/// running request), so that picks between two scrapes spread instead of all going to the
/// pod that was least busy at the last one.
#[derive(Debug, Default, Clone, Copy)]
pub struct Throughput;

impl Picker for Throughput {
    fn name(&self) -> &'static str {
        "throughput"
    }
    fn score(&self, _req: &PickRequest, pods: &[PodState]) -> Vec<Option<f64>> {
        let tps = |p: &PodState| {
            p.metrics
                .as_ref()
                .and_then(|m| m.generation_tokens_per_second)
        };
        let all_known = pods
            .iter()
            .filter(|p| p.healthy)
            .all(|p| tps(p).is_some_and(f64::is_finite));
        if !all_known {
            return least_request_scores(pods);
        }
        // Tokens per second one running request adds, over the pods that have some running
        // (1 when none has: every pod is then idle and the counts alone decide).
        let (rate, busy) = pods
            .iter()
            .filter(|p| p.healthy)
            .filter_map(|p| Some((tps(p)?, p.metrics.as_ref()?.running)))
            .filter(|(t, running)| *running >= 1.0 && t.is_finite())
            .fold((0.0, 0.0), |(sum, n), (t, running)| {
                (sum + t / running, n + 1.0)
            });
        let per_request = if busy > 0.0 { rate / busy } else { 1.0 };
        min_max_lower_better(pods, |p| {
            Some(tps(p)? + p.sent_since_scrape() as f64 * per_request)
        })
    }
}

/// Default cap on remembered sessions.
pub const DEFAULT_MAX_SESSIONS: usize = 65_536;

/// Sticky sessions: the pod recorded for the request's session scores 1,
/// other pods `0.5 × least-request` (so they remain fallbacks). Without a
/// session, or when the recorded pod is gone or unhealthy: least-request.
#[derive(Debug)]
pub struct SessionAffinity {
    sessions: Mutex<HashMap<Box<str>, PodId>>,
    max_sessions: usize,
}

impl Default for SessionAffinity {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_MAX_SESSIONS)
    }
}

impl SessionAffinity {
    /// At most `max_sessions` sessions are remembered; beyond that an
    /// arbitrary old one is dropped.
    pub fn with_capacity(max_sessions: usize) -> Self {
        SessionAffinity {
            sessions: Mutex::new(HashMap::new()),
            max_sessions: max_sessions.max(1),
        }
    }

    /// The pod recorded for a session.
    pub fn lookup(&self, session: &str) -> Option<PodId> {
        self.lock().get(session).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, PodId>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Picker for SessionAffinity {
    fn name(&self) -> &'static str {
        "session-affinity"
    }

    fn score(&self, req: &PickRequest, pods: &[PodState]) -> Vec<Option<f64>> {
        let mut scores = least_request_scores(pods);
        let Some(sticky) = req.session.and_then(|s| self.lookup(s)) else {
            return scores;
        };
        let Some(idx) = pods.iter().position(|p| p.healthy && p.id == sticky) else {
            return scores;
        };
        for s in scores.iter_mut().flatten() {
            *s *= 0.5;
        }
        scores[idx] = Some(1.0);
        scores
    }

    fn observe(&self, req: &PickRequest, chosen: &PodId) {
        let Some(session) = req.session else { return };
        let mut map = self.lock();
        if let Some(pod) = map.get_mut(session) {
            if pod != chosen {
                *pod = chosen.clone();
            }
            return;
        }
        if map.len() >= self.max_sessions {
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
        map.insert(session.into(), chosen.clone());
    }

    fn forget(&self, pod: &PodId) {
        self.lock().retain(|_, p| p != pod);
    }
}

/// Weighted combination: score = Σ wᵢ·scoreᵢ / Σ wᵢ; a pod ineligible for
/// any part is ineligible.
pub struct Weighted {
    parts: Vec<(Box<dyn Picker>, f64)>,
    total: f64,
}

impl Weighted {
    /// Weights must be positive (checked by [`crate::parse_strategy`]).
    pub fn new(parts: Vec<(Box<dyn Picker>, f64)>) -> Self {
        let total = parts.iter().map(|(_, w)| w).sum();
        Weighted { parts, total }
    }

    /// `(name, weight)` of each part.
    pub fn parts(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.parts.iter().map(|(p, w)| (p.name(), *w))
    }
}

impl Picker for Weighted {
    fn name(&self) -> &'static str {
        "weighted"
    }

    fn score(&self, req: &PickRequest, pods: &[PodState]) -> Vec<Option<f64>> {
        let mut acc: Vec<Option<f64>> = vec![Some(0.0); pods.len()];
        for (picker, w) in &self.parts {
            for (a, s) in acc.iter_mut().zip(picker.score(req, pods)) {
                *a = match (*a, s) {
                    (Some(a), Some(s)) => Some(a + w * s),
                    _ => None,
                };
            }
        }
        if self.total > 0.0 {
            for a in acc.iter_mut().flatten() {
                *a /= self.total;
            }
        }
        acc
    }

    fn observe(&self, req: &PickRequest, chosen: &PodId) {
        for (p, _) in &self.parts {
            p.observe(req, chosen);
        }
    }

    fn needs_prompt(&self) -> bool {
        self.parts.iter().any(|(p, _)| p.needs_prompt())
    }

    fn forget(&self, pod: &PodId) {
        for (p, _) in &self.parts {
            p.forget(pod);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::pods;
    use crate::{pick, rank, PodMetrics};
    use std::time::Instant;

    fn metrics(running: f64, waiting: f64, kv: f64) -> PodMetrics {
        PodMetrics {
            running,
            waiting,
            kv_cache_usage: kv,
            ..PodMetrics::idle(Instant::now())
        }
    }

    fn id(i: usize) -> PodId {
        PodId::new(&format!("10.0.0.{i}:8000"))
    }

    #[test]
    fn random_picks_every_healthy_pod() {
        let mut ps = pods(&[0, 0, 0]);
        ps[1].healthy = false;
        let mut counts = [0; 3];
        for _ in 0..300 {
            let p = pick(&Random, &PickRequest::default(), &ps).unwrap();
            counts[(0..3).find(|&i| id(i) == p).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(counts[0] > 50 && counts[2] > 50, "{counts:?}");
    }

    #[test]
    fn least_request_scores_are_relative() {
        let s = least_request_scores(&pods(&[0, 1, 3]));
        assert_eq!(s, vec![Some(1.0), Some(0.5), Some(0.25)]);
        let mut ps = pods(&[0, 4]);
        ps[0].healthy = false;
        assert_eq!(least_request_scores(&ps), vec![None, Some(1.0)]);
    }

    #[test]
    fn least_request_weighs_unanswered_requests_more() {
        // 5 decoding requests against 3 of which 2 are still in prefill: 5 vs 3 + 2 × 4.
        let mut ps = pods(&[5, 3]);
        ps[1].unanswered = 2;
        let s = least_request_scores(&ps);
        assert_eq!(s[0], Some(1.0));
        assert!(s[1].unwrap() < 0.6, "{s:?}");
        // When every request is unanswered (answers not streamed), the order is in-flight's.
        let mut ps = pods(&[0, 1, 3]);
        ps.iter_mut().for_each(|p| p.unanswered = p.in_flight);
        let s = least_request_scores(&ps);
        assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
        // A count above in-flight (a racing read of the two counters) is capped.
        let mut ps = pods(&[1, 1]);
        ps[0].unanswered = 7;
        ps[1].unanswered = 1;
        assert_eq!(least_request_scores(&ps), vec![Some(1.0), Some(1.0)]);
    }

    #[test]
    fn least_kv_cache_handles_unknown_metrics() {
        let mut ps = pods(&[0, 0, 0]);
        let req = PickRequest::default();
        // All unknown: all equal and eligible.
        assert_eq!(LeastKvCache.score(&req, &ps), vec![Some(1.0); 3]);
        ps[0].metrics = Some(metrics(1.0, 0.0, 0.9));
        ps[1].metrics = Some(metrics(1.0, 0.0, 0.2));
        let s = LeastKvCache.score(&req, &ps);
        assert_eq!(
            s[2], None,
            "unknown pod is ineligible once others are known"
        );
        assert!(s[1].unwrap() > s[0].unwrap());
        assert_eq!(pick(&LeastKvCache, &req, &ps).unwrap(), id(1));
    }

    #[test]
    fn least_kv_cache_does_not_herd_between_scrapes() {
        let req = PickRequest::default();
        // Same scrape for all; pod0 already got 6 requests since: it is not first.
        let mut ps = pods(&[6, 0, 0]);
        for p in &mut ps {
            p.metrics = Some(metrics(1.0, 0.0, 0.3));
        }
        assert_ne!(pick(&LeastKvCache, &req, &ps).unwrap(), id(0));
        // A much emptier cache still wins over a little extra load.
        let mut ps = pods(&[1, 0]);
        ps[0].metrics = Some(metrics(1.0, 0.0, 0.05));
        ps[1].metrics = Some(metrics(1.0, 0.0, 0.9));
        assert_eq!(pick(&LeastKvCache, &req, &ps).unwrap(), id(0));
    }

    #[test]
    fn least_latency_uses_estimate_then_falls_back() {
        let req = PickRequest::default();
        let mut ps = pods(&[0, 5, 9]);
        // pod0: (4+4)*0.05+0.5 = 0.9 ; pod1: (1+0)*0.05+0.2 = 0.25 ; pod2: 0*0.1+1.0 = 1.0
        for (p, (r, w, tpot, ttft)) in ps.iter_mut().zip([
            (4.0, 4.0, 0.05, 0.5),
            (1.0, 0.0, 0.05, 0.2),
            (0.0, 0.0, 0.1, 1.0),
        ]) {
            let mut m = metrics(r, w, 0.1);
            m.avg_tpot_seconds = Some(tpot);
            m.avg_ttft_seconds = Some(ttft);
            p.metrics = Some(m);
        }
        let s = LeastLatency.score(&req, &ps);
        assert_eq!(s[1], Some(1.0));
        assert_eq!(s[2], Some(0.0));
        assert!(s[0].unwrap() > 0.0 && s[0].unwrap() < 1.0);
        // One pod without TTFT: everything falls back to in-flight counts.
        ps[1].metrics.as_mut().unwrap().avg_ttft_seconds = None;
        assert_eq!(pick(&LeastLatency, &req, &ps).unwrap(), id(0));
    }

    #[test]
    fn throughput_prefers_least_busy() {
        let req = PickRequest::default();
        let mut ps = pods(&[0, 3, 3]);
        for (p, tps) in ps.iter_mut().zip([900.0, 100.0, 500.0]) {
            let mut m = metrics(1.0, 0.0, 0.1);
            m.generation_tokens_per_second = Some(tps);
            // In flight already when scraped: in the rates.
            m.in_flight_at_scrape = p.in_flight;
            p.metrics = Some(m);
        }
        assert_eq!(
            Throughput.score(&req, &ps),
            vec![Some(0.0), Some(1.0), Some(0.5)]
        );
        ps[2].metrics = None;
        assert_eq!(pick(&Throughput, &req, &ps).unwrap(), id(0));
    }

    /// Picks one scrape apart, each counted in flight as the pool does: how many of `n` went
    /// to each pod.
    fn picks_between_scrapes(strategy: &dyn Picker, ps: &mut [PodState], n: usize) -> Vec<usize> {
        let req = PickRequest::default();
        let mut counts = vec![0; ps.len()];
        for _ in 0..n {
            let at = pick(strategy, &req, ps).unwrap();
            let i = ps.iter().position(|p| p.id == at).unwrap();
            ps[i].in_flight += 1;
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn least_latency_does_not_herd_between_scrapes() {
        // pod0 looks a little faster at the scrape; 40 requests before the next one.
        let mut ps = pods(&[0, 0, 0]);
        for (p, ttft) in ps.iter_mut().zip([0.20, 0.25, 0.30]) {
            let mut m = metrics(4.0, 0.0, 0.1);
            m.avg_tpot_seconds = Some(0.02);
            m.avg_ttft_seconds = Some(ttft);
            p.metrics = Some(m);
        }
        let counts = picks_between_scrapes(&LeastLatency, &mut ps, 40);
        // Each request sent adds 20 ms to its pod's estimate, so the 50 ms head start is
        // worth a few requests, not all of them.
        assert!(counts.iter().all(|&c| c >= 8), "{counts:?}");
        assert!(
            counts[0] > counts[2],
            "the faster pod still gets more: {counts:?}"
        );
    }

    #[test]
    fn throughput_does_not_herd_between_scrapes() {
        let mut ps = pods(&[0, 0, 0]);
        for (p, (running, tps)) in ps.iter_mut().zip([(2.0, 100.0), (4.0, 200.0), (0.0, 0.0)]) {
            let mut m = metrics(running, 0.0, 0.1);
            m.generation_tokens_per_second = Some(tps);
            p.metrics = Some(m);
        }
        let counts = picks_between_scrapes(&Throughput, &mut ps, 30);
        // The idle pod first, but each request adds the pool's 50 tokens/s per request.
        assert!(counts.iter().all(|&c| c >= 5), "{counts:?}");
        assert!(counts[2] > counts[1], "{counts:?}");
        // Every pod idle: no rate to go by, the counts spread the picks evenly.
        let mut ps = pods(&[0, 0]);
        for p in &mut ps {
            let mut m = metrics(0.0, 0.0, 0.0);
            m.generation_tokens_per_second = Some(0.0);
            p.metrics = Some(m);
        }
        assert_eq!(picks_between_scrapes(&Throughput, &mut ps, 10), vec![5, 5]);
    }

    #[test]
    fn requests_in_flight_at_the_scrape_are_not_counted_twice() {
        let mut p = PodState::new("10.0.0.1:8000");
        p.in_flight = 5;
        assert_eq!(p.sent_since_scrape(), 0, "no metrics, nothing to add to");
        let mut m = metrics(5.0, 0.0, 0.1);
        m.in_flight_at_scrape = 5;
        p.metrics = Some(m);
        assert_eq!(p.sent_since_scrape(), 0);
        p.in_flight = 7;
        assert_eq!(p.sent_since_scrape(), 2);
        p.in_flight = 3;
        assert_eq!(
            p.sent_since_scrape(),
            0,
            "finished since: already in the scrape"
        );
    }

    #[test]
    fn session_affinity_sticks_and_falls_back() {
        let sa = SessionAffinity::default();
        let mut ps = pods(&[0, 7, 2]);
        let req = PickRequest {
            session: Some("conv-42"),
            ..Default::default()
        };
        // Unknown session: least-request.
        assert_eq!(pick(&sa, &req, &ps).unwrap(), id(0));
        sa.observe(&req, &id(1));
        for _ in 0..20 {
            assert_eq!(pick(&sa, &req, &ps).unwrap(), id(1));
        }
        // Fallback order after the sticky pod is still least-request.
        assert_eq!(rank(&sa, &req, &ps).unwrap(), vec![id(1), id(0), id(2)]);
        // Other sessions and session-less requests are unaffected.
        let other = PickRequest {
            session: Some("conv-7"),
            ..Default::default()
        };
        assert_eq!(pick(&sa, &other, &ps).unwrap(), id(0));
        assert_eq!(pick(&sa, &PickRequest::default(), &ps).unwrap(), id(0));
        // Sticky pod unhealthy -> least-request; pod removed -> least-request.
        ps[1].healthy = false;
        assert_eq!(pick(&sa, &req, &ps).unwrap(), id(0));
        ps.remove(1);
        assert_eq!(pick(&sa, &req, &ps).unwrap(), id(0));
        sa.forget(&id(1));
        assert_eq!(sa.lookup("conv-42"), None);
    }

    #[test]
    fn session_affinity_is_bounded() {
        let sa = SessionAffinity::with_capacity(3);
        for i in 0..10 {
            let s = format!("s{i}");
            let req = PickRequest {
                session: Some(&s),
                ..Default::default()
            };
            sa.observe(&req, &id(i % 2));
        }
        assert_eq!(sa.lock().len(), 3);
        assert_eq!(sa.lookup("s9"), Some(id(1)));
    }

    #[test]
    fn weighted_combines_and_propagates_ineligibility() {
        let req = PickRequest::default();
        let mut ps = pods(&[0, 1, 0]);
        ps[0].metrics = Some(metrics(0.0, 0.0, 0.8));
        ps[1].metrics = Some(metrics(0.0, 0.0, 0.0));
        let w = Weighted::new(vec![
            (Box::new(LeastKvCache) as Box<dyn Picker>, 3.0),
            (Box::new(LeastRequest), 1.0),
        ]);
        let s = w.score(&req, &ps);
        // least-kv-cache = (1 - kv) × least-request:
        // pod0: (3*0.2*1 + 1*1)/4 = 0.4 ; pod1: (3*1*0.5 + 0.5)/4 = 0.5 ; pod2 ineligible
        assert!((s[0].unwrap() - 0.4).abs() < 1e-9, "{s:?}");
        assert!((s[1].unwrap() - 0.5).abs() < 1e-9, "{s:?}");
        assert_eq!(s[2], None);
        assert_eq!(rank(&w, &req, &ps).unwrap(), vec![id(1), id(0)]);
        let names: Vec<_> = w.parts().collect();
        assert_eq!(names, vec![("least-kv-cache", 3.0), ("least-request", 1.0)]);
    }
}
