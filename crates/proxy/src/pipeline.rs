//! The request pipeline: listener -> route -> policies -> backend -> upstream -> response.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use crate::ai;
use crate::body::{self, Body, Buffered};
use crate::error::ProxyError;
use crate::headers;
use crate::observe::{CountingBody, ObservedBody, Trail};
use crate::policy::{rewrite_authority, rewrite_path, CorsOutcome, Effective};
use crate::routes::request_host;
use crate::snapshot::{BackendRt, BindKey, RouteRt, Snapshot, Target};
use crate::upstream::{is_connect_error, root_message, Upstream};
use crate::Shared;

/// What a connection knows about itself, shared by its requests.
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    pub bind: BindKey,
    /// The bind's name in metrics and logs.
    pub bind_label: Arc<str>,
    pub peer: SocketAddr,
    pub tls: bool,
}

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

pub async fn handle(
    ctx: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    // The snapshot current now serves this request to its end, even across a reload.
    let snapshot = ctx.shared.snapshot.load_full();
    let on_upgrade =
        headers::is_upgrade_request(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let request_id = headers::ensure_request_id(&mut parts.headers);
    let telemetry = snapshot.telemetry.clone();
    let mut trail = start_trail(&ctx, &telemetry, &parts, &request_id);
    let mut resp = match route_and_forward(
        &ctx,
        &snapshot,
        parts,
        body::from_incoming(body),
        on_upgrade,
        &mut trail,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "request failed");
            trail.rec.error = Some(e.code);
            e.into_response()
        }
    };
    resp.headers_mut()
        .insert(headers::X_REQUEST_ID.clone(), request_id);
    trail.rec.status = resp.status().as_u16();
    if telemetry.uses().response_headers() {
        trail.rec.response_headers = Some(resp.headers().clone());
    }
    Ok(resp.map(|b| http_body_util::BodyExt::boxed_unsync(ObservedBody::new(b, trail, telemetry))))
}

/// The record telemetry keeps of this request: always what metrics need, the rest only when
/// the access log, tracing or an expression asks for it.
fn start_trail(
    ctx: &ConnCtx,
    telemetry: &telemetry::Telemetry,
    parts: &Parts,
    request_id: &HeaderValue,
) -> Trail {
    let mut rec = telemetry::RequestRecord::new(
        parts.method.clone(),
        parts.uri.clone(),
        parts.version,
        ctx.peer,
        ctx.bind_label.clone(),
    );
    rec.tls = ctx.tls;
    if telemetry.records_requests() {
        rec.host = request_host(parts).map(|h| h.into_owned());
        rec.request_id = Some(request_id.clone());
    }
    if let Some(t) = telemetry.tracer() {
        rec.trace = Some(t.start(parts.headers.get(&TRACEPARENT)));
    }
    if telemetry.uses().request_headers() {
        rec.request_headers = Some(parts.headers.clone());
    }
    Trail::new(rec)
}

