//! Response guards on a streamed answer: SSE events parsed as they come, the text of each
//! choice (OpenAI Chat: `delta.content`, `refusal`, `reasoning_content`, `reasoning`, each
//! tool call's `function.arguments`) or content block (Anthropic: `text`, `thinking`,
//! `partial_json`) run through a [`Stream`] that holds back only what could still start a
//! match. Held text is sent as its own event before the choice's `finish_reason` chunk (or the
//! block's `content_block_stop`), with the same id, model and created. A reject ends the
//! stream with an error event in the caller's shape (then `data: [DONE]` for OpenAI); what was
//! sent before stays sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use llm::Format;
use serde_json::{json, Value};

use super::detectors::Stream;
use super::{error_json, Side, REJECTED, UNSUPPORTED};
use crate::observe::LlmSlot;
use crate::pipeline::ChunkFilter;

/// Which text of a choice or block a stream carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    /// A string field of the delta (`content`, `text`, `thinking`, `partial_json`, ...).
    Text(&'static str),
    /// `tool_calls[index].function.arguments`.
    ToolArgs(u64),
}

/// An event larger than this (no blank line yet) ends the stream rather than grow the buffer.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

const OPENAI_FIELDS: &[&str] = &["content", "refusal", "reasoning_content", "reasoning"];

pub struct SseGuard {
    side: Arc<Side>,
    format: Format,
    slot: Option<Arc<LlmSlot>>,
    /// Bytes of the event not yet complete.
    pending: Vec<u8>,
    /// (choice or block index, field) -> its text in the making.
    streams: BTreeMap<(u64, Field), Stream>,
    /// The last OpenAI chunk without its choices: the envelope of flushed chunks.
    envelope: Option<Value>,
    /// Rejected (or not a covered dialect): nothing more is sent.
    closed: bool,
}

impl SseGuard {
    pub fn new(side: Arc<Side>, format: Format, slot: Option<Arc<LlmSlot>>) -> Self {
        SseGuard {
            side,
            format,
            slot,
            pending: Vec::new(),
            streams: BTreeMap::new(),
            envelope: None,
            closed: false,
        }
    }

    fn error_event(&mut self, code: &str, message: &str, out: &mut Vec<u8>) {
        self.closed = true;
        let body =
            String::from_utf8_lossy(&error_json(self.format, 400, code, message)).into_owned();
        match self.format {
            Format::AnthropicMessages => {
                out.extend_from_slice(format!("event: error\ndata: {body}\n\n").as_bytes())
            }
            _ => out.extend_from_slice(format!("data: {body}\n\ndata: [DONE]\n\n").as_bytes()),
        }
    }

    fn reject(&mut self, detector: usize, out: &mut Vec<u8>) {
        self.side.log_hits(&[detector]);
        let msg = self.side.rejection(detector);
        self.error_event(REJECTED, &msg, out);
        self.side.mask_record(self.slot.as_ref(), true);
    }

    /// Runs text through its stream: the text to send now, or `Err` on a reject.
    fn feed(&mut self, key: (u64, Field), text: &str) -> Result<String, usize> {
        let s = self.streams.entry(key).or_default();
        let out = self.side.scanner.feed(s, text);
        self.side.log_hits(&out.hits);
        match out.rejected {
            Some(d) => Err(d),
            None => Ok(out.text),
        }
    }

    /// [`Self::feed`], and when `last`, the stream's end too (its held text joins).
    fn feed_last(&mut self, key: (u64, Field), text: &str, last: bool) -> Result<String, usize> {
        let mut sent = self.feed(key.clone(), text)?;
        if last {
            let mut s = self.streams.remove(&key).unwrap_or_default();
            let out = self.side.scanner.finish(&mut s);
            self.side.log_hits(&out.hits);
            if let Some(d) = out.rejected {
                return Err(d);
            }
            sent.push_str(&out.text);
        }
        Ok(sent)
    }

    /// Ends the streams of one index (all with `None`): `(field, held text)` for each.
    fn flush(&mut self, index: Option<u64>) -> Result<Vec<(u64, Field, String)>, usize> {
        let keys: Vec<(u64, Field)> = self
            .streams
            .keys()
            .filter(|(i, _)| index.is_none_or(|x| x == *i))
            .cloned()
            .collect();
        let mut held = Vec::new();
        for key in keys {
            let mut s = self.streams.remove(&key).unwrap_or_default();
            let out = self.side.scanner.finish(&mut s);
            self.side.log_hits(&out.hits);
            if let Some(d) = out.rejected {
                return Err(d);
            }
            if !out.text.is_empty() {
                held.push((key.0, key.1, out.text));
            }
        }
        Ok(held)
    }

