//! Task affinity across backends and replicas: when a route sends A2A traffic to several
//! agents, the agent that owns a task is sealed into the task id the client sees, and opened
//! again when the client names the task (`GetTask`, `CancelTask`, `SubscribeToTask`, push
//! configs, a message continuing the task), so the call reaches that agent from any replica
//! that holds the same key.
//!
//! A sealed id is `base64url(nonce || AES-256-GCM(backend "\0" task id))`. The nonce is an
//! HMAC of the plaintext under a second key, so one task always seals to the same id (a client
//! compares the id of every event of a stream with the task's) and the nonce repeats only
//! with the plaintext (AES-GCM-SIV's construction, done with the parts `ring` has). A client
//! can neither read nor forge one; a garbled id opens to nothing and the client gets the
//! binding's "task not found".
//!
//! What is sealed in answers (JSON bodies and each SSE event): every `taskId`, every
//! `referenceTaskIds` entry, and the `id` of every Task object (an object with a `status` and a
//! `contextId`, or `kind: "task"`). What is opened in requests: the same members, and the
//! `id` of a JSON-RPC call's `params` (the task of `GetTask`, `CancelTask`, ...).
//!
//! Context ids are sealed the same way, so a message that continues a conversation without
//! naming a task reaches the agent that holds it. A client may also choose its own context id:
//! one that does not open is passed as it is ([`OpenedRequest::client_context`]; the gateway
//! places it by hashing it over the route's agents, the same on every replica) and is left
//! unsealed in the answer to that request ([`TaskSealer::seal_answer_keeping`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use serde_json::Value;

/// Seals and opens task ids.
pub struct TaskSealer {
    aead: LessSafeKey,
    nonce_key: hmac::Key,
}

impl std::fmt::Debug for TaskSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskSealer(<key>)")
    }
}

/// A task id opened: the backend that owns it and the agent's own id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedTask {
    pub backend: String,
    pub task_id: String,
}

/// A request named a task id that is not one the gateway sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownTask(pub String);

/// What the ids of a request say, once opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenedRequest {
    /// The backend that owns the task the request names (else the context it continues).
    pub owner: Option<String>,
    /// A context id the client chose itself (it does not open): passed as it is.
    pub client_context: Option<String>,
}

/// Which kind of id a member holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdKind {
    Task,
    Context,
}

