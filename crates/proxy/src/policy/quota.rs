//! `rateLimit` and `budgets` (route phase), and the limits and budget an API key carries:
//! every counter a request charges, checked and charged in the shared store in one atomic
//! round trip (see `governance::store`), so N replicas admit exactly what one would.
//!
//! - Requests are counted when admitted.
//! - Tokens and money are **reserved before the call**: the prompt counted with the
//!   gateway's tokenizer plus the completion's ceiling (`max_tokens`, else
//!   `budgets.defaultMaxTokens`), priced by the model's entry in the price table.
//! - **Settled after**, off the request path, with the provider's usage: what was not used
//!   goes back. A call that failed (4xx/5xx, no answer) is refunded whole; a stream that broke
//!   off without usage is charged its prompt plus the completion text it delivered (counted
//!   with the tokenizer; bytes / 4 when the text was not seen), at most the ceiling; a
//!   success without usage keeps the reservation.
//! - Usage (requests, tokens, spend) per key, team, org and model is added to day and month
//!   records, which the admin API's `GET /usage` reads.
//!
//! Budgets nest: a call must fit its key's, its team's and its org's budget at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cel::Uses;
use http::header::{HeaderValue, RETRY_AFTER};
use http::request::Parts;
use http::StatusCode;

use super::api_key::refusal;
use super::local_rate_limit::set_rate_headers;
use super::{request_cel, PolicyError};
use crate::context::RequestCtx;
use crate::governance::estimate::Estimate;
use crate::governance::prices::PriceTable;
use crate::governance::usage::{Counts, Dim};
use crate::governance::{windows, Charge, PhaseEnv, Shared};
use crate::pipeline::{Flow, Phase, PhaseFuture};

const DEFAULT_MAX_TOKENS: u64 = 1024;

/// The usage lines of one call: key, team, org, model.
type UsageDims = Vec<Dim>;
const DEFAULT_KEY_WINDOW: Duration = Duration::from_secs(60);

pub struct Quota {
    shared: Arc<Shared>,
    /// The route's name (metric label).
    route: Arc<str>,
    limits: Vec<SharedLimit>,
    rate_fail_open: bool,
    budgets: Budgets,
    prices: Arc<PriceTable>,
    uses: Uses,
    /// LLM route: charges are made once the body is read (tokens, model).
    llm_route: bool,
}

struct SharedLimit {
    name: Arc<str>,
    key: Option<request_cel::KeyExpr>,
    requests: Option<u64>,
    tokens: Option<u64>,
    window: Duration,
}

#[derive(Default)]
struct Budgets {
    enforce: bool,
    fail_open: bool,
    default_max_tokens: u64,
    key: Option<config::Budget>,
    teams: std::collections::BTreeMap<String, config::Budget>,
    orgs: std::collections::BTreeMap<String, config::Budget>,
}

/// What a charge is, for answers and settlement.
#[derive(Clone)]
struct Meta {
    /// Named in a refusal: `rate limit "per-key"`, `team "research" budget (day)`.
    label: String,
    unit: Unit,
    budget: bool,
    /// The policy it comes from (metric label): `rateLimit`, `budgets` or `key`.
    policy: &'static str,
    /// Refused past `limit`; else (audit) only logged.
    limit: u64,
    fail_open: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Requests,
    Tokens,
    Micros,
}

