//! `basicAuth` (route phase, request headers): `Authorization: Basic` checked against an
//! htpasswd file read at compile. Only slow, salted hashes are accepted — bcrypt (`$2y$`,
//! `$2b$`, `$2a$`) and argon2 (`$argon2id$`, `$argon2i$`); SHA-1 (`{SHA}`), Apache MD5
//! (`$apr1$`) and `crypt` lines refuse the file at compile, naming the line.
//!
//! A bcrypt check costs tens of milliseconds of CPU, so it never runs on the async worker:
//! a successful check is remembered (an HMAC-SHA-256 of user and password under a key made
//! at compile, so the cache holds nothing that can be brute-forced offline) until the policy is
//! recompiled; anything else is checked on the blocking pool, a bounded number at a time.
//! The verified user is `basicAuth.user` (CEL, logs). The password is never logged.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use ring::hmac;

use super::jwt::Mode;
use super::PolicyError;
use crate::body::Body;
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::pipeline::{Flow, Phase, PhaseFuture};

/// Successful checks remembered at most; past it the cache starts over.
const CACHE_MAX: usize = 10_000;

/// One user's stored hash, parsed at compile.
enum Stored {
    Bcrypt(String),
    Argon2(Box<argon2::PasswordHash>),
}

impl Stored {
    /// The slow, constant-time check (the hash crates compare in constant time).
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Stored::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Stored::Argon2(h) => {
                use argon2::PasswordVerifier as _;
                argon2::Argon2::default()
                    .verify_password(password, h.as_ref())
                    .is_ok()
            }
        }
    }
}

pub struct BasicAuth {
    mode: Mode,
    /// `Basic realm="..."`.
    challenge: HeaderValue,
    users: HashMap<Box<str>, Arc<Stored>>,
    /// Checked against for an unknown user, so that an unknown name costs what a wrong
    /// password does (names cannot be told apart by timing).
    decoy: Arc<Stored>,
    /// Keys (HMAC of user and password) of credentials that verified.
    verified: RwLock<HashSet<[u8; 32]>>,
    cache_key: hmac::Key,
    /// Bounds the hash checks running at once (the blocking pool is not flooded by a burst
    /// of wrong passwords).
    slots: Arc<tokio::sync::Semaphore>,
    /// Slow checks run so far.
    checks: Arc<AtomicU64>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("mode", &self.mode)
            .field("users", &self.users.len())
            .finish()
    }
}

/// Credentials as the client sent them. Not `Debug`: the password must not reach a log.
struct Credentials {
    user: String,
    password: Vec<u8>,
}

/// What the request's head alone decides.
enum Decision {
    /// No credentials, and the mode allows that.
    Anonymous,
    /// Verified before (cache hit).
    User(Arc<str>),
    Refuse(&'static str, &'static str),
    /// A slow check is needed.
    Check(Credentials),
}