async fn route_and_forward(
    ctx: &ConnCtx,
    snapshot: &Snapshot,
    parts: Parts,
    body: Body,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    trail: &mut Trail,
) -> Result<Response<Body>, ProxyError> {
    let bind = snapshot.bind(&ctx.bind).ok_or_else(|| {
        ProxyError::upstream_unavailable("this port was removed from the configuration")
    })?;
    let host = request_host(&parts);
    let listener = bind.listener_for(host.as_deref()).ok_or_else(|| {
        ProxyError::new(
            StatusCode::NOT_FOUND,
            "no_listener",
            "no listener serves this host",
        )
    })?;
    let found = listener
        .routes
        .find(host.as_deref(), &parts)
        .ok_or_else(ProxyError::no_route)?;
    let route: &RouteRt = found.route;
    let matched_prefix = found.matcher.matched_prefix();
    trail.rec.listener = Some(listener.name.clone());
    trail.rec.route = Some(route.name.clone());

    let order = route.backend_order();
    let policies: &Effective = match order.is_empty() {
        true => &route.policies,
        false => &route.backends[order.get(0)].policies,
    };

    let mut cors_headers = None;
    if let Some(cors) = &policies.cors {
        match cors.evaluate(&parts.method, &parts.headers) {
            CorsOutcome::Preflight(resp) => return Ok(resp),
            CorsOutcome::Actual(h) => cors_headers = Some(h),
            CorsOutcome::NotCors => {}
        }
    }
    let mcp_route =
        !order.is_empty() && matches!(route.backends[order.get(0)].target, Target::Mcp(_));
    let finish = |mut resp: Response<Body>| {
        if let Some(m) = &policies.response_headers {
            m.apply(resp.headers_mut());
        }
        if let Some(h) = &cors_headers {
            for (k, v) in h {
                resp.headers_mut().insert(k.clone(), v.clone());
            }
            // A browser MCP client must read the session id to continue its session.
            if mcp_route
                && !resp
                    .headers()
                    .contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS)
            {
                resp.headers_mut().insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static("mcp-session-id"),
                );
            }
        }
        resp
    };
    if let Some(jwt) = &policies.jwt_auth {
        match jwt.check(&parts.headers) {
            Ok(claims) => trail.rec.jwt = claims,
            Err(refusal) => {
                trail.rec.error = Some("unauthenticated");
                return Ok(finish(refusal.respond()));
            }
        }
    }
    if let Some(d) = &policies.direct_response {
        return Ok(finish(d.respond()));
    }
    if let Some(r) = &policies.redirect {
        let authority = original_authority(&parts).unwrap_or_default();
        let scheme = if ctx.tls { "https" } else { "http" };
        return Ok(finish(r.respond(
            scheme,
            &authority,
            parts.uri.path(),
            parts.uri.query(),
            matched_prefix,
        )));
    }
    if order.is_empty() {
        return Err(ProxyError::upstream_unavailable(
            "the route has no backend to send to",
        ));
    }
    // An LLM call answers errors in the caller's own dialect.
    let ai_call = match &route.backends[order.get(0)].target {
        Target::Ai(ai) => Some(ai.classify(parts.uri.path())),
        _ => None,
    };
    let resp = forward(
        ctx,
        snapshot,
        route,
        &order,
        policies,
        parts,
        body,
        on_upgrade,
        matched_prefix,
        ai_call,
        trail,
    )
    .await
    .map_err(|e| match ai_call {
        Some(call) => e.with_format(call.ingress),
        None => e,
    })?;
    Ok(finish(resp))
}

/// Body limits and buffering, the attempts, and the upgrade hand-off.
#[allow(clippy::too_many_arguments)]
async fn forward(
    ctx: &ConnCtx,
    snapshot: &Snapshot,
    route: &RouteRt,
    order: &crate::snapshot::smallvec_like::Order,
    policies: &Effective,
    mut parts: Parts,
    body: Body,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    matched_prefix: Option<&str>,
    ai_call: Option<ai::AiCall>,
    trail: &mut Trail,
) -> Result<Response<Body>, ProxyError> {
    let upgrade = on_upgrade.is_some();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarded(&mut parts.headers, ctx.peer.ip(), ctx.tls);

    let body = match snapshot.limits.max_request_body_bytes {
        Some(limit) => {
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                return Err(ProxyError::payload_too_large(limit as usize));
            }
            http_body_util::BodyExt::boxed_unsync(http_body_util::Limited::new(
                body,
                limit as usize,
            ))
        }
        None => body,
    };
    let too_large = || {
        ProxyError::payload_too_large(snapshot.limits.max_request_body_bytes.unwrap_or(0) as usize)
    };

    // Buffer the body only when it may have to be sent more than once, an adapter reads it,
    // or a telemetry expression reads `request.body`.
    let capture_body = snapshot.telemetry.uses().request_body();
    let may_resend = !upgrade
        && (policies.retry.as_ref().is_some_and(|r| r.attempts > 1)
            || order.len() > 1
            || ai_call.is_some_and(|c| c.needs_body())
            || order_uses_pool(route, order)
            || capture_body);
    let mut body = if may_resend {
        match body::buffer_for_replay(body, snapshot.limits.max_buffered_body_bytes).await {
            Ok(Buffered::Complete(b)) => Replay::Bytes(b),
            Ok(Buffered::Streaming(s)) => Replay::Once(Some(s)),
            Err(e) if is_body_too_large(e.as_ref()) => return Err(too_large()),
            Err(e) => {
                return Err(ProxyError::bad_request(format!(
                    "reading request body: {e}"
                )))
            }
        }
    } else {
        Replay::Once(Some(body))
    };
    match &mut body {
        Replay::Bytes(b) => {
            trail.rec.bytes_in = b.len() as u64;
            if capture_body {
                trail.rec.request_body = Some(b.clone());
            }
        }
        Replay::Once(once) if snapshot.telemetry.records_requests() => {
            if let Some(b) = once.take() {
                let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
                trail.bytes_in = Some(count.clone());
                *once = Some(http_body_util::BodyExt::boxed_unsync(CountingBody::new(
                    b, count,
                )));
            }
        }
        Replay::Once(_) => {}
    }

    let attempt_all =
        forward_with_retries(route, order, &mut parts, &mut body, matched_prefix, trail);
    let result = match policies.request_timeout {
        Some(t) => tokio::time::timeout(t, attempt_all)
            .await
            .unwrap_or_else(|_| Err(ProxyError::upstream_timeout())),
        None => attempt_all.await,
    };
    let mut resp = result.map_err(|e| {
        if e.code == BODY_TOO_LARGE {
            too_large()
        } else {
            e
        }
    })?;

    if upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(downstream) = on_upgrade {
            let upstream = hyper::upgrade::on(&mut resp);
            tokio::spawn(tunnel(downstream, upstream));
        }
        headers::strip_hop_by_hop(resp.headers_mut(), true);
    } else {
        headers::strip_hop_by_hop(resp.headers_mut(), false);
    }
    Ok(resp)
}

