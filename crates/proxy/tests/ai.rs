//! The `ai` backend through a real gateway: what reaches the provider (path, host, credentials,
//! body), what the caller gets back (its own dialect, errors included), and streaming that is
//! never held back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};

fn ai_route(backend: &str) -> String {
    one_route(&format!("      backends:\n      - ai:\n{backend}"))
}

fn post_json(path: &str, body: &Value) -> Request<TestBody> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-key")
        .body(full(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn completions_applies_aliases_injects_the_provider_key_and_keeps_key_order() {
    let up = echo("provider").await;
    let (_gw, addr) = gateway(&ai_route(&format!(
        "          name: openai\n          hostOverride: {}\n          provider: {{openAI: {{}}}}\n          policies:\n            backendAuth: {{key: sk-upstream}}\n            ai:\n              modelAliases: {{fast: gpt-real, 'gpt-*': gpt-wild}}\n              defaults: {{temperature: 0.5, max_tokens: 9}}\n              overrides: {{max_tokens: 100}}\n",
        up.addr
    )))
    .await;
    let body = r#"{"zeta":1,"model":"fast","messages":[{"role":"user","content":"hi"}],"alpha":2,"temperature":0.1}"#;
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-key")
        .header("x-api-key", "client-anthropic-key")
        .body(full(body))
        .unwrap();
    let r = send(addr, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["path"], "/v1/chat/completions");
    // No hostOverride-derived Host: the provider's own.
    assert_eq!(seen["authority"], "api.openai.com");
    assert_eq!(r.seen("authorization"), vec!["Bearer sk-upstream"]);
    assert!(
        r.seen("x-api-key").is_empty(),
        "client credentials must not leak"
    );
    let sent: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["model"], "gpt-real");
    assert_eq!(
        sent["temperature"], 0.1,
        "defaults never replace the client's value"
    );
    assert_eq!(sent["max_tokens"], 100, "overrides always win");
    let keys: Vec<&str> = sent
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let zeta = keys.iter().position(|k| *k == "zeta").unwrap();
    let alpha = keys.iter().position(|k| *k == "alpha").unwrap();
    assert!(zeta < alpha, "client key order is kept: {keys:?}");

    // The wildcard alias applies to a model the exact alias does not name.
    let r = send(
        addr,
        post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
        ),
    )
    .await;
    let sent: Value = serde_json::from_str(r.json()["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["model"], "gpt-wild");
}

/// The seeds' port-3100 shape: client path kept, Host rewritten, `backendAuth` as Bearer.
#[tokio::test]
async fn seed_route_keeps_the_client_path_and_rewritten_host() {
    let up = echo("dashscope").await;
    let yaml = one_route(&format!(
        "      policies:\n        urlRewrite:\n          authority: {{full: dashscope.aliyuncs.com}}\n        requestHeaderModifier:\n          set: {{Host: dashscope.aliyuncs.com}}\n        backendAuth: {{key: sk-dash}}\n      backends:\n      - ai:\n          name: qwen-plus\n          hostOverride: {}\n          provider: {{openAI: {{model: qwen-plus}}}}\n          policies:\n            ai:\n              routes:\n                /compatible-mode/v1/chat/completions: completions\n                /compatible-mode/v1/models: passthrough\n                '*': passthrough\n",
        up.addr
    ));
    let (_gw, addr) = gateway(&yaml).await;
    let r = send(
        addr,
        post_json(
            "/compatible-mode/v1/chat/completions",
            &json!({"model": "any-model-name", "messages": [{"role": "user", "content": "Hello!"}]}),
        ),
    )
    .await;
    let seen = r.json();
    assert_eq!(seen["path"], "/compatible-mode/v1/chat/completions");
    assert_eq!(seen["authority"], "dashscope.aliyuncs.com");
    assert_eq!(r.seen("authorization"), vec!["Bearer sk-dash"]);
    let sent: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["model"], "qwen-plus", "the provider's model wins");

    // Passthrough: body untouched, still the gateway's key.
    let r = get(addr, "/compatible-mode/v1/models").await;
    assert_eq!(r.json()["path"], "/compatible-mode/v1/models");
    assert_eq!(r.seen("authorization"), vec!["Bearer sk-dash"]);
}

#[tokio::test]
async fn models_are_answered_from_config() {
    let (_gw, addr) = gateway(&ai_route(
        "          name: m\n          hostOverride: 127.0.0.1:9\n          provider: {openAI: {model: gpt-main}}\n          policies:\n            ai:\n              routes: {/v1/models: models}\n              modelAliases: {small: gpt-small}\n",
    ))
    .await;
    let r = get(addr, "/v1/models").await;
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["gpt-main", "small", "gpt-small"]);
}

