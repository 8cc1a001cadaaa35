//! What telemetry costs a request on its own thread: `Telemetry::finish` on records shaped like
//! the benchmark harness's (a proxied chat request, and an `ai` one with usage), with metrics
//! only, the access log, tracing, and both. The access-log writer and the span exporter run on
//! other threads and are not in these figures; `bench/run.sh` prices the whole process.
//!
//! The access log goes to standard output: `cargo bench -p switchyard-telemetry >/dev/null`
//! (the figures are printed on standard error).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use telemetry::{ExporterCache, LlmRecord, RequestRecord, Telemetry, TraceContext};

fn record(llm: bool, i: u64) -> RequestRecord {
    let mut r = RequestRecord::new(
        http::Method::POST,
        http::Uri::from_static("/v1/chat/completions"),
        http::Version::HTTP_11,
        std::net::SocketAddr::from(([127, 0, 0, 1], 40000 + (i % 1000) as u16)),
        Arc::from("8080"),
    );
    r.start = Instant::now() - Duration::from_micros(600);
    r.start_time = SystemTime::now();
    r.listener = Some(Arc::from("listener0"));
    r.route = Some(Arc::from("binds[0].listeners[0].routes[5]"));
    r.backend = Some(Arc::from("127.0.0.1:41573"));
    r.upstream = Some(Arc::from("127.0.0.1:41573"));
    r.request_id = Some(http::HeaderValue::from_static(
        "19864018-7680-4f82-a2cb-b91269d4c612",
    ));
    r.trace = Some(TraceContext {
        trace_id: [0x0a; 16],
        span_id: (i + 1).to_be_bytes(),
        parent_span_id: None,
        sampled: true,
    });
    r.status = 200;
    r.bytes_in = 148;
    r.bytes_out = 613;
    if llm {
        r.backend_kind = Some("ai");
        r.llm = Some(LlmRecord {
            provider: "openai",
            operation: "chat",
            request_model: Some("bench-model".into()),
            response_model: Some("gpt-4o-mini-2024-07-18".into()),
            input_tokens: Some(13),
            output_tokens: Some(9),
            prompt: vec![("user".into(), "Say hello in one word.".into())],
            ..Default::default()
        });
    }
    r
}

fn telemetry(yaml: &str, exporters: &ExporterCache) -> Telemetry {
    let loaded = config::load_str(yaml, "bench.yaml".as_ref(), ".".as_ref(), |_| None)
        .expect("bench config");
    Telemetry::compile(&loaded.config.config, exporters).expect("bench telemetry")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    // A closed port: spans are encoded and queued as usual, then dropped by the exporter.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let logging = "  logging:\n    format: json\n    fields:\n      add:\n        llm.system: 'llm.provider'\n";
    let tracing = format!(
        "  tracing:\n    otlpEndpoint: http://{dead}\n    otlpProtocol: http\n    randomSampling: true\n    fields:\n      add:\n        llm.system: 'llm.provider'\n"
    );
    let configs = [
        ("metrics only", String::from("config: {}\n")),
        ("access log", format!("config:\n{logging}")),
        ("tracing", format!("config:\n{tracing}")),
        (
            "access log + tracing",
            format!("config:\n{logging}{tracing}"),
        ),
    ];
    // `cargo bench ... -- NAME`: only the config called NAME (for a profiler).
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let exporters = ExporterCache::default();
    let compiled: Vec<(&str, Telemetry)> = configs
        .iter()
        .filter(|(name, _)| only.as_ref().is_none_or(|o| name == o))
        .map(|(name, yaml)| (*name, telemetry(yaml, &exporters)))
        .collect();
    // Rounds interleave the configs, so drift on the machine lands on all of them; each
    // figure is the best round (other threads and processes share the machine).
    const ROUNDS: usize = 7;
    const PER_ROUND: u64 = 20_000;
    let mut best = vec![[Duration::MAX; 2]; compiled.len()];
    for round in 0..ROUNDS {
        for (c, (_, t)) in compiled.iter().enumerate() {
            for (k, llm) in [false, true].into_iter().enumerate() {
                let records: Vec<RequestRecord> = (0..PER_ROUND).map(|i| record(llm, i)).collect();
                let start = Instant::now();
                for rec in records {
                    let elapsed = rec.start.elapsed();
                    t.finish(rec, elapsed);
                }
                let per = start.elapsed() / PER_ROUND as u32;
                // The first round warms up.
                if round > 0 {
                    best[c][k] = best[c][k].min(per);
                }
                // Let the writer and the exporter catch up.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    eprintln!("{:<24} {:>12} {:>12}", "ns per request", "plain", "ai");
    for ((name, _), [plain, ai]) in compiled.iter().zip(&best) {
        eprintln!("{name:<24} {:>12} {:>12}", plain.as_nanos(), ai.as_nanos());
    }
    telemetry::access::flush();
}
