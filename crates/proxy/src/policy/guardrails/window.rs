//! Remote guards (webhook, moderation) on a streamed answer. The answer's events (after the
//! regex guards, when the route has some) are held back until the texts they carry reach the
//! window (the smallest `streamWindow` of the guards, in characters), then the guards are
//! asked about that window's texts, one per stream (choice, content block or output item),
//! and the held events go out at once: as they were, masked (a mask answer's text goes into
//! the stream's first held event, the others carry `""`), or not at all (a refusal ends the
//! stream with an error event in the caller's format). What is left is asked about at the
//! end. So a guard's latency is paid once per window, not per token; first text arrives
//! after one window (or the end of a shorter answer) plus one round trip. Events without
//! answer text (roles, usage, `[DONE]`) pass as soon as nothing is held before them. A guard
//! sees a window's texts, not the whole answer; what was sent before a refusal stays sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use llm::Format;
use serde_json::Value;

use super::remote::{self, Decision, RemoteGuard};
use super::stream::{error_event, event_end, SseGuard, OPENAI_FIELDS, RESPONSES_DELTAS};
use super::{REJECTED, UNAVAILABLE};
use crate::body::{self, Body};
use crate::observe::LlmSlot;
use crate::pipeline::ChunkFilter;

/// A held event: raw bytes (no answer text), or parsed with the places of its texts.
enum Held {
    Raw(Vec<u8>),
    Event {
        head: String,
        v: Value,
        /// (JSON pointer of a text, the key of its stream).
        slots: Vec<(String, String)>,
    },
}

pub struct Window {
    inner: Body,
    regex: Option<SseGuard>,
    guards: Arc<[RemoteGuard]>,
    format: Format,
    route: Arc<str>,
    model: Option<String>,
    slot: Option<Arc<LlmSlot>>,
    every: usize,
    pending: Vec<u8>,
    held: Vec<Held>,
    held_chars: usize,
    /// Responses: the `sequence_number` after the last one seen (for an error event).
    seq: u64,
    /// Per stream: (its text as the guards got it, as the caller got it), to rewrite the whole
    /// texts of the Responses events that close a stream after a mask.
    full: BTreeMap<String, (String, String)>,
    masked: bool,
    done: bool,
}

impl Window {
    pub fn new(
        inner: Body,
        regex: Option<SseGuard>,
        guards: Arc<[RemoteGuard]>,
        format: Format,
        route: Arc<str>,
        model: Option<String>,
        slot: Option<Arc<LlmSlot>>,
    ) -> Self {
        let every = guards
            .iter()
            .map(|g| g.window)
            .min()
            .unwrap_or(remote::DEFAULT_WINDOW);
        Window {
            inner,
            regex,
            guards,
            format,
            route,
            model,
            slot,
            every,
            pending: Vec::new(),
            held: Vec::new(),
            held_chars: 0,
            seq: 0,
            full: BTreeMap::new(),
            masked: false,
            done: false,
        }
    }

    pub fn into_body(self) -> Body {
        let s = futures_util::stream::unfold(self, |mut w| async move {
            let next = w.next().await?;
            Some((next.map(http_body::Frame::data), w))
        });
        http_body_util::StreamBody::new(s).boxed_unsync()
    }

