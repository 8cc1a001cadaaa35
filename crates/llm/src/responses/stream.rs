//! Provider stream -> OpenAI Responses streaming events, through the Chat
//! pivot: the provider stream is translated to `chat.completion.chunk`
//! events by an inner `ProviderTranslator(OpenAiChat, egress)` (a passthrough
//! when the provider speaks Chat), and each Chat chunk it emits is turned
//! into Responses events at once. Both stages work event by event; what is
//! kept is the output so far (the `.done` events and `response.completed`
//! repeat it in full, as the protocol requires), never the stream.
//!
//! References: streaming events
//! (<https://platform.openai.com/docs/api-reference/responses-streaming>):
//! every event is `event: <type>` + `data: {"type": <type>,
//! "sequence_number": n, ...}`; `response.created` and
//! `response.in_progress` (response with `status: "in_progress"`), then per
//! output item `response.output_item.added`, for messages
//! `response.content_part.added`, `response.output_text.delta`
//! `{item_id, output_index, content_index, delta}`, `response.output_text.done`
//! `{text}`, `response.content_part.done`, for function calls
//! `response.function_call_arguments.delta` / `.done {arguments}`, then
//! `response.output_item.done`, and finally `response.completed` (or
//! `response.incomplete`) with the whole response and usage. Errors:
//! `error {code, message, param}` followed by `response.failed` (response
//! with `status: "failed"`, `error: {code, message}`).

use bytes::Bytes;
use serde_json::{json, Value};

use crate::dialect::stream::Observed;
use crate::dialect::stream::{ProviderStream, SseEvents, SseStream, WrappedStream};
use crate::dialect::Dialect;
use crate::dialect::ProviderTranslator;
use crate::pivot::{unix_now, OaChunk};
use crate::responses::response::{
    function_call_item, item_status, message_item, output_text_part, response_object,
    status_for_finish, usage_json, ResponseIds, ResponseState,
};
use crate::sse::{write_event, SseEvent, SseParser};
use crate::ResponseInfo;

/// Tool-call indexes above this are ignored, so a hostile `index` cannot
/// make us allocate.
const MAX_TOOL_CALLS: u64 = 1024;

/// The message item being streamed.
struct OpenMessage {
    output_index: usize,
    id: String,
    text: String,
}

/// A function-call item. Items stay open until the Chat finish_reason, so
/// fragments of parallel calls that interleave still land in the right
/// item before its `.done` events.
struct FunctionCall {
    /// Chat `tool_calls[].index`.
    chat_index: u64,
    output_index: usize,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
    done: bool,
}

/// Provider stream -> Responses events.
pub(crate) struct ResponsesStream {
    /// Provider -> Chat chunks.
    to_chat: ProviderTranslator,
    /// Parses what `to_chat` emits (always whole events).
    chat_parser: SseParser,
    sequence: u64,
    ids: Option<ResponseIds>,
    created_at: u64,
    model: String,
    /// Finished output items, in output order.
    output: Vec<(usize, Value)>,
    next_output_index: usize,
    messages_opened: usize,
    message: Option<OpenMessage>,
    calls: Vec<FunctionCall>,
    finish_reason: Option<String>,
    /// `response.completed` / `response.failed` written: nothing more.
    ended: bool,
}

impl ResponsesStream {
    pub fn new(provider: &'static dyn Dialect) -> Self {
        ResponsesStream {
            // Usage is needed for `response.completed`.
            to_chat: ProviderTranslator::new(super::response::chat_route(provider), true),
            chat_parser: SseParser::default(),
            sequence: 0,
            ids: None,
            created_at: unix_now(),
            model: String::new(),
            output: Vec::new(),
            next_output_index: 0,
            messages_opened: 0,
            message: None,
            calls: Vec::new(),
            finish_reason: None,
            ended: false,
        }
    }

    fn on_chat_bytes(&mut self, chat: &[u8], out: &mut Vec<u8>) {
        let mut events = Vec::new();
        self.chat_parser.feed(chat, &mut |e| events.push(e));
        for e in events {
            self.on_chat_event(e, out);
        }
    }

