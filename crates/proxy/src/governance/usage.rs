//! Usage records (requests, tokens, spend per key, team, org and model), added up in the
//! process and written to the store once a second: a request costs a few map updates, not a
//! store round trip. (Measured with `bench/governance.sh`: two Redis pipelines per request made
//! a keyed route cost +63% CPU per request over the plain route.) A process that dies loses at
//! most the last second of usage; limits and budgets are not affected (they are charged
//! exactly, per request). A request's usage lands in the period current when it is written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::admin::usage_key;
use super::store::{Store, UsageEntry};
use super::windows;

const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Distinct (dimension, name) entries kept between flushes; past it new names are dropped
/// (and counted in a warning) rather than growing without bound while the store is down.
const MAX_PENDING: usize = 100_000;

/// What a usage line is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Key(Arc<str>),
    Team(Arc<str>),
    Org(Arc<str>),
    Model(Arc<str>),
}

impl Dim {
    fn field(&self, metric: &str) -> String {
        let (kind, name) = match self {
            Dim::Key(n) => ("key", n),
            Dim::Team(n) => ("team", n),
            Dim::Org(n) => ("org", n),
            Dim::Model(n) => ("model", n),
        };
        format!("{kind}/{name}/{metric}")
    }
}

/// One call's usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: i64,
    pub input: i64,
    pub output: i64,
    pub cached: i64,
    pub cost_micros: i64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.input += o.input;
        self.output += o.output;
        self.cached += o.cached;
        self.cost_micros += o.cost_micros;
    }
}

/// Usage waiting to be written.
pub struct UsageBuffer {
    store: Store,
    prefix: Arc<str>,
    pending: Mutex<HashMap<Dim, Counts>>,
    flushing: AtomicBool,
}

impl UsageBuffer {
    pub fn new(store: Store, prefix: Arc<str>) -> Arc<UsageBuffer> {
        Arc::new(UsageBuffer {
            store,
            prefix,
            pending: Mutex::new(HashMap::new()),
            flushing: AtomicBool::new(false),
        })
    }

    /// Adds one call's usage to each of `dims`; starts the flusher on first use.
    pub fn add(self: &Arc<Self>, dims: &[Dim], counts: Counts) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for d in dims {
                if let Some(c) = pending.get_mut(d) {
                    c.add(&counts);
                } else if pending.len() < MAX_PENDING {
                    pending.insert(d.clone(), counts);
                }
            }
        }
        self.start();
    }

    fn start(self: &Arc<Self>) {
        if self.flushing.load(Ordering::Relaxed) || self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.flushing.store(false, Ordering::Release);
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                tokio::time::sleep(FLUSH_EVERY).await;
                let Some(buffer) = weak.upgrade() else { return };
                buffer.flush().await;
            }
        });
    }

    /// Writes what is pending to the day and month records (kept 40 and 400 days).
    pub async fn flush(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if pending.is_empty() {
            return;
        }
        for (window, keep) in [
            (config::BudgetWindow::Day, Duration::from_secs(40 * 86_400)),
            (
                config::BudgetWindow::Month,
                Duration::from_secs(400 * 86_400),
            ),
        ] {
            let hash: Arc<str> =
                usage_key(&self.prefix, window, &windows::calendar(window).0).into();
            let mut entries: Vec<UsageEntry> = Vec::with_capacity(pending.len() * 5);
            for (dim, c) in &pending {
                for (metric, n) in [
                    ("requests", c.requests),
                    ("inputTokens", c.input),
                    ("outputTokens", c.output),
                    ("cachedInputTokens", c.cached),
                    ("costMicros", c.cost_micros),
                ] {
                    if n != 0 {
                        entries.push((hash.clone(), dim.field(metric), n));
                    }
                }
            }
            if let Err(e) = self.store.add_usage(&entries, keep).await {
                tracing::warn!(error = %e, entries = entries.len(), "usage not recorded: the store is unavailable");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn usage_adds_up_in_the_process_and_lands_in_day_and_month_records() {
        let store = Store::Local(Arc::default());
        let buffer = UsageBuffer::new(store.clone(), "t".into());
        let dims = [Dim::Key("alice".into()), Dim::Model("m".into())];
        let one = Counts {
            requests: 1,
            input: 10,
            output: 5,
            cached: 0,
            cost_micros: 7,
        };
        buffer.add(&dims, one);
        buffer.add(&dims, one);
        buffer.flush().await;
        let day = usage_key(
            "t",
            config::BudgetWindow::Day,
            &windows::calendar(config::BudgetWindow::Day).0,
        );
        let fields = store.usage(&day).await.unwrap();
        assert_eq!(fields["key/alice/requests"], 2);
        assert_eq!(fields["model/m/inputTokens"], 20);
        assert_eq!(fields["key/alice/costMicros"], 14);
        assert!(
            !fields.contains_key("key/alice/cachedInputTokens"),
            "zeros are not written"
        );
        let month = usage_key(
            "t",
            config::BudgetWindow::Month,
            &windows::calendar(config::BudgetWindow::Month).0,
        );
        assert_eq!(
            store.usage(&month).await.unwrap()["key/alice/outputTokens"],
            10
        );
    }
}
