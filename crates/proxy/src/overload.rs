//! The overload manager (`config.limits.overload`, after Envoy's): the process's downstream
//! connections and resident memory against their ceilings. Near a ceiling (`shedAt` of it)
//! new requests are shed with 503 `overloaded` and `retry-after`, so that the work already
//! running finishes instead of everyone degrading; at the connection ceiling new connections
//! are closed. Memory is sampled from `/proc/self/status` every [`SAMPLE_EVERY`] while a
//! memory ceiling is configured.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often resident memory is read while `maxMemoryBytes` is set.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct Overload {
    /// Downstream connections open over every bind.
    connections: AtomicUsize,
    /// The last sampled resident memory, in bytes (0: not sampled).
    rss: AtomicU64,
}

impl Overload {
    /// Counts a new downstream connection, or refuses it (`None`) at the connection ceiling.
    /// A refusal is counted in `switchyard_overload_shed_total` like a shed request.
    pub fn connection(self: &Arc<Self>, limits: &config::Limits) -> Option<ConnectionGuard> {
        let max = limits.overload.as_ref().and_then(|o| o.max_connections);
        let before = self.connections.fetch_add(1, Ordering::Relaxed);
        if max.is_some_and(|max| before >= max) {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            count_shed("connection", "connections");
            return None;
        }
        Some(ConnectionGuard(self.clone()))
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Why new work is shed now, or `None` when the process is below every ceiling.
    pub fn pressure(&self, limits: &config::Limits) -> Option<String> {
        self.shed_reason(limits).map(|(_, why)| why)
    }

    /// Sheds a request near a ceiling: counted in `switchyard_overload_shed_total`, and why
    /// (for its 503); `None` when the process is below every ceiling.
    pub fn shed_request(&self, limits: &config::Limits) -> Option<String> {
        let (ceiling, why) = self.shed_reason(limits)?;
        count_shed("request", ceiling);
        Some(why)
    }

    /// The ceiling new work is shed at (`memory` or `connections`) and why, or `None`.
    fn shed_reason(&self, limits: &config::Limits) -> Option<(&'static str, String)> {
        let o = limits.overload.as_ref()?;
        if let Some(max) = o.max_memory_bytes {
            let rss = self.rss.load(Ordering::Relaxed);
            if rss as f64 >= max as f64 * o.shed_at {
                return Some((
                    "memory",
                    format!(
                        "the gateway is overloaded (resident memory {} MiB of its {} MiB ceiling); retry later",
                        rss >> 20,
                        max >> 20
                    ),
                ));
            }
        }
        if let Some(max) = o.max_connections {
            let open = self.connections();
            if open as f64 >= max as f64 * o.shed_at {
                return Some((
                    "connections",
                    format!(
                        "the gateway is overloaded ({open} connections open of its {max} ceiling); retry later"
                    ),
                ));
            }
        }
        None
    }

    fn sample(&self) {
        if let Some(kb) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        {
            self.rss.store(kb * 1024, Ordering::Relaxed);
        }
    }
}

fn count_shed(kind: &'static str, ceiling: &'static str) {
    telemetry::Metrics::global()
        .overload_shed
        .get_or_create(&telemetry::metrics::ShedLabels { kind, ceiling })
        .inc();
}

/// Samples memory while the gateway lives and a memory ceiling is configured.
pub(crate) fn spawn_sampler(shared: Weak<crate::Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let limits = &shared.snapshot.load().limits;
            if limits
                .overload
                .as_ref()
                .is_some_and(|o| o.max_memory_bytes.is_some())
            {
                shared.overload.sample();
            }
        }
    });
}

/// One counted downstream connection; uncounted when dropped.
pub struct ConnectionGuard(Arc<Overload>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(yaml: &str) -> config::Limits {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn sheds_near_the_connection_ceiling_and_refuses_at_it() {
        let o = Arc::new(Overload::default());
        let l = limits("overload: {maxConnections: 4, shedAt: 0.5}");
        let a = o.connection(&l).unwrap();
        assert!(o.pressure(&l).is_none());
        let b = o.connection(&l).unwrap();
        assert!(o
            .pressure(&l)
            .unwrap()
            .contains("2 connections open of its 4"));
        let (c, d) = (o.connection(&l).unwrap(), o.connection(&l).unwrap());
        assert!(o.connection(&l).is_none(), "the fifth is refused");
        drop((a, b, c));
        assert_eq!(o.connections(), 1);
        assert!(o.pressure(&l).is_none());
        drop(d);
        // No ceiling: counted, never refused or shed.
        let none = config::Limits::default();
        let _g = o.connection(&none).unwrap();
        assert!(o.pressure(&none).is_none());
    }

    #[test]
    fn sheds_near_the_memory_ceiling() {
        let o = Overload::default();
        o.sample();
        let rss = o.rss.load(Ordering::Relaxed);
        assert!(rss > 0);
        let low = limits(&format!("overload: {{maxMemoryBytes: {}}}", rss / 2));
        assert!(o.pressure(&low).unwrap().contains("resident memory"));
        let high = limits(&format!("overload: {{maxMemoryBytes: {}}}", rss * 4));
        assert!(o.pressure(&high).is_none());
    }
}
