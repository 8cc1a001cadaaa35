//! The life of a request, top to bottom. Every request runs these steps in this order:
//!
//! 1. **Route**: the snapshot current at arrival serves the request to its end; listener by
//!    host, route by Gateway API precedence.
//! 2. **Request headers** ([`Phase::request_headers`]): the route-phase policies in the order
//!    [`route_phases`] lists (cors, authentication, authorization, limits, directResponse,
//!    requestRedirect). Any may answer early; the rest of the request is then skipped. A phase
//!    that needs a round trip (a store, an authorization service) says [`Flow::Wait`] and its
//!    `_async` method is awaited; the others cost no future.
//! 3. **Request body** ([`Phase::request_body`]): buffered (up to the limit; 413 past it) only
//!    when a policy, the backend adapter, a retry or telemetry reads or resends it; streamed
//!    otherwise.
//! 4. **Attempts**: backends in weighted order, failing over on refused connections, within
//!    the route's `retry` and `timeout.requestTimeout`. Each attempt hands the request to the
//!    backend's adapter (`backend/`), which builds the upstream request with the
//!    backend-phase policies (urlRewrite, requestHeaderModifier, backendAuth) and then runs
//!    [`Phase::upstream_request`] of the route's policies. The upstream's answer then goes
//!    through [`Phase::upstream_response`] of the phases that await it (guards that read a
//!    whole answer or ask a service about it).
//! 5. **Response headers** ([`Phase::response_headers`]): on every answer — upstream's, a
//!    policy's early answer, or the gateway's error — then the `responseHeaderModifier` of the
//!    backend that answered (the route's when none did).
//! 6. **Response body** ([`Phase::response_body`]): chunk by chunk as it streams, through
//!    the filters the route's policies return.
//! 7. **End of exchange** ([`Phase::exchange_end`], then telemetry): when the response body
//!    ends or the client goes away; metrics, the access log line and the span are written
//!    after the response is sent.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::backend::{Adapter, Affinity, Attempt, Backend, Failure, BODY_TOO_LARGE};
use crate::body::{self, Body, Buffered};
use crate::context::{ConnCtx, Identity, RequestCtx};
use crate::error::ProxyError;
use crate::headers;
use crate::observe::{CountingBody, ObservedBody, Trail};
use crate::policy::{self, PolicyError};
use crate::routes::request_host;
use crate::snapshot::{smallvec_like::Order, RouteRt, Snapshot};

/// What a phase decides about the request.
pub enum Flow {
    Continue,
    /// Answer now with this response; nothing is sent upstream.
    Respond(Response<Body>),
    /// The decision needs a round trip (a store, an authorization service): the pipeline
    /// awaits the phase's `_async` method next. Phases that can decide in place never pay
    /// for a future.
    Wait,
}

/// What [`Phase::lists_model`] says of one model for one caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    Shown,
    /// The caller is known and may not use it.
    Hidden,
    /// The route wants an identity the caller did not prove.
    Unauthenticated,
}

/// The future of a phase's `_async` method.
pub type PhaseFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Flow> + Send + 'a>>;

/// One policy's part in the life of a request. Methods are listed in the order they run; each
/// default does nothing, so a policy implements only the phases it acts in.
pub trait Phase: Send + Sync {
    /// The request head, once the route matched. May answer early with [`Flow::Respond`];
    /// may record identity and facts in the context.
    fn request_headers(&self, _ctx: &mut RequestCtx<'_>, _req: &Parts) -> Flow {
        Flow::Continue
    }

