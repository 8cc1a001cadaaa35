//! `backends[].ai`: LLM provider backends and the `ai` policy.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Policies;
use crate::values::{HostPort, Secret};

/// An LLM provider backend (served by the LLM gateway).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AiBackend {
    pub name: String,
    pub provider: Provider,
    /// Send to this host:port instead of the provider's default host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_override: Option<HostPort>,
    /// Send to a pod of this model pool (`pools[].name`), picked per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_override: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Policies>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub enum Provider {
    #[serde(rename = "openAI")]
    OpenAi(ProviderModel),
    #[serde(rename = "openAICompatible")]
    OpenAiCompatible(ProviderModel),
    Anthropic(ProviderModel),
    Gemini(ProviderModel),
    Vertex(VertexProvider),
    Bedrock(BedrockProvider),
    #[serde(rename = "azureOpenAI")]
    AzureOpenAi(AzureProvider),
    Copilot(CopilotProvider),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CopilotProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Where the GitHub token (`backendAuth.key`) is traded for a Copilot token. Default
    /// `https://api.github.com/copilot_internal/v2/token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderModel {
    /// Model to use regardless of what the client asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VertexProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub project_id: String,
    /// Vertex location, e.g. `us-central1` (default) or `global`.
    #[serde(default, alias = "location", skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A Google service-account key (JSON), usually `{file: sa.json}`; access tokens are
    /// obtained from its `token_uri` and cached until they expire. Default: the file named by
    /// `GOOGLE_APPLICATION_CREDENTIALS`. A `backendAuth.key` is used as a ready access token instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BedrockProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub region: String,
    /// Static AWS credentials for SigV4. Default: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// and `AWS_SESSION_TOKEN` from the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AzureProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `<resource>.openai.azure.com`.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// The `ai` backend policy: which LLM operation each path is.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AiPolicy {
    /// Path suffix (or `*`) -> route type. The longest matching suffix wins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, AiRouteType>,
    /// Requested model (wildcards allowed) -> model sent to the provider.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_aliases: BTreeMap<String, String>,
    /// Request fields set when the client did not.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub defaults: BTreeMap<String, serde_json::Value>,
    /// Request fields always set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AiRouteType {
    Completions,
    Messages,
    Responses,
    Embeddings,
    Models,
    AnthropicTokenCount,
    Passthrough,
    Detect,
}

single_key_enum!(
    Provider,
    "one of `openAI`, `openAICompatible`, `anthropic`, `gemini`, `vertex`, `bedrock`, `azureOpenAI`, `copilot`"
);
