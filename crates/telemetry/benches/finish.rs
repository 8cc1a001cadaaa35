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
    eprintln!("{:<24} {:>12} {:>12}", "", "plain ns", "ai ns");
    for (name, yaml) in &configs {
        if only.as_ref().is_some_and(|o| name != o) {
            continue;
        }
        let t = telemetry(yaml, &exporters);
        let mut row = Vec::new();
        for llm in [false, true] {
            let n = 200_000u64;
            let records: Vec<RequestRecord> = (0..n).map(|i| record(llm, i)).collect();
            // Warm-up, then the best of three runs (other threads share the machine).
            let mut best = Duration::MAX;
            let mut records = records.into_iter();
            for run in 0..4 {
                let batch: Vec<RequestRecord> = records.by_ref().take(n as usize / 4).collect();
                let count = batch.len() as u32;
                let start = Instant::now();
                for rec in batch {
                    t.finish(rec);
                }
                if run > 0 {
                    best = best.min(start.elapsed() / count);
                }
                // Let the writer and exporter catch up between runs.
                std::thread::sleep(Duration::from_millis(100));
            }
            row.push(best.as_nanos());
        }
        eprintln!("{name:<24} {:>12} {:>12}", row[0], row[1]);
    }
    telemetry::access::flush();
}
