//! Anthropic: the Messages API, `x-api-key`, and the `anthropic-version` it requires.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use llm::Format;

use super::{key_header_or_none, Operation, ProviderApi, Setup};
use crate::error::CompileError;

pub(super) const HOST: &str = "api.anthropic.com";
/// Anthropic rejects requests without a version; this is the one its reference documents.
const VERSION: HeaderValue = HeaderValue::from_static("2023-06-01");

struct Anthropic;

impl ProviderApi for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }
    fn egress(&self) -> Format {
        Format::AnthropicMessages
    }
    fn keeps_client_path(&self) -> bool {
        true
    }
    fn counts_tokens(&self) -> bool {
        true
    }
    fn operation_path(&self, prefix: &str, op: Operation) -> String {
        match op {
            Operation::Chat => format!("{prefix}/v1/messages"),
            other => format!("{prefix}/v1/{}", other.openai_segment()),
        }
    }
    fn required_headers(&self, headers: &mut HeaderMap) {
        let version = HeaderName::from_static("anthropic-version");
        if !headers.contains_key(&version) {
            headers.insert(version, VERSION);
        }
    }
}

pub(super) fn setup(
    m: &config::ProviderModel,
    key: Option<&config::BackendAuth>,
) -> Result<Setup, CompileError> {
    Ok(Setup {
        api: Box::new(Anthropic),
        model: m.model.clone(),
        credentials: key_header_or_none("x-api-key", key)?,
    })
}
