//! `policies`: what a route or backend applies to its traffic.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};

use super::governance::*;
use super::{A2aPolicy, AiPolicy};
use crate::values::{Dur, HeaderName, HeaderValue, Secret, Status};

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
    /// Guards on the prompt and the completion of an LLM route (route-only; every backend
    /// of the route must be `ai`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<Guardrails>,
    /// API keys (config, keys file, admin-made virtual keys); the key is the `apiKey` CEL
    /// variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_auth: Option<ApiKeyAuth>,
    /// `Authorization: Basic` against an htpasswd file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// An external authorization service (Envoy ext_authz, gRPC or HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_authz: Option<ExtAuthz>,
    /// CEL allow/deny rules; a key's model list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// Token buckets in this process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_rate_limit: Vec<LocalRateLimit>,
    /// Fixed-window limits in the shared store, exact across replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Token and money budgets per key, team and org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Budgets>,
    /// Envoy's rate limit service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_rate_limit: Option<RemoteRateLimit>,
    /// Moving a request to the route's next backend (deployment) when one fails, and resting
    /// failing deployments (cooldown after 429, circuit after repeated failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// How the route's backends (deployments) are ranked for a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
    /// A2A across the route's backends (route only): the key that seals task ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a: Option<A2aPolicy>,
}

/// `guardrails`: guards run on the prompt (`request`) and on the completion (`response`), and
/// central prompt policy (`prompt`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Guardrails {
    /// Messages the gateway adds to every prompt, in the caller's dialect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptPolicy>,
    /// Run on every text of the request: messages of every role, tool results and tool-call
    /// arguments, Responses `input`, Anthropic `system` and content blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request: Vec<Guard>,
    /// Run on the completion: text, tool-call arguments, reasoning text; streamed too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response: Vec<Guard>,
}

/// One guard: what to look for and what to do with a match.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Guard {
    /// Named in rejections and logs (never the matched text).
    pub name: String,
    /// Exactly one kind: `regex`, `webhook` or `moderation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<RegexGuard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookGuard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationGuard>,
    pub action: GuardAction,
    /// What a masked match becomes; default per detector (`<EMAIL>`, `<CREDIT_CARD>`, ...;
    /// `<REDACTED>` for `patterns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
}

/// A guard service: the gateway POSTs the texts (with their roles) as JSON, the service
/// answers `allow`, `reject` with a reason, or `mask` with replacement texts (the contract is
/// in the README).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookGuard {
    /// `http(s)://host[:port]/path`.
    pub url: String,
    /// Sent as `Authorization: Bearer <key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// Default 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Pass the request when the service cannot be asked (default: refuse, 503).
    #[serde(default)]
    pub fail_open: bool,
    /// On a streamed answer (a `response` guard): the service is asked every this many
    /// characters of held-back text, and at the end (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_window: Option<u32>,
}

/// The OpenAI moderation API (`POST {url}/v1/moderations`) or any compatible endpoint: the
/// texts are refused (or audited) when a category's score reaches its threshold, or, with no
/// thresholds, when the endpoint flags them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModerationGuard {
    /// Base URL, e.g. `https://api.openai.com`.
    pub url: String,
    /// Sent as `Authorization: Bearer <key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// Default `omni-moderation-latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Score at or above which a category refuses (`violence: 0.5`, `hate/threatening: 0.3`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub thresholds: BTreeMap<String, f64>,
    /// Default 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub fail_open: bool,
    /// On a streamed answer (a `response` guard): the endpoint is asked every this many
    /// characters of held-back text, and at the end (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_window: Option<u32>,
}

/// Central prompt policy: messages prepended (as system instructions) and appended to every
/// prompt of the route.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PromptPolicy {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prepend: Vec<PromptMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub append: Vec<PromptMessage>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PromptMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// Built-in detectors and/or user regular expressions (Rust `regex` syntax, linear time).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegexGuard {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builtins: Vec<Builtin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Builtin {
    Email,
    Phone,
    CreditCard,
    Ssn,
    Iban,
    Ip,
    Secrets,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum GuardAction {
    /// The caller gets a 4xx in its dialect, code `guardrail_rejected`, naming the guard.
    Reject,
    /// Each match is replaced by the placeholder.
    Mask,
    /// Logged (guard, detector; never the text) and passed on unchanged.
    Audit,
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
    /// The JWK set (JSON), usually `{file: jwks.json}`. Give this or `jwksUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Secret>,
    /// Where to fetch the JWK set (cached; fetched again on an unknown `kid`, at most every
    /// 10 s, and every `jwksRefresh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// How often the JWK set is fetched again from `jwksUrl`. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_refresh: Option<Dur>,
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
/// Rules see `mcp.method`, `mcp.tool.name`, `mcp.tool.target`, `request.headers`, `jwt`, `apiKey`,
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
            guardrails: pick(&top.guardrails, &self.guardrails),
            api_key_auth: pick(&top.api_key_auth, &self.api_key_auth),
            basic_auth: pick(&top.basic_auth, &self.basic_auth),
            ext_authz: pick(&top.ext_authz, &self.ext_authz),
            authorization: pick(&top.authorization, &self.authorization),
            local_rate_limit: match top.local_rate_limit.is_empty() {
                true => self.local_rate_limit.clone(),
                false => top.local_rate_limit.clone(),
            },
            rate_limit: pick(&top.rate_limit, &self.rate_limit),
            budgets: pick(&top.budgets, &self.budgets),
            remote_rate_limit: pick(&top.remote_rate_limit, &self.remote_rate_limit),
            failover: pick(&top.failover, &self.failover),
            balance: pick(&top.balance, &self.balance),
            a2a: pick(&top.a2a, &self.a2a),
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
    /// Longest an upstream's response body may go without a byte (an upstream that hangs or
    /// trickles mid-answer); past it the answer ends with an error (an error event on LLM
    /// streams, 504 `upstream_timeout` before any byte was sent). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Dur>,
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

/// `failover`: on a failed attempt, the request moves to the route's next backend (another
/// deployment, possibly another provider: LLM requests are prepared again for it and the
/// answer translated back). Only before the first byte of an answer reaches the client.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Failover {
    /// Outcomes that move on. Default: `connect`, `timeout`, `rateLimited`, `serverError`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<FailoverCause>,
    /// Most tries, the first included. Default: each backend once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// How long a backend that answered 429 without `retry-after` rests. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Dur>,
    /// Consecutive failures that open a backend's circuit, and for how long (then one request
    /// probes it). Default 5 failures, 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit: Option<Circuit>,
    /// A successful answer whose body has not started within this (a stream's first event,
    /// the time to first token) counts as a `timeout` and moves on, when another backend can
    /// still be tried. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout: Option<Dur>,
}

/// `balance`: which backend a request tries first (and the order of the rest).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Balance {
    pub strategy: BalanceStrategy,
    /// `prefixAffinity`: how many bytes of the conversation's start (its system prompt and
    /// first user message) make the affinity key. Default 2048.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_bytes: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BalanceStrategy {
    Weighted,
    LeastRequest,
    LeastLatency,
    PrefixAffinity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FailoverCause {
    /// The connection could not be made.
    Connect,
    /// No response headers within `timeout.backendRequestTimeout`.
    Timeout,
    /// 429.
    RateLimited,
    /// 500-599.
    ServerError,
    /// The prompt did not fit the model's context (400 `context_length_exceeded` and the like):
    /// the next backend may have a larger one.
    ContextLength,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Circuit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for: Option<Dur>,
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

single_key_enum!(AuthorityRewrite, "one of `full`, `host`, `port`");
single_key_enum!(PathRewrite, "one of `full`, `prefix`");
