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
mod response;
mod token;

pub use plan::{authorize, plan, provider_headers, Forward, Plan, Shape};
pub use response::shape_response;

use crate::error::ProxyError;
use crate::upstream::Upstream;

/// Which provider API family a backend talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    OpenAiCompatible,
    Anthropic,
    Gemini,
    Vertex,
    Bedrock,
    AzureOpenAi,
    Copilot,
}

impl ProviderKind {
    /// The OpenTelemetry GenAI `gen_ai.provider.name` value.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gcp.gemini",
            ProviderKind::Vertex => "gcp.vertex_ai",
            ProviderKind::Bedrock => "aws.bedrock",
            ProviderKind::AzureOpenAi => "azure.ai.openai",
            ProviderKind::Copilot => "github.copilot",
        }
    }

    fn egress(self) -> Format {
        match self {
            ProviderKind::Anthropic => Format::AnthropicMessages,
            ProviderKind::Gemini | ProviderKind::Vertex => Format::Gemini,
            ProviderKind::Bedrock => Format::Bedrock,
            _ => Format::OpenAiChat,
        }
    }

    /// Providers whose URL layout is the client's own: a same-dialect call keeps its path.
    fn keeps_client_path(self) -> bool {
        matches!(
            self,
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible | ProviderKind::Anthropic
        )
    }
}

/// Anthropic rejects requests without a version; this is the one its reference documents.
const ANTHROPIC_VERSION: HeaderValue = HeaderValue::from_static("2023-06-01");
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
    pub pool: Option<Box<crate::pool::PoolTarget>>,
    pub provider: ProviderKind,
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
    azure: Option<(String, String)>,
    /// Vertex: (project, location).
    vertex: Option<(String, String)>,
    credentials: Credentials,
    max_buffered: usize,
}

/// How the gateway proves itself to the provider.
enum Credentials {
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
    pub route_policies: Option<&'a Policies>,
    pub backend_policies: Option<&'a Policies>,
    pub limits: &'a config::Limits,
}

/// Where an `ai` backend connects: (host, port, use TLS by default).
pub fn dial_target(ai: &AiBackend) -> Result<(String, u16, bool), String> {
    if let Some(h) = &ai.host_override {
        return Ok((h.host().to_string(), h.port(), false));
    }
    if let Some(pool) = &ai.pool {
        // Never dialled: a pooled call goes to the picked pod's own client.
        return Ok((format!("pool.{pool}.invalid"), 1, false));
    }
    let host = match &ai.provider {
        Provider::OpenAi(_) => "api.openai.com".to_string(),
        Provider::OpenAiCompatible(_) => {
            return Err("`openAICompatible` needs `hostOverride` (the server's host:port)".into())
        }
        Provider::Anthropic(_) => "api.anthropic.com".to_string(),
        Provider::Gemini(_) => "generativelanguage.googleapis.com".to_string(),
        Provider::Vertex(v) => match v.region.as_deref() {
            None | Some("global") => "aiplatform.googleapis.com".to_string(),
            Some(r) => format!("{r}-aiplatform.googleapis.com"),
        },
        Provider::Bedrock(b) => format!("bedrock-runtime.{}.amazonaws.com", b.region),
        Provider::AzureOpenAi(a) => a.host.clone(),
        Provider::Copilot(_) => "api.githubcopilot.com".to_string(),
    };
    Ok((host, 443, true))
}

