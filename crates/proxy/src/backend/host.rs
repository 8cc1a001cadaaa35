//! The `host` backend: a plain HTTP upstream at `host:port`.

use http::Response;

use super::{Adapter, Attempt, Failure, UpstreamRequest};
use crate::body::Body;
use crate::context::RequestCtx;
use crate::policy::BackendPolicies;
use crate::upstream::Upstream;

pub struct HostBackend {
    pub upstream: Upstream,
}

impl Adapter for HostBackend {
    fn kind(&self) -> &'static str {
        "host"
    }

    async fn send(
        &self,
        policies: &BackendPolicies,
        attempt: Attempt<'_>,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<Response<Body>, Failure> {
        let req = UpstreamRequest::to(&self.upstream)
            .build(attempt.parts, attempt.headers, attempt.body, policies, ctx)
            .map_err(Failure::Fatal)?;
        super::timed_call(&self.upstream, req, policies, ctx).await
    }
}
