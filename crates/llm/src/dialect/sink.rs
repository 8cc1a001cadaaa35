//! Where a provider's Chat chunks go, stream finishing included.

use serde_json::Value;

use crate::anthropic::client_stream::OpenAiToAnthropic;
use crate::dialect::stream::Observed;
use crate::pivot::{openai_usage_json, OaChunk};
use crate::sse::write_event;
use crate::Format;

/// Where a provider's Chat chunks (the pivot) go, for providers whose
/// streams are translated to Chat first (Gemini, Bedrock): written as they
/// are for OpenAI clients, fed into the Chat -> Anthropic machine for
/// Anthropic clients.
pub(crate) enum ChunkSink {
    OpenAi { include_usage: bool },
    Anthropic(Box<OpenAiToAnthropic>),
}

impl ChunkSink {
    pub(crate) fn new(ingress: Format, include_usage: bool) -> Self {
        match ingress {
            Format::AnthropicMessages => ChunkSink::Anthropic(Box::default()),
            _ => ChunkSink::OpenAi { include_usage },
        }
    }

    pub(crate) fn is_openai(&self) -> bool {
        matches!(self, ChunkSink::OpenAi { .. })
    }

    pub(crate) fn emit(&mut self, chunk: Value, observed: &Observed, out: &mut Vec<u8>) {
        match self {
            ChunkSink::OpenAi { .. } => write_event(out, None, &chunk.to_string()),
            ChunkSink::Anthropic(to_anthropic) => {
                // The chunk was built by the provider's translator, so it
                // always fits the view.
                if let Ok(chunk) = serde_json::from_value::<OaChunk>(chunk) {
                    to_anthropic.on_chunk(chunk, observed, out);
                }
            }
        }
    }

    /// The end of the client's stream: for OpenAI clients the usage chunk
    /// (when asked; `empty_chunk` makes one with `choices: []`) and
    /// `[DONE]`, for Anthropic clients the closing events.
    pub(crate) fn finish(
        &mut self,
        empty_chunk: impl FnOnce() -> Value,
        observed: &Observed,
        out: &mut Vec<u8>,
    ) {
        match self {
            ChunkSink::OpenAi { include_usage } => {
                if *include_usage {
                    let mut usage = empty_chunk();
                    usage["usage"] = openai_usage_json(&observed.usage);
                    write_event(out, None, &usage.to_string());
                }
                write_event(out, None, "[DONE]");
            }
            ChunkSink::Anthropic(to_anthropic) => to_anthropic.finish(observed, out),
        }
    }
}
