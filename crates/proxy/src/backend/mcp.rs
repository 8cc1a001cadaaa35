//! The `mcp` backend: requests go to the MCP gateway (`mcp` crate); its HTTP targets are
//! reached through the proxy's own upstream pool, with each target's policies.

use crate::body::{self, Body};
use crate::context::RequestCtx;
use crate::error::CompileError;
use crate::policy::BackendPolicies;
use crate::snapshot::ClientCache;
use crate::upstream::{is_connect_error, root_message, Upstream, UpstreamKey};
use http::header::HeaderValue;
use http::{Request, Response, Version};

use super::{Adapter, Attempt, Failure};
use crate::policy::backend_tls::Connection;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

pub struct McpBackend {
    pub gateway: Arc<mcp::Gateway>,
}

impl Adapter for McpBackend {
    fn kind(&self) -> &'static str {
        "mcp"
    }

    /// A browser MCP client must read the session id to continue its session.
    fn cors_expose(&self) -> Option<HeaderValue> {
        Some(HeaderValue::from_static("mcp-session-id"))
    }

    async fn send(
        &self,
        policies: &BackendPolicies,
        attempt: Attempt<'_>,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<Response<Body>, Failure> {
        // DNS rebinding: the MCP spec has servers validate `Origin`. A browser's request from
        // an origin the route's CORS policy does not allow (none is, without a policy) never
        // reaches a target; clients that are not browsers send no `Origin`.
        if attempt.headers.contains_key(http::header::ORIGIN) && ctx.cors.is_none() {
            return Err(Failure::Fatal(crate::error::ProxyError::new(
                http::StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this origin is not allowed by the route's CORS policy",
            )));
        }
        let mut headers = attempt.headers;
        if let Some(modifier) = &policies.request_headers {
            modifier.apply(&mut headers);
        }
        let mut req = Request::new(attempt.body);
        *req.method_mut() = attempt.parts.method.clone();
        *req.uri_mut() = attempt.parts.uri.clone();
        *req.headers_mut() = headers;
        let mut observed = mcp::Observed::default();
        let down = mcp::Downstream {
            source: ctx.conn.peer,
            jwt: ctx.identity.jwt.as_deref(),
            api_key: ctx.identity.api_key.as_ref().map(|k| k.value()),
            tool_guard: ctx.route.policies.tool_guard.clone(),
            observed: &mut observed,
        };
        let resp = self.gateway.serve(req, down).await;
        ctx.mcp = Some(telemetry::McpRecord {
            method: observed.method,
            tool: observed.tool,
            target: observed.target,
            session_id: observed.session_id,
        });
        Ok(resp)
    }
}

/// Gateways of the snapshots alive now, by the fingerprint of their config.
#[derive(Default)]
pub(crate) struct GatewayCache(Mutex<HashMap<u64, Weak<mcp::Gateway>>>);

/// Everything a gateway is built from, secrets included (their serialized form is redacted).
fn fingerprint(
    m: &config::McpBackend,
    authorization: Option<&config::McpAuthorization>,
    limits: &config::Limits,
) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(m).unwrap_or_default().hash(&mut h);
    serde_json::to_string(&authorization)
        .unwrap_or_default()
        .hash(&mut h);
    format!("{limits:?}").hash(&mut h);
    m.session_key.as_ref().map(|k| k.expose()).hash(&mut h);
    for t in &m.targets {
        for v in t.stdio.iter().flat_map(|s| s.env.values()) {
            v.expose().hash(&mut h);
        }
        if let Some(a) = t.policies.as_ref().and_then(|p| p.backend_auth.as_ref()) {
            a.key.expose().hash(&mut h);
        }
    }
    h.finish()
}

/// One HTTP target's client: the pooled upstream plus the target's own policies.
struct TargetClient {
    upstream: Upstream,
    policies: Arc<BackendPolicies>,
}

