//! Bedrock (Converse) egress: requests, responses, errors and event streams
//! against golden fixtures (`tests/fixtures/bedrock_*`), for OpenAI and
//! Anthropic clients.

mod common;

use bytes::Bytes;
use common::{fixture, json_of, prepare_plain};
use llm::eventstream::{Decoder, Message};
use llm::{
    error_body, prepare_request, translate_error, translate_response, Format, RequestOptions,
    StreamTranslator, Usage,
};
use serde_json::{json, Map, Value};

fn prepare(ingress: Format, body: &[u8]) -> Result<llm::PreparedRequest, llm::LlmError> {
    prepare_plain(ingress, Format::Bedrock, body)
}

/// Replaces the made-up parts of a translated body (wall-clock `created`,
/// generated id) with fixed values, asserting they were there.
fn normalise(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if let Some(created) = o.get_mut("created") {
            assert!(created.as_u64().is_some_and(|c| c > 1_600_000_000));
            *created = json!(0);
        }
        if let Some(id) = o.get_mut("id") {
            let s = id.as_str().expect("id is a string");
            assert!(
                s.starts_with("chatcmpl-gw-") || s.starts_with("msg_gw_"),
                "generated id: {s}"
            );
            *id = json!("ID");
        }
        if let Some(message) = o.get_mut("message") {
            *message = normalise(message.take());
        }
    }
    v
}

// ---------- requests ----------

#[test]
fn openai_request_to_converse_golden() {
    let prepared =
        prepare(Format::OpenAiChat, &fixture("bedrock_request_openai.json")).expect("ok");
    assert_eq!(
        json_of(&prepared.body),
        json_of(&fixture("bedrock_request_openai_to_bedrock.json"))
    );
    // The model goes in the URL and `stream` picks converse-stream.
    assert_eq!(prepared.upstream_model.as_deref(), Some("claude-sonnet"));
    assert!(prepared.stream);
    assert_eq!(prepared.params["max_completion_tokens"], json!(512));
}

#[test]
fn anthropic_request_to_converse_golden() {
    let prepared = prepare(
        Format::AnthropicMessages,
        &fixture("bedrock_request_anthropic.json"),
    )
    .expect("ok");
    assert_eq!(
        json_of(&prepared.body),
        json_of(&fixture("bedrock_request_anthropic_to_bedrock.json"))
    );
    assert!(!prepared.stream);
}

#[test]
fn consecutive_same_role_turns_are_merged_and_empty_ones_dropped() {
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "b"}]},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"}
    ]});
    let out = json_of(
        &prepare(Format::OpenAiChat, body.to_string().as_bytes())
            .expect("ok")
            .body,
    );
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"text": "a"}, {"text": "b"}, {"text": "c"}]},
            {"role": "assistant", "content": [{"text": "d"}]}
        ])
    );
    assert!(out.get("model").is_none() && out.get("stream").is_none());
}

#[test]
fn tool_choice_none_and_named() {
    let tools =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let req = |choice: Value, messages: Value| {
        let body =
            json!({"model": "m", "tools": tools, "tool_choice": choice, "messages": messages});
        json_of(
            &prepare(Format::OpenAiChat, body.to_string().as_bytes())
                .expect("ok")
                .body,
        )
    };
    let plain = json!([{"role": "user", "content": "hi"}]);
    assert!(req(json!("none"), plain.clone())
        .get("toolConfig")
        .is_none());
    assert_eq!(
        req(
            json!({"type": "function", "function": {"name": "f"}}),
            plain.clone()
        )["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "f"}})
    );
    assert_eq!(
        req(json!("required"), plain)["toolConfig"]["toolChoice"],
        json!({"any": {}})
    );
    // With tool blocks in the history Converse requires toolConfig: tools
    // stay, without a choice.
    let history = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t", "content": "ok"}
    ]);
    let out = req(json!("none"), history);
    assert_eq!(out["toolConfig"]["tools"][0]["toolSpec"]["name"], "f");
    assert!(out["toolConfig"].get("toolChoice").is_none());
}

