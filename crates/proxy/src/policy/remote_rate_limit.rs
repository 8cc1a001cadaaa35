//! `remoteRateLimit` (route phase): asks Envoy's rate limit service
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) whether the request fits,
//! for users who run one already.
//!
//! Each descriptor's entries are CEL expressions over the request (`request`, `source`, `jwt`,
//! `apiKey`, `basicAuth`, `llm.requestModel`); a descriptor is sent only when every entry has
//! a value for the request (see [`request_cel::key_text`]), its entries in the order of their
//! names. A request that sends no descriptor is not limited.
//!
//! `unit: requests` descriptors count 1 hit. `unit: tokens` descriptors carry their own
//! `hits_addend`: the token estimate of the request, which needs the body, so a policy with
//! such a descriptor reads it and asks in the request-body phase (on a protocol upgrade,
//! which has no body to read, it asks in the header phase with 1). The estimate is cheap on
//! purpose: a quarter of the body's bytes (about four bytes a token in English prose and JSON)
//! plus the completion the request allows (`max_tokens`, `max_completion_tokens`,
//! `max_output_tokens` or Gemini's `generationConfig.maxOutputTokens`), at least 1.
//!
//! `OVER_LIMIT` refuses with 429 `rate_limited` (`retry-after` from the first over-limit
//! status's `duration_until_reset`, rounded up); the service's `response_headers_to_add` go on
//! the response either way. A service that cannot be reached, fails or does not answer within
//! `timeout` (default 100ms) is logged (one warning each) and counted; `failOpen` admits the
//! request, otherwise it is refused with 503 `rate_limit_unavailable`.
//!
//! Not done: `request_headers_to_add`, `raw_body`, per-descriptor limit overrides, TLS to the
//! service.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cel::{Expression, Uses};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    rate_limit_descriptor, RateLimitDescriptor,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{
    rate_limit_response::Code, rate_limit_service_client::RateLimitServiceClient, RateLimitRequest,
    RateLimitResponse,
};
use envoy_types::pb::google::protobuf::UInt64Value;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::StatusCode;

use super::ext_authz::GrpcTarget;
use super::request_cel;
use super::PolicyError;
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::pipeline::{Flow, Phase, PhaseFuture};

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

pub struct RemoteRateLimit {
    target: GrpcTarget,
    target_name: String,
    domain: String,
    descriptors: Vec<Descriptor>,
    /// What the descriptors' expressions read, together.
    uses: Uses,
    /// Some descriptor counts tokens: the body is read for the estimate.
    counts_tokens: bool,
    timeout: Duration,
    fail_open: bool,
    failures: AtomicU64,
}

struct Descriptor {
    entries: Vec<(String, Expression)>,
    tokens: bool,
}

impl std::fmt::Debug for RemoteRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRateLimit")
            .field("target", &self.target_name)
            .field("domain", &self.domain)
            .field("descriptors", &self.descriptors.len())
            .finish()
    }
}

impl RemoteRateLimit {
    pub fn compile(c: &config::RemoteRateLimit) -> Result<RemoteRateLimit, PolicyError> {
        let timeout = c.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |d| d.0);
        let mut uses = Uses::default();
        let mut descriptors = Vec::with_capacity(c.descriptors.len());
        for (i, d) in c.descriptors.iter().enumerate() {
            if d.entries.is_empty() {
                return Err(PolicyError::new(format!(
                    "remoteRateLimit.descriptors[{i}] has no entries"
                )));
            }
            let mut entries = Vec::with_capacity(d.entries.len());
            for (name, source) in &d.entries {
                let e = Expression::compile(source).map_err(|e| {
                    PolicyError::new(format!(
                        "remoteRateLimit.descriptors[{i}].entries.{name}: {e}"
                    ))
                })?;
                uses = uses.union(e.uses());
                entries.push((name.clone(), e));
            }
            descriptors.push(Descriptor {
                entries,
                tokens: d.unit == Some(config::RateLimitUnit::Tokens),
            });
        }
        Ok(RemoteRateLimit {
            target: GrpcTarget::new(&c.target, timeout, "remoteRateLimit")?,
            target_name: c.target.clone(),
            domain: c.domain.clone(),
            counts_tokens: descriptors.iter().any(|d| d.tokens),
            descriptors,
            uses,
            timeout,
            fail_open: c.fail_open,
            failures: AtomicU64::new(0),
        })
    }

    /// Calls that failed (unreachable, timed out) since compile.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The descriptors this request sends: those whose every entry has a value.
    fn descriptors_for(
        &self,
        ctx: &RequestCtx<'_>,
        req: &Parts,
        tokens: u64,
    ) -> Vec<RateLimitDescriptor> {
        let bindings = request_cel::bindings(ctx, req, self.uses);
        let scope = bindings.scope(self.uses);
        self.descriptors
            .iter()
            .filter_map(|d| {
                let entries = d
                    .entries
                    .iter()
                    .map(|(key, e)| {
                        let value = match e.eval_in(&scope) {
                            Ok(v) => request_cel::key_text(&v)?,
                            Err(err) => {
                                tracing::debug!(entry = %key, error = %err, "remoteRateLimit: no value");
                                return None;
                            }
                        };
                        Some(rate_limit_descriptor::Entry {
                            key: key.clone(),
                            value,
                        })
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(RateLimitDescriptor {
                    entries,
                    hits_addend: d.tokens.then_some(UInt64Value { value: tokens }),
                    ..Default::default()
                })
            })
            .collect()
    }

    async fn check(&self, ctx: &mut RequestCtx<'_>, req: &Parts, tokens: u64) -> Flow {
        let descriptors = self.descriptors_for(ctx, req, tokens.max(1));
        if descriptors.is_empty() {
            return Flow::Continue;
        }
        let mut call = tonic::Request::new(RateLimitRequest {
            domain: self.domain.clone(),
            descriptors,
            hits_addend: 0,
        });
        call.set_timeout(self.timeout);
        let mut client = RateLimitServiceClient::new(self.target.channel());
        match tokio::time::timeout(self.timeout, client.should_rate_limit(call)).await {
            Err(_) => self.failed(ctx, format!("no answer within {:?}", self.timeout)),
            Ok(Err(status)) => self.failed(
                ctx,
                format!("gRPC {:?}: {}", status.code(), status.message()),
            ),
            Ok(Ok(resp)) => decide(ctx, resp.into_inner()),
        }
    }

    fn failed(&self, ctx: &mut RequestCtx<'_>, why: String) -> Flow {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            target_service = %self.target_name,
            error = %why,
            failures,
            fail_open = self.fail_open,
            "remoteRateLimit: the rate limit service failed"
        );
        if self.fail_open {
            return Flow::Continue;
        }
        Flow::Respond(refuse(
            ctx,
            ProxyError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limit_unavailable",
                "the rate limit service could not be reached",
            ),
            HeaderMap::new(),
        ))
    }
}

