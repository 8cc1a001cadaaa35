//! Small typed views of the Anthropic Messages wire format (only the fields
//! the gateway reads), its usage object and the stop-reason mapping.
//!
//! References: Anthropic Messages response and stream events
//! (<https://docs.anthropic.com/en/api/messages>,
//! <https://docs.anthropic.com/en/docs/build-with-claude/streaming>).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::Usage;

#[derive(Deserialize, Default, Clone, Debug)]
pub(crate) struct AnUsage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
}

impl AnUsage {
    pub fn to_usage(&self) -> Usage {
        let has_input = self.input_tokens.is_some()
            || self.cache_read_input_tokens.is_some()
            || self.cache_creation_input_tokens.is_some();
        Usage {
            input_tokens: has_input.then(|| {
                self.input_tokens.unwrap_or(0)
                    + self.cache_read_input_tokens.unwrap_or(0)
                    + self.cache_creation_input_tokens.unwrap_or(0)
            }),
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cache_read_input_tokens,
            reasoning_tokens: None,
        }
    }

    /// Later stream events carry cumulative counts: take every field present.
    pub fn merge(&mut self, newer: &AnUsage) {
        let take = |dst: &mut Option<u64>, src: Option<u64>| {
            if src.is_some() {
                *dst = src;
            }
        };
        take(&mut self.input_tokens, newer.input_tokens);
        take(&mut self.output_tokens, newer.output_tokens);
        take(
            &mut self.cache_read_input_tokens,
            newer.cache_read_input_tokens,
        );
        take(
            &mut self.cache_creation_input_tokens,
            newer.cache_creation_input_tokens,
        );
    }
}

/// Anthropic `usage` object built from neutral usage. Anthropic's
/// `input_tokens` excludes cache reads, OpenAI's `prompt_tokens` includes
/// them, hence the subtraction.
pub(crate) fn anthropic_usage_json(u: &Usage) -> Value {
    let cached = u.cached_input_tokens.unwrap_or(0);
    let mut obj = Map::new();
    obj.insert(
        "input_tokens".into(),
        u.input_tokens.unwrap_or(0).saturating_sub(cached).into(),
    );
    obj.insert("output_tokens".into(), u.output_tokens.unwrap_or(0).into());
    if u.cached_input_tokens.is_some() {
        obj.insert("cache_read_input_tokens".into(), cached.into());
    }
    Value::Object(obj)
}

/// Cheap view of a non-streaming Anthropic `message`.
#[derive(Deserialize, Default)]
pub(crate) struct AnResponseView {
    pub model: Option<String>,
    pub usage: Option<AnUsage>,
    #[serde(default)]
    pub content: Option<Vec<AnBlockView>>,
}

#[derive(Deserialize)]
pub(crate) struct AnBlockView {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub text: Option<String>,
}

impl AnResponseView {
    pub fn text(&self) -> String {
        self.content
            .iter()
            .flatten()
            .filter(|b| b.kind.as_deref() == Some("text"))
            .filter_map(|b| b.text.as_deref())
            .collect()
    }
}

/// Anthropic stream event, by its `type`. Parsed through flat views of
/// every field an event may carry rather than serde's internally tagged
/// enums, which buffer each event into an intermediate tree first (the
/// dominant cost of reading a stream).
#[derive(Deserialize, Debug)]
#[serde(from = "RawEvent")]
pub(crate) enum AnEvent {
    MessageStart {
        message: AnStartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: AnBlockStart,
    },
    ContentBlockDelta {
        index: u64,
        delta: AnDelta,
    },
    ContentBlockStop {
        #[allow(dead_code)]
        index: u64,
    },
    MessageDelta {
        delta: AnMessageDelta,
        usage: Option<AnUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: AnErrorBody,
    },
    Other,
}

#[derive(Deserialize, Debug, Default)]
pub(crate) struct AnStartMessage {
    pub id: Option<String>,
    pub model: Option<String>,
    pub usage: Option<AnUsage>,
}

