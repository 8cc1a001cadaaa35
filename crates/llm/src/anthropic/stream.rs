//! Anthropic Messages event stream -> OpenAI `chat.completion.chunk` stream.
//!
//! Produces a role chunk first, then content / `reasoning_content` /
//! `tool_calls` deltas (id, type and name on the first delta of each tool
//! call, then argument fragments), the finish_reason chunk, the usage chunk
//! (`choices: []`) when the client asked for `include_usage`, and
//! `data: [DONE]`. Thinking signatures and redacted thinking travel in a
//! LiteLLM-style `thinking_blocks` delta field.

use serde::Serialize;
use serde_json::{json, Value};

use crate::anthropic::wire::{
    finish_reason_from_anthropic, AnBlockStart, AnDelta, AnEvent, AnUsage,
};
use crate::dialect::stream::{Observed, ProviderStream, SseEvents, SseStream};
use crate::pivot::{openai_usage_json, unix_now};
use crate::sse::write_event;
use crate::Format;

pub(crate) struct AnthropicToOpenAi {
    include_usage: bool,
    created: u64,
    id: String,
    started: bool,
    finished: bool,
    /// Anthropic content block index -> OpenAI tool_calls index.
    tools: Vec<(u64, u64)>,
}

impl AnthropicToOpenAi {
    pub fn new(include_usage: bool) -> Self {
        AnthropicToOpenAi {
            include_usage,
            created: unix_now(),
            id: String::new(),
            started: false,
            finished: false,
            tools: Vec::new(),
        }
    }

    pub fn on_event(&mut self, event: AnEvent, observed: &Observed, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        match event {
            AnEvent::MessageStart { message } => {
                if let Some(id) = message.id {
                    self.id = id;
                }
                self.ensure_started(observed, out);
            }
            AnEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                self.ensure_started(observed, out);
                match content_block {
                    AnBlockStart::Text { text } if !text.is_empty() => {
                        self.delta(observed, out, ContentDelta { content: &text });
                    }
                    AnBlockStart::ToolUse { id, name } => {
                        let tool_index = self.tools.len() as u64;
                        self.tools.push((index, tool_index));
                        self.delta(
                            observed,
                            out,
                            json!({ "tool_calls": [{
                                "index": tool_index, "id": id, "type": "function",
                                "function": { "name": name, "arguments": "" },
                            }]}),
                        );
                    }
                    AnBlockStart::Thinking { thinking } if !thinking.is_empty() => {
                        self.delta(observed, out, json!({ "reasoning_content": thinking }));
                    }
                    AnBlockStart::RedactedThinking { data } => {
                        self.delta(
                            observed,
                            out,
                            json!({
                                "thinking_blocks": [{ "type": "redacted_thinking", "data": data }],
                            }),
                        );
                    }
                    _ => {}
                }
            }
            AnEvent::ContentBlockDelta { index, delta } => {
                self.ensure_started(observed, out);
                match delta {
                    AnDelta::TextDelta { text } => {
                        self.delta(observed, out, ContentDelta { content: &text })
                    }
                    AnDelta::InputJsonDelta { partial_json } => {
                        let Some(&(_, tool_index)) = self.tools.iter().find(|(an, _)| *an == index)
                        else {
                            return;
                        };
                        self.delta(
                            observed,
                            out,
                            json!({ "tool_calls": [{
                                "index": tool_index, "function": { "arguments": partial_json },
                            }]}),
                        );
                    }
                    AnDelta::ThinkingDelta { thinking } => {
                        self.delta(observed, out, json!({ "reasoning_content": thinking }));
                    }
                    AnDelta::SignatureDelta { signature } => {
                        self.delta(observed, out, json!({
                            "thinking_blocks": [{ "type": "thinking", "thinking": "", "signature": signature }],
                        }));
                    }
                    AnDelta::Other => {}
                }
            }
            AnEvent::MessageDelta { delta, .. } => {
                if let Some(stop) = delta.stop_reason {
                    self.ensure_started(observed, out);
                    let finish = finish_reason_from_anthropic(&stop);
                    self.chunk(
                        observed,
                        out,
                        [ChoiceOut {
                            index: 0,
                            delta: Empty {},
                            logprobs: (),
                            finish_reason: Some(finish),
                        }],
                        None,
                    );
                }
            }
            AnEvent::MessageStop => self.finish(observed, out),
            AnEvent::Error { error } => {
                let message = error.message.as_deref().unwrap_or("upstream stream error");
                crate::openai::errors::write_stream_error(error.kind.as_deref(), message, out);
                self.finished = true;
            }
            AnEvent::ContentBlockStop { .. } | AnEvent::Ping | AnEvent::Other => {}
        }
    }

    /// message_stop or end of stream: usage chunk (if asked) and `[DONE]`.
    pub fn finish(&mut self, observed: &Observed, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.ensure_started(observed, out);
        if self.include_usage {
            self.chunk(
                observed,
                out,
                [(); 0],
                Some(openai_usage_json(&observed.usage)),
            );
        }
        write_event(out, None, "[DONE]");
        self.finished = true;
    }

    /// The provider's stream ended. Without its `message_stop` the answer was cut short: the
    /// client gets an error event, not a `[DONE]` that would make a truncated answer look
    /// complete.
    pub fn end_of_stream(&mut self, observed: &Observed, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.ensure_started(observed, out);
        crate::openai::errors::write_stream_error(
            None,
            "the provider's stream ended before its message_stop event; the answer is incomplete",
            out,
        );
        self.finished = true;
    }

    fn ensure_started(&mut self, observed: &Observed, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.delta(
            observed,
            out,
            RoleDelta {
                role: "assistant",
                content: "",
            },
        );
    }

    fn delta(&self, observed: &Observed, out: &mut Vec<u8>, delta: impl Serialize) {
        self.chunk(
            observed,
            out,
            [ChoiceOut {
                index: 0,
                delta,
                logprobs: (),
                finish_reason: None,
            }],
            None,
        );
    }

    /// Written straight from typed views: building `Value` trees per event was the
    /// main cost of a translated stream.
    fn chunk(
        &self,
        observed: &Observed,
        out: &mut Vec<u8>,
        choices: impl Serialize,
        usage: Option<Value>,
    ) {
        let chunk = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: observed.model.as_deref().unwrap_or_default(),
            choices,
            usage,
        };
        if let Ok(data) = serde_json::to_string(&chunk) {
            write_event(out, None, &data);
        }
    }
}

