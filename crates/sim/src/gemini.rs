//! A Google Gemini API and Vertex AI `generateContent` server, with its own OAuth token endpoint.
//!
//! References:
//! - Gemini API "Generating content" (<https://ai.google.dev/api/generate-content>):
//!   `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent` (`?alt=sse` for
//!   SSE `data:` events, otherwise one JSON array streamed); API key in the `x-goog-api-key`
//!   header or the `key` query parameter (<https://ai.google.dev/api#api-keys>).
//! - Vertex AI (<https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest/v1/projects.locations.publishers.models/generateContent>):
//!   `POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`
//!   (and `:streamGenerateContent`), `Authorization: Bearer <OAuth access token>`; tokens come
//!   from this simulator's `POST /token` ([`oauth`]).
//! - Google API errors (<https://cloud.google.com/apis/design/errors>): `{"error": {"code",
//!   "message", "status", "details"}}`. A wrong Gemini API key is 400 `INVALID_ARGUMENT` "API key
//!   not valid. Please pass a valid API key." with `ErrorInfo.reason` `API_KEY_INVALID`; a missing
//!   one is 403 `PERMISSION_DENIED`; a missing or unknown Vertex token is 401 `UNAUTHENTICATED`;
//!   faults give 429 `RESOURCE_EXHAUSTED`, 500 `INTERNAL`, 503 `UNAVAILABLE`.
//!
//! Deterministic behaviour is in [`reply`]: the answer echoes the last user text; function calls
//! follow [`crate::tools`] (a `functionCall` part when tools are declared and the prompt mentions
//! "weather" or a function name); a final turn of `functionResponse` parts is answered by quoting
//! them; `thinkingConfig.includeThoughts` adds a thought part and `thoughtsTokenCount`;
//! `cachedContent` reports the system instruction as `cachedContentTokenCount`.

pub mod oauth;
mod reply;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::body::{self, Paced, Pacer};
use crate::{Fault, JsonBodyError, SimBody, SimServer};

pub use oauth::{
    rsa_der_from_pem, test_service_account_json, Stats, CLOUD_PLATFORM_SCOPE, TEST_PROJECT_ID,
    TEST_SERVICE_ACCOUNT_EMAIL, TEST_SERVICE_ACCOUNT_PRIVATE_KEY_PEM,
    TEST_SERVICE_ACCOUNT_PUBLIC_KEY_PEM,
};

/// Token endpoint request bodies are small forms; anything bigger is refused.
const MAX_FORM_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct Options {
    /// Delay before the first streamed chunk.
    pub time_to_first_token: Duration,
    /// Delay between streamed chunks.
    pub inter_token_delay: Duration,
    /// A fault applied to every request; the `x-sim-fault` header overrides it per request.
    pub fault: Option<Fault>,
    /// When set, Gemini API requests must carry this key (`x-goog-api-key` or `?key=`).
    pub api_key: Option<String>,
    /// When set, Vertex requests need a bearer token from `POST /token`, which verifies the
    /// RS256 assertion against this public key (SubjectPublicKeyInfo or PKCS#1 PEM).
    pub service_account_public_key_pem: Option<String>,
    /// When set, the assertion's `iss` must be this email.
    pub service_account_email: Option<String>,
    /// `expires_in` of issued access tokens (short in tests to exercise refresh).
    pub token_lifetime: Duration,
    /// Counters shared with the test that started the simulator.
    pub stats: Arc<Stats>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            time_to_first_token: Duration::ZERO,
            inter_token_delay: Duration::ZERO,
            fault: None,
            api_key: None,
            service_account_public_key_pem: None,
            service_account_email: None,
            token_lifetime: Duration::from_secs(3600),
            stats: Arc::default(),
        }
    }
}

impl Options {
    /// Vertex auth on, against the test service account in `testdata/`.
    pub fn with_test_service_account(mut self) -> Self {
        self.service_account_public_key_pem = Some(TEST_SERVICE_ACCOUNT_PUBLIC_KEY_PEM.into());
        self.service_account_email = Some(TEST_SERVICE_ACCOUNT_EMAIL.into());
        self
    }
}