/// A pool picks by the request body (model, prompt) and may resend it to the next pod.
fn order_uses_pool(route: &RouteRt, order: &crate::snapshot::smallvec_like::Order) -> bool {
    (0..order.len()).any(|i| match &route.backends[order.get(i)].target {
        Target::Pool(_) => true,
        Target::Ai(ai) => ai.pool.is_some(),
        _ => false,
    })
}

/// A request body that is either replayable or can be sent exactly once.
enum Replay {
    Bytes(Bytes),
    Once(Option<Body>),
}

impl Replay {
    fn take(&mut self) -> Option<Body> {
        match self {
            Replay::Bytes(b) if b.is_empty() => Some(body::empty()),
            Replay::Bytes(b) => Some(body::full(b.clone())),
            Replay::Once(b) => b.take(),
        }
    }
    fn can_resend(&self) -> bool {
        matches!(self, Replay::Bytes(_))
    }
    fn bytes(&self) -> Option<&Bytes> {
        match self {
            Replay::Bytes(b) => Some(b),
            Replay::Once(_) => None,
        }
    }
}

async fn forward_with_retries(
    route: &RouteRt,
    order: &crate::snapshot::smallvec_like::Order,
    parts: &mut Parts,
    body: &mut Replay,
    matched_prefix: Option<&str>,
    trail: &mut Trail,
) -> Result<Response<Body>, ProxyError> {
    let first = &route.backends[order.get(0)];
    let retry = first.policies.retry.as_ref();
    let max_status_retries = retry.map_or(0, |r| r.attempts.saturating_sub(1));
    let mut retries_done = 0u32;
    let mut backend_pos = 0usize;
    loop {
        let backend = &route.backends[order.get(backend_pos % order.len())];
        let Some(req_body) = body.take() else {
            return Err(ProxyError::upstream_unavailable(
                "the request body was already sent and cannot be replayed",
            ));
        };
        // A body that cannot be resent means this is the only try: move the headers.
        let headers = if body.can_resend() {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        let raw = body.bytes();
        trail.rec.backend = Some(backend.name.clone());
        let outcome = send_once(
            backend,
            parts,
            headers,
            req_body,
            raw,
            matched_prefix,
            trail,
        )
        .await;
        let more_retries = retries_done < max_status_retries && body.can_resend();
        match outcome {
            Ok(resp) => {
                let retriable = retry.is_some_and(|r| r.codes.contains(&resp.status().as_u16()));
                if !(retriable && more_retries) {
                    return Ok(resp);
                }
                tracing::debug!(status = resp.status().as_u16(), backend = %backend.name, "retrying");
            }
            Err(Failure::Connect(msg)) => {
                let untried_backends = backend_pos + 1 < order.len();
                if !(body.can_resend() && (untried_backends || more_retries)) {
                    return Err(ProxyError::upstream_unavailable(msg));
                }
                tracing::debug!(backend = %backend.name, error = %msg, "connect failed, trying next");
                if untried_backends {
                    // Failing over to another backend does not spend a retry.
                    backend_pos += 1;
                    continue;
                }
            }
            Err(Failure::Fatal(e)) => return Err(e),
        }
        if let Some(r) = retry {
            tokio::time::sleep(r.delay(retries_done)).await;
        }
        retries_done += 1;
        backend_pos += 1;
    }
}

pub(crate) enum Failure {
    /// The request never reached the upstream.
    Connect(String),
    Fatal(ProxyError),
}

async fn send_once(
    backend: &BackendRt,
    parts: &Parts,
    mut headers: HeaderMap,
    body: Body,
    raw: Option<&Bytes>,
    matched_prefix: Option<&str>,
    trail: &mut Trail,
) -> Result<Response<Body>, Failure> {
    if let Some(t) = &trail.rec.trace {
        // The upstream continues this trace, under the gateway's span.
        headers.insert(TRACEPARENT.clone(), t.traceparent());
    }
    let upstream = match &backend.target {
        Target::Upstream(u) => {
            trail.rec.backend_kind = Some("host");
            u
        }
        Target::Ai(ai) => {
            trail.rec.backend_kind = Some("ai");
            trail.rec.upstream = Some(ai.upstream.address.clone());
            let call = ai.classify(parts.uri.path());
            let slot = trail.llm_slot();
            let fwd = match ai::plan(ai, call, parts, body, raw, &slot).map_err(Failure::Fatal)? {
                ai::Plan::Local(resp) => return Ok(resp),
                ai::Plan::Forward(f) => f,
            };
            ai::provider_headers(ai, &mut headers, &fwd);
            if let Some(pt) = &ai.pool {
                let resend = fwd.payload.clone().or_else(|| raw.cloned());
                let as_ai = AiPod {
                    ai,
                    path: fwd.path.clone(),
                    payload: fwd.payload.as_ref(),
                };
                let (resp, served) = send_to_pool(
                    pt,
                    backend,
                    parts,
                    &headers,
                    (fwd.body, raw, resend),
                    matched_prefix,
                    Some(&as_ai),
                    trail,
                )
                .await?;
                let resp = ai::shape_response(resp, fwd.shape)
                    .await
                    .map_err(Failure::Fatal)?;
                return Ok(served.attach(resp, trail));
            }
            let target = UpstreamTarget {
                authority: Some(&ai.authority),
                path: fwd.path,
                backend_auth: false,
            };
            let mut req = build_upstream_request(
                parts,
                headers,
                fwd.body,
                &backend.policies,
                &ai.upstream,
                matched_prefix,
                target,
            )
            .map_err(Failure::Fatal)?;
            ai::authorize(ai, &mut req, fwd.payload.as_ref())
                .await
                .map_err(Failure::Fatal)?;
            let sent = std::time::Instant::now();
            let resp = call_upstream(&ai.upstream, req, &backend.policies).await?;
            trail.rec.upstream_time = Some(sent.elapsed());
            return ai::shape_response(resp, fwd.shape)
                .await
                .map_err(Failure::Fatal);
        }
        Target::Mcp(m) => {
            trail.rec.backend_kind = Some("mcp");
            if let Some(modifier) = &backend.policies.request_headers {
                modifier.apply(&mut headers);
            }
            let mut req = Request::new(body);
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = parts.uri.clone();
            *req.headers_mut() = headers;
            let mut observed = mcp::Observed::default();
            let claims = trail.rec.jwt.clone();
            let down = mcp::Downstream {
                source: trail.rec.peer,
                jwt: claims.as_deref(),
                observed: &mut observed,
            };
            let resp = m.gateway.serve(req, down).await;
            trail.rec.mcp = Some(telemetry::McpRecord {
                method: observed.method,
                tool: observed.tool,
                target: observed.target,
                session_id: observed.session_id,
            });
            return Ok(resp);
        }
        Target::Pool(pt) => {
            trail.rec.backend_kind = Some("pool");
            let bodies = (body, raw, raw.cloned());
            let (resp, served) = send_to_pool(
                pt,
                backend,
                parts,
                &headers,
                bodies,
                matched_prefix,
                None,
                trail,
            )
            .await?;
            return Ok(served.attach(resp, trail));
        }
    };
    let req = build_upstream_request(
        parts,
        headers,
        body,
        &backend.policies,
        upstream,
        matched_prefix,
        UpstreamTarget::default(),
    )
    .map_err(Failure::Fatal)?;
    trail.rec.upstream = Some(upstream.address.clone());
    let sent = std::time::Instant::now();
    let resp = call_upstream(upstream, req, &backend.policies).await;
    trail.rec.upstream_time = Some(sent.elapsed());
    resp
}

/// The `ai` adapter's part of a pooled call: the pod stands where the provider's host would.
struct AiPod<'a> {
    ai: &'a ai::AiTarget,
    path: Option<PathAndQuery>,
    /// The body's bytes when the adapter holds them (request signing reads them).
    payload: Option<&'a Bytes>,
}

