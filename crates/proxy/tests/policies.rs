//! Every route and backend policy, through a real gateway to real upstreams.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Request, StatusCode};

#[tokio::test]
async fn url_rewrite_authority_and_path_prefix() {
    let up = echo("up").await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      matches:\n      - path: {{pathPrefix: /api}}\n      policies:\n        urlRewrite:\n          authority: {{full: dashscope.aliyuncs.com}}\n          path: {{prefix: /compatible-mode}}\n      backends:\n      - host: {}\n",
        up.addr
    )))
    .await;
    let r = get(addr, "/api/v1/chat/completions?x=1").await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["path"], "/compatible-mode/v1/chat/completions");
    assert_eq!(j["query"], "x=1");
    assert_eq!(j["authority"], "dashscope.aliyuncs.com");
}

#[tokio::test]
async fn url_rewrite_host_port_and_full_path() {
    let up = echo("up").await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        urlRewrite:\n          authority: {{port: 9999}}\n          path: {{full: /fixed}}\n      backends:\n      - host: {}\n",
        up.addr
    )))
    .await;
    let r = send(
        addr,
        Request::get("/anything")
            .header("host", "client.example:8080")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.json()["authority"], "client.example:9999");
    assert_eq!(r.json()["path"], "/fixed");
}

#[tokio::test]
async fn header_modifiers_request_and_response() {
    let up = echo("up").await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        requestHeaderModifier:\n          add: {{x-added: a2}}\n          set: {{x-set: s, Host: forced.example}}\n          remove: [x-drop]\n        responseHeaderModifier:\n          add: {{x-resp: r}}\n          remove: [x-upstream-name]\n      backends:\n      - host: {}\n",
        up.addr
    )))
    .await;
    let r = send(
        addr,
        Request::get("/")
            .header("x-added", "a1")
            .header("x-set", "old")
            .header("x-drop", "bye")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.seen("x-added"), ["a1", "a2"]);
    assert_eq!(r.seen("x-set"), ["s"]);
    assert!(r.seen("x-drop").is_empty());
    assert_eq!(r.json()["authority"], "forced.example");
    assert_eq!(r.header("x-resp"), Some("r"));
    assert_eq!(r.header("x-upstream-name"), None);
}

#[tokio::test]
async fn backend_policies_override_route_policies() {
    let a = echo("a").await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        requestHeaderModifier:\n          set: {{x-level: route}}\n      backends:\n      - host: {}\n        policies:\n          requestHeaderModifier:\n            set: {{x-level: backend}}\n",
        a.addr
    )))
    .await;
    assert_eq!(get(addr, "/").await.seen("x-level"), ["backend"]);
}

#[tokio::test]
async fn request_redirect_and_direct_response() {
    let yaml = "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - matches:\n      - path: {pathPrefix: /old}\n      policies:\n        requestRedirect:\n          scheme: https\n          authority: {host: new.example}\n          path: {prefix: /new}\n          status: 301\n    - matches:\n      - path: {exact: /health}\n      policies:\n        directResponse:\n          status: 418\n          body: '{\"ok\": true}'\n";
    let (_gw, addr) = gateway(yaml).await;
    let r = send(
        addr,
        Request::get("/old/page?q=1")
            .header("host", "a.example:8080")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.header("location"),
        Some("https://new.example:8080/new/page?q=1")
    );
    let r = get(addr, "/health").await;
    assert_eq!(r.status.as_u16(), 418);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["ok"], true);
}

