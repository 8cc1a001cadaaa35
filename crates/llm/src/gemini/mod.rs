//! Google Gemini (`generateContent`) as a provider format: its entry in the
//! dialect table; `request.rs`, `response.rs`, `stream.rs` and `errors.rs`
//! translate, `wire.rs` holds what they share (usage and finish-reason
//! mapping, tool-call ids and thought signatures), `schema.rs` the JSON
//! Schema subset.
//!
//! Gemini is egress only. OpenAI Chat is the pivot: OpenAI clients are
//! translated to and from Gemini directly; Anthropic clients go through the
//! existing Anthropic <-> OpenAI translation chained with OpenAI <-> Gemini.
//!
//! References: Gemini API `models.generateContent` /
//! `models.streamGenerateContent` (<https://ai.google.dev/api/generate-content>:
//! `GenerateContentResponse`, `Candidate`, `FinishReason`, `UsageMetadata`),
//! function calling (<https://ai.google.dev/gemini-api/docs/function-calling>),
//! thinking and thought signatures
//! (<https://ai.google.dev/gemini-api/docs/thinking>), Vertex AI
//! `GenerateContentResponse` (same shape), and Google API errors
//! (<https://cloud.google.com/apis/design/errors>:
//! `{"error":{"code","message","status","details"}}`).

pub(crate) mod errors;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod schema;
pub(crate) mod stream;
pub(crate) mod wire;

use crate::dialect::PivotProvider;
use crate::Format;

/// Gemini's entry in the dialect table.
pub(crate) static GEMINI: PivotProvider = PivotProvider {
    format: Format::Gemini,
    not_a_client:
        "Gemini is a provider format only; clients speak OpenAI Chat or Anthropic Messages",
    from_chat: request::translate,
    // `top_k` and `thinking` have no Chat spelling: read them first.
    from_anthropic: request::translate_from_anthropic,
    response_info: response::response_info,
    to_client: response::to_client,
    error_to: errors::translate_error,
    stream_to: stream::stream_to,
};
