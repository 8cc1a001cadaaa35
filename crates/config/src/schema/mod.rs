//! The configuration schema. The seeds' example config is the contract: every key it uses is
//! here with the same name and shape; new features extend this one schema.
//!
//! One module per part of the YAML tree: `config` (here, logging and tracing in
//! `observability`), `binds` (`bind`, with `backend`, `ai`, `mcp` and `policies`) and `pools`
//! (`pool`). Everything is re-exported here, so paths stay `config::Name`.

mod a2a;
mod ai;
mod backend;
mod bind;
mod governance;
mod mcp;
mod observability;
mod policies;
mod pool;

pub use a2a::*;
pub use ai::*;
pub use backend::*;
pub use bind::*;
pub use governance::*;
pub use mcp::*;
pub use observability::*;
pub use policies::*;
pub use pool::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::Dur;

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
    /// Shared store for rate limits, budgets, usage and virtual keys across replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<Redis>,
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
    /// Longest wait for the next bytes of a request body once the gateway reads it (nginx's
    /// `client_body_timeout`); past it the request fails with 408. Default 30s.
    #[serde(default = "Limits::default_body_read_timeout")]
    pub body_read_timeout: Dur,
    /// Longest a write to a client may stay blocked (a client that stopped reading); past it
    /// the connection is dropped and its buffers freed. Default 60s.
    #[serde(default = "Limits::default_write_timeout")]
    pub write_timeout: Dur,
    /// Longest text kept per prompt message and per completion choice of an LLM call for
    /// telemetry (`llm.prompt`, `llm.completion`) and for counting the tokens of a stream that
    /// broke off; the rest is not kept. Default 256 KiB.
    #[serde(default = "Limits::default_max_recorded_text_bytes")]
    pub max_recorded_text_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once. Default 100.
    #[serde(default = "Limits::default_http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    /// Process-wide ceilings near which new requests are shed with 503 and `retry-after`
    /// (Envoy's overload manager). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overload: Option<Overload>,
}

/// `config.limits.overload`: the process's ceilings. At `shedAt` of a ceiling (default 95%)
/// new requests are answered 503 with `retry-after` (in the route's dialect) and
/// `/healthz/ready` reports the pressure; at the connection ceiling itself new connections are
/// closed. Requests already running finish.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Overload {
    /// Resident memory of the process, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    /// Downstream connections open at once over every bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// The fraction of a ceiling at which shedding starts, in (0, 1]. Default 0.95.
    #[serde(default = "Overload::default_shed_at")]
    pub shed_at: f64,
    /// The `retry-after` sent with a shed request. Default 5s.
    #[serde(default = "Overload::default_retry_after")]
    pub retry_after: Dur,
}

impl Overload {
    fn default_shed_at() -> f64 {
        0.95
    }
    fn default_retry_after() -> Dur {
        Dur(std::time::Duration::from_secs(5))
    }
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
    fn default_body_read_timeout() -> Dur {
        Dur(std::time::Duration::from_secs(30))
    }
    fn default_write_timeout() -> Dur {
        Dur(std::time::Duration::from_secs(60))
    }
    fn default_http2_max_concurrent_streams() -> u32 {
        100
    }
    fn default_max_recorded_text_bytes() -> usize {
        256 * 1024
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
            body_read_timeout: Self::default_body_read_timeout(),
            write_timeout: Self::default_write_timeout(),
            http2_max_concurrent_streams: Self::default_http2_max_concurrent_streams(),
            max_recorded_text_bytes: Self::default_max_recorded_text_bytes(),
            overload: None,
        }
    }
}
