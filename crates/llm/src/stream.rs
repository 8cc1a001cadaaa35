//! Event-by-event SSE stream translation.
//!
//! The provider's stream is parsed incrementally (`sse.rs`); every event is
//! observed for model/usage/completion text and, when the formats differ,
//! translated immediately into complete client-format SSE events. Nothing
//! but a partial line is held back.
//!
//! References: OpenAI streaming chunks
//! (<https://platform.openai.com/docs/api-reference/chat/streaming>);
//! Anthropic stream events
//! (<https://docs.anthropic.com/en/docs/build-with-claude/streaming>).

use bytes::Bytes;

use crate::errors::stream_error_json;
use crate::sse::{write_event, SseEvent, SseParser};
use crate::stream_a2o::AnthropicToOpenAi;
use crate::stream_bedrock::BedrockStream;
use crate::stream_gemini::GeminiStream;
use crate::stream_o2a::OpenAiToAnthropic;
use crate::stream_responses::ResponsesStream;
use crate::wire::{AnDelta, AnEvent, AnUsage, OaChunk};
use crate::{Format, ResponseInfo, Usage};

/// Choice indexes above this are ignored for info, so a hostile `index`
/// cannot make us allocate.
const MAX_CHOICES: u64 = 128;

/// What has been observed so far, shared by all modes.
#[derive(Default)]
pub(crate) struct Observed {
    pub model: Option<String>,
    pub usage: Usage,
    pub anthropic_usage: AnUsage,
    pub completion: Vec<String>,
    pub first_token: bool,
}

impl Observed {
    fn completion_mut(&mut self, index: u64) -> Option<&mut String> {
        if index >= MAX_CHOICES {
            return None;
        }
        let i = index as usize;
        if self.completion.len() <= i {
            self.completion.resize(i + 1, String::new());
        }
        self.completion.get_mut(i)
    }

    fn observe_openai(&mut self, chunk: &OaChunk) {
        if self.model.is_none() {
            self.model = chunk.model.clone().filter(|m| !m.is_empty());
        }
        if let Some(u) = &chunk.usage {
            self.usage = u.to_usage();
        }
        for choice in chunk.choices.iter().flatten() {
            let Some(delta) = &choice.delta else { continue };
            if delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty()) {
                self.first_token = true;
            }
            let text = delta.content.as_deref().unwrap_or_default();
            if !text.is_empty() {
                self.first_token = true;
                if let Some(c) = self.completion_mut(choice.index) {
                    c.push_str(text);
                }
            }
        }
    }

    fn observe_anthropic(&mut self, event: &AnEvent) {
        match event {
            AnEvent::MessageStart { message } => {
                if self.model.is_none() {
                    self.model = message.model.clone();
                }
                if let Some(u) = &message.usage {
                    self.anthropic_usage.merge(u);
                    self.usage = self.anthropic_usage.to_usage();
                }
            }
            AnEvent::MessageDelta { usage: Some(u), .. } => {
                self.anthropic_usage.merge(u);
                self.usage = self.anthropic_usage.to_usage();
            }
            AnEvent::ContentBlockStart { content_block, .. } => match content_block {
                crate::wire::AnBlockStart::ToolUse { .. } => self.first_token = true,
                crate::wire::AnBlockStart::Text { text } if !text.is_empty() => {
                    self.push_text(text)
                }
                _ => {}
            },
            AnEvent::ContentBlockDelta { delta, .. } => match delta {
                AnDelta::TextDelta { text } if !text.is_empty() => self.push_text(text),
                AnDelta::InputJsonDelta { .. } => self.first_token = true,
                _ => {}
            },
            _ => {}
        }
    }

    /// Responses typed events: text deltas, and the final `response`
    /// object (model, usage) on `response.completed` / `.incomplete` /
    /// `.failed`.
    fn observe_responses(&mut self, data: &str) {
        #[derive(serde::Deserialize)]
        struct Event<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(default)]
            delta: Option<String>,
            #[serde(default)]
            response: Option<serde_json::Value>,
        }
        let Ok(ev) = serde_json::from_str::<Event>(data) else {
            return;
        };
        match &*ev.kind {
            "response.output_text.delta" => {
                if let Some(d) = ev.delta.filter(|d| !d.is_empty()) {
                    self.push_text(&d);
                }
            }
            "response.function_call_arguments.delta" => self.first_token = true,
            "response.created"
            | "response.completed"
            | "response.incomplete"
            | "response.failed" => {
                if let Some(r) = &ev.response {
                    let info = crate::responses::info_of(r);
                    if self.model.is_none() {
                        self.model = info.model;
                    }
                    if r.get("usage").is_some_and(|u| !u.is_null()) {
                        self.usage = info.usage;
                    }
                }
            }
            _ => {}
        }
    }

    fn push_text(&mut self, text: &str) {
        self.first_token = true;
        if let Some(c) = self.completion_mut(0) {
            c.push_str(text);
        }
    }
}

