//! API keys: hashed at rest, looked up by hash. Three sources: the config's keys, a keys file
//! (reloaded when it changes), and virtual keys made through the admin API (kept in Redis
//! when `config.redis` is set and synced to every replica within a second; in this process
//! otherwise).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use telemetry::ApiKeyInfo;

use super::store::{RedisStore, StoreError};

/// SHA-256 of a key: what is stored and compared.
pub type KeyHash = [u8; 32];

pub fn hash_key(key: &str) -> KeyHash {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// What a key is allowed: its identity and its own limits.
#[derive(Debug)]
pub struct KeyEntry {
    pub hash: KeyHash,
    pub info: Arc<ApiKeyInfo>,
    pub rate_limit: Option<config::KeyRateLimit>,
    pub budget: Option<config::Budget>,
}

impl KeyEntry {
    pub fn from_config(k: &config::ApiKey) -> Result<KeyEntry, String> {
        let hash = match (&k.key, &k.hash) {
            (Some(secret), _) => hash_key(secret.expose()),
            (None, Some(h)) => parse_hash(h).ok_or("the key hash is not `sha256:<64 hex>`")?,
            (None, None) => return Err("a key needs `key` or `hash`".into()),
        };
        Ok(KeyEntry {
            hash,
            info: Arc::new(ApiKeyInfo {
                name: k.name.as_str().into(),
                id: None,
                team: k.team.as_deref().map(Into::into),
                org: k.org.as_deref().map(Into::into),
                models: k.models.clone(),
                metadata: k.metadata.clone(),
            }),
            rate_limit: k.rate_limit.clone(),
            budget: k.budget.clone(),
        })
    }
}

fn parse_hash(h: &str) -> Option<KeyHash> {
    let bytes = hex::decode(h.strip_prefix("sha256:")?).ok()?;
    bytes.try_into().ok()
}

/// Keys by hash.
pub type KeyMap = HashMap<KeyHash, Arc<KeyEntry>>;

pub fn key_map(keys: &[config::ApiKey]) -> Result<KeyMap, String> {
    let mut map = KeyMap::with_capacity(keys.len());
    for k in keys {
        let e = KeyEntry::from_config(k).map_err(|e| format!("key {:?}: {e}", k.name))?;
        if map.insert(e.hash, Arc::new(e)).is_some() {
            return Err(format!("key {:?} has the same key as another", k.name));
        }
    }
    Ok(map)
}

/// A keys file, read again when its modification time changes (checked at most once a
/// second, by a request that finds the last check older than that). A file that fails to
/// load keeps the previous keys, and a warning says why.
pub struct KeysFile {
    path: PathBuf,
    keys: ArcSwap<KeyMap>,
    /// The file's modification time when last read.
    modified: std::sync::Mutex<Option<SystemTime>>,
    /// When the file was last checked, in ms since `epoch`: read on every request, so an
    /// atomic rather than a lock.
    checked_ms: AtomicU64,
    epoch: std::time::Instant,
    checking: AtomicBool,
}

impl KeysFile {
    pub fn load(path: PathBuf) -> Result<KeysFile, String> {
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let keys = config::load_api_keys(&path).map_err(|e| e.to_string())?;
        Ok(KeysFile {
            keys: ArcSwap::from_pointee(
                key_map(&keys).map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            path,
            modified: std::sync::Mutex::new(modified),
            checked_ms: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            checking: AtomicBool::new(false),
        })
    }

    pub fn get(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.refresh_if_due();
        self.keys.load().get(hash).cloned()
    }

    fn refresh_if_due(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        if now < self.checked_ms.load(Ordering::Relaxed) + 1000
            || self.checking.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.checked_ms.store(now, Ordering::Relaxed);
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut last = self.modified.lock().unwrap_or_else(|p| p.into_inner());
        if modified != *last {
            *last = modified;
            match config::load_api_keys(&self.path)
                .map_err(|e| e.to_string())
                .and_then(|k| key_map(&k))
            {
                Ok(map) => {
                    tracing::info!(file = %self.path.display(), keys = map.len(), "keys file reloaded");
                    self.keys.store(Arc::new(map));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "keys file not reloaded; the previous keys stay")
                }
            }
        }
        drop(last);
        self.checking.store(false, Ordering::Release);
    }
}

/// A virtual key as the registry keeps it (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualKey {
    pub id: String,
    pub name: String,
    /// `sha256:<hex>` of the key.
    pub hash: String,
    /// The key's first characters, to recognise it in a list.
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<config::KeyRateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<config::Budget>,
    /// Unix seconds.
    pub created: u64,
}

