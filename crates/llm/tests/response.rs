//! Non-streaming response translation, against golden fixtures.

mod common;

use common::{fixture, json_of};
use llm::{translate_response, Format, Usage};

#[test]
fn anthropic_response_to_openai_golden() {
    let (body, info) = translate_response(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        &fixture("response_anthropic.json"),
    )
    .expect("ok");
    let mut out = json_of(&body.expect("translated body"));
    let created = out
        .as_object_mut()
        .and_then(|o| o.remove("created"))
        .expect("created present");
    assert!(created.as_u64().is_some_and(|c| c > 1_600_000_000));
    assert_eq!(out, json_of(&fixture("response_anthropic_to_openai.json")));
    assert_eq!(info.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    assert_eq!(
        info.usage,
        Usage {
            input_tokens: Some(1120),
            output_tokens: Some(50),
            cached_input_tokens: Some(1000),
            reasoning_tokens: None
        }
    );
    assert_eq!(info.completion, vec!["Let me check.".to_string()]);
}

#[test]
fn openai_response_to_anthropic_golden() {
    let (body, info) = translate_response(
        Format::AnthropicMessages,
        Format::OpenAiChat,
        &fixture("response_openai.json"),
    )
    .expect("ok");
    assert_eq!(
        json_of(&body.expect("translated")),
        json_of(&fixture("response_openai_to_anthropic.json"))
    );
    assert_eq!(
        info.usage,
        Usage {
            input_tokens: Some(2000),
            output_tokens: Some(300),
            cached_input_tokens: Some(1536),
            reasoning_tokens: Some(128)
        }
    );
    assert_eq!(info.completion, vec!["Checking both.".to_string()]);
}

#[test]
fn response_round_trip_keeps_thinking_signature_and_tool_input() {
    let (oa, _) = translate_response(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        &fixture("response_anthropic.json"),
    )
    .expect("ok");
    let (an, _) = translate_response(
        Format::AnthropicMessages,
        Format::OpenAiChat,
        &oa.expect("body"),
    )
    .expect("ok");
    let an = json_of(&an.expect("body"));
    let orig = json_of(&fixture("response_anthropic.json"));
    assert_eq!(an["content"], orig["content"]);
    assert_eq!(an["id"], "msg_01ABC");
    assert_eq!(an["stop_reason"], "tool_use");
}

#[test]
fn same_format_returns_none_and_extracts_info() {
    let (body, info) = translate_response(
        Format::OpenAiChat,
        Format::OpenAiChat,
        &fixture("response_openai.json"),
    )
    .expect("ok");
    assert!(body.is_none());
    assert_eq!(info.usage.cached_input_tokens, Some(1536));
    assert_eq!(info.model.as_deref(), Some("gpt-4o-2024-08-06"));
    let (body, info) = translate_response(
        Format::AnthropicMessages,
        Format::AnthropicMessages,
        &fixture("response_anthropic.json"),
    )
    .expect("ok");
    assert!(body.is_none());
    assert_eq!(info.usage.input_tokens, Some(1120));
    assert_eq!(info.completion, vec!["Let me check.".to_string()]);
}

#[test]
fn finish_reasons_map_both_ways() {
    for (an, oa) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ] {
        let body = format!(
            r#"{{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[{{"type":"text","text":"x"}}],"stop_reason":"{an}","usage":{{"input_tokens":1,"output_tokens":1}}}}"#
        );
        let (out, _) = translate_response(
            Format::OpenAiChat,
            Format::AnthropicMessages,
            body.as_bytes(),
        )
        .expect("ok");
        assert_eq!(
            json_of(&out.expect("b"))["choices"][0]["finish_reason"],
            oa,
            "{an}"
        );
    }
    for (oa, an) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ] {
        let body = format!(
            r#"{{"id":"c1","model":"g","choices":[{{"index":0,"message":{{"role":"assistant","content":"x"}},"finish_reason":"{oa}"}}]}}"#
        );
        let (out, _) = translate_response(
            Format::AnthropicMessages,
            Format::OpenAiChat,
            body.as_bytes(),
        )
        .expect("ok");
        assert_eq!(json_of(&out.expect("b"))["stop_reason"], an, "{oa}");
    }
}

#[test]
fn invalid_upstream_json_is_502() {
    let err = translate_response(Format::OpenAiChat, Format::AnthropicMessages, b"{oops")
        .expect_err("err");
    assert_eq!(err.status, 502);
    let err = translate_response(Format::OpenAiChat, Format::OpenAiChat, b"").expect_err("err");
    assert_eq!(err.status, 502);
}
