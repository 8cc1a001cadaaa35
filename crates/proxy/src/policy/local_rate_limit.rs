//! `localRateLimit` (route phase): token buckets in this process, by requests and by LLM
//! tokens, one bucket per value of a CEL key (per API key, team, user header, model...).
//! No round trip, so each replica counts alone; `rateLimit` is the shared, exact one.
//!
//! A token bucket holds up to `limit` and refills at `limit` per `per`. A request takes one
//! request token; an LLM call takes its estimate (prompt + `max_tokens`) before it is sent
//! and the bucket is trued up with the real usage after (it may go below zero, which delays
//! the next calls instead of refusing a call already made).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cel::{Uses, Var};
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, StatusCode};

use super::api_key::refusal;
use super::{request_cel, PolicyError};
use crate::context::RequestCtx;
use crate::governance::estimate;
use crate::governance::{windows, PhaseEnv};
use crate::pipeline::{Flow, Phase};

/// Buckets kept per limit before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 100_000;
const DEFAULT_MAX_TOKENS: u64 = 1024;

pub struct LocalRateLimit {
    /// The route's name (metric label).
    route: Arc<str>,
    limits: Vec<Arc<Limit>>,
    uses: Uses,
    /// Some limit counts tokens or reads the model: decided once the body is read.
    on_body: bool,
    llm_route: bool,
}

struct Limit {
    key: Option<request_cel::KeyExpr>,
    requests: Option<Rate>,
    tokens: Option<Rate>,
    buckets: Mutex<HashMap<String, Buckets>>,
}

#[derive(Clone, Copy)]
struct Rate {
    limit: f64,
    /// Tokens added per second.
    refill: f64,
}

#[derive(Default)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            level: rate.limit,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * rate.refill).min(rate.limit);
        self.at = now;
    }

    /// Time until `amount` is available (zero when it is now).
    fn wait_for(&self, rate: Rate, amount: f64) -> Duration {
        let missing = amount.min(rate.limit) - self.level;
        match missing > 0.0 {
            true => Duration::from_secs_f64(missing / rate.refill),
            false => Duration::ZERO,
        }
    }
}

/// A limit's state after a request took from it (or when it lacked room), for the
/// `x-ratelimit-*` headers.
struct Shown {
    kind: &'static str,
    limit: u64,
    remaining: u64,
    reset: Duration,
}

impl Shown {
    /// Bucket `i` (0: requests, 1: tokens) at `level`.
    fn of(i: usize, rate: Rate, level: f64) -> Shown {
        Shown {
            kind: if i == 0 { "requests" } else { "tokens" },
            limit: rate.limit as u64,
            remaining: level.max(0.0) as u64,
            reset: Duration::from_secs_f64((rate.limit - level).max(0.0) / rate.refill),
        }
    }

    /// Keeps the tightest of each kind.
    fn keep(self, shown: &mut [Option<Shown>; 2], i: usize) {
        if shown[i]
            .as_ref()
            .is_none_or(|o| self.remaining < o.remaining)
        {
            shown[i] = Some(self);
        }
    }
}

impl LocalRateLimit {
    pub fn compile(c: &[config::LocalRateLimit], env: &PhaseEnv) -> Result<Self, PolicyError> {
        let mut limits = Vec::new();
        let mut uses = Uses::default();
        let mut reads_llm = false;
        let mut reads_a2a = false;
        let mut counts_tokens = false;
        for (i, l) in c.iter().enumerate() {
            let key = l
                .key
                .as_deref()
                .map(request_cel::KeyExpr::compile)
                .transpose()
                .map_err(|e| PolicyError::new(format!("localRateLimit[{i}].key: {e}")))?;
            if let Some(k) = &key {
                reads_llm |= k.expr.uses().var(Var::Llm);
                reads_a2a |= k.expr.uses().var(Var::A2a);
                // Variables are bound only for keys that are not a plain field.
                if k.needs_scope() {
                    uses = uses.union(k.expr.uses());
                }
            }
            let rate = |b: &config::Bucket| Rate {
                limit: b.limit as f64,
                refill: b.limit as f64 / b.per.0.as_secs_f64().max(1e-3),
            };
            counts_tokens |= l.tokens.is_some();
            limits.push(Arc::new(Limit {
                key,
                requests: l.requests.as_ref().map(rate),
                tokens: l.tokens.as_ref().map(rate),
                buckets: Mutex::new(HashMap::new()),
            }));
        }
        Ok(LocalRateLimit {
            route: env.route.clone(),
            limits,
            // A key on the A2A call (`a2a.method`) waits for a JSON-RPC body to name it.
            on_body: (env.llm_route && (counts_tokens || reads_llm))
                || (env.a2a_route && reads_a2a),
            llm_route: env.llm_route,
            uses,
        })
    }