impl BasicAuth {
    pub fn compile(c: &config::BasicAuth) -> Result<BasicAuth, PolicyError> {
        let text = std::fs::read_to_string(&c.htpasswd).map_err(|e| {
            PolicyError::new(format!(
                "basicAuth.htpasswd: cannot read {}: {e}",
                c.htpasswd.display()
            ))
        })?;
        let users = parse_htpasswd(&text, &c.htpasswd)?;
        let decoy = users.values().next().cloned().ok_or_else(|| {
            PolicyError::new(format!(
                "basicAuth.htpasswd: {} has no users",
                c.htpasswd.display()
            ))
        })?;
        let realm = c.realm.as_deref().unwrap_or("switchyard");
        let escaped = realm.replace('\\', "\\\\").replace('"', "\\\"");
        let challenge =
            HeaderValue::from_str(&format!("Basic realm=\"{escaped}\"")).map_err(|_| {
                PolicyError::new("basicAuth.realm must be printable text (it goes in a header)")
            })?;
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| PolicyError::new("basicAuth: the system random source failed"))?;
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(BasicAuth {
            mode: match c.mode {
                Some(config::JwtMode::Optional) => Mode::Optional,
                Some(config::JwtMode::Permissive) => Mode::Permissive,
                _ => Mode::Strict,
            },
            challenge,
            users,
            decoy,
            verified: RwLock::new(HashSet::new()),
            cache_key,
            slots: Arc::new(tokio::sync::Semaphore::new(parallel.max(1))),
            checks: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Slow hash checks run so far (each cache miss runs one).
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    fn key_of(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        ctx.update(&(user.len() as u64).to_be_bytes());
        ctx.update(user.as_bytes());
        ctx.update(password);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn is_cached(&self, key: &[u8; 32]) -> bool {
        self.verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut set = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if set.len() >= CACHE_MAX {
            set.clear();
        }
        set.insert(key);
    }

    fn decide(&self, headers: &HeaderMap) -> Decision {
        let creds = match credentials(headers) {
            None => {
                return match self.mode {
                    Mode::Strict => Decision::Refuse(
                        "unauthenticated",
                        "a user name and password (HTTP Basic) are required",
                    ),
                    _ => Decision::Anonymous,
                }
            }
            Some(Err(())) => {
                return match self.mode {
                    Mode::Permissive => Decision::Anonymous,
                    _ => Decision::Refuse(
                        "invalid_credentials",
                        "the Basic credentials are malformed",
                    ),
                }
            }
            Some(Ok(c)) => c,
        };
        if self.users.contains_key(creds.user.as_str())
            && self.is_cached(&self.key_of(&creds.user, &creds.password))
        {
            return Decision::User(Arc::from(creds.user));
        }
        Decision::Check(creds)
    }

    /// The slow check, on the blocking pool; a success is remembered.
    async fn check(&self, creds: Credentials) -> Option<Arc<str>> {
        let known = self.users.get(creds.user.as_str()).cloned();
        let stored = known.clone().unwrap_or_else(|| self.decoy.clone());
        let permit = self.slots.clone().acquire_owned().await.ok()?;
        let checks = self.checks.clone();
        let password = creds.password.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            checks.fetch_add(1, Ordering::Relaxed);
            stored.verify(&password)
        })
        .await
        .unwrap_or(false);
        // An unknown user never passes, whatever the decoy said.
        if !(ok && known.is_some()) {
            return None;
        }
        self.remember(self.key_of(&creds.user, &creds.password));
        Some(Arc::from(creds.user))
    }

    fn refuse(&self, ctx: &mut RequestCtx<'_>, code: &'static str, message: &'static str) -> Flow {
        ctx.error = Some(code);
        Flow::Respond(self.refusal(ctx.dialect, code, message))
    }

    fn refusal(
        &self,
        dialect: Option<llm::Format>,
        code: &'static str,
        message: &'static str,
    ) -> Response<Body> {
        let e = ProxyError::new(StatusCode::UNAUTHORIZED, code, message);
        let mut resp = match dialect {
            Some(format) => e.with_format(format).into_response(),
            None => e.into_response(),
        };
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        resp
    }
}

impl Phase for BasicAuth {
    fn request_headers(&self, ctx: &mut RequestCtx<'_>, req: &Parts) -> Flow {
        match self.decide(&req.headers) {
            Decision::Anonymous => Flow::Continue,
            Decision::User(user) => {
                ctx.identity.basic_user = Some(user);
                Flow::Continue
            }
            Decision::Refuse(code, message) => self.refuse(ctx, code, message),
            Decision::Check(_) => Flow::Wait,
        }
    }

    fn request_headers_async<'a>(
        &'a self,
        ctx: &'a mut RequestCtx<'_>,
        req: &'a Parts,
    ) -> PhaseFuture<'a> {
        Box::pin(async move {
            let creds = match self.decide(&req.headers) {
                Decision::Check(c) => c,
                // Decided in place after all (the head is the same; only the cache moved).
                Decision::Anonymous => return Flow::Continue,
                Decision::User(user) => {
                    ctx.identity.basic_user = Some(user);
                    return Flow::Continue;
                }
                Decision::Refuse(code, message) => return self.refuse(ctx, code, message),
            };
            match self.check(creds).await {
                Some(user) => {
                    ctx.identity.basic_user = Some(user);
                    Flow::Continue
                }
                None if self.mode == Mode::Permissive => Flow::Continue,
                None => self.refuse(
                    ctx,
                    "invalid_credentials",
                    "the user name or password is wrong",
                ),
            }
        })
    }
}

