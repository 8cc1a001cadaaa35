//! The streamed form of a Messages response.
//!
//! Per "Streaming Messages" (<https://docs.claude.com/en/docs/build-with-claude/streaming>):
//! SSE events framed `event: <type>\ndata: <json>\n\n`, in the order `message_start` (the message
//! with empty `content`), then for each content block `content_block_start`, its
//! `content_block_delta`s and `content_block_stop` (a `ping` follows the first block start, as in
//! the documented example), then `message_delta` (`stop_reason`, `stop_sequence`, cumulative
//! `usage.output_tokens`) and `message_stop`. Delta types: `text_delta` for text,
//! `thinking_delta` then one `signature_delta` for thinking, `input_json_delta` fragments (partial
//! JSON strings that concatenate to the tool input) for `tool_use`.

use std::time::Duration;

use serde_json::{json, Value};

use super::Block;
use crate::body::{sse_event, Paced, Pacer};

/// How many `input_json_delta` fragments a tool input is split into.
const INPUT_FRAGMENTS: usize = 4;

pub(crate) struct MessageStart<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub usage: Value,
}

pub(crate) struct MessageEnd<'a> {
    pub stop_reason: &'a str,
    pub stop_sequence: Option<&'a str>,
    pub output_tokens: u64,
}

/// The full event sequence for a reply made of `blocks`.
pub(crate) fn events(
    start: &MessageStart,
    blocks: &[Block],
    end: &MessageEnd,
    mut pacer: Pacer,
) -> Vec<Paced> {
    let mut out = Vec::new();
    let mut push = |delay: Duration, data: Value| {
        let kind = data["type"].as_str().unwrap_or_default().to_string();
        out.push(Paced {
            delay,
            data: sse_event(&kind, &data),
        });
    };
    let zero = Duration::ZERO;
    push(
        zero,
        json!({"type": "message_start", "message": {
            "id": start.id, "type": "message", "role": "assistant", "model": start.model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": start.usage
        }}),
    );
    for (index, block) in blocks.iter().enumerate() {
        let opening = match block {
            Block::Thinking { .. } => json!({"type": "thinking", "thinking": ""}),
            Block::Text(_) => json!({"type": "text", "text": ""}),
            Block::ToolUse { id, name, .. } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": {}})
            }
        };
        push(
            zero,
            json!({"type": "content_block_start", "index": index, "content_block": opening}),
        );
        if index == 0 {
            push(zero, json!({"type": "ping"}));
        }
        let delta =
            |delta: Value| json!({"type": "content_block_delta", "index": index, "delta": delta});
        match block {
            Block::Thinking {
                thinking,
                signature,
            } => {
                for piece in crate::stream_pieces(thinking) {
                    push(
                        pacer.token(),
                        delta(json!({"type": "thinking_delta", "thinking": piece})),
                    );
                }
                push(
                    zero,
                    delta(json!({"type": "signature_delta", "signature": signature})),
                );
            }
            Block::Text(text) => {
                for piece in crate::stream_pieces(text) {
                    push(
                        pacer.token(),
                        delta(json!({"type": "text_delta", "text": piece})),
                    );
                }
            }
            Block::ToolUse { input, .. } => {
                for fragment in crate::split_fragments(&input.to_string(), INPUT_FRAGMENTS) {
                    push(
                        pacer.token(),
                        delta(json!({"type": "input_json_delta", "partial_json": fragment})),
                    );
                }
            }
        }
        push(zero, json!({"type": "content_block_stop", "index": index}));
    }
    push(
        zero,
        json!({"type": "message_delta",
               "delta": {"stop_reason": end.stop_reason, "stop_sequence": end.stop_sequence},
               "usage": {"output_tokens": end.output_tokens}}),
    );
    push(zero, json!({"type": "message_stop"}));
    out
}