#[test]
fn unsendable_requests_are_400_not_panics() {
    let cases = [
        // Remote image: Converse needs bytes.
        json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}]}),
        json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "[1]"}}]}]}),
        json!({"model": "m", "messages": [{"role": "function", "content": "x"}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
    ];
    for body in cases {
        let err = prepare(Format::OpenAiChat, body.to_string().as_bytes()).expect_err("400");
        assert_eq!(err.status, 400, "{body}: {}", err.message);
    }
    let err = prepare_request(
        Format::Bedrock,
        Format::OpenAiChat,
        br#"{"messages":[]}"#,
        &RequestOptions {
            model_override: None,
            model_aliases: &[],
            defaults: &Map::new(),
            overrides: &Map::new(),
            default_max_tokens: 1,
        },
    )
    .expect_err("Bedrock is not a client format");
    assert_eq!(err.status, 400);
}

// ---------- responses ----------

fn expected_usage() -> Usage {
    Usage {
        // 30 fresh + 80 cache reads + 20 cache writes.
        input_tokens: Some(130),
        output_tokens: Some(25),
        cached_input_tokens: Some(80),
        reasoning_tokens: None,
    }
}

#[test]
fn converse_response_to_openai_golden() {
    let (body, info) = translate_response(
        Format::OpenAiChat,
        Format::Bedrock,
        &fixture("bedrock_response.json"),
    )
    .expect("ok");
    assert_eq!(
        normalise(json_of(&body.expect("translated"))),
        json_of(&fixture("bedrock_response_to_openai.json"))
    );
    assert_eq!(info.usage, expected_usage());
    assert_eq!(info.completion, vec!["Checking both.".to_string()]);
    assert_eq!(info.model, None);
}

#[test]
fn converse_response_to_anthropic_golden() {
    let (body, info) = translate_response(
        Format::AnthropicMessages,
        Format::Bedrock,
        &fixture("bedrock_response.json"),
    )
    .expect("ok");
    assert_eq!(
        normalise(json_of(&body.expect("translated"))),
        json_of(&fixture("bedrock_response_to_anthropic.json"))
    );
    assert_eq!(info.usage, expected_usage());
}

#[test]
fn stop_reasons_and_bad_bodies() {
    for (stop, openai, anthropic) in [
        ("end_turn", "stop", "end_turn"),
        ("stop_sequence", "stop", "end_turn"),
        ("max_tokens", "length", "max_tokens"),
        ("guardrail_intervened", "content_filter", "refusal"),
        ("content_filtered", "content_filter", "refusal"),
    ] {
        let body = json!({"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": stop});
        let (o, _) = translate_response(
            Format::OpenAiChat,
            Format::Bedrock,
            body.to_string().as_bytes(),
        )
        .expect("ok");
        assert_eq!(
            json_of(&o.expect("t"))["choices"][0]["finish_reason"],
            openai
        );
        let (a, _) = translate_response(
            Format::AnthropicMessages,
            Format::Bedrock,
            body.to_string().as_bytes(),
        )
        .expect("ok");
        assert_eq!(json_of(&a.expect("t"))["stop_reason"], anthropic);
    }
    for bad in [&b"not json"[..], b"[1]", b"\"x\""] {
        let err = translate_response(Format::OpenAiChat, Format::Bedrock, bad).expect_err("502");
        assert_eq!(err.status, 502);
    }
    // Missing pieces are tolerated: an empty answer, not a panic.
    let (o, _) = translate_response(Format::OpenAiChat, Format::Bedrock, b"{}").expect("ok");
    assert_eq!(
        json_of(&o.expect("t"))["choices"][0]["message"]["content"],
        ""
    );
}

// ---------- errors ----------

#[test]
fn bedrock_errors_map_by_status_keeping_the_message() {
    let cases = [
        (
            400,
            "invalid_request_error",
            "invalid_request_error",
            "ValidationException",
        ),
        (
            403,
            "permission_error",
            "permission_error",
            "AccessDeniedException",
        ),
        (
            404,
            "not_found_error",
            "not_found_error",
            "ResourceNotFoundException",
        ),
        (
            429,
            "rate_limit_error",
            "rate_limit_error",
            "ThrottlingException",
        ),
        (500, "server_error", "api_error", "InternalServerException"),
        (
            503,
            "server_error",
            "overloaded_error",
            "ServiceUnavailableException",
        ),
    ];
    for (status, openai, anthropic, exception) in cases {
        let body = br#"{"message":"Something specific happened"}"#;
        let o = json_of(
            &translate_error(Format::OpenAiChat, Format::Bedrock, status, body).expect("t"),
        );
        assert_eq!(
            o,
            json!({"error": {"message": "Something specific happened", "type": openai, "param": null, "code": exception}}),
            "{status}"
        );
        let a = json_of(
            &translate_error(Format::AnthropicMessages, Format::Bedrock, status, body).expect("t"),
        );
        assert_eq!(
            a,
            json!({"type": "error", "error": {"type": anthropic, "message": "Something specific happened"}}),
            "{status}"
        );
    }
    // A `__type` in the body beats the status.
    let typed =
        br#"{"__type":"com.amazon.coral.service#ThrottlingException","message":"slow down"}"#;
    let o = json_of(&translate_error(Format::OpenAiChat, Format::Bedrock, 400, typed).expect("t"));
    assert_eq!(o["error"]["type"], "rate_limit_error");
    assert_eq!(o["error"]["code"], "ThrottlingException");
    // Unrecognisable bodies keep the status in the message.
    let a = json_of(
        &translate_error(Format::AnthropicMessages, Format::Bedrock, 502, b"<html>").expect("t"),
    );
    assert_eq!(a["error"]["type"], "api_error");
    assert!(a["error"]["message"].as_str().unwrap_or("").contains("502"));
    // Bedrock is never a client format: gateway errors fall back to OpenAI's shape.
    assert_eq!(
        json_of(&error_body(Format::Bedrock, 429, "x")),
        json!({"error": {"message": "x", "type": "rate_limit_error", "param": null, "code": null}})
    );
}

// ---------- streams ----------

/// The event-stream body for `bedrock_stream_events.jsonl`.
fn stream_body() -> Vec<u8> {
    let lines = String::from_utf8(fixture("bedrock_stream_events.jsonl")).expect("utf8");
    let mut body = Vec::new();
    for line in lines.lines() {
        let v: Value = serde_json::from_str(line).expect("fixture json");
        body.extend(event_frame(
            v["event"].as_str().expect("event"),
            &v["payload"],
        ));
    }
    body
}

fn event_frame(kind: &str, payload: &Value) -> Vec<u8> {
    Message::new(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string(),
    )
    .encode()
}

fn run(t: &mut StreamTranslator, input: &[u8], chunk_size: usize) -> String {
    let mut out = Vec::new();
    for c in input.chunks(chunk_size) {
        out.extend_from_slice(&t.feed(Bytes::copy_from_slice(c)));
    }
    out.extend_from_slice(&t.finish());
    String::from_utf8(out).expect("utf8")
}

/// (event name, normalised data) pairs of a complete SSE output.
fn events(out: &str) -> Vec<(Option<String>, Value)> {
    assert!(out.ends_with("\n\n"), "ends with a complete event: {out:?}");
    out.split_terminator("\n\n")
        .map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(if v == "[DONE]" {
                        json!("[DONE]")
                    } else {
                        normalise(serde_json::from_str(v).expect("json"))
                    });
                } else {
                    panic!("unexpected line {line:?}");
                }
            }
            (name, data.expect("data line"))
        })
        .collect()
}

