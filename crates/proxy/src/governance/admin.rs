//! The admin API's key and usage endpoints (served by the admin server):
//!
//! - `POST /keys` `{name, team?, org?, models?, metadata?, rateLimit?, budget?}` → 201 with
//!   the new key (shown this once) and its record;
//! - `GET /keys`, `GET /keys/{id}`: records, never the key;
//! - `PATCH /keys/{id}`: change any field but the key;
//! - `DELETE /keys/{id}`: revoke (every replica stops accepting it within a second);
//! - `GET /usage?window=day|hour|month&period=2026-12-07`: requests, tokens and spend per
//!   key, team, org and model (default: the current day).

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::keys::{hash_key, VirtualKey};
use super::{windows, Governance, Shared};

/// Answers `method path` when it is a key or usage endpoint; `None` otherwise.
pub async fn handle(
    gov: &Governance,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Bytes,
) -> Option<(StatusCode, Value)> {
    let rest = match path {
        "/keys" => "",
        "/usage" => {
            return Some(match (method, gov.current()) {
                (&Method::GET, Some(s)) => usage(&s, query).await,
                (&Method::GET, None) => unavailable(),
                _ => not_allowed(),
            })
        }
        p => p.strip_prefix("/keys/")?,
    };
    let Some(shared) = gov.current() else {
        return Some(unavailable());
    };
    Some(match (method, rest) {
        (&Method::POST, "") => create(&shared, &body).await,
        (&Method::GET, "") => match shared.keys.list().await {
            Ok(list) => (
                StatusCode::OK,
                json!({ "keys": list.iter().map(shown).collect::<Vec<_>>() }),
            ),
            Err(e) => store_error(e),
        },
        (&Method::GET, id) => match find(&shared, id).await {
            Ok(Some(r)) => (StatusCode::OK, shown(&r)),
            Ok(None) => not_found(id),
            Err(e) => e,
        },
        (&Method::PATCH, id) if !id.is_empty() => update(&shared, id, &body).await,
        (&Method::DELETE, id) if !id.is_empty() => match shared.keys.revoke(id).await {
            Ok(true) => (StatusCode::OK, json!({ "id": id, "revoked": true })),
            Ok(false) => not_found(id),
            Err(e) => store_error(e),
        },
        _ => not_allowed(),
    })
}

/// What a client may set on a key.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KeyFields {
    name: Option<String>,
    team: Option<Option<String>>,
    org: Option<Option<String>>,
    models: Option<Vec<String>>,
    metadata: Option<BTreeMap<String, String>>,
    rate_limit: Option<Option<config::KeyRateLimit>>,
    budget: Option<Option<config::Budget>>,
}

impl KeyFields {
    fn parse(body: &Bytes) -> Result<KeyFields, (StatusCode, Value)> {
        if body.is_empty() {
            return Ok(KeyFields::default());
        }
        serde_json::from_slice(body).map_err(|e| bad_request(format!("the body is not a key: {e}")))
    }

    fn apply(self, r: &mut VirtualKey) {
        if let Some(v) = self.name {
            r.name = v;
        }
        if let Some(v) = self.team {
            r.team = v;
        }
        if let Some(v) = self.org {
            r.org = v;
        }
        if let Some(v) = self.models {
            r.models = v;
        }
        if let Some(v) = self.metadata {
            r.metadata = v;
        }
        if let Some(v) = self.rate_limit {
            r.rate_limit = v;
        }
        if let Some(v) = self.budget {
            r.budget = v;
        }
    }
}

async fn create(shared: &Shared, body: &Bytes) -> (StatusCode, Value) {
    let fields = match KeyFields::parse(body) {
        Ok(f) => f,
        Err(e) => return e,
    };
    if fields.name.as_deref().is_none_or(str::is_empty) {
        return bad_request("a key needs a `name`".into());
    }
    let Some(secret) = random_token(24) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {"code": "no_randomness", "message": "the system random source failed"}}),
        );
    };
    let key = format!("sk-sy-{secret}");
    let id = format!("vk_{}", random_token(9).unwrap_or_default());
    let mut record = VirtualKey {
        id,
        name: String::new(),
        hash: format!("sha256:{}", hex::encode(hash_key(&key))),
        prefix: key[..10].to_string(),
        team: None,
        org: None,
        models: Vec::new(),
        metadata: BTreeMap::new(),
        rate_limit: None,
        budget: None,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    fields.apply(&mut record);
    if let Err(e) = shared.keys.put(record.clone()).await {
        return store_error(e);
    }
    let mut shown = shown(&record);
    if let Value::Object(m) = &mut shown {
        m.insert("key".into(), Value::String(key));
    }
    (StatusCode::CREATED, shown)
}

