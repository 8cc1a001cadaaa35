//! Governance policies: who is calling (`apiKeyAuth`, `basicAuth`, `extAuthz`), what they may
//! do (`authorization`), and how much (`localRateLimit`, `rateLimit`, `budgets`,
//! `remoteRateLimit`). All are route policies; they run in the route phase in the order the
//! proxy's pipeline lists.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::JwtMode;
use crate::values::{Dur, HeaderName, Secret};

/// The shared store for limits, budgets, usage and virtual keys, so that several gateway
/// replicas count together. Without it each replica counts alone (a warning says so).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Redis {
    /// `redis://[user:password@]host:port[/db]`; a secret (it may carry a password).
    pub url: Secret,
    /// Longest wait for one Redis answer on the request path. Default 100ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Prefix of every key the gateway writes. Default `switchyard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

/// API keys: `Authorization: Bearer <key>`, `x-api-key: <key>` (Anthropic clients), or a
/// configured header. Keys are kept and compared as SHA-256 hashes.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiKeyAuth {
    /// `strict` (default): a valid key is required. `optional`: no key is fine, a wrong one
    /// is refused. `permissive`: never refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<JwtMode>,
    /// Another header that carries the key (read before the default ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderName>,
    /// Keys defined in the config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<ApiKey>,
    /// A YAML file holding a list of keys (same shape as `keys`), reloaded when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<PathBuf>,
    /// Also accept the virtual keys made through the admin API (`POST /keys`). Default true.
    #[serde(default = "yes")]
    pub virtual_keys: bool,
}

fn yes() -> bool {
    true
}

/// One API key and what it may do.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiKey {
    /// Who holds the key: the `apiKey.name` CEL field, logs and metrics.
    pub name: String,
    /// The key itself (usually `$ENV` or `{file: ...}`), or give `hash` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// `sha256:<hex>` of the key, so the config never holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Models this key may call (exact names, or a `*` suffix wildcard). Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Free-form metadata: `apiKey.metadata` in CEL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// This key's own request/token limit (counted in the shared store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<KeyRateLimit>,
    /// This key's own budget, within its team's and org's (`budgets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// A key's own rate limit over a fixed window.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Default 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Dur>,
}

/// `basicAuth`: `Authorization: Basic` checked against an htpasswd file (bcrypt `$2y$`,
/// argon2 `$argon2id$`, SHA-1 `{SHA}` is refused as too weak).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BasicAuth {
    /// The htpasswd file.
    pub htpasswd: PathBuf,
    /// Shown in `WWW-Authenticate`. Default `switchyard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<JwtMode>,
}

/// `authorization`: CEL rules over `request`, `source`, `jwt`, `apiKey` and (LLM routes)
/// `llm.requestModel`. A request matching any `deny` rule is refused; otherwise, when there
/// are `allow` rules, one must match. A key's `models` list is enforced here too.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Authorization {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthorizationRule>,
}

/// One rule: exactly one of `allow` or `deny`, a CEL expression.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<String>,
}

/// `localRateLimit`: token buckets in this process (no round trip; each replica counts
/// alone).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalRateLimit {
    /// What is counted per bucket: a CEL expression (`apiKey.name`, `request.headers["x-user"]`,
    /// `llm.requestModel`). A request for which it has no value is not limited by this
    /// entry. Default: one bucket for the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Requests: `limit` per `per`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Bucket>,
    /// LLM tokens (prompt estimate + max_tokens; settled with the real usage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Bucket>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bucket {
    pub limit: u64,
    pub per: Dur,
}

/// `rateLimit`: fixed-window limits counted in the shared store (`config.redis`), exact
/// across replicas: one round trip admits or refuses a request against every limit at once.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    pub limits: Vec<SharedLimit>,
    /// When the store cannot be reached: admit (`true`) or refuse with 503 (default).
    #[serde(default)]
    pub fail_open: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SharedLimit {
    /// Names the limit in answers, logs and the store's keys.
    pub name: String,
    /// CEL: what is counted (see `localRateLimit.key`). Default: the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    pub window: Dur,
}

/// `budgets`: tokens and money per key, team and org over calendar windows, reserved before
/// the call and settled with the real usage after it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Budgets {
    /// `enforce` (default): a call that does not fit is refused with 429. `audit`: logged
    /// and counted only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<BudgetMode>,
    /// Completion tokens reserved when the request sets no `max_tokens`. Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_tokens: Option<u64>,
    /// Every key's budget unless the key sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Budget>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub teams: BTreeMap<String, Budget>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub orgs: BTreeMap<String, Budget>,
    /// USD per million tokens, by model (exact, or a `*` suffix wildcard); over the
    /// built-in table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, Price>,
    #[serde(default)]
    pub fail_open: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BudgetMode {
    Enforce,
    Audit,
}

/// A budget over one calendar window (UTC): tokens, money (USD), or both.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    pub window: BudgetWindow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BudgetWindow {
    Hour,
    Day,
    Month,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Price {
    pub input: f64,
    /// Default: `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    pub output: f64,
}

/// `extAuthz`: asks an external service (Envoy's `envoy.service.auth.v3.Authorization` over
/// gRPC, or plain HTTP) whether a request may pass.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtAuthz {
    /// `host:port` of the service.
    pub target: String,
    /// `grpc` (default) or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ExtAuthzProtocol>,
    /// HTTP only: prefix put before the request's path. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Default 200ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Admit when the service cannot be reached or times out. Default false: refused with 403.
    #[serde(default)]
    pub fail_open: bool,
    /// Request headers sent to the service. Default: all but credentials the gateway holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers: Vec<HeaderName>,
    /// Headers of an OK answer copied onto the upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream: Vec<HeaderName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExtAuthzProtocol {
    Grpc,
    Http,
}

/// `remoteRateLimit`: Envoy's `envoy.service.ratelimit.v3.RateLimitService`, for users who
/// run one already.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RemoteRateLimit {
    /// `host:port` of the service (gRPC).
    pub target: String,
    pub domain: String,
    pub descriptors: Vec<RateLimitDescriptor>,
    /// Default 100ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub fail_open: bool,
}

/// One descriptor: its entries' values are CEL expressions; a request for which one has no
/// value does not send the descriptor.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitDescriptor {
    pub entries: BTreeMap<String, String>,
    /// `requests` (default, hits_addend 1) or `tokens` (hits_addend: the token estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<RateLimitUnit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitUnit {
    Requests,
    Tokens,
}
