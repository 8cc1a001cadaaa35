//! A pool's settings as the runtime needs them (the config crate converts its YAML form).

use std::path::PathBuf;
use std::time::Duration;

use crate::PrefixConfig;

/// Where a pool's pods come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoints {
    /// `host:port` addresses.
    Static(Vec<String>),
    /// One `host:port` per line, `#` comments; re-read when it changes.
    File(PathBuf),
    /// Every address `name` resolves to, with `port`; re-resolved every `refresh`.
    Dns {
        name: String,
        port: u16,
        refresh: Duration,
    },
}

/// Scraping of each pod's Prometheus page.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Older metrics are unknown, not idle.
    pub stale_after: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    pub name: String,
    pub endpoints: Endpoints,
    /// Default strategy spec, e.g. `prefix-cache:2,least-request:1`.
    pub strategy: String,
    /// Lower-case request header naming the session (`session-affinity`).
    pub session_header: String,
    pub metrics: Option<MetricsSpec>,
    pub prefix: PrefixConfig,
    /// First ejection after a refused connection; doubles per consecutive failure.
    pub ejection_base: Duration,
    pub ejection_max: Duration,
    /// Requests one pod may have in flight from this gateway; a pod at the cap is skipped and a
    /// pool whose healthy pods are all at it refuses with 429. `None`: no cap.
    pub max_in_flight_per_pod: Option<u32>,
}

impl PoolSpec {
    /// A static pool with default settings (least-request, metrics scraped every second).
    pub fn with_endpoints(name: &str, endpoints: &[&str]) -> Self {
        PoolSpec {
            name: name.into(),
            endpoints: Endpoints::Static(endpoints.iter().map(|s| s.to_string()).collect()),
            strategy: "least-request".into(),
            session_header: "x-session-id".into(),
            metrics: Some(MetricsSpec {
                path: "/metrics".into(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                stale_after: Duration::from_secs(3),
            }),
            prefix: PrefixConfig::default(),
            ejection_base: Duration::from_secs(1),
            ejection_max: Duration::from_secs(30),
            max_in_flight_per_pod: None,
        }
    }
}
