//! Stream translation: golden fixtures, chunk-boundary independence,
//! passthrough, include_usage and failure events.

mod common;

use bytes::Bytes;
use common::fixture;
use llm::{Format, StreamTranslator, Usage};
use serde_json::Value;

/// Feeds `input` split into `chunk_size`-byte chunks, then finishes.
fn run(t: &mut StreamTranslator, input: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in input.chunks(chunk_size) {
        out.extend_from_slice(&t.feed(Bytes::copy_from_slice(c)));
    }
    out.extend_from_slice(&t.finish());
    out
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

/// Splits SSE output into (event name, data) pairs, asserting framing.
fn events(out: &[u8]) -> Vec<(Option<String>, String)> {
    let text = std::str::from_utf8(out).expect("utf8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "output must end with a complete event: {text:?}"
    );
    text.split_terminator("\n\n")
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

#[test]
fn anthropic_stream_to_openai_golden_any_chunking() {
    let input = fixture("stream_anthropic.sse");
    let mut whole = StreamTranslator::new(Format::OpenAiChat, Format::AnthropicMessages, true);
    let out_whole = run(&mut whole, &input, input.len());
    let mut bytewise = StreamTranslator::new(Format::OpenAiChat, Format::AnthropicMessages, true);
    let out_bytes = run(&mut bytewise, &input, 1);
    let crlf: Vec<u8> = String::from_utf8(input.clone())
        .expect("utf8")
        .replace('\n', "\r\n")
        .into_bytes();
    let mut crlf_t = StreamTranslator::new(Format::OpenAiChat, Format::AnthropicMessages, true);
    let out_crlf = run(&mut crlf_t, &crlf, 7);

    let whole_s = zero_created(std::str::from_utf8(&out_whole).expect("utf8"));
    assert_eq!(
        whole_s,
        zero_created(std::str::from_utf8(&out_bytes).expect("utf8"))
    );
    assert_eq!(
        whole_s,
        zero_created(std::str::from_utf8(&out_crlf).expect("utf8"))
    );

    let got: Vec<String> = events(whole_s.as_bytes())
        .into_iter()
        .map(|(name, data)| {
            assert!(name.is_none(), "OpenAI chunks carry no event name");
            data
        })
        .collect();
    let expected = String::from_utf8(fixture("stream_anthropic_to_openai.jsonl")).expect("utf8");
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (g, e) in got.iter().zip(&expected) {
        if *e == "[DONE]" {
            assert_eq!(g, "[DONE]");
        } else {
            let g: Value = serde_json::from_str(g).expect("chunk json");
            let e: Value = serde_json::from_str(e).expect("fixture json");
            assert_eq!(g, e);
        }
    }

    // Argument fragments reassemble into the original JSON per tool call.
    let mut args = vec![String::new(), String::new()];
    for g in &got[..got.len() - 1] {
        let v: Value = serde_json::from_str(g).expect("json");
        for tc in v["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().expect("index") as usize;
            args[i].push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(args, vec![r#"{"city": "Paris"}"#, r#"{"city": "Oslo"}"#]);

    let info = bytewise.info();
    assert_eq!(
        info.usage,
        Usage {
            input_tokens: Some(125),
            output_tokens: Some(89),
            cached_input_tokens: Some(100),
            reasoning_tokens: None
        }
    );
    assert_eq!(info.completion, vec!["Checking héllo ✓".to_string()]);
    assert_eq!(info.model.as_deref(), Some("claude-sonnet-4-5"));
}

#[test]
fn openai_stream_to_anthropic_golden_any_chunking() {
    let input = fixture("stream_openai.sse");
    let mut whole = StreamTranslator::new(Format::AnthropicMessages, Format::OpenAiChat, false);
    let out_whole = run(&mut whole, &input, input.len());
    let mut bytewise = StreamTranslator::new(Format::AnthropicMessages, Format::OpenAiChat, false);
    let out_bytes = run(&mut bytewise, &input, 1);
    assert_eq!(out_whole, out_bytes);

    let got = events(&out_whole);
    let expected = String::from_utf8(fixture("stream_openai_to_anthropic.jsonl")).expect("utf8");
    let expected: Vec<Value> = expected
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture"))
        .collect();
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for ((name, data), e) in got.iter().zip(&expected) {
        let data: Value = serde_json::from_str(data).expect("event json");
        assert_eq!(name.as_deref(), e["event"].as_str());
        assert_eq!(data["type"], e["event"], "event name matches data type");
        assert_eq!(data, e["data"]);
    }
    assert_valid_anthropic_sequence(&got);

    // Argument fragments reassemble per tool_use block.
    let mut args = std::collections::BTreeMap::<u64, String>::new();
    for (_, data) in &got {
        let v: Value = serde_json::from_str(data).expect("json");
        if v["delta"]["type"] == "input_json_delta" {
            let i = v["index"].as_u64().expect("index");
            args.entry(i)
                .or_default()
                .push_str(v["delta"]["partial_json"].as_str().expect("partial"));
        }
    }
    assert_eq!(
        args.get(&2).map(String::as_str),
        Some(r#"{"city": "Paris"}"#)
    );
    assert_eq!(
        args.get(&3).map(String::as_str),
        Some(r#"{"city": "Oslo"}"#)
    );

    let info = whole.info();
    assert_eq!(info.usage.reasoning_tokens, Some(128));
    assert_eq!(info.usage.cached_input_tokens, Some(1536));
    assert_eq!(info.completion, vec!["Checking héllo ✓".to_string()]);
}

/// message_start first; blocks start, take deltas and stop one at a time
/// with increasing indexes; message_delta then message_stop last.
fn assert_valid_anthropic_sequence(events: &[(Option<String>, String)]) {
    let names: Vec<&str> = events
        .iter()
        .map(|(n, _)| n.as_deref().expect("named"))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(
        &names[names.len() - 2..],
        &["message_delta", "message_stop"]
    );
    let mut open: Option<u64> = None;
    let mut next = 0u64;
    for (name, data) in events {
        let v: Value = serde_json::from_str(data).expect("json");
        match name.as_deref() {
            Some("content_block_start") => {
                assert_eq!(open, None, "previous block must be stopped");
                assert_eq!(v["index"].as_u64(), Some(next));
                open = Some(next);
                next += 1;
            }
            Some("content_block_delta") => assert_eq!(v["index"].as_u64(), open),
            Some("content_block_stop") => {
                assert_eq!(v["index"].as_u64(), open);
                open = None;
            }
            Some("message_delta") => assert_eq!(open, None),
            _ => {}
        }
    }
}

#[test]
fn include_usage_controls_usage_chunk() {
    let input = fixture("stream_anthropic.sse");
    let mut t = StreamTranslator::new(Format::OpenAiChat, Format::AnthropicMessages, false);
    let out = run(&mut t, &input, 64);
    let evs = events(&out);
    assert_eq!(evs.last().map(|(_, d)| d.as_str()), Some("[DONE]"));
    assert!(
        !evs.iter().any(|(_, d)| d.contains("\"usage\"")),
        "no usage chunk without include_usage"
    );
    assert_eq!(
        t.info().usage.output_tokens,
        Some(89),
        "usage still observed"
    );
}

#[test]
fn first_token_is_tracked() {
    let mut t = StreamTranslator::new(Format::OpenAiChat, Format::AnthropicMessages, false);
    let input = fixture("stream_anthropic.sse");
    let text = String::from_utf8(input).expect("utf8");
    let text_start = text.find("\"text_delta\"").expect("has text");
    let cut = text[..text_start].rfind("event:").expect("event before");
    t.feed(Bytes::from(text[..cut].to_owned()));
    assert!(
        !t.saw_first_token(),
        "message_start and thinking are not content tokens"
    );
    t.feed(Bytes::from(text[cut..].to_owned()));
    assert!(t.saw_first_token());
}

#[test]
fn passthrough_returns_same_bytes_and_extracts_usage() {
    for (fmt, name) in [
        (Format::OpenAiChat, "stream_openai.sse"),
        (Format::AnthropicMessages, "stream_anthropic.sse"),
    ] {
        let input = fixture(name);
        let mut t = StreamTranslator::new(fmt, fmt, true);
        let mut out = Vec::new();
        for c in input.chunks(13) {
            let chunk = Bytes::copy_from_slice(c);
            let ptr = chunk.as_ptr();
            let back = t.feed(chunk);
            assert_eq!(back.as_ptr(), ptr, "passthrough must not copy");
            out.extend_from_slice(&back);
        }
        assert!(t.finish().is_empty());
        assert_eq!(out, input);
        let info = t.info();
        assert!(
            info.usage.output_tokens.is_some(),
            "{name}: usage extracted"
        );
        assert_eq!(
            info.completion,
            vec!["Checking héllo ✓".to_string()],
            "{name}"
        );
        assert!(t.saw_first_token());
    }
}

#[test]
fn fail_mid_stream_emits_well_formed_error_in_client_format() {
    let input = fixture("stream_anthropic.sse");
    let half = &input[..input.len() / 2];

    let mut t = StreamTranslator::new(Format::OpenAiChat, Format::AnthropicMessages, true);
    t.feed(Bytes::copy_from_slice(half));
    let err = t.fail("upstream connection reset");
    let evs = events(&err);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].0, None);
    let v: Value = serde_json::from_str(&evs[0].1).expect("json");
    assert_eq!(v["error"]["message"], "upstream connection reset");
    assert!(v["error"]["type"].is_string());
    assert!(t.finish().is_empty(), "nothing after a failure");
    assert!(t.feed(Bytes::from_static(b"data: {}\n\n")).is_empty());

    let input = fixture("stream_openai.sse");
    let mut t = StreamTranslator::new(Format::AnthropicMessages, Format::OpenAiChat, false);
    t.feed(Bytes::copy_from_slice(&input[..input.len() / 2]));
    let err = t.fail("timeout");
    assert!(err.starts_with(b"event: error\ndata: "));
    let evs = events(&err);
    let v: Value = serde_json::from_str(&evs[0].1).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"type":"error","error":{"type":"api_error","message":"timeout"}})
    );
}

#[test]
fn upstream_error_events_are_translated() {
    let an = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let mut t = StreamTranslator::new(Format::OpenAiChat, Format::AnthropicMessages, true);
    let out = run(&mut t, an, 5);
    let evs = events(&out);
    let last: Value = serde_json::from_str(&evs.last().expect("event").1).expect("json");
    assert_eq!(last["error"]["message"], "Overloaded");
    assert_eq!(last["error"]["type"], "server_error");
    assert!(
        !evs.iter().any(|(_, d)| d == "[DONE]"),
        "no [DONE] after an error"
    );

    let oa = b"data: {\"id\":\"c\",\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
    let mut t = StreamTranslator::new(Format::AnthropicMessages, Format::OpenAiChat, false);
    let out = run(&mut t, oa, 3);
    let evs = events(&out);
    let (name, data) = evs.last().expect("event");
    assert_eq!(name.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(data).expect("json");
    assert_eq!(
        v["error"],
        serde_json::json!({"type":"api_error","message":"boom"})
    );
    assert!(!evs
        .iter()
        .any(|(n, _)| n.as_deref() == Some("message_stop")));
}

#[test]
fn stream_without_done_is_closed_by_finish() {
    // OpenAI upstream that ends without [DONE] or finish_reason.
    let oa = b"data: {\"id\":\"c\",\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
    let mut t = StreamTranslator::new(Format::AnthropicMessages, Format::OpenAiChat, false);
    let out = run(&mut t, oa, oa.len());
    let evs = events(&out);
    assert_valid_anthropic_sequence(&evs);
    let names: Vec<_> = evs
        .iter()
        .map(|(n, _)| n.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );

    // Anthropic upstream closed after a delta, before `message_stop` (which its streams always
    // end with): the answer was cut short, so the client gets an error event, never a `[DONE]`
    // that would make it look complete.
    let an = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}";
    let mut t = StreamTranslator::new(Format::OpenAiChat, Format::AnthropicMessages, true);
    let out = run(&mut t, an, 4);
    let evs = events(&out);
    assert!(evs.iter().all(|(_, d)| d != "[DONE]"), "{evs:?}");
    let last: Value = serde_json::from_str(&evs.last().expect("events").1).expect("json");
    assert_eq!(last["error"]["type"], "server_error", "{last}");
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("message_stop"));
    // What arrived before the cut was still delivered.
    assert!(
        evs.iter().any(|(_, d)| d.contains("\"content\":\"x\"")),
        "{evs:?}"
    );
}

#[test]
fn garbage_input_never_panics() {
    let junk: &[&[u8]] = &[b"data: {not json}\n\n", b"\xff\xfe\n\n", b"data: {\"choices\":[{\"index\":18446744073709551615,\"delta\":{\"content\":\"x\"}}]}\n\n", b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":9,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\"}}\n\n"];
    for (i, e) in [
        (Format::OpenAiChat, Format::AnthropicMessages),
        (Format::AnthropicMessages, Format::OpenAiChat),
        (Format::OpenAiChat, Format::OpenAiChat),
    ] {
        let mut t = StreamTranslator::new(i, e, true);
        for j in junk {
            t.feed(Bytes::copy_from_slice(j));
        }
        t.finish();
        let _ = t.info();
    }
}
