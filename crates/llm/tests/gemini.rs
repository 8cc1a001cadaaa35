//! Gemini egress: requests, responses, streams and errors against golden
//! fixtures (`tests/fixtures/gemini_*`), for OpenAI and Anthropic clients.

mod common;

use bytes::Bytes;
use common::{fixture, json_of, prepare_plain};
use llm::{
    error_body, prepare_request, translate_error, translate_response, Format, RequestOptions,
    StreamTranslator, Usage,
};
use serde_json::{json, Map, Value};

fn prepare(ingress: Format, body: &[u8]) -> Result<llm::PreparedRequest, llm::LlmError> {
    prepare_plain(ingress, Format::Gemini, body)
}

/// Removes the wall-clock `created` field (asserting it was there).
fn without_created(mut v: Value) -> Value {
    let created = v
        .as_object_mut()
        .and_then(|o| o.remove("created"))
        .expect("created present");
    assert!(created.as_u64().is_some_and(|c| c > 1_600_000_000));
    v
}

// ---------- requests ----------

#[test]
fn openai_request_to_gemini_golden() {
    let prepared = prepare(Format::OpenAiChat, &fixture("gemini_request_openai.json")).expect("ok");
    assert_eq!(
        json_of(&prepared.body),
        json_of(&fixture("gemini_request_openai_to_gemini.json"))
    );
    // The model goes in the URL, so the caller needs it; `stream` picks the method.
    assert_eq!(prepared.upstream_model.as_deref(), Some("gemini-2.5-flash"));
    assert!(prepared.stream);
    assert_eq!(prepared.params["max_completion_tokens"], json!(512));
}

#[test]
fn anthropic_request_to_gemini_golden() {
    let prepared = prepare(
        Format::AnthropicMessages,
        &fixture("gemini_request_anthropic.json"),
    )
    .expect("ok");
    assert_eq!(
        json_of(&prepared.body),
        json_of(&fixture("gemini_request_anthropic_to_gemini.json"))
    );
    assert_eq!(prepared.upstream_model.as_deref(), Some("gemini-2.5-pro"));
    assert!(!prepared.stream);
}

#[test]
fn tool_result_needs_the_function_name() {
    let orphan = json!({"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_unknown", "content": "42"}
    ]});
    let err = prepare(Format::OpenAiChat, orphan.to_string().as_bytes()).expect_err("400");
    assert_eq!(err.status, 400);
    assert!(err.message.contains("messages[1]"), "{}", err.message);
    assert!(err.message.contains("call_unknown"), "{}", err.message);

    // A `name` on the tool message is enough; a non-object result is wrapped.
    let named = json!({"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_unknown", "name": "lookup", "content": "[1,2]"}
    ]});
    let body = json_of(
        &prepare(Format::OpenAiChat, named.to_string().as_bytes())
            .expect("ok")
            .body,
    );
    assert_eq!(
        body["contents"][0]["parts"][1],
        json!({"functionResponse": {"name": "lookup", "response": {"result": [1, 2]}}})
    );
}

#[test]
fn repeated_call_ids_resolve_to_the_latest_call() {
    let req = json!({"model": "m", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "first", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "a"},
        {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "second", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "b"}
    ]});
    let body = json_of(
        &prepare(Format::OpenAiChat, req.to_string().as_bytes())
            .expect("ok")
            .body,
    );
    let contents = body["contents"].as_array().expect("contents");
    assert_eq!(contents.len(), 5, "{body}");
    assert_eq!(contents[2]["parts"][0]["functionResponse"]["name"], "first");
    assert_eq!(
        contents[4]["parts"][0]["functionResponse"]["name"],
        "second"
    );
    assert_eq!(contents[3]["parts"][0]["functionCall"]["args"], json!({}));
}

#[test]
fn empty_texts_and_empty_turns_are_left_out() {
    let req = json!({"model": "m", "messages": [
        {"role": "system", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": ""},
        {"role": "user", "content": "again"}
    ]});
    let body = json_of(
        &prepare(Format::OpenAiChat, req.to_string().as_bytes())
            .expect("ok")
            .body,
    );
    assert_eq!(
        body,
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]}]})
    );
}

#[test]
fn malformed_requests_are_400_not_panics() {
    for body in [
        json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
        json!({"model": "m", "messages": [7]}),
        json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
    ] {
        let err = prepare(Format::OpenAiChat, body.to_string().as_bytes()).expect_err("400");
        assert_eq!(err.status, 400, "{body}");
    }
    // Gemini is never a client format.
    let empty = Map::new();
    let opts = RequestOptions {
        model_override: None,
        model_aliases: &[],
        defaults: &empty,
        overrides: &empty,
        default_max_tokens: 1,
    };
    let err = prepare_request(
        Format::Gemini,
        Format::OpenAiChat,
        br#"{"contents":[]}"#,
        &opts,
    )
    .expect_err("refused");
    assert_eq!(err.status, 400);
}

