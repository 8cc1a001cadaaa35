//! The [`Dialect`] trait every wire dialect implements (client side and
//! provider side, each method with a default where one makes sense) and the
//! [`Route`] a request takes: the client's dialect and the provider's,
//! resolved once from the table (`table.rs`, the one place that names every
//! dialect) by the entry points `prepare_request`, `translate_response`,
//! `translate_error`, `error_body` and `StreamTranslator::new`, which hold
//! no `match` on formats. Dialects never look each other up: they get the
//! route.
//!
//! OpenAI Chat is the pivot (`crate::pivot`): a provider dialect translates
//! a client's request from Chat (the client dialect's
//! `request_to_pivot`; Anthropic reaches the pivot through
//! `anthropic::client_request`) and its responses and streams to Chat, then
//! on to the client (`response_from_pivot`, `ChunkSink`).
//!
//! Adding a provider: a folder beside `gemini/` implementing [`Dialect`]
//! (or filling in a [`PivotProvider`]), a `Format` variant and one line in
//! `table.rs`.

pub(crate) mod sink;
pub(crate) mod stream;
pub(crate) mod table;

use bytes::Bytes;
use serde_json::{Map, Value};

use self::stream::{Observed, ProviderStream, WrappedStream};
use crate::pivot::{parse_error, pick_params, serialise_request};
use crate::sse::write_event;
use crate::{Format, LlmError, PreparedRequest, PromptMessage, RequestOptions, ResponseInfo};

/// The two dialects of an exchange: the client's (ingress) and the
/// provider's (egress), possibly the same.
#[derive(Clone, Copy)]
pub(crate) struct Route {
    pub client: &'static dyn Dialect,
    pub provider: &'static dyn Dialect,
}

impl Route {
    pub(crate) fn ingress(&self) -> Format {
        self.client.format()
    }

    pub(crate) fn egress(&self) -> Format {
        self.provider.format()
    }
}

/// One wire dialect. Client-side methods are called on `route.client`,
/// provider-side ones on `route.provider`; the two differ unless said
/// otherwise.
pub(crate) trait Dialect: Sync {
    fn format(&self) -> Format;

    // ---------- client side (ingress) ----------

    /// `Err` for provider-only dialects, which clients cannot speak.
    fn check_client(&self) -> Result<(), LlmError> {
        Ok(())
    }