    /// The next bytes to send; `None` at the end.
    async fn next(&mut self) -> Option<Result<Bytes, body::BoxError>> {
        loop {
            if self.done {
                return None;
            }
            let mut out = Vec::new();
            match self.inner.frame().await {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let (data, closed) = match &mut self.regex {
                        Some(r) => (r.chunk(data), r.closed()),
                        None => (data, false),
                    };
                    self.take(&data, &mut out);
                    if closed {
                        self.end(&mut out).await;
                    } else if self.held_chars >= self.every {
                        self.check(&mut out).await;
                    }
                }
                Some(Err(e)) => {
                    // Held text was not checked: it is not sent.
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    if let Some(r) = &mut self.regex {
                        let tail = r.finish();
                        self.take(&tail, &mut out);
                    }
                    self.end(&mut out).await;
                }
            }
            if !out.is_empty() {
                return Some(Ok(Bytes::from(out)));
            }
        }
    }

    /// The last check, then the end.
    async fn end(&mut self, out: &mut Vec<u8>) {
        let rest = std::mem::take(&mut self.pending);
        if !rest.iter().all(u8::is_ascii_whitespace) {
            let mut raw = rest;
            raw.extend_from_slice(b"\n\n");
            self.event(raw, out);
        }
        self.check(out).await;
        self.done = true;
    }

    /// Splits bytes into events, held or sent.
    fn take(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(data);
        while let Some(end) = event_end(&self.pending) {
            let raw: Vec<u8> = self.pending.drain(..end).collect();
            self.event(raw, out);
        }
    }

    fn event(&mut self, raw: Vec<u8>, out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(&raw);
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
        let parsed = match has_data {
            true => serde_json::from_str::<Value>(&data).ok(),
            false => None,
        };
        let held = match parsed {
            None => Held::Raw(raw),
            Some(v) => {
                if let Some(n) = v.get("sequence_number").and_then(Value::as_u64) {
                    self.seq = n + 1;
                }
                let slots = slots(self.format, &v);
                for (p, _) in &slots {
                    self.held_chars += v
                        .pointer(p)
                        .and_then(Value::as_str)
                        .map_or(0, |s| s.chars().count());
                }
                Held::Event { head, v, slots }
            }
        };
        let has_text = matches!(&held, Held::Event { slots, .. } if !slots.is_empty());
        if self.held.is_empty() && !has_text {
            self.send(held, out);
        } else {
            self.held.push(held);
        }
    }

    fn send(&self, held: Held, out: &mut Vec<u8>) {
        match held {
            Held::Raw(raw) => out.extend_from_slice(&raw),
            Held::Event { head, mut v, slots } => {
                if self.masked && slots.is_empty() && self.format == Format::OpenAiResponses {
                    rewrite_whole(&mut v, &self.full);
                }
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(format!("data: {v}\n\n").as_bytes());
            }
        }
    }

    /// Asks the guards about the held texts; sends the held events, or the refusal.
    async fn check(&mut self, out: &mut Vec<u8>) {
        self.held_chars = 0;
        let held = std::mem::take(&mut self.held);
        // Each stream's text in this window, in order of first appearance.
        let mut keys: Vec<String> = Vec::new();
        let mut texts: Vec<(String, String)> = Vec::new();
        for h in &held {
            if let Held::Event { v, slots, .. } = h {
                for (p, key) in slots {
                    let t = v.pointer(p).and_then(Value::as_str).unwrap_or("");
                    match keys.iter().position(|k| k == key) {
                        Some(i) => texts[i].1.push_str(t),
                        None => {
                            keys.push(key.clone());
                            texts.push(("assistant".into(), t.to_string()));
                        }
                    }
                }
            }
        }
        let before: Vec<String> = texts.iter().map(|(_, t)| t.clone()).collect();
        let mut changed = false;
        let decision = match before.iter().all(String::is_empty) {
            true => Decision::Pass,
            false => {
                remote::ask_all(
                    &self.guards,
                    &mut texts,
                    &self.route,
                    self.model.as_deref(),
                    "response",
                    &mut changed,
                )
                .await
            }
        };
        match decision {
            Decision::Pass => {}
            Decision::Reject(name) => {
                let msg = format!("{REJECTED}: the response was refused by guardrail {name:?}");
                return self.refuse(400, REJECTED, &msg, out);
            }
            Decision::Unavailable(name) => {
                let msg = format!("{UNAVAILABLE}: guardrail {name:?} could not be asked");
                return self.refuse(503, UNAVAILABLE, &msg, out);
            }
        }
        for (i, key) in keys.iter().enumerate() {
            let e = self.full.entry(key.clone()).or_default();
            e.0.push_str(&before[i]);
            e.1.push_str(&texts[i].1);
        }
        let mut held = held;
        if changed {
            self.masked = true;
            let mut first = vec![true; keys.len()];
            for h in &mut held {
                if let Held::Event { v, slots, .. } = h {
                    for (p, key) in slots.iter() {
                        let Some(i) = keys.iter().position(|k| k == key) else {
                            continue;
                        };
                        let t = match std::mem::replace(&mut first[i], false) {
                            true => texts[i].1.clone(),
                            false => String::new(),
                        };
                        if let Some(s) = v.pointer_mut(p) {
                            *s = Value::String(t);
                        }
                    }
                }
            }
            self.mask_record();
        }
        for h in held {
            self.send(h, out);
        }
    }

    /// The stream ends with an error event; what was held is dropped.
    fn refuse(&mut self, status: u16, code: &str, message: &str, out: &mut Vec<u8>) {
        self.done = true;
        self.pending.clear();
        out.extend_from_slice(&error_event(self.format, status, code, message, self.seq));
        if let Some(slot) = &self.slot {
            slot.update(|r| r.completion.clear());
        }
    }

    /// The record keeps the completion as the caller got it.
    fn mask_record(&self) {
        let Some(slot) = &self.slot else {
            return;
        };
        slot.update(|r| {
            for c in &mut r.completion {
                for (orig, masked) in self.full.values() {
                    if c == orig {
                        *c = masked.clone();
                    }
                }
            }
        });
    }
}

