//! `routes[].backends[]`: where a route sends traffic.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{A2aBackend, AiBackend, McpBackend, Policies};
use crate::values::HostPort;

/// Where a route sends traffic. Exactly one of `host`, `ai`, `mcp`, `a2a`, `pool`.
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
    /// An A2A agent: cards rewritten to the gateway, calls classified and observed.
    A2a(A2aBackend),
    /// A model pool (`pools[].name`): the pod is picked per request.
    Pool(String),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBackend {
    host: Option<HostPort>,
    ai: Option<Box<AiBackend>>,
    mcp: Option<McpBackend>,
    a2a: Option<A2aBackend>,
    pool: Option<String>,
    weight: Option<u32>,
    policies: Option<Policies>,
}

impl TryFrom<RawBackend> for Backend {
    type Error = String;
    fn try_from(raw: RawBackend) -> Result<Self, String> {
        let kind = match (raw.host, raw.ai, raw.mcp, raw.a2a, raw.pool) {
            (Some(h), None, None, None, None) => BackendKind::Host(h),
            (None, Some(a), None, None, None) => BackendKind::Ai(a),
            (None, None, Some(m), None, None) => BackendKind::Mcp(m),
            (None, None, None, Some(a), None) => BackendKind::A2a(a),
            (None, None, None, None, Some(p)) => BackendKind::Pool(p),
            (None, None, None, None, None) => {
                return Err("a backend needs one of `host`, `ai`, `mcp`, `a2a` or `pool`".into());
            }
            _ => {
                return Err(
                    "a backend takes exactly one of `host`, `ai`, `mcp`, `a2a` or `pool`".into(),
                )
            }
        };
        Ok(Backend {
            kind,
            weight: raw.weight.unwrap_or(1),
            policies: raw.policies,
        })
    }
}