impl Quota {
    /// `None` when nothing on the route is counted (no limits, budgets or keys).
    pub fn compile(p: &config::Policies, env: &PhaseEnv) -> Result<Option<Quota>, PolicyError> {
        if p.rate_limit.is_none() && p.budgets.is_none() && p.api_key_auth.is_none() {
            return Ok(None);
        }
        let mut uses = Uses::default();
        let mut limits = Vec::new();
        for (i, l) in p.rate_limit.iter().flat_map(|r| &r.limits).enumerate() {
            let key = l
                .key
                .as_deref()
                .map(request_cel::KeyExpr::compile)
                .transpose()
                .map_err(|e| PolicyError::new(format!("rateLimit.limits[{i}].key: {e}")))?;
            if let Some(k) = key.as_ref().filter(|k| k.needs_scope()) {
                uses = uses.union(k.expr.uses());
            }
            limits.push(SharedLimit {
                name: l.name.as_str().into(),
                key,
                requests: l.requests,
                tokens: l.tokens,
                window: l.window.0,
            });
        }
        let budgets = match &p.budgets {
            Some(b) => Budgets {
                enforce: b.mode != Some(config::BudgetMode::Audit),
                fail_open: b.fail_open,
                default_max_tokens: b.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
                key: b.key.clone(),
                teams: b.teams.clone(),
                orgs: b.orgs.clone(),
            },
            None => Budgets {
                enforce: true,
                default_max_tokens: DEFAULT_MAX_TOKENS,
                ..Default::default()
            },
        };
        let empty = Default::default();
        Ok(Some(Quota {
            shared: env.governance.clone(),
            route: env.route.clone(),
            limits,
            rate_fail_open: p.rate_limit.as_ref().is_some_and(|r| r.fail_open),
            budgets,
            prices: Arc::new(PriceTable::new(
                p.budgets.as_ref().map_or(&empty, |b| &b.prices),
            )),
            uses,
            llm_route: env.llm_route,
        }))
    }

    /// The counters this request charges, with what each one is.
    fn charges(
        &self,
        ctx: &RequestCtx<'_>,
        req: &Parts,
        est: Option<Estimate>,
    ) -> (Vec<Charge>, Vec<Meta>) {
        let prefix = &self.shared.prefix;
        let tokens = est.map_or(0, |e| e.total()) as i64;
        let mut charges = Vec::new();
        let mut metas = Vec::new();
        let mut push = |key: String, amount: i64, limit: u64, ttl: Duration, meta: Meta| {
            charges.push(Charge {
                key: key.into(),
                amount,
                limit: (!meta.budget || self.budgets.enforce).then_some(limit as i64),
                ttl,
            });
            metas.push(meta);
        };
        let scope = self
            .uses
            .any()
            .then(|| request_cel::bindings(ctx, req, self.uses).scope(self.uses));
        for l in &self.limits {
            let value = match &l.key {
                Some(k) => match k.value(ctx, req, scope.as_ref()) {
                    Some(v) => key_part(&v),
                    None => continue,
                },
                None => "-".to_string(),
            };
            let (index, ttl) = windows::fixed(l.window);
            let meta = |unit, limit| Meta {
                label: format!("rate limit {:?}", &*l.name),
                unit,
                budget: false,
                policy: "rateLimit",
                limit,
                fail_open: self.rate_fail_open,
            };
            if let Some(n) = l.requests {
                push(
                    format!("{prefix}:rl:{}:{value}:{index}", l.name),
                    1,
                    n,
                    ttl,
                    meta(Unit::Requests, n),
                );
            }
            if let (Some(n), Some(_)) = (l.tokens, est) {
                push(
                    format!("{prefix}:rlt:{}:{value}:{index}", l.name),
                    tokens,
                    n,
                    ttl,
                    meta(Unit::Tokens, n),
                );
            }
        }
        let Some(entry) = &ctx.identity.key_limits else {
            return (charges, metas);
        };
        let info = &entry.info;
        let key_id = key_part(info.id.as_deref().unwrap_or(&info.name));
        if let Some(r) = &entry.rate_limit {
            let (index, ttl) = windows::fixed(r.window.map_or(DEFAULT_KEY_WINDOW, |d| d.0));
            let meta = |unit, limit| Meta {
                label: format!("rate limit of the API key {:?}", &*info.name),
                unit,
                budget: false,
                policy: "key",
                limit,
                fail_open: self.rate_fail_open,
            };
            if let Some(n) = r.requests {
                push(
                    format!("{prefix}:rl:key:{key_id}:{index}"),
                    1,
                    n,
                    ttl,
                    meta(Unit::Requests, n),
                );
            }
            if let (Some(n), Some(_)) = (r.tokens, est) {
                push(
                    format!("{prefix}:rlt:key:{key_id}:{index}"),
                    tokens,
                    n,
                    ttl,
                    meta(Unit::Tokens, n),
                );
            }
        }
        let Some(est) = est else {
            return (charges, metas);
        };
        let cost = ctx
            .model
            .as_deref()
            .and_then(|m| self.prices.cost_micros(m, est.input, 0, est.output))
            .unwrap_or(0);
        let levels = [
            (
                "key",
                Some(key_id.clone()),
                entry.budget.as_ref().or(self.budgets.key.as_ref()),
            ),
            (
                "team",
                info.team.as_deref().map(key_part),
                info.team.as_deref().and_then(|t| self.budgets.teams.get(t)),
            ),
            (
                "org",
                info.org.as_deref().map(key_part),
                info.org.as_deref().and_then(|o| self.budgets.orgs.get(o)),
            ),
        ];
        for (scope_name, name, budget) in levels {
            let (Some(name), Some(b)) = (name, budget) else {
                continue;
            };
            let (period, left) = windows::calendar(b.window);
            // Kept an hour past the period, so a late settlement still finds it.
            let ttl = left + Duration::from_secs(3600);
            let shown = match scope_name {
                "key" => info.name.to_string(),
                "team" => info.team.as_deref().unwrap_or_default().to_string(),
                _ => info.org.as_deref().unwrap_or_default().to_string(),
            };
            let window = format!("{:?}", b.window).to_lowercase();
            let meta = |unit, limit| Meta {
                label: format!("{scope_name} {shown:?} budget ({window})"),
                unit,
                budget: true,
                policy: "budgets",
                limit,
                fail_open: self.budgets.fail_open,
            };
            if let Some(n) = b.tokens {
                push(
                    format!("{prefix}:budget:{scope_name}:{name}:tokens:{period}"),
                    tokens,
                    n,
                    ttl,
                    meta(Unit::Tokens, n),
                );
            }
            if let Some(usd) = b.cost {
                let micros = (usd * 1e6).round() as u64;
                push(
                    format!("{prefix}:budget:{scope_name}:{name}:cost:{period}"),
                    cost,
                    micros,
                    ttl,
                    meta(Unit::Micros, micros),
                );
            }
        }
        (charges, metas)
    }