    /// Awaited when [`Phase::request_headers`] returned [`Flow::Wait`].
    fn request_headers_async<'a>(
        &'a self,
        _ctx: &'a mut RequestCtx<'_>,
        _req: &'a Parts,
    ) -> PhaseFuture<'a> {
        Box::pin(std::future::ready(Flow::Continue))
    }

    /// Whether [`Phase::request_body`] must see the whole body (it is buffered only then).
    fn reads_request_body(&self) -> bool {
        false
    }

    /// The whole request body, when this policy asked for it. May replace it (a masked
    /// prompt) or answer early; a replaced body is what every attempt sends.
    fn request_body(&self, _ctx: &mut RequestCtx<'_>, _req: &Parts, _body: &mut Bytes) -> Flow {
        Flow::Continue
    }

    /// Awaited when [`Phase::request_body`] returned [`Flow::Wait`].
    fn request_body_async<'a>(
        &'a self,
        _ctx: &'a mut RequestCtx<'_>,
        _req: &'a Parts,
        _body: &'a mut Bytes,
    ) -> PhaseFuture<'a> {
        Box::pin(std::future::ready(Flow::Continue))
    }

    /// `GET /v1/models` on a listener that routes by model: whether this caller may see
    /// `model`, which this route serves. Asked of policies that identify callers (an API
    /// key's model list); the listing is answered by the listener, so nothing else runs.
    fn lists_model(&self, _req: &Parts, _model: &str) -> Listing {
        Listing::Shown
    }

    /// The upstream request of one attempt, built for the chosen backend after its
    /// backend-phase policies; runs again for every attempt.
    fn upstream_request(&self, _ctx: &RequestCtx<'_>, _req: &mut Request<Body>) {}

    /// Whether [`Phase::upstream_response`] does anything.
    fn awaits_response(&self) -> bool {
        false
    }

    /// The upstream's answer (only that: not early answers nor the gateway's errors), before
    /// the response-headers phase: a phase that must read a whole answer or ask a service
    /// about it awaits here, and may replace the answer and record an error code.
    fn upstream_response<'a>(
        &'a self,
        _ctx: &'a mut RequestCtx<'_>,
        _resp: &'a mut Response<Body>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(std::future::ready(()))
    }

    /// The response head on its way to the client: the upstream's, an early answer, or the
    /// gateway's error.
    fn response_headers(&self, _ctx: &RequestCtx<'_>, _resp: &mut Response<Body>) {}

    /// Whether [`Phase::response_body`] may return a filter (the body is wrapped only then).
    fn filters_response_body(&self) -> bool {
        false
    }

    /// A filter for this response's body chunks, made once per response after the
    /// response-headers phase (the head says what the body is: status, content type).
    fn response_body(
        &self,
        _ctx: &RequestCtx<'_>,
        _head: &Response<Body>,
    ) -> Option<Box<dyn ChunkFilter>> {
        None
    }

    /// Whether [`Phase::exchange_end`] does anything.
    fn observes_end(&self) -> bool {
        false
    }

    /// The exchange is over (body ended, failed, or the client left), before telemetry.
    fn exchange_end(&self, _rec: &telemetry::RequestRecord) {}
}

/// Rewrites a response body as it streams, one chunk at a time.
pub trait ChunkFilter: Send + Sync {
    /// One chunk in, the bytes to send now out (may hold back a tail for the next chunk).
    fn chunk(&mut self, data: Bytes) -> Bytes;
    /// The body ended: what was held back.
    fn finish(&mut self) -> Bytes {
        Bytes::new()
    }
    /// The filter ended the body itself (a guard refused the rest): the body closes after the
    /// chunk just returned, and the upstream's remainder is not read.
    fn ended(&self) -> bool {
        false
    }
}

/// The route-phase policies, in the order they run: CORS, authentication (jwt, API keys,
/// basic, extAuthz), authorization, limits and budgets (local buckets, the shared store's
/// reservation, a remote rate-limit service), early answers, guards. Adding a policy: its
/// file under `policy/`, its config type, and one line here.
pub(crate) fn route_phases(
    p: &config::Policies,
    env: &crate::governance::PhaseEnv,
) -> Result<Vec<Box<dyn Phase>>, PolicyError> {
    let mut phases: Vec<Box<dyn Phase>> = Vec::new();
    if let Some(c) = &p.cors {
        phases.push(Box::new(policy::Cors::compile(c)?));
    }
    if let Some(j) = &p.jwt_auth {
        phases.push(Box::new(policy::JwtAuth::compile(j)?));
    }
    if let Some(a) = &p.api_key_auth {
        phases.push(Box::new(policy::api_key::ApiKeyAuth::compile(a, env)?));
    }
    if let Some(b) = &p.basic_auth {
        phases.push(Box::new(policy::BasicAuth::compile(b)?));
    }
    if let Some(a) = &p.ext_authz {
        phases.push(Box::new(policy::ExtAuthz::compile(a)?));
    }
    if let Some(a) = &p.authorization {
        phases.push(Box::new(policy::authorization::Authorization::compile(
            a, env,
        )?));
    }
    if !p.local_rate_limit.is_empty() {
        phases.push(Box::new(policy::local_rate_limit::LocalRateLimit::compile(
            &p.local_rate_limit,
            env,
        )?));
    }
    if let Some(q) = policy::quota::Quota::compile(p, env)? {
        phases.push(Box::new(q));
    }
    if let Some(r) = &p.remote_rate_limit {
        phases.push(Box::new(policy::RemoteRateLimit::compile(r)?));
    }
    if let Some(d) = &p.direct_response {
        phases.push(Box::new(policy::DirectResponse::compile(d)?));
    }
    if let Some(r) = &p.request_redirect {
        phases.push(Box::new(policy::Redirect::compile(r)));
    }
    if let Some(g) = p.guardrails.as_ref().filter(|_| !env.mcp_route) {
        // (On an MCP route the guards act on tool calls, inside the MCP gateway.)
        phases.push(Box::new(policy::Guardrails::compile(g, env)?));
    }
    Ok(phases)
}

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

