//! `apiKeyAuth` (route phase): the caller presents a key — `Authorization: Bearer`,
//! `x-api-key` (Anthropic clients), `api-key` (Azure OpenAI clients) or a configured header —
//! which is hashed and looked up among the config's keys, the keys file and the admin API's
//! virtual keys. The key's identity is the `apiKey` CEL variable; on LLM routes its model
//! list is enforced once the model is known (request body phase). The key never goes
//! upstream: the header that carried it is removed from every attempt.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use super::PolicyError;
use crate::body::Body;
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::governance::keys::{hash_key, key_map, KeyEntry, KeyHash, KeyMap, KeysFile};
use crate::governance::{PhaseEnv, VirtualKeys};
use crate::pipeline::{Flow, Listing, Phase};

use super::jwt::Mode;

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static API_KEY: HeaderName = HeaderName::from_static("api-key");

pub struct ApiKeyAuth {
    mode: Mode,
    /// Read first, when configured.
    header: Option<HeaderName>,
    keys: KeyMap,
    file: Option<KeysFile>,
    virtual_keys: Option<Arc<VirtualKeys>>,
    /// LLM route: the model list of a key is checked in the body phase.
    llm_route: bool,
}

/// The key a request presented: where, and its hash.
struct Presented {
    header: HeaderName,
    hash: KeyHash,
}

impl ApiKeyAuth {
    pub fn compile(c: &config::ApiKeyAuth, env: &PhaseEnv) -> Result<ApiKeyAuth, PolicyError> {
        let keys =
            key_map(&c.keys).map_err(|e| PolicyError::new(format!("apiKeyAuth.keys: {e}")))?;
        let file = c
            .keys_file
            .as_ref()
            .map(|p| KeysFile::load(p.clone()))
            .transpose()
            .map_err(|e| PolicyError::new(format!("apiKeyAuth.keysFile: {e}")))?;
        Ok(ApiKeyAuth {
            mode: match c.mode {
                Some(config::JwtMode::Optional) => Mode::Optional,
                Some(config::JwtMode::Permissive) => Mode::Permissive,
                _ => Mode::Strict,
            },
            header: c
                .header
                .as_ref()
                .map(|h| HeaderName::from_bytes(h.as_str().as_bytes()))
                .transpose()
                .map_err(|_| PolicyError::new("apiKeyAuth.header is not a header name"))?,
            keys,
            file,
            virtual_keys: c.virtual_keys.then(|| env.governance.keys.clone()),
            llm_route: env.llm_route,
        })
    }

    /// The key in the request's headers, if any: the configured header, then the standard
    /// ones.
    fn presented(&self, headers: &HeaderMap) -> Option<Presented> {
        let candidates = self
            .header
            .iter()
            .chain([&header::AUTHORIZATION, &X_API_KEY, &API_KEY]);
        for name in candidates {
            let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let key = match name == header::AUTHORIZATION {
                true => match v.get(..7) {
                    Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
                    _ => continue,
                },
                false => v.trim(),
            };
            if !key.is_empty() {
                return Some(Presented {
                    header: name.clone(),
                    hash: hash_key(key),
                });
            }
        }
        None
    }

    fn lookup(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        let found = self
            .keys
            .get(hash)
            .cloned()
            .or_else(|| self.file.as_ref().and_then(|f| f.get(hash)))
            .or_else(|| self.virtual_keys.as_ref().and_then(|v| v.get(hash)))?;
        // The map found it by hash; the final comparison does not leak where digests differ.
        bool::from(found.hash.ct_eq(hash)).then_some(found)
    }

    fn refuse(&self, ctx: &RequestCtx<'_>, code: &'static str, message: &str) -> Flow {
        let mut resp = refusal(ctx, StatusCode::UNAUTHORIZED, code, message.to_string());
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Flow::Respond(resp)
    }
}

/// A refusal in the caller's dialect (OpenAI or Anthropic error JSON on LLM routes, the
/// gateway's JSON error elsewhere).
pub(crate) fn refusal(
    ctx: &RequestCtx<'_>,
    status: StatusCode,
    code: &'static str,
    message: String,
) -> Response<Body> {
    let e = ProxyError::new(status, code, message);
    match ctx.dialect {
        Some(f) => e.with_format(f).into_response(),
        None => e.into_response(),
    }
}

