//! `failover` through a real gateway in front of the provider simulators: a failing deployment
//! hands the request to the next one (another provider's dialect included), a 429 rests the
//! deployment for its `retry-after`, repeated failures open its circuit and a probe closes it,
//! and a stream that already sent bytes is not retried.

mod common;

use std::time::Duration;

use common::*;
use http::Request;
use serde_json::{json, Value};

/// A route with an OpenAI-format deployment and the Anthropic simulator as its standby
/// (weight 0: only failed over to).
fn two_deployments(
    first: std::net::SocketAddr,
    second: std::net::SocketAddr,
    failover: &str,
) -> String {
    format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - name: chat\n      policies:\n        failover: {failover}\n      backends:\n      - weight: 1\n        ai: {{name: openai-east, hostOverride: '{first}', provider: {{openAI: {{}}}}}}\n      - weight: 0\n        ai: {{name: anthropic-west, hostOverride: '{second}', provider: {{anthropic: {{}}}}, policies: {{ai: {{modelAliases: {{'*': claude-sim-1}}}}}}}}\n"
    )
}

fn chat(stream: bool) -> Request<TestBody> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(full(
            json!({"model": "sim-gpt", "stream": stream, "max_tokens": 20,
                   "messages": [{"role": "user", "content": "Hello there"}]})
            .to_string(),
        ))
        .unwrap()
}

