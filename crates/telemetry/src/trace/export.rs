//! OTLP export: encoded spans queued in batches and sent by one background task per
//! collector, over OTLP/gRPC or OTLP/HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::metrics::Metrics;
use crate::otlp;

/// Spans waiting for export before new ones are dropped.
const QUEUE_SPANS: usize = 8192;
/// Bytes of encoded spans waiting for export before new ones are dropped: spans that carry
/// prompts (the seeds' flattened `llm.input_messages.*`) are kilobytes each, and a collector
/// that is down must not grow the gateway by gigabytes.
const QUEUE_BYTES: usize = 32 << 20;
/// Spans per export request.
const BATCH_SPANS: usize = 512;
/// Encoded span bytes per export request, at most (a span larger than this goes alone): a
/// collector's OTLP/gRPC receiver refuses messages over 4 MiB by default, and one refused
/// request loses every span in it.
const BATCH_BYTES: usize = 1 << 20;
/// Longest a span waits in a partial batch.
const BATCH_DELAY: Duration = Duration::from_secs(1);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exporters by collector, kept across reloads so a reload does not drop queued spans.
#[derive(Default)]
pub struct ExporterCache {
    by_key: Mutex<HashMap<String, Arc<Exporter>>>,
}

impl ExporterCache {
    pub(super) fn get(&self, cfg: &config::Tracing) -> Result<Arc<Exporter>, String> {
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

/// A collector's export queue: encoded spans in batches of up to [`BATCH_SPANS`], emptied by
/// one background task. Requests only lock it long enough to append their span's bytes.
pub struct Exporter {
    queue: Arc<Queue>,
}

struct Queue {
    pending: Mutex<Pending>,
    /// A batch filled up, or the exporter was dropped.
    ready: tokio::sync::Notify,
    closed: std::sync::atomic::AtomicBool,
    /// Encoded `Resource` and `InstrumentationScope`: the same in every export request.
    resource: Vec<u8>,
    scope: Vec<u8>,
    /// Kept free at the front of every batch for the export request's head.
    head_room: usize,
}

#[derive(Default)]
struct Pending {
    batches: std::collections::VecDeque<Batch>,
    spans: usize,
    /// Encoded bytes of those spans (as framed in their batches).
    bytes: usize,
    /// Buffers of exported batches, for the next ones: a batch is large enough that a new
    /// allocation would come fresh from the kernel, page faults and all.
    free: Vec<Vec<u8>>,
}

/// Buffers kept for reuse.
const FREE_BUFFERS: usize = 2;

/// Head room, then the body of a `ScopeSpans.spans` field: [`otlp::append_span`] per span.
struct Batch {
    bytes: Vec<u8>,
    spans: usize,
}

impl Batch {
    /// Whether a span of `framed` bytes may join this batch, which starts with `head_room`
    /// bytes.
    fn has_room(&self, framed: usize, head_room: usize) -> bool {
        self.spans < BATCH_SPANS
            && (self.spans == 0 || self.bytes.len() - head_room + framed <= BATCH_BYTES)
    }
}

impl Queue {
    fn new() -> Queue {
        let (resource, scope) = resource_and_scope();
        Queue {
            pending: Mutex::default(),
            ready: tokio::sync::Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            head_room: otlp::request_head_room(&resource, &scope),
            resource,
            scope,
        }
    }

    fn push(&self, span: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let framed = otlp::framed_span_len(span);
        if pending.spans >= QUEUE_SPANS || pending.bytes + framed > QUEUE_BYTES {
            drop(pending);
            Metrics::global().spans_dropped.inc();
            return;
        }
        pending.spans += 1;
        // The last batch is closed once it has no room: it is ready to go.
        let mut closed = false;
        if !matches!(pending.batches.back(), Some(b) if b.has_room(framed, self.head_room)) {
            closed = !pending.batches.is_empty();
            let mut bytes = pending.free.pop().unwrap_or_else(|| {
                let body = (BATCH_SPANS * framed).min(BATCH_BYTES.max(framed));
                Vec::with_capacity(self.head_room + body)
            });
            bytes.resize(self.head_room, 0);
            pending.batches.push_back(Batch { bytes, spans: 0 });
        }
        let Some(batch) = pending.batches.back_mut() else {
            return;
        };
        otlp::append_span(&mut batch.bytes, span);
        batch.spans += 1;
        let full = batch.spans == BATCH_SPANS;
        pending.bytes += framed;
        drop(pending);
        if full || closed {
            self.ready.notify_one();
        }
    }

    /// The oldest batch, if it is full or `partial` ones are wanted.
    fn take(&self, partial: bool) -> Option<Batch> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let front = pending.batches.front()?;
        // Full, or closed by its size (another batch follows it).
        let ready = front.spans == BATCH_SPANS || pending.batches.len() > 1;
        if !partial && !ready {
            return None;
        }
        let batch = pending.batches.pop_front()?;
        pending.spans -= batch.spans;
        pending.bytes -= batch.bytes.len() - self.head_room;
        Some(batch)
    }

    /// `batch` as an encoded `ExportTraceServiceRequest`, framed in place; its buffer comes
    /// back to the queue when the transport is done with it.
    fn export_request(self: &Arc<Self>, batch: Batch) -> bytes::Bytes {
        let mut bytes = batch.bytes;
        let start =
            otlp::write_request_head(&mut bytes, self.head_room, &self.resource, &self.scope);
        bytes::Bytes::from_owner(Recycled {
            bytes,
            queue: Arc::downgrade(self),
        })
        .slice(start..)
    }
}

/// A batch's buffer on its way to the collector.
struct Recycled {
    bytes: Vec<u8>,
    queue: std::sync::Weak<Queue>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let Some(queue) = self.queue.upgrade() else {
            return;
        };
        let mut pending = queue.pending.lock().unwrap_or_else(|p| p.into_inner());
        // A buffer grown by a rare huge span is not kept.
        if pending.free.len() < FREE_BUFFERS && self.bytes.capacity() <= 4 << 20 {
            pending.free.push(std::mem::take(&mut self.bytes));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // The export task sends what is queued, then ends.
        self.queue
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.queue.ready.notify_one();
    }
}

enum Transport {
    Grpc(
        tonic::client::Grpc<tonic::transport::Channel>,
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
                Transport::Grpc(tonic::client::Grpc::new(channel), md)
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
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                );
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
        let queue = Arc::new(Queue::new());
        tokio::spawn(export_loop(queue.clone(), transport));
        Ok(Exporter { queue })
    }

