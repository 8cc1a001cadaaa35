//! Backend adapters: one file per kind of backend, each implementing [`Adapter`]. The pipeline
//! calls the trait and never asks which kind it has; [`Backend`] is the one list of kinds.
//!
//! Adding a kind = its file here, its variant in [`Backend`] (and the `each!` arms), its
//! config type, and its arm in `snapshot::compile_backend`.

pub mod a2a;
pub mod a2a_affinity;
pub mod a2a_list;
pub mod ai;
pub mod host;
pub mod mcp;
pub mod pool;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};

use crate::body::{self, Body};
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::policy::{rewrite_authority, rewrite_path, BackendPolicies};
use crate::upstream::{is_connect_error, root_message, Upstream};

/// What an adapter decides from the request head, before any body is read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Head {
    /// The adapter reads the request body, or may send it more than once (to another pod),
    /// so it is buffered (up to the limit).
    pub needs_whole_body: bool,
    /// The API dialect the caller speaks, when errors must be answered in it.
    pub dialect: Option<llm::Format>,
}

/// Which backends may serve a request (see [`Adapter::affinity`]).
pub enum Affinity {
    /// Any, in the route's order.
    Any,
    /// Only this one (index into the route's backends).
    Backend(usize),
    /// None: the request names state no backend has; answer this (the error code for
    /// telemetry, the response).
    Refuse(&'static str, Response<Body>),
}

/// What [`Adapter::refusal`] reads besides the refusal.
#[derive(Clone, Copy, Debug)]
pub struct RefusalNeeds {
    pub request_body: bool,
}

/// One attempt's request as the pipeline hands it to an adapter.
pub struct Attempt<'r> {
    /// The client's request head. Its headers may have been moved out (a body that cannot be
    /// resent makes this the only attempt): read `headers`.
    pub parts: &'r Parts,
    /// The request headers to send (hop-by-hop removed, forwarding headers set).
    pub headers: HeaderMap,
    pub body: Body,
    /// The whole body, when the pipeline buffered it.
    pub raw: Option<&'r Bytes>,
}

/// How an attempt failed.
pub enum Failure {
    /// The request never reached the upstream: another backend or pod may be tried.
    Connect(String),
    Fatal(ProxyError),
}

/// One kind of backend.
pub trait Adapter {
    /// The kind's name in telemetry (`backend.kind`).
    fn kind(&self) -> &'static str;

    /// Decided once from the request head: body needs and error dialect.
    fn head(&self, _req: &Parts) -> Head {
        Head::default()
    }

    /// Response headers a browser client must be allowed to read when CORS applies.
    fn cors_expose(&self) -> Option<HeaderValue> {
        None
    }

    /// The gateway's error for this request in the protocol's own shape, when the kind has
    /// one (an A2A binding's); `None`: the gateway's JSON (or the LLM caller's dialect).
    fn error_response(&self, _ctx: &RequestCtx<'_>, _e: &ProxyError) -> Option<Response<Body>> {
        None
    }

    /// Asked of the first backend in the order with the request head (`body` `None`), and
    /// again with the whole body when the route's policies read it: what the protocol says
    /// about the request, recorded before the route's policies run so they can decide on it
    /// (the A2A operation for `authorization` rules) and so their refusals take its shape.
    fn classify_early(&self, _ctx: &mut RequestCtx<'_>, _req: &Parts, _body: Option<&Bytes>) {}

    /// Whether a route policy's early answer is passed through [`Adapter::refusal`], and
    /// whether that needs the request body (a JSON-RPC refusal echoes the request id).
    fn shapes_refusals(&self, _ctx: &RequestCtx<'_>) -> Option<RefusalNeeds> {
        None
    }

    /// A route policy refused the request (401, 403, 429, a guard): the refusal in the
    /// protocol's own shape. `answer`: the refusal's body as the policy wrote it; `request`:
    /// the request body, when [`RefusalNeeds::request_body`] asked for it and it could be
    /// read.
    fn refusal(
        &self,
        _ctx: &RequestCtx<'_>,
        resp: Response<Body>,
        _answer: &Bytes,
        _request: Option<&Bytes>,
    ) -> Response<Body> {
        resp
    }

    /// Asked of the first backend in the order once the request (and its body, when
    /// [`Head::needs_whole_body`]) is read: whether state the request names lives on one
    /// backend of the route (an A2A task sealed into its id), which then serves it alone.
    fn affinity(&self, _req: &Parts, _body: Option<&Bytes>) -> Affinity {
        Affinity::Any
    }

    /// Sends one attempt: builds the upstream request (backend-phase policies, then the
    /// route's `upstream_request` phase, via [`UpstreamRequest::build`]), sends it, and shapes
    /// the response.
    fn send(
        &self,
        policies: &BackendPolicies,
        attempt: Attempt<'_>,
        ctx: &mut RequestCtx<'_>,
    ) -> impl std::future::Future<Output = Result<Response<Body>, Failure>> + Send;
}

/// Every kind of backend, dispatched statically.
pub enum Backend {
    Host(Box<host::HostBackend>),
    Ai(Box<ai::AiBackend>),
    Mcp(mcp::McpBackend),
    A2a(Box<a2a::A2aBackend>),
    Pool(Box<pool::PoolBackend>),
}

macro_rules! each {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            Backend::Host($b) => $e,
            Backend::Ai($b) => $e,
            Backend::Mcp($b) => $e,
            Backend::A2a($b) => $e,
            Backend::Pool($b) => $e,
        }
    };
}

