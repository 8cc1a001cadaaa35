//! `jwtAuth` (route phase, request headers): bearer JWTs verified against a JWKS (signature,
//! expiry, issuer, audience). The verified claims are the request's identity: the `jwt` CEL
//! variable (MCP tool authorization, log and span fields).
//!
//! The JWK set is given inline (`jwks`) or fetched from `jwksUrl`. A fetched set lives behind
//! an [`ArcSwapOption`]: the common request (keys loaded, its `kid` known) decides in place.
//! The set is fetched on first use, again in the background by the first request that finds
//! it older than `jwksRefresh` (no task per policy: compile may run outside a runtime), and
//! again when a token names an unknown `kid` — at most once per [`REFETCH_EVERY`], concurrent
//! requests sharing one fetch. A failed fetch keeps the keys already loaded (a warning names
//! the URL, never a token). Until a first fetch succeeds a token cannot be verified: strict
//! and optional modes answer 401 `invalid_token` ("signing keys are not available yet"),
//! the same answer as any token the gateway cannot verify — a 503 would tell a client to
//! retry a request it cannot fix, and would say more about the gateway than a caller needs.

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode, Uri};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::PolicyError;
use crate::body::{self, Body};
use crate::context::RequestCtx;
use crate::pipeline::{Flow, Phase, PhaseFuture};
use crate::upstream::Upstream;

/// A token with an unknown `kid` fetches the set again at most this often.
pub const REFETCH_EVERY: Duration = Duration::from_secs(10);
/// `jwksRefresh` when not set.
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Longest a fetch of the JWK set may take (requests waiting on it wait this long at most).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 1 << 20;
const KEYS_UNAVAILABLE: &str = "signing keys are not available yet";

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

/// The keys of one JWK set.
struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// `strict`: every key must be usable (a set written in the config); otherwise keys the
    /// gateway cannot use (encryption keys, unknown algorithms) are skipped, as an identity
    /// provider's published set may carry them.
    fn parse(text: &[u8], strict: bool) -> Result<KeySet, String> {
        let set: JwkSet =
            serde_json::from_slice(text).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if !strict
                && matches!(
                    jwk.common.public_key_use,
                    Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
                )
            {
                continue;
            }
            let usable = algorithm_of(jwk)
                .ok_or_else(|| "a key has an unknown `alg`".to_string())
                .and_then(|alg| {
                    DecodingKey::from_jwk(jwk)
                        .map(|key| (alg, key))
                        .map_err(|e| e.to_string())
                });
            match usable {
                Ok((alg, key)) => keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                }),
                Err(e) if strict => return Err(e),
                Err(e) => {
                    tracing::debug!(kid = ?jwk.common.key_id, error = %e, "jwtAuth: skipping a key of the fetched JWK set")
                }
            }
        }
        if keys.is_empty() {
            return Err("the JWK set has no usable keys".into());
        }
        Ok(KeySet { keys })
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

enum Keys {
    Inline(KeySet),
    Fetched(Arc<Remote>),
}

pub struct JwtAuth {
    mode: Mode,
    keys: Keys,
    issuer: Option<String>,
    audiences: Vec<String>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.keys {
            Keys::Inline(set) => format!("{} inline", set.keys.len()),
            Keys::Fetched(r) => format!("from {}", r.label),
        };
        f.debug_struct("JwtAuth")
            .field("mode", &self.mode)
            .field("keys", &keys)
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

/// Why a token did not verify.
enum Failure {
    /// The token names a `kid` the set does not have (a fresher set may).
    UnknownKid(String),
    Invalid(String),
}

/// What the request's head decides with the keys at hand.
enum Step {
    Done(Result<Option<Arc<Value>>, Refusal>),
    /// The keys must be fetched first.
    Fetch,
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
        let keys = match (&c.jwks, &c.jwks_url) {
            (Some(jwks), _) => Keys::Inline(
                KeySet::parse(jwks.expose().as_bytes(), true)
                    .map_err(|e| PolicyError::new(format!("jwtAuth.jwks: {e}")))?,
            ),
            (None, Some(url)) => Keys::Fetched(Arc::new(
                Remote::new(url, c.jwks_refresh.map_or(DEFAULT_REFRESH, |d| d.0))
                    .map_err(|e| PolicyError::new(format!("jwtAuth.jwksUrl: {e}")))?,
            )),
            (None, None) => return Err(PolicyError::new("jwtAuth needs `jwks` or `jwksUrl`")),
        };
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
    /// mode allows that), or the refusal; with the keys at hand (nothing is fetched).
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<Arc<Value>>, Refusal> {
        match self.step(headers, false) {
            Step::Done(r) => r,
            Step::Fetch => self.refused(Failure::Invalid(KEYS_UNAVAILABLE.into())),
        }
    }