impl TaskSealer {
    /// Keys derived from configured secret text, or random ones (this process only).
    pub fn new(secret: Option<&str>) -> Result<TaskSealer, String> {
        let master: [u8; 32] = match secret {
            Some(s) => digest(&[b"switchyard a2a tasks", s.as_bytes()]),
            None => {
                let mut k = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k).map_err(
                    |_| {
                        "cannot make a random A2A task key: the OS randomness source failed \
                         (set policies.a2a.taskKey on the route)"
                            .to_string()
                    },
                )?;
                k
            }
        };
        let aead_key = digest(&[b"aead", &master]);
        let nonce_key = digest(&[b"nonce", &master]);
        let unbound = UnboundKey::new(&AES_256_GCM, &aead_key).map_err(|_| "AES key")?;
        Ok(TaskSealer {
            aead: LessSafeKey::new(unbound),
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, &nonce_key),
        })
    }

    /// The id the client sees for `task_id` on `backend`.
    pub fn seal(&self, backend: &str, task_id: &str) -> String {
        let mut data = Vec::with_capacity(backend.len() + 1 + task_id.len() + 16);
        data.extend_from_slice(backend.as_bytes());
        data.push(0);
        data.extend_from_slice(task_id.as_bytes());
        let tag = hmac::sign(&self.nonce_key, &data);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        // Only absurd lengths fail to seal; the id is then left as it was (unpinned).
        if self
            .aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .is_err()
        {
            return task_id.to_string();
        }
        let mut out = Vec::with_capacity(NONCE_LEN + data.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The backend and agent id inside a sealed id, or `None` when it is not one of ours.
    pub fn open(&self, sealed: &str) -> Option<OpenedTask> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .ok()?;
        let split = plain.iter().position(|&b| b == 0)?;
        let backend = std::str::from_utf8(&plain[..split]).ok()?.to_string();
        let task_id = std::str::from_utf8(&plain[split + 1..]).ok()?.to_string();
        Some(OpenedTask { backend, task_id })
    }

    /// Seals the task ids in an answer from `backend` (a JSON body or one SSE event's data).
    /// Whether anything changed.
    pub fn seal_answer(&self, v: &mut Value, backend: &str) -> bool {
        self.seal_answer_keeping(v, backend, None)
    }

    /// [`TaskSealer::seal_answer`], leaving `keep` (the context id the client chose for this
    /// request) as it is wherever it appears.
    pub fn seal_answer_keeping(&self, v: &mut Value, backend: &str, keep: Option<&str>) -> bool {
        let mut changed = false;
        walk(
            v,
            &mut |kind, s: &mut String| {
                if kind == IdKind::Context && keep == Some(s.as_str()) {
                    return Ok::<(), ()>(());
                }
                *s = self.seal(backend, s);
                changed = true;
                Ok(())
            },
            0,
        )
        .ok();
        changed
    }

    /// Opens the task ids of a request. `params_id`: the JSON-RPC `params.id` names a task.
    /// The owner of the first id opened (the one the call is about) is returned.
    pub fn open_request(
        &self,
        v: &mut Value,
        params_id: bool,
    ) -> Result<Option<String>, UnknownTask> {
        self.open_request_ids(v, params_id).map(|o| o.owner)
    }

    /// Opens the task and context ids of a request: a task id that does not open is an
    /// error; a context id that does not open is the client's own and stays. The owner is the
    /// task's, else the context's.
    pub fn open_request_ids(
        &self,
        v: &mut Value,
        params_id: bool,
    ) -> Result<OpenedRequest, UnknownTask> {
        let mut task_owner: Option<String> = None;
        let mut context_owner: Option<String> = None;
        let mut client_context: Option<String> = None;
        let mut open = |kind: IdKind, s: &mut String| -> Result<(), UnknownTask> {
            match (kind, self.open(s)) {
                (IdKind::Task, None) => return Err(UnknownTask(s.clone())),
                (IdKind::Context, None) => {
                    client_context.get_or_insert_with(|| s.clone());
                    return Ok(());
                }
                (IdKind::Task, Some(o)) => {
                    task_owner.get_or_insert(o.backend);
                    *s = o.task_id;
                }
                (IdKind::Context, Some(o)) => {
                    context_owner.get_or_insert(o.backend);
                    *s = o.task_id;
                }
            }
            Ok(())
        };
        if params_id {
            if let Some(Value::String(id)) = v.get_mut("params").and_then(|p| p.get_mut("id")) {
                open(IdKind::Task, id)?;
            }
        }
        walk(v, &mut open, 0)?;
        Ok(OpenedRequest {
            owner: task_owner.or(context_owner),
            client_context,
        })
    }
}

