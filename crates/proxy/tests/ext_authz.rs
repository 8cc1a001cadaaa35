//! `extAuthz` and `remoteRateLimit` through a real gateway, against real Envoy-protocol
//! services on 127.0.0.1:0: tonic servers implementing `envoy.service.auth.v3.Authorization`
//! and `envoy.service.ratelimit.v3.RateLimitService`, and a plain HTTP authorization server.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{
    check_response, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::rpc;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

// ---------- services ----------

/// A service task, stopped when dropped.
struct Service<T> {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<T>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Drop for Service<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: Clone> Service<T> {
    fn seen(&self) -> Vec<T> {
        self.seen.lock().unwrap().clone()
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Admits `x-user: alice` (adding `x-authz-user` and `x-not-listed` upstream and
/// `x-authz-resp` on the response); denies anyone else with 401, `www-authenticate` and a body.
struct Authz {
    seen: Arc<Mutex<Vec<CheckRequest>>>,
    delay: Duration,
}

#[tonic::async_trait]
impl Authorization for Authz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        tokio::time::sleep(self.delay).await;
        let check = request.into_inner();
        self.seen.lock().unwrap().push(check.clone());
        let http = check
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        let user = http.headers.get("x-user").cloned().unwrap_or_default();
        let resp = if user == "alice" {
            CheckResponse {
                status: Some(rpc::Status::default()),
                http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![header("x-authz-user", "alice"), header("x-not-listed", "1")],
                    response_headers_to_add: vec![header("x-authz-resp", "yes")],
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(rpc::Status {
                    code: 7,
                    message: format!("user {user:?} may not pass"),
                    details: vec![],
                }),
                http_response: Some(check_response::HttpResponse::DeniedResponse(
                    DeniedHttpResponse {
                        status: Some(HttpStatus { code: 401 }),
                        headers: vec![
                            header("www-authenticate", "Custom realm=\"authz\""),
                            header("x-denied-by", "authz"),
                        ],
                        body: "authz says no".into(),
                    },
                )),
                ..Default::default()
            }
        };
        Ok(tonic::Response::new(resp))
    }
}

async fn serve_authz(delay: Duration) -> Service<CheckRequest> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = AuthorizationServer::new(Authz {
        seen: seen.clone(),
        delay,
    });
    let task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming(svc, incoming)
            .await;
    });
    Service { addr, seen, task }
}

/// Answers OK, or OVER_LIMIT (the second descriptor over, resetting in 2.3s) when `over`;
/// adds `x-ratelimit-limit: 10` to the response either way.
struct Rls {
    seen: Arc<Mutex<Vec<RateLimitRequest>>>,
    over: bool,
}

#[tonic::async_trait]
impl RateLimitService for Rls {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let req = request.into_inner();
        self.seen.lock().unwrap().push(req.clone());
        let limit_header = HeaderValue {
            key: "x-ratelimit-limit".into(),
            value: "10".into(),
            ..Default::default()
        };
        let resp = match self.over {
            false => RateLimitResponse {
                overall_code: Code::Ok as i32,
                statuses: vec![DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                }],
                response_headers_to_add: vec![limit_header],
                ..Default::default()
            },
            true => RateLimitResponse {
                overall_code: Code::OverLimit as i32,
                statuses: vec![
                    DescriptorStatus {
                        code: Code::Ok as i32,
                        duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                            seconds: 30,
                            nanos: 0,
                        }),
                        ..Default::default()
                    },
                    DescriptorStatus {
                        code: Code::OverLimit as i32,
                        duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                            seconds: 2,
                            nanos: 300_000_000,
                        }),
                        ..Default::default()
                    },
                ],
                response_headers_to_add: vec![limit_header],
                ..Default::default()
            },
        };
        Ok(tonic::Response::new(resp))
    }
}

async fn serve_rls(over: bool) -> Service<RateLimitRequest> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = RateLimitServiceServer::new(Rls {
        seen: seen.clone(),
        over,
    });
    let task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming(svc, incoming)
            .await;
    });
    Service { addr, seen, task }
}

