//! The `mcp` backend: requests go to the MCP gateway (`mcp` crate); its HTTP targets are
//! reached through the proxy's own upstream pool, with each target's policies.

use crate::body::{self, Body};
use crate::policy::Effective;
use crate::snapshot::ClientCache;
use crate::upstream::{is_connect_error, root_message, Upstream, UpstreamKey};
use http::header::AUTHORIZATION;
use http::{Request, Response, Version};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub struct McpTarget {
    pub gateway: mcp::Gateway,
}

/// One HTTP target's client: the pooled upstream plus the target's own policies.
struct TargetClient {
    upstream: Upstream,
    policies: Arc<Effective>,
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
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        *req.version_mut() = if self.upstream.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let client = self.upstream.client.clone();
        let address = self.upstream.address.clone();
        let timeout = self.policies.backend_timeout;
        Box::pin(async move {
            let call = client.request(req);
            let result = match timeout {
                Some(t) => tokio::time::timeout(t, call)
                    .await
                    .map_err(|_| format!("upstream {address} timed out"))?,
                None => call.await,
            };
            match result {
                Ok(resp) => Ok(resp.map(body::from_incoming)),
                Err(e) if is_connect_error(&e) => Err(format!(
                    "upstream {address} is unavailable: {}",
                    root_message(&e)
                )),
                Err(e) => Err(format!("upstream {address} failed: {}", root_message(&e))),
            }
        })
    }
}

pub(crate) fn compile(
    m: &config::McpBackend,
    route_policies: Option<&config::Policies>,
    backend_policies: Option<&config::Policies>,
    limits: &config::Limits,
    cache: &ClientCache,
    used: &mut Vec<UpstreamKey>,
) -> Result<McpTarget, String> {
    let authorization = backend_policies
        .and_then(|p| p.mcp_authorization.as_ref())
        .or_else(|| route_policies.and_then(|p| p.mcp_authorization.as_ref()));
    let gateway = mcp::Gateway::compile(m, authorization, |target, url| {
        let own = target.policies.as_ref();
        let https = url.scheme_str() == Some("https");
        let host = url.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let default_tls = config::BackendTls::default();
        let tls = own
            .and_then(|p| p.backend_tls.as_ref())
            .or(https.then_some(&default_tls));
        let upstream =
            crate::snapshot::upstream_with(host, port, tls, None, own, limits, cache, used)?;
        let policies = Effective::compile(None, own)?;
        Ok(Arc::new(TargetClient {
            upstream,
            policies: Arc::new(policies),
        }) as Arc<dyn mcp::HttpClient>)
    })?;
    Ok(McpTarget { gateway })
}

/// Kills every stdio MCP server this process started (shutdown).
pub fn kill_stdio_children() {
    mcp::kill_stdio_children();
}
