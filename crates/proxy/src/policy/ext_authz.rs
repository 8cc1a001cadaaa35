//! `extAuthz` (route phase, request headers): asks an external service whether the request may
//! pass, the way Envoy's `ext_authz` filter does.
//!
//! - **gRPC** (`envoy.service.auth.v3.Authorization/Check`, the default): the `CheckRequest`
//!   carries the client's address and the request's method, path (with the query), host,
//!   scheme, protocol, id, size and headers (all of them, with Envoy's `:authority`,
//!   `:method`, `:path` and `:scheme`; only `includeRequestHeaders` when that is set; several
//!   values of a header are joined with `,`). No body is sent. Status `OK` admits: the
//!   `OkHttpResponse` headers named in `headersToUpstream` (all of them when the list is empty)
//!   replace those of the upstream request, and its `response_headers_to_add` go on the
//!   response. Any other status denies, with the `DeniedHttpResponse`'s status (403 when it
//!   sets none), headers and body. An `error_response` is a failure of the service (see
//!   below); when the failure is not admitted, the service's status, headers and body are
//!   what the caller gets.
//! - **HTTP**: the request's method, `pathPrefix` + path (with the query) and headers (as for
//!   gRPC, without the hop-by-hop ones), with no body, go to the service. 200 admits (the
//!   answer's headers named in `headersToUpstream` go upstream); any other status denies, with
//!   that status, the answer's headers and its body (up to 64 KiB).
//!
//! On LLM routes a denial is written in the caller's dialect (OpenAI or Anthropic error JSON,
//! code `ext_authz_denied`), keeping the service's status and headers; elsewhere the service's
//! body is sent as is, or `{"error": {"code": "ext_authz_denied", ...}}` when it sent none.
//!
//! A service that cannot be reached, fails, or does not answer within `timeout` (default
//! 200ms, the connection included) is a failure: logged (one warning each) and counted;
//! `failOpen` admits the request, otherwise it is refused with 403 `ext_authz_unavailable`.
//!
//! Not done: the request body (`with_request_body`), `headers_to_remove`, query parameter
//! edits, dynamic metadata, TLS to the service.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context, authorization_client::AuthorizationClient, check_response, AttributeContext,
    CheckRequest, CheckResponse, DeniedHttpResponse,
};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use tonic::transport::{Channel, Endpoint};

use super::PolicyError;
use crate::body::{self, Body};
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::pipeline::{Flow, Phase, PhaseFuture};
use crate::upstream::{Upstream, UpstreamKey};

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// The most of an HTTP service's denial body that is read and passed on.
const MAX_DENIAL_BODY: usize = 64 * 1024;
const DENIED: &str = "ext_authz_denied";
const UNAVAILABLE: &str = "ext_authz_unavailable";

pub struct ExtAuthz {
    service: Service,
    target: String,
    timeout: Duration,
    fail_open: bool,
    /// Request headers sent to the service; empty: all.
    include: Vec<HeaderName>,
    /// Headers of an OK answer copied upstream; empty: (gRPC) all the answer sets, (HTTP) none.
    to_upstream: Vec<HeaderName>,
    failures: AtomicU64,
}

enum Service {
    Grpc(Box<GrpcTarget>),
    Http {
        client: Box<Upstream>,
        /// `http://host:port` and the path prefix: the request's path is appended.
        base: String,
    },
}

impl std::fmt::Debug for ExtAuthz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtAuthz")
            .field("target", &self.target)
            .field("grpc", &matches!(self.service, Service::Grpc(_)))
            .field("timeout", &self.timeout)
            .field("fail_open", &self.fail_open)
            .finish()
    }
}

/// A gRPC service's address and its one channel, connected lazily on the first call (a
/// channel is built inside the runtime: compiling a config may happen outside one).
pub(crate) struct GrpcTarget {
    endpoint: Endpoint,
    channel: OnceLock<Channel>,
}

