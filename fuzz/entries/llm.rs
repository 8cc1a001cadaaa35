// Fuzz entry points for crates/llm. Included with `#[path]` by fuzz/fuzz_targets/*.rs and by
// crates/llm/tests/fuzz_replay.rs, so the targets and the CI corpus replay run the same code.
// Each takes the fuzzer's raw bytes; a panic (or a failed assertion) is a finding.

use bytes::Bytes;
use llm::{Format, RequestOptions, StreamTranslator};
use serde_json::{Map, Value};

#[path = "chunks.rs"]
mod chunks;
use chunks::chunks;

const ALL: [Format; 5] = [
    Format::OpenAiChat,
    Format::AnthropicMessages,
    Format::OpenAiResponses,
    Format::Gemini,
    Format::Bedrock,
];
const CLIENTS: [Format; 3] = [
    Format::OpenAiChat,
    Format::AnthropicMessages,
    Format::OpenAiResponses,
];
const PROVIDERS: [Format; 4] = [
    Format::OpenAiChat,
    Format::AnthropicMessages,
    Format::Gemini,
    Format::Bedrock,
];

/// `[seed][stream...]`: the SSE parser must dispatch the same events however the stream is
/// chunked.
pub fn sse(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let parse = |parts: Vec<&[u8]>| {
        let mut p = llm::__fuzz::SseParser::default();
        let mut events = Vec::new();
        for part in parts {
            p.feed(part, &mut |e| events.push(e));
        }
        p.finish(&mut |e| events.push(e));
        events
    };
    let whole = parse(vec![stream]);
    let chunked = parse(chunks(stream, seed));
    assert_eq!(whole, chunked, "SSE events depend on chunking");
}

/// `[seed][frames...]`: the event-stream decoder must decode the same messages (and fail at
/// the same point) however the bytes are chunked, and a decoded message re-encodes to
/// itself.
pub fn eventstream(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let decode = |parts: Vec<&[u8]>| {
        let mut d = llm::eventstream::Decoder::default();
        let mut out = Vec::new();
        let mut failed = false;
        for part in parts {
            if d.feed(part, &mut out).is_err() {
                failed = true;
                break;
            }
        }
        (out, failed, if failed { 0 } else { d.pending_bytes() })
    };
    let whole = decode(vec![stream]);
    let chunked = decode(chunks(stream, seed));
    assert_eq!(whole, chunked, "event-stream messages depend on chunking");
    for m in &whole.0 {
        let mut again = Vec::new();
        llm::eventstream::Decoder::default()
            .feed(&m.encode(), &mut again)
            .expect("a decoded message re-encodes to a valid frame");
        assert_eq!(again.as_slice(), std::slice::from_ref(m));
    }
}

/// `[route][options][body...]`: `prepare_request` for every ingress/egress pair (including
/// the pairs it must refuse), with or without model override, aliases, defaults and
/// overrides. A prepared body must be JSON.
pub fn request_translate(data: &[u8]) {
    let [route, flags, body @ ..] = data else {
        return;
    };
    let ingress = ALL[usize::from(route % 5)];
    let egress = ALL[usize::from(route / 5 % 5)];
    let mut defaults = Map::new();
    let mut overrides = Map::new();
    if flags & 4 != 0 {
        defaults.insert("temperature".into(), Value::from(0.5));
        defaults.insert("max_tokens".into(), Value::from(64));
    }
    if flags & 8 != 0 {
        overrides.insert("top_p".into(), Value::from(0.9));
        overrides.insert("stream".into(), Value::from(flags & 16 != 0));
    }
    let aliases = if flags & 2 != 0 {
        vec![
            ("gpt-*".to_string(), "aliased".to_string()),
            ("*".to_string(), "catch-all".to_string()),
        ]
    } else {
        Vec::new()
    };
    let opts = RequestOptions {
        model_override: (flags & 1 != 0).then_some("forced-model"),
        model_aliases: &aliases,
        defaults: &defaults,
        overrides: &overrides,
        default_max_tokens: if flags & 32 != 0 { 0 } else { 4096 },
    };
    if let Ok(prepared) = llm::prepare_request(ingress, egress, body, &opts) {
        serde_json::from_slice::<Value>(&prepared.body).expect("a prepared body is JSON");
        let _ = llm::estimate_input_tokens(&prepared.prompt[..prepared.prompt.len().min(4)]);
    }
}

/// `[route][flags][body...]`: non-streaming response translation (provider body to the
/// client's format) for every pair, and the error-body translation.
pub fn response_translate(data: &[u8]) {
    let [route, flags, body @ ..] = data else {
        return;
    };
    let ingress = ALL[usize::from(route % 5)];
    let egress = ALL[usize::from(route / 5 % 5)];
    let model = (flags & 1 != 0).then_some("upstream-model");
    if let Ok((Some(out), _info)) = llm::translate_response_with_model(ingress, egress, body, model)
    {
        // JSON, checked for syntax only: a provider's number beyond f64's range (`1e999`)
        // passes through verbatim, as JSON allows, though a `Value` cannot hold it.
        serde_json::from_slice::<&serde_json::value::RawValue>(&out)
            .expect("a translated response is JSON");
    }
    let status = 400 + u16::from(*flags);
    let _ = llm::translate_error(ingress, egress, status, body);
}

/// `[route][flags][seed][stream...]`: a provider stream (SSE, or event-stream frames for
/// Bedrock) through `StreamTranslator` for every client/provider pair, in chunks decided by
/// `seed`, ended by `finish` or `fail`.
pub fn stream_translate(data: &[u8]) {
    let [route, flags, seed, stream @ ..] = data else {
        return;
    };
    let ingress = CLIENTS[usize::from(route % 3)];
    let egress = PROVIDERS[usize::from(route / 3 % 4)];
    let mut t = StreamTranslator::new(ingress, egress, flags & 1 != 0);
    if flags & 2 != 0 {
        t = t.with_upstream_model(Some("upstream-model"));
    }
    let mut out = 0usize;
    for part in chunks(stream, *seed) {
        out += t.feed(Bytes::copy_from_slice(part)).len();
        let _ = t.saw_first_token();
    }
    if flags & 4 != 0 {
        out += t.fail("upstream broke").len();
    } else {
        out += t.finish().len();
    }
    // Closed: later input is ignored.
    assert!(t.feed(Bytes::from_static(b"data: {}\n\n")).is_empty());
    let _ = (out, t.info());
}