    fn on_chat_event(&mut self, event: SseEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if event.data.trim() == "[DONE]" {
            self.complete(out);
            return;
        }
        // Unparseable events are skipped: one bad event must not kill the stream.
        let Ok(chunk) = serde_json::from_str::<OaChunk>(&event.data) else {
            return;
        };
        if let Some((kind, message)) = chunk.error_parts() {
            self.fail_with(kind, message, out);
            return;
        }
        self.ensure_started(chunk.id.as_deref(), chunk.model.as_deref(), out);
        // Only choice 0: a response has one output list.
        for choice in chunk.choices.into_iter().flatten().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                // Refusals are kept as output text (README).
                for text in [delta.content, delta.refusal].into_iter().flatten() {
                    if !text.is_empty() {
                        self.text_delta(&text, out);
                    }
                }
                for call in delta.tool_calls.into_iter().flatten() {
                    let (name, arguments) = match call.function {
                        Some(f) => (f.name, f.arguments),
                        None => (None, None),
                    };
                    self.tool_call_delta(call.index, call.id, name, arguments, out);
                }
            }
            if let Some(finish) = choice.finish_reason {
                self.finish_reason = Some(finish);
                self.close_items(out);
            }
        }
    }

    fn ids(&mut self) -> &ResponseIds {
        self.ids.get_or_insert_with(|| ResponseIds::new(None))
    }

    fn ensure_started(&mut self, chat_id: Option<&str>, model: Option<&str>, out: &mut Vec<u8>) {
        if self.ids.is_some() {
            return;
        }
        self.ids = Some(ResponseIds::new(chat_id.filter(|id| !id.is_empty())));
        self.model = model
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .or_else(|| self.to_chat.info().model)
            .unwrap_or_default();
        let response = self.response("in_progress", Value::Null, Value::Null, Value::Null);
        self.emit(out, "response.created", json!({ "response": response }));
        self.emit(out, "response.in_progress", json!({ "response": response }));
    }

    fn text_delta(&mut self, text: &str, out: &mut Vec<u8>) {
        if self.message.is_none() {
            let n = self.messages_opened;
            self.messages_opened += 1;
            let id = self.ids().message(n);
            let output_index = self.take_output_index();
            let mut item = message_item(&id, "in_progress", "");
            item["content"] = json!([]);
            self.emit(
                out,
                "response.output_item.added",
                json!({ "output_index": output_index, "item": item }),
            );
            self.emit(
                out,
                "response.content_part.added",
                json!({
                    "item_id": id, "output_index": output_index, "content_index": 0,
                    "part": output_text_part(""),
                }),
            );
            self.message = Some(OpenMessage {
                output_index,
                id,
                text: String::new(),
            });
        }
        let Some(message) = self.message.as_mut() else {
            return;
        };
        message.text.push_str(text);
        let fields = json!({
            "item_id": message.id, "output_index": message.output_index,
            "content_index": 0, "delta": text, "logprobs": [],
        });
        self.emit(out, "response.output_text.delta", fields);
    }

    fn tool_call_delta(
        &mut self,
        chat_index: u64,
        call_id: Option<String>,
        name: Option<String>,
        arguments: Option<String>,
        out: &mut Vec<u8>,
    ) {
        if chat_index >= MAX_TOOL_CALLS {
            return;
        }
        let pos = match self.calls.iter().position(|c| c.chat_index == chat_index) {
            Some(pos) => pos,
            None => {
                // Text before a call is a finished message in Responses.
                self.close_message(out);
                let n = self.calls.len();
                let id = self.ids().function_call(n);
                let output_index = self.take_output_index();
                let call = FunctionCall {
                    chat_index,
                    output_index,
                    id,
                    call_id: call_id.clone().unwrap_or_default(),
                    name: name.clone().unwrap_or_default(),
                    arguments: String::new(),
                    done: false,
                };
                let item =
                    function_call_item(&call.id, "in_progress", &call.call_id, &call.name, "");
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({ "output_index": output_index, "item": item }),
                );
                self.calls.push(call);
                n
            }
        };
        let Some(call) = self.calls.get_mut(pos) else {
            return;
        };
        // Late id / name fragments (some servers split them) fill gaps only.
        if call.call_id.is_empty() {
            call.call_id = call_id.unwrap_or_default();
        }
        if call.name.is_empty() {
            call.name = name.unwrap_or_default();
        }
        let Some(fragment) = arguments.filter(|a| !a.is_empty()) else {
            return;
        };
        if call.done {
            // After finish_reason: nothing can be added to a done item.
            return;
        }
        call.arguments.push_str(&fragment);
        let fields = json!({
            "item_id": call.id, "output_index": call.output_index, "delta": fragment,
        });
        self.emit(out, "response.function_call_arguments.delta", fields);
    }

    fn take_output_index(&mut self) -> usize {
        let i = self.next_output_index;
        self.next_output_index += 1;
        i
    }

    fn status(&self) -> (&'static str, Value) {
        status_for_finish(self.finish_reason.as_deref())
    }

    fn close_message(&mut self, out: &mut Vec<u8>) {
        let Some(message) = self.message.take() else {
            return;
        };
        let (status, _) = self.status();
        let (id, index, text) = (&message.id, message.output_index, &message.text);
        let fields = |extra: Value| {
            let mut v = json!({ "item_id": id, "output_index": index, "content_index": 0 });
            if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            v
        };
        let text_done = fields(json!({ "text": text, "logprobs": [] }));
        let part_done = fields(json!({ "part": output_text_part(text) }));
        self.emit(out, "response.output_text.done", text_done);
        self.emit(out, "response.content_part.done", part_done);
        let item = message_item(id, item_status(status), text);
        self.emit(
            out,
            "response.output_item.done",
            json!({ "output_index": index, "item": item }),
        );
        self.output.push((index, item));
    }

    /// Closes the message and every function call still open, in output order.
    fn close_items(&mut self, out: &mut Vec<u8>) {
        self.close_message(out);
        let status = item_status(self.status().0);
        let mut done = Vec::new();
        for call in self.calls.iter_mut().filter(|c| !c.done) {
            call.done = true;
            let item =
                function_call_item(&call.id, status, &call.call_id, &call.name, &call.arguments);
            let args_done = json!({
                "item_id": call.id, "output_index": call.output_index,
                "name": call.name, "arguments": call.arguments,
            });
            done.push((call.output_index, args_done, item));
        }
        for (index, args_done, item) in done {
            self.emit(out, "response.function_call_arguments.done", args_done);
            self.emit(
                out,
                "response.output_item.done",
                json!({ "output_index": index, "item": item }),
            );
            self.output.push((index, item));
        }
    }

    /// `[DONE]` or end of stream: close what is open and send the whole
    /// response. A stream that ends without a finish_reason still completes
    /// (as the other translators do): the upstream closed cleanly.
    fn complete(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ensure_started(None, None, out);
        self.close_items(out);
        self.ended = true;
        let (status, incomplete) = self.status();
        let usage = usage_json(&self.to_chat.info().usage);
        let response = self.response(status, incomplete, Value::Null, usage);
        // OpenAI ends an incomplete response with `response.incomplete`.
        let kind = match status {
            "incomplete" => "response.incomplete",
            _ => "response.completed",
        };
        self.emit(out, kind, json!({ "response": response }));
    }

    fn fail_with(&mut self, kind: Option<&str>, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ensure_started(None, None, out);
        self.ended = true;
        // `response.failed` error codes are a fixed set; rate limits have their own.
        let code = match kind {
            Some("rate_limit_error") | Some("requests") | Some("tokens") => "rate_limit_exceeded",
            _ => "server_error",
        };
        self.emit(
            out,
            "error",
            json!({ "code": kind.unwrap_or(code), "message": message, "param": null }),
        );
        let error = json!({ "code": code, "message": message });
        let usage = usage_json(&self.to_chat.info().usage);
        let response = self.response("failed", Value::Null, error, usage);
        self.emit(out, "response.failed", json!({ "response": response }));
    }

    fn response(&self, status: &str, incomplete: Value, error: Value, usage: Value) -> Value {
        let mut output = self.output.clone();
        output.sort_by_key(|(index, _)| *index);
        let id = self
            .ids
            .as_ref()
            .map(ResponseIds::response)
            .unwrap_or_default();
        response_object(ResponseState {
            id: &id,
            created_at: self.created_at,
            model: &self.model,
            status,
            incomplete_details: incomplete,
            error,
            output: output.into_iter().map(|(_, item)| item).collect(),
            usage,
        })
    }

    /// Writes one event: `event: <type>` and the data with `type` and
    /// `sequence_number` first.
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, fields: Value) {
        let mut data = json!({ "type": kind, "sequence_number": self.sequence });
        if let (Some(data), Value::Object(fields)) = (data.as_object_mut(), fields) {
            data.extend(fields);
        }
        self.sequence += 1;
        write_event(out, Some(kind), &data.to_string());
    }
}

