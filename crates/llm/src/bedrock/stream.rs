//! Bedrock `ConverseStream` (AWS event-stream frames) -> OpenAI
//! `chat.completion.chunk` SSE, and (chained through `anthropic::client_stream`) ->
//! Anthropic Messages events.
//!
//! The body is binary (`application/vnd.amazon.eventstream`, decoded by
//! `bedrock/eventstream.rs`), each event a JSON payload named by the
//! `:event-type` header: `messageStart {role}`, `contentBlockStart
//! {contentBlockIndex, start: {toolUse: {toolUseId, name}}}`,
//! `contentBlockDelta {contentBlockIndex, delta: {text} | {toolUse: {input}}
//! | {reasoningContent: {text} | {signature} | {redactedContent}}}`,
//! `contentBlockStop`, `messageStop {stopReason}` and, last, `metadata
//! {usage, metrics}`. A `:message-type: exception` frame (`:exception-type`
//! e.g. `throttlingException`, `modelStreamErrorException`) ends the stream
//! with an error event in the client's format; so does a corrupt frame.
//! Reference: <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html>.
//!
//! Every event is translated as it arrives; OpenAI chunks for Anthropic
//! clients are fed straight into the OpenAI -> Anthropic state machine,
//! nothing buffered beyond one partial frame.

use serde_json::{json, Value};

use crate::bedrock::errors::anthropic_type_for_exception;
use crate::bedrock::eventstream::{Decoder, Message};
use crate::bedrock::wire::{finish_reason_from_bedrock, usage_from_bedrock};
use crate::dialect::sink::ChunkSink;
use crate::dialect::stream::{Observed, ProviderStream};
use crate::dialect::Route;
use crate::pivot::{chunk_json, delta_choices, finish_choices, unix_now};
use crate::Format;

/// Content blocks with an index above this are ignored, so a hostile
/// `contentBlockIndex` cannot make us allocate.
const MAX_BLOCKS: u64 = 1024;

/// Converse events -> OpenAI chunk values.
struct ConverseToOpenAi {
    id: String,
    /// Converse never names the model; the gateway knows it from the request.
    model: String,
    created: u64,
    started: bool,
    /// `contentBlockIndex` -> OpenAI `tool_calls[].index`, for tool blocks.
    tool_blocks: Vec<(u64, u64)>,
    finished: bool,
}

impl ConverseToOpenAi {
    fn chunk(&self, choices: Value) -> Value {
        chunk_json(&self.id, self.created, &self.model, choices)
    }

    fn delta(&self, delta: Value) -> Value {
        self.chunk(delta_choices(0, delta))
    }

    fn ensure_started(&mut self, out: &mut Vec<Value>) {
        if !std::mem::replace(&mut self.started, true) {
            out.push(self.delta(json!({ "role": "assistant", "content": "" })));
        }
    }

    fn tool_index(&self, block: u64) -> Option<u64> {
        self.tool_blocks
            .iter()
            .find(|(b, _)| *b == block)
            .map(|&(_, t)| t)
    }