    /// OpenAI chunks carrying held text, one per piece, in the envelope of `template`.
    fn openai_flush_events(
        &self,
        template: Option<&Value>,
        held: Vec<(u64, Field, String)>,
        out: &mut Vec<u8>,
    ) {
        let Some(mut base) = template.or(self.envelope.as_ref()).cloned() else {
            return;
        };
        if let Some(u) = base.get_mut("usage") {
            *u = Value::Null;
        }
        for (index, field, text) in held {
            let delta = match field {
                Field::Text(name) => json!({ name: text }),
                Field::ToolArgs(t) => {
                    json!({"tool_calls": [{"index": t, "function": {"arguments": text}}]})
                }
            };
            base["choices"] =
                json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": null}]);
            out.extend_from_slice(format!("data: {base}\n\n").as_bytes());
        }
    }

    fn anthropic_flush_events(held: Vec<(u64, Field, String)>, out: &mut Vec<u8>) {
        for (index, field, text) in held {
            let delta = match field {
                Field::Text("thinking") => json!({"type": "thinking_delta", "thinking": text}),
                Field::Text("partial_json") => {
                    json!({"type": "input_json_delta", "partial_json": text})
                }
                _ => json!({"type": "text_delta", "text": text}),
            };
            let ev = json!({"type": "content_block_delta", "index": index, "delta": delta});
            out.extend_from_slice(format!("event: content_block_delta\ndata: {ev}\n\n").as_bytes());
        }
    }

