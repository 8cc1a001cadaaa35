//! `pools[]`: self-hosted model pools behind an endpoint picker.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::{Dur, HeaderName, HostPort};

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