    /// Parameters surfaced in `PreparedRequest::params` (client spelling).
    fn params(&self) -> &'static [&'static str] {
        &[]
    }

    /// The client's prompt, flattened to text.
    fn prompt(&self, _req: &Map<String, Value>) -> Result<Vec<PromptMessage>, LlmError> {
        Ok(Vec::new())
    }

    /// A client's request object (options applied) -> the Chat pivot.
    /// Default: it is one already.
    fn request_to_pivot(&self, req: Map<String, Value>) -> Result<Map<String, Value>, LlmError> {
        Ok(req)
    }

    /// A `chat.completion` (the pivot) -> this client's response object.
    /// Default: as it is.
    fn response_from_pivot(&self, chat: Map<String, Value>, _info: &ResponseInfo) -> Value {
        Value::Object(chat)
    }

    /// `prepare_request` for a client of this dialect (the provider may
    /// speak it too). Default: the shared `messages` pipeline.
    fn prepare(
        &self,
        route: Route,
        req: Map<String, Value>,
        opts: &RequestOptions,
    ) -> Result<PreparedRequest, LlmError> {
        prepare_messages(route, req, opts)
    }

    /// `translate_response_with_model` for a client of this dialect (the
    /// provider may speak it too). Default: the provider's info and
    /// translation.
    fn translate_response(
        &self,
        route: Route,
        body: &[u8],
        upstream_model: Option<&str>,
    ) -> Result<(Option<Vec<u8>>, ResponseInfo), LlmError> {
        translate_via_provider(route, body, upstream_model)
    }

    /// A provider's error body for a client of this dialect. Default: the
    /// provider's own error translation.
    fn translate_error(&self, route: Route, status: u16, body: &[u8]) -> Vec<u8> {
        route.provider.error_to(route, status, body)
    }

    /// The stream translator for a client of this dialect (the provider may
    /// speak it too). Default: the provider's stream.
    fn stream(&self, route: Route, include_usage: bool) -> ClientSide {
        ClientSide::Provider(ProviderTranslator::new(route, include_usage))
    }

    /// An error made by the gateway, its type chosen by HTTP status; `code` is the gateway's
    /// stable code where the dialect has a field for one (OpenAI's `code`). Default: the
    /// OpenAI shape (also the fallback for provider-only dialects).
    fn error_body(&self, status: u16, message: &str, code: Option<&str>) -> Vec<u8> {
        crate::openai::errors::openai_error(
            crate::openai::errors::openai_type_for_status(status),
            message,
            code,
        )
    }

    /// A provider error whose type (`kind`, in the provider's vocabulary,
    /// OpenAI or Anthropic) was read from its body. Default: OpenAI shape.
    fn upstream_error(&self, kind: Option<String>, status: u16, message: &str) -> Vec<u8> {
        crate::openai::errors::from_upstream(kind, status, message)
    }

    /// A provider error already mapped to Anthropic's vocabulary (the
    /// richest one), with the provider's own name for it for clients that
    /// have a `code`. Default: OpenAI shape.
    fn mapped_error(&self, anthropic_type: &str, code: Option<&str>, message: &str) -> Vec<u8> {
        crate::openai::errors::openai_error(
            crate::openai::errors::openai_type_for_anthropic_type(anthropic_type)
                .unwrap_or("server_error"),
            message,
            code,
        )
    }

    /// The in-stream error object (`kind` in OpenAI or Anthropic
    /// vocabulary). Default: OpenAI shape.
    fn stream_error_json(&self, kind: Option<&str>, message: &str) -> Value {
        crate::openai::errors::stream_error_json(kind, message)
    }

    /// Appends an in-stream error event. Default: a bare `data:` event.
    fn write_stream_error(&self, kind: Option<&str>, message: &str, out: &mut Vec<u8>) {
        write_event(
            out,
            None,
            &self.stream_error_json(kind, message).to_string(),
        );
    }

    // ---------- provider side (egress) ----------

    /// `Err` when a client of `ingress` cannot be sent to this provider.
    fn check_provider(&self, _ingress: Format) -> Result<(), LlmError> {
        Ok(())
    }

    /// A client's request object (`route.client`'s dialect, options
    /// applied) -> this dialect's request object.
    fn request_from(
        &self,
        route: Route,
        req: Map<String, Value>,
        opts: &RequestOptions,
    ) -> Result<Map<String, Value>, LlmError>;

    /// Model, usage and completion text of a successful response (`body`
    /// in this dialect; also called when the client speaks it too).
    fn response_info(&self, body: &[u8]) -> Result<ResponseInfo, LlmError>;

    /// A successful response (this dialect) -> the client's body.
    fn response_to(
        &self,
        route: Route,
        body: &[u8],
        info: &ResponseInfo,
    ) -> Result<Vec<u8>, LlmError>;

    /// An error response (this dialect) -> the client's error body.
    /// Default: `{"error":{"type","message"}}` read loosely, the type
    /// mapped by the client.
    fn error_to(&self, route: Route, status: u16, body: &[u8]) -> Vec<u8> {
        let (kind, message) = parse_error(self.format(), body).unwrap_or_else(|| {
            (
                None,
                format!("upstream provider returned HTTP {status} with an unrecognised error body"),
            )
        });
        route.client.upstream_error(kind, status, &message)
    }

    /// This dialect's stream, observed and (unless the client speaks this
    /// dialect) translated for `route.client`.
    fn stream_to(&self, route: Route, include_usage: bool) -> Box<dyn ProviderStream>;
}

