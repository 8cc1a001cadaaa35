//! What the simulated Bedrock model answers: `Converse` request validation, the deterministic
//! reply, and its `Converse` response / `ConverseStream` event forms.
//!
//! Shapes per the Bedrock API reference
//! (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>,
//! <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html>):
//! `output.message.content[]` with `text`, `toolUse {toolUseId, name, input}` and
//! `reasoningContent {reasoningText {text, signature}}` blocks; `stopReason`; `usage {inputTokens,
//! outputTokens, totalTokens, cacheReadInputTokens}`; `metrics {latencyMs}`. Streamed:
//! `messageStart`, per block `contentBlockStart` (tool use only) / `contentBlockDelta` /
//! `contentBlockStop`, `messageStop`, `metadata`. Real events carry a random `p` padding field;
//! so do these.

use serde_json::{json, Map, Value};

use crate::body::Pacer;
use crate::tools::{self, ToolChoice, ToolDef};
use crate::{count_tokens, cut_at_stop, echo_reply, split_fragments, stable_hash, stream_pieces};

/// The parts of a `Converse` request the simulator acts on, validated.
pub(crate) struct ConverseRequest {
    system_text: String,
    /// The system prompt ends in a `cachePoint`: its tokens count as read from the cache.
    system_cached: bool,
    messages: Vec<Value>,
    tools: Vec<ToolDef>,
    tool_choice: ToolChoice,
    max_tokens: Option<u64>,
    stop_sequences: Vec<String>,
    /// `additionalModelRequestFields.thinking.type == "enabled"` (Anthropic models).
    thinking: bool,
}

/// Text of the `text` blocks of a content array.
fn blocks_text(blocks: Option<&Value>) -> String {
    blocks
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConverseRequest {
    /// Validates `body`; the error is the `ValidationException` message.
    pub fn parse(body: &Value) -> Result<Self, String> {
        let messages = match body.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => m.clone(),
            _ => return Err("The messages field is required and must not be empty.".into()),
        };
        let mut previous = None;
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str);
            if !matches!(role, Some("user" | "assistant")) {
                return Err(format!(
                    "1 validation error detected: Value at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                    i + 1
                ));
            }
            let content = m.get("content").and_then(Value::as_array);
            if content.is_none_or(Vec::is_empty) {
                return Err(format!(
                    "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
                ));
            }
            if previous == role {
                return Err("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".into());
            }
            previous = role;
        }
        if messages[0].get("role").and_then(Value::as_str) != Some("user") {
            return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".into());
        }
        let system = body.get("system");
        let tool_config = body.get("toolConfig");
        let tools = tool_config
            .and_then(|c| c.get("tools"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("toolSpec"))
            .filter_map(|spec| {
                Some(ToolDef {
                    name: spec.get("name")?.as_str()?.to_string(),
                    schema: spec
                        .get("inputSchema")
                        .and_then(|s| s.get("json"))
                        .cloned()
                        .unwrap_or(Value::Null),
                })
            })
            .collect();
        let choice = tool_config.and_then(|c| c.get("toolChoice"));
        let tool_choice = match choice {
            Some(c) if c.get("any").is_some() => ToolChoice::Required,
            Some(c) => match c
                .get("tool")
                .and_then(|t| t.get("name"))
                .and_then(Value::as_str)
            {
                Some(name) => ToolChoice::Named(name.to_string()),
                None => ToolChoice::Auto,
            },
            None => ToolChoice::Auto,
        };
        let inference = body.get("inferenceConfig");
        Ok(ConverseRequest {
            system_text: blocks_text(system),
            system_cached: system
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|b| b.get("cachePoint").is_some())),
            messages,
            tools,
            tool_choice,
            max_tokens: inference
                .and_then(|c| c.get("maxTokens"))
                .and_then(Value::as_u64),
            stop_sequences: inference
                .and_then(|c| c.get("stopSequences"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            thinking: body
                .get("additionalModelRequestFields")
                .and_then(|f| f.get("thinking"))
                .and_then(|t| t.get("type"))
                .and_then(Value::as_str)
                == Some("enabled"),
        })
    }

    fn last_user_blocks(&self) -> &[Value] {
        self.messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_array())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Tokens of every text, tool use and tool result in the prompt.
    fn prompt_tokens(&self) -> u64 {
        let blocks = self
            .messages
            .iter()
            .filter_map(|m| m["content"].as_array())
            .flatten();
        let mut tokens = 0;
        for b in blocks {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                tokens += count_tokens(t);
            } else if let Some(tool) = b.get("toolUse") {
                tokens += count_tokens(&tool["input"].to_string());
            } else if let Some(result) = b.get("toolResult") {
                tokens += count_tokens(&result_text(result));
            }
        }
        tokens
    }
}