impl Phase for ApiKeyAuth {
    fn request_headers(&self, ctx: &mut RequestCtx<'_>, req: &Parts) -> Flow {
        let Some(presented) = self.presented(&req.headers) else {
            return match self.mode {
                Mode::Strict => self.refuse(ctx, "unauthenticated", "an API key is required"),
                _ => Flow::Continue,
            };
        };
        match self.lookup(&presented.hash) {
            Some(entry) => {
                ctx.identity.api_key = Some(entry.info.clone());
                ctx.identity.key_limits = Some(entry);
                Flow::Continue
            }
            None if self.mode == Mode::Permissive => Flow::Continue,
            None => self.refuse(ctx, "invalid_api_key", "the API key is not valid"),
        }
    }

    fn reads_request_body(&self) -> bool {
        self.llm_route
    }

    fn request_body(&self, ctx: &mut RequestCtx<'_>, req: &Parts, body: &mut Bytes) -> Flow {
        let Some(key) = ctx.identity.api_key.clone() else {
            return Flow::Continue;
        };
        if key.models.is_empty() {
            return Flow::Continue;
        }
        super::read_model(ctx, req, body);
        let Some(model) = ctx.model.as_deref() else {
            return Flow::Continue;
        };
        if key.allows_model(model) {
            return Flow::Continue;
        }
        Flow::Respond(refusal(
            ctx,
            StatusCode::FORBIDDEN,
            "model_not_allowed",
            format!("this API key may not use the model {model:?}"),
        ))
    }

    fn lists_model(&self, req: &Parts, model: &str) -> Listing {
        let Some(presented) = self.presented(&req.headers) else {
            return match self.mode {
                Mode::Strict => Listing::Unauthenticated,
                _ => Listing::Shown,
            };
        };
        match self.lookup(&presented.hash) {
            Some(entry) if entry.info.allows_model(model) => Listing::Shown,
            Some(_) => Listing::Hidden,
            None if self.mode == Mode::Permissive => Listing::Shown,
            None => Listing::Unauthenticated,
        }
    }

    fn upstream_request(&self, ctx: &RequestCtx<'_>, req: &mut Request<Body>) {
        let Some(entry) = &ctx.identity.key_limits else {
            return;
        };
        // Remove the header that carried the client's key (not a credential the backend
        // phase put there for the provider).
        if let Some(p) = self.presented(req.headers()) {
            if bool::from(p.hash.ct_eq(&entry.hash)) {
                req.headers_mut().remove(&p.header);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(keys: &[(&str, &str)]) -> ApiKeyAuth {
        let keys = keys
            .iter()
            .map(|(name, key)| config::ApiKey {
                name: name.to_string(),
                key: Some(config::Secret::new(*key)),
                ..Default::default()
            })
            .collect::<Vec<_>>();
        ApiKeyAuth {
            mode: Mode::Strict,
            header: Some(HeaderName::from_static("x-team-key")),
            keys: key_map(&keys).unwrap(),
            file: None,
            virtual_keys: None,
            llm_route: false,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn keys_are_read_from_each_header_and_matched_by_hash() {
        let p = policy(&[("alice", "sk-a"), ("bob", "sk-b")]);
        for (h, v) in [
            ("authorization", "Bearer sk-a"),
            ("authorization", "bearer   sk-a"),
            ("x-api-key", "sk-a"),
            ("api-key", "sk-a"),
            ("x-team-key", "sk-a"),
        ] {
            let found = p.presented(&headers(&[(h, v)])).unwrap();
            assert_eq!(
                &*p.lookup(&found.hash).unwrap().info.name,
                "alice",
                "{h}: {v}"
            );
            assert_eq!(found.header.as_str(), h);
        }
        // The configured header wins over Authorization.
        let both = headers(&[("authorization", "Bearer sk-a"), ("x-team-key", "sk-b")]);
        let found = p.presented(&both).unwrap();
        assert_eq!(&*p.lookup(&found.hash).unwrap().info.name, "bob");
        // Basic credentials and wrong keys are not keys.
        assert!(p
            .presented(&headers(&[("authorization", "Basic YTpi")]))
            .is_none());
        let wrong = p.presented(&headers(&[("x-api-key", "sk-c")])).unwrap();
        assert!(p.lookup(&wrong.hash).is_none());
    }
}