enum Mode {
    Passthrough,
    ToAnthropic(OpenAiToAnthropic),
    ToOpenAi(AnthropicToOpenAi),
    /// Gemini provider, OpenAI or Anthropic client.
    FromGemini(GeminiStream),
    /// Bedrock provider (binary event-stream, not SSE), OpenAI or
    /// Anthropic client.
    FromBedrock(Box<BedrockStream>),
    /// Responses client, any provider (through Chat chunks). It owns a
    /// whole inner translator, so feed/finish/fail/info delegate to it.
    ToResponses(Box<ResponsesStream>),
}

/// Translates a provider SSE stream (egress format) into the client's
/// (ingress format), one event at a time.
pub struct StreamTranslator {
    ingress: Format,
    egress: Format,
    parser: SseParser,
    mode: Mode,
    observed: Observed,
    /// Set by `fail`/`finish`: later input is ignored.
    closed: bool,
}

impl StreamTranslator {
    /// `include_usage`: the client's `stream_options.include_usage` (OpenAI
    /// ingress): emit the final usage chunk (`choices: []`) before `data: [DONE]`.
    pub fn new(ingress: Format, egress: Format, include_usage: bool) -> Self {
        let mode = match (ingress, egress) {
            (Format::AnthropicMessages, Format::OpenAiChat) => {
                Mode::ToAnthropic(OpenAiToAnthropic::default())
            }
            (Format::OpenAiChat, Format::AnthropicMessages) => {
                Mode::ToOpenAi(AnthropicToOpenAi::new(include_usage))
            }
            (Format::OpenAiChat | Format::AnthropicMessages, Format::Gemini) => {
                Mode::FromGemini(GeminiStream::new(ingress, include_usage))
            }
            (Format::OpenAiChat | Format::AnthropicMessages, Format::Bedrock) => {
                Mode::FromBedrock(Box::new(BedrockStream::new(ingress, include_usage)))
            }
            (Format::OpenAiResponses, egress) if egress != Format::OpenAiResponses => {
                Mode::ToResponses(Box::new(ResponsesStream::new(egress)))
            }
            _ => Mode::Passthrough,
        };
        StreamTranslator {
            ingress,
            egress,
            parser: SseParser::default(),
            mode,
            observed: Observed::default(),
            closed: false,
        }
    }

    /// The model sent upstream, for providers whose stream never names it
    /// (Bedrock's ConverseStream): it is reported in the translated events and
    /// in [`info`](Self::info).
    pub fn with_upstream_model(mut self, model: Option<&str>) -> Self {
        let Some(model) = model.filter(|m| !m.is_empty()) else {
            return self;
        };
        match &mut self.mode {
            Mode::FromBedrock(s) => {
                s.set_model(model);
                self.observed.model = Some(model.to_owned());
            }
            Mode::ToResponses(s) => s.set_upstream_model(model),
            _ if self.egress == Format::Bedrock => self.observed.model = Some(model.to_owned()),
            _ => {}
        }
        self
    }

