//! Multi round-trip requests for modern clients of legacy targets. A legacy target asks its
//! client things in the middle of a call (`sampling/createMessage`, `elicitation/create`,
//! `roots/list`); a modern client cannot be asked, so the gateway answers the call with
//! `resultType: "input_required"`, the questions as `inputRequests`, and a `requestState`,
//! and keeps the upstream exchange waiting ([`Parked`]). The client's retry of the same
//! request carries `inputResponses` and the `requestState`; the gateway sends the answers to
//! the target as the responses to its requests and goes on reading the same exchange.
//!
//! The `requestState` is sealed with the session key (AES-256-GCM, its own associated data,
//! so a session id never opens as one): it names the exchange, the principal it was issued
//! to, the request it belongs to (method and a digest of its params), an expiry, and the
//! questions. A forged or altered one does not open; one presented by another principal, on
//! another request or after its expiry is refused; one already used on this replica is
//! refused. A replica that does not hold the exchange (the client's retry reached another
//! replica, or this one restarted) runs the request again on a fresh upstream exchange and
//! answers the same questions, asked again, with the client's answers: tools that act before
//! they ask act again (see the README).

use crate::authz::ToolGuard;
use crate::downstream::{json_response, ok};
use crate::jsonrpc::{self, Code, Kind};
use crate::local::LocalSession;
use crate::modern::Modern;
use crate::route::{guarded, target_failed};
use crate::session::{now_secs, random_id, Sealer};
use crate::stream::{sse_response, Event, Opts};
use crate::upstream::{CallCtx, Target, UpstreamError};
use crate::{Body, Gateway};
use http::{HeaderMap, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a client has to answer: the `requestState`'s lifetime and how long an upstream
/// exchange waits for it.
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(10 * 60);
/// Exchanges one replica keeps waiting at most; past it, a target's questions are refused.
const MAX_PARKED: usize = 4096;
/// What a `requestState` is, bound into its seal.
const AAD: &[u8] = b"switchyard mcp requestState v1";

/// The requests a legacy target may put to its client, and the client capability each needs.
fn needs(method: &str) -> Option<&'static str> {
    match method {
        "sampling/createMessage" => Some("sampling"),
        "elicitation/create" => Some("elicitation"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

/// JSON with object keys sorted, at every depth: the same value always gives the same text.
pub(crate) fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::with_capacity(m.len());
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            v => v.clone(),
        }
    }
    sorted(v).to_string()
}

/// SHA-256 of a request's params, without `_meta` and the MRTR fields (what differs between
/// a request and its retries).
pub(crate) fn digest(params: &Map<String, Value>) -> String {
    let mut p = params.clone();
    for k in ["_meta", "inputResponses", "requestState"] {
        p.remove(k);
    }
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        canonical(&Value::Object(p)).as_bytes(),
    );
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn params_digest(request: &Value) -> String {
    digest(
        &request
            .get("params")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    )
}

/// One question a target asked, as the client sees it (`key`) and as the target asked it.
#[derive(Clone)]
pub(crate) struct Ask {
    key: String,
    /// The target's id for its request: the answer is sent with it.
    upstream_id: Value,
    /// `{"method", "params"}`, as `inputRequests` carries it.
    request: Value,
}

/// An answer the client gave in an earlier round, for the same question asked again.
#[derive(Clone)]
pub(crate) struct PreAnswer {
    method: String,
    digest: String,
    response: Value,
}

/// What a sealed `requestState` holds.
#[derive(Serialize, Deserialize)]
struct RequestState {
    /// The exchange (and the state's single-use id).
    #[serde(rename = "i")]
    id: String,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    exp: u64,
    #[serde(rename = "p")]
    principal: String,
    #[serde(rename = "m")]
    method: String,
    #[serde(rename = "d")]
    digest: String,
    /// The questions: key, the target's method and a digest of its params.
    #[serde(rename = "q")]
    asks: Vec<(String, String, String)>,
}