/// What a `StreamTranslator` drives.
pub(crate) enum ClientSide {
    /// The provider dialect's stream, written in the client's format.
    Provider(ProviderTranslator),
    /// A client dialect that wraps a whole inner translator (Responses,
    /// through Chat chunks); feed, finish, fail and info delegate to it.
    Wrapped(Box<dyn WrappedStream>),
}

/// The provider side of a translator: the provider dialect's stream for a
/// client of `route.client`, and what it observed.
pub(crate) struct ProviderTranslator {
    route: Route,
    stream: Box<dyn ProviderStream>,
    observed: Observed,
}

impl ProviderTranslator {
    pub(crate) fn new(route: Route, include_usage: bool) -> Self {
        ProviderTranslator {
            route,
            stream: route.provider.stream_to(route, include_usage),
            observed: Observed::default(),
        }
    }

    /// The model sent upstream (not empty).
    pub(crate) fn set_upstream_model(&mut self, model: &str) {
        self.stream.set_upstream_model(model, &mut self.observed);
    }

    /// The client's bytes for one upstream chunk: the chunk itself when the
    /// client speaks the provider's dialect.
    pub(crate) fn feed(&mut self, chunk: Bytes) -> Bytes {
        let mut out = Vec::new();
        self.stream.feed(&chunk, &mut self.observed, &mut out);
        if self.stream.translates() {
            Bytes::from(out)
        } else {
            chunk
        }
    }

    pub(crate) fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        self.stream.finish(&mut self.observed, &mut out);
        if self.stream.translates() {
            Bytes::from(out)
        } else {
            Bytes::new()
        }
    }

    pub(crate) fn fail(&mut self, message: &str) -> Bytes {
        let mut out = Vec::new();
        self.route
            .client
            .write_stream_error(None, message, &mut out);
        Bytes::from(out)
    }

    pub(crate) fn info(&self) -> ResponseInfo {
        ResponseInfo {
            model: self.observed.model.clone(),
            usage: self.observed.usage.clone(),
            completion: self.observed.completion.clone(),
        }
    }

    pub(crate) fn saw_first_token(&self) -> bool {
        self.observed.first_token
    }
}

/// A request translation: one request object to another.
pub(crate) type RequestFn = fn(Map<String, Value>) -> Result<Map<String, Value>, LlmError>;

/// A provider dialect reached only through the Chat pivot (Gemini,
/// Bedrock): its whole provider side is these functions, so such a
/// provider is registered by filling in one of these.
pub(crate) struct PivotProvider {
    pub format: Format,
    /// The 400 for a client that claims to speak it.
    pub not_a_client: &'static str,
    /// Chat request -> provider request.
    pub from_chat: RequestFn,
    /// Anthropic request -> provider request, reading first what the Chat
    /// pivot cannot carry.
    pub from_anthropic: RequestFn,
    pub response_info: fn(&[u8]) -> Result<ResponseInfo, LlmError>,
    /// Provider response -> the client's (through a `chat.completion`).
    pub to_client: fn(Route, Map<String, Value>, &ResponseInfo) -> Value,
    pub error_to: fn(Route, u16, &[u8]) -> Vec<u8>,
    pub stream_to: fn(Route, bool) -> Box<dyn ProviderStream>,
}

impl Dialect for PivotProvider {
    fn format(&self) -> Format {
        self.format
    }

    fn check_client(&self) -> Result<(), LlmError> {
        Err(LlmError::bad_request(self.not_a_client))
    }

    fn request_from(
        &self,
        route: Route,
        req: Map<String, Value>,
        _opts: &RequestOptions,
    ) -> Result<Map<String, Value>, LlmError> {
        match route.ingress() {
            Format::AnthropicMessages => (self.from_anthropic)(req),
            _ => (self.from_chat)(route.client.request_to_pivot(req)?),
        }
    }

