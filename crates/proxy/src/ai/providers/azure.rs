//! Azure OpenAI: OpenAI's API under a deployment, with an `api-version`, and `api-key`.

use super::{key_header_or_none, Operation, ProviderApi, Setup};
use crate::error::CompileError;

struct Azure {
    deployment: String,
    version: String,
}

impl ProviderApi for Azure {
    fn name(&self) -> &'static str {
        "azure.ai.openai"
    }
    fn operation_path(&self, prefix: &str, op: Operation) -> String {
        format!(
            "{prefix}/openai/deployments/{}/{}?api-version={}",
            self.deployment,
            op.openai_segment(),
            self.version
        )
    }
}

pub(super) fn setup(
    a: &config::AzureProvider,
    key: Option<&config::BackendAuth>,
) -> Result<Setup, CompileError> {
    let deployment = a
        .deployment
        .clone()
        .or_else(|| a.model.clone())
        .ok_or("`azureOpenAI` needs `deployment` (or `model`, used as the deployment name)")?;
    let version = a
        .api_version
        .clone()
        .unwrap_or_else(|| "2024-10-21".to_string());
    Ok(Setup {
        api: Box::new(Azure {
            deployment,
            version,
        }),
        model: a.model.clone(),
        credentials: key_header_or_none("api-key", key)?,
    })
}
