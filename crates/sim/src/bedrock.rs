//! An Amazon Bedrock Runtime server: `Converse` and `ConverseStream`, with AWS Signature
//! Version 4 verification.
//!
//! References:
//! - `Converse` (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>):
//!   `POST /model/{modelId}/converse`, JSON in and out.
//! - `ConverseStream` (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html>):
//!   `POST /model/{modelId}/converse-stream`, answered as `application/vnd.amazon.eventstream`
//!   frames (encoded with `llm::eventstream`) with headers `:event-type`, `:content-type:
//!   application/json`, `:message-type: event`.
//! - Errors: status plus `{"message": "..."}` with the type in the `x-amzn-ErrorType` header
//!   (`ValidationException` 400, `AccessDeniedException` 403, `ResourceNotFoundException` 404,
//!   `ThrottlingException` 429, `InternalServerException` 500, `ServiceUnavailableException`
//!   503), spelled `Type:http://internal.amazon.com/coral/com.amazon.bedrock/` as the service
//!   sends it. Signature failures are 403 (see [`sigv4`]).
//!
//! Every request must be signed for service `bedrock` in `Options::region` with
//! `Options::access_key_id` / `secret_access_key` ([`sigv4::sign_request`] shows how; the AWS SDKs
//! and the gateway sign the same way). Content follows the other simulators (see [`reply`]):
//! the answer echoes the last user text; `toolUse` blocks when tools are configured and the prompt
//! mentions "weather" or a tool name; a turn of `toolResult` blocks is answered by quoting them;
//! `additionalModelRequestFields.thinking` adds a signed reasoning block; a `cachePoint` in
//! `system` reports the system prompt as `cacheReadInputTokens`. Faults (`x-sim-fault`): `429`
//! ThrottlingException, `500` InternalServerException, `529`/`503` ServiceUnavailableException,
//! `reset` (the stream is cut after a few frames), `slow`.

mod reply;
pub mod sigv4;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use llm::eventstream::Message;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::body::{self, Paced, Pacer};
use crate::{Fault, SimBody, SimServer};

pub use sigv4::{sign_request, Keys};

/// Credentials the simulator accepts by default (and `switchyard-sim --bedrock` uses).
pub const TEST_ACCESS_KEY_ID: &str = "AKIASIMULATOR0000000";
pub const TEST_SECRET_ACCESS_KEY: &str = "sim/secret/access/key/0000000000000000000";
pub const TEST_REGION: &str = "us-east-1";

/// Requests larger than this are refused rather than buffered.
const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct Options {
    /// Delay before the first streamed token.
    pub time_to_first_token: Duration,
    /// Delay between streamed tokens.
    pub inter_token_delay: Duration,
    /// A fault applied to every request; the `x-sim-fault` header overrides it per request.
    pub fault: Option<Fault>,
    /// The access key id requests must be signed with.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The region requests must be scoped to.
    pub region: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            time_to_first_token: Duration::ZERO,
            inter_token_delay: Duration::ZERO,
            fault: None,
            access_key_id: TEST_ACCESS_KEY_ID.into(),
            secret_access_key: TEST_SECRET_ACCESS_KEY.into(),
            region: TEST_REGION.into(),
        }
    }
}

impl Options {
    /// The keys requests are verified against.
    pub fn keys(&self) -> Keys<'_> {
        Keys {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            region: &self.region,
        }
    }
}

struct State {
    options: Options,
    next_id: AtomicU64,
}

/// Starts the simulator on `listener`.
pub fn serve(listener: TcpListener, options: Options) -> SimServer {
    crate::serve_service(listener, None, service(options))
}

/// Starts the simulator behind TLS on `listener`. ALPN offers `h2` and `http/1.1` unless `tls`
/// sets its own list.
pub fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    options: Options,
) -> SimServer {
    crate::serve_service(listener, Some(tls), service(options))
}

/// Binds 127.0.0.1:0 and starts the simulator.
pub async fn spawn(options: Options) -> std::io::Result<SimServer> {
    Ok(serve(TcpListener::bind("127.0.0.1:0").await?, options))
}

fn service(options: Options) -> crate::Service {
    let state = Arc::new(State {
        options,
        next_id: AtomicU64::new(1),
    });
    Arc::new(move |req| {
        let state = state.clone();
        Box::pin(async move { route(&state, req).await })
    })
}

/// A Bedrock error response.
fn error(status: StatusCode, error_type: &str, message: &str) -> Response<SimBody> {
    let mut resp = body::json(status, &json!({ "message": message }), None);
    let spelled = format!("{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/");
    if let Ok(v) = HeaderValue::from_str(&spelled) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}

fn validation(message: &str) -> Response<SimBody> {
    error(StatusCode::BAD_REQUEST, "ValidationException", message)
}

/// `(modelId, streaming)` of `/model/{modelId}/converse[-stream]`.
fn parse_path(path: &str) -> Option<(String, bool)> {
    let rest = path.strip_prefix("/model/")?;
    let (model, action) = rest.rsplit_once('/')?;
    let stream = match action {
        "converse" => false,
        "converse-stream" => true,
        _ => return None,
    };
    if model.is_empty() || model.contains('/') {
        return None;
    }
    Some((crate::gemini::oauth::percent_decode(model), stream))
}

async fn route(state: &State, req: Request<Incoming>) -> Response<SimBody> {
    // Any model id is served; Bedrock does not echo it in responses.
    let Some((_model, stream)) = parse_path(req.uri().path()) else {
        return error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "The requested operation is not recognized by the service.",
        );
    };
    if req.method() != Method::POST {
        return error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "The requested operation is not recognized by the service.",
        );
    }
    let (parts, incoming) = req.into_parts();
    // The body is part of the signature, so it is read before anything is trusted.
    let body = match Limited::new(incoming, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return validation("The request body could not be read or is too large."),
    };
    let keys = state.options.keys();
    if let Err(r) = sigv4::verify(
        &keys,
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
        SystemTime::now(),
    ) {
        return error(StatusCode::FORBIDDEN, r.error_type, &r.message);
    }
    let fault = Fault::for_request(&parts.headers, state.options.fault);
    if let Some(f) = fault.filter(|f| f.is_error_status()) {
        return fault_error(f);
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return validation("The request body must be a JSON object."),
        Err(e) => return validation(&format!("Malformed input request: {e}")),
    };
    let request = match reply::ConverseRequest::parse(&value) {
        Ok(r) => r,
        Err(message) => return validation(&message),
    };
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("sim{n:08}");
    let answer = reply::reply(&request, &request_id);
    let mut resp = if stream {
        let pacer = Pacer::new(
            state.options.time_to_first_token,
            state.options.inter_token_delay,
        );
        let events = reply::stream_events(&answer, pacer)
            .into_iter()
            .map(|(delay, kind, payload)| Paced {
                delay,
                data: Bytes::from(event_frame(kind, &payload)),
            })
            .collect();
        let mut resp = Response::new(body::streamed(events, fault));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.amazon.eventstream"),
        );
        resp
    } else {
        body::json(StatusCode::OK, &reply::response_json(&answer), fault)
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

/// One `ConverseStream` event as an event-stream frame.
pub fn event_frame(event_type: &str, payload: &Value) -> Vec<u8> {
    Message::new(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string(),
    )
    .encode()
}

fn fault_error(fault: Fault) -> Response<SimBody> {
    match fault {
        Fault::RateLimit => error(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            "Too many requests, please wait before trying again. (simulated by x-sim-fault)",
        ),
        Fault::Overloaded => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            "The server encountered an internal error while processing the request.",
        ),
    }
}