    fn on_event(&mut self, kind: &str, event: &Value, out: &mut Vec<Value>) {
        if self.finished {
            return;
        }
        self.ensure_started(out);
        let block = event
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match kind {
            "contentBlockStart" => {
                let Some(tool) = event.get("start").and_then(|s| s.get("toolUse")) else {
                    return;
                };
                if block >= MAX_BLOCKS || self.tool_index(block).is_some() {
                    return;
                }
                let index = self.tool_blocks.len() as u64;
                self.tool_blocks.push((block, index));
                out.push(self.delta(json!({ "tool_calls": [{
                    "index": index,
                    "id": tool.get("toolUseId").and_then(Value::as_str).unwrap_or_default(),
                    "type": "function",
                    "function": {
                        "name": tool.get("name").and_then(Value::as_str).unwrap_or_default(),
                        "arguments": "",
                    },
                }]})));
            }
            "contentBlockDelta" => {
                let Some(delta) = event.get("delta") else {
                    return;
                };
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    if !text.is_empty() {
                        out.push(self.delta(json!({ "content": text })));
                    }
                } else if let Some(input) = delta
                    .get("toolUse")
                    .and_then(|t| t.get("input"))
                    .and_then(Value::as_str)
                {
                    // A fragment for a block that never started is dropped:
                    // without an id and name the client cannot use it.
                    if let (Some(index), false) = (self.tool_index(block), input.is_empty()) {
                        out.push(self.delta(json!({ "tool_calls": [{
                            "index": index,
                            "function": { "arguments": input },
                        }]})));
                    }
                } else if let Some(r) = delta.get("reasoningContent") {
                    if let Some(text) = r.get("text").and_then(Value::as_str) {
                        out.push(self.delta(json!({ "reasoning_content": text })));
                    } else if let Some(sig) = r.get("signature").and_then(Value::as_str) {
                        out.push(self.delta(json!({ "thinking_blocks": [
                            { "type": "thinking", "thinking": "", "signature": sig }
                        ]})));
                    } else if let Some(data) = r.get("redactedContent").and_then(Value::as_str) {
                        out.push(self.delta(json!({ "thinking_blocks": [
                            { "type": "redacted_thinking", "data": data }
                        ]})));
                    }
                }
            }
            "messageStop" => {
                let finish = event
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .map(finish_reason_from_bedrock)
                    .unwrap_or("stop");
                self.finished = true;
                out.push(self.chunk(finish_choices(0, finish)));
            }
            // messageStart (role chunk above), contentBlockStop, metadata
            // (usage, handled by the caller) and anything new.
            _ => {}
        }
    }
}

/// The Bedrock-egress stream translator used by `StreamTranslator`.
struct BedrockStream {
    decoder: Decoder,
    to_openai: ConverseToOpenAi,
    sink: ChunkSink,
    route: Route,
    /// The client's stream is complete (closing events written, or an error).
    done: bool,
}

impl BedrockStream {
    pub fn new(route: Route, include_usage: bool) -> Self {
        BedrockStream {
            decoder: Decoder::default(),
            to_openai: ConverseToOpenAi {
                id: crate::bedrock::wire::response_id(route.ingress()),
                model: String::new(),
                created: unix_now(),
                started: false,
                tool_blocks: Vec::new(),
                finished: false,
            },
            sink: ChunkSink::new(route.ingress(), include_usage),
            route,
            done: false,
        }
    }

    /// Raw body bytes, split anywhere.
    fn feed_frames(&mut self, bytes: &[u8], observed: &mut Observed, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let mut messages = Vec::new();
        let result = self.decoder.feed(bytes, &mut messages);
        for message in messages {
            self.on_message(&message, observed, out);
            if self.done {
                return;
            }
        }
        if let Err(e) = result {
            let message = format!("upstream event stream is corrupt: {e}");
            self.route
                .client
                .write_stream_error(Some("api_error"), &message, out);
            self.done = true;
        }
    }