impl VirtualKey {
    fn entry(&self) -> Option<KeyEntry> {
        Some(KeyEntry {
            hash: parse_hash(&self.hash)?,
            info: Arc::new(ApiKeyInfo {
                name: self.name.as_str().into(),
                id: Some(self.id.as_str().into()),
                team: self.team.as_deref().map(Into::into),
                org: self.org.as_deref().map(Into::into),
                models: self.models.clone(),
                metadata: self.metadata.clone(),
            }),
            rate_limit: self.rate_limit.clone(),
            budget: self.budget.clone(),
        })
    }
}

/// How often a replica asks Redis whether the virtual keys changed.
const SYNC_EVERY: Duration = Duration::from_millis(250);

/// The virtual keys, as this replica knows them. Requests read an in-memory map (no round
/// trip); with Redis, a task polls a version counter every 250 ms and reloads the keys when
/// it moved, so a key made or revoked on any replica is seen everywhere within a second.
pub struct VirtualKeys {
    redis: Option<Arc<RedisStore>>,
    /// Redis keys: the hash of records (field: id) and the version counter.
    records_key: String,
    version_key: String,
    map: ArcSwap<KeyMap>,
    records: ArcSwap<Vec<VirtualKey>>,
    version: AtomicI64,
    syncing: AtomicBool,
}

impl VirtualKeys {
    pub fn local(prefix: Arc<str>) -> VirtualKeys {
        Self::new(None, &prefix)
    }

    pub fn shared(redis: Arc<RedisStore>, prefix: Arc<str>) -> VirtualKeys {
        Self::new(Some(redis), &prefix)
    }

    fn new(redis: Option<Arc<RedisStore>>, prefix: &str) -> VirtualKeys {
        VirtualKeys {
            redis,
            records_key: format!("{prefix}:vkeys"),
            version_key: format!("{prefix}:vkeys:version"),
            map: ArcSwap::from_pointee(KeyMap::new()),
            records: ArcSwap::from_pointee(Vec::new()),
            version: AtomicI64::new(-1),
            syncing: AtomicBool::new(false),
        }
    }

    /// The key with this hash, if one is live. Starts the sync task on first use.
    pub fn get(self: &Arc<Self>, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.start_sync();
        self.map.load().get(hash).cloned()
    }

