//! `jwtAuth` (route phase, request headers): bearer JWTs verified against a JWKS (signature,
//! expiry, issuer, audience). The verified claims are the request's identity: the `jwt` CEL
//! variable (MCP tool authorization, log and span fields).

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::sync::Arc;

use super::PolicyError;
use crate::body::{self, Body};
use crate::context::RequestCtx;
use crate::pipeline::{Flow, Phase};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A valid token is required.
    Strict,
    /// No token is fine; a token that fails verification is refused.
    Optional,
    /// Never refuses: a valid token's claims are used, anything else is ignored.
    Permissive,
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

pub struct JwtAuth {
    mode: Mode,
    keys: Vec<Key>,
    issuer: Option<String>,
    audiences: Vec<String>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("mode", &self.mode)
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish()
    }
}

/// Why a request was refused.
pub struct Refusal(&'static str, String);

impl Refusal {
    pub fn respond(&self) -> Response<Body> {
        let body = serde_json::json!({"error": {"code": self.0, "message": self.1}});
        let mut r = Response::new(body::full(Bytes::from(body.to_string())));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    }
}

fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(a) = jwk.common.key_algorithm {
        // Signing algorithms are spelled alike in both enums (HS256, RS256, ES256, ...).
        return format!("{a:?}").parse().ok();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => Some(match ec.curve {
            jsonwebtoken::jwk::EllipticCurve::P384 => Algorithm::ES384,
            _ => Algorithm::ES256,
        }),
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::OctetKey(_) => Some(Algorithm::HS256),
    }
}

impl JwtAuth {
    pub fn compile(c: &config::JwtAuth) -> Result<JwtAuth, PolicyError> {
        let text = c.jwks.expose();
        let set: JwkSet = serde_json::from_str(text)
            .map_err(|e| PolicyError::new(format!("jwtAuth.jwks is not a JWK set: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let alg = algorithm_of(jwk)
                .ok_or_else(|| PolicyError::new("jwtAuth.jwks: a key has an unknown `alg`"))?;
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| PolicyError::new(format!("jwtAuth.jwks: {e}")))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(PolicyError::new("jwtAuth.jwks has no keys"));
        }
        Ok(JwtAuth {
            mode: match c.mode {
                Some(config::JwtMode::Optional) => Mode::Optional,
                Some(config::JwtMode::Permissive) => Mode::Permissive,
                _ => Mode::Strict,
            },
            keys,
            issuer: c.issuer.clone(),
            audiences: c.audiences.clone(),
        })
    }

    /// The verified claims of the request's bearer token (`None` when there is none and the
    /// mode allows that), or the refusal.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<Arc<Value>>, Refusal> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = token else {
            return match self.mode {
                Mode::Strict => Err(Refusal(
                    "unauthenticated",
                    "a bearer token is required".into(),
                )),
                _ => Ok(None),
            };
        };
        match self.verify(token) {
            Ok(claims) => Ok(Some(Arc::new(claims))),
            Err(_) if self.mode == Mode::Permissive => Ok(None),
            Err(why) => Err(Refusal("invalid_token", why)),
        }
    }

    fn verify(&self, token: &str) -> Result<Value, String> {
        let head = decode_header(token).map_err(|_| "the bearer token is not a JWT".to_string())?;
        let candidates =
            self.keys
                .iter()
                .filter(|k| k.alg == head.alg)
                .filter(|k| match (&head.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                });
        let mut validation = Validation::new(head.alg);
        validation.leeway = 30;
        match &self.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
        }
        let mut last = "no key of the JWKS matches the token (kid, alg)".to_string();
        for k in candidates {
            match decode::<Value>(token, &k.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = describe(&e),
            }
        }
        Err(last)
    }
}

impl Phase for JwtAuth {
    fn request_headers(&self, ctx: &mut RequestCtx<'_>, req: &Parts) -> Flow {
        match self.check(&req.headers) {
            Ok(claims) => {
                ctx.identity.jwt = claims;
                Flow::Continue
            }
            Err(refusal) => {
                ctx.error = Some("unauthenticated");
                Flow::Respond(refusal.respond())
            }
        }
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "the token has expired".into(),
        ImmatureSignature => "the token is not valid yet".into(),
        InvalidIssuer => "the token's issuer is not accepted".into(),
        InvalidAudience => "the token's audience is not accepted".into(),
        InvalidSignature => "the token's signature does not verify".into(),
        other => format!("the token is invalid: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &[u8] = b"switchyard-test-secret-at-least-32-bytes!";

    fn auth(mode: &str, extra: &str) -> JwtAuth {
        let jwks = format!(
            r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode(SECRET)
        );
        let yaml = format!("{{mode: {mode}, jwks: '{jwks}' {extra}}}");
        JwtAuth::compile(&serde_yaml_ng::from_str(&yaml).unwrap()).unwrap()
    }

    fn token(claims: Value, kid: &str) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.into());
        encode(&h, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        h
    }

    fn exp(offset: i64) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + offset
    }

    #[test]
    fn valid_tokens_yield_their_claims() {
        let a = auth("strict", ", issuer: https://idp, audiences: [mcp]");
        let t = token(
            serde_json::json!({"sub": "alice", "iss": "https://idp", "aud": "mcp", "exp": exp(300)}),
            "k1",
        );
        let claims = a.check(&bearer(&t)).ok().flatten().unwrap();
        assert_eq!(claims["sub"], "alice");
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let a = auth("strict", ", issuer: https://idp");
        let refused = |h: &HeaderMap| a.check(h).err().map(|r| r.1).unwrap_or_default();
        assert!(refused(&HeaderMap::new()).contains("required"));
        assert!(refused(&bearer("not.a.jwt")).contains("not a JWT"));
        let expired = token(
            serde_json::json!({"sub": "a", "iss": "https://idp", "exp": exp(-3600)}),
            "k1",
        );
        assert!(refused(&bearer(&expired)).contains("expired"));
        let wrong_iss = token(
            serde_json::json!({"sub": "a", "iss": "https://evil", "exp": exp(300)}),
            "k1",
        );
        assert!(refused(&bearer(&wrong_iss)).contains("issuer"));
        let other_kid = token(
            serde_json::json!({"sub": "a", "iss": "https://idp", "exp": exp(300)}),
            "k9",
        );
        assert!(refused(&bearer(&other_kid)).contains("no key"));
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a", "iss": "https://idp", "exp": exp(300)}),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        assert!(refused(&bearer(&forged)).contains("signature"));
    }

    #[test]
    fn optional_and_permissive_modes() {
        let expired = token(serde_json::json!({"sub": "a", "exp": exp(-3600)}), "k1");
        let optional = auth("optional", "");
        assert!(matches!(optional.check(&HeaderMap::new()), Ok(None)));
        assert!(optional.check(&bearer(&expired)).is_err());
        let permissive = auth("permissive", "");
        assert!(matches!(permissive.check(&bearer(&expired)), Ok(None)));
    }
}
