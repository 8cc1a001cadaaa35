//! The `ai` backend adapter: classifies an LLM call by path, prepares (and if the provider
//! speaks another dialect, translates) the request, adds the provider's credentials, and
//! shapes the response — translated, with usage extracted — back into the caller's dialect.

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use llm::Format;
use serde_json::{Map, Value};

use config::{AiBackend, AiRouteType, Policies, Provider};

pub mod aws;
pub mod github;
pub mod google;
mod plan;
pub mod providers;
mod response;
pub(crate) mod token;

pub use providers::{Operation, ProviderApi};

pub use plan::{authorize, plan, provider_headers, Forward, Plan, Shape};
pub use response::shape_response;

use crate::error::{CompileError, ProxyError};
use crate::upstream::Upstream;

/// Anthropic requires `max_tokens`; used when the caller (an OpenAI client) gave none.
const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Largest provider error body read for translation.
const MAX_ERROR_BODY: usize = 1 << 20;

/// Client credential headers that must not reach a provider once the gateway holds the key.
static CLIENT_CREDENTIALS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-goog-api-key"),
];

pub struct AiTarget {
    /// Where calls go; with `pool`, only a placeholder (each call goes to a picked pod).
    pub upstream: Upstream,
    /// `ai.pool`: the pod is picked per call.
    pub pool: Option<Box<crate::backend::pool::PoolTarget>>,
    /// The provider's API: paths, dialect, required headers (`providers/`).
    pub provider: Box<dyn ProviderApi>,
    /// Host sent upstream unless `urlRewrite` or header modifiers change it.
    pub authority: Authority,
    /// Suffix -> route type, longest suffix first.
    routes: Vec<(Box<str>, AiRouteType)>,
    fallback: AiRouteType,
    model_override: Option<String>,
    aliases: Vec<(String, String)>,
    defaults: Map<String, Value>,
    overrides: Map<String, Value>,
    path_override: Option<PathAndQuery>,
    path_prefix: String,
    credentials: Credentials,
    max_buffered: usize,
}

/// How the gateway proves itself to the provider.
pub(crate) enum Credentials {
    /// The client's own credentials pass through.
    None,
    /// A fixed header (API key or bearer token), marked sensitive.
    Header(HeaderName, HeaderValue),
    /// Vertex: OAuth access tokens for a service account.
    Google(Arc<google::GoogleTokenSource>),
    /// Bedrock: SigV4 over each request.
    Aws(Box<aws::AwsSigner>),
    /// Copilot: a GitHub token traded for short-lived Copilot tokens.
    Copilot(Box<github::CopilotTokenSource>),
}

/// How one request to an `ai` backend is treated.
#[derive(Clone, Copy, Debug)]
pub struct AiCall {
    pub route: AiRouteType,
    /// The caller's dialect: errors and responses are written in it.
    pub ingress: Format,
    /// SigV4 signs the payload, so even a passthrough body is read first.
    signs_payload: bool,
}

impl AiCall {
    /// Whether the adapter reads the request body (and so must have it buffered).
    pub fn needs_body(&self) -> bool {
        self.signs_payload
            || matches!(
                self.route,
                AiRouteType::Completions
                    | AiRouteType::Messages
                    | AiRouteType::Embeddings
                    | AiRouteType::Responses
                    | AiRouteType::AnthropicTokenCount
            )
    }
}

pub struct AiCompileInput<'a> {
    pub ai: &'a AiBackend,
    /// The backend's policies, already layered over the route's (`policy::layered`).
    pub policies: &'a Policies,
    pub limits: &'a config::Limits,
}

/// Where an `ai` backend connects: (host, port, use TLS by default).
pub fn dial_target(ai: &AiBackend) -> Result<(String, u16, bool), CompileError> {
    if let Some(h) = &ai.host_override {
        return Ok((h.host().to_string(), h.port(), false));
    }
    if let Some(pool) = &ai.pool {
        // Never dialled: a pooled call goes to the picked pod's own client.
        return Ok((format!("pool.{pool}.invalid"), 1, false));
    }
    let host = providers::default_host(&ai.provider)?;
    Ok((host, 443, true))
}

