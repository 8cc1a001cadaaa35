//! The per-request context: what the phases of one request read and write. The telemetry
//! record is filled from it; it is not the record.

use std::net::SocketAddr;
use std::sync::Arc;

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
}

/// One request on its way through the pipeline.
pub struct RequestCtx<'a> {
    pub conn: &'a ConnCtx,
    pub snapshot: &'a Snapshot,
    pub route: &'a Arc<RouteRt>,
    /// The route's matched `pathPrefix` (without a trailing slash), for prefix rewrites.
    pub matched_prefix: Option<&'a str>,
    pub identity: Identity,
    /// The backend of the current attempt; before the first attempt, the one the weighted
    /// order starts with (it answers for the route until then: dialect, response headers).
    pub backend: Option<&'a BackendRt>,
    /// The caller's API dialect when the route serves LLM calls: errors are written in it.
    pub dialect: Option<llm::Format>,
    /// CORS headers for the response of an allowed cross-origin request.
    pub cors: Option<HeaderMap>,
    /// Why the gateway refused or failed the request (a stable code), if it did.
    pub error: Option<&'static str>,
    /// Telemetry's record of the request, filled as the phases learn things.
    pub trail: Trail,
}

impl RequestCtx<'_> {
    /// Hands what the phases learned to the telemetry record; the trail leaves with the
    /// response body.
    pub fn into_trail(mut self) -> Trail {
        self.trail.rec.jwt = self.identity.jwt.take();
        if self.error.is_some() {
            self.trail.rec.error = self.error;
        }
        self.trail
    }
}
