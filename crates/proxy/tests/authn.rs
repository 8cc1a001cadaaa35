//! Authentication policies through a real gateway: `basicAuth` against an htpasswd file, and
//! `jwtAuth` with keys fetched from a live `jwksUrl` server.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::*;
use http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use tokio::net::TcpListener;

// ---------- basicAuth ----------

fn bcrypt_line(user: &str, password: &str) -> String {
    let hash = bcrypt::hash_with_salt(password, 4, [9u8; 16])
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    format!("{user}:{hash}\n")
}

fn argon2_line(user: &str, password: &str) -> String {
    use argon2::PasswordHasher as _;
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let hash = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), b"authn-test-salt")
        .unwrap();
    format!("{user}:{hash}\n")
}

fn htpasswd(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

fn basic_route(file: &tempfile::NamedTempFile, extra: &str, upstream: SocketAddr) -> String {
    one_route(&format!(
        "      policies:\n        basicAuth:\n          htpasswd: '{}'\n{extra}      backends:\n      - host: {upstream}\n",
        file.path().display()
    ))
}

fn with_basic(user: &str, password: &str) -> Request<TestBody> {
    Request::get("/hello")
        .header(
            "authorization",
            format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))),
        )
        .body(full(""))
        .unwrap()
}

#[tokio::test]
async fn basic_auth_right_password_passes_and_wrong_is_refused() {
    let up = echo("up").await;
    let file = htpasswd(&format!(
        "# test users\n{}{}",
        bcrypt_line("alice", "wonderland"),
        argon2_line("bob", "builder")
    ));
    let (_gw, addr) = gateway(&basic_route(
        &file,
        "          realm: test-realm\n",
        up.addr,
    ))
    .await;

    for (user, password) in [("alice", "wonderland"), ("bob", "builder")] {
        let r = send(addr, with_basic(user, password)).await;
        assert_eq!(r.status, 200, "{user}: {}", r.text());
        assert_eq!(r.json()["path"], "/hello", "the upstream got the request");
        // Again: now from the cache.
        assert_eq!(send(addr, with_basic(user, password)).await.status, 200);
    }

    let r = send(addr, with_basic("alice", "builder")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Basic realm="test-realm""#)
    );
    assert_eq!(r.json()["error"]["code"], "invalid_credentials");
    assert!(!r.text().contains("builder"), "the password is not echoed");
    assert_eq!(
        r.header("x-upstream-name"),
        None,
        "nothing reached the upstream"
    );

    let r = send(addr, with_basic("nobody", "wonderland")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_credentials");

    let r = get(addr, "/hello").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthenticated");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Basic realm="test-realm""#)
    );
}

#[tokio::test]
async fn basic_auth_optional_mode_lets_anonymous_requests_through() {
    let up = echo("up").await;
    let file = htpasswd(&bcrypt_line("alice", "pw"));
    let (_gw, addr) = gateway(&basic_route(&file, "          mode: optional\n", up.addr)).await;
    let r = get(addr, "/anon").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/anon");
    assert_eq!(send(addr, with_basic("alice", "pw")).await.status, 200);
    // Credentials that are sent must be right.
    let r = send(addr, with_basic("alice", "wrong")).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
}