/// The request's Basic credentials: `None` when it sends none, `Some(Err)` when they are
/// malformed (not base64, no `:`, a user name that is not UTF-8).
fn credentials(headers: &HeaderMap) -> Option<Result<Credentials, ()>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let Ok(decoded) = STANDARD.decode(rest.trim_ascii()) else {
        return Some(Err(()));
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return Some(Err(()));
    };
    let Ok(user) = std::str::from_utf8(&decoded[..colon]) else {
        return Some(Err(()));
    };
    Some(Ok(Credentials {
        user: user.to_string(),
        password: decoded[colon + 1..].to_vec(),
    }))
}

/// `user:hash` lines; `#` comments and blank lines are skipped. A weak or unknown scheme,
/// a malformed hash or a repeated user refuses the file, naming the line.
fn parse_htpasswd(text: &str, path: &Path) -> Result<HashMap<Box<str>, Arc<Stored>>, PolicyError> {
    let mut users = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |why: &str| {
            PolicyError::new(format!(
                "basicAuth.htpasswd {}:{}: {why}",
                path.display(),
                i + 1
            ))
        };
        let Some((user, hash)) = line.split_once(':') else {
            return Err(at("expected `user:hash`"));
        };
        if user.is_empty() {
            return Err(at("the user name is empty"));
        }
        let stored = parse_hash(hash).map_err(|why| at(&why))?;
        if users.insert(user.into(), Arc::new(stored)).is_some() {
            return Err(at(&format!("the user {user:?} is listed twice")));
        }
    }
    Ok(users)
}

