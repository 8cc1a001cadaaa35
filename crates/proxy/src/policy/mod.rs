//! Policies, one file each, compiled once per config snapshot.
//!
//! Two kinds, kept apart (see `pipeline.rs` for when each runs):
//! - **route-phase** policies (`cors`, `jwtAuth`, `directResponse`, `requestRedirect`,
//!   `guardrails`, `retry`, `timeout.requestTimeout`) come from the route's own `policies`
//!   only, so what happens to a request never depends on which backend is picked; a backend
//!   that sets one is refused at load (`config` validation);
//! - **backend-phase** policies (`urlRewrite`, `requestHeaderModifier`,
//!   `responseHeaderModifier`, `backendAuth`, `backendTLS`, `backendHTTP`,
//!   `timeout.backendRequestTimeout`, `ai`, `mcpAuthorization`) apply to the backend chosen.
//!   A backend's policy of a kind replaces the route's: [`layered`] decides that once, here,
//!   at compile time.

pub mod api_key;
pub mod authorization;
pub mod backend_auth;
pub mod backend_tls;
pub mod balance;
pub mod basic_auth;
pub mod cors;
pub mod direct_response;
pub mod ext_authz;
pub mod failover;
pub mod guardrails;
pub mod header_modifier;
pub mod jwt;
pub mod local_rate_limit;
pub mod quota;
pub mod redirect;
pub mod remote_rate_limit;
pub mod request_cel;
pub mod retry;
pub mod url_rewrite;

use std::borrow::Cow;
use std::time::Duration;

use config::Policies;

pub use backend_auth::BackendAuth;
pub use basic_auth::BasicAuth;
pub use cors::{Cors, CorsOutcome};
pub use direct_response::DirectResponse;
pub use ext_authz::ExtAuthz;
pub use guardrails::Guardrails;
pub use header_modifier::HeaderModifier;
pub use jwt::JwtAuth;
pub use redirect::Redirect;
pub use remote_rate_limit::RemoteRateLimit;
pub use retry::Retry;
pub use url_rewrite::{rewrite_authority, rewrite_path, UrlRewrite};

use crate::pipeline::Phase;

/// Makes sure `ctx.model` holds the model the request names, when it names one: Gemini's
/// path, else `model` in the JSON body (already read when the listener routes by model).
pub(crate) fn read_model(
    ctx: &mut crate::context::RequestCtx<'_>,
    req: &http::request::Parts,
    body: &[u8],
) {
    if ctx.model.is_none() {
        ctx.model = llm::model_in_path(req.uri.path())
            .map(str::to_string)
            .or_else(|| llm::model_in_body(body));
    }
}

/// A policy that cannot be compiled: what is wrong with it (the caller adds where it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub Cow<'static, str>);

impl PolicyError {
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        PolicyError(message.into())
    }
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// The one place "a backend's policy overrides the route's" is decided: per kind, the
/// backend's if it has one, else the route's. (An `ai` backend's own `policies` were laid
/// over its backend entry's the same way before this.)
pub fn layered<'a>(
    route: Option<&'a Policies>,
    backend: Option<&'a Policies>,
) -> Cow<'a, Policies> {
    match (route, backend) {
        (Some(r), Some(b)) => Cow::Owned(r.overlay(b)),
        (Some(p), None) | (None, Some(p)) => Cow::Borrowed(p),
        (None, None) => Cow::Owned(Policies::default()),
    }
}

/// A route's own policies: the route-phase chain and the parameters of its attempts.
#[derive(Default)]
pub struct RoutePolicies {
    /// Route-phase policies in their fixed order (`pipeline::route_phases`).
    pub phases: Vec<Box<dyn Phase>>,
    /// Any phase filters response bodies: the response body is wrapped only then.
    pub filters_response_body: bool,
    /// Any phase wants the end of the exchange.
    pub observes_end: bool,
    /// Any phase reads the request body: it is buffered only then.
    pub reads_request_body: bool,
    /// Deadline for the response to start, across every attempt.
    pub request_timeout: Option<Duration>,
    pub retry: Option<Retry>,
    pub failover: Option<failover::Failover>,
    pub balance: Option<balance::Balance>,
    /// The route's guards on MCP tool calls and results (an `mcp` route with `guardrails`).
    pub tool_guard: Option<std::sync::Arc<dyn mcp::authz::ToolGuard>>,
    /// The route's `responseHeaderModifier`, for answers no backend produced.
    pub response_headers: Option<HeaderModifier>,
}

impl RoutePolicies {
    pub fn compile(
        p: Option<&Policies>,
        env: &crate::governance::PhaseEnv,
    ) -> Result<Self, PolicyError> {
        let Some(p) = p else {
            return Ok(RoutePolicies::default());
        };
        let phases = crate::pipeline::route_phases(p, env)?;
        Ok(RoutePolicies {
            filters_response_body: phases.iter().any(|ph| ph.filters_response_body()),
            observes_end: phases.iter().any(|ph| ph.observes_end()),
            reads_request_body: phases.iter().any(|ph| ph.reads_request_body()),
            phases,
            request_timeout: p
                .timeout
                .as_ref()
                .and_then(|t| t.request_timeout)
                .map(|d| d.0),
            retry: p.retry.as_ref().map(Retry::compile),
            failover: p.failover.as_ref().map(failover::Failover::compile),
            balance: p.balance.as_ref().map(balance::Balance::compile),
            tool_guard: match (&p.guardrails, env.mcp_route) {
                (Some(g), true) => Some(std::sync::Arc::new(
                    guardrails::tools::ToolGuards::compile(g)?,
                )),
                _ => None,
            },
            response_headers: p
                .response_header_modifier
                .as_ref()
                .map(HeaderModifier::compile)
                .transpose()?,
        })
    }
}

/// A backend's policies (layered over the route's), applied to its upstream request and
/// response in the order `pipeline.rs` lists.
#[derive(Debug, Default)]
pub struct BackendPolicies {
    pub url_rewrite: Option<UrlRewrite>,
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
    /// Deadline for one attempt's response headers.
    pub backend_timeout: Option<Duration>,
    /// Longest the response body may go without a frame (`timeout.idleTimeout`).
    pub idle_timeout: Option<Duration>,
    pub backend_auth: Option<BackendAuth>,
}

impl BackendPolicies {
    /// `p`: the backend's layered policies (see [`layered`]).
    pub fn compile(p: &Policies) -> Result<Self, PolicyError> {
        Ok(BackendPolicies {
            url_rewrite: p.url_rewrite.as_ref().map(|u| UrlRewrite {
                authority: u.authority.clone(),
                path: u.path.clone(),
            }),
            request_headers: p
                .request_header_modifier
                .as_ref()
                .map(HeaderModifier::compile)
                .transpose()?,
            response_headers: p
                .response_header_modifier
                .as_ref()
                .map(HeaderModifier::compile)
                .transpose()?,
            backend_timeout: p
                .timeout
                .as_ref()
                .and_then(|t| t.backend_request_timeout)
                .map(|d| d.0),
            idle_timeout: p.timeout.as_ref().and_then(|t| t.idle_timeout).map(|d| d.0),
            backend_auth: p
                .backend_auth
                .as_ref()
                .map(BackendAuth::compile)
                .transpose()?,
        })
    }
}