/// The pod that answered, counted in flight until the response body ends.
struct Served(Arc<picker::pool::Pod>, picker::pool::InFlight);

impl Served {
    /// Names the pod on the response and hands its in-flight guard to the response body.
    fn attach(self, mut resp: Response<Body>, trail: &mut Trail) -> Response<Body> {
        crate::pool::mark_response(&mut resp, &self.0);
        trail.pod = Some(self.1);
        resp
    }
}

/// Sends to a pool's pods in the picker's order; a refused connection ejects the pod and the
/// next one is tried with the body resent. `bodies`: the body to send first, the client's
/// bytes (what the picker parses), and the bytes to resend (`None`: no second try).
#[allow(clippy::too_many_arguments)]
async fn send_to_pool(
    pt: &crate::pool::PoolTarget,
    backend: &BackendRt,
    parts: &Parts,
    headers: &HeaderMap,
    bodies: (Body, Option<&Bytes>, Option<Bytes>),
    matched_prefix: Option<&str>,
    as_ai: Option<&AiPod<'_>>,
    trail: &mut Trail,
) -> Result<(Response<Body>, Served), Failure> {
    let (body, raw, resend) = bodies;
    let mut choice = pt.choose(&parts.headers, raw).map_err(Failure::Fatal)?;
    let mut first = Some(body);
    let mut refused = String::new();
    while let Some((pod, guard)) = pt.next(&mut choice) {
        let Some(body) = first.take().or_else(|| resend.clone().map(body::full)) else {
            break;
        };
        let upstream = pt.upstream(&pod).map_err(Failure::Fatal)?;
        let authority = match as_ai {
            Some(_) => Some(
                Authority::try_from(pod.id.as_str())
                    .map_err(|_| Failure::Fatal(ProxyError::bad_request("invalid pod address")))?,
            ),
            None => None,
        };
        let target = match as_ai {
            Some(a) => UpstreamTarget {
                authority: authority.as_ref(),
                path: a.path.clone(),
                backend_auth: false,
            },
            None => UpstreamTarget::default(),
        };
        let mut req = build_upstream_request(
            parts,
            headers.clone(),
            body,
            &backend.policies,
            &upstream,
            matched_prefix,
            target,
        )
        .map_err(Failure::Fatal)?;
        if let Some(a) = as_ai {
            ai::authorize(a.ai, &mut req, a.payload)
                .await
                .map_err(Failure::Fatal)?;
        }
        trail.rec.upstream = Some(upstream.address.clone());
        let sent = std::time::Instant::now();
        match call_upstream(&upstream, req, &backend.policies).await {
            Ok(resp) => {
                trail.rec.upstream_time = Some(sent.elapsed());
                pt.pool.succeeded(&pod);
                return Ok((resp, Served(pod, guard)));
            }
            Err(Failure::Connect(msg)) => {
                pt.pool.connect_failed(&pod);
                refused = msg;
            }
            Err(e) => return Err(e),
        }
    }
    // Every pod tried refused: the caller may fail over to another backend.
    Err(Failure::Connect(format!(
        "pool {}: {} pod(s) refused the connection; last: {refused}",
        pt.pool.name(),
        choice.tried()
    )))
}