impl GrpcTarget {
    /// `host:port` (or `http://host:port`): cleartext HTTP/2.
    pub(crate) fn new(target: &str, timeout: Duration, what: &str) -> Result<Self, PolicyError> {
        let authority = plain_authority(target, what)?;
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| PolicyError::new(format!("{what}.target {target:?}: {e}")))?
            .connect_timeout(timeout)
            .timeout(timeout);
        Ok(GrpcTarget {
            endpoint,
            channel: OnceLock::new(),
        })
    }

    pub(crate) fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone()
    }
}

/// The `host:port` of a target given as `host:port` or `http://host:port`.
fn plain_authority(target: &str, what: &str) -> Result<http::uri::Authority, PolicyError> {
    let bare = match target.split_once("://") {
        None => target,
        Some(("http", rest)) => rest.trim_end_matches('/'),
        Some(_) => {
            return Err(PolicyError::new(format!(
                "{what}.target {target:?}: give `host:port` (cleartext; TLS to the service is \
                 not supported yet)"
            )))
        }
    };
    let authority: http::uri::Authority = bare
        .parse()
        .map_err(|_| PolicyError::new(format!("{what}.target {target:?} is not `host:port`")))?;
    if authority.port_u16().is_none() {
        return Err(PolicyError::new(format!(
            "{what}.target {target:?} needs a port (`host:port`)"
        )));
    }
    Ok(authority)
}

fn header_names(names: &[config::HeaderName], what: &str) -> Result<Vec<HeaderName>, PolicyError> {
    names
        .iter()
        .map(|n| {
            HeaderName::from_bytes(n.as_str().as_bytes()).map_err(|_| {
                PolicyError::new(format!("{what}: {:?} is not a header name", n.as_str()))
            })
        })
        .collect()
}

/// What the service said.
enum Answer {
    Allow {
        upstream: HeaderMap,
        response: HeaderMap,
    },
    Deny(Denial),
    /// The service reported its own failure (gRPC `error_response`): `failOpen` applies.
    Error(Denial),
}

struct Denial {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    message: String,
}

