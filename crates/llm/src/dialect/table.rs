//! The one table of dialects: every `Format` and its implementation. Only
//! the entry points (`prepare_request`, `translate_response`,
//! `translate_error`, `error_body`, `StreamTranslator::new`) read it.

use crate::dialect::{Dialect, Route};
use crate::Format;

/// The implementation of `format`. Adding a `Format` variant fails to
/// compile here until its dialect is registered.
pub(crate) fn of(format: Format) -> &'static dyn Dialect {
    match format {
        Format::OpenAiChat => &crate::openai::OpenAiChat,
        Format::AnthropicMessages => &crate::anthropic::AnthropicMessages,
        Format::Gemini => &crate::gemini::GEMINI,
        Format::OpenAiResponses => &crate::responses::OpenAiResponses,
        Format::Bedrock => &crate::bedrock::BEDROCK,
    }
}

/// The route from a client speaking `ingress` to a provider speaking `egress`.
pub(crate) fn route(ingress: Format, egress: Format) -> Route {
    Route {
        client: of(ingress),
        provider: of(egress),
    }
}