    /// Returns the bytes to send to the client now (possibly empty). In
    /// passthrough mode this is the input chunk itself (no copy).
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.closed {
            return Bytes::new();
        }
        if let Mode::ToResponses(s) = &mut self.mode {
            return s.feed(chunk);
        }
        if let Mode::FromBedrock(s) = &mut self.mode {
            let mut out = Vec::new();
            s.feed(&chunk, &mut self.observed, &mut out);
            return Bytes::from(out);
        }
        let mut events = Vec::new();
        self.parser.feed(&chunk, &mut |e| events.push(e));
        let mut out = Vec::new();
        for e in events {
            self.handle(e, &mut out);
        }
        match self.mode {
            Mode::Passthrough => chunk,
            _ => Bytes::from(out),
        }
    }

    /// The upstream ended cleanly: flush anything pending (in translated
    /// mode, closing events, the usage chunk and `data: [DONE]` when the
    /// provider never sent them).
    pub fn finish(&mut self) -> Bytes {
        if self.closed {
            return Bytes::new();
        }
        if let Mode::ToResponses(s) = &mut self.mode {
            self.closed = true;
            return s.finish();
        }
        let mut events = Vec::new();
        self.parser.finish(&mut |e| events.push(e));
        let mut out = Vec::new();
        for e in events {
            self.handle(e, &mut out);
        }
        self.closed = true;
        match &mut self.mode {
            Mode::Passthrough => return Bytes::new(),
            Mode::ToAnthropic(s) => s.finish(&self.observed, &mut out),
            Mode::ToOpenAi(s) => s.finish(&self.observed, &mut out),
            Mode::FromGemini(s) => s.finish(&self.observed, &mut out),
            Mode::FromBedrock(s) => s.finish(&self.observed, &mut out),
            // Returned early above.
            Mode::ToResponses(_) => {}
        }
        Bytes::from(out)
    }

    /// The upstream broke mid-stream: an error event in the client's format.
    pub fn fail(&mut self, message: &str) -> Bytes {
        if self.closed {
            return Bytes::new();
        }
        self.closed = true;
        if let Mode::ToResponses(s) = &mut self.mode {
            return s.fail(message);
        }
        let mut out = Vec::new();
        write_stream_error(self.ingress, None, message, &mut out);
        Bytes::from(out)
    }

    /// Model, usage and completion text accumulated so far.
    pub fn info(&self) -> ResponseInfo {
        if let Mode::ToResponses(s) = &self.mode {
            return s.info();
        }
        ResponseInfo {
            model: self.observed.model.clone(),
            usage: self.observed.usage.clone(),
            completion: self.observed.completion.clone(),
        }
    }

    /// True once the first content token (text or tool-call delta) has
    /// passed through. Reasoning deltas do not count.
    pub fn saw_first_token(&self) -> bool {
        if let Mode::ToResponses(s) = &self.mode {
            return s.saw_first_token();
        }
        self.observed.first_token
    }

    fn handle(&mut self, event: SseEvent, out: &mut Vec<u8>) {
        match self.egress {
            Format::OpenAiChat => {
                if event.data.trim() == "[DONE]" {
                    if let Mode::ToAnthropic(s) = &mut self.mode {
                        s.finish(&self.observed, out);
                    }
                    return;
                }
                // Unparseable events are skipped: one bad event must not kill the stream.
                let Ok(chunk) = serde_json::from_str::<OaChunk>(&event.data) else {
                    return;
                };
                self.observed.observe_openai(&chunk);
                if let Mode::ToAnthropic(s) = &mut self.mode {
                    s.on_chunk(chunk, &self.observed, out);
                }
            }
            Format::AnthropicMessages => {
                let Ok(ev) = serde_json::from_str::<AnEvent>(&event.data) else {
                    return;
                };
                self.observed.observe_anthropic(&ev);
                if let Mode::ToOpenAi(s) = &mut self.mode {
                    s.on_event(ev, &self.observed, out);
                }
            }
            Format::Gemini => match &mut self.mode {
                Mode::FromGemini(s) => s.on_event(&event.data, &mut self.observed, out),
                _ => {
                    if let Ok(v) = serde_json::from_str(&event.data) {
                        crate::stream_gemini::observe(&v, &mut self.observed);
                    }
                }
            },
            // A provider's own Responses stream, forwarded as it is.
            Format::OpenAiResponses => self.observed.observe_responses(&event.data),
            // Decoded as event-stream frames in `feed`, never as SSE.
            Format::Bedrock => {}
        }
    }
}

/// Appends an in-stream error event in `format`'s framing.
pub(crate) fn write_stream_error(
    format: Format,
    kind: Option<&str>,
    message: &str,
    out: &mut Vec<u8>,
) {
    if format == Format::OpenAiResponses {
        // A provider's own Responses stream that broke off: its typed `error` event.
        // (Translated Responses streams write theirs in `stream_responses.rs`.)
        let body = serde_json::json!({
            "type": "error",
            "code": kind.unwrap_or("server_error"),
            "message": message,
            "param": null,
        });
        write_event(out, Some("error"), &body.to_string());
        return;
    }
    let body = stream_error_json(format, kind, message).to_string();
    match format {
        Format::OpenAiChat | Format::Gemini | Format::OpenAiResponses | Format::Bedrock => {
            write_event(out, None, &body)
        }
        Format::AnthropicMessages => write_event(out, Some("error"), &body),
    }
}
