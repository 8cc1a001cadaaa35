//! OpenAI Responses API (`POST /v1/responses`) as a client dialect, through
//! the OpenAI Chat pivot: its entry in the dialect table. `request.rs`
//! translates the request to Chat (or passes it through to a provider that
//! has the Responses API), `response.rs` builds the `response` object and
//! error bodies from Chat ones, `stream.rs` turns Chat chunks into
//! Responses events.

pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod stream;

use serde_json::{json, Map, Value};

use crate::dialect::stream::ProviderStream;
use crate::dialect::{ClientSide, Dialect, ProviderTranslator, Route};
use crate::pivot::parse_object;
use crate::sse::write_event;
use crate::{Format, LlmError, PreparedRequest, RequestOptions, ResponseInfo};

pub(crate) struct OpenAiResponses;

impl Dialect for OpenAiResponses {
    fn format(&self) -> Format {
        Format::OpenAiResponses
    }

    // ---------- client side: through the Chat pivot ----------

    fn prepare(
        &self,
        route: Route,
        req: Map<String, Value>,
        opts: &RequestOptions,
    ) -> Result<PreparedRequest, LlmError> {
        if route.egress() == Format::OpenAiResponses {
            request::prepare_native(req, opts)
        } else {
            // Translated to OpenAI Chat, then prepared as a Chat request.
            request::prepare(route, req, opts)
        }
    }

    fn translate_response(
        &self,
        route: Route,
        body: &[u8],
        upstream_model: Option<&str>,
    ) -> Result<(Option<Vec<u8>>, ResponseInfo), LlmError> {
        if route.egress() == Format::OpenAiResponses {
            return crate::dialect::translate_via_provider(route, body, upstream_model);
        }
        response::translate_response(route.provider, body, upstream_model)
    }

    fn translate_error(&self, route: Route, status: u16, body: &[u8]) -> Vec<u8> {
        response::translate_error(route.provider, status, body)
    }

    fn stream(&self, route: Route, include_usage: bool) -> ClientSide {
        if route.egress() == Format::OpenAiResponses {
            return ClientSide::Provider(ProviderTranslator::new(route, include_usage));
        }
        ClientSide::Wrapped(Box::new(stream::ResponsesStream::new(route.provider)))
    }

    /// A provider's own Responses stream that broke off: its typed `error`
    /// event. (Translated Responses streams write theirs in `responses/stream.rs`.)
    fn write_stream_error(&self, kind: Option<&str>, message: &str, out: &mut Vec<u8>) {
        let body = json!({
            "type": "error",
            "code": kind.unwrap_or("server_error"),
            "message": message,
            "param": null,
        });
        write_event(out, Some("error"), &body.to_string());
    }

    // ---------- provider side: Responses clients only ----------

    fn check_provider(&self, ingress: Format) -> Result<(), LlmError> {
        if ingress == Format::OpenAiResponses {
            return Ok(());
        }
        Err(LlmError::bad_request(
            "only a Responses client can be sent to a provider's Responses API",
        ))
    }

    fn request_from(
        &self,
        route: Route,
        _req: Map<String, Value>,
        _opts: &RequestOptions,
    ) -> Result<Map<String, Value>, LlmError> {
        // Refused by `check_provider` first.
        Err(self
            .check_provider(route.ingress())
            .err()
            .unwrap_or_else(|| {
                LlmError::bad_request("a Responses client is prepared by its own dialect")
            }))
    }

    fn response_info(&self, body: &[u8]) -> Result<ResponseInfo, LlmError> {
        response::response_info(body)
    }

    fn response_to(
        &self,
        _route: Route,
        body: &[u8],
        _info: &ResponseInfo,
    ) -> Result<Vec<u8>, LlmError> {
        parse_object(body)?;
        Err(LlmError::bad_gateway(
            "OpenAI Responses is a client format only, not a provider format",
        ))
    }

    fn stream_to(&self, _route: Route, _include_usage: bool) -> Box<dyn ProviderStream> {
        stream::observed_only()
    }
}
