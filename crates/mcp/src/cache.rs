//! The optional list cache (`listCache: true` on an `mcp` backend): a target's page of
//! `tools/list`, `prompts/list`, `resources/list` or `resources/templates/list` is kept for
//! the `ttlMs` the target declared (targets of the 2026-07-28 revision; legacy ones declare
//! none and are never cached). A `public` page serves every caller; a `private` one (or one
//! without a `cacheScope`) only the caller it was fetched for: the same identity (API key,
//! JWT issuer and subject) and the same `Authorization` header. The key also holds the method,
//! the cursor and the client capabilities the request declared (a target may list differently
//! for clients that can sample or elicit). Pages are stored as the target sent them; names,
//! prefixes and the route's tool authorization apply per request, after the cache.

use crate::authz::Caller;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pages kept at most; past it, expired ones go, and new ones are not kept until there is room.
const MAX_ENTRIES: usize = 4096;
/// Longest a page is kept, whatever the target says.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    target: String,
    method: String,
    cursor: Option<String>,
    capabilities: String,
    /// `None`: a public page; else the caller it belongs to.
    caller: Option<String>,
}

#[derive(Default)]
pub(crate) struct ListCache {
    entries: Mutex<HashMap<Key, (Instant, Value)>>,
}

/// Who a private page belongs to: the caller's identity and its credentials as forwarded.
pub(crate) fn caller_key(caller: &Caller<'_>) -> String {
    let identity = crate::modern::principal_of(caller.api_key, caller.jwt);
    let auth = caller
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let d = ring::digest::digest(&ring::digest::SHA256, auth);
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{identity}|{hex}")
}

/// What a page says about its caching: its lifetime, and whether it is public.
pub(crate) fn hints(page: &Value) -> (Duration, bool) {
    let ttl = page
        .get("ttlMs")
        .and_then(Value::as_u64)
        .map_or(Duration::ZERO, Duration::from_millis);
    let public = page.get("cacheScope").and_then(Value::as_str) == Some("public");
    (ttl, public)
}

impl ListCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, Value)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(
        target: &str,
        method: &str,
        cursor: Option<&str>,
        capabilities: &str,
        caller: Option<&str>,
    ) -> Key {
        Key {
            target: target.to_string(),
            method: method.to_string(),
            cursor: cursor.map(str::to_string),
            capabilities: capabilities.to_string(),
            caller: caller.map(str::to_string),
        }
    }

    /// A fresh page for this request, public first, then the caller's own; its `ttlMs` is
    /// what is left of its lifetime.
    pub fn get(
        &self,
        target: &str,
        method: &str,
        cursor: Option<&str>,
        capabilities: &str,
        caller: &str,
    ) -> Option<Value> {
        let now = Instant::now();
        let entries = self.lock();
        for who in [None, Some(caller)] {
            let k = Self::key(target, method, cursor, capabilities, who);
            if let Some((expires, page)) = entries.get(&k) {
                if *expires > now {
                    let mut page = page.clone();
                    let left = expires.duration_since(now).as_millis() as u64;
                    page["ttlMs"] = Value::from(left);
                    return Some(page);
                }
            }
        }
        None
    }

    /// Keeps a page its target declared fresh for a while.
    pub fn put(
        &self,
        target: &str,
        method: &str,
        cursor: Option<&str>,
        capabilities: &str,
        caller: &str,
        page: &Value,
    ) {
        let (ttl, public) = hints(page);
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let key = Self::key(
            target,
            method,
            cursor,
            capabilities,
            (!public).then_some(caller),
        );
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert(key, (now + ttl.min(MAX_TTL), page.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pages_are_kept_for_their_ttl_and_scope() {
        let c = ListCache::default();
        let public = json!({"tools": [1], "ttlMs": 60_000, "cacheScope": "public"});
        let private = json!({"prompts": [2], "ttlMs": 60_000, "cacheScope": "private"});
        let stale = json!({"resources": [], "ttlMs": 0, "cacheScope": "public"});
        c.put("t", "tools/list", None, "{}", "alice", &public);
        c.put("t", "prompts/list", None, "{}", "alice", &private);
        c.put("t", "resources/list", None, "{}", "alice", &stale);
        // Public: every caller; private: its caller only; ttl 0: never kept.
        assert!(c.get("t", "tools/list", None, "{}", "bob").is_some());
        assert!(c.get("t", "prompts/list", None, "{}", "alice").is_some());
        assert!(c.get("t", "prompts/list", None, "{}", "bob").is_none());
        assert!(c.get("t", "resources/list", None, "{}", "alice").is_none());
        // Another cursor, other capabilities or another target: not the same page.
        assert!(c.get("t", "tools/list", Some("2"), "{}", "bob").is_none());
        assert!(c
            .get("t", "tools/list", None, "{\"sampling\":{}}", "bob")
            .is_none());
        assert!(c.get("u", "tools/list", None, "{}", "bob").is_none());
        let got = c.get("t", "tools/list", None, "{}", "bob").unwrap();
        let left = got["ttlMs"].as_u64().unwrap();
        assert!(left <= 60_000 && left > 50_000, "{left}");
        // A page without a scope is private.
        c.put("t", "x", None, "{}", "alice", &json!({"ttlMs": 1000}));
        assert!(c.get("t", "x", None, "{}", "bob").is_none());
    }

    #[test]
    fn expired_pages_are_not_served() {
        let c = ListCache::default();
        c.put(
            "t",
            "tools/list",
            None,
            "{}",
            "a",
            &json!({"ttlMs": 1, "cacheScope": "public"}),
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.get("t", "tools/list", None, "{}", "a").is_none());
    }
}