async fn update(shared: &Shared, id: &str, body: &Bytes) -> (StatusCode, Value) {
    let fields = match KeyFields::parse(body) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let mut record = match find(shared, id).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(id),
        Err(e) => return e,
    };
    fields.apply(&mut record);
    match shared.keys.put(record.clone()).await {
        Ok(()) => (StatusCode::OK, shown(&record)),
        Err(e) => store_error(e),
    }
}

async fn find(shared: &Shared, id: &str) -> Result<Option<VirtualKey>, (StatusCode, Value)> {
    let list = shared.keys.list().await.map_err(store_error)?;
    Ok(list.into_iter().find(|r| r.id == id))
}

/// A record as the API shows it: no hash.
fn shown(r: &VirtualKey) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Value::Object(m) = &mut v {
        m.remove("hash");
    }
    v
}

/// Usage of one period, by dimension: `{keys: {alice: {requests, inputTokens, ...}}, ...}`.
async fn usage(shared: &Shared, query: Option<&str>) -> (StatusCode, Value) {
    let mut window = config::BudgetWindow::Day;
    let mut period = None;
    for (k, v) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
    {
        match k {
            "window" => {
                window = match v {
                    "hour" => config::BudgetWindow::Hour,
                    "day" => config::BudgetWindow::Day,
                    "month" => config::BudgetWindow::Month,
                    _ => return bad_request("window is one of hour, day, month".into()),
                }
            }
            "period" => period = Some(v.to_string()),
            _ => {}
        }
    }
    let period = period.unwrap_or_else(|| windows::calendar(window).0);
    if !windows::label_is_valid(window, &period) {
        return bad_request(format!(
            "period {period:?} is not a {window:?} (2026-12-07, 2026-12-07T04 or 2026-12)"
        ));
    }
    // This replica's last second of usage first (the others write theirs within a second).
    shared.usage.flush().await;
    let key = usage_key(&shared.prefix, window, &period);
    let fields = match shared.store.usage(&key).await {
        Ok(f) => f,
        Err(e) => return store_error(e),
    };
    let mut by_dim: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for (field, n) in &fields {
        let Some((dim, rest)) = field.split_once('/') else {
            continue;
        };
        let Some((name, metric)) = rest.rsplit_once('/') else {
            continue;
        };
        let dim = match dim {
            "key" => "keys",
            "team" => "teams",
            "org" => "orgs",
            "model" => "models",
            _ => continue,
        };
        let entry = by_dim
            .entry(dim)
            .or_default()
            .entry(name.to_string())
            .or_insert_with(|| json!({}));
        if metric == "costMicros" {
            entry["costUsd"] = json!(*n as f64 / 1e6);
        } else {
            entry[metric] = json!(n);
        }
    }
    let mut out = json!({
        "window": format!("{window:?}").to_lowercase(),
        "period": period,
        "shared": shared.store.is_shared(),
    });
    for dim in ["keys", "teams", "orgs", "models"] {
        out[dim] = Value::Object(by_dim.remove(dim).unwrap_or_default());
    }
    (StatusCode::OK, out)
}

/// The store key of a period's usage hash.
pub fn usage_key(prefix: &str, window: config::BudgetWindow, period: &str) -> String {
    let w = match window {
        config::BudgetWindow::Hour => "hour",
        config::BudgetWindow::Day => "day",
        config::BudgetWindow::Month => "month",
    };
    format!("{prefix}:usage:{w}:{period}")
}

fn random_token(bytes: usize) -> Option<String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new().fill(&mut buf).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

fn bad_request(message: String) -> (StatusCode, Value) {
    (
        StatusCode::BAD_REQUEST,
        json!({"error": {"code": "bad_request", "message": message}}),
    )
}

fn not_found(id: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"error": {"code": "key_not_found", "message": format!("no key has the id {id:?}")}}),
    )
}

fn not_allowed() -> (StatusCode, Value) {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"error": {"code": "method_not_allowed", "message": "see the admin API in the README"}}),
    )
}

fn unavailable() -> (StatusCode, Value) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": {"code": "not_ready", "message": "no configuration is loaded yet"}}),
    )
}

fn store_error(e: super::StoreError) -> (StatusCode, Value) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": {"code": "store_unavailable", "message": e.to_string()}}),
    )
}
