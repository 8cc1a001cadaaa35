//! Anthropic Messages API: message shape and key order, header checks, errors, tool use, tool
//! results, thinking, stop sequences, caching, token counting and the models list.

mod common;

use common::{get, keys, post};
use serde_json::{json, Value};
use sim::anthropic::{spawn, Options};

const V: (&str, &str) = ("anthropic-version", "2023-06-01");

fn request(text: &str) -> Value {
    json!({"model": "claude-sim-1", "max_tokens": 256,
           "messages": [{"role": "user", "content": text}]})
}

fn weather_tool() -> Value {
    json!({"name": "get_weather", "description": "Current weather", "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}})
}

#[tokio::test]
async fn message_has_documented_shape_key_order_and_request_id() {
    let sim = spawn(Options::default()).await.unwrap();
    let r = post(sim.addr, "/v1/messages", &[V], &request("Hello Claude")).await;
    assert_eq!(r.status, 200);
    assert!(r.header("request-id").unwrap().starts_with("req_"));
    let m = r.json();
    assert_eq!(
        keys(&m),
        [
            "id",
            "type",
            "role",
            "model",
            "content",
            "stop_reason",
            "stop_sequence",
            "usage"
        ]
    );
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(m["type"], "message");
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "Hello! You said: Hello Claude"}])
    );
    assert_eq!(m["stop_reason"], "end_turn");
    assert!(m["stop_sequence"].is_null());
    assert_eq!(
        keys(&m["usage"]),
        [
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens"
        ]
    );
    // "Hello Claude" = 2 tokens + 3 framing; the reply is 5 tokens.
    assert_eq!(m["usage"]["input_tokens"], 5);
    assert_eq!(m["usage"]["output_tokens"], 5);
}

#[tokio::test]
async fn header_and_body_validation_errors() {
    let options = Options {
        api_key: Some("sk-test".into()),
        ..Default::default()
    };
    let sim = spawn(options).await.unwrap();
    let key = ("x-api-key", "sk-test");

    let no_key = post(sim.addr, "/v1/messages", &[V], &request("x")).await;
    assert_eq!(no_key.status, 401);
    let err = no_key.json();
    assert_eq!(keys(&err), ["type", "error", "request_id"]);
    assert_eq!(err["type"], "error");
    assert_eq!(keys(&err["error"]), ["type", "message"]);
    assert_eq!(err["error"]["type"], "authentication_error");
    assert_eq!(err["request_id"].as_str(), no_key.header("request-id"));

    let wrong_key = post(
        sim.addr,
        "/v1/messages",
        &[V, ("x-api-key", "nope")],
        &request("x"),
    )
    .await;
    assert_eq!(wrong_key.status, 401);

    let no_version = post(sim.addr, "/v1/messages", &[key], &request("x")).await;
    assert_eq!(no_version.status, 400);
    assert_eq!(no_version.json()["error"]["type"], "invalid_request_error");
    assert!(no_version.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("anthropic-version"));

    for (field, body) in [
        ("max_tokens", json!({"model": "m", "messages": []})),
        ("messages", json!({"model": "m", "max_tokens": 5})),
        ("model", json!({"max_tokens": 5, "messages": []})),
    ] {
        let r = post(sim.addr, "/v1/messages", &[V, key], &body).await;
        assert_eq!(r.status, 400, "{field}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.starts_with(field), "{field}: {msg}");
    }
    let bad_role =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]});
    assert_eq!(
        post(sim.addr, "/v1/messages", &[V, key], &bad_role)
            .await
            .status,
        400
    );
    let malformed = common::send(sim.addr, "POST", "/v1/messages", &[V, key], "{nope".into()).await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"]["type"], "invalid_request_error");
    let unknown = post(sim.addr, "/v1/nothing", &[V, key], &json!({})).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn weather_question_gets_tool_use_after_a_preface() {
    let sim = spawn(Options::default()).await.unwrap();
    let mut body = request("What's the weather in Paris?");
    body["tools"] = json!([weather_tool()]);
    let m = post(sim.addr, "/v1/messages", &[V], &body).await.json();
    assert_eq!(m["stop_reason"], "tool_use");
    let content = m["content"].as_array().unwrap();
    assert_eq!(content[0]["type"], "text");
    let tool_use = &content[1];
    assert_eq!(keys(tool_use), ["type", "id", "name", "input"]);
    assert!(tool_use["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(tool_use["name"], "get_weather");
    assert_eq!(
        tool_use["input"],
        json!({"location": "Paris", "unit": "celsius"})
    );

    // `any` calls straight away, without the preface.
    body["tool_choice"] = json!({"type": "any"});
    let m = post(sim.addr, "/v1/messages", &[V], &body).await.json();
    assert_eq!(m["content"][0]["type"], "tool_use");
    body["tool_choice"] = json!({"type": "none"});
    let m = post(sim.addr, "/v1/messages", &[V], &body).await.json();
    assert_eq!(m["stop_reason"], "end_turn");
}

#[tokio::test]
async fn tool_result_is_quoted() {
    let sim = spawn(Options::default()).await.unwrap();
    let body = json!({"model": "m", "max_tokens": 100, "tools": [weather_tool()], "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
            "content": [{"type": "text", "text": "rainy, 12C"}]}]}
    ]});
    let m = post(sim.addr, "/v1/messages", &[V], &body).await.json();
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["content"][0]["text"], "The tool returned: rainy, 12C");
}

