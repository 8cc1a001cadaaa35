//! Telemetry from real traffic through the `switchyard` binary: the seeds' `logging` and
//! `tracing` blocks unchanged, spans received by a real OTLP collector (the generated
//! `opentelemetry-proto` gRPC server, and an OTLP/HTTP endpoint), metrics scraped from
//! `/metrics`, and a dead collector that costs requests nothing.

mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{free_port, http, http_with, test_pki, wait_until, Proc, BIN};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Spans a collector received.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Span>>>);

impl Received {
    fn take(&self, req: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap();
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC collector on 127.0.0.1:0.
async fn grpc_collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    (addr, received)
}

/// An OTLP/HTTP collector (`POST /v1/traces`, protobuf) on 127.0.0.1:0.
async fn http_collector() -> (SocketAddr, Received) {
    use http_body_util::BodyExt;
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let r = r.clone();
                        async move {
                            let ok = req.uri().path() == "/v1/traces"
                                && req.headers()["content-type"] == "application/x-protobuf";
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let status = match prost::Message::decode(body) {
                                Ok(msg) if ok => {
                                    r.take(msg);
                                    200
                                }
                                _ => 400,
                            };
                            let mut resp =
                                http::Response::new(http_body_util::Full::new(Bytes::new()));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
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
    (addr, received)
}

/// An upstream that answers every request with the headers it received, as JSON.
async fn echo_headers() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let headers: HashMap<String, String> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect();
                        let body = serde_json::to_vec(&headers).unwrap();
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from(body)),
                        ))
                    },
                );
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

/// The gateway with stdout (the access log) read line by line.
fn run_gateway(file: &std::path::Path, envs: &[(&str, &str)]) -> (Proc, mpsc::Receiver<String>) {
    let mut cmd = Command::new(BIN);
    cmd.arg("-f")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Proc(child), rx)
}

fn next_line(rx: &mpsc::Receiver<String>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(_) => continue,
            Err(_) => panic!("no access log line for {what}"),
        }
    }
}

/// Parses the text format: `key=value` pairs, values quoted as JSON strings when needed.
fn logfmt(line: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        let (value, tail) = if after.starts_with('"') {
            let mut de = serde_json::Deserializer::from_str(after).into_iter::<String>();
            let v = de.next().unwrap().unwrap();
            (v, &after[de.byte_offset()..])
        } else {
            match after.split_once(' ') {
                Some((v, t)) => (v.to_string(), t),
                None => (after.to_string(), ""),
            }
        };
        out.insert(key.to_string(), value);
        rest = tail.trim_start();
    }
    out
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Av::StringValue(s) => s.clone(),
            Av::IntValue(i) => i.to_string(),
            Av::DoubleValue(d) => d.to_string(),
            Av::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

fn metrics(stats: SocketAddr) -> String {
    http(stats, "GET", "/metrics", "").unwrap().1
}

