//! Cost of one pick as the gateway pays it: parse the OpenAI body (prompt-reading strategies
//! only), rank an 8-pod pool, commit (prefix tables learn the prompt, in-flight counted).
//!
//! ```text
//! cargo bench -p switchyard-picker --features runtime --bench pick
//! ```
//!
//! prints µs per pick per strategy; the issue's budget is 50 µs. The pool is in the state a
//! busy gateway sees, so every strategy runs its real path, not a fallback:
//!
//! * metrics: each pod has two scrapes of a vLLM `/metrics` page (parsed by the same parser
//!   the scrape loop uses, stored through the same `Pod::set_metrics`), with different running
//!   and waiting requests, KV-cache usage, TTFT/TPOT histograms and generation counters (so
//!   `throughput` has a derived token rate), fresh for the whole run;
//! * in flight: the last 64 picks stay in flight (their guards held), so least-request scores
//!   differ per pod;
//! * prefix tables: 256 groups of ~1,000-word system prompts were routed before timing, so
//!   `prefix-cache` matches against a populated index (and keeps learning while timed).
//!
//! Before timing, each metric-driven strategy must choose the pod the metrics favour (pod 5)
//! over the one least-request would take (pod 0, nothing in flight): if a strategy fell back
//! to least-request, the bench stops with an error instead of timing the fallback.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use picker::pool::{Pool, RequestMeta};
use picker::{MetricsSpec, PoolSpec};

const PODS: usize = 8;
/// The pod the metrics make best (least KV, lowest latency, lowest throughput).
const BEST: usize = 5;

fn body(group: usize, i: usize) -> Vec<u8> {
    // ~1000-word system prompt shared by a group, plus a unique question.
    let system: String = (0..1000).map(|w| format!("g{group}w{w} ")).collect();
    serde_json::json!({
        "model": "sim-llama",
        "stream": true,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": format!("question number {i} about the order")}
        ]
    })
    .to_string()
    .into_bytes()
}

/// A vLLM `/metrics` page (the names and shapes vLLM 0.11 exports) for pod `i`; `generated`
/// is the generation-token counter, so two pages a second apart give a token rate.
fn metrics_page(i: usize, generated: f64) -> String {
    let best = i == BEST;
    let running = if best { 1.0 } else { 12.0 + 4.0 * i as f64 };
    let waiting = if best { 0.0 } else { (i % 3) as f64 * 2.0 };
    let kv = if best { 0.05 } else { 0.9 + 0.01 * i as f64 };
    let (ttft_sum, tpot_sum) = if best { (5.0, 10.0) } else { (40.0, 60.0) };
    let l = r#"{engine="0",model_name="sim-llama"}"#;
    format!(
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
         # TYPE vllm:num_requests_running gauge\n\
         vllm:num_requests_running{l} {running}\n\
         # TYPE vllm:num_requests_waiting gauge\n\
         vllm:num_requests_waiting{l} {waiting}\n\
         # TYPE vllm:kv_cache_usage_perc gauge\n\
         vllm:kv_cache_usage_perc{l} {kv}\n\
         # TYPE vllm:prefix_cache_queries_total counter\n\
         vllm:prefix_cache_queries_total{l} 409600.0\n\
         # TYPE vllm:prefix_cache_hits_total counter\n\
         vllm:prefix_cache_hits_total{l} 307200.0\n\
         # TYPE vllm:generation_tokens_total counter\n\
         vllm:generation_tokens_total{l} {generated}\n\
         # TYPE vllm:time_to_first_token_seconds histogram\n\
         vllm:time_to_first_token_seconds_count{l} 200.0\n\
         vllm:time_to_first_token_seconds_sum{l} {ttft_sum}\n\
         # TYPE vllm:time_per_output_token_seconds histogram\n\
         vllm:time_per_output_token_seconds_count{l} 6000.0\n\
         vllm:time_per_output_token_seconds_sum{l} {tpot_sum}\n"
    )
}