impl Adapter for Backend {
    fn kind(&self) -> &'static str {
        each!(self, b => b.kind())
    }
    fn head(&self, req: &Parts) -> Head {
        each!(self, b => b.head(req))
    }
    fn cors_expose(&self) -> Option<HeaderValue> {
        each!(self, b => b.cors_expose())
    }
    fn error_response(&self, ctx: &RequestCtx<'_>, e: &ProxyError) -> Option<Response<Body>> {
        each!(self, b => b.error_response(ctx, e))
    }
    fn affinity(&self, req: &Parts, body: Option<&Bytes>) -> Affinity {
        each!(self, b => b.affinity(req, body))
    }
    fn classify_early(&self, ctx: &mut RequestCtx<'_>, req: &Parts, body: Option<&Bytes>) {
        each!(self, b => b.classify_early(ctx, req, body))
    }
    fn shapes_refusals(&self, ctx: &RequestCtx<'_>) -> Option<RefusalNeeds> {
        each!(self, b => b.shapes_refusals(ctx))
    }
    fn refusal(
        &self,
        ctx: &RequestCtx<'_>,
        resp: Response<Body>,
        answer: &Bytes,
        request: Option<&Bytes>,
    ) -> Response<Body> {
        each!(self, b => b.refusal(ctx, resp, answer, request))
    }
    async fn send(
        &self,
        policies: &BackendPolicies,
        attempt: Attempt<'_>,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<Response<Body>, Failure> {
        // The plain proxy's future inline; the others (2-4 KiB each) boxed, so that every
        // request's future is not as large as the largest adapter's.
        match self {
            Backend::Host(b) => b.send(policies, attempt, ctx).await,
            Backend::Ai(b) => crate::boxed_in_place(|| b.send(policies, attempt, ctx)).await,
            Backend::Mcp(b) => crate::boxed_in_place(|| b.send(policies, attempt, ctx)).await,
            Backend::A2a(b) => crate::boxed_in_place(|| b.send(policies, attempt, ctx)).await,
            Backend::Pool(b) => crate::boxed_in_place(|| b.send(policies, attempt, ctx)).await,
        }
    }
}

/// Sends a built request on an upstream client within the backend's timeout.
pub(crate) async fn call_upstream(
    upstream: &Upstream,
    req: Request<Body>,
    policies: &BackendPolicies,
) -> Result<Response<Body>, Failure> {
    let call = upstream.request(req);
    let result = match policies.backend_timeout {
        Some(t) => match tokio::time::timeout(t, call).await {
            Ok(r) => r,
            Err(_) => return Err(Failure::Fatal(ProxyError::upstream_timeout())),
        },
        None => call.await,
    };
    match result {
        Ok(resp) => Ok(match policies.idle_timeout {
            Some(idle) => resp.map(|b| body::from_upstream(b, idle)),
            None => resp.map(body::from_incoming),
        }),
        Err(e) if is_body_too_large(&*e) => Err(Failure::Fatal(ProxyError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            BODY_TOO_LARGE,
            "request body too large",
        ))),
        Err(e) if body::is_read_timeout(&*e) => Err(Failure::Fatal(ProxyError::request_timeout())),
        Err(e) if is_connect_error(&*e) => Err(Failure::Connect(format!(
            "upstream {} is unavailable: {}",
            upstream.address,
            root_message(&*e)
        ))),
        Err(e) => Err(Failure::Fatal(ProxyError::upstream_error(format!(
            "upstream {} failed: {}",
            upstream.address,
            root_message(&*e)
        )))),
    }
}

/// Marks a body-limit failure inside the attempt loop; mapped to the 413 with the limit.
pub(crate) const BODY_TOO_LARGE: &str = "payload_too_large";