    /// One complete event (its raw bytes, blank line included) -> what to send.
    fn event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(raw);
        // `event:`, `id:`, `retry:` and comment lines, sent again as they came.
        let mut head = String::new();
        let mut data = String::new();
        let mut has_data = false;
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(v) = line.strip_prefix("data:") {
                if has_data {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
                has_data = true;
            } else {
                head.push_str(line);
                head.push('\n');
            }
        }
        if !has_data {
            out.extend_from_slice(raw);
            return;
        }
        if data.trim() == "[DONE]" {
            match self.flush(None) {
                Ok(held) => self.openai_flush_events(None, held, out),
                Err(d) => return self.reject(d, out),
            }
            out.extend_from_slice(raw);
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
            // Text the guards cannot read is not sent unread.
            self.error_event(
                UNSUPPORTED,
                "guardrail_unsupported: the provider's stream has an event the guards cannot read",
                out,
            );
            return;
        };
        let result = match self.format {
            Format::OpenAiChat => self.openai(&mut v, out),
            Format::AnthropicMessages => self.anthropic(&mut v, out),
            _ => {
                self.error_event(
                    UNSUPPORTED,
                    "guardrail_unsupported: response guards cannot run on this streamed format",
                    out,
                );
                return;
            }
        };
        match result {
            Err(d) => self.reject(d, out),
            Ok(()) => {
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(format!("data: {v}\n\n").as_bytes());
            }
        }
    }

    fn openai(&mut self, v: &mut Value, out: &mut Vec<u8>) -> Result<(), usize> {
        let Some(choices) = v.get("choices").and_then(Value::as_array).cloned() else {
            return Ok(());
        };
        let mut envelope = v.clone();
        envelope["choices"] = json!([]);
        self.envelope = Some(envelope.clone());
        let mut new_choices = Vec::with_capacity(choices.len());
        for mut choice in choices {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            // The choice's last chunk: text it carries goes out with what was held before it.
            let last = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            // Log-probabilities spell the text out token by token: not sent under guards.
            if let Some(lp) = choice.get_mut("logprobs") {
                *lp = Value::Null;
            }
            if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                for &f in OPENAI_FIELDS {
                    if let Some(Value::String(s)) = delta.get(f) {
                        let s = s.clone();
                        let sent = self.feed_last((index, Field::Text(f)), &s, last)?;
                        delta.insert(f.into(), Value::String(sent));
                    }
                }
                if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                    for call in calls {
                        let t = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(Value::String(a)) = call.pointer("/function/arguments") {
                            let a = a.clone();
                            let sent = self.feed_last((index, Field::ToolArgs(t)), &a, last)?;
                            call["function"]["arguments"] = Value::String(sent);
                        }
                    }
                }
            }
            if last {
                // Texts this chunk does not carry: their held tails go out just before it.
                let held = self.flush(Some(index))?;
                self.openai_flush_events(Some(&envelope), held, out);
            }
            new_choices.push(choice);
        }
        v["choices"] = Value::Array(new_choices);
        Ok(())
    }

    fn anthropic(&mut self, v: &mut Value, out: &mut Vec<u8>) -> Result<(), usize> {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match v.get("type").and_then(Value::as_str) {
            Some("content_block_delta") => {
                for f in ["text", "thinking", "partial_json"] {
                    if let Some(Value::String(s)) = v.pointer(&format!("/delta/{f}")) {
                        let s = s.clone();
                        let sent = self.feed((index, Field::Text(f)), &s)?;
                        v["delta"][f] = Value::String(sent);
                    }
                }
            }
            Some("content_block_start") => {
                for f in ["text", "thinking"] {
                    if let Some(Value::String(s)) = v.pointer(&format!("/content_block/{f}")) {
                        let s = s.clone();
                        let sent = self.feed((index, Field::Text(f)), &s)?;
                        v["content_block"][f] = Value::String(sent);
                    }
                }
            }
            Some("content_block_stop") => {
                let held = self.flush(Some(index))?;
                Self::anthropic_flush_events(held, out);
            }
            Some("message_delta") | Some("message_stop") => {
                let held = self.flush(None)?;
                Self::anthropic_flush_events(held, out);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The end of the first complete event in `buf` (after its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + p + 1;
        match buf.get(at) {
            Some(b'\n') => return Some(at + 1),
            Some(b'\r') if buf.get(at + 1) == Some(&b'\n') => return Some(at + 2),
            _ => i = at,
        }
    }
    None
}

impl ChunkFilter for SseGuard {
    fn ended(&self) -> bool {
        self.closed
    }

    fn chunk(&mut self, data: Bytes) -> Bytes {
        if self.closed {
            return Bytes::new();
        }
        self.pending.extend_from_slice(&data);
        let mut out = Vec::new();
        if self.pending.len() > MAX_EVENT_BYTES {
            self.pending = Vec::new();
            self.error_event(
                UNSUPPORTED,
                "guardrail_unsupported: a stream event is larger than the guards read",
                &mut out,
            );
            return Bytes::from(out);
        }
        while let Some(end) = event_end(&self.pending) {
            let raw: Vec<u8> = self.pending.drain(..end).collect();
            self.event(&raw, &mut out);
            if self.closed {
                self.pending.clear();
                break;
            }
        }
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        if self.closed {
            return Bytes::new();
        }
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        if !rest.iter().all(u8::is_ascii_whitespace) {
            let mut raw = rest;
            raw.extend_from_slice(b"\n\n");
            self.event(&raw, &mut out);
        }
        if !self.closed {
            match self.flush(None) {
                Ok(held) => match self.format {
                    Format::AnthropicMessages => Self::anthropic_flush_events(held, &mut out),
                    _ => self.openai_flush_events(None, held, &mut out),
                },
                Err(d) => self.reject(d, &mut out),
            }
        }
        if !self.closed {
            self.side.mask_record(self.slot.as_ref(), false);
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::guardrails::detectors::Scanner;

    fn side(action: &str) -> Arc<Side> {
        let guards: Vec<config::Guard> = serde_json::from_value(json!([
            {"name": "pii", "regex": {"builtins": ["email", "creditCard", "phone", "iban"]}, "action": "mask"},
            {"name": "keys", "regex": {"builtins": ["secrets"]}, "action": action},
        ]))
        .unwrap();
        Side::compile(&guards, "response").unwrap().unwrap()
    }

    const ANSWER: &str = "Sure: mail jane.doe@example.com, call +1 415 555 2671, card 4111 1111 1111 1111, IBAN GB29 NWBK 6016 1331 9268 19 — done ✓";

    /// An OpenAI stream of `text`, cut into word-sized deltas, with a usage chunk and [DONE].
    fn openai_stream(text: &str) -> Vec<u8> {
        let mut s = Vec::new();
        let env = |choices: Value, usage: Value| json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices, "usage": usage});
        let first = env(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            Value::Null,
        );
        s.extend_from_slice(format!("data: {first}\n\n").as_bytes());
        for piece in text.split_inclusive(' ') {
            let c = env(
                json!([{"index": 0, "delta": {"content": piece}, "finish_reason": null}]),
                Value::Null,
            );
            s.extend_from_slice(format!("data: {c}\n\n").as_bytes());
        }
        let fin = env(
            json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            Value::Null,
        );
        s.extend_from_slice(format!("data: {fin}\n\n").as_bytes());
        let usage = env(
            json!([]),
            json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
        );
        s.extend_from_slice(format!("data: {usage}\n\ndata: [DONE]\n\n").as_bytes());
        s
    }

    /// Runs `stream` cut at `cuts` through the filter: the events' content text, and checks
    /// every event is valid and the finish and usage chunks keep their place.
    fn run(side: &Arc<Side>, stream: &[u8], cuts: &[usize]) -> (String, Vec<Value>) {
        let mut f = SseGuard::new(side.clone(), Format::OpenAiChat, None);
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain([&stream.len()]) {
            out.extend_from_slice(&f.chunk(Bytes::copy_from_slice(&stream[at..c])));
            at = c;
        }
        out.extend_from_slice(&f.finish());
        let text = String::from_utf8(out).unwrap();
        let mut content = String::new();
        let mut events = Vec::new();
        for ev in text.split("\n\n").filter(|e| !e.is_empty()) {
            let data = ev.strip_prefix("data: ").expect(ev);
            if data == "[DONE]" {
                events.push(Value::String("[DONE]".into()));
                continue;
            }
            let v: Value = serde_json::from_str(data).expect(data);
            if let Some(c) = v
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
            {
                content.push_str(c);
            }
            events.push(v);
        }
        (content, events)
    }

    #[test]
    fn masked_stream_equals_masking_the_whole_text_at_every_split() {
        let side = side("mask");
        let whole = side.scanner.apply(ANSWER).text;
        for secret in ["jane.doe@", "4111", "555 2671", "GB29"] {
            assert!(!whole.contains(secret));
        }
        let stream = openai_stream(ANSWER);
        let check = |cuts: &[usize]| {
            let (content, events) = run(&side, &stream, cuts);
            assert_eq!(content, whole, "cuts {cuts:?}");
            let n = events.len();
            assert_eq!(events[n - 1], "[DONE]");
            assert_eq!(
                events[n - 2]["usage"]["total_tokens"],
                3,
                "usage chunk last"
            );
            assert_eq!(events[n - 3]["choices"][0]["finish_reason"], "stop");
            for e in &events[..n - 1] {
                assert_eq!(e["id"], "c1");
                assert_eq!(e["model"], "m");
            }
        };
        for i in 0..=stream.len() {
            check(&[i]);
        }
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..300 {
            let mut cuts: Vec<usize> = (0..rng.usize(1..60))
                .map(|_| rng.usize(..=stream.len()))
                .collect();
            cuts.sort_unstable();
            check(&cuts);
        }
    }

    #[test]
    fn the_llm_record_keeps_the_completion_as_the_caller_got_it() {
        let slot = |text: &str| {
            let s = Arc::new(LlmSlot {
                start: std::time::Instant::now(),
                record: Default::default(),
            });
            *s.record.lock().unwrap() = Some(telemetry::LlmRecord {
                completion: vec![text.to_string()],
                ..Default::default()
            });
            s
        };
        let completion = |s: &Arc<LlmSlot>| {
            s.record
                .lock()
                .unwrap()
                .as_ref()
                .unwrap()
                .completion
                .clone()
        };
        // Masked: the translator recorded the provider's text before the filter's end.
        let masked = slot(ANSWER);
        let mut f = SseGuard::new(side("mask"), Format::OpenAiChat, Some(masked.clone()));
        f.chunk(Bytes::from(openai_stream(ANSWER)));
        f.finish();
        assert_eq!(
            completion(&masked),
            vec![side("mask").scanner.apply(ANSWER).text]
        );
        // Refused: nothing of it is kept.
        let text = "the key is sk-abcdefghijklmnopqrstuvwxyz0123 ok";
        let refused = slot(text);
        let mut f = SseGuard::new(side("reject"), Format::OpenAiChat, Some(refused.clone()));
        f.chunk(Bytes::from(openai_stream(text)));
        f.finish();
        assert!(completion(&refused).is_empty());
    }

    #[test]
    fn each_choice_and_tool_call_is_its_own_text() {
        let side = side("mask");
        let chunk = |choices: Value| {
            let c = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices});
            format!("data: {c}\n\n")
        };
        let mut stream = String::new();
        // Two choices interleaved, each with an e-mail split across its chunks; a tool call's
        // arguments split the same way.
        for (a, b) in [
            ("mail jane@", "write bob@exa"),
            ("example.com now", "mple.org ok"),
        ] {
            stream.push_str(&chunk(
                json!([{"index": 0, "delta": {"content": a}, "finish_reason": null}]),
            ));
            stream.push_str(&chunk(
                json!([{"index": 1, "delta": {"content": b}, "finish_reason": null}]),
            ));
        }
        for piece in ["{\"to\":\"c@ex", "ample.com\"}"] {
            stream.push_str(&chunk(json!([{"index": 1, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, "finish_reason": null}])));
        }
        stream.push_str(&chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        ));
        stream.push_str(&chunk(
            json!([{"index": 1, "delta": {}, "finish_reason": "tool_calls"}]),
        ));
        stream.push_str("data: [DONE]\n\n");
        let mut f = SseGuard::new(side, Format::OpenAiChat, None);
        let mut out = f.chunk(Bytes::from(stream)).to_vec();
        out.extend_from_slice(&f.finish());
        let mut text = [String::new(), String::new()];
        let mut args = String::new();
        for ev in String::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
        {
            let data = ev.strip_prefix("data: ").unwrap();
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            for c in v["choices"].as_array().unwrap() {
                let i = c["index"].as_u64().unwrap() as usize;
                if let Some(t) = c.pointer("/delta/content").and_then(Value::as_str) {
                    text[i].push_str(t);
                }
                if let Some(a) = c
                    .pointer("/delta/tool_calls/0/function/arguments")
                    .and_then(Value::as_str)
                {
                    args.push_str(a);
                }
            }
        }
        assert_eq!(
            text,
            [
                "mail <EMAIL> now".to_string(),
                "write <EMAIL> ok".to_string()
            ]
        );
        assert_eq!(args, "{\"to\":\"<EMAIL>\"}");
    }

    #[test]
    fn text_in_the_finishing_chunk_keeps_its_order() {
        let side = side("mask");
        let ev = |delta: Value, finish: Value| {
            let c = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {c}\n\n")
        };
        let stream = [
            ev(json!({"content": "mail jane@exam"}), Value::Null),
            ev(
                json!({"content": "ple.com ok", "tool_calls": [{"index": 0, "function": {"arguments": "{\"to\":\"a@b.io\"}"}}]}),
                json!("stop"),
            ),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let (content, events) = run(&side, stream.as_bytes(), &[]);
        assert_eq!(content, "mail <EMAIL> ok");
        let last = &events[events.len() - 2];
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            last["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"to\":\"<EMAIL>\"}"
        );
    }

    #[test]
    fn reject_mid_stream_ends_with_an_openai_error_then_done() {
        let side = side("reject");
        let stream = openai_stream("hello there, the key is sk-abcdefghijklmnopqrstuvwxyz0123 ok");
        let (content, events) = run(&side, &stream, &[]);
        assert!(!content.contains("sk-"), "{content}");
        let n = events.len();
        assert_eq!(events[n - 1], "[DONE]");
        assert_eq!(events[n - 2]["error"]["code"], REJECTED);
        assert!(events[n - 2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"keys\""));
        assert!(!events.iter().any(|e| e.to_string().contains("abcdefghij")));
        // Nothing more after the refusal: the filter has ended the body.
        let mut f = SseGuard::new(side.clone(), Format::OpenAiChat, None);
        assert!(!f.chunk(Bytes::copy_from_slice(&stream)).is_empty());
        assert!(f.ended());
        assert!(f.chunk(Bytes::from_static(b"data: {}\n\n")).is_empty());
    }

    #[test]
    fn anthropic_blocks_are_masked_and_flushed_before_their_stop() {
        let side = side("mask");
        let mut s = String::from("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\"}}\n\n");
        s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        for piece in ANSWER.split_inclusive(' ') {
            let ev = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}});
            s.push_str(&format!("event: content_block_delta\ndata: {ev}\n\n"));
        }
        s.push_str(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        );
        s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        let mut f = SseGuard::new(side.clone(), Format::AnthropicMessages, None);
        let mut out = Vec::new();
        for b in s.as_bytes().chunks(7) {
            out.extend_from_slice(&f.chunk(Bytes::copy_from_slice(b)));
        }
        out.extend_from_slice(&f.finish());
        let out = String::from_utf8(out).unwrap();
        let mut text = String::new();
        let mut kinds = Vec::new();
        for ev in out.split("\n\n").filter(|e| !e.is_empty()) {
            let (name, data) = ev.split_once('\n').unwrap();
            let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(name.strip_prefix("event: ").unwrap(), v["type"]);
            if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
                text.push_str(t);
            }
            kinds.push(v["type"].as_str().unwrap().to_string());
        }
        assert_eq!(text, Scanner::apply(&side.scanner, ANSWER).text);
        assert_eq!(kinds[kinds.len() - 2], "content_block_stop");
    }
}
