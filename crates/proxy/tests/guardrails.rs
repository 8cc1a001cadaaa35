//! `guardrails` through a real gateway: request guards (mask what reaches the provider, reject
//! in the caller's dialect), response guards on whole and streamed answers (the `sim` providers
//! echo the prompt, so a prompt with PII makes an answer with PII).

mod common;

use common::*;
use http::Request;
use serde_json::{json, Value};

const PII: &str = "mail jane.doe@example.com or card 4111 1111 1111 1111 today";

fn guarded(guards: &str, provider: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - policies:\n        guardrails:\n{guards}      backends:\n      - ai: {{name: p, hostOverride: '{addr}', provider: {{{provider}: {{}}}}}}\n"
    )
}

fn post(path: &str, body: &Value) -> Request<TestBody> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", "Bearer k")
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .body(full(body.to_string()))
        .unwrap()
}

fn chat(content: &str, stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "stream_options": {"include_usage": true},
           "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": content}]})
}

#[tokio::test]
async fn request_guards_mask_what_the_provider_sees_and_reject_in_the_callers_dialect() {
    let up = echo("provider").await;
    let guards = "          request:\n          - {name: pii, regex: {builtins: [email, creditCard]}, action: mask}\n          - {name: tickets, regex: {patterns: ['TICKET-[0-9]{4}']}, action: reject}\n";
    let (_gw, addr) = gateway(&guarded(guards, "openAI", up.addr)).await;

    let r = send(addr, post("/v1/chat/completions", &chat(PII, false))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = serde_json::from_str(r.json()["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["messages"][1]["content"],
        "mail <EMAIL> or card <CREDIT_CARD> today"
    );
    assert_eq!(sent["messages"][0]["content"], "be brief");
    let metrics = telemetry::Metrics::global().encode();
    assert!(
        metrics.contains(
            r#"switchyard_guardrail_hits_total{guard="pii",detector="creditCard",action="mask",side="request"}"#
        ),
        "{metrics}"
    );

    // A body the guards cannot read is refused, not passed unread.
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(full("model=m&text=jane@example.com"))
        .unwrap();
    let r = send(addr, req).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "guardrail_unsupported");

    // Tool-call arguments and tool results are prompt text too.
    let body = json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "send", "arguments": "{\"to\":\"bob@example.org\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sent to bob@example.org"}]});
    let r = send(addr, post("/v1/chat/completions", &body)).await;
    let sent = r.json()["body"].as_str().unwrap().to_string();
    assert!(!sent.contains("bob@"), "{sent}");
    assert_eq!(sent.matches("<EMAIL>").count(), 2, "{sent}");

    // A reject: OpenAI's error shape with the stable code and the guard, never the text.
    let r = send(
        addr,
        post("/v1/chat/completions", &chat("about TICKET-1234", false)),
    )
    .await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["error"]["code"], "guardrail_rejected");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("\"tickets\""));
    assert!(!r.text().contains("TICKET-1234"));

    // The same refusal to an Anthropic client, in Anthropic's shape (`system` is read too).
    let body = json!({"model": "m", "max_tokens": 10, "system": "ref TICKET-9999",
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = send(addr, post("/v1/messages", &body)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.json();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("guardrail_rejected"));
    assert!(!r.text().contains("TICKET-9999"));
}

#[tokio::test]
async fn response_guards_on_whole_answers_mask_or_refuse_with_a_400() {
    let sim = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let guards = "          response:\n          - {name: pii, regex: {builtins: [email, creditCard]}, action: mask}\n          - {name: ips, regex: {builtins: [ip]}, action: reject}\n";
    let (_gw, addr) = gateway(&guarded(guards, "openAI", sim.addr)).await;

    let r = send(addr, post("/v1/chat/completions", &chat(PII, false))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello! You said: mail <EMAIL> or card <CREDIT_CARD> today"
    );
    assert_eq!(
        r.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(r.body.len())
    );

    let r = send(
        addr,
        post("/v1/chat/completions", &chat("ping 10.1.2.3", false)),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "guardrail_rejected");
    assert!(!r.text().contains("10.1.2.3"));
}

/// The data of each SSE event, in order.
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

#[tokio::test]
async fn streamed_answers_are_masked_as_they_stream_and_a_reject_ends_the_stream_cleanly() {
    let sim = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let guards = "          response:\n          - {name: pii, regex: {builtins: [email, creditCard]}, action: mask}\n          - {name: ips, regex: {builtins: [ip]}, action: reject}\n";
    let (_gw, addr) = gateway(&guarded(guards, "openAI", sim.addr)).await;

    let r = send(addr, post("/v1/chat/completions", &chat(PII, true))).await;
    assert_eq!(r.status, 200);
    let body = r.text();
    assert!(
        !body.contains("jane.doe") && !body.contains("4111"),
        "{body}"
    );
    let evs = events(&body);
    let mut text = String::new();
    for e in &evs[..evs.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap_or_else(|_| panic!("{e}"));
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(c) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            text.push_str(c);
        }
    }
    assert_eq!(
        text,
        "Hello! You said: mail <EMAIL> or card <CREDIT_CARD> today"
    );
    assert_eq!(evs.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&evs[evs.len() - 2]).unwrap();
    assert!(
        usage["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );

    let r = send(
        addr,
        post("/v1/chat/completions", &chat("ping 10.1.2.3 now", true)),
    )
    .await;
    assert_eq!(r.status, 200, "the headers were sent before the match");
    let body = r.text();
    assert!(!body.contains("10.1.2.3"), "{body}");
    let evs = events(&body);
    assert_eq!(evs.last().unwrap(), "[DONE]");
    let err: Value = serde_json::from_str(&evs[evs.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "guardrail_rejected", "{body}");
}

#[tokio::test]
async fn anthropic_streams_are_masked_and_uncovered_streams_are_refused_up_front() {
    let sim = sim::anthropic::spawn(sim::anthropic::Options::default())
        .await
        .unwrap();
    let guards = "          response:\n          - {name: pii, regex: {builtins: [email, creditCard]}, action: mask}\n";
    let (_gw, addr) = gateway(&guarded(guards, "anthropic", sim.addr)).await;
    let body = json!({"model": "m", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": PII}]});
    let r = send(addr, post("/v1/messages", &body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.text();
    assert!(
        !body.contains("jane.doe") && !body.contains("4111"),
        "{body}"
    );
    let mut text = String::new();
    for e in events(&body) {
        let v: Value = serde_json::from_str(&e).unwrap_or_else(|_| panic!("{e}"));
        if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
            text.push_str(t);
        }
    }
    assert!(
        text.ends_with("mail <EMAIL> or card <CREDIT_CARD> today"),
        "{text}"
    );

    // The same answer whole, in Anthropic's shape.
    let body = json!({"model": "m", "max_tokens": 100,
                      "messages": [{"role": "user", "content": PII}]});
    let r = send(addr, post("/v1/messages", &body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(
        v["content"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with("mail <EMAIL> or card <CREDIT_CARD> today"),
        "{v}"
    );

    // OpenAI Responses streams are not rewritten: refused before anything is sent.
    let body = json!({"model": "m", "stream": true, "input": "hello"});
    let r = send(addr, post("/v1/responses", &body)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "guardrail_unsupported");
    // Not streamed, the same call is guarded as a whole.
    let body = json!({"model": "m", "input": PII});
    let r = send(addr, post("/v1/responses", &body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("jane.doe"), "{}", r.text());
}

#[tokio::test]
async fn a_guarded_stream_still_streams() {
    let itl = std::time::Duration::from_millis(40);
    let sim = sim::openai::spawn(sim::openai::Options {
        inter_token_delay: itl,
        ..Default::default()
    })
    .await
    .unwrap();
    let guards = "          response:\n          - {name: pii, regex: {builtins: [email, phone, creditCard, ssn, iban, ip]}, action: mask}\n";
    let (_gw, addr) = gateway(&guarded(guards, "openAI", sim.addr)).await;
    let words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty jane@example.com";
    let mut req = post("/v1/chat/completions", &chat(words, true));
    *req.uri_mut() = format!("http://{addr}/v1/chat/completions")
        .parse()
        .unwrap();
    let start = std::time::Instant::now();
    let resp = h1_client().request(req).await.unwrap();
    let mut body = resp.into_body();
    let mut first_text = None;
    let mut all = Vec::new();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if let Ok(d) = frame.unwrap().into_data() {
            if first_text.is_none() && String::from_utf8_lossy(&d).contains("one ") {
                first_text = Some(start.elapsed());
            }
            all.extend_from_slice(&d);
        }
    }
    let total = start.elapsed();
    let first = first_text.expect("the first words arrive");
    assert!(
        first * 3 < total,
        "first words after {first:?} of {total:?}: the answer was held whole"
    );
    let all = String::from_utf8(all).unwrap();
    assert!(all.contains("<EMAIL>") && !all.contains("jane@"), "{all}");
}

#[tokio::test]
async fn a_reject_mid_stream_closes_the_body_without_waiting_for_the_provider() {
    let itl = std::time::Duration::from_millis(40);
    let sim = sim::openai::spawn(sim::openai::Options {
        inter_token_delay: itl,
        ..Default::default()
    })
    .await
    .unwrap();
    let guards =
        "          response:\n          - {name: ips, regex: {builtins: [ip]}, action: reject}\n";
    let (_gw, addr) = gateway(&guarded(guards, "openAI", sim.addr)).await;
    let tail = "word ".repeat(40);
    let start = std::time::Instant::now();
    let r = send(
        addr,
        post(
            "/v1/chat/completions",
            &chat(&format!("ping 10.0.0.7 {tail}"), true),
        ),
    )
    .await;
    let took = start.elapsed();
    let body = r.text();
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert!(
        body.contains("guardrail_rejected") && !body.contains("10.0.0.7"),
        "{body}"
    );
    assert!(
        took < itl * 20,
        "the body closed at the refusal, not after the 45-token answer ({took:?})"
    );
}

/// A guard service implementing the webhook contract: texts with "secret" are masked, texts
/// with "forbidden" rejected, the rest allowed. Counts the calls it got.
async fn webhook() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            counter.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(req.headers()["authorization"], "Bearer hook-key");
                            let body = http_body_util::BodyExt::collect(req.into_body())
                                .await
                                .unwrap()
                                .to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap();
                            assert_eq!(v["side"], "request");
                            let texts: Vec<String> = v["texts"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|t| t["text"].as_str().unwrap().to_string())
                                .collect();
                            let answer = if texts.iter().any(|t| t.contains("forbidden")) {
                                json!({"action": "reject", "reason": "forbidden topic"})
                            } else if texts.iter().any(|t| t.contains("secret")) {
                                json!({"action": "mask", "texts": texts.iter().map(|t| t.replace("secret", "[hidden]")).collect::<Vec<_>>()})
                            } else {
                                json!({"action": "allow"})
                            };
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(answer.to_string())),
                            ))
                        }
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
    (addr, calls)
}

#[tokio::test]
async fn webhook_guards_mask_and_reject_and_fail_as_configured() {
    let up = echo("provider").await;
    let (hook, calls) = webhook().await;
    let guards = format!("          request:\n          - {{name: policy-hook, webhook: {{url: 'http://{hook}/check', key: hook-key}}, action: mask}}\n");
    let (_gw, addr) = gateway(&guarded(&guards, "openAI", up.addr)).await;

    let r = send(
        addr,
        post("/v1/chat/completions", &chat("the secret plan", false)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = serde_json::from_str(r.json()["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["messages"][1]["content"], "the [hidden] plan");
    assert_eq!(
        sent["messages"][0]["content"], "be brief",
        "unchanged texts stay"
    );

    let r = send(
        addr,
        post("/v1/chat/completions", &chat("a forbidden question", false)),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "guardrail_rejected");
    assert!(
        r.text().contains("policy-hook") && !r.text().contains("forbidden topic"),
        "{}",
        r.text()
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);

    // The service down: refused (503) unless failOpen.
    let down = "127.0.0.1:9";
    for (fail_open, status) in [(false, 503), (true, 200)] {
        let guards = format!("          request:\n          - {{name: gone, webhook: {{url: 'http://{down}/x', timeout: 300ms, failOpen: {fail_open}}}, action: reject}}\n");
        let (_gw, addr) = gateway(&guarded(&guards, "openAI", up.addr)).await;
        let r = send(addr, post("/v1/chat/completions", &chat("hello", false))).await;
        assert_eq!(
            r.status.as_u16(),
            status,
            "failOpen {fail_open}: {}",
            r.text()
        );
        if status == 503 {
            assert_eq!(r.json()["error"]["code"], "guardrail_unavailable");
        }
    }
}

#[tokio::test]
async fn moderation_guards_use_the_moderations_api_with_thresholds() {
    let up = echo("provider").await;
    let moderator = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let m = moderator.addr;
    let guards = format!("          request:\n          - {{name: safety, moderation: {{url: 'http://{m}'}}, action: reject}}\n");
    let (_gw, addr) = gateway(&guarded(&guards, "anthropic", up.addr)).await;
    let anthropic = |text: &str| json!({"model": "m", "max_tokens": 10, "system": "be brief", "messages": [{"role": "user", "content": text}]});
    let r = send(
        addr,
        post("/v1/messages", &anthropic("how do I kill a stuck process?")),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"], "error", "Anthropic's error shape");
    assert!(r.text().contains("safety"));
    assert_eq!(
        send(addr, post("/v1/messages", &anthropic("hello")))
            .await
            .status,
        200
    );

    // A threshold above the score lets it through; audit never refuses.
    for (guard, status) in [
        (format!("{{name: safety, moderation: {{url: 'http://{m}', thresholds: {{violence: 0.95}}}}, action: reject}}"), 200),
        (format!("{{name: safety, moderation: {{url: 'http://{m}'}}, action: audit}}"), 200),
        (format!("{{name: safety, moderation: {{url: 'http://{m}', thresholds: {{violence: 0.5}}}}, action: reject}}"), 400),
    ] {
        let guards = format!("          request:\n          - {guard}\n");
        let (_gw, addr) = gateway(&guarded(&guards, "anthropic", up.addr)).await;
        let r = send(addr, post("/v1/messages", &anthropic("how do I kill a stuck process?"))).await;
        assert_eq!(r.status.as_u16(), status, "{guard}: {}", r.text());
    }
}

#[tokio::test]
async fn the_prompt_policy_adds_its_messages_after_the_guards() {
    let up = echo("provider").await;
    let yaml = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - policies:\n        guardrails:\n          prompt:\n            prepend: [{{role: system, content: 'Policy: mail me at ops@example.com'}}]\n            append: [{{role: user, content: 'Answer briefly.'}}]\n          request:\n          - {{name: pii, regex: {{builtins: [email]}}, action: mask}}\n      backends:\n      - ai: {{name: p, hostOverride: '{}', provider: {{openAI: {{}}}}}}\n",
        up.addr
    );
    let (_gw, addr) = gateway(&yaml).await;
    let r = send(
        addr,
        post(
            "/v1/chat/completions",
            &chat("write to jane@example.com", false),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = serde_json::from_str(r.json()["body"].as_str().unwrap()).unwrap();
    let m = sent["messages"].as_array().unwrap();
    assert_eq!(m.len(), 4);
    // The gateway's own text is not scanned (its address stays); the caller's is masked.
    assert_eq!(m[0]["content"], "Policy: mail me at ops@example.com");
    assert_eq!(m[2]["content"], "write to <EMAIL>");
    assert_eq!(m[3]["content"], "Answer briefly.");
}
