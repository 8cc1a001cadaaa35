//! `backendAuth` (backend phase, upstream request): the gateway's credential for the upstream
//! replaces the client's. Providers with their own scheme (`x-api-key`, SigV4, OAuth) read the
//! key in their adapter instead.

use http::header::{self, HeaderMap, HeaderValue};

use super::PolicyError;

/// A complete `Authorization` value, marked sensitive so it never prints.
#[derive(Debug)]
pub struct BackendAuth(HeaderValue);

impl BackendAuth {
    pub(crate) fn compile(a: &config::BackendAuth) -> Result<Self, PolicyError> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", a.key.expose())).map_err(|_| {
            PolicyError::new("backendAuth.key contains characters not allowed in a header")
        })?;
        v.set_sensitive(true);
        Ok(BackendAuth(v))
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(header::AUTHORIZATION, self.0.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_is_sensitive_and_replaces_the_clients() {
        let cfg: config::BackendAuth = serde_json::from_str(r#"{"key": "sk-held"}"#).unwrap();
        let auth = BackendAuth::compile(&cfg).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client"),
        );
        auth.apply(&mut h);
        assert_eq!(h[header::AUTHORIZATION], "Bearer sk-held");
        assert!(h[header::AUTHORIZATION].is_sensitive());
        assert!(!format!("{auth:?}").contains("sk-held"));
    }
}
