//! Tracing (`config.tracing`): W3C trace context in and out, sampling, one server span per
//! request with the OpenTelemetry HTTP, GenAI and MCP attributes, and OTLP export.
//!
//! Export is batched on a background task; `record` only pushes onto a bounded queue, so a
//! slow or dead collector costs requests nothing: spans past the queue, or in a batch the
//! collector refused, are dropped and counted (`switchyard_trace_spans_dropped_total`).
//!
//! References: W3C Trace Context (`traceparent` = `00-<trace-id>-<parent-id>-<flags>`),
//! OTLP/gRPC `TraceService/Export` and OTLP/HTTP `POST /v1/traces` with a protobuf body
//! (OpenTelemetry protocol specification).
//!
//! `context`: the W3C trace context; `span`: a request's span encoded as OTLP protobuf;
//! `export`: the batching queue and the OTLP/gRPC and OTLP/HTTP transports.

mod context;
mod export;
mod span;

pub use context::TraceContext;
pub use export::{Exporter, ExporterCache};

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cel::{Expression, Uses};
use http::HeaderValue;

use crate::fields::Field;
use crate::otlp;
use crate::record::RequestRecord;
use crate::Computed;

use context::random_id;
use span::{default_span_name, write_field, SpanName, SCRATCH};

/// The compiled `config.tracing` block.
pub struct Tracer {
    random: f64,
    /// `None`: the caller's sampled flag is not honoured.
    client: Option<f64>,
    add: Vec<(String, Expression)>,
    remove: std::collections::HashSet<String>,
    uses: Uses,
    exporter: Arc<Exporter>,
}

fn ratio(s: Option<config::Sampling>, default: f64) -> f64 {
    match s {
        None => default,
        Some(config::Sampling::Enabled(true)) => 1.0,
        Some(config::Sampling::Enabled(false)) => 0.0,
        Some(config::Sampling::Ratio(r)) => r.clamp(0.0, 1.0),
    }
}

fn chance(r: f64) -> bool {
    r >= 1.0 || (r > 0.0 && fastrand::f64() < r)
}

impl Tracer {
    pub fn compile(cfg: &config::Tracing, exporters: &ExporterCache) -> Result<Tracer, String> {
        let (add, remove) = crate::compile_fields(cfg.fields.as_ref(), "tracing")?;
        let uses = add
            .iter()
            .fold(Uses::default(), |u, (_, e)| u.union(e.uses()));
        // By default only requests whose caller sampled them are traced.
        let client = match cfg.client_sampling {
            Some(config::Sampling::Enabled(false)) => None,
            other => Some(ratio(other, 1.0)),
        };
        Ok(Tracer {
            random: ratio(cfg.random_sampling, 0.0),
            client,
            add,
            remove,
            uses,
            exporter: exporters.get(cfg)?,
        })
    }

    pub fn uses(&self) -> Uses {
        self.uses
    }

    /// The trace context of a new request: the caller's trace (and, with `clientSampling`,
    /// its sampling decision) when it sent a valid `traceparent`, else a new trace.
    pub fn start(&self, traceparent: Option<&HeaderValue>) -> TraceContext {
        let span_id = random_id();
        match traceparent.and_then(|v| TraceContext::parse_traceparent(v.as_bytes())) {
            Some((trace_id, parent, caller_sampled)) => TraceContext {
                trace_id,
                span_id,
                parent_span_id: Some(parent),
                sampled: match self.client {
                    Some(r) if caller_sampled => chance(r),
                    Some(_) => false,
                    None => chance(self.random),
                },
            },
            None => TraceContext {
                trace_id: random_id(),
                span_id,
                parent_span_id: None,
                sampled: chance(self.random),
            },
        }
    }

    /// Queues the span for `rec` (sampled requests only). `elapsed`: the request's duration.
    pub(crate) fn record<'a>(
        &'a self,
        rec: &'a RequestRecord,
        elapsed: Duration,
        evals: &mut crate::Evaluations<'a>,
    ) {
        let Some(ctx) = rec.trace.filter(|t| t.sampled) else {
            return;
        };
        let mut added = crate::fields::Added::new();
        let mut name = None;
        for (field, expr) in &self.add {
            let Some(v) = evals.get(expr) else { continue };
            if field == "span.name" {
                match v {
                    Computed::Str(s) => {
                        name = Some(SpanName::Borrowed(s));
                        continue;
                    }
                    Computed::Cel(cel::Value::String(s)) => {
                        name = Some(SpanName::Owned(s));
                        continue;
                    }
                    _ => {}
                }
            }
            crate::fields::add_field(field, v, &mut added);
        }
        let start = rec
            .start_time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let end = start + elapsed;
        let error = rec.status >= 500 || rec.aborted;
        let mut flags = otlp::FLAG_SAMPLED | otlp::FLAG_HAS_IS_REMOTE;
        if ctx.parent_span_id.is_some() {
            flags |= otlp::FLAG_IS_REMOTE;
        }
        SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            let mut span = otlp::SpanWriter::begin(
                buf,
                &otlp::SpanHead {
                    trace_id: &ctx.trace_id,
                    span_id: &ctx.span_id,
                    parent_span_id: ctx.parent_span_id.as_ref(),
                    name: match &name {
                        Some(SpanName::Borrowed(n)) => [n, "", ""],
                        Some(SpanName::Owned(n)) => [n.as_str(), "", ""],
                        None => default_span_name(rec),
                    },
                    kind: otlp::KIND_SERVER,
                    start_unix_nano: start.as_nanos() as u64,
                    end_unix_nano: end.as_nanos() as u64,
                },
            );
            crate::fields::span_attributes(rec, &mut |k: &'static str, v: Field<'_>| {
                if (self.remove.is_empty() || !self.remove.contains(k))
                    && (added.is_empty() || !added.iter().any(|(a, _)| a == k))
                {
                    write_field(&mut span, k, &v);
                }
            });
            for (k, v) in &added {
                if !v.is_null() {
                    write_field(&mut span, k, &v.field());
                }
            }
            for step in &rec.failover {
                let name = match step.skipped() {
                    true => "switchyard.backend.skipped",
                    false => "switchyard.attempt.failed",
                };
                span.event(
                    (start + step.at).as_nanos() as u64,
                    name,
                    &[
                        (
                            "switchyard.backend",
                            otlp::Scalar::Str(step.backend.as_bytes()),
                        ),
                        (
                            "switchyard.failover.reason",
                            otlp::Scalar::Str(step.cause.as_bytes()),
                        ),
                    ],
                );
            }
            let (code, message) = if error {
                (otlp::STATUS_ERROR, rec.error.unwrap_or("error"))
            } else {
                (0, "")
            };
            span.end(code, message, flags);
            self.exporter.push(buf);
            // A rare huge span (a large CEL field) does not pin its buffer to the thread.
            if buf.capacity() > 64 << 10 {
                *buf = Vec::new();
            }
        });
    }
}
