//! Response guards on a streamed answer: SSE events parsed as they come, the text of each
//! choice (OpenAI Chat: `delta.content`, `refusal`, `reasoning_content`, `reasoning`, each
//! tool call's `function.arguments`) or content block (Anthropic: `text`, `thinking`,
//! `partial_json`) run through a [`Stream`] that holds back only what could still start a
//! match. Held text is sent as its own event before the choice's `finish_reason` chunk (or the
//! block's `content_block_stop`), with the same id, model and created. A reject ends the
//! stream with an error event in the caller's shape (then `data: [DONE]` for OpenAI); what was
//! sent before stays sent.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use llm::Format;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::detectors::{Outcome, Stream};
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
    /// A Responses delta event (its type) at a content (or summary) index of an output item.
    Resp(&'static str, u64),
}

impl Field {
    /// Tool-call arguments are JSON: masked so that they stay JSON.
    fn json(&self) -> bool {
        matches!(
            self,
            Field::ToolArgs(_)
                | Field::Text("partial_json")
                | Field::Resp("response.function_call_arguments.delta", _)
        )
    }
}

/// Responses delta events whose `delta` is answer text, and the `.done` event that ends each.
pub(super) const RESPONSES_DELTAS: &[(&str, &str)] = &[
    ("response.output_text.delta", "response.output_text.done"),
    ("response.refusal.delta", "response.refusal.done"),
    (
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
    ),
    (
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
    ),
    (
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
    ),
];

/// The key of a Responses delta event's stream: (output index, (type, content index)).
fn responses_key(v: &Value, kind: &'static str) -> (u64, Field) {
    let at = |k: &str| v.get(k).and_then(Value::as_u64);
    let sub = at("content_index").or(at("summary_index")).unwrap_or(0);
    (at("output_index").unwrap_or(0), Field::Resp(kind, sub))
}

/// An event larger than this (no blank line yet) ends the stream rather than grow the buffer.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

pub(super) const OPENAI_FIELDS: &[&str] = &["content", "refusal", "reasoning_content", "reasoning"];

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
    /// Responses: the last delta event of each stream (its JSON: the template of a flushed
    /// one), and the next `sequence_number` (events are renumbered, as flushes add some).
    templates: BTreeMap<(u64, Field), String>,
    seq: u64,
    /// The event being rewritten in place: what its streams sent (one buffer for all its
    /// texts), and the values it replaces, by their byte range in the event's data.
    sent: Outcome,
    splices: Vec<(usize, usize, Splice)>,
    /// What the chunk being read sends (kept for its allocation).
    out: Vec<u8>,
    /// The data of the last chunk [`quick_chat_from`] took, up to its `choices`.
    quick_envelope: Vec<u8>,
}

/// What replaces a value of an event read in place.
#[derive(Debug, Clone, Copy)]
enum Splice {
    /// A JSON string of `sent.text[.0...1]`.
    Text(usize, usize),
    /// A Responses `sequence_number`.
    Number(u64),
    /// Responses `logprobs`: an empty list.
    EmptyList,
}

