//! Prometheus metrics (`prometheus-client`), one registry for the process, served as
//! OpenMetrics text on `config.statsAddr` (`/metrics`).
//!
//! Label values are bounded: bind, route and backend names come from the config; status is
//! the numeric code; model names (which clients choose) are capped per metric at
//! [`MAX_MODELS`] distinct values, the rest reported as `other`.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The open-connections gauge of one bind.
pub type OpenGauge = Gauge;

/// Distinct model names a metric reports before the rest become `other`.
pub const MAX_MODELS: usize = 64;

/// A label value shared with the config snapshot: building a label set per request clones
/// reference counts, not strings.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Label(pub Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub bind: Label,
    pub route: Label,
    pub backend: Label,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BindLabels {
    pub bind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub gen_ai_token_type: &'static str,
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: &'static str,
    pub gen_ai_request_model: String,
    pub gen_ai_response_model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GenAiLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: &'static str,
    pub gen_ai_request_model: String,
    pub gen_ai_response_model: String,
    /// Empty when the call succeeded, else the HTTP status class (`4xx`, `5xx`) or `stream`.
    pub error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpLabels {
    pub mcp_method_name: &'static str,
    pub target: String,
    pub gen_ai_tool_name: String,
}

/// An A2A request: the agent (backend name from the config), the operation's v1.0 name and the
/// last task state seen (both from fixed lists; empty when none).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct A2aLabels {
    pub backend: Label,
    pub a2a_method: &'static str,
    pub a2a_task_state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PickLabels {
    pub pool: String,
    /// The strategy's own name (`weighted` for combinations), never the raw header.
    pub strategy: &'static str,
    /// `picked`, `no_pod`, `saturated` or `bad_request`.
    pub outcome: &'static str,
}

/// A guardrail hit: the route's guard (names come from the config), which detector, what was
/// done, and on which side (`request` or `response`). Never the matched text.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardrailLabels {
    pub guard: String,
    pub detector: &'static str,
    pub action: &'static str,
    pub side: &'static str,
}

/// A limit's decision: the route (config), which policy (`localRateLimit`, `rateLimit`,
/// `budgets`, `key`), and `admitted`, `refused`, `store_error` or `over_budget_audit`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub route: Label,
    pub policy: &'static str,
    pub outcome: &'static str,
}

/// A request moved off (or past) a backend: route and backend from the config, and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    pub route: Label,
    pub backend: Label,
    pub reason: &'static str,
}

/// Spend by team (capped like model names; empty without a key) and model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpendLabels {
    pub team: String,
    pub gen_ai_request_model: String,
}

/// Work shed by the overload manager: `request` (answered 503) or `connection` (closed unserved),
/// and the ceiling that was near: `memory` or `connections`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    pub kind: &'static str,
    pub ceiling: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RequestLabels, Histogram>,
    pub upstream_call_duration: Family<BackendLabels, Histogram>,
    pub upstream_connect_duration: Family<UpstreamLabels, Histogram>,
    pub upstream_connect_errors: Family<UpstreamLabels, Counter>,
    pub open_connections: Family<BindLabels, Gauge>,
    pub token_usage: Family<TokenLabels, Histogram>,
    pub operation_duration: Family<GenAiLabels, Histogram>,
    pub time_to_first_token: Family<GenAiLabels, Histogram>,
    pub time_per_output_token: Family<GenAiLabels, Histogram>,
    pub mcp_requests: Family<McpLabels, Counter>,
    pub a2a_requests: Family<A2aLabels, Counter>,
    pub config_reloads: Family<OutcomeLabels, Counter>,
    pub pool_picks: Family<PickLabels, Counter>,
    pub pool_pick_duration: Family<PickLabels, Histogram>,
    pub guardrail_hits: Family<GuardrailLabels, Counter>,
    pub limit_decisions: Family<LimitLabels, Counter>,
    pub failovers: Family<FailoverLabels, Counter>,
    pub overload_shed: Family<ShedLabels, Counter>,
    pub spend: Family<SpendLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub limits_store_errors: Counter,
    pub spans_exported: Counter,
    pub spans_dropped: Counter,
    pub log_lines_dropped: Counter,
    /// Sampled when metrics are served ([`Metrics::sample_process`]).
    runtime_alive_tasks: Gauge,
    resident_memory: Gauge,
    open_fds: Gauge,
    models: RwLock<HashSet<String>>,
    tools: RwLock<HashSet<String>>,
    teams: RwLock<HashSet<String>>,
}