    /// Reserves the request's charges; answers 429 (or 503 when the store is unreachable and
    /// a limit fails closed); on admission arranges the settlement.
    async fn admit(&self, ctx: &mut RequestCtx<'_>, req: &Parts, est: Option<Estimate>) -> Flow {
        let (charges, metas) = self.charges(ctx, req, est);
        let mut reserved = Vec::new();
        if !charges.is_empty() {
            match self.shared.store.reserve(&charges).await {
                Err(e) => {
                    warn_store_down(&e.0);
                    metrics().limit_decision(&self.route, "shared", "store_error");
                    if !metas.iter().all(|m| m.fail_open) {
                        return Flow::Respond(refusal(
                            ctx,
                            StatusCode::SERVICE_UNAVAILABLE,
                            "limits_unavailable",
                            "the rate-limit store cannot be reached".into(),
                        ));
                    }
                }
                Ok(r) => {
                    if let Some(i) = r.refused {
                        metrics().limit_decision(&self.route, metas[i].policy, "refused");
                        return Flow::Respond(self.refused(ctx, &metas, &r.counters, i));
                    }
                    metrics().limit_decision(&self.route, "shared", "admitted");
                    self.show(ctx, &metas, &r.counters);
                    for (i, m) in metas.iter().enumerate() {
                        if m.budget && r.counters[i].0 as u64 > m.limit && !self.budgets.enforce {
                            tracing::warn!(budget = %m.label, "over budget (audit mode: admitted)");
                            metrics().limit_decision(&self.route, "budgets", "over_budget_audit");
                        }
                        if m.unit != Unit::Requests {
                            reserved.push((
                                charges[i].key.clone(),
                                charges[i].amount,
                                charges[i].ttl,
                                m.unit,
                            ));
                        }
                    }
                }
            }
        }
        self.arrange_settlement(ctx, est, reserved);
        Flow::Continue
    }