    /// Decides with the keys at hand, or asks for a fetch (`may_fetch`) when a fetch could
    /// change the answer: no keys yet, or an unknown `kid` while a refetch is allowed.
    fn step(&self, headers: &HeaderMap, may_fetch: bool) -> Step {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = token else {
            return Step::Done(match self.mode {
                Mode::Strict => Err(Refusal(
                    "unauthenticated",
                    "a bearer token is required".into(),
                )),
                _ => Ok(None),
            });
        };
        let verified = match &self.keys {
            Keys::Inline(set) => self.verify(token, set),
            Keys::Fetched(remote) => {
                let current = remote.keys.load();
                let Some(set) = current.as_deref() else {
                    if may_fetch && remote.may_fetch() {
                        return Step::Fetch;
                    }
                    return Step::Done(self.refused(Failure::Invalid(KEYS_UNAVAILABLE.into())));
                };
                remote.refresh_if_due();
                match self.verify(token, set) {
                    Err(Failure::UnknownKid(_)) if may_fetch && remote.may_fetch() => {
                        return Step::Fetch
                    }
                    other => other,
                }
            }
        };
        Step::Done(match verified {
            Ok(claims) => Ok(Some(Arc::new(claims))),
            Err(why) => self.refused(why),
        })
    }

    fn refused(&self, why: Failure) -> Result<Option<Arc<Value>>, Refusal> {
        match (self.mode, why) {
            (Mode::Permissive, _) => Ok(None),
            (_, Failure::UnknownKid(why) | Failure::Invalid(why)) => {
                Err(Refusal("invalid_token", why))
            }
        }
    }

    fn verify(&self, token: &str, set: &KeySet) -> Result<Value, Failure> {
        let head = decode_header(token)
            .map_err(|_| Failure::Invalid("the bearer token is not a JWT".to_string()))?;
        let candidates =
            set.keys
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
        match &head.kid {
            Some(kid) if !set.has_kid(kid) => Err(Failure::UnknownKid(last)),
            _ => Err(Failure::Invalid(last)),
        }
    }

