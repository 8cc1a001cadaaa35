//! `binds[]`: ports, listeners, routes and their matches.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Backend, ListenerA2a, Policies};
use crate::values::Pattern;

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
    /// A2A across this listener's routes (the agent catalog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a: Option<ListenerA2a>,
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
    /// The LLM model the request names: `model` in the body (Chat Completions, Completions,
    /// Responses, Embeddings, Anthropic Messages) or in the path (Gemini's
    /// `/models/{model}:generateContent`). The body is read before routing only on listeners
    /// with a model match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<StringMatch>,
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

single_key_enum!(PathMatch, "one of `exact`, `pathPrefix`, `regex`");
single_key_enum!(StringMatch, "one of `exact`, `regex`");
