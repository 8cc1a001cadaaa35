//! Vertex AI credentials: OAuth 2.0 access tokens for a Google service account, obtained with
//! the JWT bearer grant (RFC 7523) from the key's `token_uri` and cached until shortly before
//! they expire. Reference: "Using OAuth 2.0 for Server to Server Applications"
//! (developers.google.com/identity/protocols/oauth2/service-account).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Uri};
use serde::Deserialize;

use super::token::{self, TokenCache};
use crate::body;
use crate::upstream::Upstream;

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    token_uri: String,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Access tokens for one service account, shared by every request to the backend.
pub struct GoogleTokenSource {
    client_email: String,
    key_id: Option<String>,
    signing_key: jsonwebtoken::EncodingKey,
    token_uri: Uri,
    client: Upstream,
    cache: TokenCache,
}

impl GoogleTokenSource {
    /// `json` is the service-account key file's content.
    pub fn from_json(json: &str, limits: &config::Limits) -> Result<Arc<Self>, String> {
        let key: ServiceAccountKey = serde_json::from_str(json)
            .map_err(|e| format!("the Vertex credentials are not a service-account key: {e}"))?;
        let signing_key = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes())
            .map_err(|e| format!("the service account's private_key is not an RSA key: {e}"))?;
        let (client, token_uri) = token::endpoint_client(&key.token_uri, limits)
            .map_err(|e| format!("service account token_uri: {e}"))?;
        Ok(Arc::new(GoogleTokenSource {
            client_email: key.client_email,
            key_id: key.private_key_id,
            signing_key,
            token_uri,
            client,
            cache: TokenCache::default(),
        }))
    }

    /// `Authorization: Bearer <token>`, from the cache or freshly obtained.
    pub async fn authorization(&self) -> Result<HeaderValue, String> {
        self.cache.get(&self.token_uri, || self.fetch()).await
    }

    async fn fetch(&self) -> Result<(String, Duration), String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aud = self.token_uri.to_string();
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &aud,
            iat: now,
            exp: now + 3600,
        };
        let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        jwt_header.kid = self.key_id.clone();
        let assertion = jsonwebtoken::encode(&jwt_header, &claims, &self.signing_key)
            .map_err(|e| format!("signing the token request failed: {e}"))?;
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.token_uri.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body::full(Bytes::from(form)))
            .map_err(|e| e.to_string())?;
        let bytes = token::call(&self.client, req).await?;
        let token: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the token endpoint's answer is not a token: {e}"))?;
        Ok((
            token.access_token,
            Duration::from_secs(token.expires_in.unwrap_or(3600)),
        ))
    }
}