    fn apply(ctx: &mut RequestCtx<'_>, result: Result<Option<Arc<Value>>, Refusal>) -> Flow {
        match result {
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

impl Phase for JwtAuth {
    fn request_headers(&self, ctx: &mut RequestCtx<'_>, req: &Parts) -> Flow {
        match self.step(&req.headers, true) {
            Step::Done(result) => Self::apply(ctx, result),
            Step::Fetch => Flow::Wait,
        }
    }

    fn request_headers_async<'a>(
        &'a self,
        ctx: &'a mut RequestCtx<'_>,
        req: &'a Parts,
    ) -> PhaseFuture<'a> {
        Box::pin(async move {
            if let Keys::Fetched(remote) = &self.keys {
                remote.fetch_on_demand().await;
            }
            Self::apply(ctx, self.check(&req.headers))
        })
    }
}

/// A JWK set fetched from `jwksUrl`, shared by the requests of one compiled policy.
struct Remote {
    client: Upstream,
    uri: Uri,
    /// The URL without its query, for logs.
    label: String,
    refresh: Duration,
    keys: ArcSwapOption<KeySet>,
    /// Held across a fetch: one fetch at a time, and requests that want one wait for it.
    fetching: tokio::sync::Mutex<()>,
    /// A fetch is running (requests that need keys wait for it rather than refuse).
    in_flight: AtomicBool,
    /// Fetches finished (either way).
    generation: AtomicU64,
    /// A background refresh is spawned.
    refreshing: AtomicBool,
    /// Times below, as milliseconds since `epoch`.
    epoch: Instant,
    /// When the set is due for its periodic refresh.
    refresh_at: AtomicU64,
    /// Before this, a request may not cause a fetch (the unknown-`kid` rate limit; also
    /// after a first load failed).
    on_demand_at: AtomicU64,
}

impl Remote {
    fn new(url: &str, refresh: Duration) -> Result<Remote, String> {
        let (client, uri) = crate::ai::token::endpoint_client(url, &config::Limits::default())?;
        let label = format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str()),
            uri.path()
        );
        Ok(Remote {
            client,
            uri,
            label,
            refresh: refresh.max(Duration::from_secs(1)),
            keys: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(()),
            in_flight: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            epoch: Instant::now(),
            refresh_at: AtomicU64::new(0),
            on_demand_at: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn after(&self, d: Duration) -> u64 {
        self.now().saturating_add(d.as_millis() as u64)
    }

    /// Whether a request may wait for a fetch: one is running, or one may start.
    fn may_fetch(&self) -> bool {
        self.in_flight.load(Ordering::Acquire)
            || self.now() >= self.on_demand_at.load(Ordering::Acquire)
    }

    /// Starts one background refresh when the set is older than `jwksRefresh`.
    fn refresh_if_due(self: &Arc<Self>) {
        if self.now() < self.refresh_at.load(Ordering::Acquire)
            || self.refreshing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refreshing.store(false, Ordering::Release);
            return;
        };
        let me = self.clone();
        runtime.spawn(async move {
            {
                let _one = me.fetching.lock().await;
                if me.now() >= me.refresh_at.load(Ordering::Acquire) {
                    me.fetch().await;
                }
            }
            me.refreshing.store(false, Ordering::Release);
        });
    }

    /// A request needs keys: no set yet, or its `kid` is unknown. Waits for the fetch running,
    /// or runs one if the rate limit allows.
    async fn fetch_on_demand(&self) {
        let seen = self.generation.load(Ordering::Acquire);
        let _one = self.fetching.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            // A fetch finished while this request waited: its keys are the answer.
            return;
        }
        let loaded = self.keys.load().is_some();
        if self.now() < self.on_demand_at.load(Ordering::Acquire) {
            return;
        }
        if loaded {
            // An unknown kid: whatever this fetch brings, the next is at least 10 s away.
            self.on_demand_at
                .store(self.after(REFETCH_EVERY), Ordering::Release);
        }
        if !self.fetch().await && !loaded {
            // Not even a first set: do not hammer the endpoint either.
            self.on_demand_at
                .store(self.after(REFETCH_EVERY), Ordering::Release);
        }
    }

    /// Fetches the set (the caller holds `fetching`); on failure the keys already loaded
    /// stay. Returns whether new keys were stored.
    async fn fetch(&self) -> bool {
        self.in_flight.store(true, Ordering::Release);
        let got = match tokio::time::timeout(FETCH_TIMEOUT, self.get()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
        };
        let ok = match got {
            Ok(set) => {
                tracing::debug!(url = %self.label, keys = set.keys.len(), "jwtAuth: fetched the JWK set");
                self.keys.store(Some(Arc::new(set)));
                self.refresh_at
                    .store(self.after(self.refresh), Ordering::Release);
                true
            }
            Err(e) => {
                tracing::warn!(
                    url = %self.label,
                    error = %e,
                    keeping = self.keys.load().is_some(),
                    "jwtAuth: fetching the JWK set failed; the keys already loaded stay in use"
                );
                self.refresh_at.store(
                    self.after(self.refresh.min(REFETCH_EVERY)),
                    Ordering::Release,
                );
                false
            }
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.in_flight.store(false, Ordering::Release);
        ok
    }

    async fn get(&self) -> Result<KeySet, String> {
        let req = http::Request::get(self.uri.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .body(body::empty())
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        if status != StatusCode::OK {
            return Err(format!("answered {status}"));
        }
        let bytes = body::read_limited(body::from_incoming(resp.into_body()), MAX_JWKS_BYTES)
            .await
            .map_err(|_| {
                format!("the answer could not be read (or is over {MAX_JWKS_BYTES} bytes)")
            })?;
        KeySet::parse(&bytes, false)
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
