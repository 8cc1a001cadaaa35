//! OpenAI Responses ingress: requests, responses, streams and errors
//! against golden fixtures (`tests/fixtures/responses_*`), through the Chat
//! pivot to OpenAI Chat, Anthropic and Gemini providers.

mod common;

use bytes::Bytes;
use common::{fixture, json_of};
use llm::{
    error_body, prepare_request, translate_error, translate_response, Format, LlmError,
    PreparedRequest, PromptMessage, RequestOptions, StreamTranslator, Usage,
};
use serde_json::{json, Map, Value};

/// Compares with a golden fixture, printing the actual value on mismatch.
fn assert_golden(actual: &Value, name: &str) {
    let expected = json_of(&fixture(name));
    assert!(
        *actual == expected,
        "{name} differs; actual:\n{}",
        serde_json::to_string_pretty(actual).unwrap_or_default()
    );
}

fn prepare_with(
    egress: Format,
    body: &[u8],
    opts: &RequestOptions,
) -> Result<PreparedRequest, LlmError> {
    prepare_request(Format::OpenAiResponses, egress, body, opts)
}

fn prepare(egress: Format, body: &[u8]) -> Result<PreparedRequest, LlmError> {
    common::prepare_plain(Format::OpenAiResponses, egress, body)
}

fn bad_request(body: Value) -> String {
    let err = prepare(Format::OpenAiChat, body.to_string().as_bytes()).expect_err("refused");
    assert_eq!(err.status, 400, "{}", err.message);
    err.message
}

/// Replaces wall-clock `created_at` values (asserting they are plausible).
fn zero_created_at(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(c) = map.get_mut("created_at") {
                assert!(c.as_u64().is_some_and(|c| c > 1_600_000_000), "{c}");
                *c = json!(0);
            }
            map.values_mut().for_each(zero_created_at);
        }
        Value::Array(items) => items.iter_mut().for_each(zero_created_at),
        _ => {}
    }
}

// ---------- requests ----------

#[test]
fn request_to_chat_golden() {
    let prepared = prepare(Format::OpenAiChat, &fixture("responses_request.json")).expect("ok");
    assert_golden(&json_of(&prepared.body), "responses_request_to_openai.json");
    assert_eq!(prepared.request_model.as_deref(), Some("gpt-4.1"));
    assert_eq!(prepared.upstream_model.as_deref(), Some("gpt-4.1"));
    assert!(prepared.stream);
    // Effective parameters in the client's (Responses) spelling.
    assert_eq!(
        Value::Object(prepared.params),
        json!({"temperature": 0.2, "top_p": 0.9, "max_output_tokens": 512,
               "reasoning": {"effort": "low", "summary": "auto"}})
    );
    let prompt = |role: &str, content: &str| PromptMessage {
        role: role.into(),
        content: content.into(),
    };
    assert_eq!(
        prepared.prompt,
        vec![
            prompt("system", "You are terse."),
            prompt("system", "Prefer metric units."),
            prompt(
                "user",
                "What is in this image, and the weather in Paris and Oslo?"
            ),
            prompt("assistant", "A cat. Checking the weather."),
            prompt("tool", "18C sunny"),
            prompt("tool", "4C snow"),
            prompt("user", "Thanks. Summarise as JSON."),
        ]
    );
}

#[test]
fn request_to_anthropic_golden() {
    let prepared = prepare(
        Format::AnthropicMessages,
        &fixture("responses_request.json"),
    )
    .expect("ok");
    assert_golden(
        &json_of(&prepared.body),
        "responses_request_to_anthropic.json",
    );
    assert!(prepared.stream);
}

#[test]
fn request_to_gemini_goes_through_the_chat_pivot() {
    let prepared = prepare(Format::Gemini, &fixture("responses_request.json")).expect("ok");
    let body = json_of(&prepared.body);
    assert_eq!(
        body["systemInstruction"]["parts"],
        json!([{"text": "You are terse."}, {"text": "Prefer metric units."}])
    );
    assert_eq!(body["generationConfig"]["maxOutputTokens"], json!(512));
    // Function results are matched to calls by name on the way to Gemini.
    let contents = body["contents"].as_array().expect("contents");
    assert!(contents
        .iter()
        .any(|c| c["parts"][0]["functionResponse"]["name"] == "get_weather"));
}

