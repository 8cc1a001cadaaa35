//! Fault injection through `x-sim-fault` and `Options::fault`, on both simulators.

mod common;

use std::time::{Duration, Instant};

use common::{keys, parse_sse, post};
use serde_json::{json, Value};
use sim::{anthropic, openai, Fault};

const V: (&str, &str) = ("anthropic-version", "2023-06-01");
const CHAT: &str = "/v1/chat/completions";

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream,
           "messages": [{"role": "user", "content": "a reply long enough to stream in several events"}]})
}

fn message(stream: bool) -> Value {
    json!({"model": "m", "max_tokens": 100, "stream": stream,
           "messages": [{"role": "user", "content": "a reply long enough to stream in several events"}]})
}

#[tokio::test]
async fn rate_limit_uses_each_providers_error_shape_and_retry_after() {
    let oai = openai::spawn(Default::default()).await.unwrap();
    let r = post(oai.addr, CHAT, &[("x-sim-fault", "429")], &chat(false)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    let err = r.json();
    assert_eq!(keys(&err["error"]), ["message", "type", "param", "code"]);
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");

    let ant = anthropic::spawn(Default::default()).await.unwrap();
    let r = post(
        ant.addr,
        "/v1/messages",
        &[V, ("x-sim-fault", "429")],
        &message(false),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.header("anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    assert!(r.header("request-id").is_some());
    let err = r.json();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn server_errors_and_overload() {
    let oai = openai::spawn(Default::default()).await.unwrap();
    let r = post(oai.addr, CHAT, &[("x-sim-fault", "500")], &chat(false)).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "server_error");
    let r = post(oai.addr, CHAT, &[("x-sim-fault", "529")], &chat(false)).await;
    assert_eq!(r.status, 503);

    let ant = anthropic::spawn(Default::default()).await.unwrap();
    let r = post(
        ant.addr,
        "/v1/messages",
        &[V, ("x-sim-fault", "500")],
        &message(false),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "api_error");
    let r = post(
        ant.addr,
        "/v1/messages",
        &[V, ("x-sim-fault", "529")],
        &message(false),
    )
    .await;
    assert_eq!(r.status.as_u16(), 529);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn unknown_fault_values_are_ignored() {
    let oai = openai::spawn(Default::default()).await.unwrap();
    let r = post(oai.addr, CHAT, &[("x-sim-fault", "teapot")], &chat(false)).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn openai_stream_reset_truncates_after_a_few_events() {
    let oai = openai::spawn(Default::default()).await.unwrap();
    let r = post(oai.addr, CHAT, &[("x-sim-fault", "reset")], &chat(true)).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body_error.is_some(),
        "expected a body error, got a clean end: {}",
        r.text()
    );
    let events = parse_sse(&r.text());
    assert!(!events.is_empty(), "some events arrive before the reset");
    assert!(events.iter().all(|e| e.data != "[DONE]"));
}

#[tokio::test]
async fn anthropic_stream_reset_never_reaches_message_stop() {
    let ant = anthropic::spawn(Default::default()).await.unwrap();
    let r = post(
        ant.addr,
        "/v1/messages",
        &[V, ("x-sim-fault", "reset")],
        &message(true),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body_error.is_some(),
        "expected a body error: {}",
        r.text()
    );
    let names: Vec<String> = parse_sse(&r.text())
        .into_iter()
        .filter_map(|e| e.name)
        .collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert!(!names.iter().any(|n| n == "message_stop"));
}

#[tokio::test]
async fn non_streaming_reset_sends_headers_then_drops() {
    let oai = openai::spawn(Default::default()).await.unwrap();
    let r = post(oai.addr, CHAT, &[("x-sim-fault", "reset")], &chat(false)).await;
    assert_eq!(r.status, 200);
    assert!(r.body_error.is_some());
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn slow_trickles_chunks_at_least_200ms_apart() {
    let oai = openai::spawn(Default::default()).await.unwrap();
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "a"}]});
    let started = Instant::now();
    let r = post(oai.addr, CHAT, &[("x-sim-fault", "slow")], &body).await;
    let events = parse_sse(&r.text()).len();
    assert!(r.body_error.is_none());
    // Every chunk after the first waits 200 ms.
    let floor = Duration::from_millis(200) * (events as u32 - 1);
    assert!(
        started.elapsed() >= floor,
        "{:?} < {floor:?} for {events} events",
        started.elapsed()
    );

    let started = Instant::now();
    let r = post(oai.addr, CHAT, &[("x-sim-fault", "slow")], &chat(false)).await;
    assert_eq!(
        r.json()["object"],
        "chat.completion",
        "slow bodies are still whole"
    );
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn options_fault_applies_to_every_request_and_the_header_overrides_it() {
    let options = anthropic::Options {
        fault: Some(Fault::RateLimit),
        ..Default::default()
    };
    let ant = anthropic::spawn(options).await.unwrap();
    assert_eq!(
        post(ant.addr, "/v1/messages", &[V], &message(false))
            .await
            .status,
        429
    );
    let r = post(
        ant.addr,
        "/v1/messages",
        &[V, ("x-sim-fault", "500")],
        &message(false),
    )
    .await;
    assert_eq!(r.status, 500);
}