fn assert_matches_jsonl(got: &[(Option<String>, Value)], fixture_name: &str) {
    let expected = String::from_utf8(fixture(fixture_name)).expect("utf8");
    let expected: Vec<Value> = expected
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture json"))
        .collect();
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for ((name, data), e) in got.iter().zip(&expected) {
        if let Some(name) = name {
            assert_eq!(Some(name.as_str()), e["type"].as_str(), "event name = type");
        }
        assert_eq!(data, e);
    }
}

/// Whole, byte by byte and in 7-byte pieces must give the same output.
fn translate_any_chunking(ingress: Format, include_usage: bool) -> (String, StreamTranslator) {
    let input = stream_body();
    let mut whole = StreamTranslator::new(ingress, Format::Bedrock, include_usage);
    let out_whole = run(&mut whole, &input, input.len());
    let mut bytewise = StreamTranslator::new(ingress, Format::Bedrock, include_usage);
    let out_bytes = run(&mut bytewise, &input, 1);
    assert_eq!(events(&out_whole), events(&out_bytes));
    let mut sevens = StreamTranslator::new(ingress, Format::Bedrock, include_usage);
    assert_eq!(events(&out_whole), events(&run(&mut sevens, &input, 7)));
    (out_whole, bytewise)
}

#[test]
fn converse_stream_to_openai_golden_any_chunking() {
    let (out, translator) = translate_any_chunking(Format::OpenAiChat, true);
    assert_matches_jsonl(&events(&out), "bedrock_stream_to_openai.jsonl");
    let info = translator.info();
    assert_eq!(info.completion, vec!["Let me check Zürich.".to_string()]);
    assert_eq!(
        info.usage,
        Usage {
            input_tokens: Some(62),
            output_tokens: Some(34),
            cached_input_tokens: Some(50),
            reasoning_tokens: None,
        }
    );
    assert!(translator.saw_first_token());
}

#[test]
fn converse_stream_to_anthropic_golden_any_chunking() {
    let (out, _) = translate_any_chunking(Format::AnthropicMessages, false);
    assert_matches_jsonl(&events(&out), "bedrock_stream_to_anthropic.jsonl");
}

