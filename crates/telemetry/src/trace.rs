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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use cel::{Expression, Uses};
use http::HeaderValue;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::record::RequestRecord;

/// Spans waiting for export before new ones are dropped.
const QUEUE_SPANS: usize = 8192;
/// Spans per export request.
const BATCH_SPANS: usize = 512;
/// Longest a span waits in a partial batch.
const BATCH_DELAY: Duration = Duration::from_secs(1);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The trace a request belongs to and the span the gateway opens for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span, from an incoming `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    pub sampled: bool,
}

impl TraceContext {
    /// A valid incoming `traceparent` (version 00, or a later one read as 00), else `None`.
    pub fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
        let s = std::str::from_utf8(value).ok()?.trim();
        let mut parts = s.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let parent = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = hex_decode(trace)?;
        let span_id: [u8; 8] = hex_decode(parent)?;
        let flags: [u8; 1] = hex_decode(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some((trace_id, span_id, flags[0] & 1 == 1))
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// `traceparent` for the upstream: this trace, the gateway's span as the parent.
    pub fn traceparent(&self) -> HeaderValue {
        let s = format!(
            "00-{}-{}-{}",
            self.trace_id_hex(),
            self.span_id_hex(),
            if self.sampled { "01" } else { "00" }
        );
        // Hex digits and dashes only.
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let r = fastrand::u64(..).to_be_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        if out != [0u8; N] {
            return out;
        }
    }
}

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

    /// Queues the span for `rec` (sampled requests only).
    pub fn record(&self, rec: &RequestRecord, scope: Option<&cel::Scope>) {
        let Some(ctx) = rec.trace.filter(|t| t.sampled) else {
            return;
        };
        let mut added: Vec<(String, Json)> = Vec::new();
        let mut name = None;
        if let Some(scope) = scope {
            for (field, expr) in &self.add {
                let Ok(v) = expr.eval_in(scope) else { continue };
                if field == "span.name" {
                    if let cel::Value::String(s) = &v {
                        name = Some(s.to_string());
                        continue;
                    }
                }
                cel::expand_field(field, &v, &mut added);
            }
        }
        let name = name.unwrap_or_else(|| default_span_name(rec));
        let mut attributes: Vec<KeyValue> = crate::fields::span_attributes(rec)
            .into_iter()
            .filter(|(k, _)| !self.remove.contains(*k) && !added.iter().any(|(a, _)| a == k))
            .map(|(k, v)| KeyValue {
                key: k.to_string(),
                value: Some(any_value_of_field(v)),
                ..Default::default()
            })
            .collect();
        attributes.extend(
            added
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(key, v)| KeyValue {
                    key,
                    value: Some(any_value_of(v)),
                    ..Default::default()
                }),
        );
        let start = rec
            .start_time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let end = start + rec.start.elapsed();
        let error = rec.status >= 500 || rec.aborted;
        let span = Span {
            trace_id: ctx.trace_id.to_vec(),
            span_id: ctx.span_id.to_vec(),
            parent_span_id: ctx.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 1,
            name,
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: start.as_nanos() as u64,
            end_time_unix_nano: end.as_nanos() as u64,
            attributes,
            status: Some(Status {
                message: if error {
                    rec.error.unwrap_or("error").to_string()
                } else {
                    String::new()
                },
                code: if error {
                    status::StatusCode::Error as i32
                } else {
                    status::StatusCode::Unset as i32
                },
            }),
            ..Default::default()
        };
        self.exporter.push(span);
    }
}

/// `{gen_ai.operation.name} {model}` for LLM calls, `{mcp.method.name} {tool}` for MCP, else
/// `{method} {route}` (the HTTP server span convention, the route standing for `http.route`).
fn default_span_name(rec: &RequestRecord) -> String {
    if let Some(llm) = &rec.llm {
        return match &llm.request_model {
            Some(m) => format!("{} {m}", llm.operation),
            None => llm.operation.to_string(),
        };
    }
    if let Some(mcp) = &rec.mcp {
        if let Some(method) = &mcp.method {
            return match &mcp.tool {
                Some(t) => format!("{method} {t}"),
                None => method.clone(),
            };
        }
    }
    match &rec.route {
        Some(r) => format!("{} {r}", rec.method),
        None => rec.method.to_string(),
    }
}

fn any_value_of_field(v: crate::fields::Field<'_>) -> AnyValue {
    use crate::fields::Field;
    use any_value::Value as V;
    let value = match v {
        Field::Str(s) => V::StringValue(s.to_string()),
        Field::String(s) => V::StringValue(s),
        Field::U64(n) => V::IntValue(n.min(i64::MAX as u64) as i64),
        Field::F64(f) => V::DoubleValue(f),
        Field::Bool(b) => V::BoolValue(b),
        Field::Json(j) => return any_value_of(j.clone()),
    };
    AnyValue { value: Some(value) }
}

fn any_value_of(v: Json) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        Json::Bool(b) => V::BoolValue(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => V::StringValue(s),
        Json::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            V::ArrayValue(ArrayValue {
                values: items.into_iter().map(any_value_of).collect(),
            })
        }
        other => V::StringValue(other.to_string()),
    };
    AnyValue { value: Some(value) }
}

/// Exporters by collector, kept across reloads so a reload does not drop queued spans.
#[derive(Default)]
pub struct ExporterCache {
    by_key: Mutex<HashMap<String, Arc<Exporter>>>,
}

impl ExporterCache {
    fn get(&self, cfg: &config::Tracing) -> Result<Arc<Exporter>, String> {
        let key = format!(
            "{:?}|{}|{}",
            cfg.otlp_protocol,
            cfg.otlp_endpoint,
            cfg.headers
                .iter()
                .map(|(k, v)| format!("{}={}", k.as_str(), v.expose()))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get(&key) {
            return Ok(e.clone());
        }
        let e = Arc::new(Exporter::start(cfg)?);
        map.insert(key, e.clone());
        Ok(e)
    }
}

pub struct Exporter {
    tx: mpsc::Sender<Span>,
}

enum Transport {
    Grpc(
        TraceServiceClient<tonic::transport::Channel>,
        tonic::metadata::MetadataMap,
    ),
    Http {
        client: Box<
            hyper_util::client::legacy::Client<
                hyper_util::client::legacy::connect::HttpConnector,
                http_body_util::Full<bytes::Bytes>,
            >,
        >,
        uri: http::Uri,
        headers: http::HeaderMap,
    },
}

impl Exporter {
    fn start(cfg: &config::Tracing) -> Result<Exporter, String> {
        let endpoint = cfg.otlp_endpoint.trim_end_matches('/').to_string();
        let transport = match cfg.otlp_protocol {
            config::OtlpProtocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| format!("tracing.otlpEndpoint {endpoint:?}: {e}"))?
                    .timeout(EXPORT_TIMEOUT)
                    .connect_lazy();
                let mut md = tonic::metadata::MetadataMap::new();
                for (k, v) in &cfg.headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(k.as_str().as_bytes())
                        .map_err(|_| {
                            format!("tracing.headers: {} is not a gRPC metadata key", k.as_str())
                        })?;
                    let value = v.expose().parse().map_err(|_| {
                        format!("tracing.headers.{}: not a valid header value", k.as_str())
                    })?;
                    md.insert(key, value);
                }
                Transport::Grpc(TraceServiceClient::new(channel), md)
            }
            config::OtlpProtocol::Http => {
                let uri: http::Uri = format!("{endpoint}/v1/traces")
                    .parse()
                    .map_err(|e| format!("tracing.otlpEndpoint {endpoint:?}: {e}"))?;
                let mut headers = http::HeaderMap::new();
                for (k, v) in &cfg.headers {
                    let mut value = HeaderValue::from_str(v.expose()).map_err(|_| {
                        format!("tracing.headers.{}: not a valid header value", k.as_str())
                    })?;
                    value.set_sensitive(true);
                    headers.insert(
                        http::HeaderName::from_bytes(k.as_str().as_bytes())
                            .map_err(|_| "tracing.headers: bad name".to_string())?,
                        value,
                    );
                }
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http();
                Transport::Http {
                    client: Box::new(client),
                    uri,
                    headers,
                }
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE_SPANS);
        tokio::spawn(export_loop(rx, transport));
        Ok(Exporter { tx })
    }

    fn push(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            Metrics::global().spans_dropped.inc();
        }
    }
}

fn resource() -> Resource {
    Resource {
        attributes: vec![
            KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("switchyard".into())),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "service.version".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(
                        env!("CARGO_PKG_VERSION").into(),
                    )),
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

async fn export_loop(mut rx: mpsc::Receiver<Span>, mut transport: Transport) {
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        let deadline = tokio::time::sleep(BATCH_DELAY);
        tokio::pin!(deadline);
        while batch.len() < BATCH_SPANS {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(s) => batch.push(s),
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        let n = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "switchyard".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: batch,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let result = tokio::time::timeout(EXPORT_TIMEOUT, export(&mut transport, request)).await;
        let metrics = Metrics::global();
        match result {
            Ok(Ok(())) => {
                metrics.spans_exported.inc_by(n);
            }
            other => {
                metrics.spans_dropped.inc_by(n);
                let reason = match other {
                    Ok(Err(e)) => e,
                    _ => "timed out".to_string(),
                };
                // One warning per minute at most: a dead collector must not flood the log.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(spans = n, error = %reason, "trace export failed; spans dropped");
                    last_warning = Some(std::time::Instant::now());
                }
            }
        }
    }
}

async fn export(
    transport: &mut Transport,
    request: ExportTraceServiceRequest,
) -> Result<(), String> {
    match transport {
        Transport::Grpc(client, md) => {
            let mut req = tonic::Request::new(request);
            *req.metadata_mut() = md.clone();
            client
                .export(req)
                .await
                .map(|_| ())
                .map_err(|s| format!("{}: {}", s.code(), s.message()))
        }
        Transport::Http {
            client,
            uri,
            headers,
        } => {
            let body = prost::Message::encode_to_vec(&request);
            let mut req = http::Request::new(http_body_util::Full::new(bytes::Bytes::from(body)));
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = uri.clone();
            *req.headers_mut() = headers.clone();
            req.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            );
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(format!("collector answered {}", resp.status()))
            }
        }
    }
}
