//! Model pools through the real gateway binary: simulated vLLM pods (the `sim` crate's
//! engine, real sockets), `{pool: NAME}` and `ai.pool` backends, per-request strategies,
//! refused pods, runtime endpoint changes and the errors a client sees.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{free_port, http, spawn_ready, wait_until, Proc, BIN};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

async fn post(
    c: &Client,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Reply {
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = c
        .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Reply {
        status,
        headers,
        body,
    }
}

/// A chat completion through the `{pool: fleet}` route.
async fn via_pool(c: &Client, gw: &Gateway, headers: &[(&str, &str)], body: &Value) -> Reply {
    post(c, gw.addr, "/pool/v1/chat/completions", headers, body).await
}

fn chat(system: &str, user: &str) -> Value {
    json!({
        "model": "sim-llama",
        "max_tokens": 4,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]
    })
}

fn fast_pod() -> sim::vllm::VllmOptions {
    let mut o = sim::vllm::VllmOptions::default();
    o.engine.step_base = Duration::from_micros(200);
    o.engine.prefill_per_token = Duration::from_micros(2);
    o.engine.decode_per_seq = Duration::from_micros(20);
    o
}

struct Gateway {
    _proc: Proc,
    addr: SocketAddr,
    stats: SocketAddr,
}

fn start_gateway(dir: &std::path::Path, body: &str) -> Gateway {
    let (port, admin, stats) = (free_port(), free_port(), free_port());
    let file = dir.join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "config:\n  adminAddr: 127.0.0.1:{admin}\n  statsAddr: 127.0.0.1:{stats}\n{body}\
             binds:\n  - port: {port}\n    listeners:\n      - routes:\n          - name: pool\n            \
             matches: [{{path: {{pathPrefix: /pool}}}}]\n            policies: {{urlRewrite: {{path: {{prefix: /}}}}}}\n            \
             backends: [{{pool: fleet}}]\n          - name: ai\n            backends:\n              \
             - ai: {{name: vllm, provider: {{openAICompatible: {{}}}}, pool: fleet}}\n"
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("validate")
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proc = spawn_ready(&["-f".as_ref(), file.as_os_str()], admin);
    Gateway {
        _proc: proc,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        stats: format!("127.0.0.1:{stats}").parse().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_backends_pick_per_request_and_survive_refused_pods() {
    let pods = sim::vllm::fleet(3, fast_pod()).await;
    let dead = format!("127.0.0.1:{}", free_port());
    let addrs: Vec<String> = pods.iter().map(|p| p.addr.to_string()).collect();
    let pod_name: HashMap<String, String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (a.clone(), format!("pod-{i}")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(
        dir.path(),
        &format!(
            "pools:\n  - name: fleet\n    endpoints: [\"{}\", \"{}\", \"{}\", \"{dead}\"]\n    \
             strategy: least-request\n    metrics: {{enabled: false}}\n    ejectionBase: 30s\n",
            addrs[0], addrs[1], addrs[2]
        ),
    );
    let c = client();

    // Every request succeeds although one pod refuses connections; the gateway says which
    // pod served it, and that pod really did (the simulator names itself).
    // Sequential requests leave every pod idle at each pick: least-request ties, broken at
    // random. 48 of them miss one of the three live pods with a chance of about 1e-8 (12 did
    // with ~2%, and flaked).
    let mut served = HashMap::new();
    for i in 0..48 {
        let r = via_pool(&c, &gw, &[], &chat("s", &format!("q{i}"))).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let pod = r.header("target-pod").expect("target-pod").to_string();
        assert_ne!(pod, dead, "the refusing pod is never named");
        assert_eq!(r.header("x-sim-pod"), Some(pod_name[&pod].as_str()));
        *served.entry(pod).or_insert(0) += 1;
    }
    assert_eq!(
        served.len(),
        3,
        "least-request's random tie-breaks reach every live pod: {served:?}"
    );

    // prefix-cache per request: a shared long system prompt stays on one pod, whose KV
    // cache then really holds it (cached tokens reported by the engine).
    let system =
        "You are the support agent of a large retailer; follow every rule below. ".repeat(20);
    let mut pods_seen = Vec::new();
    let mut cached = Vec::new();
    for i in 0..4 {
        let r = via_pool(
            &c,
            &gw,
            &[("routing-strategy", "prefix-cache")],
            &chat(&system, &format!("order {i}")),
        )
        .await;
        assert_eq!(r.status, 200);
        pods_seen.push(r.header("target-pod").unwrap().to_string());
        cached.push(
            r.body["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
        );
    }
    assert!(
        pods_seen.iter().all(|p| p == &pods_seen[0]),
        "{pods_seen:?}"
    );
    assert!(
        cached[1..].iter().all(|&n| n > 200),
        "later requests hit the cache: {cached:?}"
    );

    // session-affinity: sticky by x-session-id.
    let mut sticky = Vec::new();
    for i in 0..3 {
        let r = via_pool(
            &c,
            &gw,
            &[
                ("routing-strategy", "session-affinity"),
                ("x-session-id", "conv-7"),
            ],
            &chat("s", &format!("turn {i}")),
        )
        .await;
        sticky.push(r.header("target-pod").unwrap().to_string());
    }
    assert!(sticky.iter().all(|p| p == &sticky[0]), "{sticky:?}");

    // An unknown strategy is the client's error, and says what would work.
    let r = via_pool(&c, &gw, &[("routing-strategy", "fastest")], &chat("s", "u")).await;
    assert_eq!(r.status, 400);
    let text = r.body.to_string();
    assert!(text.contains("unknown_routing_strategy"), "{text}");
    for name in [
        "random",
        "least-request",
        "prefix-cache",
        "session-affinity",
    ] {
        assert!(text.contains(name), "{text}");
    }
    // A body prefix-cache cannot read is a 400 too, not a pick on garbage (strategies that do
    // not read the prompt leave the body to the pod).
    let r = via_pool(
        &c,
        &gw,
        &[("routing-strategy", "prefix-cache")],
        &json!("just a string"),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.header("target-pod").is_none(), "refused before any pod");
    // With a strategy that does not read the prompt, the body is the pod's to judge.
    let r = via_pool(&c, &gw, &[], &json!("just a string")).await;
    assert_eq!(r.status, 400);
    assert!(r.header("target-pod").is_some(), "{:?}", r.body);

    // The ai backend over the same pool: OpenAI dialect, usage counted, pod named.
    let r = post(
        &c,
        gw.addr,
        "/v1/chat/completions",
        &[],
        &chat("s", "via ai"),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(addrs.contains(&r.header("target-pod").unwrap().to_string()));
    assert_eq!(r.body["object"], "chat.completion");
    // A request's metrics are recorded by a task spawned once its answer has gone, so the
    // client may read /metrics first: wait (bounded) for the usage of the last call.
    let usage = r#"gen_ai_client_token_usage_token_count{gen_ai_token_type="output""#;
    let mut metrics = String::new();
    wait_until(
        "the call's token usage in /metrics",
        Duration::from_secs(5),
        || {
            metrics = http(gw.stats, "GET", "/metrics", "").unwrap().1;
            metrics.contains(usage)
        },
    );
    assert!(
        metrics.contains(r#"switchyard_pool_picks_total{pool="fleet",strategy="prefix-cache",outcome="picked"} 4"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"switchyard_pool_picks_total{pool="fleet",strategy="unknown",outcome="bad_request"} 2"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_file_changes_reach_traffic_and_an_empty_pool_is_503() {
    let pods = sim::vllm::fleet(2, fast_pod()).await;
    let dir = tempfile::tempdir().unwrap();
    let pods_file = dir.path().join("pods.txt");
    std::fs::write(&pods_file, format!("# the fleet\n{}\n", pods[0].addr)).unwrap();
    let gw = start_gateway(
        dir.path(),
        "pools:\n  - name: fleet\n    endpointsFile: pods.txt\n    strategy: random\n    metrics: {interval: 100ms}\n",
    );
    let c = client();
    for _ in 0..3 {
        let r = via_pool(&c, &gw, &[], &chat("s", "u")).await;
        assert_eq!(
            r.header("target-pod"),
            Some(pods[0].addr.to_string().as_str())
        );
    }
    // A second pod appears in the file: random picks reach it without a reload.
    std::fs::write(&pods_file, format!("{}\n{}\n", pods[0].addr, pods[1].addr)).unwrap();
    let second = pods[1].addr.to_string();
    let mut reached = false;
    for _ in 0..100 {
        let r = via_pool(&c, &gw, &[], &chat("s", "u")).await;
        assert_eq!(r.status, 200);
        if r.header("target-pod") == Some(second.as_str()) {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(reached, "the new pod never got traffic");
    // Every pod gone: a clear 503, not a hang or a 500.
    std::fs::write(&pods_file, "# scaled to zero\n").unwrap();
    let mut last = None;
    for _ in 0..50 {
        let r = via_pool(&c, &gw, &[], &chat("s", "u")).await;
        if r.status == 503 {
            last = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = last.expect("503 once the pool is empty");
    assert!(
        r.body.to_string().contains("no pods in the pool"),
        "{:?}",
        r.body
    );
}

/// A pool whose pods serve different models and LoRA adapters (read from each pod's
/// `/v1/models` with the metrics scrape): only pods serving the requested model are ranked,
/// and a model no pod serves is 404 `model_not_found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_model_pools_pick_only_pods_serving_the_model() {
    let with_lora = sim::vllm::spawn(sim::vllm::VllmOptions {
        name: "pod-lora".into(),
        lora_adapters: vec!["sql-lora".into()],
        ..fast_pod()
    })
    .await
    .unwrap();
    let other = sim::vllm::spawn(sim::vllm::VllmOptions {
        name: "pod-qwen".into(),
        model: "sim-qwen".into(),
        ..fast_pod()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(
        dir.path(),
        &format!(
            "pools:\n  - name: fleet\n    endpoints: [\"{}\", \"{}\"]\n    strategy: least-request\n    \
             metrics: {{interval: 50ms}}\n",
            with_lora.addr, other.addr
        ),
    );
    let c = client();
    // Wait for the first model lists (the first scrape).
    let mut ready = false;
    for _ in 0..100 {
        let mut body = chat("s", "q");
        body["model"] = json!("nope");
        if via_pool(&c, &gw, &[], &body).await.status == 404 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the pods' model lists were never read");
    for (model, pod) in [
        ("sql-lora", "pod-lora"),
        ("sim-llama", "pod-lora"),
        ("sim-qwen", "pod-qwen"),
    ] {
        for i in 0..6 {
            let mut body = chat("s", &format!("q{i}"));
            body["model"] = json!(model);
            let r = via_pool(&c, &gw, &[], &body).await;
            assert_eq!(r.status, 200, "{model}: {:?}", r.body);
            assert_eq!(r.header("x-sim-pod"), Some(pod), "{model}");
        }
    }
    let mut body = chat("s", "q");
    body["model"] = json!("gpt-9");
    let r = via_pool(&c, &gw, &[], &body).await;
    assert_eq!(r.status, 404);
    assert!(
        format!("{:?}", r.body).contains("model_not_found"),
        "{:?}",
        r.body
    );
}

/// The senders of the answer bodies a [`held_upstream`] keeps open (dropping one ends its
/// body).
type HeldBodies = std::sync::Arc<
    std::sync::Mutex<
        Vec<tokio::sync::mpsc::Sender<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>>,
    >,
>;

/// An upstream like an LLM engine: response headers at once, then `x-mode: answer` sends one
/// body chunk and holds the rest (decoding), `x-mode: hold` sends no body byte (queued or in
/// prefill), anything else a whole answer. Held bodies stay open while `held` keeps them.
async fn held_upstream(name: &'static str, held: HeldBodies) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let held = held.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let held = held.clone();
                        async move {
                            let mode = req.headers().get("x-mode").cloned();
                            let (tx, rx) = tokio::sync::mpsc::channel(4);
                            match mode.as_ref().map(|m| m.as_bytes()) {
                                Some(b"answer") => {
                                    let first = hyper::body::Frame::data(Bytes::from_static(
                                        b"data: {}\n\n",
                                    ));
                                    tx.send(Ok(first)).await.unwrap();
                                    held.lock().unwrap().push(tx);
                                }
                                Some(b"hold") => held.lock().unwrap().push(tx),
                                _ => {
                                    let whole = hyper::body::Frame::data(Bytes::from_static(b"{}"));
                                    tx.send(Ok(whole)).await.unwrap();
                                }
                            }
                            let body = http_body_util::StreamBody::new(
                                tokio_stream::wrappers::ReceiverStream::new(rx),
                            );
                            let mut resp = http::Response::new(body);
                            resp.headers_mut()
                                .insert("x-upstream", http::HeaderValue::from_static(name));
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    addr
}

/// Least-request weighs a request whose answer has not begun (queued or in prefill on an
/// engine) more than one whose answer is streaming: a new prompt sent behind a prefill waits
/// for it, one sent beside decoding requests hardly does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_pods_whose_answers_have_not_begun() {
    let held = HeldBodies::default();
    let a = held_upstream("a", held.clone()).await;
    let b = held_upstream("b", held.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(
        dir.path(),
        &format!(
            "pools:\n  - name: fleet\n    endpoints: [\"{a}\", \"{b}\"]\n    \
             strategy: least-request\n    metrics: {{enabled: false}}\n"
        ),
    );
    let c = client();
    let send = |mode: &'static str| {
        let req = http::Request::post(format!("http://{}/pool/v1/chat/completions", gw.addr))
            .header("content-type", "application/json")
            .header("x-mode", mode)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        c.request(req)
    };
    let upstream = |r: &http::Response<hyper::body::Incoming>| {
        r.headers()["x-upstream"].to_str().unwrap().to_string()
    };
    // One answer streaming on one pod; its first byte has reached the client.
    let mut streaming = send("answer").await.unwrap();
    let first = streaming.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(
        first.data_ref().unwrap(),
        &Bytes::from_static(b"data: {}\n\n")
    );
    let busy = upstream(&streaming);
    // The other pod is idle, so the next request goes there and is not answered.
    let waiting = send("hold").await.unwrap();
    assert_ne!(upstream(&waiting), busy);
    // Both pods have one request in flight, but the one not yet answered weighs more:
    // every further pick goes to the pod that is only decoding (a tie would be 1 in 2^10).
    for _ in 0..10 {
        let r = send("whole").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(upstream(&r), busy);
        r.into_body().collect().await.unwrap();
    }
    drop((streaming, waiting));
    held.lock().unwrap().clear();
}