#[tokio::test]
async fn basic_auth_on_an_llm_route_answers_in_the_callers_dialect() {
    let file = htpasswd(&bcrypt_line("alice", "pw"));
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        basicAuth:\n          htpasswd: '{}'\n      backends:\n      - ai: {{name: o, hostOverride: '127.0.0.1:9', provider: {{openAI: {{}}}}}}\n",
        file.path().display()
    )))
    .await;
    let r = send(
        addr,
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(full(
                r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Basic realm="switchyard""#)
    );
    let j = r.json();
    assert!(j["error"]["message"].is_string(), "{j}");
    assert_eq!(j["error"]["code"], "unauthenticated", "{j}");
}

#[tokio::test]
async fn basic_auth_refuses_weak_htpasswd_at_load() {
    let file = htpasswd(&format!(
        "{}legacy:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n",
        bcrypt_line("alice", "pw")
    ));
    let yaml = basic_route(&file, "", "127.0.0.1:9".parse().unwrap());
    let loaded = config::load_str(
        &yaml,
        std::path::Path::new("test.yaml"),
        std::path::Path::new("."),
        |_| None,
    )
    .unwrap();
    let err = match proxy::Gateway::start(&loaded).await {
        Ok(_) => panic!("a {{SHA}} htpasswd line must refuse the config"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(":2:") && err.contains("SHA-1"), "{err}");
}

// ---------- jwtAuth with jwksUrl ----------

/// A JWKS endpoint: serves `set` at any path, counts requests, answers 503 while `down`.
struct Jwks {
    addr: SocketAddr,
    set: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Jwks {
    async fn start(kids: &[&str]) -> Jwks {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let set = Arc::new(Mutex::new(jwk_set(kids)));
        let hits = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (s, h, d) = (set.clone(), hits.clone(), down.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, h, d) = (s.clone(), h.clone(), d.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let mut resp = match d.load(Ordering::SeqCst) {
                            true => {
                                let mut r = Response::new(full("down"));
                                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                                r
                            }
                            false => Response::new(full(s.lock().unwrap().clone())),
                        };
                        resp.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Jwks {
            addr,
            set,
            hits,
            down,
            task,
        }
    }

    fn serve(&self, kids: &[&str]) {
        *self.set.lock().unwrap() = jwk_set(kids);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }
}

/// Each kid's HS256 secret is derived from the kid.
fn secret(kid: &str) -> Vec<u8> {
    format!("switchyard-authn-test-secret-for-{kid}-0123456789").into_bytes()
}

fn jwk_set(kids: &[&str]) -> String {
    let keys: Vec<_> = kids
        .iter()
        .map(|kid| {
            serde_json::json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret(kid))})
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

fn token(kid: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.into());
    encode(
        &h,
        &serde_json::json!({"sub": "alice", "exp": exp}),
        &EncodingKey::from_secret(&secret(kid)),
    )
    .unwrap()
}

fn with_bearer(t: &str) -> Request<TestBody> {
    Request::get("/claims")
        .header("authorization", format!("Bearer {t}"))
        .body(full(""))
        .unwrap()
}

async fn jwt_gateway(
    jwks_url: &str,
    extra: &str,
    upstream: SocketAddr,
) -> (Arc<proxy::Gateway>, SocketAddr) {
    gateway(&one_route(&format!(
        "      policies:\n        jwtAuth:\n          jwksUrl: '{jwks_url}'\n{extra}      backends:\n      - host: {upstream}\n"
    )))
    .await
}

#[tokio::test]
async fn jwks_url_keys_are_fetched_on_first_use_and_reused() {
    let up = echo("up").await;
    let jwks = Jwks::start(&["k1"]).await;
    let (_gw, addr) = jwt_gateway(&jwks.url(), "", up.addr).await;
    assert_eq!(jwks.hits(), 0, "nothing is fetched before a token needs it");
    let r = get(addr, "/claims").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthenticated");
    assert_eq!(jwks.hits(), 0, "no token, no fetch");

    let t = token("k1");
    for _ in 0..5 {
        let r = send(addr, with_bearer(&t)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["path"], "/claims");
    }
    assert_eq!(jwks.hits(), 1, "one fetch serves every request");

    let forged = encode(
        &{
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("k1".into());
            h
        },
        &serde_json::json!({"sub": "mallory", "exp": u64::MAX / 2}),
        &EncodingKey::from_secret(b"not-the-right-secret-not-the-right-secret"),
    )
    .unwrap();
    let r = send(addr, with_bearer(&forged)).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_token");
    assert_eq!(
        jwks.hits(),
        1,
        "a known kid with a bad signature fetches nothing"
    );
}

#[tokio::test]
async fn jwks_url_rotation_is_picked_up_on_an_unknown_kid() {
    let up = echo("up").await;
    let jwks = Jwks::start(&["k1"]).await;
    let (_gw, addr) = jwt_gateway(&jwks.url(), "", up.addr).await;
    assert_eq!(send(addr, with_bearer(&token("k1"))).await.status, 200);
    assert_eq!(jwks.hits(), 1);

    jwks.serve(&["k2"]);
    let r = send(addr, with_bearer(&token("k2"))).await;
    assert_eq!(r.status, 200, "the new kid is fetched: {}", r.text());
    assert_eq!(jwks.hits(), 2);
    // The rotated-out key is gone, and the refetch budget is spent for 10 s.
    let r = send(addr, with_bearer(&token("k1"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(jwks.hits(), 2);
    assert_eq!(send(addr, with_bearer(&token("k2"))).await.status, 200);
}

#[tokio::test]
async fn jwks_url_unknown_kid_flood_fetches_at_most_once_per_10s() {
    let up = echo("up").await;
    let jwks = Jwks::start(&["k1"]).await;
    let (_gw, addr) = jwt_gateway(&jwks.url(), "", up.addr).await;
    assert_eq!(send(addr, with_bearer(&token("k1"))).await.status, 200);
    assert_eq!(jwks.hits(), 1);

    let flood: Vec<_> = (0..40)
        .map(|i| {
            let t = token(&format!("unknown-{i}"));
            tokio::spawn(async move { send(addr, with_bearer(&t)).await.status })
        })
        .collect();
    for f in flood {
        assert_eq!(f.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(jwks.hits(), 2, "forty unknown kids, one shared refetch");
    for i in 0..20 {
        let r = send(addr, with_bearer(&token(&format!("later-{i}")))).await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(jwks.hits(), 2, "still within the 10 s window");
    // Known kids are unaffected.
    assert_eq!(send(addr, with_bearer(&token("k1"))).await.status, 200);
}

#[tokio::test]
async fn jwks_url_down_keeps_the_old_keys() {
    let up = echo("up").await;
    let jwks = Jwks::start(&["k1"]).await;
    let (_gw, addr) = jwt_gateway(&jwks.url(), "          jwksRefresh: 1s\n", up.addr).await;
    let t = token("k1");
    assert_eq!(send(addr, with_bearer(&t)).await.status, 200);
    assert_eq!(jwks.hits(), 1);

    jwks.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Due for a refresh: this request starts it in the background and passes on the old keys.
    assert_eq!(send(addr, with_bearer(&t)).await.status, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while jwks.hits() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(jwks.hits() >= 2, "the refresh was tried");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        send(addr, with_bearer(&t)).await.status,
        200,
        "old keys kept"
    );

    // An unknown kid refetches, fails, and the old keys still serve.
    let r = send(addr, with_bearer(&token("k2"))).await;
    assert_eq!(r.status, 401);
    assert!(jwks.hits() >= 3, "the unknown kid refetched");
    assert_eq!(send(addr, with_bearer(&t)).await.status, 200);

    // Back up: the next periodic refresh picks up the new set.
    jwks.serve(&["k2"]);
    jwks.down.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if send(addr, with_bearer(&token("k2"))).await.status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refreshed set never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn jwks_url_unreachable_refuses_until_keys_arrive() {
    let up = echo("up").await;
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", closed.local_addr().unwrap());
    drop(closed);
    let (_gw, addr) = jwt_gateway(&url, "", up.addr).await;
    let r = send(addr, with_bearer(&token("k1"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_token");
    assert_eq!(
        r.json()["error"]["message"],
        "signing keys are not available yet"
    );

    let (_gw2, permissive) = jwt_gateway(&url, "          mode: permissive\n", up.addr).await;
    assert_eq!(
        send(permissive, with_bearer(&token("k1"))).await.status,
        200
    );
}