    pub(super) fn push(&self, span: &[u8]) {
        self.queue.push(span);
    }
}

/// `Resource` and `InstrumentationScope`, encoded once for every export request.
fn resource_and_scope() -> (Vec<u8>, Vec<u8>) {
    let string = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    };
    let resource = Resource {
        attributes: vec![
            string("service.name", "switchyard"),
            string("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: "switchyard".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    (
        prost::Message::encode_to_vec(&resource),
        prost::Message::encode_to_vec(&scope),
    )
}

async fn export_loop(queue: Arc<Queue>, mut transport: Transport) {
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        // A full batch goes at once; a partial one waits at most BATCH_DELAY.
        let partial = tokio::select! {
            _ = queue.ready.notified() => false,
            _ = tokio::time::sleep(BATCH_DELAY) => true,
        };
        let closed = queue.closed.load(std::sync::atomic::Ordering::Acquire);
        while let Some(batch) = queue.take(partial || closed) {
            let n = batch.spans as u64;
            let request = queue.export_request(batch);
            let result =
                tokio::time::timeout(EXPORT_TIMEOUT, export(&mut transport, request)).await;
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
        if closed {
            return;
        }
    }
}

/// `TraceService/Export` with a request body that is already encoded.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

async fn export(transport: &mut Transport, request: bytes::Bytes) -> Result<(), String> {
    match transport {
        Transport::Grpc(client, md) => {
            client
                .ready()
                .await
                .map_err(|e| format!("collector unreachable: {e}"))?;
            let mut req = tonic::Request::new(request);
            *req.metadata_mut() = md.clone();
            client
                .unary(
                    req,
                    http::uri::PathAndQuery::from_static(EXPORT_PATH),
                    PreEncoded,
                )
                .await
                .map(|_| ())
                .map_err(|s| format!("{}: {}", s.code(), s.message()))
        }
        Transport::Http {
            client,
            uri,
            headers,
        } => {
            let mut req = http::Request::new(http_body_util::Full::new(request));
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = uri.clone();
            *req.headers_mut() = headers.clone();
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(format!("collector answered {}", resp.status()))
            }
        }
    }
}