#[test]
fn tool_input_fragments_reassemble() {
    let (out, _) = translate_any_chunking(Format::OpenAiChat, false);
    let mut args = vec![String::new(); 2];
    for (_, e) in events(&out) {
        for call in e["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = call["index"].as_u64().expect("index") as usize;
            args[i].push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(json_of(args[0].as_bytes()), json!({"city": "Zürich"}));
    assert_eq!(json_of(args[1].as_bytes()), json!({}));
}

#[test]
fn corrupt_frame_is_a_stream_error_in_client_format() {
    let mut input = stream_body();
    // Flip a payload byte of the second frame: its message CRC fails.
    let first_len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
    input[first_len + 20] ^= 0x01;
    for (ingress, expected_name) in [
        (Format::OpenAiChat, None),
        (Format::AnthropicMessages, Some("error")),
    ] {
        let mut t = StreamTranslator::new(ingress, Format::Bedrock, true);
        let got = events(&run(&mut t, &input, 3));
        let (name, last) = got.last().expect("events").clone();
        assert_eq!(name.as_deref(), expected_name);
        // Both client formats carry the text in `error.message`.
        let message = last["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("CRC"), "{last}");
        // Nothing after the error: no [DONE], no message_stop.
        assert!(!got
            .iter()
            .any(|(_, d)| d == &json!("[DONE]") || d["type"] == "message_stop"));
    }
}

#[test]
fn exception_frame_becomes_an_error_event() {
    let mut input = event_frame("messageStart", &json!({"role": "assistant"}));
    input.extend(event_frame(
        "contentBlockDelta",
        &json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
    ));
    input.extend(
        Message::new(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            r#"{"message":"Too many tokens, please wait before trying again."}"#,
        )
        .encode(),
    );
    let mut o = StreamTranslator::new(Format::OpenAiChat, Format::Bedrock, true);
    let got = events(&run(&mut o, &input, 5));
    assert_eq!(
        got.last().expect("event").1,
        json!({"error": {"message": "Too many tokens, please wait before trying again.", "type": "rate_limit_error", "param": null, "code": null}})
    );
    assert_eq!(got[1].1["choices"][0]["delta"]["content"], "Hi");
    let mut a = StreamTranslator::new(Format::AnthropicMessages, Format::Bedrock, false);
    let got = events(&run(&mut a, &input, 5));
    let (name, last) = got.last().expect("event").clone();
    assert_eq!(name.as_deref(), Some("error"));
    assert_eq!(last["error"]["type"], "rate_limit_error");
}

#[test]
fn truncated_stream_is_an_error_not_a_clean_end() {
    let input = stream_body();
    // Cut 5 bytes into the second frame.
    let first_len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
    let mut t = StreamTranslator::new(Format::OpenAiChat, Format::Bedrock, false);
    let got = events(&run(&mut t, &input[..first_len + 5], 64));
    let last = &got.last().expect("events").1;
    assert!(last["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("inside a frame"));
    assert!(!got.iter().any(|(_, d)| d == &json!("[DONE]")));
}

#[test]
fn usage_chunk_only_when_asked() {
    let (out, _) = translate_any_chunking(Format::OpenAiChat, false);
    assert!(!events(&out).iter().any(|(_, d)| d.get("usage").is_some()));
}

#[test]
fn decoder_gives_the_same_messages_whole_and_byte_by_byte() {
    let input = stream_body();
    let mut whole = Vec::new();
    Decoder::default().feed(&input, &mut whole).expect("valid");
    let mut bytewise = Vec::new();
    let mut d = Decoder::default();
    for b in input.chunks(1) {
        d.feed(b, &mut bytewise).expect("valid");
    }
    assert_eq!(d.pending_bytes(), 0);
    assert_eq!(whole, bytewise);
    assert_eq!(whole.len(), 16);
    assert_eq!(whole[0].header_str(":event-type"), Some("messageStart"));
    assert_eq!(whole[15].header_str(":event-type"), Some("metadata"));
    assert_eq!(
        json_of(&whole[15].payload)["usage"]["cacheReadInputTokens"],
        json!(50)
    );
}

#[test]
fn converse_spelled_fields_pass_through_and_win() {
    let guardrail = json!({"guardrailIdentifier": "g1", "guardrailVersion": "1"});
    let openai = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "guardrailConfig": guardrail, "additionalModelRequestFields": {"top_k": 5}});
    let out = json_of(
        &prepare(Format::OpenAiChat, openai.to_string().as_bytes())
            .expect("ok")
            .body,
    );
    assert_eq!(out["guardrailConfig"], guardrail);
    assert_eq!(out["additionalModelRequestFields"], json!({"top_k": 5}));
    let anthropic = json!({"model": "m", "max_tokens": 10, "top_k": 40,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "hi"}],
        "additionalModelRequestFields": {"top_k": 5}, "performanceConfig": {"latency": "optimized"}});
    let out = json_of(
        &prepare(Format::AnthropicMessages, anthropic.to_string().as_bytes())
            .expect("ok")
            .body,
    );
    assert_eq!(
        out["additionalModelRequestFields"],
        json!({"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024}})
    );
    assert_eq!(out["performanceConfig"], json!({"latency": "optimized"}));
}
