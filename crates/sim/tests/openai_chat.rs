//! OpenAI Chat Completions: object shapes and key order, streaming, tool calls, validation.

mod common;

use common::{keys, parse_sse, post, time_tool_openai, weather_tool_openai};
use serde_json::{json, Value};
use sim::openai::{spawn, Options};

const PATH: &str = "/v1/chat/completions";

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[tokio::test]
async fn completion_object_has_reference_shape_and_key_order() {
    let sim = spawn(Options::default()).await.unwrap();
    let r = post(
        sim.addr,
        PATH,
        &[],
        &json!({"model": "sim-gpt", "messages": user("Hi there")}),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        keys(&v),
        [
            "id",
            "object",
            "created",
            "model",
            "choices",
            "usage",
            "service_tier",
            "system_fingerprint"
        ]
    );
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "sim-gpt");
    let choice = &v["choices"][0];
    assert_eq!(
        keys(choice),
        ["index", "message", "logprobs", "finish_reason"]
    );
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["content"], "Hello! You said: Hi there");
    let usage = &v["usage"];
    assert_eq!(
        keys(usage),
        [
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "prompt_tokens_details",
            "completion_tokens_details"
        ]
    );
    // "Hi there" = 2 tokens + 4 framing; "Hello! You said: Hi there" = 5.
    assert_eq!(usage["prompt_tokens"], 6);
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["total_tokens"], 11);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 0);
}

#[tokio::test]
async fn repeated_prefix_reports_cached_tokens_and_effort_reports_reasoning() {
    let sim = spawn(Options::default()).await.unwrap();
    let convo = |last: &str| {
        json!({"model": "m", "reasoning_effort": "low", "messages": [
            {"role": "system", "content": "You are a careful assistant"},
            {"role": "user", "content": last}
        ]})
    };
    let first = post(sim.addr, PATH, &[], &convo("one")).await.json();
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let second = post(sim.addr, PATH, &[], &convo("two")).await.json();
    // The system message (5 tokens + 4 framing) is the shared prefix.
    assert_eq!(second["usage"]["prompt_tokens_details"]["cached_tokens"], 9);
    let reasoning = &second["usage"]["completion_tokens_details"]["reasoning_tokens"];
    assert_eq!(*reasoning, 16);
    assert_eq!(second["usage"]["completion_tokens"], 4 + 16);
}

#[tokio::test]
async fn stream_reassembles_to_the_same_text_and_ends_with_usage_then_done() {
    let sim = spawn(Options::default()).await.unwrap();
    let body = json!({"model": "m", "messages": user("stream me please"), "stream": true,
                      "stream_options": {"include_usage": true}});
    let r = post(sim.addr, PATH, &[], &body).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.body_error.is_none());
    let events = parse_sse(&r.text());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();
    let ids: Vec<&Value> = chunks.iter().map(|c| &c["id"]).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one id per stream");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello! You said: stream me please");
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(
        keys(usage_chunk),
        [
            "id",
            "object",
            "created",
            "model",
            "choices",
            "usage",
            "service_tier",
            "system_fingerprint"
        ]
    );
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 6);
    assert!(rest
        .iter()
        .all(|c| c["usage"].is_null() && c.get("usage").is_some()));
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        rest.iter()
            .filter(|c| !c["choices"][0]["finish_reason"].is_null())
            .count(),
        1
    );
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_field() {
    let sim = spawn(Options::default()).await.unwrap();
    let body = json!({"model": "m", "messages": user("hi"), "stream": true});
    let events = parse_sse(&post(sim.addr, PATH, &[], &body).await.text());
    for e in &events[..events.len() - 1] {
        assert!(e.json().get("usage").is_none(), "{}", e.data);
    }
}

#[tokio::test]
async fn weather_question_gets_a_tool_call_built_from_the_schema() {
    let sim = spawn(Options::default()).await.unwrap();
    let body = json!({"model": "m", "messages": user("What's the weather like?"),
                      "tools": [time_tool_openai(), weather_tool_openai()]});
    let v = post(sim.addr, PATH, &[], &body).await.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(keys(&calls[0]), ["id", "type", "function"]);
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"location": "Paris", "unit": "celsius"}));
}