// ---------- responses ----------

fn expected_usage() -> Usage {
    Usage {
        input_tokens: Some(1200),
        output_tokens: Some(140),
        cached_input_tokens: Some(1000),
        reasoning_tokens: Some(100),
    }
}

#[test]
fn gemini_response_to_openai_golden() {
    let (body, info) = translate_response(
        Format::OpenAiChat,
        Format::Gemini,
        &fixture("gemini_response.json"),
    )
    .expect("ok");
    let out = without_created(json_of(&body.expect("translated")));
    assert_eq!(out, json_of(&fixture("gemini_response_to_openai.json")));
    assert_eq!(info.model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(info.usage, expected_usage());
    assert_eq!(info.completion, vec!["Let me check both.".to_string()]);
}

#[test]
fn gemini_response_to_anthropic_golden() {
    let (body, info) = translate_response(
        Format::AnthropicMessages,
        Format::Gemini,
        &fixture("gemini_response.json"),
    )
    .expect("ok");
    assert_eq!(
        json_of(&body.expect("translated")),
        json_of(&fixture("gemini_response_to_anthropic.json"))
    );
    assert_eq!(info.usage, expected_usage());
}

#[test]
fn blocked_prompt_and_finish_reasons() {
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}});
    let (body, _) = translate_response(
        Format::AnthropicMessages,
        Format::Gemini,
        blocked.to_string().as_bytes(),
    )
    .expect("ok");
    let out = json_of(&body.expect("translated"));
    assert_eq!(out["stop_reason"], "refusal");
    assert_eq!(out["usage"]["input_tokens"], 5);

    for (gemini, openai) in [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("STOP", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ] {
        let resp = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": gemini}]});
        let (body, _) = translate_response(
            Format::OpenAiChat,
            Format::Gemini,
            resp.to_string().as_bytes(),
        )
        .expect("ok");
        let out = json_of(&body.expect("translated"));
        assert_eq!(out["choices"][0]["finish_reason"], openai, "{gemini}");
    }
}

#[test]
fn candidates_map_to_choices_and_bad_bodies_are_502() {
    let resp = json!({"candidates": [
        {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
        {"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}, "finishReason": "STOP", "index": 1}
    ]});
    let (body, info) = translate_response(
        Format::OpenAiChat,
        Format::Gemini,
        resp.to_string().as_bytes(),
    )
    .expect("ok");
    let out = json_of(&body.expect("translated"));
    assert_eq!(out["choices"][1]["index"], 1);
    assert_eq!(out["choices"][1]["finish_reason"], "tool_calls");
    // No responseId: ids are call_<n>, counted across the response.
    assert_eq!(
        out["choices"][1]["message"]["tool_calls"][0]["id"],
        "call_0"
    );
    assert_eq!(info.completion, vec!["a".to_string(), String::new()]);

    for bad in [
        &b"not json"[..],
        b"[1]",
        b"{\"candidates\": [{\"index\": 999999999999}]}",
    ] {
        match translate_response(Format::OpenAiChat, Format::Gemini, bad) {
            Ok(_) => assert_eq!(bad[0], b'{', "only the object may succeed"),
            Err(e) => assert_eq!(e.status, 502),
        }
    }
}

// ---------- streams ----------

/// Feeds `input` in `chunk_size`-byte chunks, then finishes.
fn run(t: &mut StreamTranslator, input: &[u8], chunk_size: usize) -> String {
    let mut out = Vec::new();
    for c in input.chunks(chunk_size) {
        out.extend_from_slice(&t.feed(Bytes::copy_from_slice(c)));
    }
    out.extend_from_slice(&t.finish());
    String::from_utf8(out).expect("utf8")
}

/// `created` is a wall-clock timestamp; zero it for comparisons.
fn zero_created(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("\"created\":") {
        let (head, tail) = rest.split_at(i + "\"created\":".len());
        out.push_str(head);
        out.push('0');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// (event name, data) pairs of a complete SSE output.
fn events(out: &str) -> Vec<(Option<String>, String)> {
    assert!(out.ends_with("\n\n"), "ends with a complete event: {out:?}");
    out.split_terminator("\n\n")
        .map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    assert!(data.is_none(), "one data line per event");
                    data = Some(v.to_owned());
                } else {
                    panic!("unexpected line {line:?}");
                }
            }
            (name, data.expect("data line"))
        })
        .collect()
}

