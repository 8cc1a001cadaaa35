//! `switchyard extproc -f CONFIG` driven by a real gRPC client (tonic, Envoy's generated
//! `ExternalProcessor` client) through whole exchanges, the way Envoy's ext_proc filter talks:
//! request headers -> request body -> response headers -> response body.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{free_port, http, spawn_ready, Proc};
use extproc::envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use extproc::envoy_types::pb::envoy::service::ext_proc::v3::{
    external_processor_client::ExternalProcessorClient, processing_request, processing_response,
    CommonResponse, HttpBody, HttpHeaders, ImmediateResponse, ProcessingRequest,
    ProcessingResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

struct Server {
    _proc: Proc,
    grpc: SocketAddr,
    stats: SocketAddr,
}

fn start(pools_yaml: &str, pool: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, admin, stats) = (free_port(), free_port(), free_port());
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "config:\n  adminAddr: 127.0.0.1:{admin}\n  statsAddr: 127.0.0.1:{stats}\n  \
             extProc: {{addr: \"127.0.0.1:{grpc}\", pool: {pool}}}\npools:\n{pools_yaml}"
        ),
    )
    .unwrap();
    let proc = spawn_ready(
        &["extproc".as_ref(), "-f".as_ref(), file.as_os_str()],
        admin,
    );
    (
        Server {
            _proc: proc,
            grpc: format!("127.0.0.1:{grpc}").parse().unwrap(),
            stats: format!("127.0.0.1:{stats}").parse().unwrap(),
        },
        dir,
    )
}

/// One ext_proc stream: send a message, read its answer.
struct Exchange {
    tx: mpsc::Sender<ProcessingRequest>,
    rx: tonic::Streaming<ProcessingResponse>,
}

impl Exchange {
    async fn open(addr: SocketAddr) -> Exchange {
        let mut client = ExternalProcessorClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(4);
        let resp = client.process(ReceiverStream::new(rx)).await.unwrap();
        Exchange {
            tx,
            rx: resp.into_inner(),
        }
    }

    async fn send(&mut self, req: processing_request::Request) -> processing_response::Response {
        self.send_full(req).await.response.expect("a response case")
    }

    async fn send_full(&mut self, req: processing_request::Request) -> ProcessingResponse {
        self.tx
            .send(ProcessingRequest {
                request: Some(req),
                ..Default::default()
            })
            .await
            .unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), self.rx.message())
            .await
            .expect("an answer within 5s")
            .unwrap()
            .expect("the stream stays open");
        msg
    }

    async fn request_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> processing_response::Response {
        self.send(processing_request::Request::RequestHeaders(http_headers(
            headers,
            end_of_stream,
        )))
        .await
    }

    async fn request_body(&mut self, body: &[u8], end: bool) -> processing_response::Response {
        self.send(processing_request::Request::RequestBody(HttpBody {
            body: body.to_vec(),
            end_of_stream: end,
            ..Default::default()
        }))
        .await
    }
}

fn http_headers(headers: &[(&str, &str)], end_of_stream: bool) -> HttpHeaders {
    HttpHeaders {
        headers: Some(HeaderMap {
            headers: headers
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.to_string(),
                    raw_value: v.as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
        }),
        end_of_stream,
        ..Default::default()
    }
}

fn common(r: processing_response::Response) -> CommonResponse {
    match r {
        processing_response::Response::RequestHeaders(h)
        | processing_response::Response::ResponseHeaders(h) => h.response.unwrap_or_default(),
        processing_response::Response::RequestBody(b)
        | processing_response::Response::ResponseBody(b) => b.response.unwrap_or_default(),
        other => panic!("expected a headers or body response, got {other:?}"),
    }
}

fn immediate(r: processing_response::Response) -> ImmediateResponse {
    match r {
        processing_response::Response::ImmediateResponse(i) => i,
        other => panic!("expected an immediate response, got {other:?}"),
    }
}

/// The headers a response sets, as (name, value).
fn set_headers(c: &CommonResponse) -> Vec<(String, String)> {
    c.header_mutation
        .iter()
        .flat_map(|m| &m.set_headers)
        .filter_map(|o| o.header.as_ref())
        .map(|h| {
            (
                h.key.clone(),
                String::from_utf8_lossy(&h.raw_value).into_owned(),
            )
        })
        .collect()
}

fn header<'a>(set: &'a [(String, String)], name: &str) -> Option<&'a str> {
    set.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

const REQUEST_HEADERS: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    ("content-type", "application/json"),
];