impl WrappedStream for ResponsesStream {
    /// See `StreamTranslator::with_upstream_model`.
    fn set_upstream_model(&mut self, model: &str) {
        self.to_chat.set_upstream_model(model);
    }

    fn feed(&mut self, chunk: Bytes) -> Bytes {
        let chat = self.to_chat.feed(chunk);
        let mut out = Vec::new();
        self.on_chat_bytes(&chat, &mut out);
        Bytes::from(out)
    }

    /// The upstream ended: flush, close open items, `response.completed`.
    fn finish(&mut self) -> Bytes {
        let chat = self.to_chat.finish();
        let mut out = Vec::new();
        self.on_chat_bytes(&chat, &mut out);
        let mut events = Vec::new();
        self.chat_parser.finish(&mut |e| events.push(e));
        for e in events {
            self.on_chat_event(e, &mut out);
        }
        self.complete(&mut out);
        Bytes::from(out)
    }

    /// The upstream broke: `error` then `response.failed`.
    fn fail(&mut self, message: &str) -> Bytes {
        let mut out = Vec::new();
        self.fail_with(None, message, &mut out);
        Bytes::from(out)
    }

    fn info(&self) -> ResponseInfo {
        self.to_chat.info()
    }

    fn saw_first_token(&self) -> bool {
        self.to_chat.saw_first_token()
    }
}

