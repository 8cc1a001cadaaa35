//! The simulator's own Google OAuth 2.0 token endpoint, for Vertex AI service-account auth.
//!
//! Per "Using OAuth 2.0 for Server to Server Applications"
//! (<https://developers.google.com/identity/protocols/oauth2/service-account>): the client posts
//! a form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`, where the JWT
//! is RS256-signed with the service account's private key and claims `iss` (the account's email),
//! `scope` (space-separated), `aud` (the token endpoint URL), `iat` and `exp` (at most one hour
//! after `iat`). The answer is `{"access_token", "expires_in", "token_type": "Bearer"}`; failures
//! are 400 `{"error": "invalid_grant" | "invalid_scope" | "unsupported_grant_type",
//! "error_description"}` as Google's endpoint returns them.
//!
//! `jsonwebtoken` is built without its PEM feature in this workspace, so keys are unwrapped here
//! from PEM to the PKCS#1 DER it takes ([`rsa_der_from_pem`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;

/// The scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The only grant type the endpoint accepts.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Google refuses assertions valid for longer than this.
const MAX_ASSERTION_LIFETIME: u64 = 3600;

/// Clock skew tolerated on `iat` / `exp`.
const LEEWAY_SECS: u64 = 60;

/// Issued tokens kept at most; expired ones are pruned first, so only a flood of live tokens hits
/// this, and then the oldest is forgotten.
const MAX_LIVE_TOKENS: usize = 10_000;

/// The test service account's private key (PKCS#8 PEM). For tests only.
pub const TEST_SERVICE_ACCOUNT_PRIVATE_KEY_PEM: &str =
    include_str!("../../testdata/vertex-test-sa.key.pem");

/// The test service account's public key (SubjectPublicKeyInfo PEM).
pub const TEST_SERVICE_ACCOUNT_PUBLIC_KEY_PEM: &str =
    include_str!("../../testdata/vertex-test-sa.pub.pem");

pub const TEST_SERVICE_ACCOUNT_EMAIL: &str = "switchyard-test@sim-project.iam.gserviceaccount.com";
pub const TEST_PROJECT_ID: &str = "sim-project";
pub const TEST_PRIVATE_KEY_ID: &str = "sim-test-key-1";

/// A Google service-account key file (the JSON `gcloud iam service-accounts keys create` writes)
/// for the test key pair, with `token_uri` pointing wherever the test wants (the simulator's
/// `/token`).
pub fn test_service_account_json(token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": TEST_PROJECT_ID,
        "private_key_id": TEST_PRIVATE_KEY_ID,
        "private_key": TEST_SERVICE_ACCOUNT_PRIVATE_KEY_PEM,
        "client_email": TEST_SERVICE_ACCOUNT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

/// Counters a test can read while the simulator runs (shared through `Options::stats`).
#[derive(Debug, Default)]
pub struct Stats {
    tokens_issued: AtomicU64,
    vertex_requests: AtomicU64,
}

impl Stats {
    /// Access tokens the `/token` endpoint has issued.
    pub fn tokens_issued(&self) -> u64 {
        self.tokens_issued.load(Ordering::Relaxed)
    }

    /// Vertex requests that passed authentication.
    pub fn vertex_requests(&self) -> u64 {
        self.vertex_requests.load(Ordering::Relaxed)
    }

    pub(crate) fn count_vertex_request(&self) {
        self.vertex_requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// Issued access tokens and their expiry.
#[derive(Default)]
pub(crate) struct TokenStore {
    live: Mutex<HashMap<String, Instant>>,
}

impl TokenStore {
    fn insert(&self, token: String, expires: Instant) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        live.retain(|_, exp| *exp > now);
        if live.len() >= MAX_LIVE_TOKENS {
            if let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(t, _)| t.clone()) {
                live.remove(&oldest);
            }
        }
        live.insert(token, expires);
    }

    /// Whether `token` was issued here and has not expired.
    pub fn is_valid(&self, token: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(token).is_some_and(|exp| *exp > Instant::now())
    }
}

/// What the token endpoint checks the assertion against.
pub(crate) struct TokenPolicy<'a> {
    /// PKCS#1 DER of the service account's public key.
    pub public_key_der: &'a [u8],
    /// The expected `iss`, when configured.
    pub expected_issuer: Option<&'a str>,
    /// This endpoint's own URL, the required `aud`.
    pub audience: &'a str,
    pub token_lifetime: Duration,
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    #[serde(default)]
    scope: String,
    iat: u64,
    exp: u64,
}