impl AiTarget {
    pub fn compile(
        input: AiCompileInput<'_>,
        upstream: Upstream,
    ) -> Result<AiTarget, CompileError> {
        let ai = input.ai;
        let ai_policy = input.policies.ai.clone().unwrap_or_default();
        let key = input.policies.backend_auth.as_ref();

        let providers::Setup {
            api: provider,
            model,
            credentials,
        } = providers::setup(&ai.provider, key, input.limits).map_err(CompileError::new)?;
        let authority = match (&ai.provider, &ai.host_override) {
            (Provider::OpenAiCompatible(_), Some(h)) => h.0.to_string(),
            (Provider::OpenAiCompatible(_), None) if ai.pool.is_some() => dial_target(ai)?.0,
            _ => providers::default_host(&ai.provider)?,
        };
        let authority = Authority::try_from(authority.as_str())
            .map_err(|_| CompileError::new(format!("{authority:?} is not a valid host")))?;

        let table = !ai_policy.routes.is_empty();
        let mut routes = Vec::new();
        let mut fallback = None;
        for (suffix, kind) in &ai_policy.routes {
            if suffix == "*" {
                fallback = Some(*kind);
            } else {
                routes.push((suffix.as_str().into(), *kind));
            }
        }
        let fallback = fallback.unwrap_or(if routes.is_empty() {
            AiRouteType::Completions
        } else {
            AiRouteType::Passthrough
        });
        let path_override = ai
            .path_override
            .as_deref()
            .map(|p| {
                PathAndQuery::try_from(p)
                    .map_err(|_| CompileError::at("pathOverride", format!("{p:?} is not a path")))
            })
            .transpose()?;
        let mut target = AiTarget {
            upstream,
            provider,
            authority,
            pool: None,
            routes,
            fallback,
            model_override: model,
            aliases: ordered_aliases(ai_policy.model_aliases),
            defaults: ai_policy.defaults.into_iter().collect(),
            overrides: ai_policy.overrides.into_iter().collect(),
            path_override,
            path_prefix: ai
                .path_prefix
                .as_deref()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_string(),
            credentials,
            max_buffered: input.limits.max_buffered_body_bytes,
        };
        if !table {
            target.routes = target.well_known_routes();
        }
        target
            .routes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(target)
    }

    /// Without a `routes` table: the operation by its well-known path suffix (`completions`
    /// for anything else, the fallback). `/models` is answered from config when the config
    /// names models (the forced `model`, `modelAliases`); otherwise it goes to the provider for
    /// its own list where the provider has one at the client's path (OpenAI, OpenAI-compatible,
    /// Anthropic), and is answered from config (an empty list) where it has not.
    fn well_known_routes(&self) -> Vec<(Box<str>, AiRouteType)> {
        let models = if self.model_models().is_empty() && self.provider.keeps_client_path() {
            AiRouteType::Passthrough
        } else {
            AiRouteType::Models
        };
        [
            ("/chat/completions", AiRouteType::Completions),
            ("/completions", AiRouteType::Completions),
            ("/messages", AiRouteType::Messages),
            ("/messages/count_tokens", AiRouteType::AnthropicTokenCount),
            ("/responses", AiRouteType::Responses),
            ("/embeddings", AiRouteType::Embeddings),
            ("/models", models),
        ]
        .into_iter()
        .map(|(suffix, kind)| (suffix.into(), kind))
        .collect()
    }

    /// The route type by the longest matching path suffix, `*` as the fallback (without a
    /// `routes` table, the well-known suffixes and `completions`).
    pub fn classify(&self, path: &str) -> AiCall {
        let route = self
            .routes
            .iter()
            .find(|(suffix, _)| path.ends_with(&**suffix))
            .map_or(self.fallback, |(_, r)| *r);
        let ingress = match route {
            AiRouteType::Messages | AiRouteType::AnthropicTokenCount => Format::AnthropicMessages,
            AiRouteType::Responses => Format::OpenAiResponses,
            AiRouteType::Passthrough | AiRouteType::Detect if path.ends_with("/messages") => {
                Format::AnthropicMessages
            }
            AiRouteType::Passthrough | AiRouteType::Detect => match self.provider.egress() {
                Format::AnthropicMessages => Format::AnthropicMessages,
                _ => Format::OpenAiChat,
            },
            _ => Format::OpenAiChat,
        };
        AiCall {
            route,
            ingress,
            signs_payload: matches!(self.credentials, Credentials::Aws(_)),
        }
    }

