//! Cost of one pick as the gateway pays it: parse the OpenAI body (prompt-reading strategies
//! only), rank an 8-pod pool, commit (prefix tables learn the prompt, in-flight counted). `cargo bench -p
//! switchyard-picker` prints µs per pick per strategy; the budget is 50 µs.

use std::time::{Duration, Instant};

use picker::pool::{Pool, RequestMeta};
use picker::PoolSpec;

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

fn main() {
    let pods: Vec<String> = (0..8).map(|i| format!("10.0.0.{i}:8000")).collect();
    let refs: Vec<&str> = pods.iter().map(String::as_str).collect();
    let bodies: Vec<Vec<u8>> = (0..256).map(|i| body(i % 32, i)).collect();
    let mixes = ["prefix-cache:2,least-request:1"];
    let strategies = picker::STRATEGIES.iter().chain(&mixes).copied();
    println!("{:<32} {:>8} {:>14}", "strategy", "µs/pick", "parse alone");
    for s in strategies {
        let mut spec = PoolSpec::with_endpoints("bench", &refs);
        spec.metrics = None;
        spec.strategy = s.to_string();
        let pool = Pool::new(spec).unwrap();
        let run = |n: usize| {
            let start = Instant::now();
            for i in 0..n {
                let b = &bodies[i % bodies.len()];
                let session = format!("s{}", i % 64);
                let meta = RequestMeta {
                    session: Some(&session),
                    ..Default::default()
                };
                // The gateway's path: the body is parsed only when the strategy reads it.
                let mut choice = pool.choose(meta, Some(b)).unwrap();
                let guard = choice.next(&pool, 1).unwrap();
                std::hint::black_box(&guard);
            }
            start.elapsed()
        };
        run(500); // warm the prefix tables
        let n = 5000;
        let took: Duration = run(n);
        let per = took.as_secs_f64() * 1e6 / n as f64;
        // Parse alone, to show what the ranking itself costs.
        let start = Instant::now();
        for i in 0..n {
            std::hint::black_box(picker::parse_request(&bodies[i % bodies.len()]).unwrap());
        }
        let parse = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("{s:<32} {per:>8.1} {parse:>14.1}");
    }
}