fn chat(system: &str, user: &str) -> Vec<u8> {
    serde_json::json!({
        "model": "sim-llama",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]
    })
    .to_string()
    .into_bytes()
}

/// Request headers, then the body when the server asks for it; returns the pod picked.
async fn pick(ex: &mut Exchange, extra: &[(&str, &str)], body: &[u8]) -> String {
    let mut headers = REQUEST_HEADERS.to_vec();
    headers.extend_from_slice(extra);
    let first = ex
        .send_full(processing_request::Request::RequestHeaders(http_headers(
            &headers, false,
        )))
        .await;
    let mode = first.mode_override.expect("a processing mode");
    assert_eq!(mode.response_header_mode, 1, "SEND: the response is seen");
    assert_eq!(mode.response_body_mode, 1, "STREAMED");
    let mut c = common(first.response.expect("a response case"));
    if mode.request_body_mode == 2 {
        // BUFFERED: this strategy reads the prompt, the pick comes with the body.
        assert!(set_headers(&c).is_empty(), "no pick before the body");
        c = common(ex.request_body(body, true).await);
    } else {
        assert_eq!(mode.request_body_mode, 0, "NONE: picked on the headers");
    }
    assert!(c.clear_route_cache, "the route must be recomputed");
    let set = set_headers(&c);
    let pod = header(&set, "target-pod").expect("target-pod").to_string();
    assert_eq!(
        header(&set, "x-gateway-destination-endpoint"),
        Some(pod.as_str())
    );
    pod
}