    /// The provider's own path for a chat call, under `pathPrefix`.
    fn chat_path(&self, model: Option<&str>, stream: bool) -> Result<String, ProxyError> {
        self.provider.chat_path(&self.path_prefix, model, stream)
    }

    /// The provider's own path for an operation, under `pathPrefix`.
    fn provider_path(&self, op: Operation) -> String {
        self.provider.operation_path(&self.path_prefix, op)
    }

    /// The model names this backend's config names (override, aliases and their targets).
    pub fn model_models(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |m: &str| {
            if !m.contains('*') && !out.iter().any(|x| x == m) {
                out.push(m.to_string());
            }
        };
        if let Some(m) = &self.model_override {
            add(m);
        }
        for (from, to) in &self.aliases {
            add(from);
            add(to);
        }
        out
    }

    fn request_options(&self) -> llm::RequestOptions<'_> {
        llm::RequestOptions {
            model_override: self.model_override.as_deref(),
            model_aliases: &self.aliases,
            defaults: &self.defaults,
            overrides: &self.overrides,
            default_max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

/// Exact names first, then patterns from the most literal to the least, so the most specific
/// alias wins whatever the order in the file.
fn ordered_aliases(map: std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = map.into_iter().collect();
    v.sort_by_key(|(pattern, _)| {
        let wild = pattern.contains('*');
        let literal = pattern.chars().filter(|c| *c != '*').count();
        (wild, std::cmp::Reverse(literal))
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use bytes::Bytes;
    use http::HeaderMap;

    fn target(yaml: &str) -> AiTarget {
        let ai: AiBackend = serde_yaml_ng::from_str(yaml).unwrap();
        let key = crate::upstream::UpstreamKey {
            host: "127.0.0.1".into(),
            port: 1,
            http2: false,
            tls_fingerprint: None,
            connect_timeout: std::time::Duration::from_secs(1),
            pool_idle_timeout: std::time::Duration::from_secs(1),
            pool_max_idle: 1,
        };
        let upstream = Upstream::new(&key, None);
        AiTarget::compile(
            AiCompileInput {
                ai: &ai,
                policies: &crate::policy::layered(None, ai.policies.as_ref()),
                limits: &config::Limits::default(),
            },
            upstream,
        )
        .unwrap()
    }

    #[test]
    fn longest_suffix_wins_and_star_is_the_fallback() {
        let t = target(
            "name: a\nprovider: {openAI: {}}\npolicies:\n  ai:\n    routes:\n      /chat/completions: completions\n      /v1/messages: messages\n      /messages: detect\n      '*': passthrough\n",
        );
        assert!(matches!(
            t.classify("/x/v1/chat/completions").route,
            AiRouteType::Completions
        ));
        assert!(matches!(
            t.classify("/v1/messages").route,
            AiRouteType::Messages
        ));
        assert_eq!(
            t.classify("/v1/messages").ingress,
            Format::AnthropicMessages
        );
        assert!(matches!(
            t.classify("/other/messages").route,
            AiRouteType::Detect
        ));
        assert!(matches!(
            t.classify("/v1/models").route,
            AiRouteType::Passthrough
        ));
    }

    #[test]
    fn no_table_classifies_by_well_known_suffix_then_completions() {
        let t = target("name: a\nprovider: {anthropic: {}}\n");
        for (path, route, ingress) in [
            (
                "/v1/chat/completions",
                AiRouteType::Completions,
                Format::OpenAiChat,
            ),
            (
                "/v1/completions",
                AiRouteType::Completions,
                Format::OpenAiChat,
            ),
            (
                "/v1/messages",
                AiRouteType::Messages,
                Format::AnthropicMessages,
            ),
            (
                "/anthropic/v1/messages/count_tokens",
                AiRouteType::AnthropicTokenCount,
                Format::AnthropicMessages,
            ),
            (
                "/v1/responses",
                AiRouteType::Responses,
                Format::OpenAiResponses,
            ),
            (
                "/v1/embeddings",
                AiRouteType::Embeddings,
                Format::OpenAiChat,
            ),
            // No model in config: the provider's own list, in its dialect.
            (
                "/v1/models",
                AiRouteType::Passthrough,
                Format::AnthropicMessages,
            ),
            ("/anything", AiRouteType::Completions, Format::OpenAiChat),
            (
                "/v1/models/m1",
                AiRouteType::Completions,
                Format::OpenAiChat,
            ),
            (
                "/v1/messagesx",
                AiRouteType::Completions,
                Format::OpenAiChat,
            ),
        ] {
            let call = t.classify(path);
            assert_eq!(call.route, route, "{path}");
            assert_eq!(call.ingress, ingress, "{path}");
        }
    }

    #[test]
    fn no_table_models_come_from_config_when_it_names_them_or_the_provider_has_no_list() {
        let t = target("name: a\nprovider: {openAI: {}}\n");
        assert_eq!(t.classify("/v1/models").route, AiRouteType::Passthrough);
        let t = target("name: a\nprovider: {openAI: {model: gpt-x}}\n");
        assert_eq!(t.classify("/v1/models").route, AiRouteType::Models);
        let t = target(
            "name: a\nprovider: {anthropic: {}}\npolicies: {ai: {modelAliases: {fast: claude-x}}}\n",
        );
        assert_eq!(t.classify("/v1/models").route, AiRouteType::Models);
        let t = target("name: a\nprovider: {gemini: {}}\n");
        assert_eq!(t.classify("/v1/models").route, AiRouteType::Models);
    }

    #[test]
    fn a_table_replaces_the_well_known_suffixes() {
        // Only `*`: everything is that.
        let t = target(
            "name: a\nprovider: {openAI: {}}\npolicies: {ai: {routes: {'*': passthrough}}}\n",
        );
        assert_eq!(t.classify("/v1/messages").route, AiRouteType::Passthrough);
        assert_eq!(
            t.classify("/v1/chat/completions").route,
            AiRouteType::Passthrough
        );
        // Suffixes without `*`: the rest is passthrough, not the well-known operations.
        let t = target("name: a\nprovider: {openAI: {}}\npolicies: {ai: {routes: {/v1/chat/completions: completions}}}\n");
        assert_eq!(t.classify("/v1/messages").route, AiRouteType::Passthrough);
        assert_eq!(t.classify("/v1/models").route, AiRouteType::Passthrough);
        assert_eq!(
            t.classify("/v1/chat/completions").route,
            AiRouteType::Completions
        );
    }

    #[test]
    fn provider_paths_follow_each_api() {
        let t = target("name: a\nprovider: {anthropic: {}}\npathPrefix: /proxy/\n");
        assert_eq!(t.provider_path(Operation::Chat), "/proxy/v1/messages");
        let t = target(
            "name: a\nprovider: {azureOpenAI: {host: r.openai.azure.com, deployment: d1}}\n",
        );
        assert_eq!(
            t.provider_path(Operation::Chat),
            "/openai/deployments/d1/chat/completions?api-version=2024-10-21"
        );
        let t = target("name: a\nprovider: {gemini: {}}\n");
        assert_eq!(
            t.provider_path(Operation::Embeddings),
            "/v1beta/openai/embeddings"
        );
    }

    #[test]
    fn credentials_are_provider_shaped_and_replace_the_clients() {
        let t =
            target("name: a\nprovider: {anthropic: {}}\npolicies: {backendAuth: {key: sk-ant}}\n");
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client"),
        );
        let parts = http::Request::new(()).into_parts().0;
        let Plan::Forward(fwd) = plan(
            &t,
            t.classify("/v1/messages"),
            &parts,
            body::empty(),
            Some(&Bytes::from_static(
                br#"{"model":"m","max_tokens":5,"messages":[]}"#,
            )),
            &std::sync::Arc::new(crate::observe::LlmSlot {
                start: std::time::Instant::now(),
                record: Default::default(),
            }),
        )
        .unwrap() else {
            panic!("should forward")
        };
        provider_headers(&t, &mut h, &fwd);
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert_eq!(h.get("x-api-key").unwrap(), "sk-ant");
        assert!(h.get("x-api-key").unwrap().is_sensitive());
        assert_eq!(h.get("anthropic-version").unwrap(), "2023-06-01");
    }

    #[test]
    fn models_list_comes_from_config() {
        let t = target(
            "name: a\nprovider: {openAI: {model: gpt-x}}\npolicies:\n  ai:\n    modelAliases:\n      fast: gpt-mini\n      'claude-*': gpt-x\n",
        );
        assert_eq!(t.model_models(), vec!["gpt-x", "fast", "gpt-mini"]);
    }
}
