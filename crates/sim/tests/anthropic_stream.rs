//! Anthropic streaming: the documented event sequence, index bookkeeping, and that the stream
//! reassembles into the same message the non-streaming endpoint returns.

mod common;

use common::{parse_sse, post};
use serde_json::{json, Value};
use sim::anthropic::{spawn, Options};

const V: (&str, &str) = ("anthropic-version", "2023-06-01");

/// Checks the event grammar and rebuilds the message from the stream.
///
/// message_start (content_block_start delta* content_block_stop)* message_delta message_stop,
/// with `ping` allowed between events; block indexes count up from 0; deltas match their
/// block's type and refer to the open block.
fn reassemble(text: &str) -> Value {
    let events = parse_sse(text);
    let mut message: Option<Value> = None;
    let mut open: Option<(usize, Value, String)> = None; // (index, block, tool input JSON)
    let mut saw_delta = false;
    let mut stopped = false;
    for (i, e) in events.iter().enumerate() {
        let data = e.json();
        let kind = data["type"].as_str().unwrap().to_string();
        assert_eq!(
            e.name.as_deref(),
            Some(kind.as_str()),
            "event name matches data.type"
        );
        assert!(!stopped, "event after message_stop: {kind}");
        if i == 0 {
            assert_eq!(kind, "message_start");
        }
        match kind.as_str() {
            "message_start" => {
                assert!(message.is_none(), "second message_start");
                let m = data["message"].clone();
                assert_eq!(m["content"], json!([]));
                assert!(m["stop_reason"].is_null());
                message = Some(m);
            }
            "ping" => {}
            "content_block_start" => {
                assert!(open.is_none(), "block started while another is open");
                let m = message.as_mut().expect("message_start first");
                let index = data["index"].as_u64().unwrap() as usize;
                assert_eq!(
                    index,
                    m["content"].as_array().unwrap().len(),
                    "indexes count up"
                );
                open = Some((index, data["content_block"].clone(), String::new()));
            }
            "content_block_delta" => {
                let (index, block, input) = open.as_mut().expect("delta outside a block");
                assert_eq!(data["index"].as_u64().unwrap() as usize, *index);
                let delta = &data["delta"];
                match (
                    block["type"].as_str().unwrap(),
                    delta["type"].as_str().unwrap(),
                ) {
                    ("text", "text_delta") => {
                        let t = block["text"].as_str().unwrap().to_string();
                        block["text"] = json!(t + delta["text"].as_str().unwrap());
                    }
                    ("thinking", "thinking_delta") => {
                        assert!(block.get("signature").is_none(), "thinking after signature");
                        let t = block["thinking"].as_str().unwrap().to_string();
                        block["thinking"] = json!(t + delta["thinking"].as_str().unwrap());
                    }
                    ("thinking", "signature_delta") => {
                        block["signature"] = delta["signature"].clone();
                    }
                    ("tool_use", "input_json_delta") => {
                        input.push_str(delta["partial_json"].as_str().unwrap());
                    }
                    (b, d) => panic!("{d} in a {b} block"),
                }
            }
            "content_block_stop" => {
                let (index, mut block, input) = open.take().expect("stop without start");
                assert_eq!(data["index"].as_u64().unwrap() as usize, index);
                if block["type"] == "tool_use" {
                    block["input"] = serde_json::from_str(&input)
                        .unwrap_or_else(|e| panic!("tool input {input:?} is not JSON: {e}"));
                }
                let m = message.as_mut().unwrap();
                m["content"].as_array_mut().unwrap().push(block);
            }
            "message_delta" => {
                assert!(open.is_none(), "message_delta inside a block");
                let m = message.as_mut().unwrap();
                m["stop_reason"] = data["delta"]["stop_reason"].clone();
                m["stop_sequence"] = data["delta"]["stop_sequence"].clone();
                m["usage"]["output_tokens"] = data["usage"]["output_tokens"].clone();
                saw_delta = true;
            }
            "message_stop" => {
                assert!(saw_delta, "message_stop before message_delta");
                stopped = true;
            }
            other => panic!("unknown event {other}"),
        }
    }
    assert!(stopped, "stream ended without message_stop");
    message.unwrap()
}