struct State {
    options: Options,
    /// PKCS#1 DER of `service_account_public_key_pem`, or why it is unusable.
    public_key_der: Option<Result<Vec<u8>, ()>>,
    tokens: oauth::TokenStore,
    next_id: AtomicU64,
    tls: bool,
}

/// Starts the simulator on `listener`.
pub fn serve(listener: TcpListener, options: Options) -> SimServer {
    crate::serve_service(listener, None, service(options, false))
}

/// Starts the simulator behind TLS on `listener`. ALPN offers `h2` and `http/1.1` unless `tls`
/// sets its own list.
pub fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    options: Options,
) -> SimServer {
    crate::serve_service(listener, Some(tls), service(options, true))
}

/// Binds 127.0.0.1:0 and starts the simulator.
pub async fn spawn(options: Options) -> std::io::Result<SimServer> {
    Ok(serve(TcpListener::bind("127.0.0.1:0").await?, options))
}

fn service(options: Options, tls: bool) -> crate::Service {
    let public_key_der = options
        .service_account_public_key_pem
        .as_deref()
        .map(|pem| rsa_der_from_pem(pem).ok_or(()));
    let state = Arc::new(State {
        options,
        public_key_der,
        tokens: oauth::TokenStore::default(),
        next_id: AtomicU64::new(1),
        tls,
    });
    Arc::new(move |req| {
        let state = state.clone();
        Box::pin(async move { route(&state, req).await })
    })
}

/// A Google API error response.
fn error(status: StatusCode, google_status: &str, message: &str) -> Response<SimBody> {
    let body =
        json!({"error": {"code": status.as_u16(), "message": message, "status": google_status}});
    body::json(status, &body, None)
}

fn invalid(message: &str) -> Response<SimBody> {
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

/// Which API a request addressed.
enum Api {
    Gemini,
    Vertex,
}

async fn route(state: &State, req: Request<Incoming>) -> Response<SimBody> {
    let path = req.uri().path().to_string();
    if path == "/token" {
        if req.method() != Method::POST {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "INVALID_ARGUMENT",
                "Use POST",
            );
        }
        return token(state, req).await;
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let Some((api, model, method)) = parse_path(&path) else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Method not found: {} {path}", req.method()),
        );
    };
    if req.method() != Method::POST {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found.");
    }
    let auth = match api {
        Api::Gemini => check_api_key(&state.options, req.headers(), &query),
        Api::Vertex => check_bearer(state, req.headers()),
    };
    if let Some(resp) = auth {
        return resp;
    }
    let fault = Fault::for_request(req.headers(), state.options.fault);
    if let Some(f) = fault.filter(|f| f.is_error_status()) {
        return fault_error(f);
    }
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Method not found: {other}"),
            )
        }
    };
    let body = match crate::read_json(req.into_body()).await {
        Ok(v) if v.is_object() => v,
        Ok(_) => return invalid("Invalid JSON payload received. Expected an object."),
        Err(JsonBodyError::Unreadable) => return invalid("Could not read the request body."),
        Err(JsonBodyError::Malformed(e)) => {
            return invalid(&format!("Invalid JSON payload received. {e}"))
        }
    };
    let request = match reply::GenerateRequest::parse(&body) {
        Ok(r) => r,
        Err(message) => return invalid(&message),
    };
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let response_id = format!("sim{n:012}");
    let meta = reply::ResponseMeta {
        model: &model,
        response_id: &response_id,
    };
    let answer = reply::reply(&request);
    if !stream {
        return body::json(
            StatusCode::OK,
            &reply::response_json(&request, &answer, &meta),
            fault,
        );
    }
    let pacer = Pacer::new(
        state.options.time_to_first_token,
        state.options.inter_token_delay,
    );
    let chunks = reply::stream_chunks(&request, &answer, &meta, pacer);
    let sse = query_param(&query, "alt").as_deref() == Some("sse");
    if sse {
        // Google frames each event with CRLF line endings.
        let events = chunks
            .into_iter()
            .map(|(delay, chunk)| Paced {
                delay,
                data: Bytes::from(format!("data: {chunk}\r\n\r\n")),
            })
            .collect();
        return body::event_stream(events, fault);
    }
    json_array_stream(chunks, fault)
}