#[derive(Debug)]
pub(crate) enum AnBlockStart {
    Text { text: String },
    ToolUse { id: String, name: String },
    Thinking { thinking: String },
    RedactedThinking { data: String },
    Other,
}

#[derive(Debug)]
pub(crate) enum AnDelta {
    TextDelta { text: String },
    InputJsonDelta { partial_json: String },
    ThinkingDelta { thinking: String },
    SignatureDelta { signature: String },
    Other,
}

/// Every field of every event type; `type` says which are meaningful.
#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type", default)]
    kind: String,
    message: Option<AnStartMessage>,
    index: Option<u64>,
    content_block: Option<RawBlock>,
    /// A content delta (`content_block_delta`) or a message delta (`message_delta`).
    delta: Option<RawDelta>,
    usage: Option<AnUsage>,
    error: Option<AnErrorBody>,
}

#[derive(Deserialize)]
struct RawBlock {
    #[serde(rename = "type", default)]
    kind: String,
    text: Option<String>,
    id: Option<String>,
    name: Option<String>,
    thinking: Option<String>,
    data: Option<String>,
}

#[derive(Deserialize)]
struct RawDelta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    partial_json: Option<String>,
    thinking: Option<String>,
    signature: Option<String>,
    stop_reason: Option<String>,
}

impl From<RawEvent> for AnEvent {
    fn from(e: RawEvent) -> Self {
        let index = e.index.unwrap_or(0);
        match e.kind.as_str() {
            "message_start" => AnEvent::MessageStart {
                message: e.message.unwrap_or_default(),
            },
            "content_block_start" => AnEvent::ContentBlockStart {
                index,
                content_block: e.content_block.map_or(AnBlockStart::Other, |b| {
                    match b.kind.as_str() {
                        "text" => AnBlockStart::Text {
                            text: b.text.unwrap_or_default(),
                        },
                        "tool_use" => AnBlockStart::ToolUse {
                            id: b.id.unwrap_or_default(),
                            name: b.name.unwrap_or_default(),
                        },
                        "thinking" => AnBlockStart::Thinking {
                            thinking: b.thinking.unwrap_or_default(),
                        },
                        "redacted_thinking" => AnBlockStart::RedactedThinking {
                            data: b.data.unwrap_or_default(),
                        },
                        _ => AnBlockStart::Other,
                    }
                }),
            },
            "content_block_delta" => AnEvent::ContentBlockDelta {
                index,
                delta: e.delta.map_or(AnDelta::Other, |d| match d.kind.as_deref() {
                    Some("text_delta") => AnDelta::TextDelta {
                        text: d.text.unwrap_or_default(),
                    },
                    Some("input_json_delta") => AnDelta::InputJsonDelta {
                        partial_json: d.partial_json.unwrap_or_default(),
                    },
                    Some("thinking_delta") => AnDelta::ThinkingDelta {
                        thinking: d.thinking.unwrap_or_default(),
                    },
                    Some("signature_delta") => AnDelta::SignatureDelta {
                        signature: d.signature.unwrap_or_default(),
                    },
                    _ => AnDelta::Other,
                }),
            },
            "content_block_stop" => AnEvent::ContentBlockStop { index },
            "message_delta" => AnEvent::MessageDelta {
                delta: AnMessageDelta {
                    stop_reason: e.delta.and_then(|d| d.stop_reason),
                },
                usage: e.usage,
            },
            "message_stop" => AnEvent::MessageStop,
            "ping" => AnEvent::Ping,
            "error" => AnEvent::Error {
                error: e.error.unwrap_or_default(),
            },
            _ => AnEvent::Other,
        }
    }
}

#[derive(Deserialize, Debug, Default)]
pub(crate) struct AnMessageDelta {
    pub stop_reason: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
pub(crate) struct AnErrorBody {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub message: Option<String>,
}

// ---------- stop reasons ----------

/// Anthropic `stop_reason` -> OpenAI `finish_reason`.
pub(crate) fn finish_reason_from_anthropic(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new.
        _ => "stop",
    }
}

/// OpenAI `finish_reason` -> Anthropic `stop_reason`.
pub(crate) fn stop_reason_from_openai(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}