    /// Takes from every bucket the request falls in, or refuses with 429 when one lacks room
    /// (then nothing is taken).
    fn take(&self, ctx: &mut RequestCtx<'_>, req: &Parts, tokens: Option<u64>) -> Flow {
        let scope = self
            .uses
            .any()
            .then(|| request_cel::bindings(ctx, req, self.uses).scope(self.uses));
        let now = Instant::now();
        let mut keyed: Vec<(&Arc<Limit>, String)> = Vec::with_capacity(self.limits.len());
        for l in &self.limits {
            let key = match &l.key {
                Some(k) => match k.value(ctx, req, scope.as_ref()) {
                    Some(k) => k,
                    // No value for this request: this limit does not apply.
                    None => continue,
                },
                None => String::new(),
            };
            keyed.push((l, key));
        }
        let token_amount = tokens.unwrap_or(0) as f64;
        // First pass: is there room everywhere? A refusal shows the buckets that lack it.
        let mut wait = Duration::ZERO;
        let mut short: [Option<Shown>; 2] = [None, None];
        for (l, key) in &keyed {
            let mut buckets = l.buckets.lock().unwrap_or_else(|p| p.into_inner());
            let b = buckets.entry(key.clone()).or_default();
            for (i, (rate, bucket, amount)) in [
                (l.requests, &mut b.requests, 1.0),
                (l.tokens, &mut b.tokens, token_amount),
            ]
            .into_iter()
            .enumerate()
            {
                if let Some(rate) = rate {
                    let bucket = bucket.get_or_insert_with(|| Bucket::full(rate, now));
                    bucket.refill(rate, now);
                    let w = bucket.wait_for(rate, amount);
                    if !w.is_zero() {
                        Shown::of(i, rate, bucket.level).keep(&mut short, i);
                    }
                    wait = wait.max(w);
                }
            }
        }
        let metrics = telemetry::Metrics::global();
        if !wait.is_zero() {
            metrics.limit_decision(&self.route, "localRateLimit", "refused");
            let mut resp = refusal(
                ctx,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate limit exceeded (localRateLimit)".into(),
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
            // Like OpenAI's own 429s (and `rateLimit`'s), the refusal carries `x-ratelimit-*`.
            for s in short.into_iter().flatten() {
                set_rate_headers(ctx, s.kind, s.limit, s.remaining, s.reset);
            }
            return Flow::Respond(resp);
        }
        if !keyed.is_empty() {
            metrics.limit_decision(&self.route, "localRateLimit", "admitted");
        }
        // Second pass: take, and note the tightest limit for the headers.
        let mut shown: [Option<Shown>; 2] = [None, None];
        for (l, key) in &keyed {
            let mut buckets = l.buckets.lock().unwrap_or_else(|p| p.into_inner());
            if buckets.len() > MAX_BUCKETS {
                prune(&mut buckets, l, now);
            }
            let b = buckets.entry(key.clone()).or_default();
            for (i, (rate, bucket, amount)) in [
                (l.requests, &mut b.requests, 1.0),
                (l.tokens, &mut b.tokens, token_amount),
            ]
            .into_iter()
            .enumerate()
            {
                let (Some(rate), Some(bucket)) = (rate, bucket.as_mut()) else {
                    continue;
                };
                bucket.level -= amount;
                Shown::of(i, rate, bucket.level).keep(&mut shown, i);
            }
        }
        for s in shown.into_iter().flatten() {
            set_rate_headers(ctx, s.kind, s.limit, s.remaining, s.reset);
        }
        if let Some(reserved) = tokens.filter(|_| keyed.iter().any(|(l, _)| l.tokens.is_some())) {
            let held: Vec<(Arc<Limit>, String)> = keyed
                .into_iter()
                .filter(|(l, _)| l.tokens.is_some())
                .map(|(l, k)| (l.clone(), k))
                .collect();
            ctx.trail.settlements.push(Box::new(move |rec| {
                let used = used_tokens(rec).unwrap_or(0);
                let back = reserved as f64 - used as f64;
                for (l, key) in held {
                    let mut buckets = l.buckets.lock().unwrap_or_else(|p| p.into_inner());
                    if let (Some(rate), Some(b)) = (
                        l.tokens,
                        buckets.get_mut(&key).and_then(|b| b.tokens.as_mut()),
                    ) {
                        b.refill(rate, Instant::now());
                        b.level = (b.level + back).min(rate.limit);
                    }
                }
            }));
        }
        Flow::Continue
    }
}

/// Drops buckets that are full again (idle keys), so a flood of distinct keys cannot grow
/// the map without bound.
fn prune(buckets: &mut HashMap<String, Buckets>, l: &Limit, now: Instant) {
    buckets.retain(|_, b| {
        let idle = |rate: Option<Rate>, bucket: &mut Option<Bucket>| match (rate, bucket.as_mut()) {
            (Some(rate), Some(bk)) => {
                bk.refill(rate, now);
                bk.level >= rate.limit
            }
            _ => true,
        };
        !(idle(l.requests, &mut b.requests) && idle(l.tokens, &mut b.tokens))
    });
}

/// The tokens a finished call used: the provider's usage when it reported it.
pub(crate) fn used_tokens(rec: &telemetry::RequestRecord) -> Option<u64> {
    let llm = rec.llm.as_ref()?;
    Some(llm.input_tokens.unwrap_or(0) + llm.output_tokens.unwrap_or(0))
}

/// Sets OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` on the response.
pub(crate) fn set_rate_headers(
    ctx: &mut RequestCtx<'_>,
    kind: &str,
    limit: u64,
    remaining: u64,
    reset: Duration,
) {
    let h = ctx.response_headers.get_or_insert_with(HeaderMap::new);
    write_rate_headers(h, kind, limit, remaining, reset);
}

/// OpenAI's rate-limit header names, made once.
static RATE_HEADERS: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];

