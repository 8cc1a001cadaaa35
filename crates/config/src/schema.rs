//! The configuration schema. The seeds' example config is the contract: every key it uses is
//! here with the same name and shape; new features extend this one schema.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};

use crate::values::{Dur, HeaderName, HeaderValue, HostPort, Pattern, Secret, Status};

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Process-wide settings: admin server, logging, tracing, limits.
    #[serde(default)]
    pub config: GlobalConfig,
    /// Ports the gateway listens on.
    #[serde(default)]
    pub binds: Vec<Bind>,
    /// Self-hosted model pools (vLLM, SGLang pods) whose pod is picked per request by a
    /// routing strategy; routes use them as `{pool: NAME}` backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<Pool>,
}

/// A pool of model-server pods behind one endpoint picker.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pool {
    pub name: String,
    /// Static pods, `host:port`. Exactly one of `endpoints`, `endpointsFile`, `endpointsDns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<HostPort>>,
    /// A file listing one `host:port` per line (`#` comments); re-read when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints_file: Option<PathBuf>,
    /// `name:port`: every address the name resolves to is a pod; re-resolved every
    /// `dnsRefresh` (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints_dns: Option<HostPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_refresh: Option<Dur>,
    /// Routing strategy (AIBrix names): `random`, `least-request` (default), `least-kv-cache`,
    /// `least-latency`, `throughput`, `prefix-cache`, `session-affinity`, or a weighted
    /// combination such as `prefix-cache:2,least-request:1`. A request may choose another
    /// with the `routing-strategy` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Request header that names the session for `session-affinity`. Default `x-session-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_header: Option<HeaderName>,
    /// Scraping of each pod's Prometheus metrics (on by default).
    #[serde(default)]
    pub metrics: PoolMetrics,
    #[serde(default)]
    pub prefix_cache: PrefixCache,
    /// How long a pod that refused a connection stays out of the pool; doubles per
    /// consecutive failure up to `ejectionMax`. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejection_base: Option<Dur>,
    /// Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejection_max: Option<Dur>,
    /// Most requests one pod may have in flight from this gateway; when every eligible pod is
    /// at it, requests are refused with 429 instead of queueing on the engines. Default: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight_per_pod: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolMetrics {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Default `/metrics`.
    #[serde(default = "PoolMetrics::default_path")]
    pub path: String,
    /// Default 1s.
    #[serde(default = "PoolMetrics::default_interval")]
    pub interval: Dur,
    /// Default 500ms.
    #[serde(default = "PoolMetrics::default_timeout")]
    pub timeout: Dur,
    /// Metrics older than this are unknown, not idle. Default 3 × interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<Dur>,
}

fn yes() -> bool {
    true
}

impl PoolMetrics {
    fn default_path() -> String {
        "/metrics".into()
    }
    fn default_interval() -> Dur {
        Dur(std::time::Duration::from_secs(1))
    }
    fn default_timeout() -> Dur {
        Dur(std::time::Duration::from_millis(500))
    }
}

impl Default for PoolMetrics {
    fn default() -> Self {
        PoolMetrics {
            enabled: true,
            path: Self::default_path(),
            interval: Self::default_interval(),
            timeout: Self::default_timeout(),
            stale_after: None,
        }
    }
}

/// Parameters of the `prefix-cache` strategy.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrefixCache {
    /// Bytes of prompt text per hashed block. Default 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    /// Blocks remembered per pod (LRU). Default 16384.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blocks_per_pod: Option<usize>,
    /// Affinity is ignored when the best-matching pod has this many more requests in flight
    /// than the least-loaded one. Default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imbalance_threshold: Option<u32>,
}

/// The Envoy `ext_proc` endpoint-picker service.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtProc {
    /// gRPC listen address, e.g. `127.0.0.1:9002`.
    pub addr: String,
    /// The pool it picks from.
    pub pool: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GlobalConfig {
    /// Admin server address (config dump, readiness). Default 127.0.0.1:15000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<String>,
    /// Prometheus metrics address. Default 127.0.0.1:15020.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
    /// Connection and request limits that protect the gateway.
    #[serde(default)]
    pub limits: Limits,
    /// How long in-flight requests may run after SIGTERM before the process exits. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<Dur>,
    /// Envoy `ext_proc` endpoint-picker server (`switchyard extproc`, or alongside the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_proc: Option<ExtProc>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Largest request head (request line plus headers) accepted, in bytes. Default 64 KiB.
    #[serde(default = "Limits::default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time allowed for a client to send the request head. Default 10s.
    #[serde(default = "Limits::default_header_read_timeout")]
    pub header_read_timeout: Dur,
    /// Largest body the gateway will buffer (retries, body-reading policies); 413 past it.
    /// Default 10 MiB.
    #[serde(default = "Limits::default_max_buffered_body_bytes")]
    pub max_buffered_body_bytes: usize,
    /// Largest request body accepted on any route; 413 past it. Default: no limit (bodies
    /// stream through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
    /// Most downstream connections open at once per bind. Default 10000.
    #[serde(default = "Limits::default_max_connections")]
    pub max_connections: usize,
    /// Idle keep-alive connections kept per upstream. Default 64.
    #[serde(default = "Limits::default_pool_max_idle")]
    pub upstream_pool_max_idle: usize,
    /// How long an idle upstream connection is kept. Default 90s.
    #[serde(default = "Limits::default_pool_idle_timeout")]
    pub upstream_pool_idle_timeout: Dur,
    /// Time allowed to open a TCP connection to an upstream. Default 5s.
    #[serde(default = "Limits::default_connect_timeout")]
    pub upstream_connect_timeout: Dur,
}