/// A gRPC codec whose request is protobuf bytes already; the `ExportTraceServiceResponse`
/// (an optional partial-success note) is read past, not decoded.
struct PreEncoded;

impl tonic::codec::Codec for PreEncoded {
    type Encode = bytes::Bytes;
    type Decode = ();
    type Encoder = PreEncoded;
    type Decoder = PreEncoded;

    fn encoder(&mut self) -> PreEncoded {
        PreEncoded
    }

    fn decoder(&mut self) -> PreEncoded {
        PreEncoded
    }
}

impl tonic::codec::Encoder for PreEncoded {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for PreEncoded {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        bytes::Buf::advance(src, n);
        Ok(Some(()))
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    fn spans_in(request: &bytes::Bytes) -> usize {
        let decoded =
            <ExportTraceServiceRequest as prost::Message>::decode(request.as_ref()).unwrap();
        decoded.resource_spans[0].scope_spans[0].spans.len()
    }

    /// An encoded span whose name makes it about `len` bytes.
    fn span(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let w = otlp::SpanWriter::begin(
            &mut out,
            &otlp::SpanHead {
                trace_id: &[1; 16],
                span_id: &[2; 8],
                parent_span_id: None,
                name: [&"n".repeat(len), "", ""],
                kind: otlp::KIND_SERVER,
                start_unix_nano: 1,
                end_unix_nano: 2,
            },
        );
        w.end(0, "", otlp::FLAG_SAMPLED);
        out
    }

    #[test]
    fn batches_close_at_their_byte_budget_and_the_queue_at_its_own() {
        let queue = Arc::new(Queue::new());
        let big = span(100 << 10);
        // 1 MiB of batch room takes ten 100 KiB spans; the eleventh starts a new batch,
        // which makes the first ready to go although it is far from BATCH_SPANS.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let woken = || {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(20), queue.ready.notified()).await
            })
            .is_ok()
        };
        for _ in 0..10 {
            queue.push(&big);
        }
        assert!(queue.take(false).is_none(), "an open batch waits");
        assert!(!woken(), "nothing to export yet");
        queue.push(&big);
        assert!(woken(), "a batch closed by its size wakes the exporter");
        let first = queue.take(false).expect("the closed batch is ready");
        assert_eq!(first.spans, 10);
        assert!(first.bytes.len() - queue.head_room <= BATCH_BYTES);
        let request = queue.export_request(first);
        assert_eq!(spans_in(&request), 10);
        assert!(queue.take(false).is_none());
        assert_eq!(queue.take(true).map(|b| b.spans), Some(1));
        assert_eq!(queue.pending.lock().unwrap().bytes, 0);

        // A span larger than a batch's budget goes alone, and is still exported.
        let huge = span(BATCH_BYTES + 10);
        queue.push(&big);
        queue.push(&huge);
        queue.push(&big);
        let sizes: Vec<usize> = std::iter::from_fn(|| queue.take(true))
            .map(|b| b.spans)
            .collect();
        assert_eq!(sizes, [1, 1, 1]);

        // A collector that takes nothing: the queue stops at its byte budget.
        for _ in 0..(QUEUE_BYTES / big.len() + 50) {
            queue.push(&big);
        }
        let pending = queue.pending.lock().unwrap();
        let framed = otlp::framed_span_len(&big);
        assert_eq!(pending.spans, QUEUE_BYTES / framed);
        assert_eq!(pending.bytes, pending.spans * framed);
    }
}