/// Why an event read in place ends the stream.
enum Stop {
    Rejected(usize),
    /// A text that cannot be decoded (the parse into a `Value` refuses it too).
    Unreadable,
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
            templates: BTreeMap::new(),
            seq: 0,
            sent: Outcome::default(),
            splices: Vec::new(),
            out: Vec::new(),
            quick_envelope: Vec::new(),
        }
    }

    /// Whether the filter ended the stream (a reject, an unreadable event).
    pub fn closed(&self) -> bool {
        self.closed
    }

    fn error_event(&mut self, code: &str, message: &str, out: &mut Vec<u8>) {
        self.closed = true;
        let seq = self.seq;
        self.seq += 1;
        out.extend_from_slice(&error_event(self.format, 400, code, message, seq));
    }

    fn reject(&mut self, detector: usize, out: &mut Vec<u8>) {
        self.side.log_hits(&[detector]);
        let msg = self.side.rejection(detector);
        self.error_event(REJECTED, &msg, out);
        self.side.mask_record(self.slot.as_ref(), true);
    }

    /// Runs text through its stream: the text to send now, or `Err` on a reject.
    fn feed(&mut self, key: (u64, Field), text: &str) -> Result<String, usize> {
        let json = key.1.json();
        let s = self.streams.entry(key).or_insert_with(|| match json {
            true => Stream::json(),
            false => Stream::default(),
        });
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
                Field::ToolArgs(t) => {
                    json!({"tool_calls": [{"index": t, "function": {"arguments": text}}]})
                }
                Field::Text(name) | Field::Resp(name, _) => json!({ name: text }),
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

    /// Responses delta events carrying held text, each in the shape of its stream's last one.
    fn responses_flush_events(&mut self, held: Vec<(u64, Field, String)>, out: &mut Vec<u8>) {
        for (index, field, text) in held {
            let Some(mut ev) = self
                .templates
                .remove(&(index, field.clone()))
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            else {
                continue;
            };
            ev["delta"] = Value::String(text);
            if let Some(l) = ev.get_mut("logprobs") {
                *l = json!([]);
            }
            self.responses_emit("", &mut ev, out);
        }
    }

    /// One Responses event, numbered in order, under its `event:` line.
    fn responses_emit(&mut self, head: &str, v: &mut Value, out: &mut Vec<u8>) {
        if v.get("sequence_number").is_some() {
            v["sequence_number"] = json!(self.seq);
        }
        self.seq += 1;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("message");
        if !head.lines().any(|l| l.starts_with("event:")) {
            out.extend_from_slice(format!("event: {kind}\n").as_bytes());
        }
        out.extend_from_slice(head.as_bytes());
        write_data(v, out);
    }

    /// One complete event (its raw bytes, blank line included) -> what to send.
    fn event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if self.in_place(raw, out) {
            return;
        }
        // UTF-8 checked once (the lossy copy only for the rare event that is not).
        let text = match std::str::from_utf8(raw) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(raw),
        };
        // `event:`, `id:`, `retry:` and comment lines, sent again as they came.
        let mut head = String::new();
        let mut data = String::with_capacity(raw.len());
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
            Format::OpenAiResponses => match self.responses(&mut v, out) {
                Ok(()) => {
                    self.responses_emit(&head, &mut v, out);
                    return;
                }
                Err(d) => Err(d),
            },
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
                write_data(&v, out);
            }
        }
    }

    fn openai(&mut self, v: &mut Value, out: &mut Vec<u8>) -> Result<(), usize> {
        // The choices are taken out (and put back rewritten): no copy of the chunk per event.
        let mut choices = match v.get_mut("choices") {
            Some(Value::Array(c)) => std::mem::take(c),
            _ => return Ok(()),
        };
        let any_last = choices
            .iter()
            .any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()));
        // The envelope of flushed chunks (id, model, created): kept once, and from the chunk
        // that flushes.
        if self.envelope.is_none() || any_last {
            self.envelope = Some(v.clone());
        }
        for choice in &mut choices {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            // The choice's last chunk: text it carries goes out with what was held before it.
            let last = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            // Log-probabilities spell the text out token by token: not sent under guards.
            if let Some(lp) = choice.get_mut("logprobs") {
                *lp = Value::Null;
            }
            if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                for &f in OPENAI_FIELDS {
                    if let Some(Value::String(s)) = delta.get_mut(f) {
                        let text = std::mem::take(s);
                        *s = self.feed_last((index, Field::Text(f)), &text, last)?;
                    }
                }
                if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                    for call in calls {
                        let t = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(Value::String(a)) = call.pointer_mut("/function/arguments") {
                            let text = std::mem::take(a);
                            *a = self.feed_last((index, Field::ToolArgs(t)), &text, last)?;
                        }
                    }
                }
            }
            if last {
                // Texts this chunk does not carry: their held tails go out just before it.
                let held = self.flush(Some(index))?;
                self.openai_flush_events(None, held, out);
            }
        }
        v["choices"] = Value::Array(choices);
        Ok(())
    }

    /// Responses events: deltas run through their streams; the held tail goes out (as one
    /// more delta) before the stream's `.done` event; every other event (`.done`, items,
    /// parts, the final response) carries whole texts and is masked whole, which gives the
    /// same text as the deltas (the scan of a stream equals the scan of its whole text).
    fn responses(&mut self, v: &mut Value, out: &mut Vec<u8>) -> Result<(), usize> {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        if let Some((delta, _)) = RESPONSES_DELTAS.iter().find(|(d, _)| *d == kind) {
            let key = responses_key(v, delta);
            if let Some(Value::String(s)) = v.get("delta") {
                let s = s.clone();
                let sent = self.feed(key.clone(), &s)?;
                v["delta"] = Value::String(sent);
            }
            if let Some(l) = v.get_mut("logprobs") {
                *l = json!([]);
            }
            self.templates.insert(key, v.to_string());
            return Ok(());
        }
        if let Some((delta, _)) = RESPONSES_DELTAS.iter().find(|(_, d)| *d == kind) {
            let key = responses_key(v, delta);
            if let Some(mut st) = self.streams.remove(&key) {
                let end = self.side.scanner.finish(&mut st);
                self.side.log_hits(&end.hits);
                if let Some(d) = end.rejected {
                    return Err(d);
                }
                if !end.text.is_empty() {
                    self.responses_flush_events(vec![(key.0, key.1.clone(), end.text)], out);
                }
            }
            self.templates.remove(&key);
        } else if matches!(
            kind,
            "response.output_item.done"
                | "response.completed"
                | "response.incomplete"
                | "response.failed"
        ) {
            let index = match kind {
                "response.output_item.done" => v.get("output_index").and_then(Value::as_u64),
                _ => None,
            };
            let held = self.flush(index)?;
            self.responses_flush_events(held, out);
        }
        // Whole texts: masked quietly (their hits were counted on the deltas).
        let mut changed = false;
        self.side.walk_quiet(v, &mut changed)
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

/// Deltas read in place. Most events of a stream carry one piece of text and need nothing
/// else changed: they are read into borrowed structs (the texts as raw JSON, located in the
/// event's bytes), their texts run through their streams, and the event goes out as it came
/// but for the strings whose text changed (masked, held back, or held text released), which
/// are written over their old bytes. Every other event (a chunk that finishes a choice or
/// carries log-probabilities, the first chunk, starts, stops, `[DONE]`, events in a layout
/// other than head lines then one `data: ` line) takes the parse into a `Value`.
impl SseGuard {
    /// Handles `raw` in place; `false`: not such an event, nothing done.
    fn in_place(&mut self, raw: &[u8], out: &mut Vec<u8>) -> bool {
        if self.quick(raw, out) {
            return true;
        }
        let Some((at, data)) = single_data_line(raw) else {
            return false;
        };
        if !data.starts_with('{') || value_may_differ(data.as_bytes()) {
            return false;
        }
        self.sent.text.clear();
        self.splices.clear();
        let read = match self.format {
            Format::OpenAiChat => self.openai_in_place(data),
            Format::AnthropicMessages => self.anthropic_in_place(data),
            Format::OpenAiResponses if has_event_line(&raw[..at]) => self.responses_in_place(data),
            _ => return false,
        };
        match read {
            None => false,
            Some(read) => {
                self.end_in_place(read, raw, at, out);
                true
            }
        }
    }

    /// The usual OpenAI chunk, read in one strict pass instead of the layout check, the scan
    /// for what a `Value` may refuse and the serde read; `false`: not such a chunk (or not
    /// one event), nothing done.
    fn quick(&mut self, raw: &[u8], out: &mut Vec<u8>) -> bool {
        if !matches!(self.format, Format::OpenAiChat) || self.envelope.is_none() {
            return false;
        }
        let Some(data) = quick_event(raw) else {
            return false;
        };
        // Most chunks of a stream repeat the last one's envelope byte for byte: read once.
        let prefix = &self.quick_envelope;
        let resume =
            (!prefix.is_empty() && data.as_bytes().starts_with(prefix)).then_some(prefix.len());
        let Some((chunk, choices_at)) = quick_chat_from(data, resume) else {
            return false;
        };
        if resume.is_none() {
            self.quick_envelope.clear();
            self.quick_envelope
                .extend_from_slice(&data.as_bytes()[..choices_at]);
        }
        self.sent.text.clear();
        self.splices.clear();
        let index = chunk.index.unwrap_or(0);
        let run = |this: &mut Self| {
            for (&f, value) in OPENAI_FIELDS.iter().zip(chunk.texts) {
                this.feed_raw((index, Field::Text(f)), value, data)?;
            }
            Ok(())
        };
        let read = run(self);
        self.end_in_place(read, raw, QUICK_DATA_AT, out);
        true
    }

    /// What an event read in place sends: itself with its splices, or the stop.
    fn end_in_place(&mut self, read: Result<(), Stop>, raw: &[u8], at: usize, out: &mut Vec<u8>) {
        match read {
            Err(Stop::Rejected(d)) => self.reject(d, out),
            Err(Stop::Unreadable) => self.error_event(
                UNSUPPORTED,
                "guardrail_unsupported: the provider's stream has an event the guards cannot read",
                out,
            ),
            Ok(()) => self.write_spliced(raw, at, out),
        }
    }

    /// `raw` with the splices (offsets in its data, which starts at `at`) written in.
    fn write_spliced(&mut self, raw: &[u8], at: usize, out: &mut Vec<u8>) {
        self.splices.sort_unstable_by_key(|s| s.0);
        let mut from = 0;
        for &(start, end, with) in &self.splices {
            out.extend_from_slice(&raw[from..at + start]);
            match with {
                // Escaped as the `Value` path writes strings.
                Splice::Text(a, b) => {
                    let _ = serde_json::to_writer(&mut *out, &self.sent.text[a..b]);
                }
                Splice::Number(n) => {
                    use std::io::Write;
                    let _ = write!(out, "{n}");
                }
                Splice::EmptyList => out.extend_from_slice(b"[]"),
            }
            from = at + end;
        }
        out.extend_from_slice(&raw[from..]);
    }

    /// One text value of the event (`None`, or not a string: nothing to do) through its stream;
    /// a splice when what goes out differs from what came.
    fn feed_raw(&mut self, key: (u64, Field), value: Option<&str>, data: &str) -> Result<(), Stop> {
        let Some(value) = value else {
            return Ok(());
        };
        let text = match json_text(value) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(()),
            Err(()) => return Err(Stop::Unreadable),
        };
        let json = key.1.json();
        let stream = self.streams.entry(key).or_insert_with(|| match json {
            true => Stream::json(),
            false => Stream::default(),
        });
        let from = self.sent.text.len();
        self.side.scanner.feed_to(stream, &text, &mut self.sent);
        self.side.log_hits(&self.sent.hits);
        self.sent.hits.clear();
        if let Some(d) = self.sent.rejected.take() {
            return Err(Stop::Rejected(d));
        }
        if self.sent.text[from..] == *text {
            self.sent.text.truncate(from);
        } else {
            let start = value.as_ptr() as usize - data.as_ptr() as usize;
            let end = start + value.len();
            let to = self.sent.text.len();
            self.splices.push((start, end, Splice::Text(from, to)));
        }
        Ok(())
    }

    /// An OpenAI chunk that neither finishes a choice nor carries log-probabilities (both
    /// rewrite the chunk), after the first (the envelope of flushed chunks).
    fn openai_in_place(&mut self, data: &str) -> Option<Result<(), Stop>> {
        self.envelope.as_ref()?;
        let chunk: ChatChunk = serde_json::from_str(data).ok()?;
        let Some(choices) = chunk.choices else {
            return Some(Ok(()));
        };
        let rewritten = |c: &ChatChoice| {
            c.finish_reason.is_some() || c.logprobs.is_some_and(|l| l.get() != "null")
        };
        if choices.iter().any(rewritten) {
            return None;
        }
        let run = |this: &mut Self| {
            for c in choices.iter() {
                let index = c.index.unwrap_or(0);
                let Some(delta) = &c.delta else {
                    continue;
                };
                let texts = [
                    delta.content,
                    delta.refusal,
                    delta.reasoning_content,
                    delta.reasoning,
                ];
                for (&f, value) in OPENAI_FIELDS.iter().zip(texts) {
                    this.feed_raw((index, Field::Text(f)), value.map(RawValue::get), data)?;
                }
                for call in delta.tool_calls.iter().flat_map(Few::iter) {
                    let args = call.function.as_ref().and_then(|f| f.arguments);
                    let args = args.map(RawValue::get);
                    let key = (index, Field::ToolArgs(call.index.unwrap_or(0)));
                    this.feed_raw(key, args, data)?;
                }
            }
            Ok(())
        };
        Some(run(self))
    }

    /// An Anthropic `content_block_delta`.
    fn anthropic_in_place(&mut self, data: &str) -> Option<Result<(), Stop>> {
        let ev: AnthropicEvent = serde_json::from_str(data).ok()?;
        if ev.kind?.get() != "\"content_block_delta\"" {
            return None;
        }
        let index = ev.index.unwrap_or(0);
        let Some(d) = ev.delta else {
            return Some(Ok(()));
        };
        let run = |this: &mut Self| {
            for (f, value) in [
                ("text", d.text),
                ("thinking", d.thinking),
                ("partial_json", d.partial_json),
            ] {
                this.feed_raw((index, Field::Text(f)), value.map(RawValue::get), data)?;
            }
            Ok(())
        };
        Some(run(self))
    }

    /// A Responses delta event: renumbered, `logprobs` emptied, kept as its stream's template.
    fn responses_in_place(&mut self, data: &str) -> Option<Result<(), Stop>> {
        let ev: ResponsesEvent = serde_json::from_str(data).ok()?;
        let kind = ev.kind?.get();
        let kind = kind.strip_prefix('"')?.strip_suffix('"')?;
        let &(delta, _) = RESPONSES_DELTAS.iter().find(|(d, _)| *d == kind)?;
        let sub = ev.content_index.or(ev.summary_index).unwrap_or(0);
        let key = (ev.output_index.unwrap_or(0), Field::Resp(delta, sub));
        if let Err(stop) = self.feed_raw(key.clone(), ev.delta.map(RawValue::get), data) {
            return Some(Err(stop));
        }
        let at = |v: &RawValue| v.get().as_ptr() as usize - data.as_ptr() as usize;
        if let Some(l) = ev.logprobs.filter(|l| l.get() != "[]") {
            self.splices
                .push((at(l), at(l) + l.get().len(), Splice::EmptyList));
        }
        if let Some(n) = ev.sequence_number {
            // JSON has no leading zeros: the same number is the same text.
            if n.get().parse::<u64>().ok() != Some(self.seq) {
                self.splices
                    .push((at(n), at(n) + n.get().len(), Splice::Number(self.seq)));
            }
        }
        self.seq += 1;
        let template = self.templates.entry(key).or_default();
        template.clear();
        template.push_str(data);
        Some(Ok(()))
    }
}

