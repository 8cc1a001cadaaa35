//! What the proxy learned about one request, handed over when its response body ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use cel::{json_to_value, Bindings, MapBuilder, Uses, Value, Var};
use http::{HeaderMap, Method, Uri, Version};

use crate::trace::TraceContext;
use crate::Computed;

pub struct RequestRecord {
    pub start: Instant,
    pub start_time: SystemTime,
    pub method: Method,
    pub uri: Uri,
    pub host: Option<String>,
    pub version: Version,
    pub tls: bool,
    pub peer: SocketAddr,
    pub bind: Arc<str>,
    pub listener: Option<Arc<str>>,
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    /// `host`, `ai`, `mcp`.
    pub backend_kind: Option<&'static str>,
    pub upstream: Option<Arc<str>>,
    /// `x-request-id` (the client's or the gateway's); a clone shares the header's bytes.
    pub request_id: Option<http::HeaderValue>,
    pub trace: Option<TraceContext>,
    /// Kept only when an expression reads them.
    pub request_headers: Option<HeaderMap>,
    pub request_body: Option<Bytes>,
    pub status: u16,
    pub response_headers: Option<HeaderMap>,
    pub response_body: Option<BytesMut>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The gateway's own error code, when it answered with an error.
    pub error: Option<&'static str>,
    /// Time until the upstream's response headers.
    pub upstream_time: Option<Duration>,
    /// The response body broke off (upstream reset, client gone).
    pub aborted: bool,
    pub llm: Option<LlmRecord>,
    pub mcp: Option<McpRecord>,
    pub a2a: Option<A2aRecord>,
    /// Verified JWT claims (`jwtAuth`).
    pub jwt: Option<Arc<serde_json::Value>>,
    /// The caller's API key (`apiKeyAuth`).
    pub api_key: Option<Arc<ApiKeyInfo>>,
    /// Backends `failover` left (their failure) or skipped (resting), in order.
    pub failover: Vec<FailoverStep>,
    /// The caller's user name (`basicAuth`).
    pub basic_user: Option<Arc<str>>,
}

/// A backend `failover` left or skipped: which, why (`rate_limited`, `cooldown`, ...) and
/// when, after the request started (a span event).
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverStep {
    pub backend: Arc<str>,
    pub cause: &'static str,
    pub at: Duration,
}

impl FailoverStep {
    /// The cause is a resting backend that was not tried (not a failed attempt).
    pub fn skipped(&self) -> bool {
        matches!(self.cause, "cooldown" | "circuit_open")
    }
}

/// What an API key says about its holder (never the key): the `apiKey` CEL variable, log and
/// span fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiKeyInfo {
    pub name: Arc<str>,
    /// The admin API's id of a virtual key; `None` for keys from the config.
    pub id: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    pub org: Option<Arc<str>>,
    /// Models the key may call (exact, or `prefix*`); empty: any.
    pub models: Vec<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl ApiKeyInfo {
    /// Whether the key may call `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty()
            || self.models.iter().any(|m| match m.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => m == model,
            })
    }

    /// The `apiKey` CEL variable.
    pub fn value(&self) -> cel::Value {
        let mut m = MapBuilder::with_capacity(6);
        m.insert("name", &*self.name)
            .insert("virtual", self.id.is_some());
        m.insert_opt("team", self.team.as_deref().map(str::to_string));
        m.insert_opt("org", self.org.as_deref().map(str::to_string));
        m.insert_opt("id", self.id.as_deref().map(str::to_string));
        m.insert(
            "models",
            cel::Value::List(Arc::new(
                self.models.iter().map(|s| s.as_str().into()).collect(),
            )),
        );
        let mut meta = MapBuilder::with_capacity(self.metadata.len());
        for (k, v) in &self.metadata {
            meta.insert(k, v.as_str());
        }
        m.insert("metadata", meta.build());
        m.build()
    }
}