impl Limits {
    fn default_max_header_bytes() -> usize {
        64 * 1024
    }
    fn default_header_read_timeout() -> Dur {
        Dur(std::time::Duration::from_secs(10))
    }
    fn default_max_buffered_body_bytes() -> usize {
        10 * 1024 * 1024
    }
    fn default_max_connections() -> usize {
        10_000
    }
    fn default_pool_max_idle() -> usize {
        64
    }
    fn default_pool_idle_timeout() -> Dur {
        Dur(std::time::Duration::from_secs(90))
    }
    fn default_connect_timeout() -> Dur {
        Dur(std::time::Duration::from_secs(5))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: Self::default_max_header_bytes(),
            header_read_timeout: Self::default_header_read_timeout(),
            max_buffered_body_bytes: Self::default_max_buffered_body_bytes(),
            max_request_body_bytes: None,
            max_connections: Self::default_max_connections(),
            upstream_pool_max_idle: Self::default_pool_max_idle(),
            upstream_pool_idle_timeout: Self::default_pool_idle_timeout(),
            upstream_connect_timeout: Self::default_connect_timeout(),
        }
    }
}

/// Extra fields computed by CEL expressions, as used by logs and traces.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fields {
    /// Field name -> CEL expression.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Default fields to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Logging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default)]
    pub format: LogFormat,
    /// CEL expression; a request is logged only when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Fields>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    #[default]
    Grpc,
    Http,
}