#[test]
fn string_input_and_json_object_format() {
    let body = json!({
        "model": "m", "input": "Hi", "text": {"format": {"type": "json_object"}},
        "store": false, "max_output_tokens": null,
    });
    let prepared = prepare(Format::OpenAiChat, body.to_string().as_bytes()).expect("ok");
    assert_eq!(
        json_of(&prepared.body),
        json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}],
               "response_format": {"type": "json_object"}})
    );
    assert!(!prepared.stream);
}

#[test]
fn overrides_defaults_and_aliases_apply_to_the_responses_body() {
    let overrides: Map<String, Value> =
        serde_json::from_value(json!({"max_output_tokens": 100})).expect("map");
    let defaults: Map<String, Value> =
        serde_json::from_value(json!({"temperature": 0.5, "top_p": 0.1})).expect("map");
    let aliases = vec![("gpt-*".to_owned(), "claude-sonnet-4-5".to_owned())];
    let opts = RequestOptions {
        model_override: None,
        model_aliases: &aliases,
        defaults: &defaults,
        overrides: &overrides,
        default_max_tokens: 4096,
    };
    let body = json!({"model": "gpt-4.1", "input": "Hi", "max_output_tokens": 9000, "top_p": 1});
    let prepared = prepare_with(
        Format::AnthropicMessages,
        body.to_string().as_bytes(),
        &opts,
    )
    .expect("ok");
    let out = json_of(&prepared.body);
    assert_eq!(out["model"], "claude-sonnet-4-5");
    assert_eq!(out["max_tokens"], 100, "override beats the client");
    assert_eq!(out["temperature"], 0.5, "default fills a gap");
    assert_eq!(out["top_p"], 1, "default does not beat the client");
    assert_eq!(prepared.request_model.as_deref(), Some("gpt-4.1"));
    assert_eq!(
        prepared.upstream_model.as_deref(),
        Some("claude-sonnet-4-5")
    );
    assert_eq!(prepared.params["max_output_tokens"], 100);
}

#[test]
fn stateful_features_are_refused() {
    let msg = bad_request(json!({"model": "m", "input": "Hi", "previous_response_id": "resp_1"}));
    assert!(msg.contains("previous_response_id"), "{msg}");
    let msg = bad_request(json!({"model": "m", "input": "Hi", "conversation": "conv_1"}));
    assert!(msg.contains("conversation"), "{msg}");
    let msg =
        bad_request(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}));
    assert!(
        msg.contains("input[0]") && msg.contains("item_reference"),
        "{msg}"
    );
    let msg = bad_request(json!({"model": "m", "input": "Hi", "prompt": {"id": "pmpt_1"}}));
    assert!(msg.contains("`prompt`"), "{msg}");
    let msg = bad_request(json!({"model": "m"}));
    assert!(msg.contains("`input`"), "{msg}");
    // `store` is accepted and ignored (see the golden request).
    let stored = json!({"model": "m", "input": "Hi", "store": true});
    assert!(prepare(Format::OpenAiChat, stored.to_string().as_bytes()).is_ok());
}

#[test]
fn built_in_tools_and_storage_references_are_refused_by_name() {
    let msg = bad_request(json!({"model": "m", "input": "Hi", "tools": [
        {"type": "function", "name": "f"}, {"type": "web_search_preview"}]}));
    assert!(
        msg.contains("tools[1]") && msg.contains("web_search_preview"),
        "{msg}"
    );
    let msg =
        bad_request(json!({"model": "m", "input": "Hi", "tool_choice": {"type": "file_search"}}));
    assert!(msg.contains("file_search"), "{msg}");
    let msg = bad_request(json!({"model": "m", "input": [
        {"type": "computer_call", "call_id": "c", "action": {}}]}));
    assert!(msg.contains("computer_call"), "{msg}");
    let msg = bad_request(json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "see"}, {"type": "input_image", "file_id": "file-1"}]}]}));
    assert!(
        msg.contains("input[0].content[1]") && msg.contains("file_id"),
        "{msg}"
    );
    let msg = bad_request(json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_file", "file_id": "file-1"}]}]}));
    assert!(msg.contains("input_file"), "{msg}");
}

