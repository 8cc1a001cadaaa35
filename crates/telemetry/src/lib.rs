//! Switchyard's telemetry: the access log ([`access`]), OTLP traces ([`trace`]) and
//! Prometheus metrics ([`metrics`]), all fed from one [`RequestRecord`] per request, handed
//! over when the response body ends ([`Telemetry::finish`]).

pub mod access;
mod fields;
pub mod metrics;
mod otlp;
mod record;
mod stats;
pub mod trace;

use std::collections::HashSet;

use cel::{Expression, Uses};

pub use metrics::Metrics;
pub use record::{A2aRecord, ApiKeyInfo, FailoverStep, LlmRecord, McpRecord, RequestRecord};
pub use stats::serve_metrics;
pub use trace::{ExporterCache, TraceContext, Tracer};

/// The telemetry a config asks for, compiled once per config snapshot.
pub struct Telemetry {
    access: Option<access::AccessLog>,
    tracer: Option<Tracer>,
    uses: Uses,
}

impl Telemetry {
    /// Metrics only: no access log, no traces.
    pub fn metrics_only() -> Telemetry {
        Telemetry {
            access: None,
            tracer: None,
            uses: Uses::default(),
        }
    }

    pub fn compile(
        cfg: &config::GlobalConfig,
        exporters: &ExporterCache,
    ) -> Result<Telemetry, String> {
        let access = access::AccessLog::compile(cfg.logging.as_ref())?;
        let tracer = cfg
            .tracing
            .as_ref()
            .map(|t| Tracer::compile(t, exporters))
            .transpose()?;
        let uses = access
            .as_ref()
            .map(|a| a.uses())
            .unwrap_or_default()
            .union(tracer.as_ref().map(|t| t.uses()).unwrap_or_default());
        Ok(Telemetry {
            access,
            tracer,
            uses,
        })
    }

    /// What the configured expressions read: the proxy keeps request and response headers
    /// and bodies only when this says so.
    pub fn uses(&self) -> Uses {
        self.uses
    }

    pub fn tracer(&self) -> Option<&Tracer> {
        self.tracer.as_ref()
    }

    /// Whether the access log or tracing is on (metrics always are).
    pub fn records_requests(&self) -> bool {
        self.access.is_some() || self.tracer.is_some()
    }

    /// The request's response body has ended (or the request failed): metrics, the access
    /// log line and the span. `elapsed`: the request's duration, read once by the caller when
    /// its response ended (this may run later), so metrics, log line and span agree on it.
    pub fn finish(&self, rec: RequestRecord, elapsed: std::time::Duration) {
        observe_metrics(&rec, elapsed);
        if !self.records_requests() {
            return;
        }
        let mut evals = Evaluations::new(&rec, self.uses);
        if let Some(a) = &self.access {
            a.emit(&rec, elapsed, &mut evals);
        }
        if let Some(t) = &self.tracer {
            t.record(&rec, elapsed, &mut evals);
        }
    }
}

/// A field expression's value on one request: borrowed from the record when the expression
/// is a plain field selection (`llm.provider`: no string copied), else as CEL gave it.
#[derive(Clone, Debug)]
pub(crate) enum Computed<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Cel(cel::Value),
}

impl Computed<'_> {
    /// As a CEL value (for the tests that hold the shortcut to CEL's answer).
    #[cfg(test)]
    pub(crate) fn to_value(&self) -> cel::Value {
        match self {
            Computed::Str(s) => cel::Value::from(s.to_string()),
            Computed::Int(n) => cel::Value::Int(*n),
            Computed::Bool(b) => cel::Value::Bool(*b),
            Computed::Cel(v) => v.clone(),
        }
    }
}

/// Evaluations kept inline: configs name a handful of expressions, and a request should not
/// allocate to remember them.
type Done<'a> = smallvec::SmallVec<[(&'a str, Option<Computed<'a>>); 4]>;

/// The field expressions evaluated for one request: one named by both the access log and
/// the span (the seeds' `llm.*` fields are) is evaluated once, a plain field selection is
/// read from the record, and the CEL variables are bound only if some expression needs them.
pub(crate) struct Evaluations<'a> {
    rec: &'a RequestRecord,
    uses: Uses,
    /// Built on first use.
    scope: Option<cel::Scope>,
    /// By expression source; `None`: it failed on this request.
    done: Done<'a>,
}