impl RequestRecord {
    pub fn new(
        method: Method,
        uri: Uri,
        version: Version,
        peer: SocketAddr,
        bind: Arc<str>,
    ) -> Self {
        RequestRecord {
            start: Instant::now(),
            start_time: SystemTime::now(),
            method,
            uri,
            host: None,
            version,
            tls: false,
            peer,
            bind,
            listener: None,
            route: None,
            backend: None,
            backend_kind: None,
            upstream: None,
            request_id: None,
            trace: None,
            request_headers: None,
            request_body: None,
            status: 0,
            response_headers: None,
            response_body: None,
            bytes_in: 0,
            bytes_out: 0,
            error: None,
            upstream_time: None,
            aborted: false,
            llm: None,
            mcp: None,
            a2a: None,
            jwt: None,
            api_key: None,
            basic_user: None,
            failover: Vec::new(),
        }
    }

    /// The request id, when it is text (a client's id may hold other bytes: left out then).
    pub(crate) fn request_id(&self) -> Option<&str> {
        self.request_id.as_ref().and_then(|v| v.to_str().ok())
    }

    /// The CEL variables `uses` names, from this record.
    pub fn bindings(&self, uses: Uses) -> Bindings {
        let mut b = Bindings::default();
        if uses.var(Var::Request) {
            let mut m = MapBuilder::with_capacity(8);
            m.insert("method", self.method.as_str())
                .insert("path", self.uri.path())
                .insert("uri", self.uri.to_string())
                .insert("scheme", if self.tls { "https" } else { "http" })
                .insert("version", version_str(self.version));
            m.insert_opt("host", self.host.clone());
            if let Some(h) = &self.request_headers {
                m.insert("headers", cel::headers_value(h));
            }
            if let Some(body) = &self.request_body {
                m.insert("body", String::from_utf8_lossy(body).into_owned());
            }
            b.set(Var::Request, m.build());
        }
        if uses.var(Var::Response) {
            let mut m = MapBuilder::with_capacity(3);
            m.insert("code", self.status as i64);
            if let Some(h) = &self.response_headers {
                m.insert("headers", cel::headers_value(h));
            }
            if let Some(body) = &self.response_body {
                m.insert("body", String::from_utf8_lossy(body).into_owned());
            }
            b.set(Var::Response, m.build());
        }
        if uses.var(Var::Source) {
            let mut m = MapBuilder::with_capacity(2);
            m.insert("address", self.peer.ip().to_string())
                .insert("port", self.peer.port() as i64);
            b.set(Var::Source, m.build());
        }
        if uses.var(Var::Backend) {
            let mut m = MapBuilder::with_capacity(3);
            m.insert_opt("name", self.backend.as_deref().map(str::to_string));
            m.insert_opt("type", self.backend_kind);
            m.insert_opt("address", self.upstream.as_deref().map(str::to_string));
            b.set(Var::Backend, m.build());
        }
        if uses.var(Var::Llm) {
            if let Some(llm) = &self.llm {
                b.set(Var::Llm, llm.value(uses.llm_text()));
            }
        }
        if uses.var(Var::Mcp) {
            if let Some(mcp) = &self.mcp {
                b.set(Var::Mcp, mcp.value());
            }
        }
        if uses.var(Var::A2a) {
            if let Some(a2a) = &self.a2a {
                b.set(Var::A2a, a2a.value());
            }
        }
        if uses.var(Var::Jwt) {
            if let Some(claims) = &self.jwt {
                b.set(Var::Jwt, json_to_value(claims));
            }
        }
        if uses.var(Var::ApiKey) {
            if let Some(k) = &self.api_key {
                b.set(Var::ApiKey, k.value());
            }
        }
        if uses.var(Var::BasicAuth) {
            if let Some(u) = &self.basic_user {
                let mut m = MapBuilder::with_capacity(1);
                m.insert("user", &**u);
                b.set(Var::BasicAuth, m.build());
            }
        }
        b
    }
}

/// A field read straight from the record (see [`RequestRecord::member`]).
pub(crate) enum Member<'a> {
    Found(Computed<'a>),
    /// Not set on this request: CEL would fail with "no such key".
    Missing,
    /// Not a field this shortcut knows: evaluate the expression.
    Unknown,
}

