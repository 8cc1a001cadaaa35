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
//! `id` of a JSON-RPC call's `params` (the task of `GetTask`, `CancelTask`, ...). Context ids
//! are not sealed (a client may choose its own), so a message that continues a context
//! without naming a task is not pinned.

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
        let mut changed = false;
        self.walk(v, &mut |s: &mut String| {
            *s = self.seal(backend, s);
            changed = true;
            Ok::<(), ()>(())
        })
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
        let mut owner: Option<String> = None;
        let mut open = |s: &mut String| -> Result<(), UnknownTask> {
            let opened = self.open(s).ok_or_else(|| UnknownTask(s.clone()))?;
            owner.get_or_insert(opened.backend);
            *s = opened.task_id;
            Ok(())
        };
        if params_id {
            if let Some(Value::String(id)) = v.get_mut("params").and_then(|p| p.get_mut("id")) {
                open(id)?;
            }
        }
        self.walk(v, &mut open)?;
        Ok(owner)
    }

    /// Calls `f` on every task id in `v`.
    fn walk<E>(
        &self,
        v: &mut Value,
        f: &mut impl FnMut(&mut String) -> Result<(), E>,
    ) -> Result<(), E> {
        walk(v, f, 0)
    }
}

fn walk<E>(
    v: &mut Value,
    f: &mut impl FnMut(&mut String) -> Result<(), E>,
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
                    ("taskId", Value::String(s)) => f(s)?,
                    ("id", Value::String(s)) if is_task => f(s)?,
                    ("referenceTaskIds", Value::Array(ids)) => {
                        for id in ids {
                            if let Value::String(s) = id {
                                f(s)?;
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
}

impl SseSealer {
    pub fn new(max_event: usize) -> SseSealer {
        SseSealer {
            pending: Vec::new(),
            max_event,
        }
    }

    /// The bytes ready to send after `chunk`: every event it completes, sealed.
    pub fn feed(&mut self, chunk: &[u8], sealer: &TaskSealer, backend: &str) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len() + 64);
        loop {
            match event_end(&self.pending) {
                Some(end) => {
                    let event: Vec<u8> = self.pending.drain(..end).collect();
                    seal_event(&event, sealer, backend, &mut out);
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
fn event_end(buf: &[u8]) -> Option<usize> {
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

fn seal_event(event: &[u8], sealer: &TaskSealer, backend: &str, out: &mut Vec<u8>) {
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
    if !sealer.seal_answer(&mut json, backend) {
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
        assert_eq!(task["contextId"], "c1");
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
