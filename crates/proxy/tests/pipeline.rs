//! The HTTP pipeline end to end: protocols, header hygiene, bad input, reload and drain.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn route_precedence_through_the_gateway() {
    let names = ["catchall", "prefix", "longer", "exact", "method", "header"];
    let mut ups = Vec::new();
    for n in names {
        ups.push(echo(n).await);
    }
    let yaml = format!(
        r#"binds:
- port: 0
  address: 127.0.0.1
  listeners:
  - routes:
    - backends: [{{host: {}}}]
    - matches: [{{path: {{pathPrefix: /v1}}}}]
      backends: [{{host: {}}}]
    - matches: [{{path: {{pathPrefix: /v1/chat}}}}]
      backends: [{{host: {}}}]
    - matches: [{{path: {{exact: /v1/chat/completions}}}}]
      backends: [{{host: {}}}]
    - matches: [{{path: {{pathPrefix: /v1}}, method: DELETE}}]
      backends: [{{host: {}}}]
    - matches: [{{path: {{pathPrefix: /v1}}, method: DELETE, headers: [{{name: x-env, value: {{regex: 'prod|stage'}}}}]}}]
      backends: [{{host: {}}}]
"#,
        ups[0].addr, ups[1].addr, ups[2].addr, ups[3].addr, ups[4].addr, ups[5].addr
    );
    let (_gw, addr) = gateway(&yaml).await;
    let who = |r: Reply| r.header("x-upstream-name").unwrap().to_string();
    assert_eq!(who(get(addr, "/").await), "catchall");
    assert_eq!(who(get(addr, "/v1x").await), "catchall");
    assert_eq!(who(get(addr, "/v1/models").await), "prefix");
    assert_eq!(who(get(addr, "/v1/chat").await), "longer");
    assert_eq!(who(get(addr, "/v1/chat/completions").await), "exact");
    let del = |h: Option<&str>| {
        let mut b = Request::delete("/v1/files");
        if let Some(h) = h {
            b = b.header("x-env", h);
        }
        b.body(full("")).unwrap()
    };
    assert_eq!(who(send(addr, del(None)).await), "method");
    assert_eq!(who(send(addr, del(Some("stage"))).await), "header");
    assert_eq!(who(send(addr, del(Some("dev"))).await), "method");
}

#[tokio::test]
async fn hostname_listeners_and_routes() {
    let a = echo("a").await;
    let b = echo("b").await;
    let c = echo("c").await;
    let yaml = format!(
        r#"binds:
- port: 0
  address: 127.0.0.1
  listeners:
  - hostname: '*.example.com'
    routes:
    - backends: [{{host: {}}}]
  - hostname: api.example.com
    routes:
    - backends: [{{host: {}}}]
  - routes:
    - hostnames: [other.test]
      backends: [{{host: {}}}]
"#,
        a.addr, b.addr, c.addr
    );
    let (_gw, addr) = gateway(&yaml).await;
    let host = |h: &str| Request::get("/").header("host", h).body(full("")).unwrap();
    assert_eq!(
        send(addr, host("api.example.com"))
            .await
            .header("x-upstream-name"),
        Some("b")
    );
    assert_eq!(
        send(addr, host("www.example.com:80"))
            .await
            .header("x-upstream-name"),
        Some("a")
    );
    assert_eq!(
        send(addr, host("other.test"))
            .await
            .header("x-upstream-name"),
        Some("c")
    );
    let r = send(addr, host("unknown.test")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "no_route");
}