/// A provider's own Responses stream (for a Responses client), forwarded
/// as it is and observed.
pub(crate) fn observed_only() -> Box<dyn ProviderStream> {
    SseStream::boxed(ResponsesEvents)
}

struct ResponsesEvents;

impl SseEvents for ResponsesEvents {
    fn translates(&self) -> bool {
        false
    }

    fn on_event(&mut self, data: &str, observed: &mut Observed, _out: &mut Vec<u8>) {
        observe(data, observed);
    }
}

/// Responses typed events: text deltas, and the final `response`
/// object (model, usage) on `response.completed` / `.incomplete` /
/// `.failed`.
fn observe(data: &str, observed: &mut Observed) {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(default)]
        delta: Option<String>,
        #[serde(default)]
        response: Option<serde_json::Value>,
    }
    let Ok(ev) = serde_json::from_str::<Event>(data) else {
        return;
    };
    match &*ev.kind {
        "response.output_text.delta" => {
            if let Some(d) = ev.delta.filter(|d| !d.is_empty()) {
                observed.push_text(&d);
            }
        }
        "response.function_call_arguments.delta" => observed.first_token = true,
        "response.created" | "response.completed" | "response.incomplete" | "response.failed" => {
            if let Some(r) = &ev.response {
                let info = crate::responses::response::info_of(r);
                if observed.model.is_none() {
                    observed.model = info.model;
                }
                if r.get("usage").is_some_and(|u| !u.is_null()) {
                    observed.usage = info.usage;
                }
            }
        }
        _ => {}
    }
}
