//! GitHub Copilot credentials: the configured GitHub OAuth token (`backendAuth.key`) is traded
//! at `copilot_internal/v2/token` for a short-lived Copilot API token, cached until shortly
//! before `expires_at`. The Copilot API is not publicly documented; this follows what its
//! public clients do (token exchange with `Authorization: token <github token>`, then Chat
//! Completions at api.githubcopilot.com with an editor identity).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use serde::Deserialize;

use super::token::{self, TokenCache};
use crate::body;
use crate::upstream::Upstream;

pub const DEFAULT_TOKEN_URL: &str = "https://api.github.com/copilot_internal/v2/token";

/// Headers the Copilot API requires on every call: it serves only known editor integrations.
pub static REQUIRED_HEADERS: [(HeaderName, HeaderValue); 3] = [
    (
        HeaderName::from_static("copilot-integration-id"),
        HeaderValue::from_static("vscode-chat"),
    ),
    (
        HeaderName::from_static("editor-version"),
        HeaderValue::from_static("vscode/1.99.3"),
    ),
    (
        HeaderName::from_static("editor-plugin-version"),
        HeaderValue::from_static("copilot-chat/0.26.7"),
    ),
];

#[derive(Deserialize)]
struct CopilotToken {
    token: String,
    /// Unix seconds.
    #[serde(default)]
    expires_at: Option<u64>,
}

pub struct CopilotTokenSource {
    github_token: HeaderValue,
    token_url: Uri,
    client: Upstream,
    cache: TokenCache,
}

impl CopilotTokenSource {
    pub fn new(
        github_token: &str,
        token_url: &str,
        limits: &config::Limits,
    ) -> Result<Self, String> {
        let mut github_token = HeaderValue::from_str(&format!("token {github_token}"))
            .map_err(|_| "backendAuth.key contains characters not allowed in a header")?;
        github_token.set_sensitive(true);
        let (client, token_url) = token::endpoint_client(token_url, limits)
            .map_err(|e| format!("copilot tokenUrl: {e}"))?;
        Ok(CopilotTokenSource {
            github_token,
            token_url,
            client,
            cache: TokenCache::default(),
        })
    }

    pub async fn authorization(&self) -> Result<HeaderValue, String> {
        self.cache.get(&self.token_url, || self.fetch()).await
    }

    async fn fetch(&self) -> Result<(String, Duration), String> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.token_url.clone())
            .header(header::AUTHORIZATION, self.github_token.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "switchyard")
            .body(body::empty())
            .map_err(|e| e.to_string())?;
        let bytes = token::call(&self.client, req).await?;
        let token: CopilotToken = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the Copilot token endpoint's answer is not a token: {e}"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lifetime = token.expires_at.map_or(Duration::from_secs(25 * 60), |at| {
            Duration::from_secs(at.saturating_sub(now))
        });
        Ok((token.token, lifetime))
    }
}