#[tokio::test]
async fn cors_preflight_answered_and_actual_response_decorated() {
    let up = echo("up").await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        cors:\n          allowOrigins: ['https://app.example']\n          allowMethods: [GET, POST]\n          allowHeaders: [mcp-protocol-version, content-type]\n          exposeHeaders: [x-upstream-name]\n          maxAge: 1h\n          allowCredentials: true\n      backends:\n      - host: {}\n",
        up.addr
    )))
    .await;
    let pre = send(
        addr,
        Request::options("/mcp")
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(pre.status, 200);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        pre.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("mcp-protocol-version, content-type")
    );
    assert_eq!(pre.header("access-control-max-age"), Some("3600"));
    assert_eq!(pre.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        pre.header("x-upstream-name"),
        None,
        "preflight must not reach upstream"
    );

    let actual = send(
        addr,
        Request::get("/x")
            .header("origin", "https://app.example")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        actual.header("access-control-expose-headers"),
        Some("x-upstream-name")
    );
    assert_eq!(actual.header("x-upstream-name"), Some("up"));

    let denied = send(
        addr,
        Request::options("/mcp")
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn backend_timeout_gives_504_and_request_timeout_bounds_retries() {
    let up = echo("up").await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        timeout: {{backendRequestTimeout: 200ms}}\n      backends:\n      - host: {}\n",
        up.addr
    )))
    .await;
    let t = Instant::now();
    let r = get(addr, "/slow/2000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
    assert!(t.elapsed() < Duration::from_millis(1500));
    assert_eq!(get(addr, "/slow/10").await.status, 200);

    let (_gw2, addr2) = gateway(&one_route(&format!(
        "      policies:\n        timeout: {{requestTimeout: 300ms}}\n        retry: {{attempts: 10, backoff: 100ms, codes: [503]}}\n      backends:\n      - host: {}\n",
        up.addr
    )))
    .await;
    let t = Instant::now();
    let r = get(addr2, "/status/503").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

/// An upstream that answers 503 to the first `fail` requests, then echoes the body.
async fn flaky(
    fail: usize,
) -> (
    tokio::task::JoinHandle<()>,
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let h = h.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let n = h.fetch_add(1, Ordering::SeqCst);
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut r = http::Response::new(full(body));
                        if n < fail {
                            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (task, addr, hits)
}

#[tokio::test]
async fn retry_replays_the_body_on_retriable_status() {
    let (_t, up, hits) = flaky(2).await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        retry: {{attempts: 3, backoff: 10ms, codes: [503]}}\n      backends:\n      - host: {up}\n"
    )))
    .await;
    let r = send(addr, Request::post("/").body(full("payload-123")).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "payload-123");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retry_gives_up_after_attempts() {
    let (_t, up, hits) = flaky(100).await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        retry: {{attempts: 2, backoff: 1ms}}\n      backends:\n      - host: {up}\n"
    )))
    .await;
    let r = send(addr, Request::post("/").body(full("x")).unwrap()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn backend_auth_replaces_client_credentials() {
    let up = echo("up").await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        backendAuth: {{key: sk-gateway-held}}\n      backends:\n      - host: {}\n",
        up.addr
    )))
    .await;
    let r = send(
        addr,
        Request::get("/")
            .header("authorization", "Bearer client-key")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.seen("authorization"), ["Bearer sk-gateway-held"]);
}

#[tokio::test]
async fn weighted_backends_split_traffic() {
    let a = echo("a").await;
    let b = echo("b").await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      backends:\n      - host: {}\n        weight: 3\n      - host: {}\n        weight: 1\n",
        a.addr, b.addr
    )))
    .await;
    let mut count_a = 0;
    for _ in 0..400 {
        if get(addr, "/").await.header("x-upstream-name") == Some("a") {
            count_a += 1;
        }
    }
    // Expect ~300; the bounds are > 6 standard deviations wide.
    assert!((240..=360).contains(&count_a), "a got {count_a} of 400");
}

#[tokio::test]
async fn failover_on_connect_error_keeps_the_body() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let live = echo("live").await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      backends:\n      - host: {dead_addr}\n        weight: 1000\n      - host: {}\n        weight: 1\n",
        live.addr
    )))
    .await;
    for _ in 0..5 {
        let r = send(addr, Request::post("/").body(full("hello")).unwrap()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream-name"), Some("live"));
        assert_eq!(r.json()["body"], "hello");
    }
}

