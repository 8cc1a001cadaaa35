//! Where limits and budgets are counted: Redis when `config.redis` is set (every replica
//! counts together), else this process.
//!
//! A request's counters are checked and charged in one atomic step ([`Store::reserve`]: one
//! Lua script, one round trip): either every counter has room and all are charged, or none
//! is. What was charged on an estimate is trued up later ([`Store::adjust`], off the request
//! path).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

/// One counter a request charges.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// The store key (prefix included).
    pub key: Arc<str>,
    pub amount: i64,
    /// Refused when the counter would pass it; `None`: counted, never refused (audit).
    pub limit: Option<i64>,
    /// Life of a new counter: the rest of its window.
    pub ttl: Duration,
}

/// A change to one counter: key, amount (negative: a refund), life if it is new.
pub type Adjustment = (Arc<str>, i64, Duration);

/// One field of a usage hash to add to: hash key, field, amount.
pub type UsageEntry = (Arc<str>, String, i64);

/// The store's answer to a reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// The first charge that did not fit; nothing was charged then.
    pub refused: Option<usize>,
    /// Per charge: the counter's value (after charging when admitted) and its remaining life.
    pub counters: Vec<(i64, Duration)>,
}

/// The store could not answer (unreachable, timed out): each limit says whether to admit.
#[derive(Debug, Clone)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The counting store: shared in Redis, or this process's own.
#[derive(Clone)]
pub enum Store {
    Local(Arc<LocalStore>),
    Redis(Arc<RedisStore>),
}

impl Store {
    /// Checks every charge and, when all fit, applies them all, atomically.
    pub async fn reserve(&self, charges: &[Charge]) -> Result<Reservation, StoreError> {
        match self {
            Store::Local(s) => Ok(s.reserve(charges)),
            Store::Redis(s) => s.reserve(charges).await,
        }
    }

    /// Adds `amount` (negative: a refund) to counters, keeping their expiry.
    pub async fn adjust(&self, adjustments: &[Adjustment]) -> Result<(), StoreError> {
        match self {
            Store::Local(s) => {
                s.adjust(adjustments);
                Ok(())
            }
            Store::Redis(s) => s.adjust(adjustments).await,
        }
    }

    /// Adds to fields of hashes (usage records), creating them with `ttl`.
    pub async fn add_usage(&self, entries: &[UsageEntry], ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Local(s) => {
                s.add_usage(entries, ttl);
                Ok(())
            }
            Store::Redis(s) => s.add_usage(entries, ttl).await,
        }
    }

    /// A usage hash's fields.
    pub async fn usage(&self, key: &str) -> Result<HashMap<String, i64>, StoreError> {
        match self {
            Store::Local(s) => Ok(s.usage(key)),
            Store::Redis(s) => s.usage(key).await,
        }
    }

    /// A counter's current value (0 when absent).
    pub async fn value(&self, key: &str) -> Result<i64, StoreError> {
        match self {
            Store::Local(s) => Ok(s.value(key)),
            Store::Redis(s) => s.value(key).await,
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }
}

/// Counters in this process: the same semantics as Redis, for one replica.
#[derive(Default)]
pub struct LocalStore {
    counters: Mutex<HashMap<Arc<str>, (i64, Instant)>>,
    usage: Mutex<HashMap<Arc<str>, UsageRecord>>,
}

/// A usage hash's fields and when it expires.
type UsageRecord = (HashMap<String, i64>, Instant);

impl LocalStore {
    fn reserve(&self, charges: &[Charge]) -> Reservation {
        let now = Instant::now();
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if counters.len() > 100_000 {
            counters.retain(|_, (_, expires)| *expires > now);
        }
        let current = |c: &Charge, map: &HashMap<Arc<str>, (i64, Instant)>| {
            map.get(&c.key)
                .filter(|(_, exp)| *exp > now)
                .map_or((0, c.ttl), |(v, exp)| (*v, *exp - now))
        };
        let refused = charges.iter().position(|c| {
            let (v, _) = current(c, &counters);
            c.limit.is_some_and(|l| v.saturating_add(c.amount) > l)
        });
        let mut out = Vec::with_capacity(charges.len());
        for c in charges {
            if refused.is_none() {
                let entry = counters.entry(c.key.clone()).or_insert((0, now + c.ttl));
                if entry.1 <= now {
                    *entry = (0, now + c.ttl);
                }
                entry.0 = entry.0.saturating_add(c.amount);
            }
            out.push(current(c, &counters));
        }
        Reservation {
            refused,
            counters: out,
        }
    }