pub async fn handle(
    conn: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let on_upgrade =
        headers::is_upgrade_request(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let idle = conn.shared.snapshot.load().limits.body_read_timeout.0;
    Ok(serve(conn, parts, body::from_client(body, idle), on_upgrade).await)
}

/// A request the gateway makes to itself (the A2A catalog reading each route's card), through
/// the whole pipeline as if the caller had sent it.
pub(crate) fn serve_internal(
    conn: Arc<ConnCtx>,
    parts: Parts,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>> {
    Box::pin(serve(conn, parts, body::empty(), None))
}

async fn serve(
    conn: Arc<ConnCtx>,
    mut parts: Parts,
    body: Body,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<Body> {
    // 1. The snapshot current now serves this request to its end, even across a reload.
    let snapshot = conn.shared.snapshot.load_full();
    let request_id = headers::ensure_request_id(&mut parts.headers);
    let telemetry = snapshot.telemetry.clone();
    let mut trail = start_trail(&conn, &telemetry, &parts, &request_id);
    if let Some((listener, catalog)) = crate::catalog::find(&conn, &snapshot, &parts) {
        trail.rec.listener = Some(listener.name.clone());
        let mut resp = crate::catalog::serve(&conn, listener, catalog, &parts).await;
        resp.headers_mut()
            .insert(headers::X_REQUEST_ID.clone(), request_id);
        trail.rec.status = resp.status().as_u16();
        return resp.map(|b| {
            http_body_util::BodyExt::boxed_unsync(ObservedBody::new(b, trail, telemetry))
        });
    }
    let (mut resp, trail, end) = match route(&conn, &snapshot, &parts, body, &mut trail).await {
        Ok((found, body)) => {
            let mut ctx = RequestCtx {
                conn: &conn,
                snapshot: &snapshot,
                route: found.route,
                matched_prefix: found.matched_prefix,
                model: found.model,
                identity: Identity::default(),
                backend: None,
                dialect: None,
                cors: None,
                response_headers: None,
                ext_authz_headers: None,
                token_estimate: None,
                error: None,
                attempts: 0,
                upstream: None,
                upstream_time: None,
                mcp: None,
                a2a_errors: None,
                forwarded_proto: None,
                trail,
            };
            let resp = match exchange(&mut ctx, parts, body, on_upgrade).await {
                Ok(r) => r,
                Err(e) => fail(&mut ctx, e),
            };
            let resp = respond(&ctx, resp);
            let end = ctx.route.policies.observes_end.then(|| ctx.route.clone());
            (resp, ctx.into_trail(), end)
        }
        Err(Miss::Error(e)) => {
            trail.rec.error = Some(e.code);
            (e.into_response(), trail, None)
        }
        Err(Miss::Answer(resp)) => (resp, trail, None),
    };
    resp.headers_mut()
        .insert(headers::X_REQUEST_ID.clone(), request_id);
    let mut trail = trail;
    trail.rec.status = resp.status().as_u16();
    if telemetry.uses().response_headers() {
        trail.rec.response_headers = Some(resp.headers().clone());
    }
    trail.end = end;
    resp.map(|b| http_body_util::BodyExt::boxed_unsync(ObservedBody::new(b, trail, telemetry)))
}

/// The record telemetry keeps of this request: always what metrics need, the rest only when
/// the access log, tracing or an expression asks for it.
fn start_trail(
    conn: &ConnCtx,
    telemetry: &telemetry::Telemetry,
    parts: &Parts,
    request_id: &HeaderValue,
) -> Trail {
    let mut rec = telemetry::RequestRecord::new(
        parts.method.clone(),
        parts.uri.clone(),
        parts.version,
        conn.peer,
        conn.bind_label.clone(),
    );
    rec.tls = conn.tls;
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

struct Found<'s> {
    route: &'s Arc<crate::snapshot::RouteRt>,
    matched_prefix: Option<&'s str>,
    /// The model the request names, when the listener routes by model.
    model: Option<String>,
}

/// Step 1: listener by host, then route. On a listener with a `model` match the model is read
/// first (from the body, kept for the rest of the pipeline, or Gemini's path); a model that no
/// route serves is 404 `model_not_found` in the caller's dialect.
async fn route<'s>(
    conn: &ConnCtx,
    snapshot: &'s Snapshot,
    parts: &Parts,
    body: Body,
    trail: &mut Trail,
) -> Result<(Found<'s>, Body), Miss> {
    let bind = snapshot.bind(&conn.bind).ok_or_else(|| {
        ProxyError::upstream_unavailable("this port was removed from the configuration")
    })?;
    let host = request_host(parts);
    let listener = bind.listener_for(host.as_deref()).ok_or_else(|| {
        ProxyError::new(
            StatusCode::NOT_FOUND,
            "no_listener",
            "no listener serves this host",
        )
    })?;
    let (model, body) = match listener.routes.reads_model() {
        true => requested_model(snapshot, parts, body).await?,
        false => (None, body),
    };
    let Some(found) = listener
        .routes
        .find(host.as_deref(), parts, model.as_deref())
    else {
        if model.is_none()
            && parts.method == http::Method::GET
            && parts.uri.path().ends_with("/models")
            && !listener.routes.exact_models().is_empty()
        {
            // One endpoint for many models: the list is the listener's route table, as far
            // as the caller may use it.
            let models = listed_models(&listener.routes, host.as_deref(), parts)?;
            return Err(Miss::Answer(models_list(&models, parts)));
        }
        if listener.serves_a2a && model.is_none() {
            if let Some(resp) = crate::backend::a2a::unknown_agent(parts, body).await {
                trail.rec.error = Some("no_route");
                return Err(Miss::Answer(resp));
            }
            return Err(Miss::Error(ProxyError::no_route()));
        }
        return Err(Miss::Error(match &model {
            Some(m) => ProxyError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("no route serves the model {m:?}"),
            )
            .with_format(llm::Format::of_path(parts.uri.path())),
            None => ProxyError::no_route(),
        }));
    };
    trail.rec.listener = Some(listener.name.clone());
    trail.rec.route = Some(found.route.name.clone());
    Ok((
        Found {
            route: found.route,
            matched_prefix: found.matcher.matched_prefix(),
            model,
        },
        body,
    ))
}

/// Why routing found no route: an error, or an answer the listener gives itself.
enum Miss {
    Error(ProxyError),
    Answer(Response<Body>),
}

impl From<ProxyError> for Miss {
    fn from(e: ProxyError) -> Miss {
        Miss::Error(e)
    }
}

/// The models a listener's routes serve by name — exact model matches, and the aliases of
/// `ai` backends on routes whose model pattern accepts them — that this caller may use: each
/// is asked of the route that would serve it ([`Phase::lists_model`]). A caller every route
/// refuses for want of a credential gets 401, not an empty list.
fn listed_models(
    routes: &crate::routes::RouteTable<RouteRt>,
    host: Option<&str>,
    parts: &Parts,
) -> Result<Vec<Arc<str>>, ProxyError> {
    let mut candidates: Vec<Arc<str>> = routes.exact_models().to_vec();
    for (rule, route) in routes.model_patterns() {
        for b in &route.backends {
            let Backend::Ai(ai) = &b.adapter else {
                continue;
            };
            for m in ai.target.model_models() {
                if rule.is_full_match(&m) && !candidates.iter().any(|c| **c == *m) {
                    candidates.push(m.into());
                }
            }
        }
    }
    let mut unauthenticated = false;
    let mut shown = Vec::with_capacity(candidates.len());
    for m in candidates {
        let listing = match routes.find(host, parts, Some(&m)) {
            Some(found) => found
                .route
                .policies
                .phases
                .iter()
                .map(|p| p.lists_model(parts, &m))
                .find(|l| *l != Listing::Shown)
                .unwrap_or(Listing::Shown),
            None => Listing::Shown,
        };
        match listing {
            Listing::Shown => shown.push(m),
            Listing::Hidden => {}
            Listing::Unauthenticated => unauthenticated = true,
        }
    }
    if shown.is_empty() && unauthenticated {
        let format = match parts.headers.contains_key("anthropic-version") {
            true => llm::Format::AnthropicMessages,
            false => llm::Format::OpenAiChat,
        };
        return Err(ProxyError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "an API key is required",
        )
        .with_format(format));
    }
    Ok(shown)
}