/// A token endpoint failure: the OAuth `error` code and description (always HTTP 400).
#[derive(Debug, PartialEq)]
pub(crate) struct TokenError {
    pub error: &'static str,
    pub description: String,
}

impl TokenError {
    fn grant(description: impl Into<String>) -> Self {
        TokenError {
            error: "invalid_grant",
            description: description.into(),
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        TokenError {
            error: "invalid_request",
            description: description.into(),
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// Handles a `/token` form body: verifies the assertion and issues a token.
pub(crate) fn exchange(
    form_body: &[u8],
    policy: &TokenPolicy,
    store: &TokenStore,
    stats: &Stats,
) -> Result<serde_json::Value, TokenError> {
    let form = parse_form(form_body);
    let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
    if grant_type != JWT_BEARER_GRANT {
        return Err(TokenError {
            error: "unsupported_grant_type",
            description: format!("Invalid grant_type: {grant_type}"),
        });
    }
    let assertion = form
        .get("assertion")
        .ok_or_else(|| TokenError::grant("Missing required parameter: assertion"))?;
    let claims = verify_assertion(assertion, policy)?;
    let serial = stats.tokens_issued.fetch_add(1, Ordering::Relaxed) + 1;
    // Opaque to clients; unique per issue, so caching is observable.
    let token = format!(
        "ya29.sim-{serial}-{:016x}",
        crate::stable_hash(format!("{}{serial}{}", claims.iss, claims.iat).as_bytes())
    );
    store.insert(token.clone(), Instant::now() + policy.token_lifetime);
    Ok(json!({
        "access_token": token,
        "expires_in": policy.token_lifetime.as_secs(),
        "token_type": "Bearer"
    }))
}

fn verify_assertion(assertion: &str, policy: &TokenPolicy) -> Result<AssertionClaims, TokenError> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| TokenError::grant("Invalid JWT: malformed assertion"))?;
    if header.alg != Algorithm::RS256 {
        return Err(TokenError::grant(
            "Invalid JWT: the algorithm must be RS256",
        ));
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[policy.audience]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    validation.leeway = LEEWAY_SECS;
    let key = DecodingKey::from_rsa_der(policy.public_key_der);
    let data = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => TokenError::grant("Invalid JWT Signature."),
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => TokenError::grant(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
            ),
            ErrorKind::InvalidAudience => TokenError::grant(format!(
                "Invalid JWT: aud must be the token endpoint URL {}",
                policy.audience
            )),
            _ => TokenError::grant(format!("Invalid JWT: {e}")),
        }
    })?;
    let claims = data.claims;
    let now = crate::unix_now();
    let short_lived = claims.exp > claims.iat
        && claims.exp - claims.iat <= MAX_ASSERTION_LIFETIME
        && claims.iat <= now + LEEWAY_SECS;
    if !short_lived {
        return Err(TokenError::grant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    if let Some(expected) = policy.expected_issuer {
        if claims.iss != expected {
            return Err(TokenError::grant("Invalid JWT Signature."));
        }
    }
    if !claims.scope.split(' ').any(|s| s == CLOUD_PLATFORM_SCOPE) {
        return Err(TokenError {
            error: "invalid_scope",
            description: format!("scope must include {CLOUD_PLATFORM_SCOPE}"),
        });
    }
    Ok(claims)
}

/// `application/x-www-form-urlencoded` -> map (later keys win; `+` is a space).
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-decoding for form values and query parameters; malformed escapes are kept literally.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// PEM (`PUBLIC KEY`, `RSA PUBLIC KEY`, `PRIVATE KEY` or `RSA PRIVATE KEY`) -> the PKCS#1 DER
/// `jsonwebtoken`'s `from_rsa_der` takes: SubjectPublicKeyInfo and PKCS#8 wrappers are removed.
/// `None` when the input is not such a PEM block.
pub fn rsa_der_from_pem(pem: &str) -> Option<Vec<u8>> {
    let begin = pem.find("-----BEGIN ")?;
    let rest = &pem[begin + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----")?;
    let end = rest.find("-----END ")?;
    let der = base64_decode(&rest[..end])?;
    match label {
        "RSA PUBLIC KEY" | "RSA PRIVATE KEY" => Some(der),
        // SEQUENCE { AlgorithmIdentifier, BIT STRING { 0 unused bits, RSAPublicKey } }
        "PUBLIC KEY" => {
            let (_, spki, _) = der_element(&der, 0x30)?;
            let (_, _, after_alg) = der_element(spki, 0x30)?;
            let (_, bits, _) = der_element(after_alg, 0x03)?;
            let (&unused, key) = bits.split_first()?;
            (unused == 0).then(|| key.to_vec())
        }
        // SEQUENCE { INTEGER version, AlgorithmIdentifier, OCTET STRING { RSAPrivateKey } }
        "PRIVATE KEY" => {
            let (_, pkcs8, _) = der_element(&der, 0x30)?;
            let (_, _, after_version) = der_element(pkcs8, 0x02)?;
            let (_, _, after_alg) = der_element(after_version, 0x30)?;
            let (_, key, _) = der_element(after_alg, 0x04)?;
            Some(key.to_vec())
        }
        _ => None,
    }
}

/// One DER element of the expected tag: (tag, contents, the bytes after it).
fn der_element(input: &[u8], tag: u8) -> Option<(u8, &[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((found, &rest[..len], &rest[len..]))
}

/// Standard base64 (padding optional, whitespace ignored). `None` on any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_with_the_encoder() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foobar", &[0, 255, 128, 7]] {
            assert_eq!(base64_decode(&crate::base64(data)).as_deref(), Some(data));
        }
        assert_eq!(base64_decode("Zm9v!"), None);
    }

    #[test]
    fn test_keys_unwrap_to_pkcs1() {
        let public = rsa_der_from_pem(TEST_SERVICE_ACCOUNT_PUBLIC_KEY_PEM).expect("public key");
        let private = rsa_der_from_pem(TEST_SERVICE_ACCOUNT_PRIVATE_KEY_PEM).expect("private key");
        // PKCS#1 keys are SEQUENCEs; a leftover wrapper would start the same way, so also check
        // that the first element inside is the modulus (public) / version 0 (private).
        let (_, pub_seq, _) = der_element(&public, 0x30).expect("sequence");
        assert!(der_element(pub_seq, 0x02).is_some_and(|(_, n, _)| n.len() > 200));
        let (_, priv_seq, _) = der_element(&private, 0x30).expect("sequence");
        assert_eq!(
            der_element(priv_seq, 0x02).map(|(_, v, _)| v),
            Some(&[0u8][..])
        );
        assert_eq!(rsa_der_from_pem("not a pem"), None);
        assert_eq!(
            rsa_der_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"),
            None
        );
    }

    #[test]
    fn form_values_are_percent_decoded() {
        let form = parse_form(b"grant_type=urn%3Aietf%3Aparams&assertion=a.b+c&bad=%zz%4");
        assert_eq!(form["grant_type"], "urn:ietf:params");
        assert_eq!(form["assertion"], "a.b c");
        assert_eq!(form["bad"], "%zz%4");
    }
}