impl RequestRecord {
    /// `var.path` as CEL would see it in [`RequestRecord::bindings`], for the scalar fields
    /// telemetry configs name most (`llm.provider`, `llm.requestModel`, `request.path`, ...),
    /// borrowed from the record: no variable map built, no string copied.
    pub(crate) fn member(&self, var: Var, path: &[String]) -> Member<'_> {
        let [field] = path else {
            return Member::Unknown;
        };
        fn opt_str(v: Option<&str>) -> Member<'_> {
            match v {
                Some(s) => Member::Found(Computed::Str(s)),
                None => Member::Missing,
            }
        }
        let opt_int = |v: Option<u64>| match v {
            Some(n) => Member::Found(Computed::Int(cel_int(n))),
            None => Member::Missing,
        };
        match var {
            Var::Llm => {
                let Some(llm) = &self.llm else {
                    // Unbound: an empty map.
                    return Member::Missing;
                };
                match field.as_str() {
                    "provider" => Member::Found(Computed::Str(llm.provider)),
                    "operation" => Member::Found(Computed::Str(llm.operation)),
                    "streaming" => Member::Found(Computed::Bool(llm.streaming)),
                    "requestModel" => opt_str(llm.request_model.as_deref()),
                    "responseModel" => opt_str(llm.response_model.as_deref()),
                    "inputTokens" => opt_int(llm.input_tokens),
                    "outputTokens" => opt_int(llm.output_tokens),
                    "cachedInputTokens" => opt_int(llm.cached_input_tokens),
                    "reasoningTokens" => opt_int(llm.reasoning_tokens),
                    "totalTokens" => opt_int(llm.total_tokens()),
                    _ => Member::Unknown,
                }
            }
            Var::Request => match field.as_str() {
                "method" => Member::Found(Computed::Str(self.method.as_str())),
                "path" => Member::Found(Computed::Str(self.uri.path())),
                "host" => opt_str(self.host.as_deref()),
                _ => Member::Unknown,
            },
            Var::Response => match field.as_str() {
                "code" => Member::Found(Computed::Int(self.status as i64)),
                _ => Member::Unknown,
            },
            Var::ApiKey => match (field.as_str(), &self.api_key) {
                (_, None) => Member::Missing,
                ("name", Some(k)) => Member::Found(Computed::Str(&k.name)),
                ("team", Some(k)) => opt_str(k.team.as_deref()),
                ("org", Some(k)) => opt_str(k.org.as_deref()),
                _ => Member::Unknown,
            },
            Var::Backend => match field.as_str() {
                "name" => opt_str(self.backend.as_deref()),
                "type" => opt_str(self.backend_kind),
                "address" => opt_str(self.upstream.as_deref()),
                _ => Member::Unknown,
            },
            _ => Member::Unknown,
        }
    }
}