impl AiTarget {
    pub fn compile(input: AiCompileInput<'_>, upstream: Upstream) -> Result<AiTarget, String> {
        let ai = input.ai;
        // `backend_policies` already has the ai backend's own policies laid over it.
        let pick = |f: &dyn Fn(&Policies) -> bool| -> Option<&Policies> {
            [input.backend_policies, input.route_policies]
                .into_iter()
                .flatten()
                .find(|p| f(p))
        };
        let ai_policy = pick(&|p| p.ai.is_some()).and_then(|p| p.ai.clone());
        let ai_policy = ai_policy.unwrap_or_default();
        let key = pick(&|p| p.backend_auth.is_some()).and_then(|p| p.backend_auth.as_ref());

        let (provider, model) = match &ai.provider {
            Provider::OpenAi(m) => (ProviderKind::OpenAi, m.model.clone()),
            Provider::OpenAiCompatible(m) => (ProviderKind::OpenAiCompatible, m.model.clone()),
            Provider::Anthropic(m) => (ProviderKind::Anthropic, m.model.clone()),
            Provider::Gemini(m) => (ProviderKind::Gemini, m.model.clone()),
            Provider::AzureOpenAi(a) => (ProviderKind::AzureOpenAi, a.model.clone()),
            Provider::Vertex(v) => (ProviderKind::Vertex, v.model.clone()),
            Provider::Bedrock(b) => (ProviderKind::Bedrock, b.model.clone()),
            Provider::Copilot(m) => (ProviderKind::Copilot, m.model.clone()),
        };
        let azure = match &ai.provider {
            Provider::AzureOpenAi(a) => {
                let deployment = a.deployment.clone().or_else(|| a.model.clone()).ok_or(
                    "`azureOpenAI` needs `deployment` (or `model`, used as the deployment name)",
                )?;
                let version = a
                    .api_version
                    .clone()
                    .unwrap_or_else(|| "2024-10-21".to_string());
                Some((deployment, version))
            }
            _ => None,
        };
        let authority = match (&ai.provider, &ai.host_override) {
            (Provider::OpenAiCompatible(_), Some(h)) => h.0.to_string(),
            (Provider::OpenAiCompatible(_), None) if ai.pool.is_some() => dial_target(ai)?.0,
            _ => {
                dial_target(&AiBackend {
                    host_override: None,
                    ..ai.clone()
                })?
                .0
            }
        };
        let authority = Authority::try_from(authority.as_str())
            .map_err(|_| format!("{authority:?} is not a valid host"))?;

        let static_header = |name: HeaderName, value: String| {
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                "backendAuth.key contains characters not allowed in a header".to_string()
            })?;
            value.set_sensitive(true);
            Ok::<_, String>(Credentials::Header(name, value))
        };
        let credentials = match (&ai.provider, key) {
            (Provider::Bedrock(b), _) => Credentials::Aws(Box::new(aws::AwsSigner::new(b)?)),
            (Provider::Vertex(_), Some(k)) => {
                static_header(header::AUTHORIZATION, format!("Bearer {}", k.key.expose()))?
            }
            (Provider::Vertex(v), None) => {
                let json = match &v.credentials {
                    Some(secret) => secret.expose().to_string(),
                    None => {
                        let path = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").ok_or(
                            "vertex needs `credentials` (a service-account key), GOOGLE_APPLICATION_CREDENTIALS, or backendAuth.key (an access token)",
                        )?;
                        std::fs::read_to_string(&path).map_err(|e| {
                            format!(
                                "GOOGLE_APPLICATION_CREDENTIALS ({}): {e}",
                                path.to_string_lossy()
                            )
                        })?
                    }
                };
                Credentials::Google(google::GoogleTokenSource::from_json(&json, input.limits)?)
            }
            (Provider::Copilot(c), Some(k)) => {
                Credentials::Copilot(Box::new(github::CopilotTokenSource::new(
                    k.key.expose(),
                    c.token_url.as_deref().unwrap_or(github::DEFAULT_TOKEN_URL),
                    input.limits,
                )?))
            }
            (Provider::Copilot(_), None) => {
                return Err(
                    "copilot needs backendAuth.key: a GitHub OAuth token with Copilot access"
                        .into(),
                )
            }
            (_, None) => Credentials::None,
            (Provider::Anthropic(_), Some(k)) => static_header(
                HeaderName::from_static("x-api-key"),
                k.key.expose().to_string(),
            )?,
            (Provider::AzureOpenAi(_), Some(k)) => static_header(
                HeaderName::from_static("api-key"),
                k.key.expose().to_string(),
            )?,
            (Provider::Gemini(_), Some(k)) => static_header(
                HeaderName::from_static("x-goog-api-key"),
                k.key.expose().to_string(),
            )?,
            (_, Some(k)) => {
                static_header(header::AUTHORIZATION, format!("Bearer {}", k.key.expose()))?
            }
        };
        let vertex = match &ai.provider {
            Provider::Vertex(v) => Some((
                v.project_id.clone(),
                v.region
                    .clone()
                    .unwrap_or_else(|| "us-central1".to_string()),
            )),
            _ => None,
        };

        let mut routes = Vec::new();
        let mut fallback = None;
        for (suffix, kind) in &ai_policy.routes {
            if suffix == "*" {
                fallback = Some(*kind);
            } else {
                routes.push((suffix.as_str().into(), *kind));
            }
        }
        routes.sort_by_key(|(s, _): &(Box<str>, AiRouteType)| std::cmp::Reverse(s.len()));
        let fallback = fallback.unwrap_or(if routes.is_empty() {
            AiRouteType::Completions
        } else {
            AiRouteType::Passthrough
        });
        let path_override = ai
            .path_override
            .as_deref()
            .map(|p| {
                PathAndQuery::try_from(p).map_err(|_| format!("pathOverride {p:?} is not a path"))
            })
            .transpose()?;
        Ok(AiTarget {
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
            azure,
            vertex,
            credentials,
            max_buffered: input.limits.max_buffered_body_bytes,
        })
    }

    /// The route type by the longest matching path suffix, `*` as the fallback.
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

    /// The provider's own path for a chat call, under `pathPrefix`. Gemini, Vertex and
    /// Bedrock name the model (and streaming) in the URL.
    fn chat_path(&self, model: Option<&str>, stream: bool) -> Result<String, ProxyError> {
        let p = &self.path_prefix;
        let need_model = || {
            model.filter(|m| !m.is_empty()).ok_or_else(|| {
                ProxyError::bad_request(format!(
                    "{} needs a model: set `model` in the request or the provider config",
                    self.provider.name()
                ))
            })
        };
        let method = if stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        Ok(match self.provider {
            ProviderKind::Gemini => {
                format!("{p}/v1beta/models/{}:{method}", path_segment(need_model()?))
            }
            ProviderKind::Vertex => {
                let (project, location) = self.vertex.as_ref().map_or(("", ""), |(p, l)| (p, l));
                format!(
                    "{p}/v1/projects/{project}/locations/{location}/publishers/google/models/{}:{method}",
                    path_segment(need_model()?)
                )
            }
            ProviderKind::Bedrock => format!(
                "{p}/model/{}/{}",
                path_segment(need_model()?),
                if stream {
                    "converse-stream"
                } else {
                    "converse"
                }
            ),
            _ => self.provider_path(Operation::Chat),
        })
    }

    /// The provider's own path for an operation, under `pathPrefix`.
    fn provider_path(&self, op: Operation) -> String {
        let p = &self.path_prefix;
        if let Some((deployment, version)) = &self.azure {
            let op = match op {
                Operation::Chat => "chat/completions",
                Operation::Embeddings => "embeddings",
                Operation::Responses => "responses",
            };
            return format!("{p}/openai/deployments/{deployment}/{op}?api-version={version}");
        }
        let base = match self.provider {
            // Gemini's OpenAI-compatible surface (embeddings).
            ProviderKind::Gemini => "/v1beta/openai",
            // Copilot serves OpenAI's API at the root.
            ProviderKind::Copilot => "",
            _ => "/v1",
        };
        let op = match (op, self.provider.egress()) {
            (Operation::Chat, Format::AnthropicMessages) => "messages",
            (Operation::Chat, _) => "chat/completions",
            (Operation::Embeddings, _) => "embeddings",
            (Operation::Responses, _) => "responses",
        };
        format!("{p}{base}/{op}")
    }

    fn model_models(&self) -> Vec<String> {
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

/// Percent-encodes a model name for one path segment (Bedrock ids hold `:`, ARNs `/`).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

#[derive(Clone, Copy)]
enum Operation {
    Chat,
    Embeddings,
    Responses,
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
                route_policies: None,
                backend_policies: ai.policies.as_ref(),
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
    fn no_table_means_completions() {
        let t = target("name: a\nprovider: {openAI: {}}\n");
        assert!(matches!(
            t.classify("/anything").route,
            AiRouteType::Completions
        ));
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