    fn adjust(&self, adjustments: &[Adjustment]) {
        let now = Instant::now();
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for (key, amount, ttl) in adjustments {
            let entry = counters.entry(key.clone()).or_insert((0, now + *ttl));
            if entry.1 <= now {
                *entry = (0, now + *ttl);
            }
            entry.0 = entry.0.saturating_add(*amount);
        }
    }

    fn add_usage(&self, entries: &[UsageEntry], ttl: Duration) {
        let now = Instant::now();
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        usage.retain(|_, (_, exp)| *exp > now);
        for (key, field, amount) in entries {
            let (fields, _) = usage
                .entry(key.clone())
                .or_insert_with(|| (HashMap::new(), now + ttl));
            *fields.entry(field.clone()).or_default() += amount;
        }
    }

    fn usage(&self, key: &str) -> HashMap<String, i64> {
        let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        usage
            .get(key)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(f, _)| f.clone())
            .unwrap_or_default()
    }

    fn value(&self, key: &str) -> i64 {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters
            .get(key)
            .filter(|(_, exp)| *exp > Instant::now())
            .map_or(0, |(v, _)| *v)
    }
}

/// Checks every counter against its limit, then charges all of them or none.
/// KEYS: the counters. ARGV: per counter amount, limit (-1: none), ttl in ms.
/// Returns the 1-based index of the first refused counter (0: admitted), then per counter
/// its value and remaining life in ms.
const RESERVE: &str = r#"
local refused = 0
local values = {}
for i = 1, #KEYS do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  values[i] = v
  local amount = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  if refused == 0 and limit >= 0 and v + amount > limit then
    refused = i
  end