/// An event of head lines (`event:`, `id:`, comments) then one `data: ` line, every line
/// ended by `\n` and valid UTF-8: where its data starts, and the data. Other layouts (`\r\n`,
/// several data lines, `data:` without its space) take the `Value` path.
fn single_data_line(raw: &[u8]) -> Option<(usize, &str)> {
    let body = raw.strip_suffix(b"\n\n")?;
    if body.contains(&b'\r') {
        return None;
    }
    // Most events are that one line (OpenAI's): no head to look through.
    let start = match body.starts_with(b"data: ") && !body.contains(&b'\n') {
        true => 0,
        false => body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1),
    };
    let head = &body[..start];
    let mut lines = head.split(|&b| b == b'\n');
    // `head` ends with its last line's `\n`: the split's last piece is empty.
    lines.next_back();
    if lines.any(|l| l.is_empty() || l.starts_with(b"data:")) {
        return None;
    }
    let data = body[start..].strip_prefix(b"data: ")?;
    std::str::from_utf8(head).ok()?;
    let data = std::str::from_utf8(data).ok()?;
    Some((start + b"data: ".len(), data))
}

fn has_event_line(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n')
        .any(|l| l.starts_with(b"event:"))
}

/// Whether a parse into `serde_json::Value` may refuse data that the borrowed structs read
/// (they skip unknown values by their syntax): a number past f64 (an exponent, 300 digits),
/// nesting near the parser's depth limit, an escaped surrogate (a lone one is refused), a
/// control byte in a string. Such events take the `Value` path, so both paths answer alike.
fn value_may_differ(data: &[u8]) -> bool {
    let mut opens = 0;
    let mut digits = 0;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        i += 1;
        match b {
            b'"' => {
                // To the string's end.
                loop {
                    i = plain_run(data, i);
                    let Some(&c) = data.get(i) else {
                        return true;
                    };
                    i += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            if data.get(i) == Some(&b'u')
                                && matches!(data.get(i + 1), Some(b'd' | b'D'))
                            {
                                return true;
                            }
                            i += 1;
                        }
                        0..=0x1f => return true,
                        _ => {}
                    }
                }
                digits = 0;
            }
            b'0'..=b'9' => {
                digits += 1;
                if digits > 300 {
                    return true;
                }
            }
            b'e' | b'E' if digits > 0 => return true,
            b'{' | b'[' => {
                opens += 1;
                if opens > 100 {
                    return true;
                }
                digits = 0;
            }
            _ => digits = 0,
        }
    }
    false
}

/// The first byte at or after `i` that ends a run of plain string content (a quote, a
/// backslash, a control byte), or `data.len()`: eight bytes at a time.
fn plain_run(data: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // High bit of each byte of `x` that is zero (exact for the lowest one, which is all
    // that is read: a borrow only flags bytes above a true zero).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    while let Some(word) = data.get(i..i + 8) {
        let v = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let quote = zero(v ^ (ONES * u64::from(b'"')));
        let backslash = zero(v ^ (ONES * u64::from(b'\\')));
        let control = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        let hit = quote | backslash | control;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while data
        .get(i)
        .is_some_and(|&c| c >= 0x20 && c != b'"' && c != b'\\')
    {
        i += 1;
    }
    i
}

/// Where the data of an event [`quick_event`] takes starts.
const QUICK_DATA_AT: usize = b"data: ".len();

/// An event that is one `data: {...}` line and nothing else: its data (the strict read in
/// [`quick_chat`] refuses any `\r` or `\n` in it, so it is that one line).
fn quick_event(raw: &[u8]) -> Option<&str> {
    let data = raw.strip_prefix(b"data: {")?.strip_suffix(b"\n\n")?;
    std::str::from_utf8(&raw[QUICK_DATA_AT..QUICK_DATA_AT + 1 + data.len()]).ok()
}

/// The texts of an OpenAI chunk read by [`quick_chat`].
struct QuickChunk<'a> {
    index: Option<u64>,
    /// Per [`OPENAI_FIELDS`]: the field's JSON string (quotes included), if not absent or null.
    texts: [Option<&'a str>; 4],
}

/// An OpenAI chunk in the layout almost every one has (one choice, its delta only of
/// `role` and the text fields, strings or null; `finish_reason` and `logprobs` absent or
/// null; every other value a string, a number of plain digits, `true`, `false` or `null`),
/// read in one pass that also checks what [`value_may_differ`] and [`single_data_line`] do:
/// any other layout, key with an escape, key twice, control byte or escaped surrogate in a
/// string, whitespace other than spaces and tabs gives `None`, and the event takes the full
/// read. What it accepts the serde read of [`ChatChunk`] reads the same.
#[cfg(test)]
fn quick_chat(data: &str) -> Option<QuickChunk<'_>> {
    quick_chat_from(data, None).map(|(chunk, _)| chunk)
}

