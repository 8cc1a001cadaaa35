//! Tasks (the 2025-11-25 `tasks` capability) across targets.
//!
//! A target's task id means something only to that target, and only in the upstream session
//! that created it. The client gets a handle instead: the downstream session's id, the target
//! and the target's task id, sealed (AES-256-GCM, the session key) — so `tasks/get`,
//! `tasks/result` and `tasks/cancel` reach the right target from any replica holding the key,
//! and a handle cannot be forged, altered or used from another session. The seal is
//! deterministic ([`Sealer::seal_fixed`]): the same task has the same handle in the
//! `CreateTaskResult`, in `tasks/list`, in `notifications/tasks/status` and in the
//! `io.modelcontextprotocol/related-task` metadata of messages about it.

use crate::authz::ToolGuard;
use crate::jsonrpc::{self, Code, Kind};
use crate::pool::Pooled;
use crate::route::{guarded, target_failed};
use crate::session::{Sealer, TargetSession};
use crate::upstream::{answer, CallCtx, Target, UpstreamError};
use crate::{Gateway, Observed};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// What the sealed bytes are, so a task handle never opens as anything else.
const AAD: &[u8] = b"switchyard mcp task handle v1";
/// The `_meta` key naming the task a message belongs to.
pub(crate) const RELATED: &str = "io.modelcontextprotocol/related-task";

#[derive(Serialize, Deserialize)]
struct Handle {
    /// The downstream session.
    s: String,
    /// The target.
    t: String,
    /// The target's task id.
    k: String,
}

/// The handle the client gets for `target`'s task `task_id` in session `scope`.
pub(crate) fn seal(sealer: &Sealer, scope: &str, target: &str, task_id: &str) -> Option<String> {
    let h = Handle {
        s: scope.into(),
        t: target.into(),
        k: task_id.into(),
    };
    sealer
        .seal_fixed(AAD, serde_json::to_vec(&h).ok()?)
        .map_err(|e| tracing::warn!(error = e, "a task id could not be sealed"))
        .ok()
}

/// The target and its task id behind a handle of session `scope`; `None` for anything else
/// (forged, altered, sealed under another key or for another session).
pub(crate) fn open(sealer: &Sealer, scope: &str, handle: &str) -> Option<(String, String)> {
    let plain = sealer.open_bytes(AAD, handle).ok()?;
    let h: Handle = serde_json::from_slice(&plain).ok()?;
    (h.s == scope).then_some((h.t, h.k))
}

fn seal_at(sealer: &Sealer, scope: &str, target: &str, obj: Option<&mut Value>) {
    if let Some(Value::String(id)) = obj.and_then(|o| o.get_mut("taskId")) {
        if let Some(h) = seal(sealer, scope, target, id) {
            *id = h;
        }
    }
}

fn related(m: Option<&mut Value>) -> Option<&mut Value> {
    m?.get_mut("_meta")?.get_mut(RELATED)
}

/// A message from `target`, as the client must see it: every task id in it replaced by its
/// handle (a `CreateTaskResult`, a `Task` answering `tasks/get`/`tasks/cancel`, a task list,
/// a status notification, related-task metadata).
pub(crate) fn seal_message(sealer: &Sealer, scope: &str, target: &str, m: &mut Value) {
    match jsonrpc::kind(m) {
        Kind::Response => {
            let Some(r) = m.get_mut("result") else { return };
            seal_at(sealer, scope, target, r.get_mut("task"));
            seal_at(sealer, scope, target, Some(r));
            if let Some(Value::Array(list)) = r.get_mut("tasks") {
                for t in list {
                    seal_at(sealer, scope, target, Some(t));
                }
            }
            seal_at(sealer, scope, target, related(Some(r)));
        }
        Kind::Notification => {
            let status = jsonrpc::method(m) == "notifications/tasks/status";
            let p = m.get_mut("params");
            match status {
                true => {
                    let p = p.map(|p| {
                        seal_at(sealer, scope, target, Some(&mut *p));
                        p
                    });
                    seal_at(sealer, scope, target, related(p));
                }
                false => seal_at(sealer, scope, target, related(p)),
            }
        }
        // A request of the target's: only its related-task metadata names one of its tasks
        // (a `taskId` in its params would name a task of the client's).
        Kind::Request => seal_at(sealer, scope, target, related(m.get_mut("params"))),
        _ => {}
    }
}