/// `true`/`false`, or a ratio in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Sampling {
    Enabled(bool),
    Ratio(f64),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tracing {
    /// OTLP collector, e.g. http://127.0.0.1:4317.
    pub otlp_endpoint: String,
    #[serde(default)]
    pub otlp_protocol: OtlpProtocol,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<HeaderName, Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling: Option<Sampling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_sampling: Option<Sampling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Fields>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bind {
    /// TCP port; 0 picks a free port (tests).
    pub port: u16,
    /// Address to bind; default 0.0.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    #[default]
    Http,
    Https,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsFiles {
    /// PEM certificate chain file.
    pub cert: PathBuf,
    /// PEM private key file.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Listener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Host this listener serves (`api.example.com`, `*.example.com`); absent = any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Hosts this route serves; empty = all hosts of its listener.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Any one match selects the route; none = match everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Policies>,
    #[serde(default)]
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// HTTP method, e.g. GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<KeyValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<KeyValueMatch>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub enum PathMatch {
    Exact(String),
    PathPrefix(String),
    Regex(Pattern),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub enum StringMatch {
    Exact(String),
    Regex(Pattern),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyValueMatch {
    pub name: String,
    pub value: StringMatch,
}

/// Where a route sends traffic. Exactly one of `host`, `ai`, `mcp`, `pool`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", try_from = "RawBackend")]
pub struct Backend {
    #[serde(flatten)]
    pub kind: BackendKind,
    /// Relative share of traffic among the route's backends. Default 1.
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Policies>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BackendKind {
    /// A plain HTTP upstream, `host:port`.
    Host(HostPort),
    Ai(Box<AiBackend>),
    Mcp(McpBackend),
    /// A model pool (`pools[].name`): the pod is picked per request.
    Pool(String),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBackend {
    host: Option<HostPort>,
    ai: Option<Box<AiBackend>>,
    mcp: Option<McpBackend>,
    pool: Option<String>,
    weight: Option<u32>,
    policies: Option<Policies>,
}

impl TryFrom<RawBackend> for Backend {
    type Error = String;
    fn try_from(raw: RawBackend) -> Result<Self, String> {
        let kind = match (raw.host, raw.ai, raw.mcp, raw.pool) {
            (Some(h), None, None, None) => BackendKind::Host(h),
            (None, Some(a), None, None) => BackendKind::Ai(a),
            (None, None, Some(m), None) => BackendKind::Mcp(m),
            (None, None, None, Some(p)) => BackendKind::Pool(p),
            (None, None, None, None) => {
                return Err("a backend needs one of `host`, `ai`, `mcp` or `pool`".into());
            }
            _ => return Err("a backend takes exactly one of `host`, `ai`, `mcp` or `pool`".into()),
        };
        Ok(Backend {
            kind,
            weight: raw.weight.unwrap_or(1),
            policies: raw.policies,
        })
    }
}

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

/// An MCP federation backend (served by the MCP gateway).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpBackend {
    pub targets: Vec<McpTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_mode: Option<McpPrefixMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<McpFailureMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful_mode: Option<bool>,
    /// Key that seals session ids (authenticated encryption), so any replica sharing it, or
    /// this gateway after a restart, resumes a session. Default: a random key per process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<Secret>,
    /// A session unused this long is closed, with its upstream sessions. Default 30m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_idle_timeout: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum McpPrefixMode {
    Always,
    Conditional,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum McpFailureMode {
    FailClosed,
    FailOpen,
}

/// One MCP upstream. Exactly one of `mcp`, `sse`, `stdio`, `openapi`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpTarget {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpHttpTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<McpHttpTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdio: Option<McpStdioTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openapi: Option<McpOpenApiTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Policies>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpHttpTarget {
    /// Full URL of the MCP endpoint, e.g. http://127.0.0.1:8123/api/mcp.
    pub host: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpStdioTarget {
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpOpenApiTarget {
    /// OpenAPI document: a file path or URL.
    pub schema: String,
    pub host: String,
}

/// Policies attach to a route (all traffic of the route) or to a backend (traffic to it).
/// A backend's policy of a kind replaces the route's policy of the same kind.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policies {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(
        default,
        rename = "backendTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_tls: Option<BackendTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_auth: Option<BackendAuth>,
    #[serde(
        default,
        rename = "backendHTTP",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_http: Option<BackendHttp>,
    /// LLM behaviour of an `ai` backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<AiPolicy>,
    /// Which MCP tools a caller may list and call (CEL rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_authorization: Option<McpAuthorization>,
    /// Bearer JWT authentication; verified claims are the `jwt` CEL variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_auth: Option<JwtAuth>,
}

/// Verifies `Authorization: Bearer <JWT>` against a JWK set: signature, `exp`/`nbf` (30 s
/// leeway), and `iss`/`aud` when given.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtAuth {
    /// `strict` (default): a valid token is required. `optional`: no token is fine, a bad
    /// one is refused. `permissive`: never refuses; only a valid token's claims are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<JwtMode>,
    /// The JWK set (JSON), usually `{file: jwks.json}`.
    pub jwks: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JwtMode {
    Strict,
    Optional,
    Permissive,
}

/// Tool access on an `mcp` backend: a tool is visible and callable when any rule is true.
/// Rules see `mcp.method`, `mcp.tool.name`, `mcp.tool.target`, `request.headers`, `jwt`,
/// `source`. With no rules every tool is allowed.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpAuthorization {
    pub rules: Vec<String>,
}

impl Policies {
    /// `top`'s policy of each kind where it has one, else this one's (an `ai` backend's own
    /// policies over its backend entry's).
    pub fn overlay(&self, top: &Policies) -> Policies {
        fn pick<T: Clone>(top: &Option<T>, base: &Option<T>) -> Option<T> {
            top.clone().or_else(|| base.clone())
        }
        Policies {
            url_rewrite: pick(&top.url_rewrite, &self.url_rewrite),
            request_header_modifier: pick(
                &top.request_header_modifier,
                &self.request_header_modifier,
            ),
            response_header_modifier: pick(
                &top.response_header_modifier,
                &self.response_header_modifier,
            ),
            request_redirect: pick(&top.request_redirect, &self.request_redirect),
            direct_response: pick(&top.direct_response, &self.direct_response),
            cors: pick(&top.cors, &self.cors),
            timeout: pick(&top.timeout, &self.timeout),
            retry: pick(&top.retry, &self.retry),
            backend_tls: pick(&top.backend_tls, &self.backend_tls),
            backend_auth: pick(&top.backend_auth, &self.backend_auth),
            backend_http: pick(&top.backend_http, &self.backend_http),
            ai: pick(&top.ai, &self.ai),
            mcp_authorization: pick(&top.mcp_authorization, &self.mcp_authorization),
            jwt_auth: pick(&top.jwt_auth, &self.jwt_auth),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UrlRewrite {
    /// The authority (Host) sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<AuthorityRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub enum AuthorityRewrite {
    /// Replace host and port, e.g. `api.example.com` or `api.example.com:8443`.
    Full(String),
    /// Replace the host, keep the port.
    Host(String),
    /// Replace the port, keep the host.
    Port(u16),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the part matched by the route's `pathPrefix`.
    Prefix(String),
}

/// Applied in order: `add`, then `set`, then `remove`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderModifier {
    /// Append a value (keeps existing values).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "redact_sensitive"
    )]
    pub add: BTreeMap<HeaderName, HeaderValue>,
    /// Replace all values.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "redact_sensitive"
    )]
    pub set: BTreeMap<HeaderName, HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<HeaderName>,
}

/// Credentials in header values (Authorization, api keys, cookies) never reach a config dump.
fn redact_sensitive<S: Serializer>(
    map: &BTreeMap<HeaderName, HeaderValue>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(map.len()))?;
    for (k, v) in map {
        let shown: &str = if k.is_sensitive() { "<redacted>" } else { &v.0 };
        m.serialize_entry(k.as_str(), shown)?;
    }
    m.end()
}

impl Serialize for HeaderValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<AuthorityRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DirectResponse {
    pub status: Status,
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cors {
    /// Origins allowed (`*`, exact origins, or `https://*.example.com`).
    #[serde(default)]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Dur>,
    #[serde(default)]
    pub allow_credentials: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeout {
    /// Deadline for the response to start (headers received), across all retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Dur>,
    /// Deadline for one attempt to an upstream to return response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request_timeout: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retry {
    /// Total tries, including the first. Default 2.
    #[serde(default = "Retry::default_attempts")]
    pub attempts: u32,
    /// Wait before each retry, doubled each time (with jitter). Default 25ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Dur>,
    /// Response statuses that are retried. Default 503. Connect failures are always retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<Status>,
}

impl Retry {
    fn default_attempts() -> u32 {
        2
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendTls {
    /// PEM CA bundle to trust instead of the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM client private key (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Server name for SNI and certificate verification; default the upstream host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Skip certificate verification. Only for testing.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendAuth {
    /// Sent upstream as `Authorization: Bearer <key>`, replacing the client's.
    pub key: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum HttpVersion {
    #[serde(rename = "1.1")]
    Http1,
    #[serde(rename = "2")]
    Http2,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendHttp {
    /// Protocol to the upstream: "1.1" or "2" (h2c in cleartext, ALPN h2 over TLS).
    pub version: HttpVersion,
}

single_key_enum!(PathMatch, "one of `exact`, `pathPrefix`, `regex`");
single_key_enum!(StringMatch, "one of `exact`, `regex`");
single_key_enum!(
    Provider,
    "one of `openAI`, `openAICompatible`, `anthropic`, `gemini`, `vertex`, `bedrock`, `azureOpenAI`, `copilot`"
);
single_key_enum!(AuthorityRewrite, "one of `full`, `host`, `port`");
single_key_enum!(PathRewrite, "one of `full`, `prefix`");

impl Pool {
    /// The runtime form of this pool (after validation: exactly one endpoint source).
    pub fn spec(&self) -> picker::PoolSpec {
        let endpoints = match (&self.endpoints, &self.endpoints_file, &self.endpoints_dns) {
            (_, Some(f), _) => picker::Endpoints::File(f.clone()),
            (_, _, Some(d)) => picker::Endpoints::Dns {
                name: d.host().to_string(),
                port: d.port(),
                refresh: self
                    .dns_refresh
                    .map_or(std::time::Duration::from_secs(5), |d| d.0),
            },
            (list, _, _) => {
                picker::Endpoints::Static(list.iter().flatten().map(|h| h.0.to_string()).collect())
            }
        };
        let defaults = picker::PrefixConfig::default();
        let m = &self.metrics;
        picker::PoolSpec {
            name: self.name.clone(),
            endpoints,
            strategy: self
                .strategy
                .clone()
                .unwrap_or_else(|| "least-request".into()),
            session_header: self.session_header.as_ref().map_or_else(
                || "x-session-id".into(),
                |h| h.as_str().to_ascii_lowercase(),
            ),
            metrics: m.enabled.then(|| picker::MetricsSpec {
                path: m.path.clone(),
                interval: m.interval.0,
                timeout: m.timeout.0,
                stale_after: m.stale_after.map_or(m.interval.0 * 3, |d| d.0),
            }),
            prefix: picker::PrefixConfig {
                block_size: self.prefix_cache.block_size.unwrap_or(defaults.block_size),
                max_blocks_per_pod: self
                    .prefix_cache
                    .max_blocks_per_pod
                    .unwrap_or(defaults.max_blocks_per_pod),
                imbalance_threshold: self
                    .prefix_cache
                    .imbalance_threshold
                    .unwrap_or(defaults.imbalance_threshold),
            },
            ejection_base: self
                .ejection_base
                .map_or(std::time::Duration::from_secs(1), |d| d.0),
            ejection_max: self
                .ejection_max
                .map_or(std::time::Duration::from_secs(30), |d| d.0),
            max_in_flight_per_pod: self.max_in_flight_per_pod,
        }
    }
}