/// [`quick_chat`], and where the value of `choices` starts (the bytes before it are the
/// envelope: id, object, created, model, ...). `resume`: `data` starts with the envelope of a
/// chunk this read took, that long: the read starts at `choices` (the read of those bytes
/// decides the same whatever follows them).
fn quick_chat_from<'a>(data: &'a str, resume: Option<usize>) -> Option<(QuickChunk<'a>, usize)> {
    let mut r = Quick { data, at: 0 };
    let mut chunk = None;
    let mut choices_at = 0;
    let mut field = |r: &mut Quick<'a>, key: &str| match key {
        "choices" if chunk.is_none() => {
            choices_at = r.at;
            r.eat(b'[')?;
            chunk = Some(r.choice()?);
            r.eat(b']')
        }
        "choices" => None,
        _ => r.scalar(),
    };
    match resume {
        Some(at) => {
            r.at = at;
            field(&mut r, "choices")?;
            r.after_value(&mut field)?;
        }
        None => r.object(&mut field)?,
    }
    r.space();
    (r.at == data.len()).then_some(())?;
    Some((chunk?, choices_at))
}

/// A cursor of [`quick_chat`]: each read fails (`None`) on anything it does not take.
struct Quick<'a> {
    data: &'a str,
    at: usize,
}

impl<'a> Quick<'a> {
    fn space(&mut self) {
        let b = self.data.as_bytes();
        while matches!(b.get(self.at), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.data.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.at += 1)
    }

    fn word(&mut self, w: &str) -> Option<()> {
        self.space();
        self.data[self.at..]
            .starts_with(w)
            .then(|| self.at += w.len())
    }

    /// A string whose escapes are valid and not of a surrogate, without control bytes: its
    /// JSON text, quotes included.
    fn string(&mut self) -> Option<&'a str> {
        self.space();
        let b = self.data.as_bytes();
        let start = self.at;
        (b.get(start) == Some(&b'"')).then_some(())?;
        let mut i = start + 1;
        loop {
            i = plain_run(b, i);
            match *b.get(i)? {
                b'"' => break,
                b'\\' => match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' => {
                        let hex = b.get(i + 2..i + 6)?;
                        let plain =
                            hex.iter().all(u8::is_ascii_hexdigit) && !matches!(hex[0], b'd' | b'D');
                        plain.then_some(())?;
                        i += 6;
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
        self.at = i + 1;
        Some(&self.data[start..self.at])
    }

    /// Digits only, no leading zero, within a `u64`.
    fn number(&mut self) -> Option<u64> {
        self.space();
        let b = self.data.as_bytes();
        let start = self.at;
        while b.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.data[start..self.at];
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        digits.parse().ok()
    }

    fn scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'0'..=b'9' => self.number().map(drop),
            b't' => self.word("true"),
            b'f' => self.word("false"),
            _ => self.word("null"),
        }
    }

    /// A string (`Some`) or `null` (`None`).
    fn text(&mut self) -> Option<Option<&'a str>> {
        match self.peek()? {
            b'n' => self.word("null").map(|()| None),
            _ => self.string().map(Some),
        }
    }

    /// An object, `field` reading each value after its key (keys with escapes refused).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        self.members(&mut field)
    }

    /// An object's members from a key on, and its end.
    fn members(&mut self, field: &mut impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        loop {
            let key = self.string()?;
            let key = &key[1..key.len() - 1];
            (!key.contains('\\')).then_some(())?;
            self.eat(b':')?;
            field(self, key)?;
            if self.end_of_member()? {
                return Some(());
            }
        }
    }

    /// After a member's value: the object's other members and its end.
    fn after_value(
        &mut self,
        field: &mut impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        match self.end_of_member()? {
            true => Some(()),
            false => self.members(field),
        }
    }

    /// A `,` (`false`: a member follows) or the object's `}` (`true`).
    fn end_of_member(&mut self) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(false)
            }
            b'}' => {
                self.at += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// The one choice: its index and texts.
    fn choice(&mut self) -> Option<QuickChunk<'a>> {
        let mut chunk = QuickChunk {
            index: None,
            texts: [None; 4],
        };
        // Keys read so far (a key twice fails the serde read too).
        let mut seen = 0u8;
        let mut once = |bit: u8| first_time(&mut seen, bit);
        self.object(|r, key| match key {
            "index" => {
                once(1)?;
                chunk.index = Some(r.number()?);
                Some(())
            }
            // A finish or log-probabilities rewrite the chunk: the full read.
            "finish_reason" => once(2).and_then(|()| r.word("null")),
            "logprobs" => once(4).and_then(|()| r.word("null")),
            "delta" => {
                once(8)?;
                let texts = &mut chunk.texts;
                let mut got = 0u8;
                r.object(|r, key| {
                    if key == "role" {
                        return r.text().map(drop);
                    }
                    let f = OPENAI_FIELDS.iter().position(|&f| f == key)?;
                    first_time(&mut got, 1 << f)?;
                    texts[f] = r.text()?;
                    Some(())
                })
            }
            _ => None,
        })?;
        Some(chunk)
    }
}

/// Sets `bit` in `seen`: `None` when it was set already.
fn first_time(seen: &mut u8, bit: u8) -> Option<()> {
    let new = *seen & bit == 0;
    *seen |= bit;
    new.then_some(())
}

/// A JSON string's text: `Ok(None)` for another kind of value, `Err` when it cannot be
/// decoded.
fn json_text(raw: &str) -> Result<Option<Cow<'_, str>>, ()> {
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return Ok(None);
    };
    if !inner.contains('\\') {
        return Ok(Some(Cow::Borrowed(inner)));
    }
    serde_json::from_str::<String>(raw)
        .map(|s| Some(Cow::Owned(s)))
        .map_err(|_| ())
}

/// A field that is there, `null` included (an `Option<&RawValue>` reads `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A JSON array, its first element held without an allocation (one choice, one tool call
/// per chunk is the rule).
struct Few<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Few<T> {
    fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(&self.rest)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Few<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Elements<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Elements<T> {
            type Value = Few<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Few<T>, A::Error> {
                let first = seq.next_element()?;
                let mut rest = Vec::new();
                if first.is_some() {
                    while let Some(x) = seq.next_element()? {
                        rest.push(x);
                    }
                }
                Ok(Few { first, rest })
            }
        }
        d.deserialize_seq(Elements(std::marker::PhantomData))
    }
}

/// The parts of an OpenAI chat chunk the guards read (a value of another type, or a key twice,
/// fails the parse: the `Value` path then).
#[derive(Deserialize)]
struct ChatChunk<'a> {
    #[serde(borrow)]
    choices: Option<Few<ChatChoice<'a>>>,
}

#[derive(Deserialize)]
struct ChatChoice<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<ChatDelta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    logprobs: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChatDelta<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<Few<ChatToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ChatToolCall<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    function: Option<ChatFunction<'a>>,
}

#[derive(Deserialize)]
struct ChatFunction<'a> {
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<AnthropicDelta<'a>>,
}

#[derive(Deserialize)]
struct AnthropicDelta<'a> {
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    thinking: Option<&'a RawValue>,
    #[serde(borrow)]
    partial_json: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    output_index: Option<u64>,
    content_index: Option<u64>,
    summary_index: Option<u64>,
    #[serde(borrow, default, deserialize_with = "present")]
    sequence_number: Option<&'a RawValue>,
    #[serde(borrow)]
    delta: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    logprobs: Option<&'a RawValue>,
}

/// `data: JSON` and the blank line, serialized straight into `out`.
fn write_data(v: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    // Writing a `Value` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

/// An error event in the caller's stream format (`seq`: the Responses `sequence_number`):
/// OpenAI Chat's error chunk then `[DONE]`; Anthropic's `error` event; Responses' `error`
/// event, which also carries the error object under `error` (as the OpenAI SDKs expect to
/// raise it).
pub fn error_event(format: Format, status: u16, code: &str, message: &str, seq: u64) -> Vec<u8> {
    let body = error_json(format, status, code, message);
    match format {
        Format::AnthropicMessages => {
            let body = String::from_utf8_lossy(&body);
            format!("event: error\ndata: {body}\n\n").into_bytes()
        }
        Format::OpenAiResponses => {
            let error = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|mut v| v.get_mut("error").map(Value::take))
                .unwrap_or_else(|| json!({"code": code, "message": message}));
            let ev = json!({"type": "error", "code": code, "message": message, "param": null,
                            "sequence_number": seq, "error": error});
            format!("event: error\ndata: {ev}\n\n").into_bytes()
        }
        _ => {
            let body = String::from_utf8_lossy(&body);
            format!("data: {body}\n\ndata: [DONE]\n\n").into_bytes()
        }
    }
}