fn parse_hash(hash: &str) -> Result<Stored, String> {
    const REHASH: &str = "rehash it with bcrypt (`htpasswd -B`) or argon2id";
    if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
        hash.parse::<bcrypt::HashParts>()
            .map_err(|e| format!("the bcrypt hash is malformed: {e}"))?;
        return Ok(Stored::Bcrypt(hash.to_string()));
    }
    if hash.starts_with("$argon2id$") || hash.starts_with("$argon2i$") {
        let parsed = argon2::PasswordHash::new(hash)
            .map_err(|e| format!("the argon2 hash is malformed: {e}"))?;
        return Ok(Stored::Argon2(Box::new(parsed)));
    }
    let weak = if hash.starts_with("{SHA}") || hash.starts_with("{SSHA}") {
        "SHA-1 ({SHA}) hashes are too weak"
    } else if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
        "MD5 ($apr1$) hashes are too weak"
    } else if hash.starts_with("$argon2d$") {
        "argon2d is not meant for passwords"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") || hash.starts_with('$') {
        "this crypt(3) scheme is not accepted"
    } else {
        "crypt(3) or plain-text passwords are too weak"
    };
    Err(format!("{weak}; {REHASH}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bcrypt_hash(password: &str) -> String {
        bcrypt::hash_with_salt(password, 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY)
    }

    fn argon2_hash(password: &str) -> String {
        use argon2::PasswordHasher as _;
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_with_salt(password.as_bytes(), b"switchyard-salt")
            .unwrap()
            .to_string()
    }

    fn policy(htpasswd: &str, mode: &str) -> (BasicAuth, tempfile::NamedTempFile) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), htpasswd).unwrap();
        let yaml = format!("{{htpasswd: {:?}, mode: {mode}}}", file.path());
        let c: config::BasicAuth = serde_yaml_ng::from_str(&yaml).unwrap();
        (BasicAuth::compile(&c).unwrap(), file)
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = STANDARD.encode(format!("{user}:{password}"));
        h.insert(header::AUTHORIZATION, format!("Basic {v}").parse().unwrap());
        h
    }

    async fn run(a: &BasicAuth, h: &HeaderMap) -> Result<Option<Arc<str>>, &'static str> {
        match a.decide(h) {
            Decision::Anonymous => Ok(None),
            Decision::User(u) => Ok(Some(u)),
            Decision::Refuse(code, _) => Err(code),
            Decision::Check(c) => a.check(c).await.map(Some).ok_or("invalid_credentials"),
        }
    }

    #[test]
    fn parse_skips_comments_and_blank_lines() {
        let text = format!(
            "# users\n\n   \nalice:{}\n  # indented comment\nbob:{}\r\n",
            bcrypt_hash("a"),
            argon2_hash("b")
        );
        let users = parse_htpasswd(&text, Path::new("users.htpasswd")).unwrap();
        assert_eq!(users.len(), 2);
        assert!(matches!(*users["alice"], Stored::Bcrypt(_)));
        assert!(matches!(*users["bob"], Stored::Argon2(_)));
    }

    #[test]
    fn weak_schemes_are_refused_naming_the_line() {
        let ok = bcrypt_hash("a");
        for (bad, says) in [
            ("carol:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", "SHA-1"),
            ("carol:$apr1$abcdefgh$0123456789abcdefghijkl", "MD5"),
            ("carol:rqXexS6ZhobKA", "crypt"),
            ("carol:$6$salt$hash", "crypt"),
            (
                "carol:$argon2d$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
                "argon2d",
            ),
            ("carol", "user:hash"),
            ("carol:$2y$10$short", "malformed"),
        ] {
            let text = format!("# head\nalice:{ok}\n\n{bad}\n");
            let err = parse_htpasswd(&text, Path::new("/etc/users"))
                .err()
                .unwrap();
            assert!(err.0.contains("/etc/users:4:"), "{err}");
            assert!(err.0.contains(says), "{bad}: {err}");
        }
        let twice = format!("alice:{ok}\nalice:{ok}\n");
        let err = parse_htpasswd(&twice, Path::new("f")).err().unwrap();
        assert!(err.0.contains("f:2:") && err.0.contains("twice"), "{err}");
    }

    #[tokio::test]
    async fn bcrypt_and_argon2_verify() {
        let (a, _f) = policy(
            &format!(
                "alice:{}\nbob:{}\n",
                bcrypt_hash("wonderland"),
                argon2_hash("builder")
            ),
            "strict",
        );
        assert_eq!(
            run(&a, &basic("alice", "wonderland"))
                .await
                .unwrap()
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            run(&a, &basic("bob", "builder")).await.unwrap().as_deref(),
            Some("bob")
        );
        assert_eq!(
            run(&a, &basic("alice", "builder")).await,
            Err("invalid_credentials")
        );
        assert_eq!(
            run(&a, &basic("bob", "wonderland")).await,
            Err("invalid_credentials")
        );
        // An unknown user is checked against a decoy, and never passes.
        assert_eq!(
            run(&a, &basic("mallory", "wonderland")).await,
            Err("invalid_credentials")
        );
        assert_eq!(run(&a, &HeaderMap::new()).await, Err("unauthenticated"));
        let mut malformed = HeaderMap::new();
        malformed.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(run(&a, &malformed).await, Err("invalid_credentials"));
    }

    #[tokio::test]
    async fn a_cache_hit_skips_the_hash_check() {
        let (a, _f) = policy(&format!("alice:{}\n", bcrypt_hash("pw")), "strict");
        assert!(matches!(
            a.decide(&basic("alice", "pw")),
            Decision::Check(_)
        ));
        run(&a, &basic("alice", "pw")).await.unwrap();
        assert_eq!(a.checks(), 1);
        for _ in 0..5 {
            assert!(matches!(a.decide(&basic("alice", "pw")), Decision::User(_)));
            run(&a, &basic("alice", "pw")).await.unwrap();
        }
        assert_eq!(a.checks(), 1);
        // Failures are not remembered: each one costs a check.
        run(&a, &basic("alice", "nope")).await.unwrap_err();
        run(&a, &basic("alice", "nope")).await.unwrap_err();
        assert_eq!(a.checks(), 3);
    }

    #[tokio::test]
    async fn optional_and_permissive_modes() {
        let line = format!("alice:{}\n", bcrypt_hash("pw"));
        let (optional, _f1) = policy(&line, "optional");
        assert_eq!(run(&optional, &HeaderMap::new()).await, Ok(None));
        assert_eq!(
            run(&optional, &basic("alice", "bad")).await,
            Err("invalid_credentials")
        );
        let (permissive, _f2) = policy(&line, "permissive");
        assert_eq!(run(&permissive, &HeaderMap::new()).await, Ok(None));
        assert!(matches!(
            permissive.decide(&basic("alice", "bad")),
            Decision::Check(_)
        ));
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(run(&permissive, &bearer).await, Ok(None));
    }

    #[test]
    fn the_challenge_names_the_realm() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), format!("a:{}\n", bcrypt_hash("x"))).unwrap();
        let yaml = format!("{{htpasswd: {:?}, realm: 'say \"hi\"'}}", file.path());
        let a = BasicAuth::compile(&serde_yaml_ng::from_str(&yaml).unwrap()).unwrap();
        let resp = a.refusal(None, "unauthenticated", "m");
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            r#"Basic realm="say \"hi\"""#
        );
    }
}