impl<'a> Evaluations<'a> {
    pub(crate) fn new(rec: &'a RequestRecord, uses: Uses) -> Evaluations<'a> {
        Evaluations {
            rec,
            uses,
            scope: None,
            done: Done::new(),
        }
    }

    /// `expr`'s value for this request, `None` when it fails here (a missing key).
    pub(crate) fn get(&mut self, expr: &'a Expression) -> Option<Computed<'a>> {
        if let Some((_, v)) = self.done.iter().find(|(s, _)| *s == expr.source()) {
            return v.clone();
        }
        let v = self.evaluate(expr);
        self.done.push((expr.source(), v.clone()));
        v
    }

    fn evaluate(&mut self, expr: &Expression) -> Option<Computed<'a>> {
        if let Some((var, path)) = expr.member_path() {
            match self.rec.member(var, path) {
                record::Member::Found(v) => return Some(v),
                record::Member::Missing => return None,
                record::Member::Unknown => {}
            }
        }
        let (rec, uses) = (self.rec, self.uses);
        // (An expression that reads no variable, like a constant filter, still evaluates.)
        let scope = self
            .scope
            .get_or_insert_with(|| rec.bindings(uses).scope(uses));
        match expr.eval_in(scope) {
            Ok(v) => Some(Computed::Cel(v)),
            Err(e) => {
                tracing::trace!(expression = expr.source(), error = %e, "field not evaluated");
                None
            }
        }
    }

    /// For a filter: true only when `expr` evaluates to `true`.
    pub(crate) fn matches(&mut self, expr: &'a Expression) -> bool {
        matches!(
            self.get(expr),
            Some(Computed::Bool(true) | Computed::Cel(cel::Value::Bool(true)))
        )
    }
}

/// `fields.add`: name and expression, in config order.
pub(crate) type AddedFields = Vec<(String, Expression)>;

/// `fields.add` compiled (in config order) and `fields.remove` as a set.
pub(crate) fn compile_fields(
    fields: Option<&config::Fields>,
    block: &str,
) -> Result<(AddedFields, HashSet<String>), String> {
    let Some(f) = fields else {
        return Ok((Vec::new(), HashSet::new()));
    };
    let add = f
        .add
        .iter()
        .map(|(name, src)| {
            Expression::compile(src)
                .map(|e| (name.clone(), e))
                .map_err(|e| format!("{block}.fields.add.{name}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((add, f.remove.iter().cloned().collect()))
}

fn observe_metrics(rec: &RequestRecord, elapsed: std::time::Duration) {
    let m = Metrics::global();
    let label = |s: &Option<std::sync::Arc<str>>| {
        metrics::Label(s.clone().unwrap_or_else(|| std::sync::Arc::from("")))
    };
    let labels = metrics::RequestLabels {
        bind: metrics::Label(rec.bind.clone()),
        route: label(&rec.route),
        backend: label(&rec.backend),
        status: rec.status,
    };
    m.requests.get_or_create(&labels).inc();
    m.request_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    if let (Some(t), Some(b)) = (rec.upstream_time, &rec.backend) {
        m.upstream_call_duration
            .get_or_create(&metrics::BackendLabels {
                backend: metrics::Label(b.clone()),
            })
            .observe(t.as_secs_f64());
    }
    if let Some(llm) = &rec.llm {
        let request_model = m.model_label(llm.request_model.as_deref());
        let response_model = m.model_label(llm.response_model.as_deref());
        let error_type = if rec.status >= 500 {
            "5xx"
        } else if rec.status >= 400 {
            "4xx"
        } else if rec.aborted {
            "stream"
        } else {
            ""
        };
        let g = metrics::GenAiLabels {
            gen_ai_operation_name: llm.operation,
            gen_ai_provider_name: llm.provider,
            gen_ai_request_model: request_model.clone(),
            gen_ai_response_model: response_model.clone(),
            error_type: error_type.to_string(),
        };
        m.operation_duration
            .get_or_create(&g)
            .observe(elapsed.as_secs_f64());
        for (kind, n) in [("input", llm.input_tokens), ("output", llm.output_tokens)] {
            if let Some(n) = n {
                m.token_usage
                    .get_or_create(&metrics::TokenLabels {
                        gen_ai_token_type: kind,
                        gen_ai_operation_name: llm.operation,
                        gen_ai_provider_name: llm.provider,
                        gen_ai_request_model: request_model.clone(),
                        gen_ai_response_model: response_model.clone(),
                    })
                    .observe(n as f64);
            }
        }
        if let Some(ttft) = llm.time_to_first_token {
            m.time_to_first_token
                .get_or_create(&g)
                .observe(ttft.as_secs_f64());
            if let Some(out) = llm.output_tokens.filter(|n| *n > 1) {
                let rest = elapsed.saturating_sub(ttft);
                m.time_per_output_token
                    .get_or_create(&g)
                    .observe(rest.as_secs_f64() / (out - 1) as f64);
            }
        }
    }
    if let Some(a2a) = &rec.a2a {
        m.a2a_requests
            .get_or_create(&metrics::A2aLabels {
                backend: metrics::Label(rec.backend.clone().unwrap_or_else(|| "".into())),
                a2a_method: a2a.method,
                a2a_task_state: a2a.task_state.unwrap_or(""),
            })
            .inc();
    }
    if let Some(mcp) = &rec.mcp {
        if let Some(method) = &mcp.method {
            m.mcp_requests
                .get_or_create(&metrics::McpLabels {
                    mcp_method_name: metrics::mcp_method_label(method),
                    target: mcp.target.clone().unwrap_or_default(),
                    gen_ai_tool_name: m.tool_label(mcp.tool.as_deref()),
                })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests;