impl mcp::HttpClient for TargetClient {
    fn send(
        &self,
        mut req: Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, String>> + Send + 'static>> {
        if let Some(m) = &self.policies.request_headers {
            m.apply(req.headers_mut());
        }
        if let Some(auth) = &self.policies.backend_auth {
            auth.apply(req.headers_mut());
        }
        *req.version_mut() = if self.upstream.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let upstream = self.upstream.clone();
        let address = self.upstream.address.clone();
        let timeout = self.policies.backend_timeout;
        Box::pin(async move {
            let call = upstream.request(req);
            let result = match timeout {
                Some(t) => tokio::time::timeout(t, call)
                    .await
                    .map_err(|_| format!("upstream {address} timed out"))?,
                None => call.await,
            };
            match result {
                Ok(resp) => Ok(resp.map(body::from_incoming)),
                Err(e) if is_connect_error(&*e) => Err(format!(
                    "upstream {address} is unavailable: {}",
                    root_message(&*e)
                )),
                Err(e) => Err(format!("upstream {address} failed: {}", root_message(&*e))),
            }
        })
    }
}

/// `policies`: the backend's layered policies (its `mcpAuthorization`).
pub(crate) fn compile(
    m: &config::McpBackend,
    policies: &config::Policies,
    limits: &config::Limits,
    cache: &ClientCache,
    used: &mut Vec<UpstreamKey>,
) -> Result<McpBackend, CompileError> {
    let authorization = policies.mcp_authorization.as_ref();
    let key = fingerprint(m, authorization, limits);
    let mut kept = cache.mcp.0.lock().unwrap_or_else(|p| p.into_inner());
    kept.retain(|_, g| g.strong_count() > 0);
    if let Some(gateway) = kept.get(&key).and_then(Weak::upgrade) {
        return Ok(McpBackend { gateway });
    }
    let gateway = mcp::Gateway::compile(m, authorization, |target, url| {
        let own = crate::policy::layered(None, target.policies.as_ref());
        let https = url.scheme_str() == Some("https");
        let host = url.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let default_tls = config::BackendTls::default();
        let conn = Connection::of(&own, https.then_some(&default_tls));
        let upstream = crate::snapshot::upstream_with(host, port, conn, limits, cache, used)?;
        let policies = BackendPolicies::compile(&own).map_err(|e| e.to_string())?;
        Ok(Arc::new(TargetClient {
            upstream,
            policies: Arc::new(policies),
        }) as Arc<dyn mcp::HttpClient>)
    })
    .map_err(CompileError::new)?;
    let gateway = Arc::new(gateway);
    kept.insert(key, Arc::downgrade(&gateway));
    Ok(McpBackend { gateway })
}

/// Kills every stdio MCP server this process started (shutdown).
pub fn kill_stdio_children() {
    mcp::kill_stdio_children();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(yaml: &str) -> config::McpBackend {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[tokio::test]
    async fn an_unchanged_backend_keeps_its_gateway_across_reloads() {
        let cache = ClientCache::default();
        let limits: config::Limits = serde_yaml_ng::from_str("{}").unwrap();
        let yaml = "{sessionKey: one, targets: [{name: a, mcp: {host: 'http://127.0.0.1:9/mcp'}}]}";
        let mut used = Vec::new();
        let first = compile(
            &backend(yaml),
            &Default::default(),
            &limits,
            &cache,
            &mut used,
        )
        .unwrap();
        let again = compile(
            &backend(yaml),
            &Default::default(),
            &limits,
            &cache,
            &mut used,
        )
        .unwrap();
        assert!(
            Arc::ptr_eq(&first.gateway, &again.gateway),
            "same config, same sessions"
        );
        let rekeyed = yaml.replace("one", "two");
        let other = compile(
            &backend(&rekeyed),
            &Default::default(),
            &limits,
            &cache,
            &mut used,
        )
        .unwrap();
        assert!(
            !Arc::ptr_eq(&first.gateway, &other.gateway),
            "a new session key is a new gateway"
        );
        drop((first, again));
        let fresh = compile(
            &backend(yaml),
            &Default::default(),
            &limits,
            &cache,
            &mut used,
        )
        .unwrap();
        assert_eq!(
            Arc::strong_count(&fresh.gateway),
            1,
            "a gateway no snapshot holds is not kept"
        );
    }
}