fn walk<E>(
    v: &mut Value,
    f: &mut impl FnMut(IdKind, &mut String) -> Result<(), E>,
    depth: usize,
) -> Result<(), E> {
    if depth > 64 {
        return Ok(());
    }
    match v {
        Value::Array(items) => {
            for item in items {
                walk(item, f, depth + 1)?;
            }
        }
        Value::Object(map) => {
            let is_task = map.get("status").is_some_and(Value::is_object)
                && (map.contains_key("contextId")
                    || map.get("kind").and_then(Value::as_str) == Some("task"));
            for (k, child) in map.iter_mut() {
                match (k.as_str(), child) {
                    ("taskId", Value::String(s)) => f(IdKind::Task, s)?,
                    ("id", Value::String(s)) if is_task => f(IdKind::Task, s)?,
                    ("contextId", Value::String(s)) if !s.is_empty() => f(IdKind::Context, s)?,
                    ("referenceTaskIds", Value::Array(ids)) => {
                        for id in ids {
                            if let Value::String(s) = id {
                                f(IdKind::Task, s)?;
                            }
                        }
                    }
                    (_, child @ (Value::Object(_) | Value::Array(_))) => walk(child, f, depth + 1)?,
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The backend (an index into `backends`) a client's own context id is placed on: rendezvous
/// hashing (FNV-1a 64 of backend and id), the same on every replica with the same backends,
/// and moving only the contexts of a backend removed.
pub fn place_context<S: AsRef<str>>(context_id: &str, backends: &[S]) -> Option<usize> {
    let score = |backend: &str| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in backend.bytes().chain([0]).chain(context_id.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // FNV's low bits mix poorly for short keys: finish with a 64-bit avalanche.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    };
    (0..backends.len()).max_by_key(|&i| score(backends[i].as_ref()))
}

/// Whether a JSON-RPC call's `params.id` names a task: the task calls, and v0.3's push-config
/// calls (v1.0's name the task `taskId` and the config `id`).
pub fn params_id_is_task(op: crate::Operation, params: Option<&Value>) -> bool {
    use crate::Operation::*;
    match op {
        GetTask | CancelTask | SubscribeToTask => true,
        GetPushConfig | ListPushConfigs | DeletePushConfig => {
            params.is_some_and(|p| p.get("taskId").is_none())
        }
        _ => false,
    }
}

/// Seals the task ids of an SSE stream event by event. Bytes are held only until the blank
/// line that ends their event (the client dispatches nothing before it either).
pub struct SseSealer {
    pending: Vec<u8>,
    /// Largest event rewritten; a larger one passes as it is.
    max_event: usize,
    /// The client's own context id, left unsealed.
    keep_context: Option<String>,
}

impl SseSealer {
    pub fn new(max_event: usize) -> SseSealer {
        SseSealer {
            pending: Vec::new(),
            max_event,
            keep_context: None,
        }
    }

    /// Leaves `keep` (the context id the client chose) unsealed in every event.
    pub fn keeping(mut self, keep: Option<String>) -> SseSealer {
        self.keep_context = keep;
        self
    }

    /// The bytes ready to send after `chunk`: every event it completes, sealed.
    pub fn feed(&mut self, chunk: &[u8], sealer: &TaskSealer, backend: &str) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len() + 64);
        loop {
            match event_end(&self.pending) {
                Some(end) => {
                    let event: Vec<u8> = self.pending.drain(..end).collect();
                    let keep = self.keep_context.as_deref();
                    seal_event(&event, sealer, backend, keep, &mut out);
                }
                None if self.pending.len() > self.max_event => {
                    // Too large to hold: passed on as it is.
                    out.append(&mut self.pending);
                    break;
                }
                None => break,
            }
        }
        out
    }

    /// What is left when the stream ends (an unterminated event, as it came).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// The length of the first complete event (through its blank line), if there is one.
pub(crate) fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut line_start = 0;
    while i < buf.len() {
        let eol = match buf[i] {
            b'\n' => Some(i + 1),
            b'\r' if i + 1 < buf.len() => Some(if buf[i + 1] == b'\n' { i + 2 } else { i + 1 }),
            // A lone CR at the end may be the first half of CRLF.
            b'\r' => return None,
            _ => None,
        };
        if let Some(next) = eol {
            if i == line_start {
                return Some(next);
            }
            line_start = next;
            i = next;
        } else {
            i += 1;
        }
    }
    None
}

fn seal_event(
    event: &[u8],
    sealer: &TaskSealer,
    backend: &str,
    keep: Option<&str>,
    out: &mut Vec<u8>,
) {
    rewrite_event(
        event,
        |json| sealer.seal_answer_keeping(json, backend, keep),
        out,
    );
}

/// One SSE event with its JSON data rewritten by `f` (which says whether it changed
/// anything; an event it did not change, or whose data is not JSON, passes as it came).
pub(crate) fn rewrite_event(event: &[u8], f: impl FnOnce(&mut Value) -> bool, out: &mut Vec<u8>) {
    let Ok(text) = std::str::from_utf8(event) else {
        out.extend_from_slice(event);
        return;
    };
    let mut data = String::new();
    let mut data_lines = 0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("data:") {
            if data_lines > 0 {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
            data_lines += 1;
        }
    }
    let mut json: Value = match serde_json::from_str(&data) {
        Ok(v) if data_lines > 0 => v,
        _ => {
            out.extend_from_slice(event);
            return;
        }
    };
    if !f(&mut json) {
        out.extend_from_slice(event);
        return;
    }
    let mut wrote_data = false;
    for line in text.lines() {
        if line.starts_with("data:") {
            if !wrote_data {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json.to_string().as_bytes());
                out.push(b'\n');
                wrote_data = true;
            }
        } else if !line.is_empty() {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    out.push(b'\n');
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sealed_ids_are_stable_private_and_open_only_with_the_key() {
        let a = TaskSealer::new(Some("k1")).unwrap();
        let sealed = a.seal("agent-b:9000", "task-42");
        assert_eq!(sealed, a.seal("agent-b:9000", "task-42"), "deterministic");
        assert_ne!(sealed, a.seal("agent-a:9000", "task-42"));
        assert!(!sealed.contains("task-42"));
        assert!(sealed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let other_replica = TaskSealer::new(Some("k1")).unwrap();
        assert_eq!(
            other_replica.open(&sealed),
            Some(OpenedTask {
                backend: "agent-b:9000".into(),
                task_id: "task-42".into()
            })
        );
        assert_eq!(TaskSealer::new(Some("k2")).unwrap().open(&sealed), None);
        assert_eq!(TaskSealer::new(None).unwrap().open(&sealed), None);
        // Garbled, truncated, not base64.
        let mut bytes = sealed.clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(a.open(std::str::from_utf8(&bytes).unwrap()), None);
        assert_eq!(a.open(&sealed[..10]), None);
        assert_eq!(a.open("task-42"), None);
        assert_eq!(a.open("a/b"), None);
    }

    #[test]
    fn answers_of_both_versions_are_sealed_and_requests_opened() {
        let s = TaskSealer::new(Some("k")).unwrap();
        // v1.0 SendMessage answer, v0.3 task, a status event, a message, a list.
        let mut answer = json!({
            "jsonrpc": "2.0", "id": 7,
            "result": {
                "task": {
                    "id": "t1", "contextId": "c1", "status": {"state": "TASK_STATE_COMPLETED"},
                    "history": [{"messageId": "m1", "taskId": "t1", "contextId": "c1",
                                 "referenceTaskIds": ["t0"]}],
                    "artifacts": [{"artifactId": "a1", "parts": [{"text": "x"}]}]
                }
            }
        });
        assert!(s.seal_answer(&mut answer, "b"));
        let task = &answer["result"]["task"];
        assert_eq!(answer["id"], 7, "the JSON-RPC id is not a task id");
        assert_eq!(task["id"], s.seal("b", "t1"));
        assert_eq!(task["history"][0]["taskId"], s.seal("b", "t1"));
        assert_eq!(task["history"][0]["referenceTaskIds"][0], s.seal("b", "t0"));
        assert_eq!(
            task["contextId"],
            s.seal("b", "c1"),
            "contexts are sealed too"
        );
        assert_eq!(task["history"][0]["contextId"], s.seal("b", "c1"));
        assert_eq!(task["history"][0]["messageId"], "m1");
        assert_eq!(task["artifacts"][0]["artifactId"], "a1");

        let mut old =
            json!({"kind": "task", "id": "t2", "contextId": "c", "status": {"state": "working"}});
        s.seal_answer(&mut old, "b");
        assert_eq!(old["id"], s.seal("b", "t2"));
        let mut event =
            json!({"statusUpdate": {"taskId": "t3", "contextId": "c", "status": {"state": "x"}}});
        s.seal_answer(&mut event, "b");
        assert_eq!(event["statusUpdate"]["taskId"], s.seal("b", "t3"));
        let mut push = json!({"taskId": "t4", "id": "cfg-1", "url": "https://h"});
        s.seal_answer(&mut push, "b");
        assert_eq!(push["id"], "cfg-1", "a push config's own id stays");
        let mut none = json!({"message": {"messageId": "m", "parts": []}});
        assert!(!s.seal_answer(&mut none, "b"));

        // Requests: params.id for task calls, and taskId anywhere.
        let mut get = json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask",
                             "params": {"id": s.seal("b", "t1"), "historyLength": 2}});
        assert_eq!(s.open_request(&mut get, true), Ok(Some("b".to_string())));
        assert_eq!(get["params"]["id"], "t1");
        assert_eq!(get["id"], 1);
        let mut send = json!({"params": {"message": {"taskId": s.seal("a", "t9"), "messageId": "m",
                              "referenceTaskIds": [s.seal("b", "t1")]}}});
        assert_eq!(s.open_request(&mut send, false), Ok(Some("a".to_string())));
        assert_eq!(send["params"]["message"]["taskId"], "t9");
        assert_eq!(send["params"]["message"]["referenceTaskIds"][0], "t1");
        let mut fresh = json!({"params": {"message": {"messageId": "m", "parts": []}}});
        assert_eq!(s.open_request(&mut fresh, false), Ok(None));
        // Context ids: a sealed one pins (a task's owner wins), a client's own one stays and
        // is reported, and is kept unsealed in the answer to that request.
        let mut cont = json!({"params": {"message": {"contextId": s.seal("a", "c7")}}});
        assert_eq!(
            s.open_request_ids(&mut cont, false),
            Ok(OpenedRequest {
                owner: Some("a".into()),
                client_context: None
            })
        );
        assert_eq!(cont["params"]["message"]["contextId"], "c7");
        let mut both = json!({"params": {"message": {"contextId": s.seal("a", "c7"),
                              "taskId": s.seal("b", "t1")}}});
        assert_eq!(
            s.open_request_ids(&mut both, false)
                .unwrap()
                .owner
                .as_deref(),
            Some("b")
        );
        let mut own = json!({"params": {"message": {"contextId": "my-conversation"}}});
        assert_eq!(
            s.open_request_ids(&mut own, false),
            Ok(OpenedRequest {
                owner: None,
                client_context: Some("my-conversation".into())
            })
        );
        assert_eq!(own["params"]["message"]["contextId"], "my-conversation");
        let mut reply = json!({"task": {"id": "t", "contextId": "my-conversation",
                               "status": {"state": "x"}}});
        s.seal_answer_keeping(&mut reply, "a", Some("my-conversation"));
        assert_eq!(reply["task"]["contextId"], "my-conversation");
        assert_eq!(reply["task"]["id"], s.seal("a", "t"));
        let mut forged = json!({"params": {"id": "made-up"}});
        assert_eq!(
            s.open_request(&mut forged.clone(), false),
            Ok(None),
            "params.id is a task only for task calls"
        );
        assert_eq!(
            s.open_request(&mut forged, true),
            Err(UnknownTask("made-up".into()))
        );
    }

    #[test]
    fn client_contexts_are_placed_stably_and_spread() {
        let backends = ["a:1", "b:2", "c:3"];
        let mut counts = [0usize; 3];
        for i in 0..300 {
            let id = format!("conversation-{i}");
            let at = place_context(&id, &backends).unwrap();
            assert_eq!(place_context(&id, &backends), Some(at), "stable");
            counts[at] += 1;
            // Removing another backend does not move this context.
            let others: Vec<&str> = backends
                .iter()
                .copied()
                .filter(|b| *b != backends[(at + 1) % 3])
                .collect();
            assert_eq!(others[place_context(&id, &others).unwrap()], backends[at]);
        }
        assert!(counts.iter().all(|&n| n > 60), "{counts:?}");
        assert_eq!(place_context("x", &[] as &[&str]), None);
    }

    #[test]
    fn sse_events_are_sealed_whole_however_the_stream_is_cut() {
        let s = TaskSealer::new(Some("k")).unwrap();
        let stream = "event: message\r\ndata: {\"statusUpdate\":{\"taskId\":\"t1\",\"contextId\":\"c\"}}\r\n\r\n: keepalive\n\ndata: {\"kind\":\"task\",\"id\":\"t1\",\n";
        let tail = "data: \"contextId\":\"c\",\"status\":{}}\n\n";
        let whole = format!("{stream}{tail}");
        let mut want = None;
        for cut in 0..whole.len() {
            let mut sse = SseSealer::new(1 << 16);
            let mut out = sse.feed(&whole.as_bytes()[..cut], &s, "b");
            out.extend(sse.feed(&whole.as_bytes()[cut..], &s, "b"));
            out.extend(sse.finish());
            let out = String::from_utf8(out).unwrap();
            match &want {
                None => want = Some(out),
                Some(w) => assert_eq!(&out, w, "cut at {cut}"),
            }
        }
        let out = want.unwrap();
        let sealed = s.seal("b", "t1");
        assert_eq!(out.matches(&sealed).count(), 2, "{out}");
        assert!(!out.contains("\"t1\""), "{out}");
        assert!(out.starts_with("event: message\n"), "{out}");
        assert!(out.contains(": keepalive\n\n"), "comments pass: {out}");
        // An event is released as soon as its blank line arrives.
        let mut sse = SseSealer::new(1 << 16);
        assert!(sse.feed(b"data: {\"taskId\":\"t1\"}\n", &s, "b").is_empty());
        assert!(!sse.feed(b"\n", &s, "b").is_empty());
    }
}
