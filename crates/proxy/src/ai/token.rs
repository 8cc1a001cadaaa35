//! Short-lived provider tokens (Vertex OAuth, Copilot): one HTTP client to the token endpoint,
//! and a cache that renews a token shortly before it expires, one refresh at a time.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, StatusCode, Uri};

use crate::body::{self, Body};
use crate::upstream::{Upstream, UpstreamKey};

/// A token is renewed this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

struct Cached {
    value: HeaderValue,
    renew_at: Instant,
}

#[derive(Default)]
pub struct TokenCache {
    /// Held across a refresh so concurrent requests wait for it instead of stampeding.
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl TokenCache {
    /// The cached `Authorization` value, or `fetch`'s (token, lifetime) as `Bearer <token>`.
    pub async fn get<F, Fut>(&self, endpoint: &Uri, fetch: F) -> Result<HeaderValue, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), String>>,
    {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.value.clone());
            }
        }
        let (token, lifetime) = tokio::time::timeout(TOKEN_TIMEOUT, fetch())
            .await
            .map_err(|_| format!("the token endpoint {endpoint} did not answer in time"))??;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token endpoint returned an unusable token".to_string())?;
        value.set_sensitive(true);
        *cached = Some(Cached {
            value: value.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN),
        });
        Ok(value)
    }
}

/// A pooled client to a token endpoint URL (`https` with the public roots plus `SSL_CERT_FILE`).
pub fn endpoint_client(url: &str, limits: &config::Limits) -> Result<(Upstream, Uri), String> {
    let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url:?} must be an http(s) URL")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tls_config = tls
        .then(|| crate::tls::client_config(&config::BackendTls::default(), &host, false))
        .transpose()?;
    let key = UpstreamKey {
        host: host.as_str().into(),
        port,
        http2: false,
        tls_fingerprint: tls.then_some(0),
        connect_timeout: limits.upstream_connect_timeout.0,
        pool_idle_timeout: limits.upstream_pool_idle_timeout.0,
        pool_max_idle: 1,
    };
    Ok((Upstream::new(&key, tls_config), uri))
}

/// Sends `req` and reads the answer (bounded). A non-2xx status is an error carrying the
/// endpoint's own explanation (token endpoints put no secrets in their errors).
pub async fn call(client: &Upstream, req: Request<Body>) -> Result<Bytes, String> {
    let target = req.uri().to_string();
    let resp = client
        .client
        .request(req)
        .await
        .map_err(|e| format!("the token endpoint {target} failed: {e}"))?;
    let status = resp.status();
    let bytes = body::read_limited(body::from_incoming(resp.into_body()), MAX_TOKEN_RESPONSE)
        .await
        .unwrap_or_default();
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).to_string();
        return Err(format!(
            "the token endpoint {target} refused ({status}): {text}"
        ));
    }
    Ok(bytes)
}