/// A sample of `name` (with or without labels) whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// The seeds' example config, unchanged but for hosts and ports: its `logging` block gives the
/// access log its fields, its `tracing` block the span's; metrics count the call.
#[test]
fn the_seeds_logging_and_tracing_blocks_produce_their_fields() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, tls) = test_pki(&["dashscope.aliyuncs.com", "127.0.0.1"]);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let (provider, (collector, received)) = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = sim::openai::serve_tls(
            l,
            tls,
            sim::openai::Options {
                api_key: Some("sk-seed-telemetry".into()),
                ..Default::default()
            },
        );
        (p, grpc_collector().await)
    });
    let (llm_port, mcp_port, admin, stats) = (free_port(), free_port(), free_port(), free_port());
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/seed.yaml"
    ))
    .unwrap()
    .replace("127.0.0.1:8443", &provider.addr.to_string())
    .replace("http://127.0.0.1:4317", &format!("http://{collector}"))
    .replace("port: 3100", &format!("port: {llm_port}"))
    .replace("port: 3101", &format!("port: {mcp_port}"))
    .replace(
        "adminAddr: \"127.0.0.1:15000\"",
        &format!("adminAddr: \"127.0.0.1:{admin}\"\n  statsAddr: 127.0.0.1:{stats}"),
    );
    let file = dir.path().join("seed.yaml");
    std::fs::write(&file, seed).unwrap();
    let ca = ca_file.to_string_lossy().to_string();
    let (_gw, lines) = run_gateway(
        &file,
        &[
            ("DASHSCOPE_API_KEY", "sk-seed-telemetry"),
            ("MCP_TOKEN", "t"),
            ("SSL_CERT_FILE", &ca),
        ],
    );
    let gw = SocketAddr::from(([127, 0, 0, 1], llm_port));
    wait_until("the gateway", Duration::from_secs(10), || {
        std::net::TcpStream::connect(gw).is_ok()
    });

    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (status, _) = http_with(
        gw,
        "POST",
        "/compatible-mode/v1/chat/completions",
        &[("traceparent", &traceparent)],
        r#"{"model": "any-model-name", "temperature": 0.3, "messages": [{"role": "user", "content": "Hello!"}]}"#,
    )
    .unwrap();
    assert_eq!(status, 200);

    // The access log line: defaults, plus every field the seed's `logging` block names.
    let line = next_line(&lines, "the chat call", |l| {
        l.contains("/compatible-mode/v1/chat/completions")
    });
    let f = logfmt(&line);
    assert_eq!(f["method"], "POST");
    assert_eq!(f["status"], "200");
    assert_eq!(f["backend"], "qwen-plus");
    assert_eq!(f["upstream"], provider.addr.to_string());
    assert_eq!(f["trace_id"], TRACE_ID, "the caller's trace");
    assert!(f["duration_ms"].parse::<f64>().unwrap() > 0.0);
    assert!(f["bytes_out"].parse::<u64>().unwrap() > 100);
    assert!(f["bytes_in"].parse::<u64>().unwrap() > 50);
    assert_eq!(f["gen_ai.provider.name"], "openai");
    assert_eq!(f["gen_ai.request.model"], "any-model-name");
    assert_eq!(f["gen_ai.response.model"], "qwen-plus");
    assert!(f["gen_ai.usage.input_tokens"].parse::<u64>().unwrap() > 0);
    assert_eq!(f["span.name"], "openai.chat");
    assert_eq!(f["llm.system"], "openai");
    assert_eq!(f["llm.params.temperature"], "0.3");
    assert_eq!(f["llm.input_messages.0.message.role"], "user");
    assert_eq!(f["llm.input_messages.0.message.content"], "Hello!");
    assert_eq!(f["gen_ai.prompt.0.role"], "user");
    assert_eq!(f["gen_ai.prompt.0.content"], "Hello!");
    assert_eq!(f["llm.output_messages.0.role"], "assistant");
    assert!(f["llm.output_messages.0.content"].contains("Hello!"));
    assert!(f["llm.completion"].contains("Hello!"));
    assert!(f["request.body"].contains("any-model-name"));
    assert!(f["request.headers"].contains("traceparent"));
    assert!(f["request.response.body"].contains("chat.completion"));
    assert!(
        !line.contains("sk-seed-telemetry"),
        "no credential in the log: {line}"
    );

    // A streamed call: usage read from the stream, time to first token measured.
    let (status, body) = http(
        gw,
        "POST",
        "/compatible-mode/v1/chat/completions",
        r#"{"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Stream please"}]}"#,
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("[DONE]"));
    let line = next_line(&lines, "the streamed call", |l| {
        l.contains("gen_ai.response.streaming=true")
    });
    let f = logfmt(&line);
    assert!(f["gen_ai.usage.output_tokens"].parse::<u64>().unwrap() > 0);
    assert!(f["llm.completion"].contains("Stream please"));

    // The span, at the collector.
    wait_until("the spans", Duration::from_secs(10), || {
        received.spans().len() >= 2
    });
    let spans = received.spans();
    let span = spans
        .iter()
        .find(|s| hex(&s.trace_id) == TRACE_ID)
        .expect("a span in the caller's trace");
    assert_eq!(span.name, "openai.chat", "span.name from the seed's fields");
    assert_eq!(hex(&span.parent_span_id), PARENT_ID);
    assert_eq!(span.kind, 2, "SERVER");
    assert!(span.end_time_unix_nano > span.start_time_unix_nano);
    assert_eq!(attr(span, "gen_ai.operation.name").as_deref(), Some("chat"));
    assert_eq!(
        attr(span, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(
        attr(span, "gen_ai.request.model").as_deref(),
        Some("any-model-name")
    );
    assert_eq!(
        attr(span, "gen_ai.response.model").as_deref(),
        Some("qwen-plus")
    );
    assert_eq!(
        attr(span, "gen_ai.request.temperature").as_deref(),
        Some("0.3")
    );
    assert!(
        attr(span, "gen_ai.usage.input_tokens")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(
        attr(span, "gen_ai.usage.output_tokens")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(
        attr(span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(span, "llm.system").as_deref(), Some("openai"));
    assert_eq!(
        attr(span, "llm.input_messages.0.message.content").as_deref(),
        Some("Hello!")
    );
    assert!(
        spans.iter().any(|s| hex(&s.trace_id) != TRACE_ID),
        "randomSampling: new traces too"
    );

    // Metrics for both calls.
    let text = metrics(SocketAddr::from(([127, 0, 0, 1], stats)));
    let bind = format!("bind=\"{llm_port}\"");
    assert!(
        sample(
            &text,
            "switchyard_requests_total",
            &[&bind, "status=\"200\"", "backend=\"qwen-plus\""]
        )
        .unwrap()
            >= 2.0,
        "{text}"
    );
    assert!(sample(&text, "switchyard_request_duration_seconds_count", &[&bind]).unwrap() >= 2.0);
    assert!(
        sample(
            &text,
            "gen_ai_client_token_usage_token_count",
            &[
                "gen_ai_token_type=\"input\"",
                "gen_ai_response_model=\"qwen-plus\"",
                "gen_ai_provider_name=\"openai\""
            ]
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert!(sample(
        &text,
        "gen_ai_client_token_usage_token_count",
        &["gen_ai_token_type=\"output\""]
    )
    .is_some());
    assert!(
        sample(
            &text,
            "gen_ai_client_operation_duration_seconds_count",
            &["gen_ai_request_model=\"any-model-name\""]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &text,
            "gen_ai_server_time_to_first_token_seconds_count",
            &["gen_ai_request_model=\"m\""]
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert!(sample(
        &text,
        "gen_ai_server_time_per_output_token_seconds_count",
        &[]
    )
    .is_some());
    assert!(
        sample(
            &text,
            "switchyard_upstream_connect_duration_seconds_count",
            &[&format!("upstream=\"{}\"", provider.addr)]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &text,
            "switchyard_upstream_call_duration_seconds_count",
            &["backend=\"qwen-plus\""]
        )
        .unwrap()
            >= 2.0
    );
    assert!(text.contains("switchyard_downstream_connections_open{"));
    assert!(text.contains("switchyard_trace_spans_exported_total"));
    assert!(!text.contains("sk-seed-telemetry"));
    drop(provider);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// JSON lines, a CEL filter, trace context to a plain upstream, and a collector that is down.
#[test]
fn json_lines_filter_propagation_and_a_dead_collector() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echo = rt.block_on(echo_headers());
    let dead = free_port(); // nothing listens here
    let (port, admin, stats) = (free_port(), free_port(), free_port());
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
  limits:
    maxRequestBodyBytes: 1024
  logging:
    format: json
    filter: 'response.code >= 400 || request.path == "/logged"'
    fields:
      add:
        tenant: 'default(request.headers["x-tenant"], "none")'
        agent: 'request.headers["user-agent"]'
      remove: [bytes_in]
  tracing:
    otlpEndpoint: http://127.0.0.1:{dead}
    randomSampling: true
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - name: echo
      matches: [{{path: {{pathPrefix: /}}}}]
      backends:
      - host: {echo}
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (_gw, lines) = run_gateway(&file, &[]);
    let gw = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("the gateway", Duration::from_secs(10), || {
        std::net::TcpStream::connect(gw).is_ok()
    });

    // Trace context reaches the upstream: a new trace (no traceparent came in), sampled.
    let (status, body) = http(gw, "GET", "/quiet", "").unwrap();
    assert_eq!(status, 200);
    let seen: HashMap<String, String> = serde_json::from_str(&body).unwrap();
    let tp = &seen["traceparent"];
    assert!(
        tp.starts_with("00-") && tp.ends_with("-01") && tp.len() == 55,
        "{tp}"
    );
    // An incoming trace continues upstream, under the gateway's own span.
    let incoming = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (_, body) = http_with(
        gw,
        "GET",
        "/logged",
        &[("traceparent", &incoming), ("x-tenant", "acme")],
        "",
    )
    .unwrap();
    let seen: HashMap<String, String> = serde_json::from_str(&body).unwrap();
    assert!(seen["traceparent"].starts_with(&format!("00-{TRACE_ID}-")));
    assert!(!seen["traceparent"].contains(PARENT_ID));

    // Only what the filter lets through is logged, as JSON.
    let line = next_line(&lines, "/logged", |l| l.contains("/logged"));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["path"], "/logged");
    assert_eq!(v["route"], "echo");
    assert_eq!(v["trace_id"], TRACE_ID);
    assert_eq!(v["tenant"], "acme");
    assert!(v.get("bytes_in").is_none(), "removed by fields.remove");
    assert!(
        v.get("agent").is_none(),
        "a field whose expression fails is left out"
    );
    let (status, _) = http(gw, "GET", "/missing?x", "").unwrap();
    assert_eq!(status, 200, "the echo answers everything");
    // A gateway error is logged: `response.code >= 400`.
    let (status, _) = http(gw, "POST", "/upload", &"x".repeat(2048)).unwrap();
    assert_eq!(status, 413);
    let line = next_line(&lines, "the 413", |l| l.contains("/upload"));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], 413);
    assert_eq!(v["error"], "payload_too_large");
    assert_eq!(v["tenant"], "none", "default() when the header is absent");
    assert!(v.get("trace_id").is_some());
    // Nothing else was logged: the two 200s outside the filter are absent.
    assert!(lines
        .try_iter()
        .all(|l| !l.contains("/quiet") && !l.contains("/missing")));

    // The collector is down: spans are dropped and counted, requests are unaffected.
    let stats = SocketAddr::from(([127, 0, 0, 1], stats));
    wait_until(
        "dropped spans to be counted",
        Duration::from_secs(10),
        || {
            sample(&metrics(stats), "switchyard_trace_spans_dropped_total", &[])
                .is_some_and(|n| n >= 4.0)
        },
    );
    let t = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(http(gw, "GET", "/quiet", "").unwrap().0, 200);
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a dead collector must not slow requests"
    );
}

/// OTLP over HTTP (protobuf) instead of gRPC.
#[test]
fn spans_export_over_otlp_http() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (echo, (collector, received)) =
        rt.block_on(async { (echo_headers().await, http_collector().await) });
    let (port, admin, stats) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "config:\n  adminAddr: 127.0.0.1:{admin}\n  statsAddr: 127.0.0.1:{stats}\n  tracing:\n    otlpEndpoint: http://{collector}\n    otlpProtocol: http\n    randomSampling: 1.0\n    fields:\n      add:\n        tenant: 'request.headers[\"x-tenant\"]'\nbinds:\n- port: {port}\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - name: echo\n      backends:\n      - host: {echo}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (_gw, _lines) = run_gateway(&file, &[]);
    let gw = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("the gateway", Duration::from_secs(10), || {
        std::net::TcpStream::connect(gw).is_ok()
    });
    assert_eq!(
        http_with(gw, "GET", "/hello", &[("x-tenant", "t1")], "")
            .unwrap()
            .0,
        200
    );
    wait_until("the span", Duration::from_secs(10), || {
        !received.spans().is_empty()
    });
    let span = &received.spans()[0];
    assert_eq!(span.name, "GET echo", "method and route");
    assert_eq!(attr(span, "url.path").as_deref(), Some("/hello"));
    assert_eq!(attr(span, "http.route").as_deref(), Some("echo"));
    assert_eq!(attr(span, "tenant").as_deref(), Some("t1"));
    assert_eq!(attr(span, "http.request.method").as_deref(), Some("GET"));
}

/// Each backend failover left is a span event naming it and why, timed within the span.
#[test]
fn failover_attempts_are_span_events() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (echo, (collector, received)) =
        rt.block_on(async { (echo_headers().await, http_collector().await) });
    let (port, dead) = (free_port(), free_port());
    let yaml = format!(
        "config:\n  tracing:\n    otlpEndpoint: http://{collector}\n    otlpProtocol: http\n    randomSampling: 1.0\nbinds:\n- port: {port}\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - name: echo\n      policies:\n        failover: {{on: [connect]}}\n      backends:\n      - host: 127.0.0.1:{dead}\n        weight: 1\n      - host: {echo}\n        weight: 0\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (_gw, _lines) = run_gateway(&file, &[]);
    let gw = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("the gateway", Duration::from_secs(10), || {
        std::net::TcpStream::connect(gw).is_ok()
    });
    assert_eq!(http(gw, "GET", "/hello", "").unwrap().0, 200);
    wait_until("the span", Duration::from_secs(10), || {
        !received.spans().is_empty()
    });
    let span = &received.spans()[0];
    assert_eq!(span.events.len(), 1, "{:?}", span.events);
    let e = &span.events[0];
    assert_eq!(e.name, "switchyard.attempt.failed");
    let ev_attr = |k: &str| {
        e.attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.clone()?.value)
    };
    assert_eq!(
        ev_attr("switchyard.backend"),
        Some(Av::StringValue(format!("127.0.0.1:{dead}")))
    );
    assert_eq!(
        ev_attr("switchyard.failover.reason"),
        Some(Av::StringValue("connect".into()))
    );
    assert!(
        (span.start_time_unix_nano..=span.end_time_unix_nano).contains(&e.time_unix_nano),
        "the event is within its span"
    );
}

/// A response guard's refusal of a whole answer is logged with its status and its error code.
#[test]
fn a_response_guards_refusal_is_logged_with_its_code() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt
        .block_on(sim::openai::spawn(sim::openai::Options::default()))
        .unwrap();
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  logging:
    format: json
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - name: guarded
      policies:
        guardrails:
          response: [{{name: tickets, regex: {{patterns: ['TICKET-[0-9]{{4}}']}}, action: reject}}]
      backends:
      - ai: {{name: p, hostOverride: '{up}', provider: {{openAI: {{}}}}}}
"#,
        up = sim.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (_gw, lines) = run_gateway(&file, &[]);
    let gw = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("the gateway", Duration::from_secs(10), || {
        std::net::TcpStream::connect(gw).is_ok()
    });
    let body = r#"{"model":"m","messages":[{"role":"user","content":"about TICKET-1234"}]}"#;
    let json = [("content-type", "application/json")];
    let (status, answer) = http_with(gw, "POST", "/v1/chat/completions", &json, body).unwrap();
    assert_eq!(status, 400, "{answer}");
    let line = next_line(&lines, "the refusal", |l| {
        l.contains("/v1/chat/completions")
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], 400, "{line}");
    assert_eq!(v["error"], "guardrail_rejected", "{line}");
    assert!(!line.contains("TICKET-1234"), "{line}");
}