/// A client request's exchange with a target, held across rounds.
pub(crate) struct Exchange {
    pub rx: mpsc::Receiver<Value>,
    pub target: Arc<Target>,
    pub ts: crate::session::TargetSession,
    pub local: Arc<LocalSession>,
    pub init: Value,
    /// Headers of the latest client request: answers go upstream with them.
    pub fwd: HeaderMap,
    pub guard: Option<Arc<dyn ToolGuard>>,
    pub prefixed: bool,
    pub method: String,
    pub digest: String,
    pub principal: String,
    pub capabilities: Value,
    pub log_level: Option<usize>,
    pub pre: Vec<PreAnswer>,
    /// The questions the client has yet to answer.
    pub asks: Vec<Ask>,
}

impl Exchange {
    fn relays(&self, m: &Value) -> bool {
        crate::modern::relays(self.log_level, m)
    }

    /// Sends the client's answer (or an error) to one of the target's requests.
    async fn answer(&self, upstream_id: Value, outcome: Result<Value, &str>) {
        let msg = match outcome {
            Ok(result) => json!({"jsonrpc": "2.0", "id": upstream_id, "result": result}),
            Err(why) => jsonrpc::error(upstream_id, Code::METHOD_NOT_FOUND, why),
        };
        let ctx = CallCtx {
            headers: &self.fwd,
            local: &self.local,
            init: &self.init,
        };
        if let Err(e) = self.target.send(&ctx, &self.ts, &msg).await {
            tracing::debug!(mcp_target = %self.target.name, error = %e, "answer to a target's request not delivered");
        }
    }

    /// The target's final answer as the client's answer to request `id`.
    fn finish(&self, m: Value, id: Value) -> Value {
        let mut m = guarded(m, &self.guard);
        m = crate::federate::from_upstream(m, &self.target.name, self.prefixed);
        m["id"] = id;
        crate::modern::complete(m, &self.method)
    }
}

/// Exchanges waiting for their client's answers on this replica, and the ids of states used.
#[derive(Default)]
pub(crate) struct Parked {
    waiting: Mutex<HashMap<String, Exchange>>,
    /// State ids taken (or expired) here, with their expiry: presented again, refused.
    used: Mutex<HashMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Parked {
    pub fn new() -> Arc<Parked> {
        Arc::new(Parked::default())
    }

    fn mark_used(&self, id: &str, exp: u64) {
        let now = now_secs();
        let mut used = lock(&self.used);
        used.retain(|_, e| *e >= now);
        used.insert(id.to_string(), exp);
    }

    /// The exchange waiting under `id`, which is then used (at once: a concurrent retry with
    /// the same state finds it used).
    fn take(&self, id: &str, exp: u64) -> Option<Exchange> {
        let mut waiting = lock(&self.waiting);
        let ex = waiting.remove(id)?;
        self.mark_used(id, exp);
        Some(ex)
    }

    /// Marks `id` used; false if it already was.
    fn claim(&self, id: &str, exp: u64) -> bool {
        let now = now_secs();
        let mut used = lock(&self.used);
        used.retain(|_, e| *e >= now);
        if used.contains_key(id) {
            return false;
        }
        used.insert(id.to_string(), exp);
        true
    }

    pub fn len(&self) -> usize {
        lock(&self.waiting).len()
    }
}

/// What the gateway needs to run an exchange outside a request (in a stream's task).
#[derive(Clone)]
pub(crate) struct Rounds {
    pub parked: Arc<Parked>,
    pub sealer: Arc<Sealer>,
}

impl Rounds {
    /// Reads an exchange until it ends a round: its final answer, or the target's questions
    /// (the exchange is then parked and the answer is `input_required`). Messages meanwhile
    /// that the client takes go to `sink` when the answer is a stream.
    async fn run(
        &self,
        mut ex: Exchange,
        id: Value,
        first: Option<Value>,
        sink: Option<&mpsc::Sender<Event>>,
    ) -> Value {
        let mut pending = first;
        let mut asks = Vec::new();
        loop {
            let m = match pending.take() {
                Some(m) => m,
                // Questions asked: take whatever else is already there, then ask them.
                None if !asks.is_empty() => match ex.rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
                None => match ex.rx.recv().await {
                    Some(m) => m,
                    None => {
                        return target_failed(
                            id,
                            &ex.target.name,
                            &UpstreamError::Failed("it closed the call without answering".into()),
                        )
                    }
                },
            };
            match jsonrpc::kind(&m) {
                // The answer (even with questions open: the target gave up on them).
                Kind::Response => return self.created(&ex, ex.finish(m, id)),
                Kind::Request => {
                    let method = jsonrpc::method(&m).to_string();
                    let upstream_id = jsonrpc::id(&m);
                    if method == "ping" {
                        ex.answer(upstream_id, Ok(json!({}))).await;
                        continue;
                    }
                    let Some(capability) = needs(&method) else {
                        ex.answer(upstream_id, Err("the client does not serve this method"))
                            .await;
                        continue;
                    };
                    // A legacy client without the capability would refuse the same way.
                    if ex.capabilities.get(capability).is_none() {
                        ex.answer(
                            upstream_id,
                            Err("the client did not declare this capability"),
                        )
                        .await;
                        continue;
                    }
                    let request = json!({
                        "method": method,
                        "params": m.get("params").cloned().unwrap_or_else(|| json!({})),
                    });
                    let d = params_digest(&request);
                    if let Some(i) = ex
                        .pre
                        .iter()
                        .position(|p| p.method == method && p.digest == d)
                    {
                        let p = ex.pre.remove(i);
                        ex.answer(upstream_id, Ok(p.response)).await;
                        continue;
                    }
                    let key = match jsonrpc::tag_server_id(&ex.target.name, &upstream_id) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    asks.push(Ask {
                        key,
                        upstream_id,
                        request,
                    });
                }
                Kind::Notification => {
                    if let (Some(tx), true) = (sink, ex.relays(&m)) {
                        let m = crate::federate::from_upstream(m, &ex.target.name, ex.prefixed);
                        let _ = tx.send(Event::plain(m)).await;
                    }
                }
                Kind::Invalid => {}
            }
        }
        ex.asks = asks;
        self.park(ex, id).await
    }