/// Ids differ between two requests; everything else must match.
fn without_ids(mut m: Value) -> Value {
    m["id"] = Value::Null;
    for block in m["content"].as_array_mut().unwrap() {
        if block.get("id").is_some() {
            block["id"] = Value::Null;
        }
    }
    m
}

async fn streamed_and_whole(body: Value) -> (Value, Value, String) {
    let sim = spawn(Options::default()).await.unwrap();
    let whole = post(sim.addr, "/v1/messages", &[V], &body).await.json();
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let r = post(sim.addr, "/v1/messages", &[V], &streaming).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.header("request-id").is_some());
    let text = r.text();
    (reassemble(&text), whole, text)
}

#[tokio::test]
async fn text_stream_follows_the_documented_sequence() {
    let body = json!({"model": "claude-sim-1", "max_tokens": 100,
                      "messages": [{"role": "user", "content": "Stream a few words"}]});
    let (streamed, whole, raw) = streamed_and_whole(body).await;
    assert_eq!(without_ids(streamed), without_ids(whole));
    let names: Vec<String> = parse_sse(&raw)
        .into_iter()
        .map(|e| e.name.unwrap())
        .collect();
    assert_eq!(
        &names[..3],
        ["message_start", "content_block_start", "ping"]
    );
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(names.iter().filter(|n| *n == "content_block_delta").count() > 1);
}

#[tokio::test]
async fn tool_use_stream_reassembles_input_json_from_fragments() {
    let body = json!({"model": "m", "max_tokens": 100,
        "tools": [
            {"name": "get_weather", "input_schema": {"type": "object", "properties": {
                "location": {"type": "string"}, "days": {"type": "integer"}}}},
            {"name": "get_time", "input_schema": {"type": "object", "properties": {
                "timezone": {"type": "string"}}}}
        ],
        "messages": [{"role": "user", "content": "weather and time, both please"}]});
    let (streamed, whole, raw) = streamed_and_whole(body).await;
    assert_eq!(streamed["stop_reason"], "tool_use");
    let content = streamed["content"].as_array().unwrap();
    assert_eq!(content.len(), 3, "preface text and two tool_use blocks");
    assert_eq!(content[1]["input"], json!({"location": "Paris", "days": 1}));
    assert_eq!(content[2]["name"], "get_time");
    assert_eq!(without_ids(streamed), without_ids(whole));
    let fragments = parse_sse(&raw)
        .iter()
        .filter(|e| e.json()["delta"]["type"] == "input_json_delta")
        .count();
    assert!(
        fragments > 2,
        "inputs arrive in several fragments, got {fragments}"
    );
}

#[tokio::test]
async fn thinking_stream_has_thinking_deltas_then_a_signature() {
    let body = json!({"model": "m", "max_tokens": 2000,
                      "thinking": {"type": "enabled", "budget_tokens": 1024},
                      "messages": [{"role": "user", "content": "hmm"}]});
    let (streamed, whole, _) = streamed_and_whole(body).await;
    assert_eq!(streamed["content"][0]["type"], "thinking");
    assert_eq!(
        streamed["content"][0]["signature"],
        whole["content"][0]["signature"]
    );
    assert_eq!(without_ids(streamed), without_ids(whole));
}

#[tokio::test]
async fn stop_sequence_stream_reports_it_in_message_delta() {
    let body = json!({"model": "m", "max_tokens": 100, "stop_sequences": ["said"],
                      "messages": [{"role": "user", "content": "x"}]});
    let (streamed, whole, _) = streamed_and_whole(body).await;
    assert_eq!(streamed["stop_reason"], "stop_sequence");
    assert_eq!(streamed["stop_sequence"], "said");
    assert_eq!(without_ids(streamed), without_ids(whole));
}