/// The service's answer: `OVER_LIMIT` refuses, anything else admits (Envoy's reading).
fn decide(ctx: &mut RequestCtx<'_>, resp: RateLimitResponse) -> Flow {
    let mut headers = HeaderMap::new();
    for h in &resp.response_headers_to_add {
        let value = match h.raw_value.is_empty() {
            true => HeaderValue::from_str(&h.value),
            false => HeaderValue::from_bytes(&h.raw_value),
        };
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.key.as_bytes()), value) {
            headers.append(name, value);
        }
    }
    if resp.overall_code != Code::OverLimit as i32 {
        if !headers.is_empty() {
            let add = ctx.response_headers.get_or_insert_with(HeaderMap::new);
            for (name, value) in &headers {
                add.insert(name.clone(), value.clone());
            }
        }
        return Flow::Continue;
    }
    let reset = resp
        .statuses
        .iter()
        .filter(|s| s.code == Code::OverLimit as i32)
        .find_map(|s| s.duration_until_reset.as_ref());
    if let Some(d) = reset {
        let secs = d.seconds.max(0) + i64::from(d.nanos > 0);
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    Flow::Respond(refuse(
        ctx,
        ProxyError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "the rate limit service refused the request: over limit",
        ),
        headers,
    ))
}

fn refuse(
    ctx: &mut RequestCtx<'_>,
    e: ProxyError,
    headers: HeaderMap,
) -> http::Response<crate::body::Body> {
    ctx.error = Some(e.code);
    let mut resp = match ctx.dialect {
        Some(format) => e.with_format(format).into_response(),
        None => e.into_response(),
    };
    for (name, value) in &headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

/// The token estimate of a request body: a quarter of its bytes plus the completion it
/// allows. Cheap by design (no tokenizer, no full parse into a tree).
pub fn estimate_tokens(body: &[u8]) -> u64 {
    #[derive(serde::Deserialize, Default)]
    struct Allowed {
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
        max_output_tokens: Option<u64>,
        #[serde(rename = "generationConfig")]
        generation_config: Option<Generation>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Generation {
        #[serde(rename = "maxOutputTokens")]
        max_output_tokens: Option<u64>,
    }
    let prompt = body.len() as u64 / 4;
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let allowed: Allowed = match first {
        Some(b'{') => serde_json::from_slice(body).unwrap_or_default(),
        _ => Allowed::default(),
    };
    let completion = allowed
        .max_completion_tokens
        .or(allowed.max_tokens)
        .or(allowed.max_output_tokens)
        .or(allowed.generation_config.and_then(|g| g.max_output_tokens))
        .unwrap_or(0);
    prompt.saturating_add(completion)
}

impl Phase for RemoteRateLimit {
    fn request_headers(&self, _ctx: &mut RequestCtx<'_>, req: &Parts) -> Flow {
        // Token descriptors need the body: asked in the body phase, unless there is none
        // (a protocol upgrade is never buffered).
        match !self.counts_tokens || crate::headers::is_upgrade_request(&req.headers) {
            true => Flow::Wait,
            false => Flow::Continue,
        }
    }

    fn request_headers_async<'a>(
        &'a self,
        ctx: &'a mut RequestCtx<'_>,
        req: &'a Parts,
    ) -> PhaseFuture<'a> {
        Box::pin(self.check(ctx, req, 1))
    }

    fn reads_request_body(&self) -> bool {
        self.counts_tokens
    }

    fn request_body(&self, _ctx: &mut RequestCtx<'_>, _req: &Parts, _body: &mut Bytes) -> Flow {
        Flow::Wait
    }

    fn request_body_async<'a>(
        &'a self,
        ctx: &'a mut RequestCtx<'_>,
        req: &'a Parts,
        body: &'a mut Bytes,
    ) -> PhaseFuture<'a> {
        let tokens = estimate_tokens(body);
        Box::pin(self.check(ctx, req, tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimate_is_a_quarter_of_the_body_plus_the_allowed_completion() {
        let body = br#"{"model":"m","max_tokens":100,"messages":[]}"#;
        assert_eq!(estimate_tokens(body), body.len() as u64 / 4 + 100);
        let body = br#"{"max_completion_tokens":7,"max_tokens":100}"#;
        assert_eq!(estimate_tokens(body), body.len() as u64 / 4 + 7);
        let body = br#"{"generationConfig":{"maxOutputTokens":50}}"#;
        assert_eq!(estimate_tokens(body), body.len() as u64 / 4 + 50);
        assert_eq!(estimate_tokens(b"not json at all!"), 4);
        assert_eq!(estimate_tokens(b""), 0);
    }
}
