//! The simulated vLLM server on real sockets: response shapes, SSE framing, prefix-cache usage,
//! metrics, errors, queue limits, and the fleet.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{get, parse_sse, post, send};
use serde_json::{json, Value};
use sim::vllm::{fleet, spawn, EngineConfig, VllmOptions};

const CHAT: &str = "/v1/chat/completions";

/// Cheap steps so tests finish quickly (tokio's timer rounds each to about a millisecond).
fn fast() -> VllmOptions {
    VllmOptions {
        name: "pod-test".into(),
        engine: EngineConfig {
            step_base: Duration::from_micros(200),
            prefill_per_token: Duration::from_micros(1),
            decode_per_seq: Duration::from_micros(10),
            output_len: 3..6,
            ..EngineConfig::default()
        },
        ..VllmOptions::default()
    }
}

fn long_system_prompt() -> String {
    (0..200)
        .map(|i| format!("rule{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn chat_body(user: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "sim-llama",
        "messages": [
            {"role": "system", "content": long_system_prompt()},
            {"role": "user", "content": user},
        ],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The value of an unlabelled-but-for-model_name sample in a metrics text.
fn metric(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{model_name=\"sim-llama\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in metrics:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn chat_completion_shape_and_cached_tokens_on_a_repeated_prefix() {
    let sim = spawn(fast()).await.unwrap();
    let r = post(
        sim.addr,
        CHAT,
        &[],
        &chat_body("hello", json!({"max_tokens": 7})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sim-pod"), Some("pod-test"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "sim-llama");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "length");
    let content = choice["message"]["content"].as_str().unwrap();
    assert_eq!(content.split(' ').count(), 7);
    let usage = &v["usage"];
    // system marker + 200 words + user marker + 1 word + assistant marker.
    assert_eq!(usage["prompt_tokens"], 204);
    assert_eq!(usage["completion_tokens"], 7);
    assert_eq!(usage["total_tokens"], 211);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);

    // Same system prompt, another question: the shared full blocks are hits.
    let r = post(sim.addr, CHAT, &[], &chat_body("again", json!({}))).await;
    let v = r.json();
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 192);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let n = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((3..6).contains(&n), "drawn length {n}");

    // No `model` is served as the configured model, like vLLM.
    let r = post(
        sim.addr,
        CHAT,
        &[],
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "sim-llama");
}

#[tokio::test]
async fn streamed_chat_is_sse_with_role_deltas_finish_usage_and_done() {
    let sim = spawn(fast()).await.unwrap();
    let body = chat_body(
        "stream please",
        json!({"stream": true, "max_tokens": 5, "stream_options": {"include_usage": true}}),
    );
    // Warm the cache so the streamed request reports hits.
    post(
        sim.addr,
        CHAT,
        &[],
        &chat_body("warm", json!({"max_tokens": 1})),
    )
    .await;
    let r = post(sim.addr, CHAT, &[], &body).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(r.header("x-sim-pod"), Some("pod-test"));
    let events = parse_sse(&r.text());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let id = &chunks[0]["id"];
    assert!(chunks.iter().all(|c| &c["id"] == id));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content.split(' ').count(), 5, "{content:?}");
    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("length")]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 5);
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 192);
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null()));

    // Without include_usage: no usage chunk, still [DONE].
    let r = post(
        sim.addr,
        CHAT,
        &[],
        &chat_body("x", json!({"stream": true, "max_tokens": 2})),
    )
    .await;
    let events = parse_sse(&r.text());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert!(events[..events.len() - 1]
        .iter()
        .all(|e| e.json().get("usage").is_none() && e.json()["choices"] != json!([])));
}