end
local out = { refused }
for i = 1, #KEYS do
  if refused == 0 then
    values[i] = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
    if redis.call('PTTL', KEYS[i]) < 0 then
      redis.call('PEXPIRE', KEYS[i], ARGV[3 * i])
    end
  end
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl < 0 then ttl = tonumber(ARGV[3 * i]) end
  out[#out + 1] = values[i]
  out[#out + 1] = ttl
end
return out
"#;

/// Adds to counters, keeping the expiry of existing ones. ARGV: per counter amount, ttl ms.
const ADJUST: &str = r#"
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[2 * i - 1])
  if redis.call('PTTL', KEYS[i]) < 0 then
    redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
  end
end
return 0
"#;

/// Redis: one multiplexed connection per gateway, reconnected automatically.
pub struct RedisStore {
    client: redis::Client,
    /// Made on first use, so a gateway starts while Redis is down.
    conn: tokio::sync::OnceCell<ConnectionManager>,
    timeout: Duration,
    reserve: redis::Script,
    adjust: redis::Script,
}

impl RedisStore {
    pub fn new(url: &str, timeout: Duration) -> Result<RedisStore, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("config.redis.url is not a Redis URL: {}", e.kind_text()))?;
        Ok(RedisStore {
            client,
            conn: tokio::sync::OnceCell::new(),
            timeout,
            reserve: redis::Script::new(RESERVE),
            adjust: redis::Script::new(ADJUST),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let make = || async {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(250))))
                .set_response_timeout(Some(self.timeout))
                .set_number_of_retries(1);
            ConnectionManager::new_with_config(self.client.clone(), config).await
        };
        let conn = tokio::time::timeout(self.timeout * 5, self.conn.get_or_try_init(make))
            .await
            .map_err(|_| StoreError("redis: connect timed out".into()))?
            .map_err(|e| StoreError(format!("redis: {}", e.kind_text())))?;
        Ok(conn.clone())
    }

    /// Runs `f` within the store's timeout.
    async fn within<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError(format!("redis: {}", e.kind_text()))),
            Err(_) => Err(StoreError("redis: no answer within the timeout".into())),
        }
    }

    async fn reserve(&self, charges: &[Charge]) -> Result<Reservation, StoreError> {
        if charges.is_empty() {
            return Ok(Reservation {
                refused: None,
                counters: Vec::new(),
            });
        }
        let mut conn = self.conn().await?;
        let mut inv = self.reserve.prepare_invoke();
        for c in charges {
            inv.key(&*c.key)
                .arg(c.amount)
                .arg(c.limit.unwrap_or(-1))
                .arg(c.ttl.as_millis().max(1) as u64);
        }
        let out: Vec<i64> = self.within(inv.invoke_async(&mut conn)).await?;
        if out.len() != 1 + 2 * charges.len() {
            return Err(StoreError(
                "redis: unexpected answer to a reservation".into(),
            ));
        }
        Ok(Reservation {
            refused: (out[0] > 0).then(|| out[0] as usize - 1),
            counters: out[1..]
                .chunks(2)
                .map(|p| (p[0], Duration::from_millis(p[1].max(0) as u64)))
                .collect(),
        })
    }

    async fn adjust(&self, adjustments: &[Adjustment]) -> Result<(), StoreError> {
        if adjustments.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut inv = self.adjust.prepare_invoke();
        for (key, amount, ttl) in adjustments {
            inv.key(&**key)
                .arg(*amount)
                .arg(ttl.as_millis().max(1) as u64);
        }
        self.within(inv.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    async fn add_usage(&self, entries: &[UsageEntry], ttl: Duration) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        let mut keys: Vec<&str> = Vec::new();
        for (key, field, amount) in entries {
            pipe.hincr(&**key, field, *amount).ignore();
            if !keys.contains(&&**key) {
                keys.push(key);
            }
        }
        for k in keys {
            pipe.expire(k, ttl.as_secs() as i64).ignore();
        }
        self.within(pipe.query_async::<()>(&mut conn)).await
    }

    async fn usage(&self, key: &str) -> Result<HashMap<String, i64>, StoreError> {
        let mut conn = self.conn().await?;
        self.within(redis::cmd("HGETALL").arg(key).query_async(&mut conn))
            .await
    }

    async fn value(&self, key: &str) -> Result<i64, StoreError> {
        let mut conn = self.conn().await?;
        let v: Option<i64> = self
            .within(redis::cmd("GET").arg(key).query_async(&mut conn))
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// A connection for the key registry (virtual keys).
    pub(crate) async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        self.conn().await
    }
}

trait KindText {
    fn kind_text(&self) -> String;
}

impl KindText for redis::RedisError {
    /// The error without anything the URL held (a password).
    fn kind_text(&self) -> String {
        match self.detail() {
            Some(d) => format!("{:?}: {d}", self.kind()),
            None => format!("{:?}", self.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(key: &str, amount: i64, limit: Option<i64>) -> Charge {
        Charge {
            key: key.into(),
            amount,
            limit,
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_reservation_charges_all_counters_or_none() {
        let s = LocalStore::default();
        let r = s.reserve(&[charge("a", 1, Some(2)), charge("b", 5, Some(10))]);
        assert_eq!(r.refused, None);
        assert_eq!((r.counters[0].0, r.counters[1].0), (1, 5));
        // b has no room for 6 more: a is not charged either.
        let r = s.reserve(&[charge("a", 1, Some(2)), charge("b", 6, Some(10))]);
        assert_eq!(r.refused, Some(1));
        assert_eq!(s.value("a"), 1);
        assert_eq!(s.value("b"), 5);
        // An audit counter (no limit) never refuses.
        let r = s.reserve(&[charge("b", 100, None)]);
        assert_eq!((r.refused, r.counters[0].0), (None, 105));
    }

    #[test]
    fn adjustments_refund_and_counters_expire() {
        let s = LocalStore::default();
        s.reserve(&[charge("t", 100, Some(100))]);
        s.adjust(&[("t".into(), -60, Duration::from_secs(60))]);
        assert_eq!(s.value("t"), 40);
        let short = Charge {
            ttl: Duration::from_millis(1),
            ..charge("e", 5, Some(5))
        };
        s.reserve(std::slice::from_ref(&short));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.value("e"), 0, "an expired window starts again from zero");
        assert_eq!(s.reserve(&[short]).refused, None);
    }
}