async fn call_upstream(
    upstream: &Upstream,
    req: Request<Body>,
    policies: &Effective,
) -> Result<Response<Body>, Failure> {
    let call = upstream.client.request(req);
    let result = match policies.backend_timeout {
        Some(t) => match tokio::time::timeout(t, call).await {
            Ok(r) => r,
            Err(_) => return Err(Failure::Fatal(ProxyError::upstream_timeout())),
        },
        None => call.await,
    };
    match result {
        Ok(resp) => Ok(resp.map(body::from_incoming)),
        Err(e) if is_body_too_large(&e) => Err(Failure::Fatal(ProxyError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            BODY_TOO_LARGE,
            "request body too large",
        ))),
        Err(e) if is_connect_error(&e) => Err(Failure::Connect(format!(
            "upstream {} is unavailable: {}",
            upstream.address,
            root_message(&e)
        ))),
        Err(e) => Err(Failure::Fatal(ProxyError::upstream_error(format!(
            "upstream {} failed: {}",
            upstream.address,
            root_message(&e)
        )))),
    }
}

/// Marks a body-limit failure inside the attempt loop; mapped to the 413 with the limit.
const BODY_TOO_LARGE: &str = "payload_too_large";

fn is_body_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

fn original_authority(parts: &Parts) -> Option<String> {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

/// What a backend adapter decides about the upstream request before policies apply.
struct UpstreamTarget<'a> {
    /// Host to send instead of the client's (an LLM provider's own host).
    authority: Option<&'a Authority>,
    /// Path to send instead of the client's (an LLM provider's own path).
    path: Option<PathAndQuery>,
    /// Apply `backendAuth` as `Authorization: Bearer` (adapters with their own scheme don't).
    backend_auth: bool,
}

