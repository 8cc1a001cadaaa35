//! OpenAI `chat.completion.chunk` stream -> Anthropic Messages event stream.
//!
//! Produces `message_start`, then per content block `content_block_start` /
//! `content_block_delta` / `content_block_stop` (thinking, text, and one
//! `tool_use` block per OpenAI tool-call `index`), then `message_delta`
//! (stop_reason, usage) and `message_stop`. The final `message_delta` waits
//! for `[DONE]` (or the end of the stream) because OpenAI sends usage in a
//! separate chunk after the finish_reason chunk.

use serde_json::{json, Value};

use crate::anthropic::wire::{anthropic_usage_json, stop_reason_from_openai};
use crate::dialect::stream::Observed;
use crate::pivot::{unix_now, OaChunk};
use crate::sse::write_event;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Block {
    Text,
    Thinking,
    /// A tool_use block for this OpenAI tool-call index.
    Tool(u64),
}

#[derive(Default)]
pub(crate) struct OpenAiToAnthropic {
    started: bool,
    finished: bool,
    next_index: u64,
    /// The content block currently open: (Anthropic index, kind).
    open: Option<(u64, Block)>,
    /// OpenAI tool-call index -> Anthropic content block index.
    tools: Vec<(u64, u64)>,
    stop_reason: Option<&'static str>,
}

fn emit(out: &mut Vec<u8>, kind: &str, data: Value) {
    write_event(out, Some(kind), &data.to_string());
}

impl OpenAiToAnthropic {
    pub fn on_chunk(&mut self, chunk: OaChunk, observed: &Observed, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        if let Some((kind, message)) = chunk.error_parts() {
            crate::anthropic::errors::write_stream_error(kind, message, out);
            self.finished = true;
            return;
        }
        self.ensure_started(chunk.id.as_deref(), observed, out);
        // Only choice 0: Anthropic messages have a single choice (README).
        for choice in chunk.choices.into_iter().flatten().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                let reasoning = delta
                    .reasoning_content
                    .or(delta.reasoning)
                    .unwrap_or_default();
                if !reasoning.is_empty() {
                    self.ensure_block(Block::Thinking, None, out);
                    let index = self.open_index();
                    emit(
                        out,
                        "content_block_delta",
                        json!({
                            "type": "content_block_delta", "index": index,
                            "delta": { "type": "thinking_delta", "thinking": reasoning },
                        }),
                    );
                }
                for text in [delta.content, delta.refusal]
                    .into_iter()
                    .flatten()
                    .filter(|t| !t.is_empty())
                {
                    self.ensure_block(Block::Text, None, out);
                    let index = self.open_index();
                    emit(
                        out,
                        "content_block_delta",
                        json!({
                            "type": "content_block_delta", "index": index,
                            "delta": { "type": "text_delta", "text": text },
                        }),
                    );
                }
                for call in delta.tool_calls.into_iter().flatten() {
                    let known = self
                        .tools
                        .iter()
                        .find(|(oa, _)| *oa == call.index)
                        .map(|&(_, an)| an);
                    let (name, args) = match call.function {
                        Some(f) => (f.name, f.arguments),
                        None => (None, None),
                    };
                    let index = match known {
                        Some(an) => an,
                        None => {
                            let id = call.id.unwrap_or_else(|| {
                                format!("toolu_gw_{}_{}", unix_now(), call.index)
                            });
                            let start = json!({ "type": "tool_use", "id": id, "name": name.unwrap_or_default(), "input": {} });
                            self.ensure_block(Block::Tool(call.index), Some(start), out);
                            let an = self.open_index();
                            self.tools.push((call.index, an));
                            an
                        }
                    };
                    // Fragments go out intact. If OpenAI interleaves calls and
                    // this block was already closed, the delta still targets
                    // its own index (SDKs accumulate by index).
                    if let Some(args) = args.filter(|a| !a.is_empty()) {
                        emit(
                            out,
                            "content_block_delta",
                            json!({
                                "type": "content_block_delta", "index": index,
                                "delta": { "type": "input_json_delta", "partial_json": args },
                            }),
                        );
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.stop_reason = Some(stop_reason_from_openai(&reason));
                self.close_block(out);
            }
        }
    }

    /// `[DONE]` or end of stream: close everything with the usage seen.
    pub fn finish(&mut self, observed: &Observed, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.ensure_started(None, observed, out);
        self.close_block(out);
        emit(
            out,
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": { "stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null },
                "usage": anthropic_usage_json(&observed.usage),
            }),
        );
        emit(out, "message_stop", json!({ "type": "message_stop" }));
        self.finished = true;
    }

    fn ensure_started(&mut self, id: Option<&str>, observed: &Observed, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = id
            .map(str::to_owned)
            .unwrap_or_else(|| format!("msg_gw_{}", unix_now()));
        emit(
            out,
            "message_start",
            json!({
                "type": "message_start",
                "message": {
                    "id": id, "type": "message", "role": "assistant",
                    "model": observed.model.clone().unwrap_or_default(),
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    // OpenAI reports usage only at the end; the final message_delta carries it.
                    "usage": { "input_tokens": 0, "output_tokens": 0 },
                },
            }),
        );
    }

    fn open_index(&self) -> u64 {
        self.open.map(|(i, _)| i).unwrap_or(0)
    }

    /// Makes `kind` the open block, closing another one first.
    fn ensure_block(&mut self, kind: Block, start: Option<Value>, out: &mut Vec<u8>) {
        if matches!(self.open, Some((_, k)) if k == kind) {
            return;
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        let block = start.unwrap_or_else(|| match kind {
            Block::Thinking => json!({ "type": "thinking", "thinking": "", "signature": "" }),
            _ => json!({ "type": "text", "text": "" }),
        });
        emit(
            out,
            "content_block_start",
            json!({
                "type": "content_block_start", "index": index, "content_block": block,
            }),
        );
        self.open = Some((index, kind));
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            emit(
                out,
                "content_block_stop",
                json!({ "type": "content_block_stop", "index": index }),
            );
        }
    }
}