    /// Starts polling Redis (once per registry; needs a runtime, so it starts on first use).
    pub fn start_sync(self: &Arc<Self>) {
        // A plain load first: requests read it on every call, and a swap would write the
        // shared cache line each time.
        if self.redis.is_none()
            || self.syncing.load(Ordering::Relaxed)
            || self.syncing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.syncing.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            let mut failing = false;
            loop {
                let Some(keys) = weak.upgrade() else { return };
                match keys.sync().await {
                    Ok(()) if failing => {
                        tracing::info!("virtual keys: Redis reachable again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "virtual keys: cannot sync from Redis; the last known keys stay");
                        failing = true;
                    }
                    Err(_) => {}
                }
                drop(keys);
                tokio::time::sleep(SYNC_EVERY).await;
            }
        });
    }

    /// Reloads the keys from Redis when their version moved.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let mut conn = redis.connection().await?;
        let version: Option<i64> = timeout(
            redis::cmd("GET")
                .arg(&self.version_key)
                .query_async(&mut conn),
        )
        .await?;
        let version = version.unwrap_or(0);
        if version == self.version.load(Ordering::Acquire) {
            return Ok(());
        }
        let raw: HashMap<String, String> = timeout(
            redis::cmd("HGETALL")
                .arg(&self.records_key)
                .query_async(&mut conn),
        )
        .await?;
        let records: Vec<VirtualKey> = raw
            .values()
            .filter_map(|v| serde_json::from_str(v).ok())
            .collect();
        self.install(records);
        self.version.store(version, Ordering::Release);
        Ok(())
    }

    fn install(&self, mut records: Vec<VirtualKey>) {
        records.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        let map = records
            .iter()
            .filter_map(|r| r.entry().map(|e| (e.hash, Arc::new(e))))
            .collect();
        self.map.store(Arc::new(map));
        self.records.store(Arc::new(records));
    }

    /// Every live key's record (admin list), fresh from Redis when shared.
    pub async fn list(&self) -> Result<Vec<VirtualKey>, StoreError> {
        if self.redis.is_some() {
            // Force a reload: the admin API must show what Redis holds now.
            self.version.store(-1, Ordering::Release);
            self.sync().await?;
        }
        Ok(self.records.load().as_ref().clone())
    }

    /// Stores a record (new or updated) and tells every replica.
    pub async fn put(&self, record: VirtualKey) -> Result<(), StoreError> {
        match &self.redis {
            Some(redis) => {
                let json = serde_json::to_string(&record).map_err(|e| StoreError(e.to_string()))?;
                let mut conn = redis.connection().await?;
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hset(&self.records_key, &record.id, json)
                    .ignore()
                    .incr(&self.version_key, 1)
                    .ignore();
                timeout(pipe.query_async::<()>(&mut conn)).await?;
                self.version.store(-1, Ordering::Release);
                self.sync().await
            }
            None => {
                let mut records = self.records.load().as_ref().clone();
                records.retain(|r| r.id != record.id);
                records.push(record);
                self.install(records);
                Ok(())
            }
        }
    }

    /// Revokes a key; `false` when there was none with this id.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        match &self.redis {
            Some(redis) => {
                let mut conn = redis.connection().await?;
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hdel(&self.records_key, id)
                    .incr(&self.version_key, 1)
                    .ignore();
                let (removed,): (i64,) = timeout(pipe.query_async(&mut conn)).await?;
                self.version.store(-1, Ordering::Release);
                self.sync().await?;
                Ok(removed > 0)
            }
            None => {
                let mut records = self.records.load().as_ref().clone();
                let before = records.len();
                records.retain(|r| r.id != id);
                let removed = records.len() < before;
                self.install(records);
                Ok(removed)
            }
        }
    }
}

async fn timeout<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(Duration::from_secs(2), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreError(format!("redis: {:?}", e.kind()))),
        Err(_) => Err(StoreError("redis: no answer within 2s".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_are_found_by_hash_only() {
        let k = config::ApiKey {
            name: "alice".into(),
            key: Some(config::Secret::new("sk-alice")),
            team: Some("research".into()),
            ..Default::default()
        };
        let hashed = config::ApiKey {
            name: "bob".into(),
            hash: Some(format!("sha256:{}", hex::encode(hash_key("sk-bob")))),
            ..Default::default()
        };
        let map = key_map(&[k, hashed]).unwrap();
        assert_eq!(&*map[&hash_key("sk-alice")].info.name, "alice");
        assert_eq!(
            map[&hash_key("sk-alice")].info.team.as_deref(),
            Some("research")
        );
        assert_eq!(&*map[&hash_key("sk-bob")].info.name, "bob");
        assert!(!map.contains_key(&hash_key("sk-alic")));
        let dup = config::ApiKey {
            name: "carol".into(),
            key: Some(config::Secret::new("sk-alice")),
            ..Default::default()
        };
        let alice = config::ApiKey {
            name: "alice".into(),
            key: Some(config::Secret::new("sk-alice")),
            ..Default::default()
        };
        assert!(key_map(&[alice, dup]).unwrap_err().contains("same key"));
    }

    #[tokio::test]
    async fn local_virtual_keys_are_live_until_revoked() {
        let keys = Arc::new(VirtualKeys::local("t".into()));
        let record = VirtualKey {
            id: "vk_1".into(),
            name: "ci".into(),
            hash: format!("sha256:{}", hex::encode(hash_key("sk-sy-1"))),
            prefix: "sk-sy-1".into(),
            team: None,
            org: None,
            models: vec![],
            metadata: Default::default(),
            rate_limit: None,
            budget: None,
            created: 1,
        };
        keys.put(record).await.unwrap();
        assert_eq!(&*keys.get(&hash_key("sk-sy-1")).unwrap().info.name, "ci");
        assert_eq!(keys.list().await.unwrap().len(), 1);
        assert!(keys.revoke("vk_1").await.unwrap());
        assert!(keys.get(&hash_key("sk-sy-1")).is_none());
        assert!(!keys.revoke("vk_1").await.unwrap());
    }
}