    fn refused(
        &self,
        ctx: &RequestCtx<'_>,
        metas: &[Meta],
        counters: &[(i64, Duration)],
        i: usize,
    ) -> http::Response<crate::body::Body> {
        let m = &metas[i];
        let (code, what) = match m.budget {
            true => ("budget_exceeded", "the call does not fit the"),
            false => ("rate_limited", "over the"),
        };
        let mut resp = refusal(
            ctx,
            StatusCode::TOO_MANY_REQUESTS,
            code,
            format!("{what} {}", m.label),
        );
        let secs = counters[i].1.as_secs_f64().ceil().max(1.0) as u64;
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
        if !m.budget {
            let kind = if m.unit == Unit::Requests {
                "requests"
            } else {
                "tokens"
            };
            super::local_rate_limit::write_rate_headers(
                resp.headers_mut(),
                kind,
                m.limit,
                0,
                counters[i].1,
            );
        }
        resp
    }

    /// `x-ratelimit-*` for the tightest rate limit of each kind.
    fn show(&self, ctx: &mut RequestCtx<'_>, metas: &[Meta], counters: &[(i64, Duration)]) {
        for (kind, unit) in [("requests", Unit::Requests), ("tokens", Unit::Tokens)] {
            let tightest = metas
                .iter()
                .zip(counters)
                .filter(|(m, _)| !m.budget && m.unit == unit)
                .map(|(m, (v, ttl))| (m.limit, m.limit.saturating_sub((*v).max(0) as u64), *ttl))
                .min_by_key(|(_, remaining, _)| *remaining);
            if let Some((limit, remaining, reset)) = tightest {
                set_rate_headers(ctx, kind, limit, remaining, reset);
            }
        }
    }

    /// At the end of the exchange: true up the reservations and add the usage records.
    fn arrange_settlement(
        &self,
        ctx: &mut RequestCtx<'_>,
        est: Option<Estimate>,
        reserved: Vec<(Arc<str>, i64, Duration, Unit)>,
    ) {
        let key = ctx.identity.api_key.clone();
        if key.is_none() && est.is_none() && reserved.is_empty() {
            return;
        }
        let store = self.shared.store.clone();
        let usage = self.shared.usage.clone();
        let prices = self.prices.clone();
        let model = ctx.model.clone();
        ctx.trail.settlements.push(Box::new(move |rec| {
            let used = Used::of(rec, est);
            let model = rec
                .llm
                .as_ref()
                .and_then(|l| l.response_model.clone().or(l.request_model.clone()))
                .or(model);
            let cost = model
                .as_deref()
                .and_then(|m| prices.cost_micros(m, used.input, used.cached, used.output))
                .unwrap_or(0);
            metrics().spent(
                key.as_ref().and_then(|k| k.team.as_deref()),
                model.as_deref(),
                cost as f64 / 1e6,
            );
            let mut dims: UsageDims = UsageDims::new();
            if let Some(k) = &key {
                dims.push(Dim::Key(k.name.clone()));
                dims.extend(k.team.clone().map(Dim::Team));
                dims.extend(k.org.clone().map(Dim::Org));
            }
            dims.extend(model.map(|m| Dim::Model(m.into())));
            usage.add(
                &dims,
                Counts {
                    requests: 1,
                    input: used.input as i64,
                    output: used.output as i64,
                    cached: used.cached as i64,
                    cost_micros: cost,
                },
            );
            let adjustments: Vec<crate::governance::Adjustment> = reserved
                .into_iter()
                .filter_map(|(k, amount, ttl, unit)| {
                    let actual = match unit {
                        Unit::Tokens => (used.input + used.output) as i64,
                        Unit::Micros => cost,
                        Unit::Requests => return None,
                    };
                    (actual != amount).then(|| (k, actual - amount, ttl))
                })
                .collect();
            if adjustments.is_empty() {
                return;
            }
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            // Trued up off the request path: one round trip, after the response.
            rt.spawn(async move {
                if let Err(e) = store.adjust(&adjustments).await {
                    warn_store_down(&e.0);
                }
            });
        }));
    }