#[tokio::test]
async fn thinking_adds_a_signed_block_first_and_validates_the_budget() {
    let sim = spawn(Options::default()).await.unwrap();
    let mut body = request("think about it");
    body["max_tokens"] = json!(4096);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 2048});
    let m = post(sim.addr, "/v1/messages", &[V], &body).await.json();
    let thinking = &m["content"][0];
    assert_eq!(keys(thinking), ["type", "thinking", "signature"]);
    assert!(!thinking["signature"].as_str().unwrap().is_empty());
    assert_eq!(m["content"][1]["type"], "text");
    let thinking_tokens = sim::count_tokens(thinking["thinking"].as_str().unwrap());
    assert_eq!(
        m["usage"]["output_tokens"].as_u64().unwrap(),
        thinking_tokens + 6
    );

    body["thinking"]["budget_tokens"] = json!(100);
    assert_eq!(
        post(sim.addr, "/v1/messages", &[V], &body).await.status,
        400
    );
    body["thinking"]["budget_tokens"] = json!(8192);
    assert_eq!(
        post(sim.addr, "/v1/messages", &[V], &body).await.status,
        400
    );
}

#[tokio::test]
async fn stop_sequences_and_max_tokens_set_the_stop_reason() {
    let sim = spawn(Options::default()).await.unwrap();
    let mut body = request("one two three");
    body["stop_sequences"] = json!(["two"]);
    let m = post(sim.addr, "/v1/messages", &[V], &body).await.json();
    assert_eq!(m["stop_reason"], "stop_sequence");
    assert_eq!(m["stop_sequence"], "two");
    assert_eq!(m["content"][0]["text"], "Hello! You said: one ");

    let mut body = request("one two three");
    body["max_tokens"] = json!(3);
    let m = post(sim.addr, "/v1/messages", &[V], &body).await.json();
    assert_eq!(m["stop_reason"], "max_tokens");
    assert_eq!(m["content"][0]["text"], "Hello! You said");
    assert_eq!(m["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn cached_system_prompt_is_read_from_cache_and_count_tokens_agrees() {
    let sim = spawn(Options::default()).await.unwrap();
    let system = json!([{"type": "text", "text": "You are a very helpful assistant",
                         "cache_control": {"type": "ephemeral"}}]);
    let mut body = request("hi");
    body["system"] = system;
    let m = post(sim.addr, "/v1/messages", &[V], &body).await.json();
    assert_eq!(m["usage"]["cache_read_input_tokens"], 6);
    assert_eq!(m["usage"]["input_tokens"], 4);

    body.as_object_mut().unwrap().remove("max_tokens");
    let counted = post(sim.addr, "/v1/messages/count_tokens", &[V], &body).await;
    assert_eq!(counted.status, 200);
    assert_eq!(counted.json(), json!({"input_tokens": 10}));
}

#[tokio::test]
async fn models_list_has_anthropic_shape_and_paginates() {
    let sim = spawn(Options::default()).await.unwrap();
    let list = get(sim.addr, "/v1/models", &[V]).await.json();
    assert_eq!(keys(&list), ["data", "has_more", "first_id", "last_id"]);
    assert_eq!(
        keys(&list["data"][0]),
        ["type", "id", "display_name", "created_at"]
    );
    assert_eq!(list["data"][0]["display_name"], "Claude Sim 1");
    assert_eq!(list["first_id"], "claude-sim-1");
    assert_eq!(list["last_id"], "claude-sim-1-mini");
    assert_eq!(list["has_more"], false);

    let page = get(sim.addr, "/v1/models?limit=1", &[V]).await.json();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], true);
    let next = get(sim.addr, "/v1/models?limit=1&after_id=claude-sim-1", &[V])
        .await
        .json();
    assert_eq!(next["first_id"], "claude-sim-1-mini");
    assert_eq!(next["has_more"], false);

    assert_eq!(
        get(sim.addr, "/v1/models/claude-sim-1", &[V]).await.json()["id"],
        "claude-sim-1"
    );
    assert_eq!(get(sim.addr, "/v1/models/nope", &[V]).await.status, 404);
}
