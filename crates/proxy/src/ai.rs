//! The `ai` backend adapter: classifies an LLM call by path, prepares (and if the provider
//! speaks another dialect, translates) the request, adds the provider's credentials, and
//! shapes the response — translated, with usage extracted — back into the caller's dialect.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use llm::{Format, ResponseInfo, StreamTranslator};
use serde_json::{Map, Value};

use config::{AiBackend, AiRouteType, Policies, Provider};

use crate::body::{self, Body, BoxError};
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
    pub upstream: Upstream,
    pub provider: ProviderKind,
    /// Why requests to this provider cannot be served yet, if so.
    unsupported: Option<String>,
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
    /// The provider credential header, marked sensitive.
    auth: Option<(HeaderName, HeaderValue)>,
    max_buffered: usize,
}

/// How one request to an `ai` backend is treated.
#[derive(Clone, Copy, Debug)]
pub struct AiCall {
    pub route: AiRouteType,
    /// The caller's dialect: errors and responses are written in it.
    pub ingress: Format,
}

impl AiCall {
    /// Whether the adapter reads the request body (and so must have it buffered).
    pub fn needs_body(&self) -> bool {
        matches!(
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

        let (provider, model, unsupported) = match &ai.provider {
            Provider::OpenAi(m) => (ProviderKind::OpenAi, m.model.clone(), None),
            Provider::OpenAiCompatible(m) => {
                (ProviderKind::OpenAiCompatible, m.model.clone(), None)
            }
            Provider::Anthropic(m) => (ProviderKind::Anthropic, m.model.clone(), None),
            Provider::Gemini(m) => (ProviderKind::Gemini, m.model.clone(), None),
            Provider::AzureOpenAi(a) => (ProviderKind::AzureOpenAi, a.model.clone(), None),
            Provider::Vertex(v) => (
                ProviderKind::Vertex,
                v.model.clone(),
                Some("the vertex provider is not served yet by this build"),
            ),
            Provider::Bedrock(b) => (
                ProviderKind::Bedrock,
                b.model.clone(),
                Some("the bedrock provider is not served yet by this build"),
            ),
            Provider::Copilot(m) => (
                ProviderKind::Copilot,
                m.model.clone(),
                Some("the copilot provider is not served yet by this build"),
            ),
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

        let auth = match key {
            None => None,
            Some(k) => {
                let (name, value) = match provider {
                    ProviderKind::Anthropic => (
                        HeaderName::from_static("x-api-key"),
                        k.key.expose().to_string(),
                    ),
                    ProviderKind::AzureOpenAi => (
                        HeaderName::from_static("api-key"),
                        k.key.expose().to_string(),
                    ),
                    _ => (header::AUTHORIZATION, format!("Bearer {}", k.key.expose())),
                };
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    "backendAuth.key contains characters not allowed in a header".to_string()
                })?;
                value.set_sensitive(true);
                Some((name, value))
            }
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
            unsupported: unsupported.map(str::to_string),
            authority,
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
            auth,
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
            AiRouteType::Passthrough | AiRouteType::Detect if path.ends_with("/messages") => {
                Format::AnthropicMessages
            }
            AiRouteType::Passthrough | AiRouteType::Detect => self.provider.egress(),
            _ => Format::OpenAiChat,
        };
        AiCall { route, ingress }
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
            ProviderKind::Gemini => "/v1beta/openai",
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

    /// The model to send for a requested one: forced model, else the first matching alias.
    fn resolve_model(&self, requested: Option<&str>) -> Option<String> {
        if let Some(m) = &self.model_override {
            return Some(m.clone());
        }
        let requested = requested?;
        self.aliases
            .iter()
            .find(|(pattern, _)| llm::glob_match(pattern, requested))
            .map(|(_, to)| to.clone())
            .or_else(|| Some(requested.to_string()))
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

#[derive(Clone, Copy)]
enum Operation {
    Chat,
    Embeddings,
    Responses,
}

/// What the handler must do with one call, decided before anything is sent.
pub enum Plan {
    /// Answered by the gateway itself.
    Local(Response<Body>),
    Forward(Forward),
}

pub struct Forward {
    pub body: Body,
    /// The body was re-encoded by the gateway (length and encoding headers must go).
    pub rewrote_body: bool,
    /// Path to send instead of the client's (after `urlRewrite`).
    pub path: Option<PathAndQuery>,
    pub shape: Shape,
}

/// How the response is treated.
pub struct Shape {
    pub ingress: Format,
    pub egress: Format,
    /// Read the response for usage (and translate it when the dialects differ).
    pub inspect: bool,
    pub include_usage: bool,
    pub provider: ProviderKind,
    pub request_model: Option<String>,
    pub max_buffered: usize,
}

pub fn plan(
    ai: &AiTarget,
    call: AiCall,
    parts: &Parts,
    body: Body,
    raw: Option<&Bytes>,
) -> Result<Plan, ProxyError> {
    if let Some(reason) = &ai.unsupported {
        return Err(ProxyError::not_implemented(reason.clone()));
    }
    let egress = ai.provider.egress();
    let mut shape = Shape {
        ingress: call.ingress,
        egress,
        inspect: false,
        include_usage: false,
        provider: ai.provider,
        request_model: None,
        max_buffered: ai.max_buffered,
    };
    let same_path = |op| match (&ai.path_override, ai.provider.keeps_client_path()) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => None,
        (None, false) => PathAndQuery::try_from(ai.provider_path(op)).ok(),
    };
    let needs_raw = || {
        raw.ok_or_else(|| {
            ProxyError::payload_too_large(ai.max_buffered).with_message(format!(
                "request body exceeds the {}-byte limit for LLM requests",
                ai.max_buffered
            ))
        })
    };
    match call.route {
        AiRouteType::Models => Ok(Plan::Local(models_response(ai, parts))),
        AiRouteType::AnthropicTokenCount if ai.provider != ProviderKind::Anthropic => {
            let prepared = llm::prepare_request(
                Format::AnthropicMessages,
                Format::AnthropicMessages,
                needs_raw()?,
                &ai.request_options(),
            )
            .map_err(llm_error)?;
            let n = llm::estimate_input_tokens(&prepared.prompt);
            Ok(Plan::Local(json_response(
                StatusCode::OK,
                serde_json::json!({ "input_tokens": n }).to_string(),
            )))
        }
        AiRouteType::Completions | AiRouteType::Messages => {
            let raw = needs_raw()?;
            let prepared = llm::prepare_request(call.ingress, egress, raw, &ai.request_options())
                .map_err(llm_error)?;
            let translated = call.ingress != egress;
            shape.inspect = true;
            shape.include_usage = translated && wants_usage(call.ingress, raw);
            shape.request_model = prepared.request_model;
            let path = if translated {
                match &ai.path_override {
                    Some(p) => Some(p.clone()),
                    None => Some(
                        PathAndQuery::try_from(ai.provider_path(Operation::Chat))
                            .map_err(|_| ProxyError::bad_request("invalid provider path"))?,
                    ),
                }
            } else {
                same_path(Operation::Chat)
            };
            Ok(Plan::Forward(Forward {
                body: body::full(prepared.body),
                rewrote_body: true,
                path,
                shape,
            }))
        }
        AiRouteType::Embeddings | AiRouteType::Responses => {
            if egress != Format::OpenAiChat {
                return Err(ProxyError::not_implemented(format!(
                    "{} has no {} API",
                    ai.provider.name(),
                    if matches!(call.route, AiRouteType::Embeddings) {
                        "embeddings"
                    } else {
                        "responses"
                    }
                )));
            }
            let raw = needs_raw()?;
            let (rewritten, requested) = rewrite_model(ai, raw)?;
            shape.request_model = requested;
            let op = if matches!(call.route, AiRouteType::Embeddings) {
                Operation::Embeddings
            } else {
                Operation::Responses
            };
            Ok(Plan::Forward(Forward {
                body: body::full(rewritten),
                rewrote_body: true,
                path: same_path(op),
                shape,
            }))
        }
        AiRouteType::Detect => {
            shape.inspect = true;
            Ok(Plan::Forward(Forward {
                body,
                rewrote_body: false,
                path: ai.path_override.clone(),
                shape,
            }))
        }
        AiRouteType::Passthrough | AiRouteType::AnthropicTokenCount => Ok(Plan::Forward(Forward {
            body,
            rewrote_body: false,
            path: ai.path_override.clone(),
            shape,
        })),
    }
}

/// Request headers for the provider: its credential instead of the client's, and the
/// headers its API requires.
pub fn provider_headers(ai: &AiTarget, headers: &mut HeaderMap, fwd: &Forward) {
    if let Some((name, value)) = &ai.auth {
        for h in &CLIENT_CREDENTIALS {
            headers.remove(h);
        }
        headers.insert(name.clone(), value.clone());
    }
    if ai.provider == ProviderKind::Anthropic {
        let version = HeaderName::from_static("anthropic-version");
        if !headers.contains_key(&version) {
            headers.insert(version, ANTHROPIC_VERSION);
        }
    }
    if fwd.rewrote_body {
        // The body was re-encoded; hyper sets the new length.
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::CONTENT_ENCODING);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if fwd.shape.inspect {
        // The gateway reads the response, so it asks for it uncompressed.
        headers.remove(header::ACCEPT_ENCODING);
    }
}

/// OpenAI callers ask for the final usage chunk with `stream_options.include_usage`.
fn wants_usage(ingress: Format, raw: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Req {
        stream_options: Option<StreamOptions>,
    }
    #[derive(serde::Deserialize)]
    struct StreamOptions {
        include_usage: Option<bool>,
    }
    ingress == Format::OpenAiChat
        && serde_json::from_slice::<Req>(raw)
            .ok()
            .and_then(|r| r.stream_options)
            .and_then(|s| s.include_usage)
            .unwrap_or(false)
}

/// Applies the forced model or an alias to a body that is not translated.
fn rewrite_model(ai: &AiTarget, raw: &[u8]) -> Result<(Vec<u8>, Option<String>), ProxyError> {
    let mut v: Value = serde_json::from_slice(raw)
        .map_err(|e| ProxyError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(ProxyError::bad_request(
            "request body must be a JSON object",
        ));
    };
    for (k, val) in &ai.overrides {
        obj.insert(k.clone(), val.clone());
    }
    for (k, val) in &ai.defaults {
        obj.entry(k.clone()).or_insert_with(|| val.clone());
    }
    let requested = obj.get("model").and_then(Value::as_str).map(str::to_string);
    if let Some(m) = ai.resolve_model(requested.as_deref()) {
        obj.insert("model".into(), Value::String(m));
    }
    let out = serde_json::to_vec(&v).map_err(|e| ProxyError::bad_request(e.to_string()))?;
    Ok((out, requested))
}

fn llm_error(e: llm::LlmError) -> ProxyError {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let code = if status == StatusCode::BAD_REQUEST {
        "bad_request"
    } else {
        "llm_error"
    };
    ProxyError::new(status, code, e.message)
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(body::full(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `/v1/models` answered from config, in the caller's dialect (Anthropic clients send
/// `anthropic-version`).
fn models_response(ai: &AiTarget, parts: &Parts) -> Response<Body> {
    let models = ai.model_models();
    let body = if parts.headers.contains_key("anthropic-version") {
        let data: Vec<Value> = models
            .iter()
            .map(|m| {
                serde_json::json!({
                    "type": "model", "id": m, "display_name": m,
                    "created_at": "1970-01-01T00:00:00Z"
                })
            })
            .collect();
        serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": models.first(),
            "last_id": models.last(),
        })
    } else {
        let data: Vec<Value> = models
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m, "object": "model", "created": 0, "owned_by": ai.provider.name()
                })
            })
            .collect();
        serde_json::json!({ "object": "list", "data": data })
    };
    json_response(StatusCode::OK, body.to_string())
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// Reads (and translates) the provider's response into the caller's dialect. Streams are
/// translated event by event as they arrive; other bodies are read whole (bounded).
pub async fn shape_response(
    resp: Response<Body>,
    shape: Shape,
) -> Result<Response<Body>, ProxyError> {
    let translated = shape.ingress != shape.egress;
    if !shape.inspect && !translated {
        return Ok(resp);
    }
    let (mut parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        if !translated {
            return Ok(Response::from_parts(parts, body));
        }
        let bytes = read_limited(body, MAX_ERROR_BODY).await?;
        let out = llm::translate_error(shape.ingress, shape.egress, parts.status.as_u16(), &bytes)
            .map(Bytes::from)
            .unwrap_or(bytes);
        set_json_length(&mut parts.headers, out.len());
        return Ok(Response::from_parts(parts, body::full(out)));
    }
    if is_event_stream(&parts.headers) {
        parts.headers.remove(header::CONTENT_LENGTH);
        let translator = StreamTranslator::new(shape.ingress, shape.egress, shape.include_usage);
        let body = TranslatingBody {
            inner: body,
            translator,
            done: false,
            provider: shape.provider,
            request_model: shape.request_model,
        };
        return Ok(Response::from_parts(parts, body.boxed_unsync()));
    }
    let bytes = read_limited(body, shape.max_buffered).await?;
    match llm::translate_response(shape.ingress, shape.egress, &bytes) {
        Ok((out, info)) => {
            record(shape.provider, shape.request_model.as_deref(), &info, false);
            let out = out.map(Bytes::from).unwrap_or(bytes);
            if translated {
                set_json_length(&mut parts.headers, out.len());
            }
            Ok(Response::from_parts(parts, body::full(out)))
        }
        // A body we cannot read is forwarded as it came when no translation was needed.
        Err(_) if !translated => Ok(Response::from_parts(parts, body::full(bytes))),
        Err(e) => Err(ProxyError::upstream_error(format!(
            "{} returned a response that cannot be translated: {}",
            shape.provider.name(),
            e.message
        ))),
    }
}

