//! The per-request context: what the phases of one request read and write. The telemetry
//! record is filled from it; it is not the record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

use crate::observe::Trail;
use crate::snapshot::{BackendRt, BindKey, RouteRt, Snapshot};
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

/// Who the caller is, as authentication established it.
#[derive(Default, Clone)]
pub struct Identity {
    /// Verified JWT claims (`jwtAuth`): the `jwt` CEL variable.
    pub jwt: Option<Arc<Value>>,
    /// The caller's API key (`apiKeyAuth`): the `apiKey` CEL variable.
    pub api_key: Option<Arc<telemetry::ApiKeyInfo>>,
    /// The user `basicAuth` verified: `basicAuth.user` in CEL.
    pub basic_user: Option<Arc<str>>,
    /// The API key's own limits and budget (with its identity), for the quota phase.
    pub key_limits: Option<Arc<crate::governance::KeyEntry>>,
}

/// One request on its way through the pipeline.
pub struct RequestCtx<'a> {
    pub conn: &'a ConnCtx,
    pub snapshot: &'a Snapshot,
    pub route: &'a Arc<RouteRt>,
    /// The route's matched `pathPrefix` (without a trailing slash), for prefix rewrites.
    pub matched_prefix: Option<&'a str>,
    /// The LLM model the request names, when routing read it (a listener with `model`
    /// matches).
    pub model: Option<String>,
    pub identity: Identity,
    /// The backend of the current attempt; before the first attempt, the one the weighted
    /// order starts with (it answers for the route until then: dialect, response headers).
    pub backend: Option<&'a BackendRt>,
    /// The caller's API dialect when the route serves LLM calls: errors are written in it.
    pub dialect: Option<llm::Format>,
    /// CORS headers for the response of an allowed cross-origin request.
    pub cors: Option<HeaderMap>,
    /// The LLM call's expected tokens, once a limit estimated them (`Some(None)`: not an
    /// LLM call the gateway can read); read through `governance::estimate::cached`.
    pub token_estimate: Option<Option<crate::governance::estimate::Estimate>>,
    /// Headers a policy adds to the response, whoever answers (rate-limit state).
    pub response_headers: Option<HeaderMap>,
    /// Headers an OK `extAuthz` answer sets on the upstream request (every attempt).
    pub ext_authz_headers: Option<HeaderMap>,
    /// Why the gateway refused or failed the request (a stable code), if it did.
    pub error: Option<&'static str>,
    /// Attempts made so far (0: answered before any backend was tried).
    pub attempts: u32,
    /// The upstream address the last attempt went to, and how long its headers took.
    pub upstream: Option<Arc<str>>,
    pub upstream_time: Option<Duration>,
    /// What the MCP gateway saw of the exchange (method, tool, target, session).
    pub mcp: Option<telemetry::McpRecord>,
    /// How the `a2a` adapter answers the gateway's errors for this request: in the caller's
    /// binding (JSON-RPC error with its id, problem JSON, gRPC status). Set once classified.
    pub a2a_errors: Option<a2a::ErrorDialect>,
    /// The client's own `X-Forwarded-Proto` (the gateway replaces it upstream): the scheme a
    /// TLS-terminating proxy in front was reached with, for URLs the gateway writes.
    pub forwarded_proto: Option<http::HeaderValue>,
    /// Telemetry's record of the request: its start, and what only the pipeline's edges
    /// know (body bytes, the LLM slot, the pod in flight); the rest is copied in from this
    /// context when the phases are done ([`RequestCtx::into_trail`]).
    pub trail: Trail,
}

impl RequestCtx<'_> {
    /// A backend this request left or skipped under `failover`, and why: a log field and a
    /// metric.
    pub fn note_failover(&mut self, backend: &BackendRt, cause: crate::policy::failover::Cause) {
        telemetry::Metrics::global().failover(&self.route.name, &backend.name, cause.as_str());
        self.trail.rec.failover.push(telemetry::FailoverStep {
            backend: backend.name.clone(),
            cause: cause.as_str(),
            at: self.trail.rec.start.elapsed(),
        });
    }

    /// Hands what the phases learned to the telemetry record; the trail leaves with the
    /// response body.
    pub fn into_trail(mut self) -> Trail {
        let rec = &mut self.trail.rec;
        rec.jwt = self.identity.jwt.take();
        rec.api_key = self.identity.api_key.take();
        rec.basic_user = self.identity.basic_user.take();
        if self.error.is_some() {
            rec.error = self.error;
        }
        if let (Some(b), true) = (self.backend, self.attempts > 0) {
            rec.backend = Some(b.name.clone());
            rec.backend_kind = Some(crate::backend::Adapter::kind(&b.adapter));
        }
        rec.upstream = self.upstream.take();
        rec.upstream_time = self.upstream_time;
        rec.mcp = self.mcp.take();
        self.trail
    }
}
