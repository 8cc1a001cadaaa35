//! The `ai` backend: an LLM provider (or a pool of model servers). The call is classified by
//! path, prepared and translated by `crate::ai` (provider files under `ai/providers/`), and
//! the response shaped back into the caller's dialect.

use http::request::Parts;
use http::Response;

use super::pool::{dial, AiPod, PodBodies};
use super::{Adapter, Attempt, Failure, Head, UpstreamRequest};
use crate::ai::{self, AiTarget};
use crate::body::Body;
use crate::context::RequestCtx;
use crate::policy::BackendPolicies;

pub struct AiBackend {
    pub target: AiTarget,
}

impl Adapter for AiBackend {
    fn kind(&self) -> &'static str {
        "ai"
    }

    fn head(&self, req: &Parts) -> Head {
        let call = self.target.classify(req.uri.path());
        Head {
            // A pool resends the body to the next pod on a refused connection.
            needs_whole_body: call.needs_body() || self.target.pool.is_some(),
            dialect: Some(call.ingress),
        }
    }

    async fn send(
        &self,
        policies: &BackendPolicies,
        attempt: Attempt<'_>,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<Response<Body>, Failure> {
        let ai = &self.target;
        let Attempt {
            parts,
            mut headers,
            body,
            raw,
        } = attempt;
        ctx.upstream = Some(ai.upstream.address.clone());
        let call = ai.classify(parts.uri.path());
        let slot = ctx.trail.llm_slot();
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
            let bodies = PodBodies {
                first: fwd.body,
                parsed: raw,
                resend,
            };
            let (resp, served) =
                dial(pt, policies, parts, &headers, bodies, Some(&as_ai), ctx).await?;
            let resp = ai::shape_response(resp, fwd.shape)
                .await
                .map_err(Failure::Fatal)?;
            return Ok(served.attach(resp, ctx));
        }
        let mut target = UpstreamRequest::to(&ai.upstream);
        target.authority = Some(&ai.authority);
        target.path = fwd.path;
        target.backend_auth = false;
        let mut req = target
            .build(parts, headers, fwd.body, policies, ctx)
            .map_err(Failure::Fatal)?;
        ai::authorize(ai, &mut req, fwd.payload.as_ref())
            .await
            .map_err(Failure::Fatal)?;
        let resp = super::timed_call(&ai.upstream, req, policies, ctx).await?;
        ai::shape_response(resp, fwd.shape)
            .await
            .map_err(Failure::Fatal)
    }
}