/// Without `alt=sse`, `streamGenerateContent` streams one JSON array, an element at a time.
fn json_array_stream(chunks: Vec<(Duration, Value)>, fault: Option<Fault>) -> Response<SimBody> {
    let count = chunks.len();
    let events: Vec<Paced> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, (delay, chunk))| {
            let open = if i == 0 { "[" } else { ",\r\n" };
            let close = if i + 1 == count { "]" } else { "" };
            Paced {
                delay,
                data: Bytes::from(format!("{open}{chunk}{close}")),
            }
        })
        .collect();
    let mut resp = Response::new(body::streamed(events, fault));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    resp
}

/// `(api, model, method)` of a `…/models/{model}:{method}` path.
fn parse_path(path: &str) -> Option<(Api, String, &str)> {
    let (resource, method) = path.rsplit_once(':')?;
    let segments: Vec<&str> = resource.trim_start_matches('/').split('/').collect();
    let (api, model) = match segments.as_slice() {
        ["v1beta" | "v1", "models", model] => (Api::Gemini, *model),
        ["v1" | "v1beta1", "projects", _, "locations", _, "publishers", "google", "models", model] => {
            (Api::Vertex, *model)
        }
        _ => return None,
    };
    if model.is_empty() {
        return None;
    }
    Some((api, oauth::percent_decode(model), method))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| oauth::percent_decode(v))
}

fn check_api_key(options: &Options, headers: &HeaderMap, query: &str) -> Option<Response<SimBody>> {
    let expected = options.api_key.as_deref()?;
    let sent = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(query, "key"));
    match sent {
        None => Some(error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        )),
        Some(key) if key != expected => {
            let body = json!({"error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"}
                }]
            }});
            Some(body::json(StatusCode::BAD_REQUEST, &body, None))
        }
        Some(_) => None,
    }
}

fn check_bearer(state: &State, headers: &HeaderMap) -> Option<Response<SimBody>> {
    state.options.service_account_public_key_pem.as_ref()?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token.is_some_and(|t| state.tokens.is_valid(t)) {
        state.options.stats.count_vertex_request();
        return None;
    }
    Some(error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
    ))
}

fn fault_error(fault: Fault) -> Response<SimBody> {
    match fault {
        Fault::RateLimit => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota). (simulated by x-sim-fault)",
            );
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            resp
        }
        Fault::Overloaded => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
        ),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        ),
    }
}

/// `POST /token`: the OAuth 2.0 JWT-bearer grant.
async fn token(state: &State, req: Request<Incoming>) -> Response<SimBody> {
    let scheme = if state.tls { "https" } else { "http" };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let audience = format!("{scheme}://{host}/token");
    let form = match Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return token_error(&oauth::TokenError::invalid_request("unreadable body")),
    };
    let der = match &state.public_key_der {
        Some(Ok(der)) => der,
        Some(Err(())) => {
            return token_error(&oauth::TokenError::invalid_request(
                "the simulator's service_account_public_key_pem is not an RSA public key PEM",
            ))
        }
        None => {
            return token_error(&oauth::TokenError::invalid_request(
                "no service account is configured on this simulator",
            ))
        }
    };
    let policy = oauth::TokenPolicy {
        public_key_der: der,
        expected_issuer: state.options.service_account_email.as_deref(),
        audience: &audience,
        token_lifetime: state.options.token_lifetime,
    };
    match oauth::exchange(&form, &policy, &state.tokens, &state.options.stats) {
        Ok(body) => body::json(StatusCode::OK, &body, None),
        Err(e) => token_error(&e),
    }
}

fn token_error(e: &oauth::TokenError) -> Response<SimBody> {
    body::json(StatusCode::BAD_REQUEST, &e.body(), None)
}
