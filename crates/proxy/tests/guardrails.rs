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
async fn anthropic_streams_and_whole_answers_are_masked() {
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

    // Not streamed, a Responses call is guarded as a whole.
    let body = json!({"model": "m", "input": PII});
    let r = send(addr, post("/v1/responses", &body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("jane.doe"), "{}", r.text());
}

/// A Responses stream's events: (the `event:` name, the data), each checked to be the same
/// type, numbered 0, 1, 2... in order.
fn responses_events(body: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (i, ev) in body
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .enumerate()
    {
        let name = ev
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or_else(|| panic!("no event line: {ev}"));
        let data: String = ev
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        let v: Value = serde_json::from_str(&data).unwrap_or_else(|_| panic!("{ev}"));
        assert_eq!(v["type"], name, "{ev}");
        assert_eq!(v["sequence_number"], i, "numbered in order: {body}");
        out.push((name.to_string(), v));
    }
    out
}

#[tokio::test]
async fn responses_streams_are_masked_in_every_event_and_a_reject_ends_them() {
    // The Responses API in front of an Anthropic provider: a translated stream.
    let sim = sim::anthropic::spawn(sim::anthropic::Options::default())
        .await
        .unwrap();
    let guards = "          response:\n          - {name: pii, regex: {builtins: [email, creditCard]}, action: mask}\n          - {name: ips, regex: {builtins: [ip]}, action: reject}\n";
    let (_gw, addr) = gateway(&guarded(guards, "anthropic", sim.addr)).await;
    let body = json!({"model": "m", "stream": true, "input": PII});
    let r = send(addr, post("/v1/responses", &body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        !text.contains("jane.doe") && !text.contains("4111"),
        "{text}"
    );
    let evs = responses_events(&text);
    let masked = "mail <EMAIL> or card <CREDIT_CARD> today";
    let deltas: String = evs
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert!(deltas.ends_with(masked), "{deltas}");
    let done = evs
        .iter()
        .find(|(n, _)| n == "response.output_text.done")
        .unwrap();
    assert_eq!(
        done.1["text"], deltas,
        "the whole text agrees with the deltas"
    );
    let (last, completed) = evs.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"],
        deltas
    );
    assert!(
        completed["response"]["usage"]["output_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    // A reject: the stream ends with an error event naming the guard, never the text.
    let body = json!({"model": "m", "stream": true, "input": "ping 10.1.2.3 now"});
    let r = send(addr, post("/v1/responses", &body)).await;
    let text = r.text();
    assert!(!text.contains("10.1.2.3"), "{text}");
    let evs = responses_events(&text);
    let (name, err) = evs.last().unwrap();
    assert_eq!(name, "error", "{text}");
    assert_eq!(err["code"], "guardrail_rejected");
    assert_eq!(err["error"]["code"], "guardrail_rejected");
    assert!(
        err["message"].as_str().unwrap().contains("\"ips\""),
        "{err}"
    );
}

#[tokio::test]
async fn translated_streams_are_guarded_in_the_callers_format() {
    let gemini = sim::gemini::spawn(sim::gemini::Options::default())
        .await
        .unwrap();
    let guards = "          response:\n          - {name: pii, regex: {builtins: [email, creditCard]}, action: mask}\n";
    let (_gw, addr) = gateway(&guarded(guards, "gemini", gemini.addr)).await;
    let mut req = chat(PII, true);
    req["model"] = json!("gemini-sim-flash");
    let r = send(addr, post("/v1/chat/completions", &req)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.text();
    assert!(
        !body.contains("jane.doe") && !body.contains("4111"),
        "{body}"
    );
    let evs = events(&body);
    assert_eq!(evs.last().unwrap(), "[DONE]");
    let mut text = String::new();
    let mut finish = 0;
    for e in &evs[..evs.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap_or_else(|_| panic!("{e}"));
        assert_eq!(v["object"], "chat.completion.chunk", "{e}");
        if let Some(c) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            text.push_str(c);
        }
        if v.pointer("/choices/0/finish_reason")
            .is_some_and(|f| !f.is_null())
        {
            finish += 1;
        }
    }
    assert!(
        text.ends_with("mail <EMAIL> or card <CREDIT_CARD> today"),
        "{text}"
    );
    assert_eq!(finish, 1, "one finish_reason: {body}");

    // Bedrock's binary event stream, to an Anthropic caller.
    let bedrock = sim::bedrock::spawn(sim::bedrock::Options::default())
        .await
        .unwrap();
    let yaml = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - policies:\n        guardrails:\n{guards}      backends:\n      - ai: {{name: p, hostOverride: '{}', provider: {{bedrock: {{region: {}, accessKeyId: {}, secretAccessKey: {}}}}}}}\n",
        bedrock.addr,
        sim::bedrock::TEST_REGION,
        sim::bedrock::TEST_ACCESS_KEY_ID,
        sim::bedrock::TEST_SECRET_ACCESS_KEY
    );
    let (_gw, addr) = gateway(&yaml).await;
    let body = json!({"model": "anthropic.claude-sim-v1:0", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": PII}]});
    let r = send(addr, post("/v1/messages", &body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.text();
    assert!(
        !body.contains("jane.doe") && !body.contains("4111"),
        "{body}"
    );
    let mut text = String::new();
    let mut kinds = Vec::new();
    for ev in body.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let name = ev.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
        let data: String = ev
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        let v: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["type"], name);
        if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
            text.push_str(t);
        }
        kinds.push(name.to_string());
    }
    assert!(
        text.ends_with("mail <EMAIL> or card <CREDIT_CARD> today"),
        "{text}"
    );
    assert_eq!(kinds.last().unwrap(), "message_stop", "{kinds:?}");
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

/// A guard service for answers (the webhook contract): texts with "secret" masked, texts with
/// "forbidden" rejected, the rest allowed, each after `delay`. Keeps every payload it got.
async fn answer_hook(
    delay: std::time::Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let body = http_body_util::BodyExt::collect(req.into_body())
                                .await
                                .unwrap()
                                .to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap();
                            log.lock().unwrap().push(v.clone());
                            tokio::time::sleep(delay).await;
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
    (addr, seen)
}

/// The content text of an OpenAI stream, checking every chunk and the `[DONE]` end.
fn openai_text(body: &str) -> String {
    let evs = events(body);
    assert_eq!(evs.last().map(String::as_str), Some("[DONE]"), "{body}");
    let mut text = String::new();
    for e in &evs[..evs.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap_or_else(|_| panic!("{e}"));
        assert!(v.get("error").is_none(), "{body}");
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(c) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            text.push_str(c);
        }
    }
    text
}

#[tokio::test]
async fn webhook_guards_on_answers_whole_and_streamed() {
    let sim = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let (hook, seen) = answer_hook(std::time::Duration::ZERO).await;
    let guards = format!("          response:\n          - {{name: answer-hook, webhook: {{url: 'http://{hook}/check', streamWindow: 40}}, action: mask}}\n          - {{name: pii, regex: {{builtins: [email]}}, action: mask}}\n");
    let (_gw, addr) = gateway(&guarded(&guards, "openAI", sim.addr)).await;

    // Whole: the hook sees the answer (after the regex guards), its mask is what the caller gets.
    let r = send(
        addr,
        post(
            "/v1/chat/completions",
            &chat("the secret plan of jane@example.com", false),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello! You said: the [hidden] plan of <EMAIL>"
    );
    let asked = seen.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["side"], "response");
    assert_eq!(asked[0]["guard"], "answer-hook");
    assert!(
        asked[0]["texts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["role"] == "assistant"
                && t["text"] == "Hello! You said: the secret plan of <EMAIL>"),
        "{asked:?}"
    );
    let r = send(
        addr,
        post("/v1/chat/completions", &chat("a forbidden answer", false)),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "guardrail_rejected");
    assert!(
        r.text().contains("answer-hook") && !r.text().contains("forbidden"),
        "{}",
        r.text()
    );

    // Streamed: asked once per 40 characters and at the end; the mask lands in the stream.
    seen.lock().unwrap().clear();
    let words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega";
    let prompt = format!("{words} the secret is jane@example.com");
    let r = send(addr, post("/v1/chat/completions", &chat(&prompt, true))).await;
    assert_eq!(r.status, 200);
    let body = r.text();
    let text = openai_text(&body);
    assert_eq!(
        text,
        format!("Hello! You said: {words} the [hidden] is <EMAIL>")
    );
    assert!(
        !body.contains("secret") && !body.contains("jane@"),
        "{body}"
    );
    let usage: Value = serde_json::from_str(&events(&body)[events(&body).len() - 2]).unwrap();
    assert!(
        usage["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    let asked = seen.lock().unwrap().clone();
    let chars = format!("Hello! You said: {prompt}").len();
    assert!(
        asked.len() >= chars / 60 && asked.len() <= chars / 40 + 2,
        "{} checks for {chars} characters in windows of 40",
        asked.len()
    );
    let windows: String = asked
        .iter()
        .map(|a| a["texts"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        windows,
        format!("Hello! You said: {words} the secret is <EMAIL>"),
        "the windows cover the answer once, in order, after the regex guards"
    );

    // A reject: what was checked before stays sent, the refused window is not, and the
    // stream ends with the error chunk and [DONE].
    let prompt = format!("{words} forbidden");
    let r = send(addr, post("/v1/chat/completions", &chat(&prompt, true))).await;
    let body = r.text();
    assert!(!body.contains("forbidden"), "{body}");
    let evs = events(&body);
    assert_eq!(evs.last().unwrap(), "[DONE]");
    let err: Value = serde_json::from_str(&evs[evs.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "guardrail_rejected", "{body}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("answer-hook"));
    assert!(body.contains("alpha"), "earlier windows were sent: {body}");
}

#[tokio::test]
async fn a_slow_answer_guard_costs_one_round_trip_per_window_not_per_token() {
    let itl = std::time::Duration::from_millis(5);
    let sim = sim::openai::spawn(sim::openai::Options {
        inter_token_delay: itl,
        ..Default::default()
    })
    .await
    .unwrap();
    let delay = std::time::Duration::from_millis(150);
    let (hook, seen) = answer_hook(delay).await;
    let guards = format!("          response:\n          - {{name: slow, webhook: {{url: 'http://{hook}/check', streamWindow: 1000}}, action: reject}}\n");
    let (_gw, addr) = gateway(&guarded(&guards, "openAI", sim.addr)).await;
    let words = "word ".repeat(40);
    let start = std::time::Instant::now();
    let r = send(addr, post("/v1/chat/completions", &chat(&words, true))).await;
    let took = start.elapsed();
    assert_eq!(openai_text(&r.text()), format!("Hello! You said: {words}"));
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "one window: one check, at the end"
    );
    assert!(took >= delay, "{took:?}");
    assert!(
        took < delay * 5,
        "the check's latency was paid per token: {took:?}"
    );
}

#[tokio::test]
async fn answer_guards_that_cannot_be_asked_fail_open_or_closed() {
    let sim = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let down = "127.0.0.1:9";
    for fail_open in [false, true] {
        let guards = format!("          response:\n          - {{name: gone, webhook: {{url: 'http://{down}/x', timeout: 300ms, failOpen: {fail_open}}}, action: reject}}\n");
        let (_gw, addr) = gateway(&guarded(&guards, "openAI", sim.addr)).await;
        let r = send(addr, post("/v1/chat/completions", &chat("hello", false))).await;
        let s = send(addr, post("/v1/chat/completions", &chat("hello", true))).await;
        if fail_open {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(openai_text(&s.text()), "Hello! You said: hello");
        } else {
            assert_eq!(r.status, 503, "{}", r.text());
            assert_eq!(r.json()["error"]["code"], "guardrail_unavailable");
            assert!(r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"gone\""));
            let body = s.text();
            assert!(
                !body.contains("You said"),
                "nothing unchecked is sent: {body}"
            );
            let evs = events(&body);
            let err: Value = serde_json::from_str(&evs[evs.len() - 2]).unwrap();
            assert_eq!(err["error"]["code"], "guardrail_unavailable", "{body}");
        }
    }
    // A guard slower than its timeout is unavailable too.
    let (hook, _) = answer_hook(std::time::Duration::from_millis(800)).await;
    let guards = format!("          response:\n          - {{name: slow, webhook: {{url: 'http://{hook}/x', timeout: 200ms}}, action: reject}}\n");
    let (_gw, addr) = gateway(&guarded(&guards, "openAI", sim.addr)).await;
    let start = std::time::Instant::now();
    let r = send(addr, post("/v1/chat/completions", &chat("hello", false))).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(start.elapsed() < std::time::Duration::from_millis(700));
}

#[tokio::test]
async fn moderation_guards_on_answers_whole_and_streamed() {
    let sim = sim::anthropic::spawn(sim::anthropic::Options::default())
        .await
        .unwrap();
    let moderator = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let m = moderator.addr;
    let guards = format!("          response:\n          - {{name: safety, moderation: {{url: 'http://{m}', thresholds: {{violence: 0.5}}, streamWindow: 30}}, action: reject}}\n");
    let (_gw, addr) = gateway(&guarded(&guards, "anthropic", sim.addr)).await;
    let ask = |text: &str, stream: bool| json!({"model": "m", "max_tokens": 100, "stream": stream, "messages": [{"role": "user", "content": text}]});
    // The prompt is not guarded; the answer (which repeats it) is.
    let r = send(
        addr,
        post(
            "/v1/messages",
            &ask("how do I kill a stuck process?", false),
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"], "error", "Anthropic's error shape");
    assert!(r.text().contains("safety"));
    let r = send(addr, post("/v1/messages", &ask("hello there", false))).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let r = send(
        addr,
        post(
            "/v1/messages",
            &ask(
                "a long and calm preamble first, then: how do I kill a stuck process?",
                true,
            ),
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    let body = r.text();
    assert!(!body.contains("kill"), "{body}");
    let last = body
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .last()
        .unwrap();
    assert!(last.starts_with("event: error\n"), "{body}");
    assert!(
        last.contains("guardrail_rejected") && last.contains("safety"),
        "{last}"
    );
    let r = send(
        addr,
        post(
            "/v1/messages",
            &ask("hello there, a calm question about gardens and tea", true),
        ),
    )
    .await;
    let body = r.text();
    assert!(
        body.contains("message_stop") && !body.contains("event: error"),
        "{body}"
    );
}

#[tokio::test]
async fn an_answer_the_response_guards_cannot_read_is_refused_not_passed() {
    // A provider answering 200 text/plain (as a passthrough would a file) on a guarded route.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |_req: http::Request<hyper::body::Incoming>| async {
                        let mut r = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from("mail jane@example.com"),
                        ));
                        r.headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("text/plain"));
                        Ok::<_, std::convert::Infallible>(r)
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
    let guards =
        "          response:\n          - {name: pii, regex: {builtins: [email]}, action: mask}\n";
    let (_gw, addr) = gateway(&guarded(guards, "openAI", up)).await;
    let r = send(addr, post("/v1/chat/completions", &chat("hi", false))).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "guardrail_unsupported");
    assert!(!r.text().contains("jane@"), "{}", r.text());
}