#[tokio::test]
async fn tool_choice_none_auto_required_and_named() {
    let sim = spawn(Options::default()).await.unwrap();
    let ask = |choice: Value, text: &str| {
        json!({"model": "m", "messages": user(text), "tool_choice": choice,
               "tools": [weather_tool_openai(), time_tool_openai()]})
    };
    let names = |v: &Value| -> Vec<String> {
        v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|c| c["function"]["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let none = post(sim.addr, PATH, &[], &ask(json!("none"), "weather?"))
        .await
        .json();
    assert!(names(&none).is_empty());
    let auto = post(sim.addr, PATH, &[], &ask(json!("auto"), "hello"))
        .await
        .json();
    assert!(names(&auto).is_empty());
    let required = post(sim.addr, PATH, &[], &ask(json!("required"), "hello"))
        .await
        .json();
    assert_eq!(names(&required), ["get_weather"]);
    let named = ask(
        json!({"type": "function", "function": {"name": "get_time"}}),
        "weather?",
    );
    assert_eq!(
        names(&post(sim.addr, PATH, &[], &named).await.json()),
        ["get_time"]
    );
    let both = post(
        sim.addr,
        PATH,
        &[],
        &ask(json!("auto"), "weather and time, both"),
    )
    .await
    .json();
    assert_eq!(names(&both), ["get_weather", "get_time"]);
}

#[tokio::test]
async fn streamed_parallel_tool_calls_reassemble_into_valid_json() {
    let sim = spawn(Options::default()).await.unwrap();
    let body = json!({"model": "m", "stream": true,
                      "messages": user("call get_weather and get_time"),
                      "tools": [weather_tool_openai(), time_tool_openai()]});
    let events = parse_sse(&post(sim.addr, PATH, &[], &body).await.text());
    let mut calls: Vec<(String, String, String)> = Vec::new(); // (id, name, arguments)
    let mut fragments_per_call = Vec::new();
    let mut finish = None;
    for e in events.iter().filter(|e| e.data != "[DONE]") {
        let chunk = e.json();
        let choice = &chunk["choices"][0];
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        for tc in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = tc["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                // Only the first delta of an index carries id, type and name.
                assert_eq!(tc["type"], "function");
                calls.push((
                    tc["id"].as_str().unwrap().to_string(),
                    tc["function"]["name"].as_str().unwrap().to_string(),
                    String::new(),
                ));
                fragments_per_call.push(0);
            } else {
                assert!(index < calls.len(), "index skipped ahead: {index}");
                assert!(
                    tc.get("id").is_none() && tc["function"].get("name").is_none(),
                    "{tc}"
                );
            }
            if let Some(args) = tc["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                calls[index].2.push_str(args);
                fragments_per_call[index] += 1;
            }
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0].0, calls[1].0, "distinct call ids");
    assert!(
        fragments_per_call.iter().all(|n| *n > 1),
        "arguments split: {fragments_per_call:?}"
    );
    let weather: Value = serde_json::from_str(&calls[0].2).unwrap();
    assert_eq!(weather["location"], "Paris");
    let time: Value = serde_json::from_str(&calls[1].2).unwrap();
    assert_eq!(time, json!({"timezone": "x"}));
}

#[tokio::test]
async fn tool_result_is_quoted_instead_of_calling_again() {
    let sim = spawn(Options::default()).await.unwrap();
    let body = json!({"model": "m", "tools": [weather_tool_openai()], "tool_choice": "required",
    "messages": [
        {"role": "user", "content": "What's the weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"}
    ]});
    let v = post(sim.addr, PATH, &[], &body).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The tool returned: 18C and sunny"
    );
}