impl ExtAuthz {
    pub fn compile(c: &config::ExtAuthz) -> Result<ExtAuthz, PolicyError> {
        let timeout = c.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |d| d.0);
        let service = match c.protocol {
            Some(config::ExtAuthzProtocol::Http) => {
                let authority = plain_authority(&c.target, "extAuthz")?;
                let prefix = c.path_prefix.as_deref().unwrap_or("").trim_end_matches('/');
                let prefix = match prefix.is_empty() || prefix.starts_with('/') {
                    true => prefix.to_string(),
                    false => format!("/{prefix}"),
                };
                let key = UpstreamKey {
                    host: authority.host().trim_matches(['[', ']']).into(),
                    port: authority.port_u16().unwrap_or(80),
                    http2: false,
                    tls_fingerprint: None,
                    connect_timeout: timeout,
                    pool_idle_timeout: Duration::from_secs(90),
                    pool_max_idle: 64,
                };
                Service::Http {
                    client: Box::new(Upstream::new(&key, None)),
                    base: format!("http://{authority}{prefix}"),
                }
            }
            _ => Service::Grpc(Box::new(GrpcTarget::new(&c.target, timeout, "extAuthz")?)),
        };
        Ok(ExtAuthz {
            service,
            target: c.target.clone(),
            timeout,
            fail_open: c.fail_open,
            include: header_names(&c.include_request_headers, "extAuthz.includeRequestHeaders")?,
            to_upstream: header_names(&c.headers_to_upstream, "extAuthz.headersToUpstream")?,
            failures: AtomicU64::new(0),
        })
    }

    /// Calls that failed (unreachable, timed out, the service's own error) since compile.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    async fn check(&self, ctx: &mut RequestCtx<'_>, req: &Parts) -> Flow {
        let answer = match &self.service {
            Service::Grpc(target) => {
                let check = self.check_request(ctx, req);
                let mut call = tonic::Request::new(check);
                call.set_timeout(self.timeout);
                let mut client = AuthorizationClient::new(target.channel());
                match tokio::time::timeout(self.timeout, client.check(call)).await {
                    Err(_) => Err(self.late()),
                    Ok(Err(status)) => {
                        Err(format!("gRPC {:?}: {}", status.code(), status.message()))
                    }
                    Ok(Ok(resp)) => Ok(self.grpc_answer(resp.into_inner())),
                }
            }
            Service::Http { client, base } => {
                let call = self.http_request(req, base);
                match tokio::time::timeout(self.timeout, self.http_call(client, call)).await {
                    Err(_) => Err(self.late()),
                    Ok(r) => r,
                }
            }
        };
        match answer {
            Ok(Answer::Allow { upstream, response }) => {
                if !upstream.is_empty() {
                    ctx.ext_authz_headers = Some(upstream);
                }
                if !response.is_empty() {
                    let add = ctx.response_headers.get_or_insert_with(HeaderMap::new);
                    extend_replacing(add, response);
                }
                Flow::Continue
            }
            Ok(Answer::Deny(d)) => Flow::Respond(refuse(ctx, DENIED, d)),
            Ok(Answer::Error(d)) => self.failed(ctx, d.message.clone(), Some(d)),
            Err(why) => self.failed(ctx, why, None),
        }
    }

    fn late(&self) -> String {
        format!("no answer within {:?}", self.timeout)
    }

    /// The service failed: counted and logged; admitted with `failOpen`, else refused.
    fn failed(&self, ctx: &mut RequestCtx<'_>, why: String, own: Option<Denial>) -> Flow {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            target_service = %self.target,
            error = %why,
            failures,
            fail_open = self.fail_open,
            "extAuthz: the authorization service failed"
        );
        if self.fail_open {
            return Flow::Continue;
        }
        let denial = own.unwrap_or(Denial {
            status: StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            message: "the authorization service could not be reached".into(),
        });
        Flow::Respond(refuse(ctx, UNAVAILABLE, denial))
    }

    /// The request's headers as the service sees them: all, or the configured ones.
    fn selected<'h>(
        &'h self,
        headers: &'h HeaderMap,
    ) -> impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)> {
        headers
            .iter()
            .filter(move |(name, _)| self.include.is_empty() || self.include.contains(name))
    }

    fn check_request(&self, ctx: &RequestCtx<'_>, req: &Parts) -> CheckRequest {
        let mut headers: HashMap<String, String> = HashMap::new();
        for (name, value) in self.selected(&req.headers) {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_string())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let path = req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path().to_string(), |p| p.as_str().to_string());
        let host = authority_of(req);
        let scheme = if ctx.conn.tls { "https" } else { "http" };
        if self.include.is_empty() {
            headers.insert(":authority".into(), host.clone());
            headers.insert(":method".into(), req.method.to_string());
            headers.insert(":path".into(), path.clone());
            headers.insert(":scheme".into(), scheme.into());
        }
        let peer = ctx.conn.peer;
        let source = attribute_context::Peer {
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: peer.ip().to_canonical().to_string(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(
                        peer.port() as u32,
                    )),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let http = attribute_context::HttpRequest {
            id: req
                .headers
                .get(&crate::headers::X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            method: req.method.to_string(),
            headers,
            path,
            host,
            scheme: scheme.into(),
            size: req
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1),
            protocol: match req.version {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_3 => "HTTP/3",
                _ => "HTTP/1.1",
            }
            .into(),
            ..Default::default()
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(source),
                request: Some(attribute_context::Request {
                    time: Some(envoy_types::pb::google::protobuf::Timestamp {
                        seconds: now.as_secs() as i64,
                        nanos: now.subsec_nanos() as i32,
                    }),
                    http: Some(http),
                }),
                ..Default::default()
            }),
        }
    }

    fn grpc_answer(&self, resp: CheckResponse) -> Answer {
        let (code, message) = match &resp.status {
            Some(s) => (s.code, s.message.clone()),
            // An empty answer denies (Envoy's reading).
            None => (2, String::new()),
        };
        let message = match message.is_empty() {
            true => "the authorization service denied the request".to_string(),
            false => message,
        };
        match (code, resp.http_response) {
            (_, Some(check_response::HttpResponse::ErrorResponse(d))) => Answer::Error(denial(
                d,
                format!("the authorization service failed: {message}"),
            )),
            (0, ok) => {
                let (headers, response) = match ok {
                    Some(check_response::HttpResponse::OkResponse(ok)) => (
                        to_header_map(&ok.headers),
                        to_header_map(&ok.response_headers_to_add),
                    ),
                    _ => Default::default(),
                };
                let upstream = match self.to_upstream.is_empty() {
                    true => headers,
                    false => self.pick_upstream(&headers),
                };
                Answer::Allow { upstream, response }
            }
            (_, Some(check_response::HttpResponse::DeniedResponse(d))) => {
                Answer::Deny(denial(d, message))
            }
            (_, _) => Answer::Deny(Denial {
                status: StatusCode::FORBIDDEN,
                headers: HeaderMap::new(),
                body: Bytes::new(),
                message,
            }),
        }
    }

    /// The answer's headers named in `headersToUpstream`.
    fn pick_upstream(&self, answer: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        for name in &self.to_upstream {
            for value in answer.get_all(name) {
                out.append(name.clone(), value.clone());
            }
        }
        out
    }

    fn http_request(&self, req: &Parts, base: &str) -> Request<Body> {
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut out = Request::new(body::empty());
        *out.method_mut() = req.method.clone();
        *out.uri_mut() = match format!("{base}{path}").parse() {
            Ok(u) => u,
            Err(_) => base.parse().unwrap_or_default(),
        };
        let headers = out.headers_mut();
        for (name, value) in self.selected(&req.headers) {
            headers.append(name.clone(), value.clone());
        }
        crate::headers::strip_hop_by_hop(headers, false);
        for h in [
            header::CONTENT_LENGTH,
            header::EXPECT,
            header::CONTENT_ENCODING,
        ] {
            headers.remove(h);
        }
        let wants_host = self.include.is_empty() || self.include.contains(&header::HOST);
        if wants_host && !headers.contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(&authority_of(req)) {
                headers.insert(header::HOST, v);
            }
        }
        out
    }

    async fn http_call(&self, client: &Upstream, req: Request<Body>) -> Result<Answer, String> {
        let resp = client
            .client
            .request(req)
            .await
            .map_err(|e| crate::upstream::root_message(&e))?;
        let (parts, incoming) = resp.into_parts();
        if parts.status == StatusCode::OK {
            return Ok(Answer::Allow {
                upstream: self.pick_upstream(&parts.headers),
                response: HeaderMap::new(),
            });
        }
        let body = body::read_limited(body::from_incoming(incoming), MAX_DENIAL_BODY)
            .await
            .unwrap_or_default();
        let mut headers = parts.headers;
        crate::headers::strip_hop_by_hop(&mut headers, false);
        Ok(Answer::Deny(Denial {
            status: parts.status,
            headers,
            body,
            message: format!(
                "the authorization service denied the request ({})",
                parts.status.as_u16()
            ),
        }))
    }
}