/// What the HTTP authorization server saw of one check.
#[derive(Clone, Debug)]
struct HttpCheck {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body_len: usize,
}

/// Plain HTTP: 200 with `x-authz-user` for `x-user: alice`, else 403 with a header and a body.
async fn serve_http_authz() -> Service<HttpCheck> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<HttpCheck>>> = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let alice = parts.headers.get("x-user").is_some_and(|v| v == "alice");
                        record.lock().unwrap().push(HttpCheck {
                            method: parts.method.to_string(),
                            path: parts.uri.path_and_query().unwrap().to_string(),
                            headers: parts.headers,
                            body_len: body.len(),
                        });
                        let resp = match alice {
                            true => Response::builder()
                                .header("x-authz-user", "alice")
                                .header("x-not-listed", "1")
                                .body(full("ok")),
                            false => Response::builder()
                                .status(403)
                                .header("x-denied-by", "http-authz")
                                .header("content-type", "text/plain")
                                .body(full("http authz says no")),
                        };
                        Ok::<_, Infallible>(resp.unwrap())
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Service { addr, seen, task }
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn with_policy(policy: &str, upstream: SocketAddr) -> String {
    one_route(&format!(
        "      policies:\n{policy}      backends:\n      - host: {upstream}\n"
    ))
}

fn alice(path: &str) -> Request<TestBody> {
    Request::get(path)
        .header("x-user", "alice")
        .body(full(""))
        .unwrap()
}

// ---------- extAuthz ----------

#[tokio::test]
async fn grpc_ext_authz_admits_and_sets_listed_headers_upstream() {
    let authz = serve_authz(Duration::ZERO).await;
    let up = echo("up").await;
    let policy = format!(
        "        extAuthz:\n          target: {}\n          timeout: 2s\n          headersToUpstream: [x-authz-user]\n",
        authz.addr
    );
    let (_gw, addr) = gateway(&with_policy(&policy, up.addr)).await;

    let r = send(
        addr,
        Request::get("/items?page=2")
            .header("x-user", "alice")
            .header("x-authz-user", "forged")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.seen("x-authz-user"),
        ["alice"],
        "the service's value replaces the client's"
    );
    assert!(
        r.seen("x-not-listed").is_empty(),
        "only headersToUpstream go upstream"
    );
    assert_eq!(r.header("x-authz-resp"), Some("yes"));

    let seen = authz.seen();
    assert_eq!(seen.len(), 1);
    let attrs = seen[0].attributes.clone().unwrap();
    let http = attrs.request.unwrap().http.unwrap();
    assert_eq!(http.method, "GET");
    assert_eq!(http.path, "/items?page=2");
    assert_eq!(http.scheme, "http");
    assert!(http.host.starts_with("127.0.0.1"), "{}", http.host);
    assert_eq!(http.headers["x-user"], "alice");
    assert_eq!(http.headers[":method"], "GET");
    assert!(!http.id.is_empty(), "the request id is sent");
    let source = format!("{:?}", attrs.source.unwrap());
    assert!(source.contains("127.0.0.1"), "{source}");
}

#[tokio::test]
async fn grpc_ext_authz_denial_keeps_the_services_status_headers_and_body() {
    let authz = serve_authz(Duration::ZERO).await;
    let up = echo("up").await;
    let policy = format!(
        "        extAuthz:\n          target: {}\n          timeout: 2s\n          includeRequestHeaders: [x-user]\n",
        authz.addr
    );
    let (_gw, addr) = gateway(&with_policy(&policy, up.addr)).await;

    let r = send(
        addr,
        Request::get("/")
            .header("x-user", "mallory")
            .header("x-secret", "s")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Custom realm=\"authz\""));
    assert_eq!(r.header("x-denied-by"), Some("authz"));
    assert_eq!(r.text(), "authz says no");
    assert!(
        r.header("x-upstream-name").is_none(),
        "nothing reached the upstream"
    );

    let http = authz.seen()[0]
        .attributes
        .clone()
        .unwrap()
        .request
        .unwrap()
        .http
        .unwrap();
    let mut names: Vec<_> = http.headers.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["x-user"], "only includeRequestHeaders are sent");
}

