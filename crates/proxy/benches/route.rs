//! What routing costs per request: a listener with path routes only, and one with 100 routes
//! told apart by the model in the body (half exact names, half patterns), the model read from
//! a typical chat body included. `cargo bench -p switchyard-proxy --bench route`.

use std::sync::Arc;
use std::time::Instant;

use proxy::routes::{Matcher, RouteTable};

fn matcher(json: &str) -> Matcher {
    Matcher::compile(&serde_json::from_str(json).unwrap()).unwrap()
}

fn time(name: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / iterations as f64);
    }
    eprintln!("{name:<44} {best:>8.0} ns (best of 5 x {iterations})");
}

fn main() {
    let body = br#"{"model":"model-73","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark, and keep it short please."}],"max_tokens":64,"temperature":0.2,"stream":false}"#;
    let parts = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(())
        .unwrap()
        .into_parts()
        .0;

    let by_path = RouteTable::new(vec![
        (
            vec![],
            vec![matcher(r#"{"path": {"pathPrefix": "/v1"}}"#)],
            Arc::new(0),
        ),
        (
            vec![],
            vec![matcher(r#"{"path": {"pathPrefix": "/health"}}"#)],
            Arc::new(1),
        ),
    ]);
    let by_model = RouteTable::new(
        (0..100)
            .map(|i| {
                let m = if i % 2 == 0 {
                    format!(r#"{{"path": {{"pathPrefix": "/v1"}}, "model": {{"exact": "model-{i}"}}}}"#)
                } else {
                    format!(r#"{{"path": {{"pathPrefix": "/v1"}}, "model": {{"regex": "model-{i}(-.*)?"}}}}"#)
                };
                (vec![], vec![matcher(&m)], Arc::new(i))
            })
            .collect(),
    );
    assert_eq!(
        **by_model.find(None, &parts, Some("model-73")).unwrap().route,
        73
    );

    time("path routing (2 routes)", 200_000, || {
        std::hint::black_box(by_path.find(None, &parts, None));
    });
    time("model read from the body", 200_000, || {
        std::hint::black_box(llm::model_in_body(std::hint::black_box(body)));
    });
    time("model routing (100 routes, model-73)", 200_000, || {
        std::hint::black_box(by_model.find(None, &parts, Some("model-73")));
    });
    time("model routing + read (100 routes)", 200_000, || {
        let model = llm::model_in_body(std::hint::black_box(body));
        std::hint::black_box(by_model.find(None, &parts, model.as_deref()));
    });
}
