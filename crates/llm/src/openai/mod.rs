//! OpenAI Chat Completions: a client dialect, a provider dialect, and the
//! pivot every other dialect is translated through (its typed views are in
//! `crate::pivot`). Translating to or from the pivot is the identity, so
//! this folder holds what is left: prompt and params, response info,
//! errors and the stream observer.
//!
//! References: <https://platform.openai.com/docs/api-reference/chat>
//! (request, `chat.completion`, `chat.completion.chunk`,
//! `stream_options.include_usage`) and error bodies
//! `{"error":{"message","type","param","code"}}`.

pub(crate) mod errors;
pub(crate) mod stream;

use serde_json::{Map, Value};

use crate::dialect::stream::ProviderStream;
use crate::dialect::{Dialect, Route};
use crate::pivot::{invalid_upstream, parse_object, serialise};
use crate::pivot::{message_role, messages};
use crate::pivot::{OaContent, OaResponseView, OaUsage};
use crate::{Format, LlmError, PromptMessage, RequestOptions, ResponseInfo};

/// Parameters surfaced in `PreparedRequest::params`.
const PARAMS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "n",
    "reasoning_effort",
];

pub(crate) struct OpenAiChat;

impl Dialect for OpenAiChat {
    fn format(&self) -> Format {
        Format::OpenAiChat
    }

    fn params(&self) -> &'static [&'static str] {
        PARAMS
    }

    fn prompt(&self, req: &Map<String, Value>) -> Result<Vec<PromptMessage>, LlmError> {
        openai_prompt(req)
    }

    fn request_from(
        &self,
        route: Route,
        req: Map<String, Value>,
        _opts: &RequestOptions,
    ) -> Result<Map<String, Value>, LlmError> {
        route.client.request_to_pivot(req)
    }

    fn response_info(&self, body: &[u8]) -> Result<ResponseInfo, LlmError> {
        let view: OaResponseView = serde_json::from_slice(body).map_err(invalid_upstream)?;
        Ok(ResponseInfo {
            usage: view
                .usage
                .as_ref()
                .map(OaUsage::to_usage)
                .unwrap_or_default(),
            completion: view
                .choices
                .into_iter()
                .flatten()
                .map(|c| {
                    c.message
                        .and_then(|m| m.content)
                        .map(OaContent::into_text)
                        .unwrap_or_default()
                })
                .collect(),
            model: view.model,
        })
    }

    fn response_to(
        &self,
        route: Route,
        body: &[u8],
        info: &ResponseInfo,
    ) -> Result<Vec<u8>, LlmError> {
        let resp = parse_object(body)?;
        serialise(&route.client.response_from_pivot(resp, info))
    }

    fn stream_to(&self, route: Route, _include_usage: bool) -> Box<dyn ProviderStream> {
        stream::stream_to(route.ingress())
    }
}

/// The prompt of a Chat request: each message's text.
pub(crate) fn openai_prompt(req: &Map<String, Value>) -> Result<Vec<PromptMessage>, LlmError> {
    messages(req)
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(PromptMessage {
                role: message_role(i, m)?,
                content: crate::pivot::content_text(m.get("content")),
            })
        })
        .collect()
}
