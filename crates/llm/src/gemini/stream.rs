//! Gemini `streamGenerateContent?alt=sse` -> OpenAI `chat.completion.chunk`
//! stream, and (chained through `anthropic::client_stream`) -> Anthropic Messages events.
//!
//! Gemini sends `data: <GenerateContentResponse>` events and no terminator:
//! each carries partial text, whole `functionCall` parts (never split), and
//! the last one `finishReason` plus the final `usageMetadata`
//! (<https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent>).
//! Every Gemini event is translated as it arrives into OpenAI chunk values:
//! a role chunk first (per candidate), then content / `reasoning_content`
//! (thought parts) / `tool_calls` deltas (id, name and the complete
//! arguments in one delta), then a finish_reason chunk. Because the end of
//! the stream is only known when the upstream closes, the usage chunk (when
//! the client asked for `include_usage`) and `data: [DONE]` are written by
//! `finish`. Anthropic clients get each OpenAI chunk fed straight into the
//! OpenAI -> Anthropic state machine: two state machines chained event by
//! event, nothing buffered beyond the current event.

use serde_json::{json, Value};

use crate::dialect::sink::ChunkSink;
use crate::dialect::stream::{Observed, ProviderStream, SseEvents, SseStream};
use crate::dialect::Route;
use crate::gemini::errors::parse_google_error;
use crate::gemini::wire::{
    candidate_index, candidate_parts, completion_id, finish_reason_from_gemini, is_thought,
    openai_tool_call, tool_call_id, usage_from_metadata, MAX_CANDIDATES,
};
use crate::pivot::{bounded_slot, chunk_json, delta_choices, finish_choices, unix_now};
use crate::Format;

/// The Gemini provider's stream for a client of `ingress`: translated for
/// OpenAI and Anthropic clients, otherwise only observed.
pub(crate) fn stream_to(route: Route, include_usage: bool) -> Box<dyn ProviderStream> {
    let translated = matches!(
        route.ingress(),
        Format::OpenAiChat | Format::AnthropicMessages
    );
    SseStream::boxed(GeminiEvents(
        translated.then(|| GeminiStream::new(route, include_usage)),
    ))
}

struct GeminiEvents(Option<GeminiStream>);

impl SseEvents for GeminiEvents {
    fn translates(&self) -> bool {
        self.0.is_some()
    }

    fn on_event(&mut self, data: &str, observed: &mut Observed, out: &mut Vec<u8>) {
        match &mut self.0 {
            Some(s) => s.on_event(data, observed, out),
            None => {
                if let Ok(v) = serde_json::from_str(data) {
                    observe(&v, observed);
                }
            }
        }
    }

    fn finish(&mut self, observed: &mut Observed, out: &mut Vec<u8>) {
        if let Some(s) = &mut self.0 {
            s.finish(observed, out);
        }
    }
}

/// Per-candidate progress.
#[derive(Default, Clone)]
struct CandidateState {
    started: bool,
    finished: bool,
    /// OpenAI `tool_calls[].index` of the next function call.
    next_tool_index: u64,
}

/// Gemini events -> OpenAI chunk values.
struct GeminiToOpenAi {
    id: Option<String>,
    created: u64,
    /// Function calls seen so far in the whole response, for `call_<n>` ids.
    calls_seen: u64,
    candidates: Vec<CandidateState>,
}

impl GeminiToOpenAi {
    fn new() -> Self {
        GeminiToOpenAi {
            id: None,
            created: unix_now(),
            calls_seen: 0,
            candidates: Vec::new(),
        }
    }

    fn chunk(&self, model: &str, choices: Value) -> Value {
        let id = self.id.as_deref().unwrap_or_default();
        chunk_json(id, self.created, model, choices)
    }

    fn delta(&self, model: &str, index: u64, delta: Value) -> Value {
        self.chunk(model, delta_choices(index, delta))
    }

    fn state(&mut self, index: u64) -> Option<&mut CandidateState> {
        bounded_slot(&mut self.candidates, index, MAX_CANDIDATES)
    }

    /// The role chunk for candidate `index`, once.
    fn ensure_started(&mut self, model: &str, index: u64, out: &mut Vec<Value>) {
        let Some(state) = self.state(index) else {
            return;
        };
        if std::mem::replace(&mut state.started, true) {
            return;
        }
        out.push(self.delta(model, index, json!({ "role": "assistant", "content": "" })));
    }