#[derive(Serialize)]
struct ChunkOut<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: C,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

#[derive(Serialize)]
struct ChoiceOut<D> {
    index: u64,
    delta: D,
    /// Always `null`: Anthropic has no log probabilities.
    logprobs: (),
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct RoleDelta {
    role: &'static str,
    content: &'static str,
}

#[derive(Serialize)]
struct ContentDelta<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct Empty {}

/// The Anthropic provider's stream for a client of `ingress`: observed,
/// and for OpenAI clients translated to Chat chunks.
pub(crate) fn stream_to(ingress: Format, include_usage: bool) -> Box<dyn ProviderStream> {
    SseStream::boxed(AnthropicEvents {
        to_openai: (ingress == Format::OpenAiChat).then(|| AnthropicToOpenAi::new(include_usage)),
        usage: AnUsage::default(),
    })
}

struct AnthropicEvents {
    /// `None`: the client gets the events as they are.
    to_openai: Option<AnthropicToOpenAi>,
    /// Cumulative usage: later events carry only some of the counts.
    usage: AnUsage,
}

impl SseEvents for AnthropicEvents {
    fn translates(&self) -> bool {
        self.to_openai.is_some()
    }

    fn on_event(&mut self, data: &str, observed: &mut Observed, out: &mut Vec<u8>) {
        // Unparseable events are skipped: one bad event must not kill the stream.
        let Ok(ev) = serde_json::from_str::<AnEvent>(data) else {
            return;
        };
        observe(&ev, &mut self.usage, observed);
        if let Some(s) = &mut self.to_openai {
            s.on_event(ev, observed, out);
        }
    }

    fn finish(&mut self, observed: &mut Observed, out: &mut Vec<u8>) {
        if let Some(s) = &mut self.to_openai {
            s.end_of_stream(observed, out);
        }
    }
}

/// Records model, usage, completion text and first token from one event.
fn observe(event: &AnEvent, usage: &mut AnUsage, observed: &mut Observed) {
    match event {
        AnEvent::MessageStart { message } => {
            if observed.model.is_none() {
                observed.model = message.model.clone();
            }
            if let Some(u) = &message.usage {
                usage.merge(u);
                observed.usage = usage.to_usage();
            }
        }
        AnEvent::MessageDelta { usage: Some(u), .. } => {
            usage.merge(u);
            observed.usage = usage.to_usage();
        }
        AnEvent::ContentBlockStart { content_block, .. } => match content_block {
            AnBlockStart::ToolUse { .. } => observed.first_token = true,
            AnBlockStart::Text { text } if !text.is_empty() => observed.push_text(text),
            _ => {}
        },
        AnEvent::ContentBlockDelta { delta, .. } => match delta {
            AnDelta::TextDelta { text } if !text.is_empty() => observed.push_text(text),
            AnDelta::InputJsonDelta { .. } => observed.first_token = true,
            _ => {}
        },
        _ => {}
    }
}