pub(crate) fn is_body_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The upstream request of one attempt, before the backend-phase policies.
pub(crate) struct UpstreamRequest<'a> {
    pub upstream: &'a Upstream,
    /// Host to send instead of the client's (an LLM provider's own host, a pod).
    pub authority: Option<&'a Authority>,
    /// Path to send instead of the client's (an LLM provider's own path).
    pub path: Option<PathAndQuery>,
    /// Apply `backendAuth` as `Authorization: Bearer` (adapters with their own scheme don't).
    pub backend_auth: bool,
}

impl<'a> UpstreamRequest<'a> {
    pub fn to(upstream: &'a Upstream) -> Self {
        UpstreamRequest {
            upstream,
            authority: None,
            path: None,
            backend_auth: true,
        }
    }

    /// The backend phase, in order: `urlRewrite`, `requestHeaderModifier` (which may set
    /// `Host`), `backendAuth`; then the route's `upstream_request` phase.
    pub fn build(
        self,
        parts: &Parts,
        mut headers: HeaderMap,
        body: Body,
        policies: &BackendPolicies,
        ctx: &RequestCtx<'_>,
    ) -> Result<Request<Body>, ProxyError> {
        let bad_host = || ProxyError::bad_request("invalid host authority");
        // The client's Host: the URI authority (HTTP/2, absolute-form) or the Host header.
        let mut authority: Option<Authority> = match (self.authority, parts.uri.authority()) {
            (Some(a), _) => Some(a.clone()),
            (None, Some(a)) => Some(a.clone()),
            (None, None) => headers
                .get(header::HOST)
                .map(|h| Authority::try_from(h.as_bytes()))
                .transpose()
                .map_err(|_| bad_host())?,
        };
        let mut rewritten_path = None;
        if let Some(rw) = &policies.url_rewrite {
            if let Some(a) = &rw.authority {
                let current = authority.as_ref().map_or("", |a| a.as_str());
                authority = Some(
                    Authority::try_from(rewrite_authority(current, a)).map_err(|_| bad_host())?,
                );
            }
            if let Some(p) = &rw.path {
                rewritten_path = Some(rewrite_path(parts.uri.path(), p, ctx.matched_prefix));
            }
        }
        if let Some(m) = &policies.request_headers {
            // Modifiers may set `Host`; let them see and change it like any header.
            if let Some(a) = &authority {
                let v = HeaderValue::from_str(a.as_str()).map_err(|_| bad_host())?;
                headers.insert(header::HOST, v);
            }
            m.apply(&mut headers);
            if let Some(h) = headers.get(header::HOST) {
                authority = Some(Authority::try_from(h.as_bytes()).map_err(|_| bad_host())?);
            }
        }
        // The Host to send travels in the URI: hyper writes it as `Host` (HTTP/1.1) or
        // `:authority` (HTTP/2); the connector ignores it and dials the backend address.
        headers.remove(header::HOST);
        if let (Some(auth), true) = (&policies.backend_auth, self.backend_auth) {
            auth.apply(&mut headers);
        }
        let authority = match authority {
            Some(a) => a,
            None => Authority::try_from(&*self.upstream.address).map_err(|_| bad_host())?,
        };
        let path_and_query = match (self.path, rewritten_path) {
            (Some(p), _) => p,
            (None, Some(mut p)) => {
                if let Some(q) = parts.uri.query() {
                    p.push('?');
                    p.push_str(q);
                }
                PathAndQuery::try_from(p).map_err(|_| {
                    ProxyError::bad_request("rewritten path is not a valid URI path")
                })?
            }
            (None, None) => parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(if self.upstream.tls {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        uri.authority = Some(authority);
        uri.path_and_query = Some(path_and_query);
        let uri = Uri::from_parts(uri)
            .map_err(|_| ProxyError::bad_request("request target cannot be forwarded"))?;
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = if self.upstream.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *req.headers_mut() = headers;
        for phase in &ctx.route.policies.phases {
            phase.upstream_request(ctx, &mut req);
        }
        Ok(req)
    }
}

/// Sends `req` to `upstream` and notes the upstream and its time in the record.
pub(crate) async fn timed_call(
    upstream: &Upstream,
    req: Request<Body>,
    policies: &BackendPolicies,
    ctx: &mut RequestCtx<'_>,
) -> Result<Response<Body>, Failure> {
    ctx.upstream = Some(upstream.address.clone());
    let sent = std::time::Instant::now();
    let resp = call_upstream(upstream, req, policies).await;
    ctx.upstream_time = Some(sent.elapsed());
    resp
}