#[tokio::test]
async fn full_exchange_picks_names_the_pod_and_releases_it() {
    let pods = ["127.0.0.1:18001", "127.0.0.1:18002", "127.0.0.1:18003"];
    let (srv, _dir) = start(
        &format!(
            "  - name: fleet\n    endpoints: [{}]\n    strategy: least-request\n    metrics: {{enabled: false}}\n",
            pods.join(", ")
        ),
        "fleet",
    );

    // prefix-cache reads the prompt: the headers answer asks for the buffered body, and a
    // body streamed in chunks is picked with its last one.
    let mut a = Exchange::open(srv.grpc).await;
    let mut h = REQUEST_HEADERS.to_vec();
    h.push(("routing-strategy", "prefix-cache"));
    let first = a
        .send_full(processing_request::Request::RequestHeaders(http_headers(
            &h, false,
        )))
        .await;
    assert_eq!(
        first.mode_override.unwrap().request_body_mode,
        2,
        "BUFFERED"
    );
    let body = chat("policy", "hello");
    let (head, tail) = body.split_at(10);
    assert!(set_headers(&common(a.request_body(head, false).await)).is_empty());
    let c = common(a.request_body(tail, true).await);
    let set = set_headers(&c);
    let pod_a = header(&set, "target-pod").unwrap().to_string();
    assert!(pods.contains(&pod_a.as_str()), "{pod_a}");

    // While A is in flight, least-request sends B and C elsewhere.
    let mut b = Exchange::open(srv.grpc).await;
    let pod_b = pick(&mut b, &[], &chat("policy", "two")).await;
    let mut c3 = Exchange::open(srv.grpc).await;
    let pod_c = pick(&mut c3, &[], &chat("policy", "three")).await;
    let mut distinct = vec![pod_a.clone(), pod_b.clone(), pod_c.clone()];
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "in-flight counts spread the picks: {distinct:?}"
    );

    // A's response: the pod is named on it; its end releases the pod.
    let rh = a
        .send(processing_request::Request::ResponseHeaders(http_headers(
            &[(":status", "200")],
            false,
        )))
        .await;
    assert_eq!(
        header(&set_headers(&common(rh)), "target-pod"),
        Some(pod_a.as_str())
    );
    let usage = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}"#;
    a.send(processing_request::Request::ResponseBody(HttpBody {
        body: usage.to_vec(),
        end_of_stream: true,
        ..Default::default()
    }))
    .await;
    // B ends by closing its stream (Envoy does when the client goes away).
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // C is still in flight; A and B are free: the next pick is not C's pod.
    let mut d = Exchange::open(srv.grpc).await;
    let pod_d = pick(&mut d, &[], &chat("policy", "four")).await;
    assert_ne!(pod_d, pod_c, "the pod still in flight is avoided");

    // A GET without body is picked on its headers alone.
    let mut g = Exchange::open(srv.grpc).await;
    let c = common(
        g.request_headers(&[(":method", "GET"), (":path", "/v1/models")], true)
            .await,
    );
    assert!(c.clear_route_cache);
    assert!(header(&set_headers(&c), "target-pod").is_some());

    // Per-request strategy: prefix-cache keeps a shared prompt on one pod.
    let system = "You are the support agent for a large retailer; follow the policy. ".repeat(12);
    let mut seen = Vec::new();
    for i in 0..4 {
        let mut ex = Exchange::open(srv.grpc).await;
        seen.push(
            pick(
                &mut ex,
                &[("routing-strategy", "prefix-cache")],
                &chat(&system, &format!("question {i}")),
            )
            .await,
        );
    }
    assert!(seen.iter().all(|p| p == &seen[0]), "{seen:?}");

    // Bad input: immediate responses with a JSON body, the server stays up.
    let mut bad = Exchange::open(srv.grpc).await;
    let mut h = REQUEST_HEADERS.to_vec();
    h.push(("routing-strategy", "prefix-cache"));
    bad.request_headers(&h, false).await;
    let i = immediate(bad.request_body(b"{not json", true).await);
    assert_eq!(i.status.unwrap().code, 400);
    let body: serde_json::Value = serde_json::from_slice(&i.body).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    // An unknown strategy is refused on the headers, before any body is buffered.
    let mut unknown = Exchange::open(srv.grpc).await;
    let mut h = REQUEST_HEADERS.to_vec();
    h.push(("routing-strategy", "fastest-please"));
    let i = immediate(unknown.request_headers(&h, false).await);
    assert_eq!(i.status.unwrap().code, 400);
    let msg_text = String::from_utf8_lossy(&i.body).into_owned();
    for name in [
        "least-request",
        "prefix-cache",
        "least-kv-cache",
        "session-affinity",
    ] {
        assert!(msg_text.contains(name), "{msg_text}");
    }

    // Metrics: picks counted by pool, strategy and outcome; pick time recorded.
    let (_, metrics) = http(srv.stats, "GET", "/metrics", "").unwrap();
    assert!(
        metrics.contains(
            r#"switchyard_pool_picks_total{pool="fleet",strategy="least-request",outcome="picked"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"strategy="prefix-cache",outcome="picked"} 5"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"outcome="bad_request"} 2"#), "{metrics}");
    assert!(metrics.contains("switchyard_pool_pick_duration_seconds_bucket"));
}

#[tokio::test]
async fn a_pool_whose_pods_refuse_answers_503() {
    // Nothing listens on these ports: the scraper's refused connections eject both pods.
    let dead = [free_port(), free_port()];
    let (srv, _dir) = start(
        &format!(
            "  - name: dead\n    endpoints: [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n    metrics: {{interval: 100ms, timeout: 100ms}}\n    ejectionBase: 10s\n",
            dead[0], dead[1]
        ),
        "dead",
    );
    let mut status = 0;
    for _ in 0..50 {
        let mut ex = Exchange::open(srv.grpc).await;
        // least-request picks on the headers: the refusal comes there.
        match ex.request_headers(REQUEST_HEADERS, false).await {
            processing_response::Response::ImmediateResponse(i) => {
                status = i.status.unwrap().code;
                let body: serde_json::Value = serde_json::from_slice(&i.body).unwrap();
                assert_eq!(
                    body["error"]["message"],
                    "pool dead: none of the 2 pods is healthy"
                );
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(status, 503);
}

#[tokio::test]
async fn a_saturated_pool_answers_429_until_a_request_ends() {
    let (srv, _dir) = start(
        "  - name: one\n    endpoints: [\"127.0.0.1:18009\"]\n    metrics: {enabled: false}\n    maxInFlightPerPod: 1\n",
        "one",
    );
    let mut a = Exchange::open(srv.grpc).await;
    assert_eq!(
        pick(&mut a, &[], &chat("s", "first")).await,
        "127.0.0.1:18009"
    );
    let mut b = Exchange::open(srv.grpc).await;
    let i = immediate(b.request_headers(REQUEST_HEADERS, false).await);
    assert_eq!(i.status.unwrap().code, 429);
    assert!(String::from_utf8_lossy(&i.body).contains("limit of 1 requests in flight"));
    // A's response ends: the pod takes the next request.
    a.send(processing_request::Request::ResponseHeaders(http_headers(
        &[(":status", "200")],
        true,
    )))
    .await;
    let mut c = Exchange::open(srv.grpc).await;
    assert_eq!(
        pick(&mut c, &[], &chat("s", "third")).await,
        "127.0.0.1:18009"
    );
}

/// A pool whose pods serve different models (one with a LoRA adapter): ext_proc asks for the
/// body even for a strategy that needs no prompt, picks only pods serving the requested model
/// (their lists read from `/v1/models` with the scrape), and answers a model no pod serves
/// with an ImmediateResponse 404 `model_not_found`.
#[tokio::test]
async fn multi_model_pools_pick_by_the_model_in_the_body() {
    let pod = |name: &str, model: &str, lora: &[&str]| {
        let mut o = sim::vllm::VllmOptions {
            name: name.into(),
            model: model.into(),
            lora_adapters: lora.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        o.engine.step_base = Duration::from_micros(200);
        sim::vllm::spawn(o)
    };
    let lora = pod("pod-lora", "sim-llama", &["sql-lora"]).await.unwrap();
    let qwen = pod("pod-qwen", "sim-qwen", &[]).await.unwrap();
    let (srv, _dir) = start(
        &format!(
            "  - name: fleet\n    endpoints: [\"{}\", \"{}\"]\n    strategy: least-request\n    metrics: {{interval: 50ms}}\n",
            lora.addr, qwen.addr
        ),
        "fleet",
    );
    let body = |model: &str| {
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
            .into_bytes()
    };
    // Until the first scrape the pool knows no model lists; then an unknown model is a 404.
    let mut refused = None;
    for _ in 0..100 {
        let mut ex = Exchange::open(srv.grpc).await;
        let first = ex
            .send_full(processing_request::Request::RequestHeaders(http_headers(
                REQUEST_HEADERS,
                false,
            )))
            .await;
        if first.mode_override.map(|m| m.request_body_mode) == Some(2) {
            let r = ex.request_body(&body("gpt-9"), true).await;
            if let processing_response::Response::ImmediateResponse(i) = r {
                refused = Some(i);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let i = refused.expect("the pods' model lists were never read");
    assert_eq!(i.status.unwrap().code, 404);
    let err: serde_json::Value = serde_json::from_slice(&i.body).unwrap();
    assert_eq!(err["error"]["code"], "model_not_found", "{err}");
    let pod_of = |addr: SocketAddr| addr.to_string();
    for (model, want) in [
        ("sql-lora", pod_of(lora.addr)),
        ("sim-llama", pod_of(lora.addr)),
        ("sim-qwen", pod_of(qwen.addr)),
    ] {
        for _ in 0..4 {
            let mut ex = Exchange::open(srv.grpc).await;
            assert_eq!(pick(&mut ex, &[], &body(model)).await, want, "{model}");
        }
    }
}

/// Envoy streams the response body to the processor: once a pod's answer has sent its first
/// byte the request is decoding, which least-request weighs less than one still waiting for
/// its answer to begin (queued or in prefill).
#[tokio::test]
async fn least_request_prefers_the_pod_whose_answer_has_begun() {
    let (srv, _dir) = start(
        "  - name: fleet\n    endpoints: [\"127.0.0.1:18011\", \"127.0.0.1:18012\"]\n    \
         strategy: least-request\n    metrics: {enabled: false}\n",
        "fleet",
    );
    let response_body = |body: &[u8], end_of_stream| {
        processing_request::Request::ResponseBody(HttpBody {
            body: body.to_vec(),
            end_of_stream,
            ..Default::default()
        })
    };
    // One request whose answer is streaming: headers, then a first chunk.
    let mut decoding = Exchange::open(srv.grpc).await;
    let busy = pick(&mut decoding, &[], &chat("s", "one")).await;
    decoding
        .send(processing_request::Request::ResponseHeaders(http_headers(
            &[(":status", "200")],
            false,
        )))
        .await;
    decoding
        .send(response_body(b"data: {\"choices\":[]}\n\n", false))
        .await;
    // The other pod is idle: the next request goes there, and its answer has not begun.
    let mut waiting = Exchange::open(srv.grpc).await;
    let other = pick(&mut waiting, &[], &chat("s", "two")).await;
    assert_ne!(other, busy);
    // One request in flight on each pod, but the unanswered one weighs more: every further
    // request (each answered and ended before the next) goes to the decoding pod; a tie
    // would miss it with a chance of 1 in 2^10.
    for i in 0..10 {
        let mut ex = Exchange::open(srv.grpc).await;
        assert_eq!(pick(&mut ex, &[], &chat("s", &format!("q{i}"))).await, busy);
        ex.send(response_body(b"{}", true)).await;
    }
    drop((decoding, waiting));
}