#[tokio::test]
async fn ext_authz_denial_on_an_llm_route_is_an_openai_error() {
    let authz = serve_authz(Duration::ZERO).await;
    let provider = echo("provider").await;
    let (_gw, addr) = gateway(&one_route(&format!(
        "      policies:\n        extAuthz:\n          target: {}\n          timeout: 2s\n      backends:\n      - ai:\n          name: openai\n          hostOverride: {}\n          provider: {{openAI: {{}}}}\n",
        authz.addr, provider.addr
    )))
    .await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let r = send(
        addr,
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("x-user", "mallory")
            .body(full(body.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-denied-by"), Some("authz"));
    let j = r.json();
    assert_eq!(j["error"]["code"], "ext_authz_denied", "{j}");
    assert!(j["error"]["type"].is_string(), "OpenAI's error shape: {j}");
    assert!(
        j["error"]["message"].as_str().unwrap().contains("mallory"),
        "the service's reason: {j}"
    );

    // Admitted on the same route: the provider answers.
    let r = send(
        addr,
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("x-user", "alice")
            .body(full(body.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.seen("x-authz-user"),
        ["alice"],
        "empty headersToUpstream: all the service sets"
    );
}

#[tokio::test]
async fn http_ext_authz_sends_method_prefixed_path_and_headers_without_the_body() {
    let authz = serve_http_authz().await;
    let up = echo("up").await;
    let policy = format!(
        "        extAuthz:\n          target: {}\n          protocol: http\n          pathPrefix: /check\n          timeout: 2s\n          headersToUpstream: [x-authz-user]\n",
        authz.addr
    );
    let (_gw, addr) = gateway(&with_policy(&policy, up.addr)).await;

    let r = send(
        addr,
        Request::post("/orders?id=7")
            .header("x-user", "alice")
            .body(full("a request body"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.seen("x-authz-user"), ["alice"]);
    assert!(r.seen("x-not-listed").is_empty());
    assert_eq!(
        r.json()["body"],
        "a request body",
        "the upstream still gets the body"
    );

    let check = &authz.seen()[0];
    assert_eq!(check.method, "POST");
    assert_eq!(check.path, "/check/orders?id=7");
    assert_eq!(check.headers["x-user"], "alice");
    assert_eq!(check.body_len, 0, "no body goes to the service");

    let r = send(
        addr,
        Request::get("/orders")
            .header("x-user", "bob")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-denied-by"), Some("http-authz"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.text(), "http authz says no");
}

#[tokio::test]
async fn ext_authz_down_fails_open_or_closed() {
    let down = closed_port().await;
    let up = echo("up").await;
    let open = format!(
        "        extAuthz:\n          target: {down}\n          timeout: 1s\n          failOpen: true\n"
    );
    let (_gw, addr) = gateway(&with_policy(&open, up.addr)).await;
    let r = send(addr, alice("/")).await;
    assert_eq!(r.status, 200, "failOpen admits: {}", r.text());

    let closed = format!("        extAuthz:\n          target: {down}\n          timeout: 1s\n");
    let (_gw2, addr) = gateway(&with_policy(&closed, up.addr)).await;
    let r = send(addr, alice("/")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "ext_authz_unavailable");
    // A second request fails the same way (the channel reconnects, and fails again).
    let r = send(addr, alice("/")).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn ext_authz_timeout_is_honoured() {
    let slow = serve_authz(Duration::from_millis(1500)).await;
    let up = echo("up").await;
    let policy = format!(
        "        extAuthz:\n          target: {}\n          timeout: 100ms\n",
        slow.addr
    );
    let (_gw, addr) = gateway(&with_policy(&policy, up.addr)).await;
    let started = Instant::now();
    let r = send(addr, alice("/")).await;
    let took = started.elapsed();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "ext_authz_unavailable");
    assert!(took < Duration::from_millis(1000), "took {took:?}");

    let policy = format!(
        "        extAuthz:\n          target: {}\n          timeout: 100ms\n          failOpen: true\n",
        slow.addr
    );
    let (_gw2, addr) = gateway(&with_policy(&policy, up.addr)).await;
    let started = Instant::now();
    let r = send(addr, alice("/")).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_millis(1000));
}

// ---------- remoteRateLimit ----------

const DESCRIPTORS: &str = r#"        remoteRateLimit:
          target: TARGET
          domain: gateway
          timeout: 2s
          descriptors:
          - entries: {user: 'request.headers["x-user"]', route: '"chat"'}
          - entries: {user: 'request.headers["x-user"]'}
            unit: tokens
          - entries: {tenant: 'request.headers["x-tenant"]'}
"#;

#[tokio::test]
async fn remote_rate_limit_sends_cel_descriptors_and_token_estimates() {
    let rls = serve_rls(false).await;
    let up = echo("up").await;
    let policy = DESCRIPTORS.replace("TARGET", &rls.addr.to_string());
    let (_gw, addr) = gateway(&with_policy(&policy, up.addr)).await;

    let body = json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hello there"}]})
        .to_string();
    let r = send(
        addr,
        Request::post("/v1/chat/completions")
            .header("x-user", "alice")
            .body(full(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(r.json()["body"], Value::String(body.clone()));

    let seen = rls.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.domain, "gateway");
    let entries = |i: usize| -> Vec<(String, String)> {
        req.descriptors[i]
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    };
    assert_eq!(
        req.descriptors.len(),
        2,
        "x-tenant is absent: its descriptor is not sent"
    );
    assert_eq!(
        entries(0),
        [
            ("route".to_string(), "chat".to_string()),
            ("user".into(), "alice".into())
        ]
    );
    assert_eq!(req.descriptors[0].hits_addend, None, "requests count 1");
    assert_eq!(entries(1), [("user".to_string(), "alice".to_string())]);
    let tokens = req.descriptors[1].hits_addend.as_ref().map(|h| h.value);
    assert_eq!(tokens, Some(body.len() as u64 / 4 + 100));

    // No descriptor has a value: the service is not asked.
    let r = send(addr, Request::get("/").body(full("")).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(rls.seen().len(), 1);
}

#[tokio::test]
async fn remote_rate_limit_over_limit_is_429_with_retry_after() {
    let rls = serve_rls(true).await;
    let up = echo("up").await;
    let policy = format!(
        "        remoteRateLimit:\n          target: {}\n          domain: gateway\n          timeout: 2s\n          descriptors:\n          - entries: {{user: 'request.headers[\"x-user\"]'}}\n",
        rls.addr
    );
    let (_gw, addr) = gateway(&with_policy(&policy, up.addr)).await;
    let r = send(addr, alice("/")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("3"), "2.3s, rounded up");
    assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    assert!(r.header("x-upstream-name").is_none());
}

#[tokio::test]
async fn remote_rate_limit_down_fails_open_or_503() {
    let down = closed_port().await;
    let up = echo("up").await;
    let policy = |open: bool| {
        format!(
            "        remoteRateLimit:\n          target: {down}\n          domain: d\n          timeout: 1s\n          failOpen: {open}\n          descriptors:\n          - entries: {{path: request.path}}\n"
        )
    };
    let (_gw, addr) = gateway(&with_policy(&policy(true), up.addr)).await;
    assert_eq!(send(addr, alice("/")).await.status, 200);

    let (_gw2, addr) = gateway(&with_policy(&policy(false), up.addr)).await;
    let r = send(addr, alice("/")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "rate_limit_unavailable");
}