/// The client's answer to a target's request, as the target must see it: a related-task
/// handle back to the target's own id.
pub(crate) fn open_answer(sealer: &Sealer, scope: &str, target: &str, m: &mut Value) {
    if let Some(Value::String(h)) = related(m.get_mut("result")).and_then(|r| r.get_mut("taskId")) {
        if let Some((t, id)) = open(sealer, scope, h) {
            if t == target {
                *h = id;
            }
        }
    }
}

/// A target's `tasks` capability folded into the gateway's: the union of what the targets
/// support (objects merged key by key).
pub(crate) fn merge_capability(into: &mut Option<Value>, caps: Option<&Value>) {
    let Some(t @ Value::Object(_)) = caps.and_then(|c| c.get("tasks")) else {
        return;
    };
    fn union(a: &mut Value, b: &Value) {
        if let (Value::Object(a), Value::Object(b)) = (&mut *a, b) {
            for (k, v) in b {
                union(
                    a.entry(k.clone())
                        .or_insert_with(|| Value::Object(Map::new())),
                    v,
                );
            }
        }
    }
    union(into.get_or_insert_with(|| Value::Object(Map::new())), t);
}

/// The 2026-07-28 tasks extension's identifier (in `capabilities.extensions`).
pub(crate) const EXTENSION: &str = "io.modelcontextprotocol/tasks";
/// What a modern client's task handle is, bound into its seal.
const MODERN_AAD: &[u8] = b"switchyard mcp modern task handle v1";
/// A request needs a client capability the request did not declare (2026-07-28).
pub(crate) const MISSING_CAPABILITY: rmcp::model::ErrorCode = rmcp::model::ErrorCode(-32021);

/// A modern client's task: it has no session, so the handle names the caller it belongs to,
/// the target, the target's task id and the upstream session the task lives in (tasks of a
/// legacy target belong to the session that created them), so any replica holding the key
/// reaches it.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct ModernHandle {
    /// The caller (API key name, token subject or the anonymous pool).
    pub p: String,
    pub t: String,
    pub k: String,
    /// The upstream session id, when the target issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<String>,
    /// The protocol version the upstream session agreed to.
    pub v: String,
}

pub(crate) fn seal_modern(sealer: &Sealer, h: &ModernHandle) -> Option<String> {
    sealer
        .seal_fixed(MODERN_AAD, serde_json::to_vec(h).ok()?)
        .map_err(|e| tracing::warn!(error = e, "a task id could not be sealed"))
        .ok()
}

/// The task behind a modern handle presented by `principal`; `None` for anything else.
pub(crate) fn open_modern(sealer: &Sealer, principal: &str, handle: &str) -> Option<ModernHandle> {
    let plain = sealer.open_bytes(MODERN_AAD, handle).ok()?;
    let h: ModernHandle = serde_json::from_slice(&plain).ok()?;
    (h.p == principal).then_some(h)
}

/// Whether a modern request's declared capabilities include the tasks extension.
pub(crate) fn declared(capabilities: &Value) -> bool {
    capabilities
        .get("extensions")
        .and_then(|e| e.get(EXTENSION))
        .is_some_and(Value::is_object)
}

/// The -32021 error a modern client gets for a task it did not declare it can take.
pub(crate) fn missing_extension(id: Value, why: &str) -> Value {
    jsonrpc::error_with(
        id,
        MISSING_CAPABILITY,
        format!("Missing required client capability: {why}"),
        Some(json!({"requiredCapabilities": {"extensions": {EXTENSION: {}}}})),
    )
}

