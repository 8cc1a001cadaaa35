//! Amazon Bedrock Runtime `Converse` / `ConverseStream` as a provider
//! format: its entry in the dialect table; `request.rs`, `response.rs`,
//! `stream.rs` (over `eventstream.rs` frames) and `errors.rs` translate,
//! `wire.rs` holds what they share (usage and stop-reason mapping, ids).
//!
//! Bedrock is egress only. OpenAI Chat is the pivot: OpenAI clients are
//! translated to and from Converse directly; Anthropic clients go through
//! the existing Anthropic <-> OpenAI translation chained with OpenAI <->
//! Converse.
//!
//! References: Bedrock API reference, `Converse`
//! (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>:
//! `output.message`, `ContentBlock`, `stopReason`, `TokenUsage`),
//! `ConverseStream` (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html>)
//! and its errors (`ValidationException` 400, `AccessDeniedException` 403,
//! `ResourceNotFoundException` 404, `ModelTimeoutException` 408,
//! `ModelErrorException` 424, `ThrottlingException` 429,
//! `InternalServerException` 500, `ServiceUnavailableException` 503; body
//! `{"message": "..."}`, type in the `x-amzn-ErrorType` header).

pub(crate) mod errors;
pub mod eventstream;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod stream;
pub(crate) mod wire;

use crate::dialect::PivotProvider;
use crate::Format;

/// Bedrock's entry in the dialect table.
pub(crate) static BEDROCK: PivotProvider = PivotProvider {
    format: Format::Bedrock,
    not_a_client:
        "Bedrock is a provider format only; clients speak OpenAI Chat or Anthropic Messages",
    from_chat: request::translate,
    // Thinking blocks, `is_error`, `top_k` and `thinking` have no Chat
    // spelling: read them first.
    from_anthropic: request::translate_from_anthropic,
    response_info: response::response_info,
    to_client: response::to_client,
    error_to: errors::translate_error,
    stream_to: stream::stream_to,
};