/// Runs the fixture whole, byte by byte and with LF line endings; all three
/// must give the same output.
fn translate_stream_any_chunking(
    ingress: Format,
    include_usage: bool,
) -> (String, StreamTranslator) {
    let input = fixture("gemini_stream.sse");
    let mut whole = StreamTranslator::new(ingress, Format::Gemini, include_usage);
    let out_whole = zero_created(&run(&mut whole, &input, input.len()));
    let mut bytewise = StreamTranslator::new(ingress, Format::Gemini, include_usage);
    let out_bytes = zero_created(&run(&mut bytewise, &input, 1));
    assert_eq!(out_whole, out_bytes);
    let lf = String::from_utf8(input)
        .expect("utf8")
        .replace("\r\n", "\n");
    let mut lf_t = StreamTranslator::new(ingress, Format::Gemini, include_usage);
    assert_eq!(out_whole, zero_created(&run(&mut lf_t, lf.as_bytes(), 5)));
    (out_whole, bytewise)
}

fn assert_matches_jsonl(got: &[(Option<String>, String)], fixture_name: &str) {
    let expected = String::from_utf8(fixture(fixture_name)).expect("utf8");
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for ((name, data), e) in got.iter().zip(&expected) {
        if *e == "[DONE]" {
            assert_eq!(data, "[DONE]");
            continue;
        }
        let g: Value = serde_json::from_str(data).expect("chunk json");
        let e: Value = serde_json::from_str(e).expect("fixture json");
        if let Some(name) = name {
            assert_eq!(Some(name.as_str()), e["type"].as_str(), "event name = type");
        }
        assert_eq!(g, e);
    }
}

#[test]
fn gemini_stream_to_openai_golden_any_chunking() {
    let (out, translator) = translate_stream_any_chunking(Format::OpenAiChat, true);
    let got = events(&out);
    assert!(got.iter().all(|(name, _)| name.is_none()));
    assert_matches_jsonl(&got, "gemini_stream_to_openai.jsonl");
    let info = translator.info();
    assert_eq!(
        info.usage,
        Usage {
            input_tokens: Some(120),
            output_tokens: Some(50),
            cached_input_tokens: Some(100),
            reasoning_tokens: Some(20)
        }
    );
    assert_eq!(info.completion, vec!["Checking héllo ✓".to_string()]);
    assert_eq!(info.model.as_deref(), Some("gemini-2.5-flash"));
    assert!(translator.saw_first_token());
}

#[test]
fn gemini_stream_to_anthropic_golden_any_chunking() {
    let (out, _) = translate_stream_any_chunking(Format::AnthropicMessages, false);
    let got = events(&out);
    assert!(got.iter().all(|(name, _)| name.is_some()));
    assert_matches_jsonl(&got, "gemini_stream_to_anthropic.jsonl");
}

#[test]
fn usage_chunk_only_when_asked() {
    let (out, _) = translate_stream_any_chunking(Format::OpenAiChat, false);
    let got = events(&out);
    assert_eq!(got.last().map(|(_, d)| d.as_str()), Some("[DONE]"));
    assert!(!out.contains("\"usage\""), "{out}");
}

#[test]
fn candidates_stream_as_separate_choices() {
    let input = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"A\"}]},\"index\":0},",
        "{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":{\"x\":1}}}]},\"index\":1,\"finishReason\":\"STOP\"}]}\n\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"B\"}]},\"index\":0,\"finishReason\":\"MAX_TOKENS\"}]}\n\n",
    );
    let mut t = StreamTranslator::new(Format::OpenAiChat, Format::Gemini, false);
    let out = run(&mut t, input.as_bytes(), 4);
    let chunks: Vec<Value> = events(&out)
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| json_of(d.as_bytes()))
        .collect();
    let of_choice = |i: u64| -> Vec<&Value> {
        chunks
            .iter()
            .filter_map(|c| c["choices"].as_array()?.first())
            .filter(|c| c["index"] == i)
            .collect()
    };
    let first = of_choice(0);
    assert_eq!(first[0]["delta"]["role"], "assistant");
    assert_eq!(
        first.last().map(|c| &c["finish_reason"]),
        Some(&json!("length"))
    );
    let second = of_choice(1);
    assert_eq!(
        second[0]["delta"]["role"], "assistant",
        "each choice gets its role chunk"
    );
    assert_eq!(second[1]["delta"]["tool_calls"][0]["index"], 0);
    assert_eq!(
        second[1]["delta"]["tool_calls"][0]["function"]["arguments"],
        "{\"x\":1}"
    );
    assert_eq!(
        second.last().map(|c| &c["finish_reason"]),
        Some(&json!("tool_calls"))
    );
    assert_eq!(t.info().completion, vec!["AB".to_string(), String::new()]);
}