fn seconds_buckets() -> Histogram {
    // 0.5 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

fn token_buckets() -> Histogram {
    // The OpenTelemetry GenAI conventions' advice: 1, 4, 16, ... 4^13.
    Histogram::new(exponential_buckets(1.0, 4.0, 14))
}

fn pick_buckets() -> Histogram {
    // 1 µs .. ~16 ms: picking is meant to take microseconds.
    Histogram::new(exponential_buckets(0.000001, 2.0, 15))
}

fn per_token_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Metrics {
    /// The process's metrics.
    pub fn global() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(Metrics::new)
    }

    fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration =
            Family::<RequestLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> _);
        let upstream_call_duration =
            Family::<BackendLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> _);
        let upstream_connect_duration =
            Family::<UpstreamLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> _);
        let upstream_connect_errors = Family::<UpstreamLabels, Counter>::default();
        let open_connections = Family::<BindLabels, Gauge>::default();
        let token_usage =
            Family::<TokenLabels, Histogram>::new_with_constructor(token_buckets as fn() -> _);
        let operation_duration =
            Family::<GenAiLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> _);
        let time_to_first_token =
            Family::<GenAiLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> _);
        let time_per_output_token =
            Family::<GenAiLabels, Histogram>::new_with_constructor(per_token_buckets as fn() -> _);
        let mcp_requests = Family::<McpLabels, Counter>::default();
        let a2a_requests = Family::<A2aLabels, Counter>::default();
        let config_reloads = Family::<OutcomeLabels, Counter>::default();
        let pool_picks = Family::<PickLabels, Counter>::default();
        let pool_pick_duration =
            Family::<PickLabels, Histogram>::new_with_constructor(pick_buckets as fn() -> _);
        let guardrail_hits = Family::<GuardrailLabels, Counter>::default();
        let limit_decisions = Family::<LimitLabels, Counter>::default();
        let failovers = Family::<FailoverLabels, Counter>::default();
        let overload_shed = Family::<ShedLabels, Counter>::default();
        let spend = Family::<SpendLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        let limits_store_errors = Counter::default();
        let spans_exported = Counter::default();
        let spans_dropped = Counter::default();
        let log_lines_dropped = Counter::default();
        let runtime_alive_tasks = Gauge::default();
        let resident_memory = Gauge::default();
        let open_fds = Gauge::default();

        let sy = registry.sub_registry_with_prefix("switchyard");
        sy.register(
            "requests",
            "Requests served, by bind, route, backend and status",
            requests.clone(),
        );
        sy.register_with_unit(
            "request_duration",
            "Time from request to the end of the response body",
            Unit::Seconds,
            request_duration.clone(),
        );
        sy.register_with_unit(
            "upstream_call_duration",
            "Time from sending to an upstream to its response headers",
            Unit::Seconds,
            upstream_call_duration.clone(),
        );
        sy.register_with_unit(
            "upstream_connect_duration",
            "Time to open a connection (TCP and TLS) to an upstream",
            Unit::Seconds,
            upstream_connect_duration.clone(),
        );
        sy.register(
            "upstream_connect_errors",
            "Upstream connections that could not be opened",
            upstream_connect_errors.clone(),
        );
        sy.register(
            "downstream_connections_open",
            "Client connections open now",
            open_connections.clone(),
        );
        sy.register(
            "mcp_requests",
            "MCP requests, by method, target and tool",
            mcp_requests.clone(),
        );
        sy.register(
            "a2a_requests",
            "A2A requests, by agent, operation and last task state",
            a2a_requests.clone(),
        );
        sy.register(
            "config_reloads",
            "Config reloads, by outcome",
            config_reloads.clone(),
        );
        sy.register(
            "pool_picks",
            "Endpoint picks for model pools, by pool, strategy and outcome",
            pool_picks.clone(),
        );
        sy.register_with_unit(
            "pool_pick_duration",
            "Time to parse a request and rank a pool's pods",
            Unit::Seconds,
            pool_pick_duration.clone(),
        );
        sy.register(
            "guardrail_hits",
            "Guardrail matches, by guard, detector, action (reject, mask, audit) and side",
            guardrail_hits.clone(),
        );
        sy.register(
            "limit_decisions",
            "Rate-limit and budget decisions, by route, policy and outcome",
            limit_decisions.clone(),
        );
        sy.register(
            "failovers",
            "Backends a request left or skipped under failover, by route, backend and reason",
            failovers.clone(),
        );
        sy.register(
            "overload_shed",
            "Requests (answered 503) and connections (closed unserved) shed near an overload ceiling, by kind and ceiling",
            overload_shed.clone(),
        );
        sy.register_with_unit(
            "llm_spend",
            "Money spent on LLM calls (price table x provider usage), by team and model",
            Unit::Other("usd".into()),
            spend.clone(),
        );
        sy.register(
            "limits_store_errors",
            "Round trips to the limits store (Redis) that failed or timed out",
            limits_store_errors.clone(),
        );
        sy.register(
            "trace_spans_exported",
            "Spans delivered to the OTLP collector",
            spans_exported.clone(),
        );
        sy.register(
            "trace_spans_dropped",
            "Spans dropped: export queue full, or the collector failed",
            spans_dropped.clone(),
        );
        sy.register(
            "access_log_lines_dropped",
            "Access log lines dropped because the writer fell behind",
            log_lines_dropped.clone(),
        );
        sy.register(
            "runtime_alive_tasks",
            "Tokio tasks alive in the gateway's runtime (connections, requests, background work)",
            runtime_alive_tasks.clone(),
        );
        // The usual process collector's names, for the soak's leak checks.
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory size",
            Unit::Bytes,
            resident_memory.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            open_fds.clone(),
        );
        // The OpenTelemetry GenAI metrics, under their conventional names.
        registry.register_with_unit(
            "gen_ai_client_token_usage",
            "Tokens used per LLM call, by type (input, output)",
            Unit::Other("token".into()),
            token_usage.clone(),
        );
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "Duration of LLM calls",
            Unit::Seconds,
            operation_duration.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time to the first output token of streamed LLM calls",
            Unit::Seconds,
            time_to_first_token.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Time per output token after the first, of streamed LLM calls",
            Unit::Seconds,
            time_per_output_token.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_call_duration,
            upstream_connect_duration,
            upstream_connect_errors,
            open_connections,
            token_usage,
            operation_duration,
            time_to_first_token,
            time_per_output_token,
            mcp_requests,
            a2a_requests,
            config_reloads,
            pool_picks,
            pool_pick_duration,
            guardrail_hits,
            limit_decisions,
            failovers,
            overload_shed,
            spend,
            limits_store_errors,
            spans_exported,
            spans_dropped,
            log_lines_dropped,
            runtime_alive_tasks,
            resident_memory,
            open_fds,
            models: RwLock::new(HashSet::new()),
            tools: RwLock::new(HashSet::new()),
            teams: RwLock::new(HashSet::new()),
        }
    }

    /// Samples the process gauges: tasks alive in the calling thread's tokio runtime, and
    /// (on Linux) resident memory and open descriptors from `/proc/self`.
    pub fn sample_process(&self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.runtime_alive_tasks
                .set(rt.metrics().num_alive_tasks() as i64);
        }
        if let Some(kb) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            })
        {
            self.resident_memory.set(kb * 1024);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries.
            self.open_fds.set(dir.count() as i64 - 1);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A model name as a label value: itself while fewer than [`MAX_MODELS`] have been seen,
    /// `other` after that.
    pub fn model_label(&self, model: Option<&str>) -> String {
        capped(&self.models, model)
    }

    /// A tool name as a label value, capped like model names.
    pub fn tool_label(&self, tool: Option<&str>) -> String {
        capped(&self.tools, tool)
    }

    /// One limit decision.
    pub fn limit_decision(&self, route: &Arc<str>, policy: &'static str, outcome: &'static str) {
        self.limit_decisions
            .get_or_create(&LimitLabels {
                route: Label(route.clone()),
                policy,
                outcome,
            })
            .inc();
    }

    /// A backend left or skipped under failover.
    pub fn failover(&self, route: &Arc<str>, backend: &Arc<str>, reason: &'static str) {
        self.failovers
            .get_or_create(&FailoverLabels {
                route: Label(route.clone()),
                backend: Label(backend.clone()),
                reason,
            })
            .inc();
    }

    /// Money a settled LLM call cost.
    pub fn spent(&self, team: Option<&str>, model: Option<&str>, usd: f64) {
        if usd <= 0.0 {
            return;
        }
        self.spend
            .get_or_create(&SpendLabels {
                team: capped(&self.teams, team),
                gen_ai_request_model: self.model_label(model),
            })
            .inc_by(usd);
    }

    pub fn observe_connect(&self, upstream: &Arc<str>, took: Duration, ok: bool) {
        let labels = UpstreamLabels {
            upstream: upstream.to_string(),
        };
        if ok {
            self.upstream_connect_duration
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
        } else {
            self.upstream_connect_errors.get_or_create(&labels).inc();
        }
    }

    /// One endpoint pick (gateway pool backend or ext_proc).
    pub fn observe_pick(
        &self,
        pool: &str,
        strategy: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        let labels = PickLabels {
            pool: pool.to_string(),
            strategy,
            outcome,
        };
        self.pool_picks.get_or_create(&labels).inc();
        self.pool_pick_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn reload(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&OutcomeLabels {
                outcome: if ok { "success" } else { "failure" },
            })
            .inc();
    }
}

/// `value` while fewer than [`MAX_MODELS`] distinct values have been seen in `seen`, else
/// `other`; clients choose these strings, so they must not grow the label set without bound.
fn capped(seen_set: &RwLock<HashSet<String>>, value: Option<&str>) -> String {
    let Some(value) = value.filter(|m| !m.is_empty()) else {
        return String::new();
    };
    {
        let seen = seen_set.read().unwrap_or_else(|p| p.into_inner());
        if seen.contains(value) {
            return value.to_string();
        }
        if seen.len() >= MAX_MODELS {
            return "other".to_string();
        }
    }
    let mut seen = seen_set.write().unwrap_or_else(|p| p.into_inner());
    if seen.len() >= MAX_MODELS && !seen.contains(value) {
        return "other".to_string();
    }
    seen.insert(value.to_string());
    value.to_string()
}

/// An MCP method as a label value: the methods of the MCP specification, else `other`.
pub fn mcp_method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
        "GET",
        "DELETE",
    ];
    KNOWN
        .iter()
        .find(|k| **k == method)
        .copied()
        .unwrap_or("other")
}