    fn on_message(&mut self, message: &Message, observed: &mut Observed, out: &mut Vec<u8>) {
        match message.header_str(":message-type") {
            Some("exception") => {
                let exception = message.header_str(":exception-type").unwrap_or_default();
                let text = serde_json::from_slice::<Value>(&message.payload)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| format!("upstream stream error: {exception}"));
                let kind = anthropic_type_for_exception(exception);
                self.route.client.write_stream_error(Some(kind), &text, out);
                self.done = true;
            }
            // Generic event-stream errors carry their detail in headers.
            Some("error") => {
                let code = message.header_str(":error-code").unwrap_or("error");
                let text = message
                    .header_str(":error-message")
                    .unwrap_or("upstream stream error");
                let kind = anthropic_type_for_exception(code);
                self.route.client.write_stream_error(Some(kind), text, out);
                self.done = true;
            }
            Some("event") | None => {
                let kind = message.header_str(":event-type").unwrap_or_default();
                // Unparseable payloads are skipped: one bad event must not kill the stream.
                let Ok(event) = serde_json::from_slice::<Value>(&message.payload) else {
                    return;
                };
                self.on_event(kind, &event, observed, out);
            }
            Some(_) => {}
        }
    }

    fn on_event(&mut self, kind: &str, event: &Value, observed: &mut Observed, out: &mut Vec<u8>) {
        observe(kind, event, observed);
        let mut chunks = Vec::new();
        self.to_openai.on_event(kind, event, &mut chunks);
        for chunk in chunks {
            self.sink.emit(chunk, observed, out);
        }
        // `metadata` is the documented last event: close the client's
        // stream now rather than waiting for the connection to end.
        if kind == "metadata" {
            self.close(observed, out);
        }
    }

    /// The upstream ended (or sent its last event): usage chunk (if asked)
    /// and `[DONE]`, or the closing Anthropic events. A frame cut off
    /// mid-way is an error, not a clean end.
    fn close(&mut self, observed: &Observed, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if self.decoder.pending_bytes() > 0 {
            let message = "upstream event stream ended inside a frame";
            self.route
                .client
                .write_stream_error(Some("api_error"), message, out);
            return;
        }
        let mut chunks = Vec::new();
        self.to_openai.ensure_started(&mut chunks);
        for chunk in chunks {
            self.sink.emit(chunk, observed, out);
        }
        let to_openai = &self.to_openai;
        self.sink
            .finish(|| to_openai.chunk(json!([])), observed, out);
    }
}

impl ProviderStream for BedrockStream {
    fn translates(&self) -> bool {
        true
    }

    fn feed(&mut self, chunk: &[u8], observed: &mut Observed, out: &mut Vec<u8>) {
        self.feed_frames(chunk, observed, out);
    }

    fn finish(&mut self, observed: &mut Observed, out: &mut Vec<u8>) {
        self.close(observed, out);
    }

    /// The model the request named, reported in the chunks Converse leaves unnamed.
    fn set_upstream_model(&mut self, model: &str, observed: &mut Observed) {
        self.to_openai.model = model.to_owned();
        observed.model = Some(model.to_owned());
    }
}

/// The Bedrock provider's stream for a client of `ingress`: translated for
/// OpenAI and Anthropic clients.
pub(crate) fn stream_to(route: Route, include_usage: bool) -> Box<dyn ProviderStream> {
    match route.ingress() {
        Format::OpenAiChat | Format::AnthropicMessages => {
            Box::new(BedrockStream::new(route, include_usage))
        }
        _ => Box::new(Untranslated),
    }
}

/// A Bedrock stream for a client that speaks Bedrock: forwarded as it is.
struct Untranslated;

impl ProviderStream for Untranslated {
    fn translates(&self) -> bool {
        false
    }

    fn feed(&mut self, _chunk: &[u8], _observed: &mut Observed, _out: &mut Vec<u8>) {}

    fn finish(&mut self, _observed: &mut Observed, _out: &mut Vec<u8>) {}

    fn set_upstream_model(&mut self, model: &str, observed: &mut Observed) {
        observed.model = Some(model.to_owned());
    }
}

/// Records usage, completion text and first token from one Converse event.
fn observe(kind: &str, event: &Value, observed: &mut Observed) {
    if observed.completion.is_empty() {
        observed.completion.push(String::new());
    }
    match kind {
        "metadata" => {
            if let Some(usage) = event.get("usage") {
                observed.usage = usage_from_bedrock(usage);
            }
        }
        "contentBlockStart" if event.get("start").and_then(|s| s.get("toolUse")).is_some() => {
            observed.first_token = true;
        }
        "contentBlockDelta" => {
            let delta = event.get("delta");
            if delta.and_then(|d| d.get("toolUse")).is_some() {
                observed.first_token = true;
            }
            let text = delta
                .and_then(|d| d.get("text"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !text.is_empty() {
                observed.first_token = true;
                crate::push_capped(
                    &mut observed.completion[0],
                    text,
                    crate::recorded_text_cap(),
                );
            }
        }
        _ => {}
    }
}