#[tokio::test]
async fn completions_json_and_stream() {
    let sim = spawn(fast()).await.unwrap();
    let r = post(
        sim.addr,
        "/v1/completions",
        &[],
        &json!({"model": "sim-llama", "prompt": "Once upon a time,", "max_tokens": 4}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(
        v["choices"][0]["text"].as_str().unwrap().split(' ').count(),
        4
    );
    assert_eq!(v["usage"]["prompt_tokens"], 5);

    let r = post(
        sim.addr,
        "/v1/completions",
        &[],
        &json!({"prompt": [1, 2, 3], "max_tokens": 3, "stream": true}),
    )
    .await;
    let events = parse_sse(&r.text());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();
    assert_eq!(chunks.len(), 3);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "length");
    assert!(chunks[0]["choices"][0]["finish_reason"].is_null());
}

#[tokio::test]
async fn metrics_use_vllm_names_and_move_with_traffic() {
    let sim = spawn(fast()).await.unwrap();
    let before = get(sim.addr, "/metrics", &[]).await;
    assert_eq!(before.status, 200);
    assert!(before
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = before.text();
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:num_preemptions_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        assert_eq!(metric(&text, name), 0.0, "{name}");
    }
    for name in [
        "vllm:time_to_first_token_seconds",
        "vllm:time_per_output_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        assert!(
            text.contains(&format!("# TYPE {name} histogram\n")),
            "{name}"
        );
        assert!(
            text.contains(&format!(
                "{name}_bucket{{le=\"+Inf\",model_name=\"sim-llama\"}} 0.0"
            )),
            "{name}"
        );
        assert_eq!(metric(&text, &format!("{name}_count")), 0.0);
    }

    for user in ["one", "two"] {
        let r = post(
            sim.addr,
            CHAT,
            &[],
            &chat_body(user, json!({"max_tokens": 4})),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let text = get(sim.addr, "/metrics", &[]).await.text();
    assert_eq!(metric(&text, "vllm:prompt_tokens_total"), 2.0 * 204.0);
    assert_eq!(metric(&text, "vllm:generation_tokens_total"), 8.0);
    assert_eq!(
        metric(&text, "vllm:prefix_cache_queries_total"),
        2.0 * 204.0
    );
    assert_eq!(metric(&text, "vllm:prefix_cache_hits_total"), 192.0);
    assert_eq!(metric(&text, "vllm:time_to_first_token_seconds_count"), 2.0);
    assert_eq!(metric(&text, "vllm:e2e_request_latency_seconds_count"), 2.0);
    assert_eq!(metric(&text, "vllm:inter_token_latency_seconds_count"), 6.0);
    assert!(metric(&text, "vllm:e2e_request_latency_seconds_sum") > 0.0);
    assert_eq!(metric(&text, "vllm:num_requests_running"), 0.0);
    assert_eq!(metric(&text, "vllm:kv_cache_usage_perc"), 0.0);
}

#[tokio::test]
async fn validation_errors_have_vllm_shapes() {
    let sim = spawn(fast()).await.unwrap();
    let r = post(
        sim.addr,
        CHAT,
        &[],
        &json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 404);
    let e = &r.json()["error"];
    assert_eq!(e["message"], "The model `gpt-9` does not exist.");
    assert_eq!(e["type"], "NotFoundError");
    assert_eq!(e["code"], 404);
    assert_eq!(r.header("x-sim-pod"), Some("pod-test"));

    let r = send(
        sim.addr,
        "POST",
        CHAT,
        &[],
        Bytes::from_static(b"{not json"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "BadRequestError");
    assert_eq!(r.json()["error"]["code"], 400);

    let r = post(sim.addr, CHAT, &[], &json!({"model": "sim-llama"})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messages"));

    let r = post(
        sim.addr,
        CHAT,
        &[],
        &chat_body("x", json!({"max_tokens": 0})),
    )
    .await;
    assert_eq!(r.status, 400);

    let r = post(
        sim.addr,
        CHAT,
        &[],
        &chat_body("x", json!({"max_tokens": 9000})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum context length is 8192"));

    let r = get(sim.addr, "/nope", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"detail": "Not Found"}));
    let r = get(sim.addr, CHAT, &[]).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn full_queue_answers_429() {
    let sim = spawn(VllmOptions {
        engine: EngineConfig {
            max_num_seqs: 1,
            max_waiting: 1,
            step_base: Duration::from_millis(10),
            ..EngineConfig::default()
        },
        ..VllmOptions::default()
    })
    .await
    .unwrap();
    let addr = sim.addr;
    // A runs for ~50 steps (~0.5 s); B waits behind it; C finds the queue full.
    let a = tokio::spawn(async move {
        post(addr, CHAT, &[], &chat_body("a", json!({"max_tokens": 50}))).await
    });
    let wait_for = move |running: f64, waiting: f64| async move {
        for _ in 0..200 {
            let text = get(addr, "/metrics", &[]).await.text();
            if metric(&text, "vllm:num_requests_running") == running
                && metric(&text, "vllm:num_requests_waiting") == waiting
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("never reached running={running} waiting={waiting}");
    };
    wait_for(1.0, 0.0).await;
    let b = tokio::spawn(async move {
        post(addr, CHAT, &[], &chat_body("b", json!({"max_tokens": 1}))).await
    });
    wait_for(1.0, 1.0).await;
    let r = post(addr, CHAT, &[], &chat_body("c", json!({"max_tokens": 1}))).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], 429);
    assert_eq!(r.json()["error"]["type"], "RateLimitError");
    assert_eq!(a.await.unwrap().status, 200);
    assert_eq!(b.await.unwrap().status, 200);
}

#[tokio::test]
async fn batching_slows_tokens_in_real_time() {
    // 2 ms + 1 ms per decoding sequence: alone ~3 ms per token, with 15 others ~18 ms.
    let sim = spawn(VllmOptions {
        engine: EngineConfig {
            step_base: Duration::from_millis(2),
            decode_per_seq: Duration::from_millis(1),
            prefill_per_token: Duration::ZERO,
            ..EngineConfig::default()
        },
        ..VllmOptions::default()
    })
    .await
    .unwrap();
    let addr = sim.addr;
    let started = std::time::Instant::now();
    post(
        addr,
        CHAT,
        &[],
        &chat_body("solo", json!({"max_tokens": 10})),
    )
    .await;
    let solo = started.elapsed();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            tokio::spawn(async move {
                post(
                    addr,
                    CHAT,
                    &[],
                    &chat_body(&format!("q{i}"), json!({"max_tokens": 10})),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let batch = started.elapsed();
    assert!(batch > solo * 3, "batch {batch:?} vs solo {solo:?}");
}

#[tokio::test]
async fn fleet_pods_have_names_and_answer_probes() {
    let pods = fleet(3, fast()).await;
    assert_eq!(pods.len(), 3);
    for (i, pod) in pods.iter().enumerate() {
        let name = format!("pod-{i}");
        for path in ["/health", "/ping", "/health_generate"] {
            let r = get(pod.addr, path, &[]).await;
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.header("x-sim-pod"), Some(name.as_str()));
        }
        let models = get(pod.addr, "/v1/models", &[]).await.json();
        assert_eq!(models["data"][0]["id"], "sim-llama");
        assert_eq!(models["data"][0]["owned_by"], "vllm");
        assert!(get(pod.addr, "/version", &[]).await.json()["version"].is_string());
        assert_eq!(
            get(pod.addr, "/get_model_info", &[]).await.json()["model_path"],
            "sim-llama"
        );
        assert_eq!(
            get(pod.addr, "/get_server_info", &[]).await.json()["pod"],
            name
        );
        let r = post(
            pod.addr,
            CHAT,
            &[],
            &chat_body("hi", json!({"max_tokens": 2})),
        )
        .await;
        assert_eq!(r.header("x-sim-pod"), Some(name.as_str()));
        // vllm-router's kv_aware policy tokenizes on every worker (render, else /tokenize).
        let msgs = json!({"messages": [{"role": "user", "content": "hello there"}]});
        let rendered = post(pod.addr, "/v1/chat/completions/render", &[], &msgs)
            .await
            .json();
        let ids = rendered["token_ids"].as_array().unwrap().clone();
        assert!(ids.len() >= 3, "{rendered}");
        let tok = post(pod.addr, "/tokenize", &[], &msgs).await.json();
        assert_eq!(tok["count"], ids.len());
        assert_eq!(tok["tokens"], Value::Array(ids));
        let r = post(pod.addr, "/tokenize", &[], &json!({"prompt": 3})).await;
        assert_eq!(r.status, 400);
    }
    // The prefix cache is per pod: a prompt warm on pod-0 is cold on pod-1.
    let prompt: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    let warm = json!({"prompt": prompt.join(" "), "max_tokens": 1});
    let cached = |v: Value| v["usage"]["prompt_tokens_details"]["cached_tokens"].clone();
    assert_eq!(
        cached(
            post(pods[0].addr, "/v1/completions", &[], &warm)
                .await
                .json()
        ),
        0
    );
    assert_eq!(
        cached(
            post(pods[0].addr, "/v1/completions", &[], &warm)
                .await
                .json()
        ),
        32
    );
    assert_eq!(
        cached(
            post(pods[1].addr, "/v1/completions", &[], &warm)
                .await
                .json()
        ),
        0
    );
    let text = get(pods[2].addr, "/metrics", &[]).await.text();
    assert_eq!(metric(&text, "vllm:prefix_cache_hits_total"), 0.0);
    assert_eq!(metric(&text, "vllm:prefix_cache_queries_total"), 204.0);
}

#[tokio::test]
async fn the_api_server_cost_delays_and_queues_requests_in_real_time() {
    // 60 ms of API-server time per request, cheap engine steps: one request takes ~60 ms,
    // three sent together finish ~60, ~120 and ~180 ms after they were sent (the API server
    // takes them one at a time).
    let sim = spawn(VllmOptions {
        engine: EngineConfig {
            step_base: Duration::from_millis(1),
            prefill_per_token: Duration::ZERO,
            decode_per_seq: Duration::ZERO,
            request_base: Duration::from_millis(60),
            ..EngineConfig::default()
        },
        ..VllmOptions::default()
    })
    .await
    .unwrap();
    let addr = sim.addr;
    let started = std::time::Instant::now();
    let r = post(
        addr,
        CHAT,
        &[],
        &chat_body("solo", json!({"max_tokens": 1})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let solo = started.elapsed();
    assert!(
        solo >= Duration::from_millis(60) && solo < Duration::from_millis(150),
        "{solo:?}"
    );

    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(async move {
                let r = post(
                    addr,
                    CHAT,
                    &[],
                    &chat_body(&format!("q{i}"), json!({"max_tokens": 1})),
                )
                .await;
                assert_eq!(r.status, 200);
                started.elapsed()
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    done.sort();
    assert!(done[0] >= Duration::from_millis(60), "{done:?}");
    assert!(done[2] >= Duration::from_millis(180), "queued: {done:?}");
    assert!(done[2] < Duration::from_millis(400), "{done:?}");
}
