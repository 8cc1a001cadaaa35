//! OpenAI `chat.completion.chunk` streams from the provider: observed for
//! model, usage and text, and for Anthropic clients fed into the Chat ->
//! Anthropic machine (`anthropic::client_stream`).

use crate::anthropic::client_stream::OpenAiToAnthropic;
use crate::dialect::stream::Observed;
use crate::dialect::stream::{ProviderStream, SseEvents, SseStream};
use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::pivot::{OaChunk, OaUsage};
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
        let Some(s) = &mut self.to_anthropic else {
            // The client gets the chunk's own bytes: only what is observed is read.
            if let Ok(chunk) = serde_json::from_str::<ChunkSeen>(data) {
                observed.observe_openai_seen(&chunk);
            }
            return;
        };
        let Ok(chunk) = serde_json::from_str::<OaChunk>(data) else {
            return;
        };
        observed.observe_openai(&chunk);
        s.on_chunk(chunk, observed, out);
    }

    fn finish(&mut self, observed: &mut Observed, out: &mut Vec<u8>) {
        if let Some(s) = &mut self.to_anthropic {
            s.finish(observed, out);
        }
    }
}

/// The fields of a chunk that [`Observed`] records, borrowed from the event where they need
/// no unescaping; everything else is skipped unread.
#[derive(Deserialize)]
struct ChunkSeen<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    model: Option<Cow<'a, str>>,
    usage: Option<OaUsage>,
    #[serde(borrow)]
    choices: Option<Vec<ChoiceSeen<'a>>>,
}

#[derive(Deserialize)]
struct ChoiceSeen<'a> {
    #[serde(default)]
    index: u64,
    #[serde(borrow)]
    delta: Option<DeltaSeen<'a>>,
}

#[derive(Deserialize)]
struct DeltaSeen<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    content: Option<Cow<'a, str>>,
    tool_calls: Option<Vec<IgnoredAny>>,
}

/// An optional string borrowed from the event unless it has escapes. serde borrows a
/// `Cow<str>` only when the field's type is exactly that; inside an `Option` it would
/// allocate every time.
fn borrowed_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Text>::deserialize(deserializer)?.map(|t| t.0))
}

impl Observed {
    pub(crate) fn observe_openai(&mut self, chunk: &OaChunk) {
        let choices = chunk.choices.iter().flatten().filter_map(|c| {
            let delta = c.delta.as_ref()?;
            let tools = delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty());
            Some((c.index, tools, delta.content.as_deref()))
        });
        self.observe_openai_parts(chunk.model.as_deref(), chunk.usage.as_ref(), choices);
    }

    fn observe_openai_seen(&mut self, chunk: &ChunkSeen) {
        let choices = chunk.choices.iter().flatten().filter_map(|c| {
            let delta = c.delta.as_ref()?;
            let tools = delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty());
            Some((c.index, tools, delta.content.as_deref()))
        });
        self.observe_openai_parts(chunk.model.as_deref(), chunk.usage.as_ref(), choices);
    }

    /// `choices`: per choice with a delta, its index, whether it has tool calls, its text.
    fn observe_openai_parts<'t>(
        &mut self,
        model: Option<&str>,
        usage: Option<&OaUsage>,
        choices: impl Iterator<Item = (u64, bool, Option<&'t str>)>,
    ) {
        if self.model.is_none() {
            self.model = model.filter(|m| !m.is_empty()).map(str::to_owned);
        }
        if let Some(u) = usage {
            self.usage = u.to_usage();
        }
        for (index, tool_calls, text) in choices {
            if tool_calls {
                self.first_token = true;
            }
            let text = text.unwrap_or_default();
            if !text.is_empty() {
                self.first_token = true;
                if let Some(c) = self.completion_mut(index) {
                    crate::push_capped(c, text, crate::recorded_text_cap());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_chunk_texts_are_borrowed_unless_escaped() {
        let chunk: ChunkSeen = serde_json::from_str(
            r#"{"id":"x","model":"m-1","choices":[{"index":0,"delta":{"content":"plain"}},
               {"index":1,"delta":{"content":"a\"b","tool_calls":[{}]}},{"index":2}]}"#,
        )
        .unwrap();
        assert!(matches!(chunk.model, Some(Cow::Borrowed("m-1"))));
        let choices = chunk.choices.unwrap();
        let content = |i: usize| choices[i].delta.as_ref().and_then(|d| d.content.clone());
        assert!(matches!(content(0), Some(Cow::Borrowed("plain"))));
        assert_eq!(content(1).as_deref(), Some("a\"b"));
        assert!(choices[1].delta.as_ref().unwrap().tool_calls.is_some());
        assert!(choices[2].delta.is_none());
        // Every field may be missing or null.
        let empty: ChunkSeen =
            serde_json::from_str(r#"{"model":null,"choices":[{"delta":{}}]}"#).unwrap();
        assert!(empty.model.is_none() && empty.usage.is_none());
    }
}
