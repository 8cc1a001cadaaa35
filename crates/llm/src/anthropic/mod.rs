//! Anthropic Messages: a client dialect and a provider dialect.
//!
//! Client side: the request reaches the Chat pivot through
//! `client_request` (Anthropic -> Chat), responses come back through
//! `response::openai_to_anthropic` and streams through `client_stream`
//! (Chat chunks -> Anthropic events). Provider side: `request` (Chat ->
//! Anthropic), `response::anthropic_to_openai` and `stream` (Anthropic
//! events -> Chat chunks).
//!
//! References: <https://docs.anthropic.com/en/api/messages>, streaming
//! <https://docs.anthropic.com/en/docs/build-with-claude/streaming>, errors
//! <https://docs.anthropic.com/en/api/errors>.

pub(crate) mod client_request;
pub(crate) mod client_stream;
pub(crate) mod errors;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod stream;
pub(crate) mod wire;

use serde_json::{Map, Value};

use crate::anthropic::wire::{AnResponseView, AnUsage};
use crate::dialect::stream::ProviderStream;
use crate::dialect::{Dialect, Route};
use crate::pivot::content_text;
use crate::pivot::{invalid_upstream, parse_object, serialise};
use crate::pivot::{message_role, messages};
use crate::{Format, LlmError, PromptMessage, RequestOptions, ResponseInfo};

/// Parameters surfaced in `PreparedRequest::params`.
const PARAMS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "stop_sequences",
];

pub(crate) struct AnthropicMessages;

impl Dialect for AnthropicMessages {
    fn format(&self) -> Format {
        Format::AnthropicMessages
    }

    // ---------- client side ----------

    fn params(&self) -> &'static [&'static str] {
        PARAMS
    }

    fn prompt(&self, req: &Map<String, Value>) -> Result<Vec<PromptMessage>, LlmError> {
        let mut out = Vec::new();
        if let Some(system) = req.get("system") {
            out.push(PromptMessage {
                role: "system".into(),
                content: content_text(Some(system)),
            });
        }
        for (i, m) in messages(req).iter().enumerate() {
            out.push(PromptMessage {
                role: message_role(i, m)?,
                content: content_text(m.get("content")),
            });
        }
        Ok(out)
    }

    fn request_to_pivot(&self, req: Map<String, Value>) -> Result<Map<String, Value>, LlmError> {
        client_request::translate(req)
    }

    fn response_from_pivot(&self, chat: Map<String, Value>, info: &ResponseInfo) -> Value {
        response::openai_to_anthropic(chat, info)
    }

    fn error_body(&self, status: u16, message: &str, _code: Option<&str>) -> Vec<u8> {
        errors::anthropic_error(errors::anthropic_type_for_status(status), message)
    }

    fn upstream_error(&self, kind: Option<String>, status: u16, message: &str) -> Vec<u8> {
        let mapped = kind
            .as_deref()
            .and_then(errors::anthropic_type_for_openai_type)
            .unwrap_or_else(|| errors::anthropic_type_for_status(status));
        errors::anthropic_error(mapped, message)
    }

    fn mapped_error(&self, anthropic_type: &str, _code: Option<&str>, message: &str) -> Vec<u8> {
        errors::anthropic_error(anthropic_type, message)
    }

    fn stream_error_json(&self, kind: Option<&str>, message: &str) -> Value {
        errors::stream_error_json(kind, message)
    }

    fn write_stream_error(&self, kind: Option<&str>, message: &str, out: &mut Vec<u8>) {
        errors::write_stream_error(kind, message, out);
    }

    // ---------- provider side ----------

    fn request_from(
        &self,
        route: Route,
        req: Map<String, Value>,
        opts: &RequestOptions,
    ) -> Result<Map<String, Value>, LlmError> {
        let chat = route.client.request_to_pivot(req)?;
        request::translate(chat, opts.default_max_tokens)
    }

    fn response_info(&self, body: &[u8]) -> Result<ResponseInfo, LlmError> {
        let view: AnResponseView = serde_json::from_slice(body).map_err(invalid_upstream)?;
        Ok(ResponseInfo {
            usage: view
                .usage
                .as_ref()
                .map(AnUsage::to_usage)
                .unwrap_or_default(),
            completion: vec![view.text()],
            model: view.model,
        })
    }

    fn response_to(
        &self,
        route: Route,
        body: &[u8],
        info: &ResponseInfo,
    ) -> Result<Vec<u8>, LlmError> {
        if route.ingress() == Format::OpenAiChat {
            // Typed, straight to the pivot: the hot translated path.
            return response::anthropic_to_openai(body, info);
        }
        serialise(&Value::Object(parse_object(body)?))
    }

    fn stream_to(&self, route: Route, include_usage: bool) -> Box<dyn ProviderStream> {
        stream::stream_to(route.ingress(), include_usage)
    }
}