/// A count as a CEL `int`: an upstream's absurd token count saturates instead of wrapping.
fn cel_int(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// One LLM call, in provider-neutral terms.
#[derive(Clone, Debug, Default)]
pub struct LlmRecord {
    /// OpenTelemetry `gen_ai.provider.name` (`openai`, `anthropic`, `aws.bedrock`, ...).
    pub provider: &'static str,
    /// OpenTelemetry `gen_ai.operation.name` (`chat`, `embeddings`, ...).
    pub operation: &'static str,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_input_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub streaming: bool,
    /// (role, text) per prompt message, the system prompt included.
    pub prompt: Vec<(String, String)>,
    pub completion: Vec<String>,
    /// Sampling parameters as the client sent them (after defaults and overrides).
    pub params: serde_json::Map<String, serde_json::Value>,
    /// From the request's start to the first content token of a stream.
    pub time_to_first_token: Option<Duration>,
    /// The provider's stream broke off before its end (the client got an error event).
    pub interrupted: bool,
}

impl LlmRecord {
    /// Input plus output tokens, when both are known (saturating: the counts come from the
    /// provider).
    pub(crate) fn total_tokens(&self) -> Option<u64> {
        self.input_tokens
            .zip(self.output_tokens)
            .map(|(i, o)| i.saturating_add(o))
    }

    /// `with_text`: also the prompt, completion and parameters (costly; only when read).
    fn value(&self, with_text: bool) -> Value {
        let mut m = MapBuilder::with_capacity(14);
        m.insert("provider", self.provider)
            .insert("operation", self.operation)
            .insert("streaming", self.streaming);
        m.insert_opt("requestModel", self.request_model.clone());
        m.insert_opt("responseModel", self.response_model.clone());
        let int = |v: Option<u64>| v.map(cel_int);
        m.insert_opt("inputTokens", int(self.input_tokens));
        m.insert_opt("outputTokens", int(self.output_tokens));
        m.insert_opt("cachedInputTokens", int(self.cached_input_tokens));
        m.insert_opt("reasoningTokens", int(self.reasoning_tokens));
        if let Some(total) = self.total_tokens() {
            m.insert("totalTokens", cel_int(total));
        }
        if !with_text {
            return m.build();
        }
        let prompt: Vec<Value> = self
            .prompt
            .iter()
            .map(|(role, content)| {
                let mut p = MapBuilder::with_capacity(2);
                p.insert("role", role.clone())
                    .insert("content", content.clone());
                p.build()
            })
            .collect();
        m.insert("prompt", Value::List(Arc::new(prompt)));
        let completion: Vec<Value> = self
            .completion
            .iter()
            .map(|c| Value::from(c.clone()))
            .collect();
        m.insert("completion", Value::List(Arc::new(completion)));
        m.insert(
            "params",
            json_to_value(&serde_json::Value::Object(self.params.clone())),
        );
        m.build()
    }
}

/// One MCP request.
#[derive(Clone, Debug, Default)]
pub struct McpRecord {
    pub method: Option<String>,
    pub tool: Option<String>,
    pub target: Option<String>,
    pub session_id: Option<String>,
}

impl McpRecord {
    fn value(&self) -> Value {
        let mut m = MapBuilder::with_capacity(3);
        m.insert_opt("method", self.method.clone());
        if self.tool.is_some() || self.target.is_some() {
            let mut t = MapBuilder::with_capacity(2);
            t.insert_opt("name", self.tool.clone());
            t.insert_opt("target", self.target.clone());
            m.insert("tool", t.build());
        }
        if let Some(id) = &self.session_id {
            let mut s = MapBuilder::with_capacity(1);
            s.insert("id", id.clone());
            m.insert("session", s.build());
        }
        m.build()
    }
}

/// One A2A request: what the `a2a` adapter classified, and what the agent's answer (or
/// stream) showed of the task.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct A2aRecord {
    /// The operation by its v1.0 name (`SendMessage`, `GetTask`, ...; bounded).
    pub method: &'static str,
    /// `JSONRPC`, `HTTP+JSON` or `GRPC`.
    pub binding: &'static str,
    /// `0.3`, `1.0` or `other`, from `A2A-Version` (absent = 0.3).
    pub version: &'static str,
    pub task_id: Option<String>,
    pub context_id: Option<String>,
    /// The last task state seen (`working`, `completed`, ...).
    pub task_state: Option<&'static str>,
    /// Stream events read (0 for a single answer).
    pub events: u32,
    /// Distinct artifacts seen.
    pub artifacts: u32,
    /// The skill the message names (its `metadata.skillId`), if any.
    pub skill: Option<String>,
    /// The `a2a` backend serving the call: the route's only one, or the one chosen.
    pub agent: Option<Arc<str>>,
}

impl A2aRecord {
    /// The `a2a` CEL variable.
    pub fn value(&self) -> Value {
        let mut m = MapBuilder::with_capacity(6);
        m.insert("method", self.method)
            .insert("binding", self.binding)
            .insert("version", self.version);
        let mut t = MapBuilder::with_capacity(2);
        t.insert_opt("id", self.task_id.clone());
        t.insert_opt("state", self.task_state);
        m.insert("task", t.build());
        m.insert_opt("contextId", self.context_id.clone());
        m.insert("artifacts", self.artifacts as i64);
        m.insert_opt("skill", self.skill.clone());
        m.insert_opt("agent", self.agent.as_deref().map(str::to_string));
        m.build()
    }
}