#[tokio::test]
async fn without_a_routes_table_calls_are_classified_by_their_well_known_path() {
    let openai = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let anthropic = sim::anthropic::spawn(sim::anthropic::Options::default())
        .await
        .unwrap();
    // No `ai.routes` anywhere; only /forced names a model.
    let yaml = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - matches: [{{path: {{pathPrefix: /anthropic}}}}]\n      policies: {{urlRewrite: {{path: {{prefix: /}}}}}}\n      backends:\n      - ai: {{name: a, hostOverride: '{a}', provider: {{anthropic: {{}}}}}}\n    - matches: [{{path: {{pathPrefix: /forced}}}}]\n      policies: {{urlRewrite: {{path: {{prefix: /}}}}}}\n      backends:\n      - ai: {{name: f, hostOverride: '{o}', provider: {{openAI: {{model: sim-gpt-mini}}}}}}\n    - backends:\n      - ai: {{name: o, hostOverride: '{o}', provider: {{openAI: {{}}}}}}\n",
        a = anthropic.addr,
        o = openai.addr,
    );
    let (_gw, addr) = gateway(&yaml).await;
    let anthropic_json = |path: &str, body: Value| {
        Request::post(path)
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(full(body.to_string()))
            .unwrap()
    };

    // An Anthropic client on the Anthropic provider is answered in Anthropic's shape.
    let r = send(
        addr,
        anthropic_json(
            "/anthropic/v1/messages",
            json!({"model": "claude-sim-1", "max_tokens": 64,
                   "messages": [{"role": "user", "content": "Hello there"}]}),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "message", "{v}");
    assert!(v["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Hello there"));
    let r = send(
        addr,
        anthropic_json(
            "/anthropic/v1/messages/count_tokens",
            json!({"model": "claude-sim-1",
                   "messages": [{"role": "user", "content": "count these words"}]}),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);

    // An Anthropic client on the OpenAI provider is translated.
    let r = send(
        addr,
        anthropic_json(
            "/v1/messages",
            json!({"model": "sim-gpt", "max_tokens": 64,
                   "messages": [{"role": "user", "content": "Hello there"}]}),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], "message");

    // Chat Completions as before.
    let r = send(
        addr,
        post_json(
            "/v1/chat/completions",
            &json!({"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}]}),
        ),
    )
    .await;
    assert_eq!(r.json()["object"], "chat.completion");

    // Models: the provider's own list when the config names none, else the config's.
    let ids = |r: Reply| -> Vec<String> {
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let r = get(addr, "/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ids(r), vec!["sim-gpt", "sim-gpt-mini"]);
    let r = get(addr, "/anthropic/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(ids(r).contains(&"claude-sim-1".to_string()));
    let r = get(addr, "/forced/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ids(r), vec!["sim-gpt-mini"]);
}

#[tokio::test]
async fn gateway_errors_are_written_in_the_callers_dialect() {
    // Nothing listens on port 9: the provider is unreachable.
    let (_gw, addr) = gateway(&ai_route(
        "          name: a\n          hostOverride: 127.0.0.1:9\n          provider: {anthropic: {}}\n          policies:\n            ai:\n              routes: {/v1/messages: messages, /v1/chat/completions: completions}\n",
    ))
    .await;
    let r = send(
        addr,
        post_json(
            "/v1/messages",
            &json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        ),
    )
    .await;
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["type"], "error", "Anthropic error shape: {v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1:9"));

    let r = send(
        addr,
        post_json(
            "/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        ),
    )
    .await;
    assert_eq!(r.status, 503);
    let v = r.json();
    assert!(v["error"]["message"].is_string(), "OpenAI error shape: {v}");
    assert!(v["error"]["type"].is_string());

    // Malformed JSON: 400 in the caller's dialect, with where it broke.
    let r = send(
        addr,
        Request::post("/v1/messages")
            .header("content-type", "application/json")
            .body(full("{\"model\": \"m\", \"messages\": ["))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("column"));
}

#[tokio::test]
async fn unsupported_operation_and_oversized_body_answer_in_the_callers_dialect() {
    let yaml = "config:\n  limits:\n    maxBufferedBodyBytes: 1024\nbinds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - matches: [{path: {pathPrefix: /claude}}]\n      backends:\n      - ai: {name: c, hostOverride: '127.0.0.1:9', provider: {anthropic: {}}, policies: {ai: {routes: {/embeddings: embeddings}}}}\n    - backends:\n      - ai: {name: o, hostOverride: '127.0.0.1:9', provider: {openAI: {}}}\n";
    let (_gw, addr) = gateway(yaml).await;
    let r = send(
        addr,
        post_json(
            "/claude/v1/embeddings",
            &json!({"model": "m", "input": "x"}),
        ),
    )
    .await;
    assert_eq!(r.status, 501);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("embeddings"));

    let big = "y".repeat(4096);
    let r = send(
        addr,
        post_json(
            "/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": big}]}),
        ),
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(r.json()["error"]["message"].is_string());
}

#[tokio::test]
async fn copilot_trades_the_github_token_once_and_reuses_the_copilot_token() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let exchanges = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_addr = listener.local_addr().unwrap();
    let counter = exchanges.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    async move {
                        let ok = req.uri().path() == "/copilot_internal/v2/token"
                            && req.headers()["authorization"] == "token gho_test";
                        counter.fetch_add(1, Ordering::SeqCst);
                        let expires = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs()
                            + 1800;
                        let mut resp = http::Response::new(full(if ok {
                            json!({"token": "copilot-session", "expires_at": expires, "refresh_in": 1500}).to_string()
                        } else {
                            "{\"message\":\"Bad credentials\"}".to_string()
                        }));
                        if !ok {
                            *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    let chat = sim::openai::spawn(sim::openai::Options {
        api_key: Some("copilot-session".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_gw, addr) = gateway(&ai_route(&format!(
        "          name: copilot\n          hostOverride: {}\n          provider: {{copilot: {{tokenUrl: 'http://{token_addr}/copilot_internal/v2/token'}}}}\n          policies: {{backendAuth: {{key: gho_test}}}}\n",
        chat.addr
    )))
    .await;
    for _ in 0..3 {
        let r = send(
            addr,
            post_json(
                "/v1/chat/completions",
                &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("hi"));
    }
    assert_eq!(
        exchanges.load(Ordering::SeqCst),
        1,
        "the Copilot token is cached"
    );
}

/// Time to the first body chunk and to the end, through the gateway.
async fn stream_timing(
    addr: std::net::SocketAddr,
    path: &str,
    body: Value,
) -> (Duration, Duration, String) {
    let mut req = post_json(path, &body);
    *req.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
    let start = Instant::now();
    let resp = h1_client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut first = None;
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            first.get_or_insert_with(|| start.elapsed());
            text.extend_from_slice(&d);
        }
    }
    (
        first.unwrap(),
        start.elapsed(),
        String::from_utf8(text).unwrap(),
    )
}

#[tokio::test]
async fn streams_leave_the_gateway_event_by_event_plain_and_translated() {
    let itl = Duration::from_millis(60);
    let openai = sim::openai::spawn(sim::openai::Options {
        inter_token_delay: itl,
        ..Default::default()
    })
    .await
    .unwrap();
    let anthropic = sim::anthropic::spawn(sim::anthropic::Options {
        inter_token_delay: itl,
        ..Default::default()
    })
    .await
    .unwrap();
    let yaml = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - matches: [{{path: {{pathPrefix: /openai}}}}]\n      backends:\n      - ai: {{name: o, hostOverride: '{}', provider: {{openAI: {{}}}}}}\n    - matches: [{{path: {{pathPrefix: /anthropic}}}}]\n      backends:\n      - ai: {{name: a, hostOverride: '{}', provider: {{anthropic: {{}}}}}}\n",
        openai.addr, anthropic.addr
    );
    let (_gw, addr) = gateway(&yaml).await;
    let words = "one two three four five six seven eight nine ten";
    for path in [
        "/openai/v1/chat/completions",
        "/anthropic/v1/chat/completions",
    ] {
        let (first, total, text) = stream_timing(
            addr,
            path,
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": words}]}),
        )
        .await;
        assert!(
            total >= itl * 8,
            "{path}: the simulated stream takes a while ({total:?})"
        );
        assert!(
            first * 3 < total,
            "{path}: first chunk after {first:?} of {total:?}: the stream was buffered"
        );
        // OpenAI framing, a usage chunk, and the terminator, whichever provider answered.
        assert!(text.contains("\"chat.completion.chunk\""), "{path}: {text}");
        assert!(text.contains("\"usage\""), "{path}: {text}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{path}: {text}");
    }
}

#[tokio::test]
async fn a_provider_reset_mid_stream_ends_with_an_error_event() {
    let anthropic = sim::anthropic::spawn(sim::anthropic::Options {
        fault: Some(sim::Fault::Reset),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_gw, addr) = gateway(&ai_route(&format!(
        "          name: a\n          hostOverride: {}\n          provider: {{anthropic: {{}}}}\n",
        anthropic.addr
    )))
    .await;
    let (_, _, text) = stream_timing(
        addr,
        "/v1/chat/completions",
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "a b c d e f g"}]}),
    )
    .await;
    let last = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .last()
        .unwrap();
    let data: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert!(
        data["error"]["message"].is_string(),
        "ends with an OpenAI error event: {text}"
    );
    assert!(
        !text.contains("[DONE]"),
        "a broken stream must not look complete: {text}"
    );
}