fn failovers(backend: &str, reason: &str) -> u64 {
    let text = telemetry::Metrics::global().encode();
    let needle = format!(
        r#"switchyard_failovers_total{{route="chat",backend="{backend}",reason="{reason}"}} "#
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn a_429_fails_over_to_another_provider_and_rests_the_deployment() {
    let limited = sim::openai::spawn(sim::openai::Options {
        fault: Some(sim::Fault::RateLimit),
        ..Default::default()
    })
    .await
    .unwrap();
    let anthropic = sim::anthropic::spawn(sim::anthropic::Options::default())
        .await
        .unwrap();
    let (_gw, addr) = gateway(&two_deployments(
        limited.addr,
        anthropic.addr,
        "{cooldown: 5s}",
    ))
    .await;

    // The OpenAI caller's answer comes from the Anthropic simulator, translated back.
    let r = send(addr, chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Hello there"));
    let before = failovers("openai-east", "rate_limited");
    assert!(before >= 1);

    // The 429 put openai-east in cooldown (the simulator's retry-after: 1 s): skipped now.
    let skipped = failovers("openai-east", "cooldown");
    let r = send(addr, chat(false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(failovers("openai-east", "cooldown"), skipped + 1);
    assert_eq!(
        failovers("openai-east", "rate_limited"),
        before,
        "not tried while resting"
    );

    // After the retry-after it is tried again (and fails over again).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = send(addr, chat(false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(failovers("openai-east", "rate_limited"), before + 1);

    // Streams fail over too while no byte has reached the client.
    let r = send(addr, chat(true)).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("data: [DONE]"), "{}", r.text());
}

#[tokio::test]
async fn repeated_failures_open_the_circuit_and_all_resting_is_a_503_with_retry_after() {
    let broken = sim::openai::spawn(sim::openai::Options {
        fault: Some(sim::Fault::ServerError),
        ..Default::default()
    })
    .await
    .unwrap();
    let anthropic = sim::anthropic::spawn(sim::anthropic::Options {
        fault: Some(sim::Fault::Overloaded),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_gw, addr) = gateway(&two_deployments(
        broken.addr,
        anthropic.addr,
        "{circuit: {failures: 2, openFor: 300ms}}",
    ))
    .await;
    // Both deployments fail: the caller gets the last real answer (Anthropic's 529, as an
    // OpenAI error), not a gateway error.
    let r = send(addr, chat(false)).await;
    assert_eq!(r.status.as_u16(), 529, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "overloaded_error");
    let r = send(addr, chat(false)).await;
    assert_eq!(r.status.as_u16(), 529);
    // Two failures each: both circuits are open; nothing is tried, the gateway says how long.
    let r = send(addr, chat(false)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.json()["error"]["code"],
        "upstream_unavailable",
        "{}",
        r.text()
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(failovers("openai-east", "circuit_open") >= 1);
    // Half open after 300 ms: one probe goes through (and fails again here).
    tokio::time::sleep(Duration::from_millis(350)).await;
    let before = failovers("openai-east", "server_error");
    let _ = send(addr, chat(false)).await;
    assert_eq!(
        failovers("openai-east", "server_error"),
        before + 1,
        "the probe was sent"
    );
}

#[tokio::test]
async fn a_stream_that_already_sent_bytes_is_not_retried() {
    let resetting = sim::openai::spawn(sim::openai::Options {
        fault: Some(sim::Fault::Reset),
        ..Default::default()
    })
    .await
    .unwrap();
    let anthropic = sim::anthropic::spawn(sim::anthropic::Options::default())
        .await
        .unwrap();
    let (_gw, addr) = gateway(&two_deployments(resetting.addr, anthropic.addr, "{}")).await;
    let r = send(addr, chat(true)).await;
    // The headers and the first events were the caller's already: the break is an error
    // event in the stream, and the other deployment is not asked.
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("\"error\""), "{text}");
    assert!(!text.contains("claude-sim"), "{text}");
}

#[tokio::test]
async fn a_stream_that_does_not_start_in_time_moves_to_the_next_deployment() {
    // Headers at once, the first token only after 3 s.
    let slow = sim::openai::spawn(sim::openai::Options {
        time_to_first_token: Duration::from_secs(3),
        ..Default::default()
    })
    .await
    .unwrap();
    let anthropic = sim::anthropic::spawn(sim::anthropic::Options::default())
        .await
        .unwrap();
    let (_gw, addr) = gateway(&two_deployments(
        slow.addr,
        anthropic.addr,
        "{firstByteTimeout: 300ms}",
    ))
    .await;
    let before = failovers("openai-east", "timeout");
    let t = std::time::Instant::now();
    let r = send(addr, chat(true)).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("data: [DONE]"), "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(failovers("openai-east", "timeout"), before + 1);
}

#[tokio::test]
async fn prefix_affinity_keeps_a_conversation_on_one_deployment() {
    let (a, b) = (echo("east").await, echo("west").await);
    let yaml = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - policies:\n        balance: {{strategy: prefixAffinity}}\n      backends:\n      - ai: {{name: east, hostOverride: '{}', provider: {{openAI: {{}}}}}}\n      - ai: {{name: west, hostOverride: '{}', provider: {{openAI: {{}}}}}}\n",
        a.addr, b.addr
    );
    let (_gw, addr) = gateway(&yaml).await;
    let ask = |system: String, turn: usize| {
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(full({
                // Every turn resends the conversation so far.
                let mut messages = vec![
                    json!({"role": "system", "content": system}),
                    json!({"role": "user", "content": "first question"}),
                ];
                for t in 0..turn {
                    messages.push(json!({"role": "assistant", "content": format!("answer {t}")}));
                    messages.push(json!({"role": "user", "content": format!("question {t}")}));
                }
                json!({"model": "m", "temperature": turn, "messages": messages}).to_string()
            }))
            .unwrap()
    };
    let mut seen = std::collections::HashSet::new();
    for conversation in 0..12 {
        let system = format!(
            "You are assistant number {conversation}. {}",
            "Be helpful. ".repeat(40)
        );
        let mut upstreams = std::collections::HashSet::new();
        for turn in 0..4 {
            let r = send(addr, ask(system.clone(), turn)).await;
            assert_eq!(r.status, 200, "{}", r.text());
            upstreams.insert(r.header("x-upstream-name").unwrap().to_string());
        }
        assert_eq!(
            upstreams.len(),
            1,
            "conversation {conversation} moved: {upstreams:?}"
        );
        seen.extend(upstreams);
    }
    assert_eq!(
        seen.len(),
        2,
        "both deployments get conversations: {seen:?}"
    );
}

#[tokio::test]
async fn least_request_sends_to_the_idle_deployment() {
    let (a, b) = (echo("one").await, echo("two").await);
    let yaml = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - policies:\n        balance: {{strategy: leastRequest}}\n      backends:\n      - host: '{}'\n      - host: '{}'\n",
        a.addr, b.addr
    );
    let (_gw, addr) = gateway(&yaml).await;
    // Four slow requests at once: two land on each backend (each new one goes to the one
    // with fewer in flight).
    let slow = || send(addr, Request::get("/slow/400").body(full("")).unwrap());
    let (r1, r2, r3, r4) = tokio::join!(slow(), slow(), slow(), slow());
    let mut names: Vec<String> = [r1, r2, r3, r4]
        .iter()
        .map(|r| r.header("x-upstream-name").unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["one", "one", "two", "two"]);
}