/// Writes `x-ratelimit-{limit,remaining,reset}-{kind}` (`requests` or `tokens`) into `h`.
pub(crate) fn write_rate_headers(
    h: &mut HeaderMap,
    kind: &str,
    limit: u64,
    remaining: u64,
    reset: Duration,
) {
    let [limit_name, remaining_name, reset_name] = &RATE_HEADERS[usize::from(kind == "tokens")];
    h.insert(limit_name.clone(), HeaderValue::from(limit));
    h.insert(remaining_name.clone(), HeaderValue::from(remaining));
    let reset = HeaderValue::from_str(&windows::reset_text(reset))
        .unwrap_or(HeaderValue::from_static("0s"));
    h.insert(reset_name.clone(), reset);
}

impl Phase for LocalRateLimit {
    fn request_headers(&self, ctx: &mut RequestCtx<'_>, req: &Parts) -> Flow {
        match self.on_body {
            true => Flow::Continue,
            false => self.take(ctx, req, None),
        }
    }

    fn reads_request_body(&self) -> bool {
        self.on_body
    }

    fn request_body(&self, ctx: &mut RequestCtx<'_>, req: &Parts, body: &mut Bytes) -> Flow {
        if !self.llm_route {
            return self.take(ctx, req, None);
        }
        super::read_model(ctx, req, body);
        let tokens = estimate::cached(ctx, req, body, DEFAULT_MAX_TOKENS).map(|e| e.total());
        self.take(ctx, req, tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_limit() {
        let rate = Rate {
            limit: 10.0,
            refill: 10.0,
        };
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        b.level -= 10.0;
        assert_eq!(b.wait_for(rate, 1.0), Duration::from_millis(100));
        b.refill(rate, t0 + Duration::from_millis(500));
        assert!((b.level - 5.0).abs() < 1e-9);
        b.refill(rate, t0 + Duration::from_secs(60));
        assert_eq!(b.level, 10.0, "never above the limit");
        // A request larger than the bucket waits only for a full bucket.
        b.level = 0.0;
        assert_eq!(b.wait_for(rate, 50.0), Duration::from_secs(1));
    }
}