#[tokio::test]
async fn gemini_and_vertex_are_translated_and_vertex_tokens_are_cached() {
    let options = sim::gemini::Options {
        api_key: Some("gemini-key".into()),
        ..Default::default()
    }
    .with_test_service_account();
    let stats = options.stats.clone();
    let google = sim::gemini::spawn(options).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sa.json"),
        sim::gemini::test_service_account_json(&format!("http://{}/token", google.addr)),
    )
    .unwrap();
    let yaml = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - matches: [{{path: {{pathPrefix: /gemini}}}}]\n      backends:\n      - ai: {{name: g, hostOverride: '{g}', provider: {{gemini: {{model: gemini-2.5-flash}}}}, policies: {{backendAuth: {{key: gemini-key}}}}}}\n    - matches: [{{path: {{pathPrefix: /vertex}}}}]\n      backends:\n      - ai: {{name: v, hostOverride: '{g}', provider: {{vertex: {{projectId: proj-1, region: europe-west4, model: gemini-2.5-pro, credentials: {{file: sa.json}}}}}}}}\n",
        g = google.addr
    );
    let (_gw, addrs) = gateway_in(&yaml, dir.path()).await;
    let addr = addrs[0];
    for prefix in ["/gemini", "/vertex", "/vertex"] {
        let r = send(
            addr,
            post_json(
                &format!("{prefix}/v1/chat/completions"),
                &json!({"model": "ignored", "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "hello gemini"}]}),
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{prefix}: {}", r.text());
        let v = r.json();
        assert_eq!(v["object"], "chat.completion", "{v}");
        assert!(v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("hello gemini"));
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    }
    assert_eq!(stats.vertex_requests(), 2);
    assert_eq!(
        stats.tokens_issued(),
        1,
        "one token serves both Vertex calls"
    );

    let (_, _, text) = stream_timing(
        addr,
        "/vertex/v1/chat/completions",
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "stream from vertex"}]}),
    )
    .await;
    assert!(text.contains("\"chat.completion.chunk\""), "{text}");
    assert!(text.contains("stream"), "{text}");
    assert!(text.contains("\"usage\""), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // A wrong Gemini key comes back as the provider's refusal, in OpenAI's shape.
    let yaml_bad = yaml.replace("key: gemini-key", "key: wrong-key");
    let (_gw2, addrs) = gateway_in(&yaml_bad, dir.path()).await;
    let r = send(
        addrs[0],
        post_json(
            "/gemini/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        ),
    )
    .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("API key"));
}

