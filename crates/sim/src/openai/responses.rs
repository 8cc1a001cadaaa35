//! `POST /v1/responses` (non-streaming and streaming).
//!
//! Per the OpenAI API reference, "Responses" (create, the response object) and "Streaming
//! events" (<https://platform.openai.com/docs/api-reference/responses-streaming>; guide:
//! <https://platform.openai.com/docs/guides/streaming-responses>). A stream is named SSE events
//! (`event: <type>\ndata: {json}\n\n`, no `[DONE]`), each payload carrying its `type` and an
//! increasing `sequence_number`: `response.created`, `response.in_progress`, then per output
//! item `response.output_item.added`, for a message `response.content_part.added`,
//! `response.output_text.delta`..., `response.output_text.done`, `response.content_part.done`,
//! for a function call `response.function_call_arguments.delta`...,
//! `response.function_call_arguments.done`, then `response.output_item.done`; finally
//! `response.completed` (or `response.incomplete` when `max_output_tokens` cut the text).

use std::time::Duration;

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::{
    content_text, model_of, parse_tool_choice, parse_tools, reasoning_tokens, shape_text,
    with_call_ids, Answer, State,
};
use crate::body::{self, Paced, Pacer};
use crate::tools;
use crate::{count_tokens, Fault, SimBody};

pub(crate) fn create(state: &State, req: &Value, fault: Option<Fault>) -> Response<SimBody> {
    let model = match model_of(state, req) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let items = match &req["input"] {
        Value::String(s) => vec![json!({"role": "user", "content": s})],
        Value::Array(items) if !items.is_empty() => items.clone(),
        Value::Null => return super::missing_param("input"),
        _ => {
            return super::invalid_param(
                "'input' must be a string or a non-empty array of input items.",
                "input",
                Some("invalid_value"),
            )
        }
    };
    let tool_defs = parse_tools(&req["tools"]);
    let answer = answer(state, req, &items, &tool_defs);

    let input_tokens = count_tokens(&content_text(&req["instructions"]))
        + items.iter().map(item_tokens).sum::<u64>();
    let reasoning = reasoning_tokens(&req["reasoning"]["effort"]);
    let visible = match &answer {
        Answer::Text { text, .. } => count_tokens(text),
        Answer::Calls(calls) => calls
            .iter()
            .map(|(_, c)| count_tokens(&c.name) + count_tokens(&c.arguments.to_string()))
            .sum(),
    };
    let output_tokens = visible + reasoning;
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens
    });
    let n = state.next_id();
    let items = output_items(n, &answer);
    let incomplete = matches!(
        answer,
        Answer::Text {
            truncated: true,
            ..
        }
    );
    let skeleton = Skeleton {
        id: format!("resp_sim{n:08}"),
        created_at: crate::unix_now(),
        model,
        request: req.clone(),
    };
    if req["stream"].as_bool() == Some(true) {
        let pacer = Pacer::new(
            state.options.time_to_first_token,
            state.options.inter_token_delay,
        );
        body::event_stream(skeleton.events(&items, usage, incomplete, pacer), fault)
    } else {
        let status = if incomplete {
            "incomplete"
        } else {
            "completed"
        };
        let resp = skeleton.response(status, items.iter().map(|i| i.done()).collect(), usage);
        body::json(StatusCode::OK, &resp, fault)
    }
}

fn item_tokens(item: &Value) -> u64 {
    if item["type"] == "function_call_output" {
        return count_tokens(&content_text(&item["output"]));
    }
    count_tokens(&content_text(&item["content"])) + 4
}

/// Quote trailing `function_call_output` items, else call tools or echo the last user text.
fn answer(state: &State, req: &Value, items: &[Value], tool_defs: &[tools::ToolDef]) -> Answer {
    let outputs: Vec<String> = items
        .iter()
        .rev()
        .take_while(|i| i["type"] == "function_call_output")
        .map(|i| content_text(&i["output"]))
        .collect();
    let text = if outputs.is_empty() {
        let user_text = items
            .iter()
            .rev()
            .find(|i| i["role"] == "user")
            .map(|i| content_text(&i["content"]))
            .unwrap_or_default();
        let choice = parse_tool_choice(&req["tool_choice"]);
        let calls = tools::plan_calls(tool_defs, &choice, &user_text);
        if !calls.is_empty() {
            return Answer::Calls(with_call_ids(state, calls));
        }
        crate::echo_reply(&user_text)
    } else {
        tools::reply_to_tool_results(&outputs.into_iter().rev().collect::<Vec<_>>())
    };
    shape_text(text, &[], req["max_output_tokens"].as_u64())
}

