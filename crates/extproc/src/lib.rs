//! Envoy `ext_proc` endpoint picker: the gRPC `envoy.service.ext_proc.v3.ExternalProcessor`
//! service over a [`picker::pool::Pool`], for Envoy-based gateways (AIBrix's gateway plugin
//! and the Gateway API Inference Extension speak this protocol).
//!
//! One gRPC stream is one HTTP request. Request headers: read `routing-strategy`, the session
//! header, `user`; a strategy that does not read the prompt picks right there; `prefix-cache`
//! asks for the body (a `mode_override` to `BUFFERED`, which Envoy honours when
//! `allow_mode_override` is set — otherwise configure `request_body_mode: BUFFERED`). Request
//! body (one buffered message, or streamed chunks collected until
//! `end_of_stream`): parse the OpenAI request, pick, answer with a header mutation setting
//! `target-pod` and `x-gateway-destination-endpoint` and `clear_route_cache`. Response
//! headers and body: name the pod on the response, read the usage, and release the pod's
//! in-flight count when the response ends (or the stream closes). Failures become an
//! `ImmediateResponse` with a JSON error: 400 malformed body or unknown strategy, 413 body
//! too large, 429 every pod at `maxInFlightPerPod`, 503 no eligible pod.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    processing_mode::{BodySendMode, HeaderSendMode},
    ProcessingMode,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    external_processor_server::{ExternalProcessor, ExternalProcessorServer},
    processing_request, processing_response, BodyResponse, CommonResponse, HeaderMutation,
    HeadersResponse, HttpHeaders, ImmediateResponse, ProcessingRequest, ProcessingResponse,
    TrailersResponse,
};
use picker::pool::{InFlight, PickError, Pool, RequestMeta};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use envoy_types;

/// The pod header AIBrix's gateway plugin sets.
pub const TARGET_POD: &str = "target-pod";
/// The header the Gateway API Inference Extension's endpoint picker sets.
pub const DESTINATION_ENDPOINT: &str = "x-gateway-destination-endpoint";
/// Request header choosing a strategy per request.
pub const ROUTING_STRATEGY: &str = "routing-strategy";

/// Largest request body collected for picking (larger ones get a 413).
const MAX_BODY: usize = 16 << 20;
/// Tail of the response body kept to find the usage (it comes last in a stream).
const RESPONSE_TAIL: usize = 64 << 10;
/// `HeaderValueOption.append_action`: OVERWRITE_IF_EXISTS_OR_ADD.
const OVERWRITE: i32 = 2;

/// Where the server finds its pool now (a gateway's reloads may replace it).
pub type PoolSource = Arc<dyn Fn() -> Option<Arc<Pool>> + Send + Sync>;

/// The `ExternalProcessor` service.
#[derive(Clone)]
pub struct Service {
    pools: PoolSource,
}

impl Service {
    pub fn new(pools: PoolSource) -> Self {
        Service { pools }
    }

    /// The tonic service to mount.
    pub fn into_server(self) -> ExternalProcessorServer<Service> {
        ExternalProcessorServer::new(self)
    }
}

/// Serves `source` on `listener` until the task is aborted.
pub fn serve(listener: tokio::net::TcpListener, source: PoolSource) -> tokio::task::JoinHandle<()> {
    let addr = listener.local_addr().ok();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let result = tonic::transport::Server::builder()
            .serve_with_incoming(Service::new(source).into_server(), incoming)
            .await;
        if let Err(e) = result {
            tracing::error!(addr = ?addr, error = %e, "ext_proc server stopped");
        }
    })
}

/// Binds `addr` (an error names it).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot start the ext_proc server on {addr}: {e}"))
}

#[tonic::async_trait]
impl ExternalProcessor for Service {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let Some(pool) = (self.pools)() else {
            return Err(Status::unavailable("the ext_proc pool is not configured"));
        };
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut exchange = Exchange::new(pool);
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "ext_proc stream ended with an error");
                        break;
                    }
                };
                let Some(req) = msg.request else { continue };
                let (resp, done) = exchange.handle(req);
                if let Some(resp) = resp {
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                }
                if done {
                    break;
                }
            }
            // The exchange (and the pod's in-flight count) ends with the stream.
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One HTTP request's conversation.
struct Exchange {
    pool: Arc<Pool>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    in_flight: Option<InFlight>,
    response_tail: Vec<u8>,
}

impl Exchange {
    fn new(pool: Arc<Pool>) -> Self {
        Exchange {
            pool,
            headers: HashMap::new(),
            body: Vec::new(),
            in_flight: None,
            response_tail: Vec::new(),
        }
    }