#[test]
fn responses_is_not_an_egress_format() {
    let err = prepare_request(
        Format::OpenAiChat,
        Format::OpenAiResponses,
        br#"{"model":"m","messages":[]}"#,
        &RequestOptions {
            model_override: None,
            model_aliases: &[],
            defaults: &Map::new(),
            overrides: &Map::new(),
            default_max_tokens: 1,
        },
    )
    .expect_err("refused");
    assert_eq!(err.status, 400);
}

#[test]
fn malformed_requests_are_400_never_panics() {
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"[]".to_vec(),
        b"{\"input\": 5}".to_vec(),
        b"{\"input\": [5]}".to_vec(),
        b"{\"input\": [{}]}".to_vec(),
        b"{\"input\": [{\"role\": 7}]}".to_vec(),
        b"{\"input\": [{\"role\": \"tool\", \"content\": \"x\"}]}".to_vec(),
        b"{\"input\": [{\"role\": \"user\", \"content\": [{\"type\": \"input_text\"}]}]}".to_vec(),
        b"{\"input\": [{\"role\": \"user\", \"content\": [7]}]}".to_vec(),
        b"{\"input\": [{\"role\": \"assistant\", \"content\": [{\"type\": \"input_image\", \"image_url\": \"x\"}]}]}".to_vec(),
        b"{\"input\": [{\"type\": \"function_call\", \"name\": \"f\"}]}".to_vec(),
        b"{\"input\": [{\"type\": \"function_call_output\"}]}".to_vec(),
        b"{\"input\": \"x\", \"instructions\": [1]}".to_vec(),
        b"{\"input\": \"x\", \"tools\": {}}".to_vec(),
        b"{\"input\": \"x\", \"tools\": [{}]}".to_vec(),
        b"{\"input\": \"x\", \"tools\": [{\"type\": \"function\"}]}".to_vec(),
        b"{\"input\": \"x\", \"tool_choice\": 3}".to_vec(),
        b"{\"input\": \"x\", \"tool_choice\": {\"type\": \"function\"}}".to_vec(),
        b"{\"input\": \"x\", \"text\": {\"format\": {\"type\": \"yaml\"}}}".to_vec(),
    ];
    for body in bodies {
        for egress in [
            Format::OpenAiChat,
            Format::AnthropicMessages,
            Format::Gemini,
        ] {
            let err = prepare(egress, &body).expect_err("refused");
            assert_eq!(err.status, 400, "{}", String::from_utf8_lossy(&body));
        }
    }
    // Odd but harmless shapes are accepted leniently.
    let lenient = json!({"input": [
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": {"a": 1}},
        {"type": "function_call_output", "call_id": "c", "output": {"ok": true}},
        {"role": "user", "content": null}]});
    let out = json_of(
        &prepare(Format::OpenAiChat, lenient.to_string().as_bytes())
            .expect("ok")
            .body,
    );
    assert_eq!(
        out["messages"],
        json!([
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "{\"ok\":true}"},
            {"role": "user", "content": ""}
        ])
    );
}

// ---------- responses ----------

#[test]
fn response_from_chat_golden() {
    let (body, info) = translate_response(
        Format::OpenAiResponses,
        Format::OpenAiChat,
        &fixture("response_openai.json"),
    )
    .expect("ok");
    let out = json_of(&body.expect("translated"));
    assert_golden(&out, "responses_response_from_openai.json");
    assert_eq!(info.usage.cached_input_tokens, Some(1536));
}