#[tokio::test]
async fn forwarding_headers_hop_by_hop_and_request_id() {
    let (_up, _gw, addr) = proxied_echo().await;
    let r = send(
        addr,
        Request::get("/h")
            .header("x-forwarded-for", "203.0.113.9")
            .header("connection", "x-private")
            .header("x-private", "secret-hop")
            .header("te", "trailers")
            .header("x-request-id", "client-id-1")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.seen("x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(r.seen("x-forwarded-proto"), ["http"]);
    assert!(
        r.seen("x-private").is_empty(),
        "Connection-listed header leaked"
    );
    assert_eq!(r.seen("x-request-id"), ["client-id-1"]);
    assert_eq!(r.header("x-request-id"), Some("client-id-1"));
    // Upstream's `Connection: x-hop` header must not leak to the client either.
    assert_eq!(r.header("x-hop"), None);

    let r2 = get(addr, "/h").await;
    let id = r2.header("x-request-id").unwrap().to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(r2.seen("x-request-id"), [id]);
}

#[tokio::test]
async fn http2_downstream_h2c_and_upstream_h2() {
    let up = echo("up").await;
    let yaml = one_route(&format!(
        "      policies:\n        backendHTTP: {{version: '2'}}\n      backends:\n      - host: {}\n",
        up.addr
    ));
    let (_gw, addr) = gateway(&yaml).await;
    let r = send_with(
        h2c_client(),
        addr,
        Request::post("/h2").body(full("over h2")).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, Version::HTTP_2);
    assert_eq!(
        r.json()["version"],
        "HTTP/2.0",
        "upstream leg must be HTTP/2"
    );
    assert_eq!(r.json()["body"], "over h2");
    // An HTTP/1.1 client through the same route still reaches the h2 upstream.
    let r = send(addr, Request::get("/h1").body(full("")).unwrap()).await;
    assert_eq!(r.version, Version::HTTP_11);
    assert_eq!(r.json()["version"], "HTTP/2.0");
}

#[tokio::test]
async fn https_listener_alpn_and_sni_certificates() {
    let pki = Pki::new();
    let a = pki.leaf(&["a.example"]);
    let b = pki.leaf(&["b.example"]);
    let dir = tempfile::tempdir().unwrap();
    for (n, l) in [("a", &a), ("b", &b)] {
        std::fs::write(dir.path().join(format!("{n}.pem")), &l.cert_pem).unwrap();
        std::fs::write(dir.path().join(format!("{n}.key")), &l.key_pem).unwrap();
    }
    let up = echo("up").await;
    let yaml = format!(
        r#"binds:
- port: 0
  address: 127.0.0.1
  listeners:
  - hostname: a.example
    protocol: HTTPS
    tls: {{cert: a.pem, key: a.key}}
    routes:
    - policies:
        responseHeaderModifier: {{set: {{x-listener: a}}}}
      backends: [{{host: {u}}}]
  - hostname: b.example
    protocol: HTTPS
    tls: {{cert: b.pem, key: b.key}}
    routes:
    - policies:
        responseHeaderModifier: {{set: {{x-listener: b}}}}
      backends: [{{host: {u}}}]
"#,
        u = up.addr
    );
    let (_gw, addrs) = gateway_in(&yaml, dir.path()).await;
    let r = tls_request(
        addrs[0],
        &pki,
        "a.example",
        &[b"h2"],
        Request::get("/").body(full("")).unwrap(),
    )
    .await;
    assert_eq!(r.version, Version::HTTP_2);
    assert_eq!(r.header("x-listener"), Some("a"));
    assert_eq!(r.json()["headers"]["x-forwarded-proto"][0], "https");
    // The certificate for b.example verifies only if SNI picked it.
    let r = tls_request(
        addrs[0],
        &pki,
        "b.example",
        &[b"http/1.1"],
        Request::get("/").body(full("")).unwrap(),
    )
    .await;
    assert_eq!(r.version, Version::HTTP_11);
    assert_eq!(r.header("x-listener"), Some("b"));
}

#[tokio::test]
async fn upgrade_passthrough_echoes_bytes() {
    let (_up, _gw, addr) = proxied_echo().await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    s.write_all(b"ping-through-tunnel").await.unwrap();
    let mut got = vec![0u8; 19];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"ping-through-tunnel");
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let up = echo("up").await;
    let yaml = format!(
        "config:\n  limits:\n    maxHeaderBytes: 8192\n    headerReadTimeout: 300ms\n{}",
        one_route(&format!(
            "      matches: [{{path: {{pathPrefix: /ok}}}}]\n      backends:\n      - host: {}\n",
            up.addr
        ))
    );
    let (_gw, addr) = gateway(&yaml).await;

    let r = raw(addr, b"THIS IS NOT HTTP\r\n\r\n", Duration::from_secs(2)).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");

    let big = format!(
        "GET /ok HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = raw(addr, big.as_bytes(), Duration::from_secs(2)).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");

    let nr = get(addr, "/nowhere").await;
    assert_eq!(nr.status, StatusCode::NOT_FOUND);
    assert_eq!(nr.header("content-type"), Some("application/json"));
    assert_eq!(nr.json()["error"]["code"], "no_route");

    // Slowloris: a head that never finishes is cut off.
    let t = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "slow header was not timed out"
    );

    // The gateway is still healthy after all of that.
    assert_eq!(get(addr, "/ok").await.status, 200);
}

