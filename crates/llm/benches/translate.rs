//! What the `ai` adapter's LLM work costs on the request's thread: preparing a chat request
//! (same dialect and OpenAI -> Anthropic), reading a response for usage, and translating a
//! short stream event by event, shaped like the benchmark harness's traffic. Compare two
//! builds by running it in each (`cargo bench -p switchyard-llm`); `bench/run.sh` prices the
//! whole process.

use std::time::Instant;

use bytes::Bytes;
use llm::{Format, RequestOptions, StreamTranslator};
use serde_json::Map;

const REQUEST: &[u8] = br#"{"model":"bench-model","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":64,"temperature":0.2}"#;
const RESPONSE: &[u8] = br#"{"id":"chatcmpl-b","object":"chat.completion","created":1735689600,"model":"bench-model-2025","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a fixed benchmark completion, long enough to look like a short real answer."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":36,"total_tokens":60}}"#;

fn anthropic_stream() -> Vec<Bytes> {
    let mut events = vec![
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_b\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"bench-claude\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":24,\"output_tokens\":1}}}\n\n".to_string(),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_string(),
    ];
    for w in ["Hello", "there", "from", "the", "bench", "stream"] {
        events.push(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{w} \"}}}}\n\n"));
    }
    events.push(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into(),
    );
    events.push("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":6}}\n\n".into());
    events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
    events.into_iter().map(Bytes::from).collect()
}

/// `LLM_BENCH_ONLY=stream` runs only the cases whose name holds the word; `LLM_BENCH_ITERS`
/// sets the iterations (e.g. a few hundred under `valgrind --tool=callgrind`, whose instruction
/// counts do not move with the machine's load).
fn time(name: &str, iterations: u32, mut f: impl FnMut()) {
    if std::env::var("LLM_BENCH_ONLY").is_ok_and(|only| !name.contains(&only)) {
        return;
    }
    let iterations = std::env::var("LLM_BENCH_ITERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(iterations);
    for _ in 0..iterations / 10 {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / iterations as f64);
    }
    eprintln!("{name:<34} {best:>9.0} ns (best of 5 x {iterations})");
}

fn main() {
    let empty = Map::new();
    let aliases = vec![("bench-model".to_string(), "bench-model-2025".to_string())];
    let opts = RequestOptions {
        model_override: None,
        model_aliases: &aliases,
        defaults: &empty,
        overrides: &empty,
        default_max_tokens: 4096,
    };
    time("prepare openai -> openai", 20_000, || {
        std::hint::black_box(
            llm::prepare_request(Format::OpenAiChat, Format::OpenAiChat, REQUEST, &opts).unwrap(),
        );
    });
    time("prepare openai -> anthropic", 20_000, || {
        std::hint::black_box(
            llm::prepare_request(
                Format::OpenAiChat,
                Format::AnthropicMessages,
                REQUEST,
                &opts,
            )
            .unwrap(),
        );
    });
    time("response openai (usage read)", 20_000, || {
        std::hint::black_box(
            llm::translate_response_with_model(
                Format::OpenAiChat,
                Format::OpenAiChat,
                RESPONSE,
                None,
            )
            .unwrap(),
        );
    });
    let events = anthropic_stream();
    time("stream anthropic -> openai (11 ev)", 20_000, || {
        let mut t = StreamTranslator::new(Format::OpenAiChat, Format::AnthropicMessages, true);
        for e in &events {
            std::hint::black_box(t.feed(e.clone()));
        }
        std::hint::black_box(t.finish());
    });
}
