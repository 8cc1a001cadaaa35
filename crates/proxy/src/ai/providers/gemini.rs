//! Google Gemini API: `generateContent` with the model in the URL, `x-goog-api-key`, and
//! OpenAI-shaped embeddings on its OpenAI-compatible surface.

use llm::Format;

use super::{key_header_or_none, need_model, path_segment, Operation, ProviderApi, Setup};
use crate::error::{CompileError, ProxyError};

pub(super) const HOST: &str = "generativelanguage.googleapis.com";

struct Gemini;

/// `generateContent`, or its streaming form with SSE framing.
pub(super) fn method(stream: bool) -> &'static str {
    if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    }
}

impl ProviderApi for Gemini {
    fn name(&self) -> &'static str {
        "gcp.gemini"
    }
    fn egress(&self) -> Format {
        Format::Gemini
    }
    fn serves_embeddings(&self) -> bool {
        true
    }
    fn operation_path(&self, prefix: &str, op: Operation) -> String {
        format!("{prefix}/v1beta/openai/{}", op.openai_segment())
    }
    fn chat_path(
        &self,
        prefix: &str,
        model: Option<&str>,
        stream: bool,
    ) -> Result<String, ProxyError> {
        let model = path_segment(need_model(self.name(), model)?);
        Ok(format!("{prefix}/v1beta/models/{model}:{}", method(stream)))
    }
}

pub(super) fn setup(
    m: &config::ProviderModel,
    key: Option<&config::BackendAuth>,
) -> Result<Setup, CompileError> {
    Ok(Setup {
        api: Box::new(Gemini),
        model: m.model.clone(),
        credentials: key_header_or_none("x-goog-api-key", key)?,
    })
}