#[tokio::test]
async fn backend_tls_with_custom_ca_sni_and_client_cert() {
    let pki = Pki::new();
    let leaf = pki.leaf(&["api.internal.example"]);
    let client_pki = Pki::new();
    let client_leaf = client_pki.leaf(&["switchyard-client"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.path().join("client.pem"), &client_leaf.cert_pem).unwrap();
    std::fs::write(dir.path().join("client.key"), &client_leaf.key_pem).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = echo_on(
        listener,
        "tls-up",
        Some(server_tls(&leaf, Some(&client_pki), &[b"http/1.1"])),
    )
    .await;
    let yaml = one_route(&format!(
        "      policies:\n        backendTLS:\n          root: ca.pem\n          hostname: api.internal.example\n          cert: client.pem\n          key: client.key\n      backends:\n      - host: {}\n",
        up.addr
    ));
    let (_gw, addrs) = gateway_in(&yaml, dir.path()).await;
    let r = get(addrs[0], "/tls").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream-name"), Some("tls-up"));

    // Without the client certificate the upstream refuses the handshake.
    let yaml = one_route(&format!(
        "      policies:\n        backendTLS:\n          root: ca.pem\n          hostname: api.internal.example\n      backends:\n      - host: {}\n",
        up.addr
    ));
    let (_gw, addrs) = gateway_in(&yaml, dir.path()).await;
    assert!(get(addrs[0], "/tls").await.status.is_server_error());
}

#[tokio::test]
async fn backend_tls_rejects_untrusted_and_allows_explicit_insecure() {
    let pki = Pki::new();
    let leaf = pki.leaf(&["127.0.0.1"]);
    let up = echo_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        "tls-up",
        Some(server_tls(&leaf, None, &[b"h2", b"http/1.1"])),
    )
    .await;
    // System roots (webpki) do not trust the test CA: the handshake fails, a clean 503.
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        backendTLS: {{}}\n      backends:\n      - host: {}\n",
        up.addr
    )))
    .await;
    let r = get(addr, "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TLS"),
        "{}",
        r.text()
    );

    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        backendTLS: {{insecureSkipVerify: true}}\n      backends:\n      - host: {}\n",
        up.addr
    )))
    .await;
    let r = get(addr, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "HTTP/1.1");

    // HTTP/2 to the upstream negotiated by ALPN over TLS.
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        backendTLS: {{insecureSkipVerify: true}}\n        backendHTTP: {{version: '2'}}\n      backends:\n      - host: {}\n",
        up.addr
    )))
    .await;
    let r = get(addr, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "HTTP/2.0");
}

#[tokio::test]
async fn request_body_limit_gives_413() {
    let up = echo("up").await;
    let yaml = limited_route("    maxRequestBodyBytes: 1000\n", up.addr);
    let (_gw, addr) = gateway(&yaml).await;
    let big = "x".repeat(5000);
    let r = send(addr, Request::post("/").body(full(big)).unwrap()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"]["code"], "payload_too_large");

    // Chunked (no content-length) bodies are counted as they stream.
    let chunks = futures_util::stream::iter((0..10).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            b'y';
            500
        ])))
    }));
    let body = http_body_util::BodyExt::boxed_unsync(http_body_util::StreamBody::new(chunks));
    let r = send(addr, Request::post("/").body(body).unwrap()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = send(addr, Request::post("/").body(full("small")).unwrap()).await;
    assert_eq!(r.status, 200);
}

/// Route-phase policies are the route's: with two weighted backends that differ in their own
/// (backend-phase) policies, every request is authenticated the same way, whichever backend
/// the dice pick, and each backend's own header modifier applies only to what it is sent.
#[tokio::test]
async fn a_route_with_two_weighted_backends_authenticates_every_request_alike() {
    use base64::Engine as _;
    let secret = b"switchyard-test-secret-at-least-32-bytes!";
    let jwks = format!(
        r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{}"}}]}}"#,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "alice", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap();
    let a = echo("a").await;
    let b = echo("b").await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        jwtAuth:\n          jwks: '{jwks}'\n        requestHeaderModifier:\n          set: {{x-level: route}}\n      backends:\n      - host: {}\n        weight: 1\n      - host: {}\n        weight: 1\n        policies:\n          requestHeaderModifier:\n            set: {{x-level: backend-b}}\n",
        a.addr, b.addr
    )))
    .await;
    let mut served = std::collections::BTreeMap::new();
    for _ in 0..60 {
        let anonymous = get(addr, "/").await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        let r = send(
            addr,
            Request::get("/")
                .header("authorization", format!("Bearer {token}"))
                .body(full(""))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200);
        let name = r.header("x-upstream-name").unwrap().to_string();
        let expected = if name == "b" { "backend-b" } else { "route" };
        assert_eq!(r.seen("x-level"), [expected], "backend {name}");
        *served.entry(name).or_insert(0) += 1;
    }
    assert_eq!(served.len(), 2, "both backends served: {served:?}");
}