#[tokio::test]
async fn upstream_refused_is_503_and_an_mcp_get_without_sse_is_406() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let yaml = format!(
        r#"binds:
- port: 0
  address: 127.0.0.1
  listeners:
  - routes:
    - matches: [{{path: {{pathPrefix: /dead}}}}]
      backends: [{{host: {dead_addr}}}]
    - matches: [{{path: {{pathPrefix: /mcp}}}}]
      backends:
      - mcp: {{targets: [{{name: t, mcp: {{host: "http://127.0.0.1:9/mcp"}}}}]}}
"#
    );
    let (_gw, addr) = gateway(&yaml).await;
    let r = get(addr, "/dead").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"]["code"], "upstream_unavailable");
    // The MCP endpoint's GET is an event stream; a client that cannot take one is refused.
    let r = get(addr, "/mcp").await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn upstream_reset_mid_body_ends_the_client_stream() {
    // An upstream that promises 1000 bytes, sends 10, and closes.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                    .await;
            });
        }
    });
    let (_gw, addr) = gateway(&one_route(&format!(
        "      backends:\n      - host: {up}\n"
    )))
    .await;
    let resp = h1_client()
        .request(
            Request::get(format!("http://{addr}/"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await;
    assert!(
        body.is_err(),
        "a truncated upstream body must not look complete"
    );
    // And the gateway keeps serving new requests.
    let again = h1_client()
        .request(
            Request::get(format!("http://{addr}/"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn max_connections_refuses_the_extra_connection() {
    let up = echo("up").await;
    let yaml = limited_route("    maxConnections: 1\n", up.addr);
    let (_gw, addr) = gateway(&yaml).await;
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The first connection is still open (keep-alive): a second one is closed at once.
    let r = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(r.is_empty(), "second connection should be refused, got {r}");
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(addr, "/").await.status, 200);
}

#[tokio::test]
async fn reload_keeps_in_flight_streams_on_the_old_snapshot() {
    let old = echo("old").await;
    let new = echo("new").await;
    let cfg = |u: std::net::SocketAddr| one_route(&format!("      backends:\n      - host: {u}\n"));
    let (gw, addr) = gateway(&cfg(old.addr)).await;

    // Start a stream of 10 chunks 100 ms apart, read the first chunk, then reload.
    let resp = h1_client()
        .request(
            Request::get(format!("http://{addr}/stream/10/100"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-upstream-name"], "old");
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: 0\n\n");

    reload(&gw, &cfg(new.addr)).await.unwrap();
    assert_eq!(get(addr, "/").await.header("x-upstream-name"), Some("new"));

    let rest = body.collect().await.unwrap().to_bytes();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.ends_with("data: 9\n\n"), "stream cut short: {rest}");

    // An invalid config is refused and the current one keeps serving.
    let bad = format!("{}      policies: {{nope: 1}}\n", cfg(old.addr));
    assert!(reload(&gw, &bad).await.is_err());
    assert_eq!(get(addr, "/").await.header("x-upstream-name"), Some("new"));
}

#[tokio::test]
async fn reload_adds_and_removes_binds() {
    let up = echo("up").await;
    let yaml = one_route(&format!("      backends:\n      - host: {}\n", up.addr));
    let (gw, _addr) = gateway(&yaml).await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let two = format!(
        "{yaml}- port: {port}\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - policies:\n        directResponse: {{status: 200, body: second}}\n"
    );
    reload(&gw, &two).await.unwrap();
    let second: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(second, "/").await.text(), "second");
    reload(&gw, &yaml).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(second).await.is_err(),
        "removed bind still listening"
    );
}

#[tokio::test]
async fn graceful_drain_finishes_in_flight_and_stops_accepting() {
    let (_up, gw, addr) = proxied_echo().await;
    let in_flight = tokio::spawn(async move { get(addr, "/slow/500").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    assert!(
        gw.shutdown(Duration::from_secs(5)).await,
        "drain should complete"
    );
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow done");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after drain"
    );
}

#[tokio::test]
async fn drain_deadline_cuts_long_requests() {
    let (_up, gw, addr) = proxied_echo().await;
    let _long = tokio::spawn(async move {
        h1_client()
            .request(
                Request::get(format!("http://{addr}/slow/10000"))
                    .body(full(""))
                    .unwrap(),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    assert!(!gw.shutdown(Duration::from_millis(300)).await);
    assert!(t.elapsed() < Duration::from_secs(2));
}
