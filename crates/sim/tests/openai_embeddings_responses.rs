//! OpenAI Embeddings and Responses endpoints.

mod common;

use common::{keys, parse_sse, post, weather_tool_openai};
use serde_json::{json, Value};
use sim::openai::{spawn, Options};

/// Decodes standard padded base64 (test-side, independent of the simulator's encoder).
fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for quad in s.as_bytes().chunks(4) {
        let digits: Vec<u8> = quad
            .iter()
            .filter(|c| **c != b'=')
            .map(|c| value(*c))
            .collect();
        let n = digits
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | u32::from(*d) << (18 - 6 * i));
        out.extend(n.to_be_bytes()[1..digits.len()].iter());
    }
    out
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors_in_reference_shape() {
    let sim = spawn(Options::default()).await.unwrap();
    let body = json!({"model": "sim-embed", "input": ["hello world", "other text", "hello world"]});
    let v = post(sim.addr, "/v1/embeddings", &[], &body).await.json();
    assert_eq!(keys(&v), ["object", "data", "model", "usage"]);
    assert_eq!(v["object"], "list");
    assert_eq!(keys(&v["data"][0]), ["object", "embedding", "index"]);
    assert_eq!(v["usage"], json!({"prompt_tokens": 6, "total_tokens": 6}));
    let vectors: Vec<Vec<f64>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(vectors[0].len(), 64);
    let norm: f64 = vectors[0].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "unit length, got {norm}");
    assert_eq!(vectors[0], vectors[2], "same input, same vector");
    assert_ne!(vectors[0], vectors[1]);
}

#[tokio::test]
async fn base64_encoding_carries_the_same_little_endian_floats() {
    let sim = spawn(Options::default()).await.unwrap();
    let float = post(
        sim.addr,
        "/v1/embeddings",
        &[],
        &json!({"model": "e", "input": "abc", "dimensions": 8}),
    )
    .await
    .json();
    let b64 = post(
        sim.addr,
        "/v1/embeddings",
        &[],
        &json!({"model": "e", "input": "abc", "dimensions": 8, "encoding_format": "base64"}),
    )
    .await
    .json();
    let bytes = decode_base64(b64["data"][0]["embedding"].as_str().unwrap());
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let floats: Vec<f32> = float["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(decoded, floats);
}

#[tokio::test]
async fn embeddings_validation() {
    let sim = spawn(Options::default()).await.unwrap();
    for (body, param) in [
        (json!({"model": "e"}), "input"),
        (json!({"input": "x"}), "model"),
        (json!({"model": "e", "input": []}), "input"),
        (json!({"model": "e", "input": [1, "x"]}), "input"),
        (
            json!({"model": "e", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": "e", "input": "x", "dimensions": 0}),
            "dimensions",
        ),
    ] {
        let r = post(sim.addr, "/v1/embeddings", &[], &body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json()["error"]["param"], param, "{body}");
    }
    let tokens = post(
        sim.addr,
        "/v1/embeddings",
        &[],
        &json!({"model": "e", "input": [[1, 2, 3]]}),
    )
    .await;
    assert_eq!(tokens.json()["usage"]["prompt_tokens"], 3);
}

#[tokio::test]
async fn responses_object_shape() {
    let sim = spawn(Options::default()).await.unwrap();
    let v = post(
        sim.addr,
        "/v1/responses",
        &[],
        &json!({"model": "m", "input": "hi there"}),
    )
    .await
    .json();
    assert_eq!(
        &keys(&v)[..5],
        ["id", "object", "created_at", "status", "error"]
    );
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    let item = &v["output"][0];
    assert_eq!(keys(item), ["type", "id", "status", "role", "content"]);
    assert_eq!(item["content"][0]["type"], "output_text");
    assert_eq!(item["content"][0]["text"], "Hello! You said: hi there");
    assert_eq!(
        keys(&v["usage"]),
        [
            "input_tokens",
            "input_tokens_details",
            "output_tokens",
            "output_tokens_details",
            "total_tokens"
        ]
    );
}

#[tokio::test]
async fn responses_stream_events_are_ordered_and_reassemble() {
    let sim = spawn(Options::default()).await.unwrap();
    let body = json!({"model": "m", "input": [{"role": "user", "content": "stream this"}], "stream": true});
    let events = parse_sse(&post(sim.addr, "/v1/responses", &[], &body).await.text());
    let mut text = String::new();
    for (seq, e) in events.iter().enumerate() {
        let data = e.json();
        assert_eq!(e.name.as_deref(), data["type"].as_str());
        assert_eq!(data["sequence_number"], seq, "sequence numbers count up");
        if data["type"] == "response.output_text.delta" {
            text.push_str(data["delta"].as_str().unwrap());
        }
    }
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(
        &names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        &names[names.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(text, "Hello! You said: stream this");
    let done = events.last().unwrap().json();
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], text);
    assert_eq!(events[0].json()["response"]["status"], "in_progress");
}

#[tokio::test]
async fn responses_function_calls_stream_and_outputs_are_quoted() {
    let sim = spawn(Options::default()).await.unwrap();
    let tool = weather_tool_openai()["function"].clone();
    let mut flat = json!({"type": "function"});
    for (k, v) in tool.as_object().unwrap() {
        flat[k] = v.clone();
    }
    let body = json!({"model": "m", "input": "weather?", "tools": [flat], "stream": true});
    let events = parse_sse(&post(sim.addr, "/v1/responses", &[], &body).await.text());
    let args: String = events
        .iter()
        .map(|e| e.json())
        .filter(|d| d["type"] == "response.function_call_arguments.delta")
        .map(|d| d["delta"].as_str().unwrap().to_string())
        .collect();
    let parsed: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(parsed["location"], "Paris");
    let done = events.last().unwrap().json();
    let call = &done["response"]["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["arguments"], args);

    let follow_up = json!({"model": "m", "input": [
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_weather", "arguments": args},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
    ], "tools": [flat]});
    let v = post(sim.addr, "/v1/responses", &[], &follow_up)
        .await
        .json();
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "The tool returned: sunny"
    );
}