/// One output item of the response.
enum OutputItem {
    Message {
        id: String,
        text: String,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

fn output_items(n: u64, answer: &Answer) -> Vec<OutputItem> {
    match answer {
        Answer::Text { text, .. } => vec![OutputItem::Message {
            id: format!("msg_sim{n:08}"),
            text: text.clone(),
        }],
        Answer::Calls(calls) => calls
            .iter()
            .enumerate()
            .map(|(i, (call_id, c))| OutputItem::FunctionCall {
                id: format!("fc_sim{n:08}_{i}"),
                call_id: call_id.clone(),
                name: c.name.clone(),
                arguments: c.arguments.to_string(),
            })
            .collect(),
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

impl OutputItem {
    fn id(&self) -> &str {
        match self {
            OutputItem::Message { id, .. } | OutputItem::FunctionCall { id, .. } => id,
        }
    }

    /// The item as `response.output_item.added` shows it: in progress, empty.
    fn started(&self) -> Value {
        match self {
            OutputItem::Message { id, .. } => json!({"type": "message", "id": id,
                "status": "in_progress", "role": "assistant", "content": []}),
            OutputItem::FunctionCall {
                id, call_id, name, ..
            } => json!({"type": "function_call",
                "id": id, "call_id": call_id, "name": name, "arguments": "",
                "status": "in_progress"}),
        }
    }

    /// The finished item, as in the response's `output`.
    fn done(&self) -> Value {
        match self {
            OutputItem::Message { id, text } => json!({"type": "message", "id": id,
                "status": "completed", "role": "assistant", "content": [text_part(text)]}),
            OutputItem::FunctionCall {
                id,
                call_id,
                name,
                arguments,
            } => json!({
                "type": "function_call", "id": id, "call_id": call_id, "name": name,
                "arguments": arguments, "status": "completed"}),
        }
    }
}

/// The response object's fields that do not change while it is generated.
struct Skeleton {
    id: String,
    created_at: u64,
    model: String,
    request: Value,
}

impl Skeleton {
    fn response(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        let req = &self.request;
        let or = |v: &Value, default: Value| if v.is_null() { default } else { v.clone() };
        let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": req["instructions"],
            "max_output_tokens": req["max_output_tokens"],
            "model": self.model,
            "output": output,
            "parallel_tool_calls": or(&req["parallel_tool_calls"], json!(true)),
            "previous_response_id": req["previous_response_id"],
            "reasoning": {"effort": req["reasoning"]["effort"], "summary": null},
            "store": or(&req["store"], json!(true)),
            "temperature": or(&req["temperature"], json!(1.0)),
            "text": {"format": {"type": "text"}},
            "tool_choice": or(&req["tool_choice"], json!("auto")),
            "tools": or(&req["tools"], json!([])),
            "top_p": or(&req["top_p"], json!(1.0)),
            "truncation": "disabled",
            "usage": usage,
            "user": req["user"],
            "metadata": or(&req["metadata"], json!({}))
        })
    }

    /// The streamed events for `items`.
    fn events(
        &self,
        items: &[OutputItem],
        usage: Value,
        incomplete: bool,
        mut pacer: Pacer,
    ) -> Vec<Paced> {
        let mut out = Vec::new();
        let mut seq = 0u64;
        let mut push = |delay: Duration, kind: &str, mut payload: Value| {
            // `type` first and `sequence_number` last, as the reference's examples show them.
            let mut event = serde_json::Map::new();
            event.insert("type".into(), json!(kind));
            if let Value::Object(fields) = &mut payload {
                event.append(fields);
            }
            event.insert("sequence_number".into(), json!(seq));
            seq += 1;
            out.push(Paced {
                delay,
                data: body::sse_event(kind, &Value::Object(event)),
            });
        };
        let zero = Duration::ZERO;
        let in_progress = self.response("in_progress", Vec::new(), Value::Null);
        push(zero, "response.created", json!({"response": in_progress}));
        push(
            zero,
            "response.in_progress",
            json!({"response": in_progress}),
        );
        for (output_index, item) in items.iter().enumerate() {
            let item_id = item.id();
            push(
                zero,
                "response.output_item.added",
                json!({"output_index": output_index, "item": item.started()}),
            );
            match item {
                OutputItem::Message { text, .. } => {
                    let at = json!({"item_id": item_id, "output_index": output_index, "content_index": 0});
                    let with = |key: &str, value: Value| {
                        let mut v = at.clone();
                        v[key] = value;
                        v
                    };
                    push(
                        zero,
                        "response.content_part.added",
                        with("part", text_part("")),
                    );
                    for piece in crate::stream_pieces(text) {
                        push(
                            pacer.token(),
                            "response.output_text.delta",
                            with("delta", json!(piece)),
                        );
                    }
                    push(zero, "response.output_text.done", with("text", json!(text)));
                    push(
                        zero,
                        "response.content_part.done",
                        with("part", text_part(text)),
                    );
                }
                OutputItem::FunctionCall { arguments, .. } => {
                    for fragment in crate::split_fragments(arguments, 4) {
                        push(
                            pacer.token(),
                            "response.function_call_arguments.delta",
                            json!({"item_id": item_id, "output_index": output_index, "delta": fragment}),
                        );
                    }
                    push(
                        zero,
                        "response.function_call_arguments.done",
                        json!({"item_id": item_id, "output_index": output_index, "arguments": arguments}),
                    );
                }
            }
            push(
                zero,
                "response.output_item.done",
                json!({"output_index": output_index, "item": item.done()}),
            );
        }
        let (kind, status) = if incomplete {
            ("response.incomplete", "incomplete")
        } else {
            ("response.completed", "completed")
        };
        let done = self.response(status, items.iter().map(OutputItem::done).collect(), usage);
        push(zero, kind, json!({"response": done}));
        out
    }
}
