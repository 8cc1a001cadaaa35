//! Small typed views of the wire formats (only the fields the gateway reads),
//! plus the mappings shared by responses and streams: usage and stop reasons.
//!
//! References: OpenAI `chat.completion` / `chat.completion.chunk` objects
//! (<https://platform.openai.com/docs/api-reference/chat/object>,
//! <https://platform.openai.com/docs/api-reference/chat/streaming>); Anthropic
//! Messages response and stream events
//! (<https://docs.anthropic.com/en/api/messages>,
//! <https://docs.anthropic.com/en/docs/build-with-claude/streaming>).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::Usage;

// ---------- OpenAI ----------

#[derive(Deserialize, Default, Clone, Debug)]
pub(crate) struct OaUsage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub prompt_tokens_details: Option<OaPromptDetails>,
    pub completion_tokens_details: Option<OaCompletionDetails>,
}

#[derive(Deserialize, Default, Clone, Debug)]
pub(crate) struct OaPromptDetails {
    pub cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Debug)]
pub(crate) struct OaCompletionDetails {
    pub reasoning_tokens: Option<u64>,
}

impl OaUsage {
    pub fn to_usage(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens,
            cached_input_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

/// Text content of an OpenAI message: a string, or (some compatible servers)
/// an array of text parts.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(crate) enum OaContent {
    Text(String),
    Parts(Vec<OaTextPart>),
}

#[derive(Deserialize, Debug, Clone)]
pub(crate) struct OaTextPart {
    pub text: Option<String>,
}

impl OaContent {
    pub fn text(&self) -> String {
        match self {
            OaContent::Text(s) => s.clone(),
            OaContent::Parts(p) => p.iter().filter_map(|p| p.text.as_deref()).collect(),
        }
    }
}

/// Cheap view of a non-streaming `chat.completion`.
#[derive(Deserialize, Default)]
pub(crate) struct OaResponseView {
    pub model: Option<String>,
    pub usage: Option<OaUsage>,
    #[serde(default)]
    pub choices: Option<Vec<OaChoiceView>>,
}

#[derive(Deserialize)]
pub(crate) struct OaChoiceView {
    pub message: Option<OaMessageView>,
}

#[derive(Deserialize)]
pub(crate) struct OaMessageView {
    pub content: Option<OaContent>,
}

/// One `chat.completion.chunk` (or an in-stream `{"error":...}` object).
#[derive(Deserialize, Default, Debug)]
pub(crate) struct OaChunk {
    pub id: Option<String>,
    pub model: Option<String>,
    pub choices: Option<Vec<OaChunkChoice>>,
    pub usage: Option<OaUsage>,
    pub error: Option<Value>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct OaChunkChoice {
    #[serde(default)]
    pub index: u64,
    pub delta: Option<OaDelta>,
    pub finish_reason: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
pub(crate) struct OaDelta {
    pub content: Option<String>,
    pub refusal: Option<String>,
    /// vLLM / DeepSeek convention for reasoning text.
    pub reasoning_content: Option<String>,
    /// Alternative spelling used by some OpenAI-compatible servers.
    pub reasoning: Option<String>,
    pub tool_calls: Option<Vec<OaToolCallDelta>>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct OaToolCallDelta {
    #[serde(default)]
    pub index: u64,
    pub id: Option<String>,
    pub function: Option<OaFunctionDelta>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct OaFunctionDelta {
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// OpenAI `usage` object built from neutral usage.
pub(crate) fn openai_usage_json(u: &Usage) -> Value {
    let prompt = u.input_tokens.unwrap_or(0);
    let completion = u.output_tokens.unwrap_or(0);
    let mut obj = Map::new();
    obj.insert("prompt_tokens".into(), prompt.into());
    obj.insert("completion_tokens".into(), completion.into());
    obj.insert("total_tokens".into(), (prompt + completion).into());
    if let Some(c) = u.cached_input_tokens {
        obj.insert(
            "prompt_tokens_details".into(),
            json!({ "cached_tokens": c }),
        );
    }
    if let Some(r) = u.reasoning_tokens {
        obj.insert(
            "completion_tokens_details".into(),
            json!({ "reasoning_tokens": r }),
        );
    }
    Value::Object(obj)
}

// ---------- Anthropic ----------

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

/// Anthropic stream event, by its `type`.
#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
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
        #[serde(default)]
        delta: AnMessageDelta,
        usage: Option<AnUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: AnErrorBody,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Debug, Default)]
pub(crate) struct AnStartMessage {
    pub id: Option<String>,
    pub model: Option<String>,
    pub usage: Option<AnUsage>,
}

#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum AnBlockStart {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum AnDelta {
    TextDelta {
        #[serde(default)]
        text: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    ThinkingDelta {
        #[serde(default)]
        thinking: String,
    },
    SignatureDelta {
        #[serde(default)]
        signature: String,
    },
    #[serde(other)]
    Other,
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

/// Seconds since the Unix epoch, for OpenAI's required `created` field
/// (Anthropic responses carry no timestamp).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