/// The end of the first complete event in `buf` (after its blank line).
pub(super) fn event_end(buf: &[u8]) -> Option<usize> {
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

impl SseGuard {
    /// [`ChunkFilter::chunk`] into `out`.
    fn chunk_into(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.pending.len() + data.len() > MAX_EVENT_BYTES {
            self.pending = Vec::new();
            self.error_event(
                UNSUPPORTED,
                "guardrail_unsupported: a stream event is larger than the guards read",
                out,
            );
            return;
        }
        // A chunk that is one usual event (the quick read refuses a line break inside it):
        // no search for where events end.
        if self.pending.is_empty() && self.quick(data, out) {
            return;
        }
        // Events whole in `data` are read where they are; only an unfinished one is copied.
        let mut buf = std::mem::take(&mut self.pending);
        let joined = !buf.is_empty();
        if joined {
            buf.extend_from_slice(data);
        }
        let src: &[u8] = if joined { &buf } else { data };
        let mut at = 0;
        while let Some(end) = event_end(&src[at..]) {
            self.event(&src[at..at + end], out);
            at += end;
            if self.closed {
                return;
            }
        }
        if joined {
            buf.drain(..at);
        } else {
            buf.extend_from_slice(&data[at..]);
        }
        self.pending = buf;
    }
}

/// A reply buffer larger than this is not kept for the next chunk.
const KEPT_OUT_BYTES: usize = 64 * 1024;

impl ChunkFilter for SseGuard {
    fn ended(&self) -> bool {
        self.closed
    }

    fn chunk(&mut self, data: Bytes) -> Bytes {
        if self.closed {
            return Bytes::new();
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        self.chunk_into(&data, &mut out);
        // What goes out as it came is the buffer that came: no allocation, no copy.
        let sent = match out[..] == data[..] {
            true => data,
            false => Bytes::copy_from_slice(&out),
        };
        if out.capacity() <= KEPT_OUT_BYTES {
            self.out = out;
        }
        sent
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
                    Format::OpenAiResponses => self.responses_flush_events(held, &mut out),
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

    /// A placeholder with quotes and a backslash, inside streamed tool-call arguments: the
    /// arguments stay valid JSON whatever the cuts, and equal masking them whole.
    #[test]
    fn masked_tool_call_arguments_stay_json_at_every_split() {
        let guards: Vec<config::Guard> = serde_json::from_value(json!([
            {"name": "pii", "regex": {"builtins": ["email"]}, "action": "mask", "placeholder": "\"<MAIL>\" \\ x"},
        ]))
        .unwrap();
        let side = Side::compile(&guards, "response").unwrap().unwrap();
        let args = r#"{"to":"jane.doe@example.com","cc":["bob@example.org"],"note":"hi"}"#;
        let mut s = Vec::new();
        let env = |choices: Value| json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices});
        let first = env(
            json!([{"index": 0, "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "send", "arguments": ""}}]}, "finish_reason": null}]),
        );
        s.extend_from_slice(format!("data: {first}\n\n").as_bytes());
        for piece in args.as_bytes().chunks(5) {
            let piece = std::str::from_utf8(piece).unwrap();
            let c = env(
                json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, "finish_reason": null}]),
            );
            s.extend_from_slice(format!("data: {c}\n\n").as_bytes());
        }
        let fin = env(json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]));
        s.extend_from_slice(format!("data: {fin}\n\ndata: [DONE]\n\n").as_bytes());
        let whole = side.scanner.apply_json(args).text;
        let parsed: Value = serde_json::from_str(&whole).expect(&whole);
        assert_eq!(parsed["to"], "\"<MAIL>\" \\ x");
        for cut in (1..s.len()).step_by(3) {
            let mut f = SseGuard::new(side.clone(), Format::OpenAiChat, None);
            let mut out = Vec::new();
            out.extend_from_slice(&f.chunk(Bytes::copy_from_slice(&s[..cut])));
            out.extend_from_slice(&f.chunk(Bytes::copy_from_slice(&s[cut..])));
            out.extend_from_slice(&f.finish());
            let text = String::from_utf8(out).unwrap();
            let mut got = String::new();
            for ev in text.split("\n\n").filter(|e| !e.is_empty()) {
                let data = ev.strip_prefix("data: ").unwrap();
                if data == "[DONE]" {
                    continue;
                }
                let v: Value = serde_json::from_str(data).unwrap();
                if let Some(a) = v
                    .pointer("/choices/0/delta/tool_calls/0/function/arguments")
                    .and_then(Value::as_str)
                {
                    got.push_str(a);
                }
            }
            assert_eq!(got, whole, "cut at {cut}");
        }
        // Whole answers too.
        let mut v = json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "send", "arguments": args}}]}}]});
        let mut changed = false;
        side.walk(&mut v, &mut changed).unwrap();
        let a = v
            .pointer("/choices/0/message/tool_calls/0/function/arguments")
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(a, whole);
    }

    /// A Responses stream of `text` (as the gateway's translation writes it).
    fn responses_stream(text: &str) -> Vec<u8> {
        let mut s = String::new();
        let mut seq = 0;
        let mut ev = |v: Value| {
            let mut v = v;
            v["sequence_number"] = json!(seq);
            seq += 1;
            s.push_str(&format!(
                "event: {}\ndata: {v}\n\n",
                v["type"].as_str().unwrap()
            ));
        };
        ev(
            json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "output": []}}),
        );
        ev(
            json!({"type": "response.output_item.added", "output_index": 0, "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []}}),
        );
        for piece in text.split_inclusive(' ') {
            ev(
                json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
            );
        }
        ev(
            json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
        );
        ev(
            json!({"type": "response.output_item.done", "output_index": 0, "item": {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": text, "annotations": []}]}}),
        );
        ev(
            json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed", "output": [{"id": "msg_1", "type": "message", "content": [{"type": "output_text", "text": text}]}], "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}}}),
        );
        s.into_bytes()
    }

    #[test]
    fn responses_streams_mask_like_the_whole_text_at_every_split() {
        let side = side("mask");
        let whole = side.scanner.apply(ANSWER).text;
        let stream = responses_stream(ANSWER);
        for cut in 1..stream.len() {
            if cut % 7 != 0 {
                continue;
            }
            let mut f = SseGuard::new(side.clone(), Format::OpenAiResponses, None);
            let mut out = Vec::new();
            out.extend_from_slice(&f.chunk(Bytes::copy_from_slice(&stream[..cut])));
            out.extend_from_slice(&f.chunk(Bytes::copy_from_slice(&stream[cut..])));
            out.extend_from_slice(&f.finish());
            let text = String::from_utf8(out).unwrap();
            let mut deltas = String::new();
            let mut kinds = Vec::new();
            for (i, ev) in text.split("\n\n").filter(|e| !e.is_empty()).enumerate() {
                let (name, data) = ev.split_once('\n').unwrap();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(name.strip_prefix("event: ").unwrap(), v["type"]);
                assert_eq!(v["sequence_number"], i, "{text}");
                if v["type"] == "response.output_text.delta" {
                    deltas.push_str(v["delta"].as_str().unwrap());
                    assert_eq!(v["item_id"], "msg_1");
                }
                if v["type"] == "response.output_text.done" {
                    assert_eq!(v["text"], whole.as_str());
                }
                kinds.push(v["type"].as_str().unwrap().to_string());
            }
            assert_eq!(deltas, whole, "cut at {cut}");
            assert!(
                !text.contains("jane.doe") && !text.contains("4111"),
                "{text}"
            );
            assert_eq!(kinds.last().unwrap(), "response.completed");
            let done = kinds
                .iter()
                .position(|k| k == "response.output_text.done")
                .unwrap();
            assert_eq!(kinds[done - 1], "response.output_text.delta");
        }
    }

    /// Every event of `out` (a guard's output): its head lines and its data.
    fn events(out: &[u8]) -> Vec<(String, String)> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (head, data) = e.rsplit_once("data: ").unwrap();
                (head.to_string(), data.to_string())
            })
            .collect()
    }

    /// Texts with quotes, backslashes, escaped and raw non-ASCII, around an e-mail cut in two:
    /// the masked text goes out correctly escaped, and the rest of each event as it came.
    #[test]
    fn masked_text_is_written_into_the_event_with_its_escapes() {
        let side = side("mask");
        let pieces = [
            "Say \"hi\" to ",
            "\u{e9}t\u{e9} \\ jane.doe@exa",
            "mple.com\n\ttab ✓ 😀 ",
            "end",
        ];
        let whole = side.scanner.apply(&pieces.concat()).text;
        assert!(whole.contains("<EMAIL>"), "{whole}");
        // Unusual but valid layout: spaces, keys out of order, an escaped `é` in the model.
        let chunk = |piece: &str| {
            let text = serde_json::to_string(piece).unwrap();
            format!("data: {{ \"model\" : \"m\\u00e9\", \"choices\": [ {{\"delta\": {{\"content\": {text}}}, \"index\": 0, \"finish_reason\": null, \"logprobs\": null}} ], \"id\": \"c1\" }}\n\n")
        };
        let mut stream = String::from("data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n");
        for p in pieces {
            stream.push_str(&chunk(p));
        }
        stream.push_str("data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
        let mut f = SseGuard::new(side.clone(), Format::OpenAiChat, None);
        let mut out = f.chunk(Bytes::from(stream)).to_vec();
        out.extend_from_slice(&f.finish());
        let evs = events(&out);
        let mut content = String::new();
        for (i, (_, data)) in evs.iter().enumerate().skip(1).take(pieces.len()) {
            let v: Value = serde_json::from_str(data).expect(data);
            let sent = v["choices"][0]["delta"]["content"].as_str().unwrap();
            content.push_str(sent);
            // The event is the one that came, its content replaced.
            let came = chunk(pieces[i - 1]);
            let text = serde_json::to_string(sent).unwrap();
            let expect = came.replace(&serde_json::to_string(pieces[i - 1]).unwrap(), &text);
            assert_eq!(format!("data: {data}\n\n"), expect);
        }
        for (_, data) in &evs[pieces.len() + 1..] {
            if let Some(t) = serde_json::from_str::<Value>(data)
                .ok()
                .and_then(|v| v.pointer("/choices/0/delta/content").cloned())
            {
                content.push_str(t.as_str().unwrap());
            }
        }
        assert_eq!(content, whole);
    }

    /// A piece sent whole (nothing held, nothing masked) leaves its event byte for byte as it
    /// came, in every dialect.
    #[test]
    fn an_event_whose_text_is_unchanged_passes_byte_identical() {
        let side = side("mask");
        let openai = [
            "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\" : \"c1\", \"x\": 1.5, \"nested\": {\"a\": [1, true, null]}, \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"Hello, \\u0041 \\\"world\\\". \"}, \"finish_reason\": null}]}\n\n",
            ": a comment\nid: 7\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Fine. \"},\"finish_reason\":null}],\"usage\":null}\n\n",
        ];
        let mut f = SseGuard::new(side.clone(), Format::OpenAiChat, None);
        f.chunk(Bytes::from_static(openai[0].as_bytes()));
        for ev in &openai[1..] {
            assert_eq!(f.chunk(Bytes::from_static(ev.as_bytes())), ev.as_bytes());
        }
        let anthropic = [
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hello, \\\"world\\\". \"}}\n\n",
        ];
        let mut f = SseGuard::new(side.clone(), Format::AnthropicMessages, None);
        f.chunk(Bytes::from_static(anthropic[0].as_bytes()));
        let ev = anthropic[1].as_bytes();
        assert_eq!(f.chunk(Bytes::from_static(ev)), ev);
        // Responses: already in order, no log-probabilities to empty.
        let ev = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":0,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hello, world. \",\"logprobs\":[]}\n\n";
        let mut f = SseGuard::new(side, Format::OpenAiResponses, None);
        assert_eq!(f.chunk(Bytes::from_static(ev.as_bytes())), ev.as_bytes());
    }

    /// Responses deltas read in place are renumbered and their log-probabilities emptied as the
    /// `Value` path does; the held text's flush event is built from the last one.
    #[test]
    fn responses_deltas_in_place_are_renumbered_and_lose_their_logprobs() {
        let side = side("mask");
        let delta = |seq: u64, text: &str| {
            let v = json!({"type": "response.output_text.delta", "sequence_number": seq, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text, "logprobs": [{"token": "x", "logprob": -0.1}]});
            format!("event: response.output_text.delta\ndata: {v}\n\n")
        };
        // Numbers off by 5 (an upstream that counts from elsewhere).
        let mut s = String::new();
        for (i, p) in ["mail jane@exa", "mple.com now ", "ok"].iter().enumerate() {
            s.push_str(&delta(i as u64 + 5, p));
        }
        let done = json!({"type": "response.output_text.done", "sequence_number": 8, "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "mail jane@example.com now ok"});
        s.push_str(&format!(
            "event: response.output_text.done\ndata: {done}\n\n"
        ));
        let mut f = SseGuard::new(side, Format::OpenAiResponses, None);
        let mut out = f.chunk(Bytes::from(s)).to_vec();
        out.extend_from_slice(&f.finish());
        let mut text = String::new();
        for (i, (head, data)) in events(&out).iter().enumerate() {
            let v: Value = serde_json::from_str(data).expect(data);
            assert_eq!(v["sequence_number"], i, "{data}");
            assert_eq!(
                head.trim_end(),
                format!("event: {}", v["type"].as_str().unwrap())
            );
            if v["type"] == "response.output_text.delta" {
                assert_eq!(v["logprobs"], json!([]));
                assert_eq!(v["item_id"], "msg_1");
                text.push_str(v["delta"].as_str().unwrap());
            } else {
                assert_eq!(v["text"], "mail <EMAIL> now ok");
            }
        }
        assert_eq!(text, "mail <EMAIL> now ok");
    }

    /// Tool-call arguments with escapes and non-ASCII, cut mid-escape-free points: every event
    /// stays JSON, and the arguments put together are valid JSON equal to masking them whole.
    #[test]
    fn spliced_tool_call_arguments_stay_valid_json() {
        let side = side("mask");
        let args = r#"{"to":"jane@example.com","body":"say \"hé\" \\ ok","n":[1,2]}"#;
        let env = |args: &str| {
            let c = json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args}}]}, "finish_reason": null}]});
            format!("data: {c}\n\n")
        };
        let bounds: Vec<usize> = (0..=args.len())
            .filter(|i| args.is_char_boundary(*i))
            .collect();
        let whole = side.scanner.apply_json(args).text;
        assert!(whole.contains("<EMAIL>"));
        for w in bounds.windows(2).step_by(2) {
            let cut = w[0];
            let mut s = String::from("data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n");
            s.push_str(&env(&args[..cut]));
            s.push_str(&env(&args[cut..]));
            s.push_str("data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n");
            let mut f = SseGuard::new(side.clone(), Format::OpenAiChat, None);
            let mut out = f.chunk(Bytes::from(s)).to_vec();
            out.extend_from_slice(&f.finish());
            let mut got = String::new();
            for (_, data) in events(&out) {
                if data == "[DONE]" {
                    continue;
                }
                let v: Value = serde_json::from_str(&data).expect(&data);
                if let Some(a) = v
                    .pointer("/choices/0/delta/tool_calls/0/function/arguments")
                    .and_then(Value::as_str)
                {
                    got.push_str(a);
                }
            }
            assert_eq!(got, whole, "cut at {cut}");
            let parsed: Value = serde_json::from_str(&got).expect(&got);
            assert_eq!(parsed["body"], "say \"hé\" \\ ok");
        }
    }

    /// Data a `Value` refuses (a number past f64, a lone surrogate outside the texts) is
    /// refused the same when the chunk would otherwise be read in place.
    #[test]
    fn data_a_value_refuses_is_refused_in_place_too() {
        for odd in ["1e999", "\"\\ud800\""] {
            let side = side("mask");
            let mut f = SseGuard::new(side, Format::OpenAiChat, None);
            f.chunk(Bytes::from_static(b"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n"));
            let ev = format!("data: {{\"id\":\"c1\",\"x\":{odd},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi \"}},\"finish_reason\":null}}]}}\n\n");
            let out = f.chunk(Bytes::from(ev));
            assert!(f.ended(), "{odd}");
            assert!(String::from_utf8_lossy(&out).contains(UNSUPPORTED), "{odd}");
        }
    }

    /// The envelope of the usual chunk (as bench/tokstream.c and OpenAI send it).
    const QUICK_HEAD: &str = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1735689600,\"model\":\"m\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,";

    fn quick_data(delta: &str, tail: &str) -> String {
        format!("{QUICK_HEAD}\"delta\":{delta},\"logprobs\":null,\"finish_reason\":null}}]{tail}}}")
    }

    /// What the quick read takes it reads as the serde read of the in-place path does (same
    /// index and texts, and neither the layout check nor the `Value` check would decline it);
    /// every other layout it declines, so the full read handles it.
    #[test]
    fn quick_read_takes_the_usual_chunk_and_declines_every_other_layout() {
        let taken = [
            quick_data("{\"content\":\"Hello\"}", ""),
            quick_data("{\"content\":\" a \\\"b\\\" \\\\ \\u00e9 \\n é ✓\"}", ",\"usage\":null"),
            quick_data("{\"role\":\"assistant\",\"content\":null,\"refusal\":\"no\"}", ""),
            quick_data("{\"reasoning_content\":\"r\",\"reasoning\":\"s\",\"content\":\"c\"}", ""),
            quick_data("{}", ",\"ok\":true,\"no\":false"),
            "{ \"choices\" :\t[ { \"delta\" : { \"content\" : \"x\" } , \"index\" : 3 } ] , \"id\" : \"c\" }".into(),
            "{\"choices\":[{\"index\":0}]}".into(),
        ];
        for data in &taken {
            let raw = format!("data: {data}\n\n");
            let got = quick_event(raw.as_bytes()).and_then(quick_chat);
            let got = got.unwrap_or_else(|| panic!("declined {data}"));
            assert_eq!(single_data_line(raw.as_bytes()), Some((6, data.as_str())));
            assert!(!value_may_differ(data.as_bytes()), "{data}");
            let chunk: ChatChunk = serde_json::from_str(data).expect(data);
            let choices: Vec<_> = chunk.choices.as_ref().unwrap().iter().collect();
            assert_eq!(choices.len(), 1, "{data}");
            let c = choices[0];
            assert!(c.finish_reason.is_none() && c.logprobs.is_none_or(|l| l.get() == "null"));
            assert_eq!(got.index, c.index, "{data}");
            let d = c.delta.as_ref();
            let texts = [
                d.and_then(|d| d.content),
                d.and_then(|d| d.refusal),
                d.and_then(|d| d.reasoning_content),
                d.and_then(|d| d.reasoning),
            ];
            assert_eq!(got.texts, texts.map(|t| t.map(RawValue::get)), "{data}");
        }
        let declined = [
            // A finish, log-probabilities, tool calls, an unknown delta or choice key.
            quick_data("{\"content\":\"a\"}", "").replace("\"finish_reason\":null", "\"finish_reason\":\"stop\""),
            quick_data("{\"content\":\"a\"}", "").replace("\"logprobs\":null", "\"logprobs\":{\"content\":[]}"),
            quick_data("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}", ""),
            quick_data("{\"content\":\"a\",\"audio\":null}", ""),
            quick_data("{\"content\":\"a\"}", "").replace("\"index\":0,", "\"index\":0,\"x\":1,"),
            // Not one choice; a nested envelope value.
            "{\"choices\":[]}".into(),
            "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}},{\"index\":1,\"delta\":{\"content\":\"b\"}}]}".into(),
            "{\"choices\":null}".into(),
            "{\"id\":\"c\"}".into(),
            quick_data("{\"content\":\"a\"}", ",\"usage\":{\"total_tokens\":3}"),
            quick_data("{\"content\":\"a\"}", ",\"tags\":[]"),
            // Numbers other than plain digits, an index that is not one.
            quick_data("{\"content\":\"a\"}", ",\"x\":1.5"),
            quick_data("{\"content\":\"a\"}", ",\"x\":1e999"),
            quick_data("{\"content\":\"a\"}", ",\"x\":-1"),
            quick_data("{\"content\":\"a\"}", ",\"x\":01"),
            quick_data("{\"content\":\"a\"}", ",\"x\":99999999999999999999"),
            quick_data("{\"content\":\"a\"}", "").replace("\"index\":0", "\"index\":null"),
            // Keys with escapes or twice.
            quick_data("{\"content\":\"a\"}", "").replace("\"choices\"", "\"ch\\u006fices\""),
            quick_data("{\"c\\u006fntent\":\"a\"}", ""),
            quick_data("{\"content\":\"a\",\"content\":\"b\"}", ""),
            quick_data("{\"content\":\"a\"}", "").replace("\"index\":0,", "\"index\":0,\"index\":0,"),
            quick_data("{\"content\":\"a\"}", ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]"),
            // Strings a `Value` refuses or that are not JSON; a text that is not a string.
            quick_data("{\"content\":\"\\ud83d\\ude00\"}", ""),
            quick_data("{\"content\":\"a\\qb\"}", ""),
            quick_data("{\"content\":\"a\\u00zz\"}", ""),
            quick_data("{\"content\":\"a\tb\"}", ""),
            quick_data("{\"content\":7}", ""),
            quick_data("{\"content\":\"a\"}", ",\"id\":\"x\u{1}\""),
            // Line breaks (another SSE layout) and anything after the object.
            quick_data("{\"content\":\"a\"}", ",\n\"id\":\"c\""),
            quick_data("{\"content\":\"a\"}", ",\r\"id\":\"c\""),
            format!("{}x", quick_data("{\"content\":\"a\"}", "")),
            format!("{}}}", quick_data("{\"content\":\"a\"}", "")),
            quick_data("{\"content\":\"a\"}", "").replace("null}]", "nul}]"),
        ];
        for data in &declined {
            let raw = format!("data: {data}\n\n");
            assert!(
                quick_event(raw.as_bytes()).and_then(quick_chat).is_none(),
                "took {data}"
            );
        }
        // Only a lone `data: {` line ended by a blank line.
        let ok = quick_data("{\"content\":\"a\"}", "");
        for raw in [
            format!("id: 1\ndata: {ok}\n\n"),
            format!("data:{ok}\n\n"),
            format!("data: {ok}\r\n\r\n"),
            format!("data: {ok}\ndata: {ok}\n\n"),
            format!("data: {ok}\n"),
        ] {
            assert!(
                quick_event(raw.as_bytes()).and_then(quick_chat).is_none(),
                "{raw:?}"
            );
        }
    }

    /// A chunk that starts with the envelope of one the quick read took is read from its
    /// `choices` on, and decided as a read from its start decides it: taken with the same
    /// texts, or declined (a second `choices`, a bad tail, another layout after it).
    #[test]
    fn a_read_resumed_after_a_known_envelope_decides_like_a_whole_read() {
        let a = |t: &str| quick_data(&format!("{{\"content\":\"{t}\"}}"), "");
        let chunks = [
            a("Hello"),
            a(" there"),
            a("x").replace("\"created\":1", "\"created\":2"),
            quick_data("{\"content\":\"a\"}", ",\"usage\":null"),
            quick_data("{\"content\":\"a\"}", ",\"usage\":{\"total_tokens\":3}"),
            quick_data("{\"content\":\"a\"}", ",\"choices\":[{\"index\":0}]"),
            quick_data("{\"content\":\"a\",\"content\":\"b\"}", ""),
            quick_data("{\"content\":\"\\ud83d\\ude00\"}", ""),
            a("a").replace("\"finish_reason\":null", "\"finish_reason\":\"stop\""),
            format!("{}x", a("a")),
            format!("{} ", a("a")),
            a("a").replace("}]}", "}] }"),
            a("a").replace("[{", " [ {"),
            "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}".into(),
            "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}],\"id\":\"c\"}".into(),
            "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}},{\"index\":1}]}".into(),
        ];
        let mut resumed = 0;
        for known in &chunks {
            let Some((_, at)) = quick_chat_from(known, None) else {
                continue;
            };
            let envelope = &known[..at];
            for data in chunks.iter().filter(|d| d.starts_with(envelope)) {
                let whole = quick_chat_from(data, None);
                let from = quick_chat_from(data, Some(at));
                let seen = |r: Option<(QuickChunk<'_>, usize)>| {
                    r.map(|(c, at)| (c.index, c.texts.map(|t| t.map(str::to_string)), at))
                };
                assert_eq!(seen(from), seen(whole), "{data} after {envelope}");
                resumed += 1;
            }
        }
        assert!(resumed > 20, "{resumed}");
    }

    /// Through the quick read: an e-mail cut over three chunks is held, masked and sent in the
    /// event that completes it, the rest of every event byte for byte; the held end of the
    /// answer goes out before the finish; events it declines (a surrogate pair, a tool call)
    /// are still masked by the full read.
    #[test]
    fn quick_read_masks_held_text_and_hands_other_layouts_to_the_full_read() {
        let side = side("mask");
        let pieces = [
            "Write to ",
            "jane",
            ".doe@exa",
            "mple.com \"now\" \\ é ",
            "or bob@example.org 😀 ",
            "then +1 415 555 2671",
        ];
        let chunk = |delta: &str| format!("data: {}\n\n", quick_data(delta, ",\"usage\":null"));
        let text_chunk = |p: &str| {
            chunk(&format!(
                "{{\"content\":{}}}",
                serde_json::to_string(p).unwrap()
            ))
        };
        let mut f = SseGuard::new(side.clone(), Format::OpenAiChat, None);
        f.chunk(Bytes::from(chunk(
            "{\"role\":\"assistant\",\"content\":\"\"}",
        )));
        let mut sent = String::new();
        let mut outs = Vec::new();
        let mut unchanged = 0;
        for (i, p) in pieces.iter().enumerate() {
            // The fourth piece as a surrogate pair: declined, read in full.
            let ev = match i {
                4 => chunk("{\"content\":\"or bob@example.org \\ud83d\\ude00 \"}"),
                _ => text_chunk(p),
            };
            let quick = quick_event(ev.as_bytes()).and_then(quick_chat).is_some();
            assert_eq!(quick, i != 4, "{ev}");
            let came = Bytes::from(ev.clone());
            let out = f.chunk(came.clone());
            // An event sent as it came is the very buffer that came.
            if out == came {
                assert_eq!(out.as_ptr(), came.as_ptr());
                unchanged += 1;
            }
            let out = String::from_utf8(out.to_vec()).unwrap();
            let v: Value =
                serde_json::from_str(out.strip_prefix("data: ").unwrap().trim_end()).expect(&out);
            let got = v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            if i != 4 {
                // The event as it came, its text replaced.
                let came = serde_json::to_string(p).unwrap();
                let now = serde_json::to_string(&got).unwrap();
                assert_eq!(out, ev.replace(&came, &now));
            }
            sent.push_str(&got);
            outs.push(got);
        }
        // "jane" and ".doe@exa" held; the masked address goes out with the piece ending it.
        assert_eq!(outs[1], "");
        assert_eq!(outs[2], "");
        assert!(outs[3].starts_with("<EMAIL>"), "{:?}", outs[3]);
        assert_eq!(outs[0], pieces[0]);
        assert!(unchanged >= 1);
        let fin = chunk("{}").replace("\"finish_reason\":null", "\"finish_reason\":\"stop\"");
        let out = f.chunk(Bytes::from(fin)).to_vec();
        let evs = events(&out);
        assert_eq!(evs.len(), 2, "held text, then the finish: {evs:?}");
        let held: Value = serde_json::from_str(&evs[0].1).unwrap();
        sent.push_str(held["choices"][0]["delta"]["content"].as_str().unwrap());
        let last: Value = serde_json::from_str(&evs[1].1).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(sent, side.scanner.apply(&pieces.concat()).text);
        assert_eq!(sent.matches("<EMAIL>").count(), 2, "{sent}");
        assert!(sent.ends_with("<PHONE>"), "{sent}");

        // Tool-call arguments (declined) are masked as JSON by the full read.
        let mut f = SseGuard::new(side.clone(), Format::OpenAiChat, None);
        f.chunk(Bytes::from(chunk("{\"role\":\"assistant\"}")));
        let args = serde_json::to_string("{\"to\":\"jane.doe@example.com\"}").unwrap();
        let ev = chunk(&format!(
            "{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":{args}}}}}]}}"
        ));
        assert!(quick_event(ev.as_bytes()).and_then(quick_chat).is_none());
        let mut out = f.chunk(Bytes::from(ev)).to_vec();
        out.extend_from_slice(&f.finish());
        assert!(!String::from_utf8_lossy(&out).contains("jane.doe"));
    }

    /// Usual chunks that come together in one buffer (the quick read of the whole buffer
    /// declines it) go out as they do one by one.
    #[test]
    fn usual_chunks_in_one_buffer_go_out_as_one_by_one() {
        let side = side("mask");
        let ev = |p: &str| {
            let text = serde_json::to_string(p).unwrap();
            format!(
                "data: {}\n\n",
                quick_data(&format!("{{\"content\":{text}}}"), "")
            )
        };
        let first = ev("");
        let evs = ["mail jane", ".doe@example.com ", "now ", "or ", "x@y.io"].map(ev);
        let mut one = SseGuard::new(side.clone(), Format::OpenAiChat, None);
        let mut apart = one.chunk(Bytes::from(first.clone())).to_vec();
        for e in &evs {
            apart.extend_from_slice(&one.chunk(Bytes::from(e.clone())));
        }
        apart.extend_from_slice(&one.finish());
        let mut all = SseGuard::new(side.clone(), Format::OpenAiChat, None);
        let mut together = all.chunk(Bytes::from(first)).to_vec();
        together.extend_from_slice(&all.chunk(Bytes::from(evs[..3].concat())));
        together.extend_from_slice(&all.chunk(Bytes::from(evs[3..].concat())));
        together.extend_from_slice(&all.finish());
        assert_eq!(
            String::from_utf8(together).unwrap(),
            String::from_utf8(apart.clone()).unwrap()
        );
        let apart = String::from_utf8(apart).unwrap();
        assert!(!apart.contains("jane") && !apart.contains("x@y"), "{apart}");
    }

    /// The eight-bytes-at-a-time skip stops where a byte-by-byte one does, at every offset.
    #[test]
    fn plain_run_stops_at_the_first_quote_backslash_or_control_byte() {
        let mut rng = fastrand::Rng::with_seed(3);
        let bytes = [
            b'a', b' ', b'"', b'\\', 0x1f, 0x20, 0x7f, 0x80, 0xe9, b'0', 0x00, 0xff,
        ];
        for _ in 0..2000 {
            let data: Vec<u8> = (0..rng.usize(0..40))
                .map(|_| match rng.u8(..4) {
                    0 => bytes[rng.usize(..bytes.len())],
                    _ => rng.u8(0x20..0x7f).max(b'#'),
                })
                .collect();
            for i in 0..=data.len() {
                let naive = (i..data.len())
                    .find(|&j| data[j] < 0x20 || data[j] == b'"' || data[j] == b'\\')
                    .unwrap_or(data.len());
                assert_eq!(plain_run(&data, i), naive, "{data:?} from {i}");
            }
        }
    }
}