fn set_json_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONTENT_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
}

async fn read_limited(mut body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ProxyError::upstream_error(format!("reading the provider's response failed: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ProxyError::upstream_error(format!(
                    "the provider's response exceeds the {limit}-byte limit"
                )));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The usage of one LLM call; the telemetry layer picks it up from here.
fn record(provider: ProviderKind, request_model: Option<&str>, info: &ResponseInfo, stream: bool) {
    tracing::debug!(
        target: "switchyard::llm",
        provider = provider.name(),
        request_model = request_model.unwrap_or(""),
        response_model = info.model.as_deref().unwrap_or(""),
        input_tokens = info.usage.input_tokens,
        output_tokens = info.usage.output_tokens,
        cached_input_tokens = info.usage.cached_input_tokens,
        reasoning_tokens = info.usage.reasoning_tokens,
        stream,
        "llm call"
    );
}

/// A provider stream rewritten event by event into the caller's dialect. An upstream failure
/// mid-stream becomes an error event in that dialect and a clean end of the body.
struct TranslatingBody {
    inner: Body,
    translator: StreamTranslator,
    done: bool,
    provider: ProviderKind,
    request_model: Option<String>,
}

impl TranslatingBody {
    fn end(&mut self) {
        self.done = true;
        record(
            self.provider,
            self.request_model.as_deref(),
            &self.translator.info(),
            true,
        );
    }
}

impl http_body::Body for TranslatingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let out = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.translator.feed(data),
                    // Trailers have no place in an SSE stream.
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "provider stream failed");
                    let out = this
                        .translator
                        .fail(&format!("the provider's stream broke off: {e}"));
                    this.end();
                    out
                }
                None => {
                    let out = this.translator.finish();
                    this.end();
                    out
                }
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