    /// A legacy `CreateTaskResult` (the gateway asked the target to run the call as a task,
    /// [`crate::tasks`]) as the tasks extension has it: `resultType: "task"` and the task
    /// inline, under a handle sealed for the caller, the target and the upstream session.
    fn created(&self, ex: &Exchange, mut m: Value) -> Value {
        if ex.method != "tools/call" {
            return m;
        }
        let Some(task) = m
            .get("result")
            .and_then(|r| r.get("task"))
            .and_then(Value::as_object)
        else {
            return m;
        };
        let Some(k) = task.get("taskId").and_then(Value::as_str) else {
            return m;
        };
        let h = crate::tasks::ModernHandle {
            p: ex.principal.clone(),
            t: ex.target.name.to_string(),
            k: k.to_string(),
            s: ex.ts.session_id.clone(),
            v: ex.ts.version.clone(),
        };
        let Some(handle) = crate::tasks::seal_modern(&self.sealer, &h) else {
            return jsonrpc::error(
                jsonrpc::id(&m),
                Code::INTERNAL_ERROR,
                "the task's handle could not be sealed",
            );
        };
        let mut r = crate::tasks::modern_task(task, &handle, "task");
        r.insert(
            "_meta".into(),
            json!({"io.modelcontextprotocol/serverInfo": crate::modern::server_info()}),
        );
        m["result"] = Value::Object(r);
        m
    }