/// The models a listener's routes serve by name, in the caller's shape: Anthropic's list for
/// an Anthropic client (`anthropic-version`), else OpenAI's.
fn models_list(models: &[Arc<str>], parts: &Parts) -> Response<Body> {
    let anthropic = parts.headers.contains_key("anthropic-version");
    let body = match anthropic {
        true => serde_json::json!({
            "data": models.iter().map(|m| serde_json::json!({
                "type": "model", "id": &**m, "display_name": &**m, "created_at": "1970-01-01T00:00:00Z"
            })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": models.first().map(|m| &**m),
            "last_id": models.last().map(|m| &**m),
        }),
        false => serde_json::json!({
            "object": "list",
            "data": models.iter().map(|m| serde_json::json!({
                "id": &**m, "object": "model", "created": 0, "owned_by": "switchyard"
            })).collect::<Vec<_>>(),
        }),
    };
    let mut resp = Response::new(body::full(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The model a request names: Gemini's path (`/models/{model}:method`), else `model` in the
/// JSON body, which is read (up to the buffering limit) and handed back whole. A body too
/// large to buffer, or not JSON, names no model.
async fn requested_model(
    snapshot: &Snapshot,
    parts: &Parts,
    body: Body,
) -> Result<(Option<String>, Body), ProxyError> {
    if let Some(m) = llm::model_in_path(parts.uri.path()) {
        return Ok((Some(m.to_string()), body));
    }
    let limits = &snapshot.limits;
    let declared = declared_length(parts);
    if declared.is_some_and(|n| limits.max_request_body_bytes.is_some_and(|max| n > max)) {
        // Refused with 413 by the body step; not read here.
        return Ok((None, body));
    }
    match body::buffer_for_replay(body, limits.max_buffered_body_bytes).await {
        Ok(Buffered::Complete(b)) => Ok((llm::model_in_body(&b), body::full(b))),
        Ok(Buffered::Streaming(rest)) => Ok((None, rest)),
        Err(e) => Err(ProxyError::reading_body(e.as_ref())),
    }
}

/// Steps 2–4: the route's phases, then the attempts.
async fn exchange<'a>(
    ctx: &mut RequestCtx<'a>,
    mut parts: Parts,
    body: Body,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<Body>, ProxyError> {
    let route = ctx.route;
    let order = route.backend_order();
    // The backend the order starts with answers for the route until an attempt picks
    // another: its dialect is the caller's (errors are written in it).
    let head = match order.is_empty() {
        true => Default::default(),
        false => {
            let first = &route.backends[order.get(0)];
            ctx.backend = Some(first);
            first.adapter.head(&parts)
        }
    };
    ctx.dialect = head.dialect;
    if let Some(first) = ctx.backend {
        first.adapter.classify_early(ctx, &parts, None);
    }
    // Near a `config.limits.overload` ceiling new work is shed, in the route's dialect.
    if let Some(why) = ctx.conn.shared.overload.shed_request(&ctx.snapshot.limits) {
        let retry = ctx
            .snapshot
            .limits
            .overload
            .as_ref()
            .map_or(5, |o| o.retry_after.0.as_secs_f64().ceil().max(1.0) as u64);
        ctx.response_headers
            .get_or_insert_with(http::HeaderMap::new)
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
        return Err(ProxyError::overloaded(why));
    }

    // 2. Request headers.
    for phase in &route.policies.phases {
        let flow = match phase.request_headers(ctx, &parts) {
            Flow::Wait => phase.request_headers_async(ctx, &parts).await,
            flow => flow,
        };
        if let Flow::Respond(resp) = flow {
            return Ok(early_answer(ctx, resp, Err(body)).await);
        }
    }
    if order.is_empty() {
        return Err(ProxyError::upstream_unavailable(
            "the route has no backend to send to",
        ));
    }

    let upgrade = on_upgrade.is_some();
    ctx.forwarded_proto = parts.headers.get(&headers::X_FORWARDED_PROTO).cloned();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarded(&mut parts.headers, ctx.conn.peer.ip(), ctx.conn.tls);

    // 3. Request body.
    let mut body = request_body(ctx, &parts, body, &order, head, upgrade).await?;
    if let Replay::Bytes(b) = &mut body {
        if let (Some(first), true) = (ctx.backend, route.policies.reads_request_body) {
            first.adapter.classify_early(ctx, &parts, Some(b));
        }
        for phase in &route.policies.phases {
            if phase.reads_request_body() {
                let flow = match phase.request_body(ctx, &parts, b) {
                    Flow::Wait => phase.request_body_async(ctx, &parts, b).await,
                    flow => flow,
                };
                if let Flow::Respond(resp) = flow {
                    let read = b.clone();
                    return Ok(early_answer(ctx, resp, Ok(&read)).await);
                }
            }
        }
    }

    // A request about state one backend holds (an A2A task) goes to that backend only.
    let order = match route.backends[order.get(0)]
        .adapter
        .affinity(&parts, body.bytes())
    {
        Affinity::Any => order,
        Affinity::Backend(i) if i < route.backends.len() => {
            let mut only = Order::new();
            only.push(i);
            only
        }
        Affinity::Backend(_) => order,
        Affinity::Refuse(code, resp) => {
            ctx.error = Some(code);
            return Ok(resp);
        }
    };

    // Deployments ranked by the route's balancing strategy, now that the body is known.
    let order = match &route.policies.balance {
        Some(b) if order.len() > 1 => b.order(route, order, body.bytes()),
        _ => order,
    };

    // 4. Attempts, within the route's deadline.
    let too_large = || {
        ProxyError::payload_too_large(
            ctx.snapshot.limits.max_request_body_bytes.unwrap_or(0) as usize
        )
    };
    let request_timeout = route.policies.request_timeout;
    let attempt_all = match &route.policies.failover {
        // Boxed: only failover routes pay for its larger future.
        Some(f) => futures_util::future::Either::Left(crate::boxed_in_place(|| {
            failover_attempts(ctx, &order, &mut parts, &mut body, f)
        })),
        None => futures_util::future::Either::Right(attempts(ctx, &order, &mut parts, &mut body)),
    };
    let result = match request_timeout {
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

    for phase in &route.policies.phases {
        if phase.awaits_response() {
            phase.upstream_response(ctx, &mut resp).await;
        }
    }

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

/// A route policy answered early. Where the backend's protocol has its own error shape (an
/// A2A binding), a refusal is written in it, from the policy's body and, when the shape needs
/// it (a JSON-RPC id), the request body: `Ok` when it was read, else read now (bounded).
async fn early_answer(
    ctx: &mut RequestCtx<'_>,
    resp: Response<Body>,
    request: Result<&Bytes, Body>,
) -> Response<Body> {
    let Some(backend) = ctx.backend else {
        return resp;
    };
    let Some(needs) = backend.adapter.shapes_refusals(ctx) else {
        return resp;
    };
    let (head, answer) = resp.into_parts();
    let answer = match body::buffer_for_replay(answer, 64 * 1024).await {
        Ok(Buffered::Complete(b)) => b,
        Ok(Buffered::Streaming(b)) => return Response::from_parts(head, b),
        Err(_) => Bytes::new(),
    };
    let request = match request {
        Ok(b) => Some(b.clone()),
        Err(b) if needs.request_body => crate::backend::a2a::read_for_id(b).await,
        Err(_) => None,
    };
    let resp = Response::from_parts(head, body::full(answer.clone()));
    backend
        .adapter
        .refusal(ctx, resp, &answer, request.as_ref())
}

/// Step 3: limits the body and buffers it only when it may be read or sent more than once.
async fn request_body(
    ctx: &mut RequestCtx<'_>,
    parts: &Parts,
    body: Body,
    order: &Order,
    head: crate::backend::Head,
    upgrade: bool,
) -> Result<Replay, ProxyError> {
    let snapshot = ctx.snapshot;
    let route = ctx.route;
    let body = match snapshot.limits.max_request_body_bytes {
        Some(limit) => {
            if declared_length(parts).is_some_and(|n| n > limit) {
                return Err(ProxyError::payload_too_large(limit as usize));
            }
            http_body_util::BodyExt::boxed_unsync(http_body_util::Limited::new(
                body,
                limit as usize,
            ))
        }
        None => body,
    };
    if upgrade && route.policies.reads_request_body {
        // A policy of this route must read the body, which an upgraded connection does not
        // have: refused rather than let the policy be skipped.
        return Err(ProxyError::bad_request(
            "this route's policies read request bodies: protocol upgrades are not allowed",
        ));
    }
    let capture_body = snapshot.telemetry.uses().request_body();
    // With more than one backend in the order, any of them may get the body (failover).
    let buffer = !upgrade
        && (route
            .policies
            .retry
            .as_ref()
            .is_some_and(|r| r.attempts > 1)
            || route
                .policies
                .failover
                .as_ref()
                .is_some_and(|f| f.attempts != Some(1))
            || order.len() > 1
            || head.needs_whole_body
            || route.policies.reads_request_body
            || capture_body);
    let mut body = if buffer {
        match body::buffer_for_replay(body, snapshot.limits.max_buffered_body_bytes).await {
            Ok(Buffered::Complete(b)) => Replay::Bytes(b),
            // A policy that reads the body must see all of it: past the buffer limit, refuse.
            Ok(Buffered::Streaming(_)) if route.policies.reads_request_body => {
                return Err(ProxyError::payload_too_large(
                    snapshot.limits.max_buffered_body_bytes,
                ))
            }
            Ok(Buffered::Streaming(s)) => Replay::Once(Some(s)),
            Err(e) if crate::backend::is_body_too_large(e.as_ref()) => {
                return Err(ProxyError::payload_too_large(
                    snapshot.limits.max_request_body_bytes.unwrap_or(0) as usize,
                ))
            }
            Err(e) => return Err(ProxyError::reading_body(e.as_ref())),
        }
    } else {
        Replay::Once(Some(body))
    };
    let trail = &mut ctx.trail;
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
    Ok(body)
}

/// The body length the client declared (`Content-Length`), if it did.
fn declared_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
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

/// One attempt to `backend`: the body (replayed, or moved when it can be sent once), the
/// headers (copied, or moved with a body sent once), the trace context; under `balance`, the
/// backend counted in flight until the response ends and its time to headers noted. `None`: the body was already
/// sent and cannot be replayed.
async fn send_attempt<'a>(
    ctx: &mut RequestCtx<'a>,
    backend: &'a crate::snapshot::BackendRt,
    parts: &mut Parts,
    body: &mut Replay,
) -> Option<Result<Response<Body>, Failure>> {
    let req_body = body.take()?;
    let mut headers = if body.can_resend() {
        parts.headers.clone()
    } else {
        std::mem::take(&mut parts.headers)
    };
    if let Some(t) = &ctx.trail.rec.trace {
        // The upstream continues this trace, under the gateway's span.
        headers.insert(TRACEPARENT.clone(), t.traceparent());
    }
    ctx.backend = Some(backend);
    ctx.attempts += 1;
    let attempt = Attempt {
        parts,
        headers,
        body: req_body,
        raw: body.bytes(),
    };
    // Load is tracked only where a `balance` strategy reads it. A later attempt replaces the
    // guard, so only the backend answering counts.
    let balanced = ctx.route.policies.balance.is_some();
    if balanced {
        ctx.trail.backend_load = Some(backend.health.start());
    }
    let sent = balanced.then(std::time::Instant::now);
    let outcome = backend.adapter.send(&backend.policies, attempt, ctx).await;
    if let (Some(sent), true) = (sent, outcome.is_ok()) {
        backend.health.observe_latency(sent.elapsed());
    }
    Some(outcome)
}

/// Step 4, the attempts. Backends in order: a refused connection moves to the next backend
/// (no retry spent); a retriable status retries (with backoff) while the route's `retry`
/// allows.
async fn attempts<'a>(
    ctx: &mut RequestCtx<'a>,
    order: &Order,
    parts: &mut Parts,
    body: &mut Replay,
) -> Result<Response<Body>, ProxyError> {
    let route = ctx.route;
    let retry = route.policies.retry.as_ref();
    let max_status_retries = retry.map_or(0, |r| r.attempts.saturating_sub(1));
    let mut retries_done = 0u32;
    let mut backend_pos = 0usize;
    loop {
        let backend = &route.backends[order.get(backend_pos % order.len())];
        let Some(outcome) = send_attempt(ctx, backend, parts, body).await else {
            return Err(ProxyError::upstream_unavailable(
                "the request body was already sent and cannot be replayed",
            ));
        };
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

/// Step 4 under a `failover` policy: backends in order, skipping those that rest (a cooldown
/// after a 429, an open circuit); an attempt whose outcome the policy lists moves on to the next
/// one, whose adapter prepares the request again (another provider's dialect included). The
/// caller gets the first answer that is not moved on from, or the last one there was. Each
/// backend skipped or left is noted for telemetry.
async fn failover_attempts<'a>(
    ctx: &mut RequestCtx<'a>,
    order: &Order,
    parts: &mut Parts,
    body: &mut Replay,
    failover: &policy::failover::Failover,
) -> Result<Response<Body>, ProxyError> {
    use policy::failover::{cause_of_status, is_context_error, Cause};
    let route = ctx.route;
    let max = failover.attempts.map_or(usize::MAX, |n| n as usize);
    let mut tries = 0usize;
    let mut last: Option<Result<Response<Body>, ProxyError>> = None;
    let mut shortest_rest: Option<std::time::Duration> = None;
    for pos in 0..order.len() {
        if tries >= max {
            break;
        }
        let backend = &route.backends[order.get(pos)];
        if let Err((cause, rest)) = failover.admit(&backend.health) {
            ctx.note_failover(backend, cause);
            shortest_rest = Some(shortest_rest.map_or(rest, |r| r.min(rest)));
            continue;
        }
        let Some(outcome) = send_attempt(ctx, backend, parts, body).await else {
            break;
        };
        tries += 1;
        let (cause, result) = match outcome {
            Ok(resp) => {
                let mut resp = resp;
                let mut cause = cause_of_status(resp.status());
                let could_move = failover.moves_on(Cause::Timeout)
                    && tries < max
                    && body.can_resend()
                    && pos + 1 < order.len();
                if let (Some(wait), true, true) = (
                    failover.first_byte_timeout,
                    resp.status().is_success(),
                    could_move,
                ) {
                    // Nothing has reached the client yet: a body that does not start in time
                    // is given up for the next backend.
                    let (head, b) = resp.into_parts();
                    resp = match body::with_first_frame(b, wait).await {
                        Some(b) => Response::from_parts(head, b),
                        None => {
                            cause = Some(Cause::Timeout);
                            Response::from_parts(head, body::empty())
                        }
                    };
                }
                if cause.is_none()
                    && failover.reads_context_errors()
                    && matches!(resp.status().as_u16(), 400 | 413)
                {
                    // A small error body: read it to see whether the prompt was too long.
                    let (head, b) = resp.into_parts();
                    let bytes = match body::buffer_for_replay(b, 64 * 1024).await {
                        Ok(Buffered::Complete(bytes)) => bytes,
                        _ => Bytes::from_static(b"{}"),
                    };
                    if is_context_error(&bytes) {
                        cause = Some(Cause::ContextLength);
                    }
                    resp = Response::from_parts(head, body::full(bytes));
                }
                failover.record(&backend.health, cause, Some(resp.headers()));
                (cause, Ok(resp))
            }
            Err(Failure::Connect(msg)) => {
                failover.record(&backend.health, Some(Cause::Connect), None);
                (
                    Some(Cause::Connect),
                    Err(ProxyError::upstream_unavailable(msg)),
                )
            }
            Err(Failure::Fatal(e)) if e.code == "upstream_timeout" => {
                failover.record(&backend.health, Some(Cause::Timeout), None);
                (Some(Cause::Timeout), Err(e))
            }
            Err(Failure::Fatal(e)) => return Err(e),
        };
        let Some(cause) = cause else {
            return result;
        };
        let may_move =
            failover.moves_on(cause) && tries < max && body.can_resend() && pos + 1 < order.len();
        if !may_move {
            return result;
        }
        tracing::debug!(backend = %backend.name, cause = cause.as_str(), "failing over");
        ctx.note_failover(backend, cause);
        last = Some(result);
    }
    if let Some(result) = last {
        return result;
    }
    // Every backend rests: say for how long.
    if let Some(rest) = shortest_rest {
        let secs = rest.as_secs_f64().ceil().max(1.0) as u64;
        ctx.response_headers
            .get_or_insert_with(http::HeaderMap::new)
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Err(ProxyError::upstream_unavailable(
        "every backend of the route is resting (cooldown after 429, or an open circuit)",
    ))
}

/// The one place a failure becomes a response: in the caller's dialect on LLM routes, in the
/// protocol's own shape where the backend's adapter has one (A2A bindings).
fn fail(ctx: &mut RequestCtx<'_>, e: ProxyError) -> Response<Body> {
    tracing::debug!(error = %e, "request failed");
    ctx.error = Some(e.code);
    if let Some(resp) = ctx.backend.and_then(|b| b.adapter.error_response(ctx, &e)) {
        return resp;
    }
    match ctx.dialect {
        Some(format) => e.with_format(format).into_response(),
        None => e.into_response(),
    }
}

/// Steps 5–6: response headers through the route's phases and the answering backend's modifier;
/// the body through the route's filters.
fn respond(ctx: &RequestCtx<'_>, mut resp: Response<Body>) -> Response<Body> {
    let policies = &ctx.route.policies;
    for phase in &policies.phases {
        phase.response_headers(ctx, &mut resp);
    }
    let modifier = match ctx.backend {
        Some(b) => b.policies.response_headers.as_ref(),
        None => policies.response_headers.as_ref(),
    };
    if let Some(m) = modifier {
        m.apply(resp.headers_mut());
    }
    if let Some(h) = &ctx.response_headers {
        for (name, value) in h {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if !policies.filters_response_body {
        return resp;
    }
    let filters: Vec<Box<dyn ChunkFilter>> = policies
        .phases
        .iter()
        .filter_map(|p| p.response_body(ctx, &resp))
        .collect();
    if filters.is_empty() {
        return resp;
    }
    // A filter may change the length.
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp.map(|b| http_body_util::BodyExt::boxed_unsync(crate::body::Filtered::new(b, filters)))
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