impl Default for UpstreamTarget<'_> {
    fn default() -> Self {
        UpstreamTarget {
            authority: None,
            path: None,
            backend_auth: true,
        }
    }
}

fn build_upstream_request(
    parts: &Parts,
    mut headers: HeaderMap,
    body: Body,
    policies: &Effective,
    upstream: &Upstream,
    matched_prefix: Option<&str>,
    target: UpstreamTarget<'_>,
) -> Result<Request<Body>, ProxyError> {
    let bad_host = || ProxyError::bad_request("invalid host authority");
    // The client's Host: the URI authority (HTTP/2, absolute-form) or the Host header.
    let mut authority: Option<Authority> = match (target.authority, parts.uri.authority()) {
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
            authority =
                Some(Authority::try_from(rewrite_authority(current, a)).map_err(|_| bad_host())?);
        }
        if let Some(p) = &rw.path {
            rewritten_path = Some(rewrite_path(parts.uri.path(), p, matched_prefix));
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
    if let (Some(auth), true) = (&policies.backend_auth, target.backend_auth) {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    let authority = match authority {
        Some(a) => a,
        None => Authority::try_from(&*upstream.address).map_err(|_| bad_host())?,
    };
    let path_and_query = match (target.path, rewritten_path) {
        (Some(p), _) => p,
        (None, Some(mut p)) => {
            if let Some(q) = parts.uri.query() {
                p.push('?');
                p.push_str(q);
            }
            PathAndQuery::try_from(p)
                .map_err(|_| ProxyError::bad_request("rewritten path is not a valid URI path"))?
        }
        (None, None) => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if upstream.tls {
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
    *req.version_mut() = if upstream.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = headers;
    Ok(req)
}

/// Copies bytes both ways once both sides have switched protocols.
async fn tunnel(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut down = hyper_util::rt::TokioIo::new(down);
    let mut up = hyper_util::rt::TokioIo::new(up);
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded connection closed with error");
    }
}