    /// Seals a state for the exchange's open questions, parks it, and says `input_required`.
    async fn park(&self, ex: Exchange, id: Value) -> Value {
        if self.parked.len() >= MAX_PARKED {
            let why = "too many calls are waiting for their clients' input";
            for a in &ex.asks {
                ex.answer(a.upstream_id.clone(), Err(why)).await;
            }
            return jsonrpc::error(id, Code::INTERNAL_ERROR, why);
        }
        let state = RequestState {
            id: random_id(),
            exp: now_secs() + ANSWER_WITHIN.as_secs(),
            principal: ex.principal.clone(),
            method: ex.method.clone(),
            digest: ex.digest.clone(),
            asks: ex
                .asks
                .iter()
                .map(|a| {
                    (
                        a.key.clone(),
                        jsonrpc::method(&a.request).to_string(),
                        params_digest(&a.request),
                    )
                })
                .collect(),
        };
        let sealed = match self
            .sealer
            .seal_bytes(AAD, serde_json::to_vec(&state).unwrap_or_default())
        {
            Ok(s) => s,
            Err(why) => {
                for a in &ex.asks {
                    ex.answer(a.upstream_id.clone(), Err(why)).await;
                }
                return jsonrpc::error(id, Code::INTERNAL_ERROR, why);
            }
        };
        let mut input_requests = Map::new();
        for a in &ex.asks {
            input_requests.insert(a.key.clone(), a.request.clone());
        }
        lock(&self.parked.waiting).insert(state.id.clone(), ex);
        // Unanswered in time: the target's questions get errors, so its call can end.
        let (parked, state_id, exp) = (self.parked.clone(), state.id.clone(), state.exp);
        tokio::spawn(async move {
            tokio::time::sleep(ANSWER_WITHIN).await;
            if let Some(ex) = parked.take(&state_id, exp) {
                for a in &ex.asks {
                    ex.answer(
                        a.upstream_id.clone(),
                        Err("the client did not answer in time"),
                    )
                    .await;
                }
            }
        });
        jsonrpc::result(
            id,
            json!({
                "resultType": "input_required",
                "inputRequests": input_requests,
                "requestState": sealed,
                "_meta": {"io.modelcontextprotocol/serverInfo": crate::modern::server_info()},
            }),
        )
    }

    /// Answers a request from an exchange: JSON, unless the client takes a stream and the
    /// target's first message is one to relay (progress, logs); then an SSE stream that ends
    /// with the answer of this round.
    pub(crate) async fn drive(&self, mut ex: Exchange, id: Value, sse: bool) -> Response<Body> {
        let first = ex.rx.recv().await;
        let streams = sse
            && first
                .as_ref()
                .is_some_and(|m| jsonrpc::kind(m) == Kind::Notification && ex.relays(m));
        if !streams {
            return reply(self.run(ex, id, first, None).await);
        }
        let (tx, out) = mpsc::channel::<Event>(64);
        let rounds = self.clone();
        tokio::spawn(async move {
            let last = rounds.run(ex, id, first, Some(&tx)).await;
            let _ = tx.send(Event::plain(last)).await;
        });
        sse_response(out, Opts::default())
    }
}

/// A round's answer as an HTTP response.
fn reply(m: Value) -> Response<Body> {
    ok(&m)
}

/// What became of a retry that carried a `requestState`.
pub(crate) enum Resumed {
    /// The retry is answered (the exchange went on, or the state was refused).
    Answered(Response<Body>),
    /// The exchange is not here: run the request again with these answers ready.
    RunAgain(Vec<PreAnswer>),
}

fn refused(id: Value, why: &str) -> Resumed {
    Resumed::Answered(json_response(
        StatusCode::BAD_REQUEST,
        &jsonrpc::error(
            id,
            Code::INVALID_PARAMS,
            format!("requestState refused: {why}"),
        ),
    ))
}

impl Gateway {
    pub(crate) fn rounds(&self) -> Rounds {
        Rounds {
            parked: self.parked.clone(),
            sealer: self.sealer.clone(),
        }
    }