/// A pool of 8 pods with fresh scraped metrics (two scrapes each) and nothing in flight.
fn pool(strategy: &str) -> std::sync::Arc<Pool> {
    let pods: Vec<String> = (0..PODS).map(|i| format!("10.0.0.{i}:8000")).collect();
    let refs: Vec<&str> = pods.iter().map(String::as_str).collect();
    let mut spec = PoolSpec::with_endpoints("bench", &refs);
    // Metrics on (as in the gateway), never stale during the run; no scrape loop is started:
    // the pages below are what it would have stored.
    spec.metrics = Some(MetricsSpec {
        path: "/metrics".into(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        stale_after: Duration::from_secs(3600),
    });
    spec.strategy = strategy.to_string();
    let pool = Pool::new(spec).expect("pool");
    let now = Instant::now();
    for (i, pod) in pool.pods().iter().enumerate() {
        let rate = if i == BEST {
            50.0
        } else {
            1500.0 + 100.0 * i as f64
        };
        let first = picker::metrics::parse_vllm_metrics(&metrics_page(i, 100_000.0), now)
            .expect("metrics page parses");
        let second = picker::metrics::parse_vllm_metrics(
            &metrics_page(i, 100_000.0 + rate),
            now + Duration::from_secs(1),
        )
        .expect("metrics page parses");
        pod.set_metrics(first);
        pod.set_metrics(second);
        let m = pod.metrics().expect("stored");
        assert!(m.generation_tokens_per_second.is_some_and(|r| r > 0.0));
    }
    pool
}

fn main() {
    let bodies: Vec<Vec<u8>> = (0..1024).map(|i| body(i % 256, i)).collect();
    let mixes = ["prefix-cache:2,least-request:1"];
    let strategies = picker::STRATEGIES.iter().chain(&mixes).copied();
    let metric_driven = ["least-kv-cache", "least-latency", "throughput"];
    println!(
        "{:<32} {:>8} {:>14}  state",
        "strategy", "µs/pick", "parse alone"
    );
    for s in strategies {
        let pool = pool(s);
        let mut held: VecDeque<picker::pool::InFlight> = VecDeque::new();
        // Real path check: with requests in flight on every pod but 0, least-request (the
        // fallback) would take pod 0; the metrics make pod 5 best.
        if metric_driven.contains(&s) {
            for pod in pool.pods().iter().skip(1) {
                for _ in 0..3 {
                    let strategy = pool.strategy(None).expect("strategy");
                    let req = picker::PickRequest::default();
                    held.push_back(pool.begin(strategy.as_ref(), &req, pod));
                }
            }
            let mut choice = pool
                .choose(RequestMeta::default(), Some(&bodies[0]))
                .unwrap();
            let (pod, _guard) = choice.next(&pool, 1).unwrap();
            if pod.id.as_str() != format!("10.0.0.{BEST}:8000") {
                eprintln!(
                    "{s}: chose {} instead of the pod its metrics favour (10.0.0.{BEST}:8000): \
                     it is not using the metrics",
                    pod.id
                );
                std::process::exit(1);
            }
            held.clear();
        }
        let mut run = |n: usize, offset: usize| {
            let start = Instant::now();
            for i in offset..offset + n {
                let b = &bodies[i % bodies.len()];
                let session = format!("s{}", i % 64);
                let meta = RequestMeta {
                    session: Some(&session),
                    ..Default::default()
                };
                // The gateway's path: the body is parsed only when the strategy reads it.
                let mut choice = pool.choose(meta, Some(b)).unwrap();
                let (_, guard) = choice.next(&pool, 1).unwrap();
                // The last 64 requests stay in flight.
                held.push_back(guard);
                if held.len() > 64 {
                    held.pop_front();
                }
            }
            start.elapsed()
        };
        run(2048, 0); // populate the prefix tables: every group routed several times
        let n = 5000;
        let took: Duration = run(n, 2048);
        let per = took.as_secs_f64() * 1e6 / n as f64;
        // Parse alone, to show what the ranking itself costs.
        let start = Instant::now();
        for i in 0..n {
            std::hint::black_box(picker::parse_request(&bodies[i % bodies.len()]).unwrap());
        }
        let parse = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        let in_flight: Vec<u32> = pool.pods().iter().map(|p| p.in_flight()).collect();
        let state = if metric_driven.contains(&s) {
            "metrics used (checked)"
        } else {
            "in flight per pod"
        };
        println!("{s:<32} {per:>8.1} {parse:>14.1}  {state} {in_flight:?}");
    }
}