#[tokio::test]
async fn stop_and_max_tokens_cut_the_reply() {
    let sim = spawn(Options::default()).await.unwrap();
    let stopped = json!({"model": "m", "messages": user("abc"), "stop": ["said"]});
    let v = post(sim.addr, PATH, &[], &stopped).await.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello! You ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let limited =
        json!({"model": "m", "messages": user("one two three"), "max_completion_tokens": 2});
    let v = post(sim.addr, PATH, &[], &limited).await.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello! You");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn validation_errors_use_the_openai_error_shape() {
    let sim = spawn(Options::default()).await.unwrap();
    let no_messages = post(sim.addr, PATH, &[], &json!({"model": "m"})).await;
    assert_eq!(no_messages.status, 400);
    let err = no_messages.json();
    assert_eq!(keys(&err["error"]), ["message", "type", "param", "code"]);
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert_eq!(err["error"]["param"], "messages");

    let no_model = post(sim.addr, PATH, &[], &json!({"messages": user("x")})).await;
    assert_eq!(no_model.status, 400);
    assert_eq!(no_model.json()["error"]["param"], "model");

    let malformed = common::send(sim.addr, "POST", PATH, &[], "{\"model\":".into()).await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"]["type"], "invalid_request_error");

    let not_object = post(sim.addr, PATH, &[], &json!([1, 2])).await;
    assert_eq!(not_object.status, 400);
    let wrong_types = post(
        sim.addr,
        PATH,
        &[],
        &json!({"model": 5, "messages": "x", "tools": 7}),
    )
    .await;
    assert_eq!(wrong_types.status, 400);
}

#[tokio::test]
async fn lenient_mode_serves_the_default_model() {
    let options = Options {
        require_model: false,
        ..Default::default()
    };
    let sim = spawn(options).await.unwrap();
    let v = post(sim.addr, PATH, &[], &json!({"messages": user("x")}))
        .await
        .json();
    assert_eq!(v["model"], "sim-gpt");
}

#[tokio::test]
async fn models_list_and_retrieve() {
    let sim = spawn(Options::default()).await.unwrap();
    let list = common::get(sim.addr, "/v1/models", &[]).await.json();
    assert_eq!(keys(&list), ["object", "data"]);
    assert_eq!(list["data"][0]["id"], "sim-gpt");
    assert_eq!(
        keys(&list["data"][0]),
        ["id", "object", "created", "owned_by"]
    );
    let one = common::get(sim.addr, "/v1/models/sim-gpt-mini", &[]).await;
    assert_eq!(one.json()["id"], "sim-gpt-mini");
    let missing = common::get(sim.addr, "/v1/models/nope", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let options = Options {
        api_key: Some("sk-sim".into()),
        ..Default::default()
    };
    let sim = spawn(options).await.unwrap();
    let body = json!({"model": "m", "messages": user("x")});
    let missing = post(sim.addr, PATH, &[], &body).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"]["type"], "invalid_request_error");
    let wrong = post(sim.addr, PATH, &[("authorization", "Bearer nope")], &body).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");
    let right = post(sim.addr, PATH, &[("authorization", "Bearer sk-sim")], &body).await;
    assert_eq!(right.status, 200);
}

#[tokio::test]
async fn azure_serves_deployment_urls_with_its_key_and_errors() {
    let sim = spawn(Options {
        azure: Some(sim::openai::Azure {
            deployments: vec![("prod-4o".into(), "gpt-4o-2024-08-06".into())],
            api_key: "az-key".into(),
        }),
        ..Options::default()
    })
    .await
    .unwrap();
    let body = json!({"messages": user("Hi Azure")});
    let url = "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21";
    let r = post(sim.addr, url, &[("api-key", "az-key")], &body).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        v["model"], "gpt-4o-2024-08-06",
        "the deployment picks the model"
    );
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello! You said: Hi Azure"
    );

    let r = post(sim.addr, url, &[("api-key", "wrong")], &body).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "401");
    let r = post(
        sim.addr,
        "/openai/deployments/prod-4o/chat/completions",
        &[("api-key", "az-key")],
        &body,
    )
    .await;
    assert_eq!(r.status, 404, "no api-version");
    assert_eq!(r.json()["error"]["message"], "Resource not found");
    let r = post(
        sim.addr,
        "/openai/deployments/other/chat/completions?api-version=2024-10-21",
        &[("api-key", "az-key")],
        &body,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "DeploymentNotFound");
    // OpenAI's own paths are not Azure's.
    let r = post(sim.addr, PATH, &[("api-key", "az-key")], &body).await;
    assert_eq!(r.status, 404);
}
