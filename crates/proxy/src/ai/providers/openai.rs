//! OpenAI, and any server with OpenAI's API (`openAICompatible`: vLLM, SGLang, Ollama, ...).

use super::{bearer_or_none, ProviderApi, Setup};
use crate::error::CompileError;

pub(super) const HOST: &str = "api.openai.com";
pub(super) const COMPATIBLE_NEEDS_HOST: &str =
    "`openAICompatible` needs `hostOverride` (the server's host:port)";

struct OpenAi;

impl ProviderApi for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }
    fn keeps_client_path(&self) -> bool {
        true
    }
}

/// `compatible`: a self-hosted server (same API; it only differs in where it lives).
pub(super) fn setup(
    m: &config::ProviderModel,
    key: Option<&config::BackendAuth>,
    _compatible: bool,
) -> Result<Setup, CompileError> {
    Ok(Setup {
        api: Box::new(OpenAi),
        model: m.model.clone(),
        credentials: bearer_or_none(key)?,
    })
}
