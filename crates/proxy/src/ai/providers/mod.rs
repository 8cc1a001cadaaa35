//! LLM providers, one file each: where the provider lives, its API's paths and dialect, the
//! headers it requires, and how the gateway proves itself to it. The two functions below are
//! the table from the config's `provider` to its file.
//!
//! Adding a provider = its dialect in `llm` (if new), its file here with a [`ProviderApi`] and
//! a `setup`, its arms in [`default_host`] and [`setup`], and its config type.

mod anthropic;
mod azure;
mod bedrock;
mod copilot;
mod gemini;
mod openai;
mod vertex;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use llm::Format;

use config::Provider;

use super::Credentials;
use crate::error::{CompileError, ProxyError};

/// The operations whose paths the gateway writes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Embeddings,
    Responses,
}

impl Operation {
    /// The path segment of an OpenAI-shaped operation.
    fn openai_segment(self) -> &'static str {
        match self {
            Operation::Chat => "chat/completions",
            Operation::Embeddings => "embeddings",
            Operation::Responses => "responses",
        }
    }
}

/// One provider's API, as far as the gateway must know it.
pub trait ProviderApi: Send + Sync {
    /// The OpenTelemetry GenAI `gen_ai.provider.name` value.
    fn name(&self) -> &'static str;

    /// The dialect its chat API speaks (requests are translated into it).
    fn egress(&self) -> Format {
        Format::OpenAiChat
    }

    /// Its URL layout is the client's own: a same-dialect call keeps the client's path.
    fn keeps_client_path(&self) -> bool {
        false
    }

    /// It counts tokens itself (`/v1/messages/count_tokens`); otherwise the gateway
    /// estimates them.
    fn counts_tokens(&self) -> bool {
        false
    }

    /// It serves OpenAI-shaped embeddings.
    fn serves_embeddings(&self) -> bool {
        self.egress() == Format::OpenAiChat
    }

    /// The path of an operation under `prefix` (`pathPrefix`, no trailing slash).
    fn operation_path(&self, prefix: &str, op: Operation) -> String {
        format!("{prefix}/v1/{}", op.openai_segment())
    }

    /// The path of a chat call. Providers that name the model (and streaming) in the URL
    /// need the model.
    fn chat_path(
        &self,
        prefix: &str,
        _model: Option<&str>,
        _stream: bool,
    ) -> Result<String, ProxyError> {
        Ok(self.operation_path(prefix, Operation::Chat))
    }

    /// Headers its API requires on every request, unless the client set them.
    fn required_headers(&self, _headers: &mut HeaderMap) {}
}

/// What a provider's config compiles to.
pub(crate) struct Setup {
    pub api: Box<dyn ProviderApi>,
    /// The model every call uses (the config's `model`), if set.
    pub model: Option<String>,
    pub credentials: Credentials,
}

/// The provider's own host, dialled on 443 with TLS unless `hostOverride` says otherwise.
pub fn default_host(provider: &Provider) -> Result<String, CompileError> {
    match provider {
        Provider::OpenAi(_) => Ok(openai::HOST.into()),
        Provider::OpenAiCompatible(_) => Err(CompileError::new(openai::COMPATIBLE_NEEDS_HOST)),
        Provider::Anthropic(_) => Ok(anthropic::HOST.into()),
        Provider::Gemini(_) => Ok(gemini::HOST.into()),
        Provider::Vertex(v) => Ok(vertex::host(v)),
        Provider::Bedrock(b) => Ok(bedrock::host(b)),
        Provider::AzureOpenAi(a) => Ok(a.host.clone()),
        Provider::Copilot(_) => Ok(copilot::HOST.into()),
    }
}

/// Compiles a provider's config; `key` is the backend's `backendAuth.key`.
pub(crate) fn setup(
    provider: &Provider,
    key: Option<&config::BackendAuth>,
    limits: &config::Limits,
) -> Result<Setup, CompileError> {
    match provider {
        Provider::OpenAi(m) => openai::setup(m, key, false),
        Provider::OpenAiCompatible(m) => openai::setup(m, key, true),
        Provider::Anthropic(m) => anthropic::setup(m, key),
        Provider::Gemini(m) => gemini::setup(m, key),
        Provider::Vertex(v) => vertex::setup(v, key, limits),
        Provider::Bedrock(b) => bedrock::setup(b),
        Provider::AzureOpenAi(a) => azure::setup(a, key),
        Provider::Copilot(c) => copilot::setup(c, key, limits),
    }
}

/// A fixed credential header, marked sensitive so it never prints.
fn static_header(name: HeaderName, value: String) -> Result<Credentials, CompileError> {
    let mut value = HeaderValue::from_str(&value).map_err(|_| {
        CompileError::at(
            "backendAuth.key",
            "contains characters not allowed in a header",
        )
    })?;
    value.set_sensitive(true);
    Ok(Credentials::Header(name, value))
}

/// The key in the provider's own header (`x-api-key`, `api-key`, ...) when one is configured;
/// the client's own credentials otherwise.
fn key_header_or_none(
    name: &'static str,
    key: Option<&config::BackendAuth>,
) -> Result<Credentials, CompileError> {
    match key {
        Some(k) => static_header(HeaderName::from_static(name), k.key.expose().to_string()),
        None => Ok(Credentials::None),
    }
}

/// `Authorization: Bearer <key>` when a key is configured; the client's own otherwise.
fn bearer_or_none(key: Option<&config::BackendAuth>) -> Result<Credentials, CompileError> {
    match key {
        Some(k) => static_header(header::AUTHORIZATION, format!("Bearer {}", k.key.expose())),
        None => Ok(Credentials::None),
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

/// The model a URL-naming provider needs, or the caller's error.
fn need_model<'m>(name: &str, model: Option<&'m str>) -> Result<&'m str, ProxyError> {
    model.filter(|m| !m.is_empty()).ok_or_else(|| {
        ProxyError::bad_request(format!(
            "{name} needs a model: set `model` in the request or the provider config"
        ))
    })
}