    fn on_event(&mut self, event: &Value, model: &str, out: &mut Vec<Value>) {
        if self.id.is_none() {
            self.id = Some(completion_id(event));
        }
        let response_id = event.get("responseId").and_then(Value::as_str);
        let candidates = event
            .get("candidates")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if candidates.is_empty()
            && event
                .get("promptFeedback")
                .and_then(|f| f.get("blockReason"))
                .is_some()
        {
            self.finish_candidate(model, 0, "content_filter", out);
            return;
        }
        for (pos, candidate) in candidates.iter().enumerate() {
            let index = candidate_index(candidate, pos);
            if index >= MAX_CANDIDATES {
                continue;
            }
            self.ensure_started(model, index, out);
            for part in candidate_parts(candidate) {
                if let Some(call) = part.get("functionCall") {
                    let signature = part.get("thoughtSignature").and_then(Value::as_str);
                    let id = tool_call_id(call, response_id, self.calls_seen, signature);
                    self.calls_seen += 1;
                    let Some(state) = self.state(index) else {
                        continue;
                    };
                    let tool_index = state.next_tool_index;
                    state.next_tool_index += 1;
                    let mut call = openai_tool_call(call, id);
                    call["index"] = tool_index.into();
                    out.push(self.delta(model, index, json!({ "tool_calls": [call] })));
                } else if let Some(text) = part.get("text").and_then(Value::as_str) {
                    if text.is_empty() {
                        continue;
                    }
                    let key = if is_thought(part) {
                        "reasoning_content"
                    } else {
                        "content"
                    };
                    out.push(self.delta(model, index, json!({ key: text })));
                }
            }
            if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                let has_calls = self.state(index).is_some_and(|s| s.next_tool_index > 0);
                let finish = finish_reason_from_gemini(reason, has_calls);
                self.finish_candidate(model, index, finish, out);
            }
        }
    }

    fn finish_candidate(&mut self, model: &str, index: u64, finish: &str, out: &mut Vec<Value>) {
        self.ensure_started(model, index, out);
        let Some(state) = self.state(index) else {
            return;
        };
        if std::mem::replace(&mut state.finished, true) {
            return;
        }
        out.push(self.chunk(model, finish_choices(index, finish)));
    }
}

/// The Gemini-egress stream translator used by `StreamTranslator`.
struct GeminiStream {
    to_openai: GeminiToOpenAi,
    sink: ChunkSink,
    route: Route,
    finished: bool,
}

impl GeminiStream {
    pub fn new(route: Route, include_usage: bool) -> Self {
        GeminiStream {
            to_openai: GeminiToOpenAi::new(),
            sink: ChunkSink::new(route.ingress(), include_usage),
            route,
            finished: false,
        }
    }

    /// One SSE event's `data`. Unparseable events are skipped: one bad event
    /// must not kill the stream.
    pub fn on_event(&mut self, data: &str, observed: &mut Observed, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if event.get("error").is_some() {
            let (kind, message) = match parse_google_error(&event) {
                Some(e) => (e.kind.map(|k| k.anthropic_type()), e.message),
                None => (None, "upstream stream error".to_owned()),
            };
            self.route.client.write_stream_error(kind, &message, out);
            self.finished = true;
            return;
        }
        observe(&event, observed);
        let model = observed.model.clone().unwrap_or_default();
        let mut chunks = Vec::new();
        self.to_openai.on_event(&event, &model, &mut chunks);
        for chunk in chunks {
            self.sink.emit(chunk, observed, out);
        }
    }

    /// The upstream ended: usage chunk (if asked) and `[DONE]`, or the
    /// closing Anthropic events.
    pub fn finish(&mut self, observed: &Observed, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let model = observed.model.clone().unwrap_or_default();
        if self.sink.is_openai() {
            // An OpenAI client gets at least the role chunk.
            let mut chunks = Vec::new();
            self.to_openai.ensure_started(&model, 0, &mut chunks);
            for chunk in chunks {
                self.sink.emit(chunk, observed, out);
            }
        }
        let to_openai = &self.to_openai;
        self.sink
            .finish(|| to_openai.chunk(&model, json!([])), observed, out);
    }
}

/// Records model, usage, completion text and first token from one Gemini
/// event (also used when the stream is passed through untranslated).
fn observe(event: &Value, observed: &mut Observed) {
    if observed.model.is_none() {
        observed.model = event
            .get("modelVersion")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
    }
    if let Some(meta) = event.get("usageMetadata") {
        observed.usage = usage_from_metadata(meta);
    }
    let candidates = event
        .get("candidates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (pos, candidate) in candidates.iter().enumerate() {
        let index = candidate_index(candidate, pos);
        // One completion per candidate seen, text or not (as for whole responses).
        if bounded_slot(&mut observed.completion, index, MAX_CANDIDATES).is_none() {
            continue;
        }
        let i = index as usize;
        for part in candidate_parts(candidate) {
            if part.get("functionCall").is_some() {
                observed.first_token = true;
            }
            let text = part.get("text").and_then(Value::as_str).unwrap_or_default();
            if text.is_empty() || is_thought(part) {
                continue;
            }
            observed.first_token = true;
            crate::push_capped(
                &mut observed.completion[i],
                text,
                crate::recorded_text_cap(),
            );
        }
    }
}