    /// The answer to one message, and whether the exchange is over.
    fn handle(&mut self, req: processing_request::Request) -> (Option<ProcessingResponse>, bool) {
        use processing_request::Request as R;
        use processing_response::Response as P;
        match req {
            R::RequestHeaders(h) => {
                self.headers = header_map(&h);
                // Only prompt-reading strategies (prefix-cache), or a pool whose pods serve
                // different models, need the body: otherwise the pick is made now, and Envoy
                // need not buffer anything.
                let needs_body = match self.strategy() {
                    Ok(p) => p.needs_prompt() || self.pool.serves_several_models(),
                    Err(e) => {
                        self.record("unknown", e.outcome(), std::time::Duration::ZERO);
                        return (Some(refusal(&e)), true);
                    }
                };
                if h.end_of_stream || !needs_body {
                    return match self.pick() {
                        Ok(mutation) => {
                            let mut resp = respond(P::RequestHeaders(HeadersResponse {
                                response: Some(routed(mutation)),
                            }));
                            resp.mode_override = Some(mode(BodySendMode::None));
                            (Some(resp), false)
                        }
                        Err(e) => (Some(refusal(&e)), true),
                    };
                }
                let mut resp = respond(P::RequestHeaders(HeadersResponse {
                    response: Some(CommonResponse::default()),
                }));
                resp.mode_override = Some(mode(BodySendMode::Buffered));
                (Some(resp), false)
            }
            R::RequestBody(b) => {
                if self.body.len() + b.body.len() > MAX_BODY {
                    return (
                        Some(immediate(
                            413,
                            "request_too_large",
                            &format!("request body over {MAX_BODY} bytes"),
                        )),
                        true,
                    );
                }
                self.body.extend_from_slice(&b.body);
                // Not the end yet, or already picked on the headers: let it through.
                if !b.end_of_stream || self.in_flight.is_some() {
                    return (
                        Some(respond(P::RequestBody(BodyResponse {
                            response: Some(CommonResponse::default()),
                        }))),
                        false,
                    );
                }
                match self.pick() {
                    Ok(mutation) => (
                        Some(respond(P::RequestBody(BodyResponse {
                            response: Some(routed(mutation)),
                        }))),
                        false,
                    ),
                    Err(e) => (Some(refusal(&e)), true),
                }
            }
            R::RequestTrailers(_) => (
                Some(respond(P::RequestTrailers(TrailersResponse::default()))),
                false,
            ),
            R::ResponseHeaders(h) => {
                let mutation = self
                    .in_flight
                    .as_ref()
                    .map(|g| set_headers(&[(TARGET_POD, g.pod().id.as_str())]));
                if h.end_of_stream {
                    self.finish();
                }
                (
                    Some(respond(P::ResponseHeaders(HeadersResponse {
                        response: Some(CommonResponse {
                            header_mutation: mutation,
                            ..Default::default()
                        }),
                    }))),
                    false,
                )
            }
            R::ResponseBody(b) => {
                if !b.body.is_empty() {
                    if let Some(g) = &mut self.in_flight {
                        g.answered();
                    }
                }
                self.response_tail.extend_from_slice(&b.body);
                if self.response_tail.len() > RESPONSE_TAIL {
                    let cut = self.response_tail.len() - RESPONSE_TAIL;
                    self.response_tail.drain(..cut);
                }
                if b.end_of_stream {
                    self.finish();
                }
                (
                    Some(respond(P::ResponseBody(BodyResponse {
                        response: Some(CommonResponse::default()),
                    }))),
                    b.end_of_stream,
                )
            }
            R::ResponseTrailers(_) => {
                self.finish();
                (
                    Some(respond(P::ResponseTrailers(TrailersResponse::default()))),
                    true,
                )
            }
        }
    }

    /// Parses the collected body (when the strategy reads the prompt) and picks; the pod
    /// headers to set, or why not.
    fn pick(&mut self) -> Result<HeaderMutation, PickError> {
        let started = Instant::now();
        let header = |name: &str| self.headers.get(name).map(String::as_str);
        let meta = RequestMeta {
            strategy: header(ROUTING_STRATEGY),
            session: header(self.pool.session_header()),
            user: header("user"),
        };
        let result = self.pool.choose(meta, Some(&self.body));
        let (strategy, outcome) = match &result {
            Ok(c) => (c.strategy_name(), "picked"),
            Err(e) => ("unknown", e.outcome()),
        };
        self.record(strategy, outcome, started.elapsed());
        let mut choice = result?;
        // Envoy sends to one destination: the first choice only.
        let Some((pod, guard)) = choice.next(&self.pool, 1) else {
            return Err(PickError::NoPod {
                pool: self.pool.name().to_string(),
                reason: picker::NoPod::NoPods,
            });
        };
        self.in_flight = Some(guard);
        let addr = pod.id.as_str();
        Ok(set_headers(&[
            (TARGET_POD, addr),
            (DESTINATION_ENDPOINT, addr),
        ]))
    }

