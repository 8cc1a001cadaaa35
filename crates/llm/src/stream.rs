//! Event-by-event stream translation.
//!
//! The provider's stream is decoded incrementally by its dialect's
//! `ProviderStream` (SSE through `sse.rs`, Bedrock's binary event-stream
//! frames); every event is observed for model/usage/completion text and,
//! when the formats differ, translated immediately into complete
//! client-format events. Nothing but a partial line (or frame) is held back.
//! Which stream runs is asked of the dialect table (`dialect::of`).
//!
//! References: OpenAI streaming chunks
//! (<https://platform.openai.com/docs/api-reference/chat/streaming>);
//! Anthropic stream events
//! (<https://docs.anthropic.com/en/docs/build-with-claude/streaming>).

use bytes::Bytes;

use crate::dialect::{table, ClientSide};
use crate::{Format, ResponseInfo};

/// Translates a provider stream (egress format) into the client's
/// (ingress format), one event at a time.
pub struct StreamTranslator {
    side: ClientSide,
    /// Set by `fail`/`finish`: later input is ignored.
    closed: bool,
}

impl StreamTranslator {
    /// `include_usage`: the client's `stream_options.include_usage` (OpenAI
    /// ingress): emit the final usage chunk (`choices: []`) before `data: [DONE]`.
    pub fn new(ingress: Format, egress: Format, include_usage: bool) -> Self {
        StreamTranslator {
            side: {
                let route = table::route(ingress, egress);
                route.client.stream(route, include_usage)
            },
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
        match &mut self.side {
            ClientSide::Provider(s) => s.set_upstream_model(model),
            ClientSide::Wrapped(s) => s.set_upstream_model(model),
        }
        self
    }

    /// Returns the bytes to send to the client now (possibly empty). In
    /// passthrough mode this is the input chunk itself (no copy).
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.closed {
            return Bytes::new();
        }
        match &mut self.side {
            ClientSide::Provider(s) => s.feed(chunk),
            ClientSide::Wrapped(s) => s.feed(chunk),
        }
    }

    /// The upstream ended cleanly: flush anything pending (in translated
    /// mode, closing events, the usage chunk and `data: [DONE]` when the
    /// provider never sent them).
    pub fn finish(&mut self) -> Bytes {
        if self.closed {
            return Bytes::new();
        }
        self.closed = true;
        match &mut self.side {
            ClientSide::Provider(s) => s.finish(),
            ClientSide::Wrapped(s) => s.finish(),
        }
    }

    /// The upstream broke mid-stream: an error event in the client's format.
    pub fn fail(&mut self, message: &str) -> Bytes {
        if self.closed {
            return Bytes::new();
        }
        self.closed = true;
        match &mut self.side {
            ClientSide::Provider(s) => s.fail(message),
            ClientSide::Wrapped(s) => s.fail(message),
        }
    }

    /// Model, usage and completion text accumulated so far.
    pub fn info(&self) -> ResponseInfo {
        match &self.side {
            ClientSide::Provider(s) => s.info(),
            ClientSide::Wrapped(s) => s.info(),
        }
    }

    /// True once the first content token (text or tool-call delta) has
    /// passed through. Reasoning deltas do not count.
    pub fn saw_first_token(&self) -> bool {
        match &self.side {
            ClientSide::Provider(s) => s.saw_first_token(),
            ClientSide::Wrapped(s) => s.saw_first_token(),
        }
    }
}