/// `:authority` as the client sent it (with its port), or `Host`.
fn authority_of(req: &Parts) -> String {
    match req.uri.authority() {
        Some(a) => a.as_str().to_string(),
        None => req
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    }
}

fn denial(d: DeniedHttpResponse, message: String) -> Denial {
    let status = d
        .status
        .and_then(|s| u16::try_from(s.code).ok())
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::FORBIDDEN);
    Denial {
        status,
        headers: to_header_map(&d.headers),
        body: Bytes::from(d.body),
        message,
    }
}

/// Envoy's header list as a map; names and values that are not valid HTTP are left out.
fn to_header_map(list: &[core::HeaderValueOption]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for h in list.iter().filter_map(|o| o.header.as_ref()) {
        let value = match h.raw_value.is_empty() {
            true => HeaderValue::from_str(&h.value),
            false => HeaderValue::from_bytes(&h.raw_value),
        };
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.key.as_bytes()), value) {
            out.append(name, value);
        }
    }
    out
}

/// Sets every header of `from` in `into`, replacing values of the same name.
fn extend_replacing(into: &mut HeaderMap, from: HeaderMap) {
    for name in from.keys() {
        into.remove(name);
    }
    for (name, value) in &from {
        into.append(name.clone(), value.clone());
    }
}