    /// Whether this request may charge a counter (then the charges are worked out, once, in
    /// the round trip's future): a shared limit, the key's own limit, or, with an estimate, a
    /// budget of its key, team or org.
    fn may_charge(&self, ctx: &RequestCtx<'_>, estimated: bool) -> bool {
        if !self.limits.is_empty() {
            return true;
        }
        let Some(entry) = &ctx.identity.key_limits else {
            return false;
        };
        entry.rate_limit.is_some() || (estimated && self.counts_tokens(ctx))
    }

    /// Whether some counter of this request is in tokens or money (then the call is estimated
    /// before it is made).
    fn counts_tokens(&self, ctx: &RequestCtx<'_>) -> bool {
        if self.limits.iter().any(|l| l.tokens.is_some()) || self.budgets.key.is_some() {
            return true;
        }
        let Some(entry) = &ctx.identity.key_limits else {
            return false;
        };
        let info = &entry.info;
        entry.budget.is_some()
            || entry
                .rate_limit
                .as_ref()
                .is_some_and(|r| r.tokens.is_some())
            || info
                .team
                .as_deref()
                .is_some_and(|t| self.budgets.teams.contains_key(t))
            || info
                .org
                .as_deref()
                .is_some_and(|o| self.budgets.orgs.contains_key(o))
    }

    /// The request's token estimate, made once per request (other policies share it).
    fn estimate(&self, ctx: &mut RequestCtx<'_>, req: &Parts, body: &[u8]) -> Option<Estimate> {
        crate::governance::estimate::cached(ctx, req, body, self.budgets.default_max_tokens)
    }
}

/// What a finished call used, by the rules in the module doc.
#[derive(Debug, Default, PartialEq)]
struct Used {
    input: u64,
    cached: u64,
    output: u64,
}

impl Used {
    fn of(rec: &telemetry::RequestRecord, est: Option<Estimate>) -> Used {
        let reported = rec
            .llm
            .as_ref()
            .filter(|l| l.input_tokens.is_some() || l.output_tokens.is_some());
        if let Some(l) = reported {
            return Used {
                input: l.input_tokens.unwrap_or(0),
                cached: l.cached_input_tokens.unwrap_or(0),
                output: l.output_tokens.unwrap_or(0),
            };
        }
        let est = est.unwrap_or_default();
        if rec.status == 0 || rec.status >= 400 {
            return Used::default();
        }
        let interrupted = rec.llm.as_ref().is_some_and(|l| l.interrupted);
        if rec.aborted || interrupted {
            // The text that reached the client when the gateway saw it, else (none, or more
            // than `maxRecordedTextBytes` of it, which was not all kept) its bytes / 4.
            let cap = llm::recorded_text_cap();
            let streamed = rec
                .llm
                .as_ref()
                .filter(|l| l.completion.iter().all(|t| t.len() < cap))
                .map(|l| {
                    l.completion
                        .iter()
                        .map(|t| llm::count_text_tokens(t))
                        .sum::<u64>()
                })
                .filter(|n| *n > 0)
                .unwrap_or(rec.bytes_out / 4);
            return Used {
                input: est.input,
                cached: 0,
                output: streamed.min(est.output),
            };
        }
        Used {
            input: est.input,
            cached: 0,
            output: est.output,
        }
    }
}

/// A CEL value or name as part of a store key: kept when short and plain, hashed otherwise
/// (a header value can be anything).
fn key_part(v: &str) -> String {
    let plain = v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    match plain {
        true => v.to_string(),
        false => hex::encode(&crate::governance::keys::hash_key(v)[..16]),
    }
}

