//! `backends[].mcp`: MCP federation backends and their targets.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Policies;
use crate::values::{Dur, Secret};

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
    /// Keep targets' list results (`tools/list`, `prompts/list`, `resources/list`,
    /// `resources/templates/list`) for the `ttlMs` they declare (2026-07-28 targets), shared
    /// across callers when `cacheScope` is `public`, per caller when `private`. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_cache: Option<bool>,
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
