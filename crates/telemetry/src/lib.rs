//! Switchyard's telemetry: the access log ([`access`]), OTLP traces ([`trace`]) and
//! Prometheus metrics ([`metrics`]), all fed from one [`RequestRecord`] per request, handed
//! over when the response body ends ([`Telemetry::finish`]).

pub mod access;
pub mod metrics;
mod record;
mod stats;
pub mod trace;

use std::collections::HashSet;

use cel::{Expression, Uses};
use serde_json::{json, Value as Json};

pub use metrics::Metrics;
pub use record::{LlmRecord, McpRecord, RequestRecord};
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
    /// log line and the span.
    pub fn finish(&self, rec: RequestRecord) {
        observe_metrics(&rec);
        if !self.records_requests() {
            return;
        }
        let scope = self
            .uses
            .any()
            .then(|| rec.bindings(self.uses).scope(self.uses));
        if let Some(a) = &self.access {
            a.emit(&rec, scope.as_ref());
        }
        if let Some(t) = &self.tracer {
            t.record(&rec, scope.as_ref());
        }
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

/// The access log's default fields, in order. Absent values are left out.
pub(crate) fn default_fields(rec: &RequestRecord) -> Vec<(&'static str, Json)> {
    let mut f: Vec<(&'static str, Json)> = Vec::with_capacity(24);
    f.push((
        "time",
        json!(humantime::format_rfc3339_millis(rec.start_time).to_string()),
    ));
    f.push(("method", json!(rec.method.as_str())));
    f.push(("path", json!(rec.uri.path())));
    f.push(("status", json!(rec.status)));
    f.push((
        "duration_ms",
        json!((rec.start.elapsed().as_secs_f64() * 1e6).round() / 1e3),
    ));
    f.push(("bytes_in", json!(rec.bytes_in)));
    f.push(("bytes_out", json!(rec.bytes_out)));
    f.push(("bind", json!(&*rec.bind)));
    let mut opt = |k: &'static str, v: Option<Json>| {
        if let Some(v) = v {
            f.push((k, v));
        }
    };
    opt("listener", rec.listener.as_deref().map(|s| json!(s)));
    opt("route", rec.route.as_deref().map(|s| json!(s)));
    opt("backend", rec.backend.as_deref().map(|s| json!(s)));
    opt("upstream", rec.upstream.as_deref().map(|s| json!(s)));
    opt("src", Some(json!(rec.peer.to_string())));
    opt(
        "request_id",
        (!rec.request_id.is_empty()).then(|| json!(rec.request_id)),
    );
    opt("trace_id", rec.trace.map(|t| json!(t.trace_id_hex())));
    opt("span_id", rec.trace.map(|t| json!(t.span_id_hex())));
    opt("error", rec.error.map(|e| json!(e)));
    if rec.aborted {
        f.push(("aborted", json!(true)));
    }
    if let Some(llm) = &rec.llm {
        gen_ai_fields(llm, &mut f);
    }
    if let Some(mcp) = &rec.mcp {
        mcp_fields(mcp, &mut f);
    }
    f
}

fn gen_ai_fields(llm: &LlmRecord, f: &mut Vec<(&'static str, Json)>) {
    f.push(("gen_ai.operation.name", json!(llm.operation)));
    f.push(("gen_ai.provider.name", json!(llm.provider)));
    let mut opt = |k: &'static str, v: Option<Json>| {
        if let Some(v) = v {
            f.push((k, v));
        }
    };
    opt(
        "gen_ai.request.model",
        llm.request_model.as_ref().map(|m| json!(m)),
    );
    opt(
        "gen_ai.response.model",
        llm.response_model.as_ref().map(|m| json!(m)),
    );
    opt(
        "gen_ai.usage.input_tokens",
        llm.input_tokens.map(|n| json!(n)),
    );
    opt(
        "gen_ai.usage.output_tokens",
        llm.output_tokens.map(|n| json!(n)),
    );
    opt(
        "gen_ai.usage.cache_read.input_tokens",
        llm.cached_input_tokens.map(|n| json!(n)),
    );
    opt(
        "gen_ai.usage.reasoning.output_tokens",
        llm.reasoning_tokens.map(|n| json!(n)),
    );
    if llm.streaming {
        opt("gen_ai.response.streaming", Some(json!(true)));
    }
}

fn mcp_fields(mcp: &McpRecord, f: &mut Vec<(&'static str, Json)>) {
    let mut opt = |k: &'static str, v: Option<&String>| {
        if let Some(v) = v {
            f.push((k, json!(v)));
        }
    };
    opt("mcp.method.name", mcp.method.as_ref());
    opt("gen_ai.tool.name", mcp.tool.as_ref());
    opt("mcp.target", mcp.target.as_ref());
    opt("mcp.session.id", mcp.session_id.as_ref());
}

/// A span's attributes: the OpenTelemetry HTTP server names, then GenAI and MCP ones.
pub(crate) fn span_attributes(rec: &RequestRecord) -> Vec<(&'static str, Json)> {
    let mut f: Vec<(&'static str, Json)> = Vec::with_capacity(24);
    f.push(("http.request.method", json!(rec.method.as_str())));
    f.push(("url.path", json!(rec.uri.path())));
    if let Some(q) = rec.uri.query() {
        f.push(("url.query", json!(q)));
    }
    f.push(("url.scheme", json!(if rec.tls { "https" } else { "http" })));
    f.push(("http.response.status_code", json!(rec.status)));
    f.push(("client.address", json!(rec.peer.ip().to_string())));
    f.push(("client.port", json!(rec.peer.port())));
    if let Some(h) = &rec.host {
        f.push(("server.address", json!(h)));
    }
    if let Some(r) = &rec.route {
        f.push(("http.route", json!(&**r)));
    }
    if let Some(b) = &rec.backend {
        f.push(("switchyard.backend", json!(&**b)));
    }
    if let Some(u) = &rec.upstream {
        f.push(("switchyard.upstream", json!(&**u)));
    }
    f.push(("switchyard.bind", json!(&*rec.bind)));
    if !rec.request_id.is_empty() {
        f.push(("switchyard.request_id", json!(rec.request_id)));
    }
    if let Some(e) = rec.error {
        f.push(("error.type", json!(e)));
    } else if rec.status >= 500 {
        f.push(("error.type", json!(rec.status.to_string())));
    }
    if let Some(llm) = &rec.llm {
        gen_ai_fields(llm, &mut f);
        for (k, v) in &llm.params {
            let name = match k.as_str() {
                "temperature" => "gen_ai.request.temperature",
                "top_p" => "gen_ai.request.top_p",
                "top_k" => "gen_ai.request.top_k",
                "max_tokens" | "max_completion_tokens" | "max_output_tokens" => {
                    "gen_ai.request.max_tokens"
                }
                "seed" => "gen_ai.request.seed",
                "frequency_penalty" => "gen_ai.request.frequency_penalty",
                "presence_penalty" => "gen_ai.request.presence_penalty",
                "stop" | "stop_sequences" => "gen_ai.request.stop_sequences",
                _ => continue,
            };
            f.push((name, v.clone()));
        }
    }
    if let Some(mcp) = &rec.mcp {
        mcp_fields(mcp, &mut f);
    }
    f
}

fn observe_metrics(rec: &RequestRecord) {
    let m = Metrics::global();
    let elapsed = rec.start.elapsed();
    let labels = metrics::RequestLabels {
        bind: rec.bind.to_string(),
        route: rec.route.as_deref().unwrap_or("").to_string(),
        backend: rec.backend.as_deref().unwrap_or("").to_string(),
        status: rec.status,
    };
    m.requests.get_or_create(&labels).inc();
    m.request_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    if let (Some(t), Some(b)) = (rec.upstream_time, &rec.backend) {
        m.upstream_call_duration
            .get_or_create(&metrics::BackendLabels {
                backend: b.to_string(),
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
    if let Some(mcp) = &rec.mcp {
        if let Some(method) = &mcp.method {
            m.mcp_requests
                .get_or_create(&metrics::McpLabels {
                    mcp_method_name: method.clone(),
                    target: mcp.target.clone().unwrap_or_default(),
                    gen_ai_tool_name: mcp.tool.clone().unwrap_or_default(),
                })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests;