/// The text of a `toolResult`: its `text` blocks and `json` blocks (serialised).
fn result_text(result: &Value) -> String {
    result["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.get("text")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| c.get("json").map(Value::to_string))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The deterministic answer.
pub(crate) struct Answer {
    reasoning: Option<(String, String)>,
    text: String,
    /// (toolUseId, name, input).
    calls: Vec<(String, String, Value)>,
    stop_reason: &'static str,
    input_tokens: u64,
    cache_read_tokens: Option<u64>,
    output_tokens: u64,
}

pub(crate) fn reply(req: &ConverseRequest, request_id: &str) -> Answer {
    let blocks = req.last_user_blocks();
    let results: Vec<String> = blocks
        .iter()
        .filter_map(|b| b.get("toolResult"))
        .map(result_text)
        .collect();
    let user_text = blocks_text(Some(&Value::Array(blocks.to_vec())));
    let calls: Vec<(String, String, Value)> = if results.is_empty() {
        tools::plan_calls(&req.tools, &req.tool_choice, &user_text)
            .into_iter()
            .enumerate()
            .map(|(i, c)| (format!("tooluse_{request_id}_{i}"), c.name, c.arguments))
            .collect()
    } else {
        Vec::new()
    };
    let mut text = if !results.is_empty() {
        tools::reply_to_tool_results(&results)
    } else if calls.is_empty() {
        echo_reply(&user_text)
    } else {
        String::new()
    };
    let mut stop_reason = if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    if let Some((cut, _)) = cut_at_stop(&text, &req.stop_sequences) {
        text = cut;
        stop_reason = "stop_sequence";
    }
    if let Some(max) = req.max_tokens {
        if let Some(cut) = crate::truncate_to_tokens(&text, max) {
            text = cut;
            stop_reason = "max_tokens";
        }
    }
    let reasoning = req.thinking.then(|| {
        let thought = format!("Thinking about: {user_text}");
        let signature = crate::base64(&stable_hash(thought.as_bytes()).to_be_bytes());
        (thought, signature)
    });
    let system_tokens = count_tokens(&req.system_text);
    let output_tokens = count_tokens(&text)
        + reasoning.as_ref().map_or(0, |(t, _)| count_tokens(t))
        + calls
            .iter()
            .map(|(_, _, input)| count_tokens(&input.to_string()))
            .sum::<u64>();
    Answer {
        reasoning,
        text,
        calls,
        stop_reason,
        // Bedrock's inputTokens excludes what was read from the cache.
        input_tokens: req.prompt_tokens() + if req.system_cached { 0 } else { system_tokens },
        cache_read_tokens: req.system_cached.then_some(system_tokens),
        output_tokens,
    }
}

fn usage_json(answer: &Answer) -> Value {
    let mut usage = Map::new();
    usage.insert("inputTokens".into(), answer.input_tokens.into());
    usage.insert("outputTokens".into(), answer.output_tokens.into());
    usage.insert(
        "totalTokens".into(),
        (answer.input_tokens + answer.output_tokens + answer.cache_read_tokens.unwrap_or(0)).into(),
    );
    if let Some(read) = answer.cache_read_tokens {
        usage.insert("cacheReadInputTokens".into(), read.into());
        usage.insert("cacheWriteInputTokens".into(), 0.into());
    }
    Value::Object(usage)
}

/// The whole `Converse` response.
pub(crate) fn response_json(answer: &Answer) -> Value {
    let mut content = Vec::new();
    if let Some((text, signature)) = &answer.reasoning {
        content.push(
            json!({"reasoningContent": {"reasoningText": {"text": text, "signature": signature}}}),
        );
    }
    if !answer.text.is_empty() || answer.calls.is_empty() {
        content.push(json!({"text": answer.text}));
    }
    for (id, name, input) in &answer.calls {
        content.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
    }
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": answer.stop_reason,
        "usage": usage_json(answer),
        "metrics": {"latencyMs": 1},
    })
}

/// Padding like the `p` field real ConverseStream events carry (its length varies so event sizes
/// do not reveal token lengths).
fn padded(mut event: Value, n: usize) -> Value {
    const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    if let Some(o) = event.as_object_mut() {
        o.insert("p".into(), LETTERS[..(n % LETTERS.len()) + 1].into());
    }
    event
}

/// `(delay, event type, payload)` of each `ConverseStream` event.
pub(crate) fn stream_events(
    answer: &Answer,
    mut pacer: Pacer,
) -> Vec<(std::time::Duration, &'static str, Value)> {
    let mut events = Vec::new();
    let mut push = |delay, kind, payload: Value| {
        let n = events.len();
        events.push((delay, kind, padded(payload, n)));
    };
    push(
        std::time::Duration::ZERO,
        "messageStart",
        json!({"role": "assistant"}),
    );
    let mut index = 0u64;
    if let Some((text, signature)) = &answer.reasoning {
        for piece in stream_pieces(text) {
            let delta =
                json!({"contentBlockIndex": index, "delta": {"reasoningContent": {"text": piece}}});
            push(pacer.token(), "contentBlockDelta", delta);
        }
        let delta = json!({"contentBlockIndex": index, "delta": {"reasoningContent": {"signature": signature}}});
        push(std::time::Duration::ZERO, "contentBlockDelta", delta);
        push(
            std::time::Duration::ZERO,
            "contentBlockStop",
            json!({"contentBlockIndex": index}),
        );
        index += 1;
    }
    if !answer.text.is_empty() {
        for piece in stream_pieces(&answer.text) {
            let delta = json!({"contentBlockIndex": index, "delta": {"text": piece}});
            push(pacer.token(), "contentBlockDelta", delta);
        }
        push(
            std::time::Duration::ZERO,
            "contentBlockStop",
            json!({"contentBlockIndex": index}),
        );
        index += 1;
    }
    for (id, name, input) in &answer.calls {
        let start = json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": id, "name": name}}});
        push(pacer.token(), "contentBlockStart", start);
        for fragment in split_fragments(&input.to_string(), 3) {
            let delta =
                json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": fragment}}});
            push(pacer.token(), "contentBlockDelta", delta);
        }
        push(
            std::time::Duration::ZERO,
            "contentBlockStop",
            json!({"contentBlockIndex": index}),
        );
        index += 1;
    }
    push(
        std::time::Duration::ZERO,
        "messageStop",
        json!({"stopReason": answer.stop_reason}),
    );
    push(
        std::time::Duration::ZERO,
        "metadata",
        json!({"usage": usage_json(answer), "metrics": {"latencyMs": 1}}),
    );
    events
}