/// Strings equal to a stream's whole text as the guards got it become the text as the caller
/// got it (Responses' `.done` events, items and final response repeat the whole text).
fn rewrite_whole(v: &mut Value, full: &BTreeMap<String, (String, String)>) {
    match v {
        Value::String(s) => {
            if let Some((_, m)) = full.values().find(|(o, m)| o == s && o != m) {
                *s = m.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_whole(i, full)),
        Value::Object(map) => map.values_mut().for_each(|i| rewrite_whole(i, full)),
        _ => {}
    }
}

/// Where an event carries answer text: (JSON pointer, the key of its stream).
fn slots(format: Format, v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match format {
        Format::OpenAiChat => {
            let Some(choices) = v.get("choices").and_then(Value::as_array) else {
                return out;
            };
            for (ci, choice) in choices.iter().enumerate() {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
                let Some(delta) = choice.get("delta") else {
                    continue;
                };
                for f in OPENAI_FIELDS {
                    if delta.get(*f).is_some_and(Value::is_string) {
                        out.push((format!("/choices/{ci}/delta/{f}"), format!("{index}/{f}")));
                    }
                }
                if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                    for (j, call) in calls.iter().enumerate() {
                        let t = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if call
                            .pointer("/function/arguments")
                            .is_some_and(Value::is_string)
                        {
                            out.push((
                                format!("/choices/{ci}/delta/tool_calls/{j}/function/arguments"),
                                format!("{index}/tool/{t}"),
                            ));
                        }
                    }
                }
            }
        }
        Format::AnthropicMessages => {
            let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
            let base = match v.get("type").and_then(Value::as_str) {
                Some("content_block_delta") => "delta",
                Some("content_block_start") => "content_block",
                _ => return out,
            };
            for f in ["text", "thinking", "partial_json"] {
                let p = format!("/{base}/{f}");
                if v.pointer(&p).is_some_and(Value::is_string) {
                    out.push((p, format!("{index}/{f}")));
                }
            }
        }
        Format::OpenAiResponses => {
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
            if RESPONSES_DELTAS.iter().any(|(d, _)| *d == kind)
                && v.get("delta").is_some_and(Value::is_string)
            {
                let at = |k: &str| v.get(k).and_then(Value::as_u64);
                let sub = at("content_index").or(at("summary_index")).unwrap_or(0);
                let oi = at("output_index").unwrap_or(0);
                out.push(("/delta".into(), format!("{oi}/{kind}/{sub}")));
            }
        }
        _ => {}
    }
    out
}