    fn response_info(&self, body: &[u8]) -> Result<ResponseInfo, LlmError> {
        (self.response_info)(body)
    }

    fn response_to(
        &self,
        route: Route,
        body: &[u8],
        info: &ResponseInfo,
    ) -> Result<Vec<u8>, LlmError> {
        let resp = crate::pivot::parse_object(body)?;
        crate::pivot::serialise(&(self.to_client)(route, resp, info))
    }

    fn error_to(&self, route: Route, status: u16, body: &[u8]) -> Vec<u8> {
        (self.error_to)(route, status, body)
    }

    fn stream_to(&self, route: Route, include_usage: bool) -> Box<dyn ProviderStream> {
        (self.stream_to)(route, include_usage)
    }
}

// ---------- the shared pipelines the defaults run ----------

/// The shared pipeline for clients that send `messages` (OpenAI Chat,
/// Anthropic Messages): validate, apply options, read stream / params /
/// prompt, translate (unless ingress == egress).
pub(crate) fn prepare_messages(
    route: Route,
    mut req: Map<String, Value>,
    opts: &RequestOptions,
) -> Result<PreparedRequest, LlmError> {
    match req.get("messages") {
        Some(Value::Array(_)) => {}
        Some(_) => return Err(LlmError::bad_request("`messages` must be an array")),
        None => {
            return Err(LlmError::bad_request(
                "request body is missing required field `messages`",
            ))
        }
    }

    let (request_model, upstream_model) = apply_request_options(&mut req, opts);

    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let params = pick_params(&req, route.client.params());
    let prompt = route.client.prompt(&req)?;

    let out = if route.ingress() == route.egress() {
        req
    } else {
        route.provider.request_from(route, req, opts)?
    };
    Ok(PreparedRequest {
        body: serialise_request(out)?,
        request_model,
        upstream_model,
        stream,
        params,
        prompt,
    })
}

/// Applies `overrides` (always set), then `defaults` (set when absent), to a client's request
/// object, then its model: `model_override`, else the first matching alias, else as sent.
/// Returns (the model the client asked for, the model sent upstream); the latter is written
/// into the object.
pub fn apply_request_options(
    req: &mut Map<String, Value>,
    opts: &RequestOptions,
) -> (Option<String>, Option<String>) {
    let request_model = req.get("model").and_then(Value::as_str).map(str::to_owned);
    for (k, v) in opts.overrides {
        req.insert(k.clone(), v.clone());
    }
    for (k, v) in opts.defaults {
        if !req.contains_key(k) {
            req.insert(k.clone(), v.clone());
        }
    }
    let effective = req.get("model").and_then(Value::as_str);
    let upstream_model = match opts.model_override {
        Some(m) => Some(m),
        None => effective.map(|m| {
            opts.model_aliases
                .iter()
                .find(|(pattern, _)| crate::glob_match(pattern, m))
                .map_or(m, |(_, target)| target.as_str())
        }),
    };
    // Written into the object only when it changes what is there (or a non-string was).
    let changed = upstream_model.is_some() && upstream_model != effective;
    let upstream_model = upstream_model.map(str::to_owned);
    if let (true, Some(m)) = (changed, &upstream_model) {
        req.insert("model".into(), Value::String(m.clone()));
    }
    (request_model, upstream_model)
}

/// The shared route: the provider's info, then (formats differing) its
/// translation for the client.
pub(crate) fn translate_via_provider(
    route: Route,
    body: &[u8],
    upstream_model: Option<&str>,
) -> Result<(Option<Vec<u8>>, ResponseInfo), LlmError> {
    let provider = route.provider;
    let mut info = provider.response_info(body)?;
    if info.model.is_none() {
        info.model = upstream_model.filter(|m| !m.is_empty()).map(str::to_owned);
    }
    if route.ingress() == route.egress() {
        return Ok((None, info));
    }
    let out = provider.response_to(route, body, &info)?;
    Ok((Some(out), info))
}