fn metrics() -> &'static telemetry::Metrics {
    telemetry::Metrics::global()
}

/// Logs that the store is down (at most every 10 s) and counts it.
fn warn_store_down(error: &str) {
    metrics().limits_store_errors.inc();
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error, "rate-limit store unavailable");
    }
}

impl Phase for Quota {
    fn request_headers(&self, ctx: &mut RequestCtx<'_>, _req: &Parts) -> Flow {
        if self.llm_route {
            return Flow::Continue;
        }
        // No round trip (nor a future) when nothing is counted for this request.
        if !self.may_charge(ctx, false) {
            self.arrange_settlement(ctx, None, Vec::new());
            return Flow::Continue;
        }
        Flow::Wait
    }

    fn request_headers_async<'a>(
        &'a self,
        ctx: &'a mut RequestCtx<'_>,
        req: &'a Parts,
    ) -> PhaseFuture<'a> {
        Box::pin(self.admit(ctx, req, None))
    }

    fn reads_request_body(&self) -> bool {
        self.llm_route
    }

    fn request_body(&self, ctx: &mut RequestCtx<'_>, req: &Parts, body: &mut Bytes) -> Flow {
        super::read_model(ctx, req, body);
        let est = match self.counts_tokens(ctx) {
            true => self.estimate(ctx, req, body),
            // Nothing charges tokens: the tokenizer is not run (usage is still recorded).
            false => None,
        };
        if !self.may_charge(ctx, est.is_some()) {
            self.arrange_settlement(ctx, est, Vec::new());
            return Flow::Continue;
        }
        Flow::Wait
    }

    fn request_body_async<'a>(
        &'a self,
        ctx: &'a mut RequestCtx<'_>,
        req: &'a Parts,
        body: &'a mut Bytes,
    ) -> PhaseFuture<'a> {
        let est = match self.counts_tokens(ctx) {
            true => self.estimate(ctx, req, body),
            false => None,
        };
        Box::pin(self.admit(ctx, req, est))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: u16, aborted: bool, usage: Option<(u64, u64)>) -> telemetry::RequestRecord {
        let mut r = telemetry::RequestRecord::new(
            http::Method::POST,
            "/v1/chat/completions".parse().unwrap(),
            http::Version::HTTP_11,
            "127.0.0.1:1".parse().unwrap(),
            "b".into(),
        );
        r.status = status;
        r.aborted = aborted;
        r.bytes_out = 400;
        if let Some((i, o)) = usage {
            r.llm = Some(telemetry::LlmRecord {
                input_tokens: Some(i),
                output_tokens: Some(o),
                ..Default::default()
            });
        }
        r
    }

    #[test]
    fn settlement_charges_usage_refunds_failures_and_bounds_broken_streams() {
        let est = Some(Estimate {
            input: 50,
            output: 1000,
            bounded: true,
        });
        let u = |status, aborted, usage| Used::of(&record(status, aborted, usage), est);
        assert_eq!(
            u(200, false, Some((40, 7))),
            Used {
                input: 40,
                cached: 0,
                output: 7
            }
        );
        assert_eq!(
            u(429, false, None),
            Used::default(),
            "a refused call costs nothing"
        );
        assert_eq!(u(0, true, None), Used::default(), "no answer at all");
        // Broke off mid-stream after 400 bytes: the prompt plus 100 tokens.
        assert_eq!(
            u(200, true, None),
            Used {
                input: 50,
                cached: 0,
                output: 100
            }
        );
        // A success without usage keeps the reservation.
        assert_eq!(
            u(200, false, None),
            Used {
                input: 50,
                cached: 0,
                output: 1000
            }
        );
    }

    #[test]
    fn key_parts_are_plain_or_hashed() {
        assert_eq!(key_part("alice"), "alice");
        assert_eq!(key_part("a:b").len(), 32);
        assert_eq!(key_part(&"x".repeat(100)).len(), 32);
    }
}