    fn record(&self, strategy: &'static str, outcome: &'static str, took: std::time::Duration) {
        telemetry::Metrics::global().observe_pick(self.pool.name(), strategy, outcome, took);
    }

    /// The request's strategy: its `routing-strategy` header, else the pool's default.
    fn strategy(&self) -> Result<Arc<dyn picker::Picker>, PickError> {
        let header = self.headers.get(ROUTING_STRATEGY).map(String::as_str);
        Ok(self.pool.strategy(header)?)
    }

    /// The response ended: record its usage and release the pod.
    fn finish(&mut self) {
        if let Some(guard) = self.in_flight.take() {
            if let Some(n) = output_tokens(&self.response_tail) {
                guard.record_output_tokens(n);
            }
        }
    }
}

/// The local reply for a request that gets no pod.
fn refusal(e: &PickError) -> ProcessingResponse {
    immediate(e.status(), e.code(), &e.to_string())
}

fn header_map(h: &HttpHeaders) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for hv in h.headers.iter().flat_map(|m| &m.headers) {
        let value = if hv.raw_value.is_empty() {
            hv.value.clone()
        } else {
            String::from_utf8_lossy(&hv.raw_value).into_owned()
        };
        out.insert(hv.key.to_ascii_lowercase(), value);
    }
    out
}

fn set_headers(pairs: &[(&str, &str)]) -> HeaderMutation {
    HeaderMutation {
        set_headers: pairs
            .iter()
            .map(|(k, v)| HeaderValueOption {
                header: Some(HeaderValue {
                    key: k.to_string(),
                    raw_value: v.as_bytes().to_vec(),
                    ..Default::default()
                }),
                append_action: OVERWRITE,
                ..Default::default()
            })
            .collect(),
        remove_headers: Vec::new(),
    }
}

/// Asks Envoy for the request body in `request_body` mode, and for the response (headers, and
/// the body streamed, to read the usage and see the end).
fn mode(request_body: BodySendMode) -> ProcessingMode {
    ProcessingMode {
        request_body_mode: request_body as i32,
        response_header_mode: HeaderSendMode::Send as i32,
        response_body_mode: BodySendMode::Streamed as i32,
        ..Default::default()
    }
}

fn routed(mutation: HeaderMutation) -> CommonResponse {
    CommonResponse {
        header_mutation: Some(mutation),
        // The destination changed: Envoy must pick the route (cluster) again.
        clear_route_cache: true,
        ..Default::default()
    }
}

fn respond(r: processing_response::Response) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(r),
        ..Default::default()
    }
}

/// A local reply with a JSON error body in the OpenAI shape.
/// An answer Envoy sends in our place, with an OpenAI-shaped error body (the pool serves
/// OpenAI-compatible servers): the type by status, the stable code in `code`, as the gateway's
/// own errors have them.
fn immediate(status: u16, code: &str, message: &str) -> ProcessingResponse {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    });
    respond(processing_response::Response::ImmediateResponse(
        ImmediateResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers: Some(set_headers(&[("content-type", "application/json")])),
            body: body.to_string().into_bytes(),
            details: format!("switchyard_extproc_{code}"),
            ..Default::default()
        },
    ))
}

/// `usage.completion_tokens` (or Anthropic's `output_tokens`) from a JSON response, or from
/// the last SSE event that carries a usage.
pub fn output_tokens(tail: &[u8]) -> Option<u64> {
    let from = |v: &serde_json::Value| {
        let u = v.get("usage")?;
        u.get("completion_tokens")
            .or_else(|| u.get("output_tokens"))
            .and_then(serde_json::Value::as_u64)
    };
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(tail) {
        return from(&v);
    }
    let text = String::from_utf8_lossy(tail);
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| d.starts_with('{'))
        .find_map(|d| {
            serde_json::from_str::<serde_json::Value>(d)
                .ok()
                .and_then(|v| from(&v))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_from_json_and_streams() {
        assert_eq!(
            output_tokens(br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#),
            Some(7)
        );
        let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
                    data: {\"choices\":[],\"usage\":{\"completion_tokens\":3}}\n\n\
                    data: [DONE]\n\n";
        assert_eq!(output_tokens(sse), Some(3));
        assert_eq!(output_tokens(b"data: {\"choices\":[]}\n\n"), None);
    }
}