/// A legacy `Task` (2025-11-25) as the extension's `Task`: the handle for its id, `ttl` and
/// `pollInterval` as `ttlMs` and `pollIntervalMs`; `resultType` as given.
pub(crate) fn modern_task(
    legacy: &Map<String, Value>,
    handle: &str,
    result_type: &str,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("resultType".into(), Value::from(result_type));
    out.insert("taskId".into(), Value::from(handle));
    for k in ["status", "statusMessage", "createdAt", "lastUpdatedAt"] {
        if let Some(v) = legacy.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    // `ttl` is required in both (null: unlimited).
    out.insert(
        "ttlMs".into(),
        legacy.get("ttl").cloned().unwrap_or(Value::Null),
    );
    if let Some(v) = legacy.get("pollInterval") {
        out.insert("pollIntervalMs".into(), v.clone());
    }
    out
}

/// One request about a task to the target holding it; its JSON-RPC answer.
async fn ask_target(
    t: &Target,
    ctx: &CallCtx<'_>,
    ts: &TargetSession,
    method: &str,
    task: &str,
) -> Result<Value, UpstreamError> {
    let msg = json!({"jsonrpc": "2.0", "id": jsonrpc::gateway_id(), "method": method, "params": {"taskId": task}});
    let rx = t.request(ctx, ts, msg).await?;
    answer(rx, |_| {}).await
}

fn with_server_info(mut r: Map<String, Value>) -> Value {
    r.insert(
        "_meta".into(),
        json!({"io.modelcontextprotocol/serverInfo": crate::modern::server_info()}),
    );
    Value::Object(r)
}

/// What a target's payload says about its task: the related-task metadata names the
/// target's own id, which the client never sees.
fn unrelated(mut v: Value) -> Value {
    if let Some(Value::Object(meta)) = v.get_mut("_meta") {
        meta.remove(RELATED);
        if meta.is_empty() {
            if let Some(o) = v.as_object_mut() {
                o.remove("_meta");
            }
        }
    }
    v
}

impl Gateway {
    /// `tasks/get`, `tasks/update` or `tasks/cancel` of a modern client (the tasks extension,
    /// 2026-07-28) about a task a legacy target runs: the handle opened for this caller, the
    /// request sent to the target in the upstream session the task lives in, and the answer
    /// in the extension's shape (`tasks/get` of a finished task inlines its result, fetched
    /// with the legacy `tasks/result`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn modern_task(
        &self,
        pooled: &Pooled,
        principal: &str,
        method: &str,
        params: &Map<String, Value>,
        id: Value,
        fwd: &HeaderMap,
        guard: Option<Arc<dyn ToolGuard>>,
        observed: &mut Observed,
    ) -> Value {
        let handle = params
            .get("taskId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let found = open_modern(&self.sealer, principal, handle)
            .and_then(|h| Some((self.target(&h.t)?.clone(), h)));
        let Some((t, h)) = found else {
            return jsonrpc::error(id, Code::INVALID_PARAMS, format!("{method}: unknown task"));
        };
        observed.target = Some(t.name.to_string());
        if method == "tasks/update" {
            // No `inputRequests` are surfaced for a legacy target's task, so no key is
            // outstanding: responses to keys not outstanding are ignored, as the extension has it.
            return jsonrpc::result(id, with_server_info(complete_only()));
        }
        // The upstream session the task was created in (a stdio target's lives on the replica
        // and pooled session that created it).
        let ts = match &h.s {
            Some(_) => TargetSession {
                target: h.t.clone(),
                session_id: h.s.clone(),
                version: h.v.clone(),
            },
            None => match pooled.targets().iter().find(|(x, _)| x.name == t.name) {
                Some((_, ts)) => ts.clone(),
                None => {
                    return jsonrpc::error(
                        id,
                        Code::INVALID_PARAMS,
                        format!("{method}: unknown task"),
                    )
                }
            },
        };
        let ctx = CallCtx {
            headers: fwd,
            local: &pooled.local,
            init: &pooled.state.init,
        };
        let got = match ask_target(&t, &ctx, &ts, method, &h.k).await {
            Ok(m) => m,
            Err(e) => return target_failed(id, &t.name, &e),
        };
        if let Some(e) = got.get("error") {
            return json!({"jsonrpc": "2.0", "id": id, "error": e});
        }
        if method == "tasks/cancel" {
            return jsonrpc::result(id, with_server_info(complete_only()));
        }
        let Some(task) = got.get("result").and_then(Value::as_object) else {
            return target_failed(
                id,
                &t.name,
                &UpstreamError::Failed("it answered tasks/get without a task".into()),
            );
        };
        let mut out = modern_task(task, handle, "complete");
        match task.get("status").and_then(Value::as_str) {
            Some("completed") | Some("failed") => {
                let payload = match ask_target(&t, &ctx, &ts, "tasks/result", &h.k).await {
                    Ok(m) => guarded(m, &guard),
                    Err(e) => return target_failed(id, &t.name, &e),
                };
                match (payload.get("result"), payload.get("error")) {
                    (Some(r), _) => {
                        // A tool's own error (`isError`) is a completed task, not a failed one.
                        out.insert("status".into(), json!("completed"));
                        out.insert("result".into(), unrelated(r.clone()));
                    }
                    (None, Some(e)) => {
                        out.insert("status".into(), json!("failed"));
                        out.insert("error".into(), e.clone());
                    }
                    _ => {}
                }
            }
            // The target waits for input it asks for on `tasks/result`; the shim does not
            // relay it as `inputRequests` (see the README): to the client, still working.
            Some("input_required") => {
                out.insert("status".into(), json!("working"));
            }
            _ => {}
        }
        jsonrpc::result(id, with_server_info(out))
    }
}

fn complete_only() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("resultType".into(), json!("complete"));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn handles_are_stable_bound_to_their_session_and_unforgeable() {
        let sealer = Sealer::new(Some("k")).unwrap();
        let h = seal(&sealer, "s1", "everything", "abc").unwrap();
        assert_eq!(
            seal(&sealer, "s1", "everything", "abc").as_deref(),
            Some(h.as_str()),
            "the same task has the same handle"
        );
        assert_ne!(seal(&sealer, "s1", "everything", "abd").unwrap(), h);
        assert_eq!(
            open(&sealer, "s1", &h),
            Some(("everything".into(), "abc".into()))
        );
        assert_eq!(open(&sealer, "s2", &h), None, "another session's handle");
        let other = Sealer::new(Some("other")).unwrap();
        assert_eq!(open(&other, "s1", &h), None, "another key");
        assert_eq!(open(&sealer, "s1", "abc"), None, "a raw upstream id");
        let mut bad = h.clone().into_bytes();
        let i = bad.len() / 2;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(open(&sealer, "s1", &String::from_utf8(bad).unwrap()), None);
        // A session id sealed with the same key never opens as a task handle.
        let sid = sealer.seal_bytes(b"", b"{}".to_vec()).unwrap();
        assert_eq!(open(&sealer, "s1", &sid), None);
    }

    #[test]
    fn every_task_id_in_a_message_is_sealed() {
        let sealer = Sealer::new(Some("k")).unwrap();
        let h = seal(&sealer, "s", "t", "u1").unwrap();
        let mut created =
            json!({"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"u1","status":"working"}}});
        seal_message(&sealer, "s", "t", &mut created);
        assert_eq!(created["result"]["task"]["taskId"], h.as_str());
        let mut got = json!({"jsonrpc":"2.0","id":2,"result":{"taskId":"u1","status":"completed"}});
        seal_message(&sealer, "s", "t", &mut got);
        assert_eq!(got["result"]["taskId"], h.as_str());
        let mut list = json!({"jsonrpc":"2.0","id":3,"result":{"tasks":[{"taskId":"u1"}]}});
        seal_message(&sealer, "s", "t", &mut list);
        assert_eq!(list["result"]["tasks"][0]["taskId"], h.as_str());
        let mut status = json!({"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"u1","status":"working"}});
        seal_message(&sealer, "s", "t", &mut status);
        assert_eq!(status["params"]["taskId"], h.as_str());
        let mut payload = json!({"jsonrpc":"2.0","id":4,"result":{"content":[],"_meta":{RELATED:{"taskId":"u1"}}}});
        seal_message(&sealer, "s", "t", &mut payload);
        assert_eq!(payload["result"]["_meta"][RELATED]["taskId"], h.as_str());
        // A target's request: its related task is sealed, a client task id it asks about is not.
        let mut ask = json!({"jsonrpc":"2.0","id":5,"method":"elicitation/create","params":{"_meta":{RELATED:{"taskId":"u1"}}}});
        seal_message(&sealer, "s", "t", &mut ask);
        assert_eq!(ask["params"]["_meta"][RELATED]["taskId"], h.as_str());
        let mut poll =
            json!({"jsonrpc":"2.0","id":6,"method":"tasks/get","params":{"taskId":"client-task"}});
        seal_message(&sealer, "s", "t", &mut poll);
        assert_eq!(poll["params"]["taskId"], "client-task");
        // And the client's answer goes back with the target's own id.
        let mut answer = json!({"jsonrpc":"2.0","id":5,"result":{"action":"accept","_meta":{RELATED:{"taskId":h}}}});
        open_answer(&sealer, "s", "t", &mut answer);
        assert_eq!(answer["result"]["_meta"][RELATED]["taskId"], "u1");
    }

    #[test]
    fn modern_handles_are_bound_to_their_caller_and_purpose() {
        let sealer = Sealer::new(Some("k")).unwrap();
        let h = ModernHandle {
            p: "apiKey:alice".into(),
            t: "web".into(),
            k: "u1".into(),
            s: Some("upstream-session".into()),
            v: "2025-11-25".into(),
        };
        let sealed = seal_modern(&sealer, &h).unwrap();
        assert_eq!(seal_modern(&sealer, &h).as_deref(), Some(sealed.as_str()));
        assert_eq!(open_modern(&sealer, "apiKey:alice", &sealed), Some(h));
        assert_eq!(open_modern(&sealer, "apiKey:bob", &sealed), None);
        assert_eq!(
            open_modern(&Sealer::new(Some("x")).unwrap(), "apiKey:alice", &sealed),
            None
        );
        // A legacy session's handle is not a modern one, nor the other way round.
        let legacy = seal(&sealer, "apiKey:alice", "web", "u1").unwrap();
        assert_eq!(open_modern(&sealer, "apiKey:alice", &legacy), None);
        assert_eq!(open(&sealer, "apiKey:alice", &sealed), None);
    }

    #[test]
    fn a_legacy_task_takes_the_extensions_shape() {
        let legacy = json!({"taskId": "u1", "status": "working", "createdAt": "t0",
            "lastUpdatedAt": "t1", "ttl": 300000, "pollInterval": 1000});
        let t = modern_task(legacy.as_object().unwrap(), "H", "task");
        assert_eq!(
            Value::Object(t),
            json!({"resultType": "task", "taskId": "H", "status": "working", "createdAt": "t0",
                "lastUpdatedAt": "t1", "ttlMs": 300000, "pollIntervalMs": 1000})
        );
        let unlimited = json!({"taskId": "u1", "status": "working", "ttl": null});
        let t = modern_task(unlimited.as_object().unwrap(), "H", "complete");
        assert_eq!(t["ttlMs"], Value::Null);
        assert!(declared(&json!({"extensions": {EXTENSION: {}}})));
        assert!(!declared(&json!({"tasks": {}})));
        let e = missing_extension(json!(3), "x");
        assert_eq!(e["error"]["code"], -32021);
        assert!(e["error"]["data"]["requiredCapabilities"]["extensions"][EXTENSION].is_object());
    }

    #[test]
    fn capabilities_merge_as_a_union() {
        let mut caps = None;
        merge_capability(&mut caps, Some(&json!({"tools": {}})));
        assert_eq!(caps, None, "no target has tasks: none advertised");
        merge_capability(
            &mut caps,
            Some(&json!({"tasks": {"list": {}, "requests": {"tools": {"call": {}}}}})),
        );
        merge_capability(&mut caps, Some(&json!({"tasks": {"cancel": {}}})));
        assert_eq!(
            caps,
            Some(json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}))
        );
    }
}