/// One base URL, routes chosen by the `model` in the body: OpenAI and Anthropic providers and
/// a plain upstream behind `/v1`, an OpenAI client translated to the Anthropic provider by
/// model alone, the body intact after routing read it, and a model no route serves answered
/// 404 `model_not_found` in the caller's own dialect.
#[tokio::test]
async fn routes_are_chosen_by_the_model_in_the_body() {
    let openai = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let anthropic = sim::anthropic::spawn(sim::anthropic::Options::default())
        .await
        .unwrap();
    let plain = echo("plain").await;
    let yaml = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - matches: [{{path: {{pathPrefix: /v1}}, model: {{regex: 'sim-gpt.*'}}}}]\n      backends:\n      - ai: {{name: o, hostOverride: '{o}', provider: {{openAI: {{}}}}}}\n    - matches: [{{path: {{pathPrefix: /v1}}, model: {{exact: claude-sim-1}}}}]\n      backends:\n      - ai: {{name: a, hostOverride: '{a}', provider: {{anthropic: {{}}}}}}\n    - matches: [{{path: {{pathPrefix: /v1}}, model: {{exact: echo-me}}}}]\n      backends:\n      - host: {p}\n    - matches: [{{path: {{pathPrefix: /health}}}}]\n      policies: {{directResponse: {{status: 200, body: ok}}}}\n",
        o = openai.addr,
        a = anthropic.addr,
        p = plain.addr,
    );
    let (_gw, addr) = gateway(&yaml).await;
    let chat = |model: &str| {
        post_json(
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]}),
        )
    };

    let r = send(addr, chat("sim-gpt-mini")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(r.json()["model"], "sim-gpt-mini");

    // The Anthropic provider, by model alone, for an OpenAI client: translated both ways.
    let r = send(addr, chat("claude-sim-1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Hello there"));

    // The body routing read reaches the upstream whole.
    let body = r#"{"model":"echo-me","messages":[{"role":"user","content":"keep me"}],"z":1}"#;
    let r = send(
        addr,
        Request::post("/v1/anything")
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream-name"), Some("plain"));
    assert_eq!(r.json()["body"], body);

    // A model no route serves: 404 in the caller's dialect, naming no other model.
    let r = send(addr, chat("gpt-unknown")).await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    assert_eq!(v["error"]["type"], "not_found_error", "{v}");
    assert!(!v.to_string().contains("sim-gpt"), "{v}");
    let r = send(
        addr,
        Request::post("/v1/messages")
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(full(
                json!({"model": "claude-other", "max_tokens": 8,
                       "messages": [{"role": "user", "content": "x"}]})
                .to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "not_found_error");

    // Routes without a model match still route by path; a request naming no model gets the
    // usual no-route answer.
    assert_eq!(get(addr, "/health").await.text(), "ok");
    let r = send(
        addr,
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(full("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "no_route");
}