    /// A retry with `requestState` (and, usually, `inputResponses`).
    pub(crate) async fn resume(
        &self,
        state: &Value,
        responses: Option<&Value>,
        m: &Modern,
        id: Value,
        sse: bool,
        fwd: &HeaderMap,
    ) -> Resumed {
        let Some(sealed) = state.as_str() else {
            return refused(id, "it is not a string");
        };
        let Ok(plain) = self.sealer.open_bytes(AAD, sealed) else {
            return refused(id, "it is not one this gateway issued, or it was altered");
        };
        let Ok(state) = serde_json::from_slice::<RequestState>(&plain) else {
            return refused(id, "it is not one this gateway issued");
        };
        if state.exp < now_secs() {
            return refused(id, "it expired; send the request again without it");
        }
        if state.principal != m.principal {
            return refused(id, "it was issued to another caller");
        }
        if state.method != m.method || state.digest != m.digest {
            return refused(id, "it was issued for another request");
        }
        let empty = Map::new();
        let responses = match responses {
            None => &empty,
            Some(Value::Object(r)) => r,
            Some(_) => return refused(id, "inputResponses is not an object"),
        };
        if responses.values().any(|r| !r.is_object()) {
            return Resumed::Answered(json_response(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(
                    id,
                    Code::INVALID_PARAMS,
                    "every value of inputResponses must be a result object",
                ),
            ));
        }
        let rounds = self.rounds();
        match self.parked.take(&state.id, state.exp) {
            Some(mut ex) => {
                ex.fwd = fwd.clone();
                let mut unanswered = Vec::new();
                for a in std::mem::take(&mut ex.asks) {
                    match responses.get(&a.key) {
                        Some(r) => ex.answer(a.upstream_id.clone(), Ok(r.clone())).await,
                        None => unanswered.push(a),
                    }
                }
                if !unanswered.is_empty() {
                    // Asked again, under a new state, for what is still missing.
                    ex.asks = unanswered;
                    return Resumed::Answered(reply(rounds.park(ex, id).await));
                }
                Resumed::Answered(rounds.drive(ex, id, sse).await)
            }
            None if !self.parked.claim(&state.id, state.exp) => {
                refused(id, "it was already used; send the request again without it")
            }
            None => {
                // Another replica holds the exchange (or held it before a restart).
                let pre = state
                    .asks
                    .into_iter()
                    .filter_map(|(key, method, digest)| {
                        responses.get(&key).map(|r| PreAnswer {
                            method,
                            digest,
                            response: r.clone(),
                        })
                    })
                    .collect();
                Resumed::RunAgain(pre)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_ignore_key_order_and_mrtr_fields() {
        let a: Map<String, Value> = serde_json::from_str(
            r#"{"name":"t","arguments":{"x":1,"y":[{"b":1,"a":2}]},"_meta":{"k":1}}"#,
        )
        .unwrap();
        let b: Map<String, Value> = serde_json::from_str(
            r#"{"requestState":"s","arguments":{"y":[{"a":2,"b":1}],"x":1},"name":"t","inputResponses":{}}"#,
        )
        .unwrap();
        assert_eq!(digest(&a), digest(&b));
        let c: Map<String, Value> =
            serde_json::from_str(r#"{"name":"t","arguments":{"x":2}}"#).unwrap();
        assert_ne!(digest(&a), digest(&c));
    }

    #[test]
    fn a_request_state_opens_only_as_one() {
        let sealer = Sealer::new(Some("k")).unwrap();
        let state = RequestState {
            id: "x".into(),
            exp: now_secs() + 60,
            principal: "anonymous".into(),
            method: "tools/call".into(),
            digest: "d".into(),
            asks: vec![],
        };
        let sealed = sealer
            .seal_bytes(AAD, serde_json::to_vec(&state).unwrap())
            .unwrap();
        assert!(sealer.open_bytes(AAD, &sealed).is_ok());
        assert!(sealer.open(&sealed).is_err(), "not a session id");
        assert!(Sealer::new(Some("other"))
            .unwrap()
            .open_bytes(AAD, &sealed)
            .is_err());
        let mut bytes = sealed.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert!(sealer
            .open_bytes(AAD, std::str::from_utf8(&bytes).unwrap())
            .is_err());
    }

    #[test]
    fn used_states_are_remembered_until_they_expire() {
        let p = Parked::default();
        assert!(p.claim("a", now_secs() + 60));
        assert!(!p.claim("a", now_secs() + 60), "a state is used once");
        p.mark_used("old", 1);
        assert!(p.claim("b", now_secs() + 60));
        assert!(
            !lock(&p.used).contains_key("old"),
            "expired ids are forgotten"
        );
        assert!(p.take("a", now_secs() + 60).is_none());
        assert_eq!(p.len(), 0);
    }
}