#[test]
fn response_from_anthropic_golden() {
    let (body, info) = translate_response(
        Format::OpenAiResponses,
        Format::AnthropicMessages,
        &fixture("response_anthropic.json"),
    )
    .expect("ok");
    let mut out = json_of(&body.expect("translated"));
    zero_created_at(&mut out);
    assert_golden(&out, "responses_response_from_anthropic.json");
    assert_eq!(info.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
}

#[test]
fn truncated_response_is_incomplete() {
    let chat = json!({"id": "chatcmpl-1", "created": 1700000000, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Once upon"}, "finish_reason": "length"}]});
    let (body, _) = translate_response(
        Format::OpenAiResponses,
        Format::OpenAiChat,
        chat.to_string().as_bytes(),
    )
    .expect("ok");
    let out = json_of(&body.expect("translated"));
    assert_eq!(out["status"], "incomplete");
    assert_eq!(
        out["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(out["output"][0]["status"], "incomplete");
    assert_eq!(out["output"][0]["content"][0]["text"], "Once upon");
    assert_eq!(out["usage"]["total_tokens"], 0);
}

#[test]
fn malformed_responses_are_502_never_panics() {
    for egress in [
        Format::OpenAiChat,
        Format::AnthropicMessages,
        Format::Gemini,
    ] {
        for body in [
            &b""[..],
            b"[]",
            b"7",
            b"{\"choices\": 5}",
            b"{\"content\": {}}",
        ] {
            match translate_response(Format::OpenAiResponses, egress, body) {
                Ok((Some(out), _)) => {
                    let v = json_of(&out);
                    assert_eq!(v["object"], "response");
                }
                Ok((None, _)) => panic!("a Responses client always gets a translated body"),
                Err(e) => assert_eq!(e.status, 502),
            }
        }
    }
}

// ---------- streams ----------

/// Feeds `input` in `chunk_size`-byte chunks, then finishes.
fn run(egress: Format, input: &[u8], chunk_size: usize) -> (Vec<u8>, StreamTranslator) {
    let mut t = StreamTranslator::new(Format::OpenAiResponses, egress, false);
    let mut out = Vec::new();
    for c in input.chunks(chunk_size.max(1)) {
        out.extend_from_slice(&t.feed(Bytes::copy_from_slice(c)));
    }
    out.extend_from_slice(&t.finish());
    (out, t)
}

/// Parses SSE output into event data, asserting the framing: every event
/// has `event: <type>` matching `data.type`, and sequence numbers count up
/// from 0 without gaps.
fn events(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).expect("utf8");
    assert!(text.ends_with("\n\n"), "output ends with a complete event");
    let mut seen = Vec::new();
    for block in text.split_terminator("\n\n") {
        let mut lines = block.lines();
        let name = lines
            .next()
            .and_then(|l| l.strip_prefix("event: "))
            .expect("event line");
        let data = lines
            .next()
            .and_then(|l| l.strip_prefix("data: "))
            .expect("data line");
        assert!(lines.next().is_none(), "one data line per event");
        let v: Value = serde_json::from_str(data).expect("event json");
        assert_eq!(v["type"], name);
        assert_eq!(v["sequence_number"], seen.len() as u64, "{v}");
        seen.push(v);
    }
    seen
}

fn check_stream_golden(
    egress: Format,
    input: &str,
    golden: &str,
) -> (Vec<Value>, StreamTranslator) {
    let input = fixture(input);
    let (whole, _) = run(egress, &input, input.len());
    let (bytewise, t) = run(egress, &input, 1);
    let (odd, _) = run(egress, &input, 7);
    let normalised = |out: &[u8]| {
        let mut v = events(out);
        v.iter_mut().for_each(zero_created_at);
        v
    };
    let got = normalised(&whole);
    assert_eq!(normalised(&bytewise), got, "output independent of chunking");
    assert_eq!(normalised(&odd), got, "output independent of chunking");
    let expected: Vec<Value> = String::from_utf8(fixture(golden))
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture json"))
        .collect();
    assert!(
        got == expected,
        "{golden} differs; actual:\n{}",
        got.iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    (got, t)
}

/// Argument deltas per item id, reassembled, must equal the `.done`
/// arguments and the arguments in `response.completed`.
fn assert_arguments_reassemble(events: &[Value], expected: &[&str]) {
    let mut by_item: Vec<(String, String)> = Vec::new();
    for e in events {
        if e["type"] == "response.function_call_arguments.delta" {
            let id = e["item_id"].as_str().expect("item_id").to_owned();
            let delta = e["delta"].as_str().expect("delta");
            match by_item.iter_mut().find(|(i, _)| *i == id) {
                Some((_, args)) => args.push_str(delta),
                None => by_item.push((id, delta.to_owned())),
            }
        }
    }
    let reassembled: Vec<&str> = by_item.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(reassembled, expected);
    for e in events {
        if e["type"] == "response.function_call_arguments.done" {
            let (_, args) = by_item
                .iter()
                .find(|(i, _)| e["item_id"] == i.as_str())
                .expect("deltas for done item");
            assert_eq!(e["arguments"], args.as_str());
        }
    }
    let completed = events.last().expect("events");
    assert_eq!(completed["type"], "response.completed");
    let final_args: Vec<&str> = completed["response"]["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter(|i| i["type"] == "function_call")
        .filter_map(|i| i["arguments"].as_str())
        .collect();
    assert_eq!(final_args, expected);
}

#[test]
fn stream_from_chat_golden_any_chunking() {
    let (got, t) = check_stream_golden(
        Format::OpenAiChat,
        "stream_openai.sse",
        "responses_stream_from_openai.jsonl",
    );
    assert_arguments_reassemble(&got, &[r#"{"city": "Paris"}"#, r#"{"city": "Oslo"}"#]);
    let usage = &got.last().expect("events")["response"]["usage"];
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 1536);
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 128);
    assert!(t.saw_first_token());
    assert_eq!(t.info().completion, vec!["Checking héllo ✓".to_owned()]);
}

#[test]
fn stream_from_anthropic_golden_any_chunking() {
    let (got, t) = check_stream_golden(
        Format::AnthropicMessages,
        "stream_anthropic.sse",
        "responses_stream_from_anthropic.jsonl",
    );
    assert_arguments_reassemble(&got, &[r#"{"city": "Paris"}"#, r#"{"city": "Oslo"}"#]);
    assert_eq!(
        t.info().usage,
        Usage {
            input_tokens: Some(125),
            output_tokens: Some(89),
            cached_input_tokens: Some(100),
            reasoning_tokens: None
        }
    );
}

#[test]
fn stream_from_gemini_completes() {
    let input = fixture("gemini_stream.sse");
    let (out, _) = run(Format::Gemini, &input, 5);
    let got = events(&out);
    assert_eq!(got[0]["type"], "response.created");
    let last = got.last().expect("events");
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["status"], "completed");
    assert!(last["response"]["usage"]["input_tokens"].as_u64() > Some(0));
}

#[test]
fn truncated_stream_ends_with_response_incomplete() {
    let input = concat!(
        "data: {\"id\":\"chatcmpl-T\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once\"}}]}\n\n",
        "data: {\"id\":\"chatcmpl-T\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let (out, _) = run(Format::OpenAiChat, input.as_bytes(), 3);
    let got = events(&out);
    let last = got.last().expect("events");
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(last["response"]["output"][0]["status"], "incomplete");
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], "Once");
}

#[test]
fn fail_emits_error_then_response_failed_and_nothing_after() {
    let mut t = StreamTranslator::new(Format::OpenAiResponses, Format::AnthropicMessages, false);
    let input = fixture("stream_anthropic.sse");
    let mut out = t
        .feed(Bytes::copy_from_slice(&input[..input.len() / 2]))
        .to_vec();
    out.extend_from_slice(&t.fail("connection reset"));
    assert!(t
        .feed(Bytes::copy_from_slice(&input[input.len() / 2..]))
        .is_empty());
    assert!(t.finish().is_empty());
    let got = events(&out);
    let n = got.len();
    assert_eq!(
        got[n - 2],
        json!({"type": "error", "sequence_number": n - 2, "code": "server_error",
               "message": "connection reset", "param": null})
    );
    let failed = &got[n - 1];
    assert_eq!(failed["type"], "response.failed");
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(
        failed["response"]["error"],
        json!({"code": "server_error", "message": "connection reset"})
    );
    assert_eq!(failed["response"]["id"], got[0]["response"]["id"]);
}

#[test]
fn upstream_error_event_becomes_error_and_response_failed() {
    let input = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_E\",\"model\":\"claude\",\"usage\":{\"input_tokens\":3}}}\n\n",
        "event: error\n",
        "data: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow down\"}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );
    let (out, _) = run(Format::AnthropicMessages, input.as_bytes(), 4);
    let types: Vec<String> = events(&out)
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "error",
            "response.failed"
        ]
    );
    let got = events(&out);
    assert_eq!(got[2]["code"], "rate_limit_error");
    assert_eq!(got[3]["response"]["error"]["code"], "rate_limit_exceeded");
    assert_eq!(got[3]["response"]["id"], "resp_E");
}

/// Garbage never panics. It still completes, except from Anthropic, whose streams always end
/// with `message_stop`: one that ends without it was cut short and fails.
#[test]
fn garbage_streams_never_panic_and_still_complete() {
    let inputs: [&[u8]; 5] = [
        b"",
        b"data: {not json}\n\n",
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":99999999999,\"function\":{\"arguments\":\"x\"}}]}}]}\n\n",
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"late\"}}]}}]}\n\n",
        b"\xff\xfe\x00data: \x00\n\n\n\n",
    ];
    for input in inputs {
        for egress in [
            Format::OpenAiChat,
            Format::AnthropicMessages,
            Format::Gemini,
        ] {
            let (out, _) = run(egress, input, 2);
            let got = events(&out);
            let last = got.last().expect("events");
            let want = match egress {
                Format::AnthropicMessages => "response.failed",
                _ => "response.completed",
            };
            assert_eq!(last["type"], want, "{egress:?}");
        }
    }
}

// ---------- errors ----------

#[test]
fn errors_use_the_openai_shape() {
    let an = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let out = translate_error(Format::OpenAiResponses, Format::AnthropicMessages, 529, an)
        .expect("translated");
    assert_eq!(
        json_of(&out),
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null,
                          "code": "overloaded_error"}})
    );
    let google = br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#;
    let out = translate_error(Format::OpenAiResponses, Format::Gemini, 429, google).expect("t");
    assert_eq!(json_of(&out)["error"]["type"], "rate_limit_error");
    let out =
        translate_error(Format::OpenAiResponses, Format::OpenAiChat, 500, b"<html>").expect("t");
    let out = json_of(&out);
    assert_eq!(out["error"]["type"], "server_error");
    assert!(out["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("500")));
    assert_eq!(
        json_of(&error_body(Format::OpenAiResponses, 429, "slow")),
        json!({"error": {"message": "slow", "type": "rate_limit_error", "param": null, "code": null}})
    );
}

// ---------- a provider with its own Responses API ----------

#[test]
fn native_responses_keep_stateful_fields_and_apply_options() {
    let aliases = vec![("fast".to_string(), "gpt-4.1-mini".to_string())];
    let overrides: Map<String, Value> = [("max_output_tokens".to_string(), json!(64))]
        .into_iter()
        .collect();
    let empty = Map::new();
    let opts = RequestOptions {
        model_override: None,
        model_aliases: &aliases,
        defaults: &empty,
        overrides: &overrides,
        default_max_tokens: 4096,
    };
    let body = json!({
        "model": "fast",
        "previous_response_id": "resp_prev",
        "instructions": "Be terse.",
        "input": [
            {"type": "item_reference", "id": "msg_stored"},
            {"role": "user", "content": [{"type": "input_text", "text": "and tomorrow?"}]}
        ],
        "stream": true,
        "store": true
    });
    let prepared = prepare_request(
        Format::OpenAiResponses,
        Format::OpenAiResponses,
        body.to_string().as_bytes(),
        &opts,
    )
    .expect("forwarded, not refused: the provider keeps the state");
    let sent = json_of(&prepared.body);
    assert_eq!(sent["model"], "gpt-4.1-mini");
    assert_eq!(sent["previous_response_id"], "resp_prev");
    assert_eq!(sent["store"], true);
    assert_eq!(sent["max_output_tokens"], 64);
    assert_eq!(
        sent["input"][0]["type"], "item_reference",
        "items kept as sent"
    );
    assert_eq!(prepared.request_model.as_deref(), Some("fast"));
    assert_eq!(prepared.upstream_model.as_deref(), Some("gpt-4.1-mini"));
    assert!(prepared.stream);
    assert_eq!(prepared.params["max_output_tokens"], 64);
    assert_eq!(
        prepared.prompt,
        vec![
            PromptMessage {
                role: "system".into(),
                content: "Be terse.".into()
            },
            PromptMessage {
                role: "user".into(),
                content: "and tomorrow?".into()
            },
        ]
    );
}

#[test]
fn native_responses_stream_passes_through_and_reports_usage() {
    // A Responses stream as OpenAI sends it: the golden output of the Chat pivot.
    let events: Vec<Value> = String::from_utf8(fixture("responses_stream_from_openai.jsonl"))
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture json"))
        .collect();
    let completed = events
        .iter()
        .find(|e| e["type"] == "response.completed")
        .expect("completed event");
    let mut sse = Vec::new();
    for e in &events {
        sse.extend_from_slice(
            format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()).as_bytes(),
        );
    }
    let mut t = StreamTranslator::new(Format::OpenAiResponses, Format::OpenAiResponses, false);
    let mut out = Vec::new();
    for c in sse.chunks(13) {
        out.extend_from_slice(&t.feed(Bytes::copy_from_slice(c)));
    }
    out.extend_from_slice(&t.finish());
    assert_eq!(out, sse, "bytes pass through untouched");
    let info = t.info();
    let usage = &completed["response"]["usage"];
    assert_eq!(info.usage.input_tokens, usage["input_tokens"].as_u64());
    assert_eq!(info.usage.output_tokens, usage["output_tokens"].as_u64());
    assert_eq!(
        info.model.as_deref(),
        completed["response"]["model"].as_str()
    );
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert!(!text.is_empty());
    assert_eq!(info.completion, vec![text]);
    assert!(t.saw_first_token());
}

#[test]
fn native_responses_stream_that_breaks_ends_with_a_typed_error_event() {
    let mut t = StreamTranslator::new(Format::OpenAiResponses, Format::OpenAiResponses, false);
    let _ = t.feed(Bytes::from_static(
        b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"model\":\"m\"}}\n\n",
    ));
    let out = t.fail("connection reset");
    let text = std::str::from_utf8(&out).expect("utf8");
    let data = text
        .strip_prefix("event: error\ndata: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .expect("one error event");
    let v: Value = serde_json::from_str(data).expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["message"], "connection reset");
    assert!(t.finish().is_empty(), "nothing after the error");
}

// ---------- Bedrock, through the Chat pivot ----------

#[test]
fn request_to_bedrock_golden() {
    // Bedrock takes inline images only, so the remote one is refused by name...
    let msg = prepare(Format::Bedrock, &fixture("responses_request.json"))
        .expect_err("remote image")
        .message;
    assert!(msg.contains("remote image URLs"), "{msg}");
    // ... and without it everything else is carried.
    let mut body = json_of(&fixture("responses_request.json"));
    body["input"][1]["content"]
        .as_array_mut()
        .expect("parts")
        .remove(1);
    let prepared = prepare(Format::Bedrock, body.to_string().as_bytes()).expect("ok");
    assert_golden(
        &json_of(&prepared.body),
        "responses_request_to_bedrock.json",
    );
}

#[test]
fn response_from_bedrock_names_the_upstream_model() {
    let (out, info) = llm::translate_response_with_model(
        Format::OpenAiResponses,
        Format::Bedrock,
        &fixture("bedrock_response.json"),
        Some("anthropic.claude-3-5-sonnet-20241022-v2:0"),
    )
    .expect("translated");
    let v = json_of(&out.expect("a new body"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["model"], "anthropic.claude-3-5-sonnet-20241022-v2:0");
    assert_eq!(
        info.model.as_deref(),
        Some("anthropic.claude-3-5-sonnet-20241022-v2:0")
    );
    assert_eq!(v["usage"]["input_tokens"].as_u64(), info.usage.input_tokens);
}

#[test]
fn stream_from_bedrock_completes_with_the_upstream_model() {
    let frames = bedrock_frames();
    let mut t = StreamTranslator::new(Format::OpenAiResponses, Format::Bedrock, false)
        .with_upstream_model(Some("amazon.nova-pro-v1:0"));
    let mut out = Vec::new();
    for c in frames.chunks(5) {
        out.extend_from_slice(&t.feed(Bytes::copy_from_slice(c)));
    }
    out.extend_from_slice(&t.finish());
    let evs = events(&out);
    assert_eq!(evs.first().unwrap()["type"], "response.created");
    let last = evs.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["model"], "amazon.nova-pro-v1:0");
    assert!(last["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

/// The ConverseStream fixture (`{event, payload}` per line) encoded as event-stream frames.
fn bedrock_frames() -> Vec<u8> {
    let text = String::from_utf8(fixture("bedrock_stream_events.jsonl")).expect("utf8");
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("fixture json");
        let kind = v["event"].as_str().expect("event");
        out.extend(
            llm::eventstream::Message::new(
                &[
                    (":event-type", kind),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                v["payload"].to_string(),
            )
            .encode(),
        );
    }
    out
}