/// The refusal the caller gets: the service's status and headers; on LLM routes the caller's
/// error dialect, elsewhere the service's body (or the gateway's JSON when it sent none).
fn refuse(ctx: &mut RequestCtx<'_>, code: &'static str, d: Denial) -> Response<Body> {
    ctx.error = Some(code);
    let own_body = ctx.dialect.is_none() && !d.body.is_empty();
    let mut resp = match ctx.dialect {
        Some(format) => ProxyError::new(d.status, code, d.message)
            .with_format(format)
            .into_response(),
        None if own_body => {
            let mut r = Response::new(body::full(d.body));
            *r.status_mut() = d.status;
            r
        }
        None => ProxyError::new(d.status, code, d.message).into_response(),
    };
    let mut headers = d.headers;
    for h in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING] {
        headers.remove(h);
    }
    if !own_body {
        headers.remove(header::CONTENT_TYPE);
    }
    extend_replacing(resp.headers_mut(), headers);
    resp
}

impl Phase for ExtAuthz {
    fn request_headers(&self, _ctx: &mut RequestCtx<'_>, _req: &Parts) -> Flow {
        Flow::Wait
    }

    fn request_headers_async<'a>(
        &'a self,
        ctx: &'a mut RequestCtx<'_>,
        req: &'a Parts,
    ) -> PhaseFuture<'a> {
        Box::pin(self.check(ctx, req))
    }

    fn upstream_request(&self, ctx: &RequestCtx<'_>, req: &mut Request<Body>) {
        if let Some(h) = &ctx.ext_authz_headers {
            extend_replacing(req.headers_mut(), h.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_plain_host_port() {
        assert!(plain_authority("127.0.0.1:9000", "t").is_ok());
        assert!(plain_authority("http://authz:9000", "t").is_ok());
        assert!(plain_authority("https://authz:9000", "t").is_err());
        assert!(plain_authority("authz", "t").is_err());
        assert!(plain_authority("not a host", "t").is_err());
    }

    #[test]
    fn envoy_headers_become_a_map() {
        let list = vec![
            core::HeaderValueOption {
                header: Some(core::HeaderValue {
                    key: "x-a".into(),
                    value: "1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            core::HeaderValueOption {
                header: Some(core::HeaderValue {
                    key: "x-b".into(),
                    raw_value: b"raw".to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            core::HeaderValueOption {
                header: Some(core::HeaderValue {
                    key: "bad name".into(),
                    value: "x".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        let m = to_header_map(&list);
        assert_eq!(m.len(), 2);
        assert_eq!(m["x-a"], "1");
        assert_eq!(m["x-b"], "raw");
    }

    #[test]
    fn denial_status_defaults_to_403() {
        let d = denial(DeniedHttpResponse::default(), "m".into());
        assert_eq!(d.status, StatusCode::FORBIDDEN);
        let d = denial(
            DeniedHttpResponse {
                status: Some(envoy_types::pb::envoy::r#type::v3::HttpStatus { code: 401 }),
                ..Default::default()
            },
            "m".into(),
        );
        assert_eq!(d.status, StatusCode::UNAUTHORIZED);
    }
}
