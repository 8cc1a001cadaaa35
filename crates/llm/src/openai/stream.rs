//! OpenAI `chat.completion.chunk` streams from the provider: observed for
//! model, usage and text, and for Anthropic clients fed into the Chat ->
//! Anthropic machine (`anthropic::client_stream`).

use crate::anthropic::client_stream::OpenAiToAnthropic;
use crate::dialect::stream::Observed;
use crate::dialect::stream::{ProviderStream, SseEvents, SseStream};
use crate::pivot::OaChunk;
use crate::Format;

/// The Chat provider's stream for a client of `ingress`.
pub(crate) fn stream_to(ingress: Format) -> Box<dyn ProviderStream> {
    SseStream::boxed(ChatEvents {
        to_anthropic: (ingress == Format::AnthropicMessages).then(OpenAiToAnthropic::default),
    })
}

struct ChatEvents {
    /// `None`: the client gets the chunks as they are.
    to_anthropic: Option<OpenAiToAnthropic>,
}

impl SseEvents for ChatEvents {
    fn translates(&self) -> bool {
        self.to_anthropic.is_some()
    }

    fn on_event(&mut self, data: &str, observed: &mut Observed, out: &mut Vec<u8>) {
        if data.trim() == "[DONE]" {
            if let Some(s) = &mut self.to_anthropic {
                s.finish(observed, out);
            }
            return;
        }
        // Unparseable events are skipped: one bad event must not kill the stream.
        let Ok(chunk) = serde_json::from_str::<OaChunk>(data) else {
            return;
        };
        observed.observe_openai(&chunk);
        if let Some(s) = &mut self.to_anthropic {
            s.on_chunk(chunk, observed, out);
        }
    }

    fn finish(&mut self, observed: &mut Observed, out: &mut Vec<u8>) {
        if let Some(s) = &mut self.to_anthropic {
            s.finish(observed, out);
        }
    }
}

impl Observed {
    pub(crate) fn observe_openai(&mut self, chunk: &OaChunk) {
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
                    crate::push_capped(c, text, crate::recorded_text_cap());
                }
            }
        }
    }
}