#[test]
fn first_token_waits_for_text_not_thoughts() {
    let mut t = StreamTranslator::new(Format::OpenAiChat, Format::Gemini, false);
    let thought = br#"data: {"candidates":[{"content":{"parts":[{"text":"hmm","thought":true}]}}]}

"#;
    let out = t.feed(Bytes::from_static(thought));
    assert!(!out.is_empty(), "role and reasoning chunks go out at once");
    assert!(!t.saw_first_token());
    t.feed(Bytes::from_static(
        b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"A\"}]}}]}\n\n",
    ));
    assert!(t.saw_first_token());
}

#[test]
fn in_stream_error_ends_the_stream_in_client_format() {
    let input = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}],\"responseId\":\"r\"}\n\n",
        "data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\n\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"late\"}]}}]}\n\n",
    );
    let mut oa = StreamTranslator::new(Format::OpenAiChat, Format::Gemini, true);
    let out = run(&mut oa, input.as_bytes(), 3);
    let got = events(&out);
    let last = json_of(got.last().expect("events").1.as_bytes());
    assert_eq!(last["error"]["type"], "server_error");
    assert_eq!(last["error"]["message"], "The model is overloaded.");
    assert!(!out.contains("late") && !out.contains("[DONE]"), "{out}");

    let mut an = StreamTranslator::new(Format::AnthropicMessages, Format::Gemini, false);
    let out = run(&mut an, input.as_bytes(), 3);
    let got = events(&out);
    let (name, data) = got.last().expect("events");
    assert_eq!(name.as_deref(), Some("error"));
    assert_eq!(
        json_of(data.as_bytes())["error"]["type"],
        "overloaded_error"
    );
    assert!(!out.contains("message_stop"), "{out}");
}

// ---------- errors ----------

#[test]
fn google_errors_map_to_client_types_keeping_the_message() {
    let quota = br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#;
    assert_eq!(
        json_of(&translate_error(Format::OpenAiChat, Format::Gemini, 429, quota).expect("t")),
        json!({"error": {"message": "Resource has been exhausted (e.g. check quota).",
                          "type": "rate_limit_error", "param": null, "code": "RESOURCE_EXHAUSTED"}})
    );
    assert_eq!(
        json_of(
            &translate_error(Format::AnthropicMessages, Format::Gemini, 429, quota).expect("t")
        ),
        json!({"type": "error", "error": {"type": "rate_limit_error",
                                          "message": "Resource has been exhausted (e.g. check quota)."}})
    );

    let bad_key = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
    let out = json_of(
        &translate_error(Format::AnthropicMessages, Format::Gemini, 400, bad_key).expect("t"),
    );
    assert_eq!(out["error"]["type"], "authentication_error");

    let cases: [(u16, &str, &str, &str); 5] = [
        (503, "UNAVAILABLE", "server_error", "overloaded_error"),
        (500, "INTERNAL", "server_error", "api_error"),
        (404, "NOT_FOUND", "not_found_error", "not_found_error"),
        (
            403,
            "PERMISSION_DENIED",
            "permission_error",
            "permission_error",
        ),
        (
            400,
            "FAILED_PRECONDITION",
            "invalid_request_error",
            "invalid_request_error",
        ),
    ];
    for (status, google, openai, anthropic) in cases {
        let body = json!({"error": {"code": status, "message": "m", "status": google}}).to_string();
        let oa = json_of(
            &translate_error(Format::OpenAiChat, Format::Gemini, status, body.as_bytes())
                .expect("t"),
        );
        assert_eq!(oa["error"]["type"], openai, "{google}");
        let an = json_of(
            &translate_error(
                Format::AnthropicMessages,
                Format::Gemini,
                status,
                body.as_bytes(),
            )
            .expect("t"),
        );
        assert_eq!(an["error"]["type"], anthropic, "{google}");
    }

    // Non-SSE streams send the error as an array element.
    let array = br#"[{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}]"#;
    let out = json_of(&translate_error(Format::OpenAiChat, Format::Gemini, 429, array).expect("t"));
    assert_eq!(out["error"]["message"], "slow down");

    // Unknown status string and unparseable body fall back to the HTTP status.
    let odd = br#"{"error":{"code":409,"message":"conflict","status":"ALREADY_EXISTS_NEW"}}"#;
    let out = json_of(&translate_error(Format::OpenAiChat, Format::Gemini, 429, odd).expect("t"));
    assert_eq!(out["error"]["type"], "rate_limit_error");
    let out = json_of(
        &translate_error(Format::AnthropicMessages, Format::Gemini, 502, b"<html>").expect("t"),
    );
    assert_eq!(out["error"]["type"], "api_error");
    assert!(out["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("502"));
}

#[test]
fn gateway_error_body_for_gemini_falls_back_to_openai_shape() {
    assert_eq!(
        json_of(&error_body(Format::Gemini, 429, "slow")),
        json!({"error": {"message": "slow", "type": "rate_limit_error", "param": null, "code": null}})
    );
}
