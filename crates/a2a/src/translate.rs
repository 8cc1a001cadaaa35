//! Translation between v0.3 and v1.0 for an agent that speaks only one of them
//! (`a2a.agentVersion`), on the JSON-RPC binding: a client of the other version is served as
//! if the agent spoke its version.
//!
//! What is carried (the mapping of the official SDK's compat layer):
//!
//! | v0.3 | v1.0 |
//! |---|---|
//! | `message/send`, `message/stream`, `tasks/get`, `tasks/cancel`, `tasks/resubscribe` | `SendMessage`, `SendStreamingMessage`, `GetTask`, `CancelTask`, `SubscribeToTask` |
//! | `role: "user"` / `"agent"` | `ROLE_USER` / `ROLE_AGENT` |
//! | parts `{kind: "text", text}`, `{kind: "data", data}`, `{kind: "file", file: {bytes \| uri, mimeType, name}}` | `{text}`, `{data}`, `{raw \| url, mediaType, filename}` |
//! | states `submitted`, `working`, `input-required`, `completed`, ... `unknown` | `TASK_STATE_SUBMITTED`, ... `TASK_STATE_UNSPECIFIED` |
//! | `configuration.blocking`, `pushNotificationConfig` | `returnImmediately` (inverted), `taskPushNotificationConfig` |
//! | a send result: the Task or Message itself (`kind`) | `{task}` / `{message}` |
//! | stream events `kind: "status-update"` (with `final`), `"artifact-update"` | `{statusUpdate}`, `{artifactUpdate}` |
//!
//! What is not: the push-notification config methods, `ListTasks` (v1.0 only) and the
//! extended card are forwarded as they are (the agent answers them, or refuses the method); a
//! v1.0 data part that is not an object travels as `{"value": ...}` with the compat metadata
//! flag the SDKs use; the v0.3 `final` flag is derived from the state.

use serde_json::{Map, Value};

use crate::classify::{Operation, ProtocolVersion};

/// Whether calls of `op` are translated.
pub fn translatable(op: Operation) -> bool {
    matches!(
        op,
        Operation::SendMessage
            | Operation::SendStreamingMessage
            | Operation::GetTask
            | Operation::CancelTask
            | Operation::SubscribeToTask
    )
}

/// The JSON-RPC method name of `op` in version `v`.
pub fn method_name(op: Operation, v: ProtocolVersion) -> Option<&'static str> {
    let v03 = v == ProtocolVersion::V0_3;
    Some(match op {
        Operation::SendMessage if v03 => "message/send",
        Operation::SendStreamingMessage if v03 => "message/stream",
        Operation::GetTask if v03 => "tasks/get",
        Operation::CancelTask if v03 => "tasks/cancel",
        Operation::SubscribeToTask if v03 => "tasks/resubscribe",
        Operation::SendMessage => "SendMessage",
        Operation::SendStreamingMessage => "SendStreamingMessage",
        Operation::GetTask => "GetTask",
        Operation::CancelTask => "CancelTask",
        Operation::SubscribeToTask => "SubscribeToTask",
        _ => return None,
    })
}

/// Rewrites a JSON-RPC request object for an agent of version `to`.
pub fn request(v: &mut Value, op: Operation, to: ProtocolVersion) {
    let Some(name) = method_name(op, to) else {
        return;
    };
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    obj.insert("method".into(), name.into());
    let Some(params) = obj.get_mut("params").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(m) = params.get_mut("message") {
        message(m, to);
    }
    if let Some(Value::Object(c)) = params.get_mut("configuration") {
        configuration(c, to);
    }
}

/// Rewrites a JSON-RPC response object (its `result`) from the agent for a client of version
/// `to`. Errors pass as they are (both versions share the codes).
pub fn response(v: &mut Value, op: Operation, to: ProtocolVersion) {
    if let Some(r) = v.get_mut("result") {
        result(r, op, to);
    }
}

/// One stream event's JSON-RPC response object, for a client of version `to`.
pub fn event(v: &mut Value, to: ProtocolVersion) {
    if let Some(r) = v.get_mut("result") {
        stream_result(r, to);
    }
}

fn result(r: &mut Value, op: Operation, to: ProtocolVersion) {
    match op {
        Operation::SendMessage => send_result(r, to),
        Operation::GetTask | Operation::CancelTask => task(r, to),
        Operation::SendStreamingMessage | Operation::SubscribeToTask => stream_result(r, to),
        _ => {}
    }
}

/// A send result: v1.0 `{task}` / `{message}`, v0.3 the object with its `kind`.
fn send_result(r: &mut Value, to: ProtocolVersion) {
    match to {
        ProtocolVersion::V0_3 => {
            let Some(obj) = r.as_object_mut() else {
                return;
            };
            if let Some(mut t) = obj.remove("task") {
                task(&mut t, to);
                *r = t;
            } else if let Some(mut m) = obj.remove("message") {
                message(&mut m, to);
                *r = m;
            }
        }
        _ => {
            let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
            let key = match kind {
                "message" => "message",
                _ => "task",
            };
            let mut inner = std::mem::take(r);
            match key {
                "message" => message(&mut inner, to),
                _ => task(&mut inner, to),
            }
            let mut wrap = Map::new();
            wrap.insert(key.into(), inner);
            *r = Value::Object(wrap);
        }
    }
}

/// A stream event: v1.0 `{task | message | statusUpdate | artifactUpdate}`, v0.3 the object
/// with its `kind`.
fn stream_result(r: &mut Value, to: ProtocolVersion) {
    match to {
        ProtocolVersion::V0_3 => {
            let Some(obj) = r.as_object_mut() else {
                return;
            };
            let Some((key, mut inner)) = ["task", "message", "statusUpdate", "artifactUpdate"]
                .iter()
                .find_map(|k| obj.remove(*k).map(|v| (*k, v)))
            else {
                return;
            };
            match key {
                "task" => task(&mut inner, to),
                "message" => message(&mut inner, to),
                "statusUpdate" => {
                    if let Some(s) = inner.get_mut("status") {
                        status(s, to);
                    }
                    let state = inner
                        .pointer("/status/state")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let is_final =
                        matches!(state, "completed" | "canceled" | "failed" | "rejected");
                    if let Some(o) = inner.as_object_mut() {
                        o.insert("kind".into(), "status-update".into());
                        o.insert("final".into(), is_final.into());
                    }
                }
                _ => {
                    if let Some(a) = inner.get_mut("artifact") {
                        artifact(a, to);
                    }
                    if let Some(o) = inner.as_object_mut() {
                        o.insert("kind".into(), "artifact-update".into());
                    }
                }
            }
            *r = inner;
        }
        _ => {
            let kind = r
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut inner = std::mem::take(r);
            let key = match kind.as_str() {
                "message" => {
                    message(&mut inner, to);
                    "message"
                }
                "status-update" => {
                    if let Some(o) = inner.as_object_mut() {
                        o.remove("kind");
                        o.remove("final");
                    }
                    if let Some(s) = inner.get_mut("status") {
                        status(s, to);
                    }
                    "statusUpdate"
                }
                "artifact-update" => {
                    if let Some(o) = inner.as_object_mut() {
                        o.remove("kind");
                    }
                    if let Some(a) = inner.get_mut("artifact") {
                        artifact(a, to);
                    }
                    "artifactUpdate"
                }
                _ => {
                    task(&mut inner, to);
                    "task"
                }
            };
            let mut wrap = Map::new();
            wrap.insert(key.into(), inner);
            *r = Value::Object(wrap);
        }
    }
}

fn task(t: &mut Value, to: ProtocolVersion) {
    let Some(obj) = t.as_object_mut() else {
        return;
    };
    match to {
        ProtocolVersion::V0_3 => {
            obj.insert("kind".into(), "task".into());
        }
        _ => {
            obj.remove("kind");
        }
    }
    if let Some(s) = obj.get_mut("status") {
        status(s, to);
    }
    if let Some(Value::Array(h)) = obj.get_mut("history") {
        h.iter_mut().for_each(|m| message(m, to));
    }
    if let Some(Value::Array(a)) = obj.get_mut("artifacts") {
        a.iter_mut().for_each(|a| artifact(a, to));
    }
}

fn status(s: &mut Value, to: ProtocolVersion) {
    let Some(obj) = s.as_object_mut() else {
        return;
    };
    if let Some(Value::String(state)) = obj.get_mut("state") {
        *state = match to {
            ProtocolVersion::V0_3 => state_v03(state),
            _ => state_v1(state),
        };
    }
    if let Some(m) = obj.get_mut("message") {
        message(m, to);
    }
}

/// `TASK_STATE_INPUT_REQUIRED` → `input-required`; `TASK_STATE_UNSPECIFIED` → `unknown`.
pub fn state_v03(s: &str) -> String {
    match s.strip_prefix("TASK_STATE_") {
        Some("UNSPECIFIED") => "unknown".into(),
        Some(rest) => rest.to_ascii_lowercase().replace('_', "-"),
        None => s.to_string(),
    }
}

/// `input-required` → `TASK_STATE_INPUT_REQUIRED`; `unknown` → `TASK_STATE_UNSPECIFIED`.
pub fn state_v1(s: &str) -> String {
    if s.starts_with("TASK_STATE_") {
        return s.to_string();
    }
    match s {
        "unknown" => "TASK_STATE_UNSPECIFIED".into(),
        other => format!(
            "TASK_STATE_{}",
            other.to_ascii_uppercase().replace('-', "_")
        ),
    }
}

fn message(m: &mut Value, to: ProtocolVersion) {
    let Some(obj) = m.as_object_mut() else {
        return;
    };
    if let Some(Value::String(role)) = obj.get_mut("role") {
        *role = match (to, role.as_str()) {
            (ProtocolVersion::V0_3, "ROLE_USER") => "user".into(),
            (ProtocolVersion::V0_3, "ROLE_AGENT") => "agent".into(),
            (ProtocolVersion::V0_3, _) => role.clone(),
            (_, "user") => "ROLE_USER".into(),
            (_, "agent") => "ROLE_AGENT".into(),
            _ => role.clone(),
        };
    }
    match to {
        ProtocolVersion::V0_3 => {
            obj.insert("kind".into(), "message".into());
        }
        _ => {
            obj.remove("kind");
        }
    }
    if let Some(Value::Array(parts)) = obj.get_mut("parts") {
        parts.iter_mut().for_each(|p| part(p, to));
    }
}

fn artifact(a: &mut Value, to: ProtocolVersion) {
    if let Some(Value::Array(parts)) = a.get_mut("parts") {
        parts.iter_mut().for_each(|p| part(p, to));
    }
}

fn part(p: &mut Value, to: ProtocolVersion) {
    let Some(obj) = p.as_object_mut() else {
        return;
    };
    let mut out = Map::new();
    if let Some(meta) = obj.remove("metadata") {
        out.insert("metadata".into(), meta);
    }
    match to {
        ProtocolVersion::V0_3 => {
            if let Some(text) = obj.remove("text") {
                out.insert("kind".into(), "text".into());
                out.insert("text".into(), text);
            } else if let Some(data) = obj.remove("data") {
                out.insert("kind".into(), "data".into());
                if data.is_object() {
                    out.insert("data".into(), data);
                } else {
                    out.insert("data".into(), serde_json::json!({"value": data}));
                    let meta = out
                        .entry("metadata")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Some(m) = meta.as_object_mut() {
                        m.insert("data_part_compat".into(), true.into());
                    }
                }
            } else {
                let mut file = Map::new();
                if let Some(raw) = obj.remove("raw") {
                    file.insert("bytes".into(), raw);
                } else if let Some(url) = obj.remove("url") {
                    file.insert("uri".into(), url);
                } else {
                    return;
                }
                if let Some(t) = obj.remove("mediaType") {
                    file.insert("mimeType".into(), t);
                }
                if let Some(n) = obj.remove("filename") {
                    file.insert("name".into(), n);
                }
                out.insert("kind".into(), "file".into());
                out.insert("file".into(), Value::Object(file));
            }
        }
        _ => {
            let kind = obj.remove("kind");
            match kind.as_ref().and_then(Value::as_str) {
                Some("text") | None if obj.contains_key("text") => {
                    out.insert("text".into(), obj.remove("text").unwrap_or_default());
                }
                Some("data") => {
                    let compat = out
                        .get_mut("metadata")
                        .and_then(Value::as_object_mut)
                        .and_then(|m| m.remove("data_part_compat"))
                        .is_some_and(|v| v == Value::Bool(true));
                    if out
                        .get("metadata")
                        .and_then(Value::as_object)
                        .is_some_and(Map::is_empty)
                    {
                        out.remove("metadata");
                    }
                    let data = obj.remove("data").unwrap_or_default();
                    let data = match compat {
                        true => data.get("value").cloned().unwrap_or(data),
                        false => data,
                    };
                    out.insert("data".into(), data);
                }
                Some("file") => {
                    let Some(Value::Object(mut file)) = obj.remove("file") else {
                        return;
                    };
                    if let Some(b) = file.remove("bytes") {
                        out.insert("raw".into(), b);
                    } else if let Some(u) = file.remove("uri") {
                        out.insert("url".into(), u);
                    }
                    if let Some(t) = file.remove("mimeType") {
                        out.insert("mediaType".into(), t);
                    }
                    if let Some(n) = file.remove("name") {
                        out.insert("filename".into(), n);
                    }
                }
                _ => {
                    // Not a part this knows: left as it was.
                    if let Some(k) = kind {
                        obj.insert("kind".into(), k);
                    }
                    if let Some(m) = out.remove("metadata") {
                        obj.insert("metadata".into(), m);
                    }
                    return;
                }
            }
        }
    }
    *obj = out;
}

fn configuration(c: &mut Map<String, Value>, to: ProtocolVersion) {
    match to {
        ProtocolVersion::V0_3 => {
            if let Some(Value::Bool(ri)) = c.remove("returnImmediately") {
                c.insert("blocking".into(), (!ri).into());
            }
            if let Some(p) = c.remove("taskPushNotificationConfig") {
                c.insert("pushNotificationConfig".into(), p);
            }
        }
        _ => {
            if let Some(Value::Bool(b)) = c.remove("blocking") {
                c.insert("returnImmediately".into(), (!b).into());
            }
            if let Some(p) = c.remove("pushNotificationConfig") {
                c.insert("taskPushNotificationConfig".into(), p);
            }
        }
    }
}

/// Translates an SSE stream of JSON-RPC events for a client of version `to`, event by event
/// (bytes are held only until the blank line that ends their event).
pub struct SseTranslator {
    pending: Vec<u8>,
    to: ProtocolVersion,
    max_event: usize,
}

impl SseTranslator {
    pub fn new(to: ProtocolVersion, max_event: usize) -> SseTranslator {
        SseTranslator {
            pending: Vec::new(),
            to,
            max_event,
        }
    }

    /// The bytes ready to send after `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len() + 64);
        loop {
            match crate::tasks::event_end(&self.pending) {
                Some(end) => {
                    let ev: Vec<u8> = self.pending.drain(..end).collect();
                    let to = self.to;
                    crate::tasks::rewrite_event(
                        &ev,
                        |v| {
                            event(v, to);
                            true
                        },
                        &mut out,
                    );
                }
                None if self.pending.len() > self.max_event => {
                    out.append(&mut self.pending);
                    break;
                }
                None => break,
            }
        }
        out
    }

    /// What is left when the stream ends.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// The card of an agent that speaks only `agent` (already rewritten to the gateway): its
/// JSON-RPC interfaces are also offered in the other version, which the gateway translates.
/// Returns whether it added any.
pub fn card_offers_both(card: &mut Value, agent: ProtocolVersion) -> bool {
    let other = match agent {
        ProtocolVersion::V1_0 => "0.3",
        ProtocolVersion::V0_3 => "1.0",
        ProtocolVersion::Other => return false,
    };
    let Some(obj) = card.as_object_mut() else {
        return false;
    };
    let mut jsonrpc_urls: Vec<String> = Vec::new();
    if let Some(Value::Array(ifaces)) = obj.get("supportedInterfaces") {
        for i in ifaces {
            let binding = i.get("protocolBinding").and_then(Value::as_str);
            if binding.is_some_and(|b| b.eq_ignore_ascii_case("JSONRPC")) {
                if let Some(u) = i.get("url").and_then(Value::as_str) {
                    jsonrpc_urls.push(u.to_string());
                }
            }
        }
    }
    // A v0.3 card names its preferred interface in `url`.
    let v03_main = obj
        .get("url")
        .and_then(Value::as_str)
        .filter(|_| {
            obj.get("preferredTransport")
                .and_then(Value::as_str)
                .is_none_or(|t| t.eq_ignore_ascii_case("JSONRPC"))
        })
        .map(str::to_string);
    if let Some(u) = &v03_main {
        if !jsonrpc_urls.contains(u) {
            jsonrpc_urls.push(u.clone());
        }
    }
    let Some(first) = jsonrpc_urls.first().cloned() else {
        return false;
    };
    let ifaces = obj
        .entry("supportedInterfaces")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = ifaces.as_array_mut() else {
        return false;
    };
    let has = |list: &Vec<Value>, url: &str| {
        list.iter().any(|i| {
            i.get("url").and_then(Value::as_str) == Some(url)
                && i.get("protocolVersion").and_then(Value::as_str) == Some(other)
        })
    };
    let mut added = false;
    for url in &jsonrpc_urls {
        if !has(list, url) {
            list.push(serde_json::json!({
                "url": url, "protocolBinding": "JSONRPC", "protocolVersion": other,
            }));
            added = true;
        }
    }
    if other == "0.3" && !obj.contains_key("url") {
        obj.insert("url".into(), first.into());
        obj.insert("preferredTransport".into(), "JSONRPC".into());
        obj.entry("protocolVersion").or_insert("0.3.0".into());
        added = true;
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_v0_3_send_reaches_a_v1_0_agent_and_its_answer_comes_back_in_v0_3() {
        let mut req = json!({"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {
            "message": {"kind": "message", "messageId": "m", "role": "user", "contextId": "c",
                        "parts": [{"kind": "text", "text": "hi"},
                                  {"kind": "file", "file": {"uri": "https://x/f.pdf", "mimeType": "application/pdf", "name": "f.pdf"}},
                                  {"kind": "data", "data": {"a": 1}}]},
            "configuration": {"blocking": false, "acceptedOutputModes": ["text/plain"]}}});
        request(&mut req, Operation::SendMessage, ProtocolVersion::V1_0);
        assert_eq!(
            req,
            json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
                "message": {"messageId": "m", "role": "ROLE_USER", "contextId": "c",
                            "parts": [{"text": "hi"},
                                      {"url": "https://x/f.pdf", "mediaType": "application/pdf", "filename": "f.pdf"},
                                      {"data": {"a": 1}}]},
                "configuration": {"returnImmediately": true, "acceptedOutputModes": ["text/plain"]}}})
        );
        let mut resp = json!({"jsonrpc": "2.0", "id": 1, "result": {"task": {
            "id": "t", "contextId": "c",
            "status": {"state": "TASK_STATE_INPUT_REQUIRED", "timestamp": "2026-01-01T00:00:00Z",
                       "message": {"messageId": "a", "role": "ROLE_AGENT", "parts": [{"text": "more?"}]}},
            "artifacts": [{"artifactId": "x", "parts": [{"data": 5}, {"raw": "aGk=", "mediaType": "text/plain"}]}],
            "history": [{"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi"}]}]}}});
        response(&mut resp, Operation::SendMessage, ProtocolVersion::V0_3);
        let t = &resp["result"];
        assert_eq!(t["kind"], "task");
        assert_eq!(t["status"]["state"], "input-required");
        assert_eq!(t["status"]["message"]["role"], "agent");
        assert_eq!(t["status"]["message"]["kind"], "message");
        assert_eq!(
            t["status"]["message"]["parts"][0],
            json!({"kind": "text", "text": "more?"})
        );
        assert_eq!(
            t["artifacts"][0]["parts"],
            json!([{"kind": "data", "data": {"value": 5}, "metadata": {"data_part_compat": true}},
                   {"kind": "file", "file": {"bytes": "aGk=", "mimeType": "text/plain"}}])
        );
        assert_eq!(t["history"][0]["role"], "user");
        // And back: the same v1.0 shape (the compat flag undone).
        let mut back = json!({"result": t.clone()});
        response(&mut back, Operation::SendMessage, ProtocolVersion::V1_0);
        assert_eq!(
            back["result"]["task"]["status"]["state"],
            "TASK_STATE_INPUT_REQUIRED"
        );
        assert_eq!(
            back["result"]["task"]["artifacts"][0]["parts"][0],
            json!({"data": 5})
        );
        assert!(back["result"]["task"].get("kind").is_none());
    }

    #[test]
    fn stream_events_change_shape_both_ways() {
        let mut ev = json!({"jsonrpc": "2.0", "id": 2, "result": {"statusUpdate": {
            "taskId": "t", "contextId": "c", "status": {"state": "TASK_STATE_COMPLETED"}}}});
        event(&mut ev, ProtocolVersion::V0_3);
        assert_eq!(
            ev["result"],
            json!({"taskId": "t", "contextId": "c", "status": {"state": "completed"},
                   "kind": "status-update", "final": true})
        );
        event(&mut ev, ProtocolVersion::V1_0);
        assert_eq!(
            ev["result"],
            json!({"statusUpdate": {"taskId": "t", "contextId": "c",
                                    "status": {"state": "TASK_STATE_COMPLETED"}}})
        );
        let mut art = json!({"result": {"kind": "artifact-update", "taskId": "t", "append": true,
                                         "artifact": {"artifactId": "a", "parts": [{"kind": "text", "text": "x"}]}}});
        event(&mut art, ProtocolVersion::V1_0);
        assert_eq!(
            art["result"]["artifactUpdate"]["artifact"]["parts"][0],
            json!({"text": "x"})
        );
        assert_eq!(art["result"]["artifactUpdate"]["append"], true);
        let mut working =
            json!({"result": {"statusUpdate": {"status": {"state": "TASK_STATE_WORKING"}}}});
        event(&mut working, ProtocolVersion::V0_3);
        assert_eq!(working["result"]["final"], false);
        // A v1.0 client's GetTask to a v0.3 agent.
        let mut get = json!({"jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": {"id": "t", "historyLength": 2}});
        request(&mut get, Operation::GetTask, ProtocolVersion::V0_3);
        assert_eq!(get["method"], "tasks/get");
        assert_eq!(get["params"], json!({"id": "t", "historyLength": 2}));
        assert_eq!(state_v1("auth-required"), "TASK_STATE_AUTH_REQUIRED");
        assert_eq!(state_v03("TASK_STATE_UNSPECIFIED"), "unknown");
    }

    #[test]
    fn sse_streams_are_translated_event_by_event() {
        let stream = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"task\":{\"id\":\"t\",\"status\":{\"state\":\"TASK_STATE_WORKING\"}}}}\n\n: ping\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"statusUpdate\":{\"taskId\":\"t\",\"status\":{\"state\":\"TASK_STATE_COMPLETED\"}}}}\n\n";
        for cut in [1, 20, 100, stream.len() - 1] {
            let mut t = SseTranslator::new(ProtocolVersion::V0_3, 1 << 16);
            let mut out = t.feed(&stream.as_bytes()[..cut]);
            out.extend(t.feed(&stream.as_bytes()[cut..]));
            out.extend(t.finish());
            let out = String::from_utf8(out).unwrap();
            let events: Vec<Value> = out
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            assert_eq!(events.len(), 2, "{out}");
            assert_eq!(events[0]["result"]["kind"], "task");
            assert_eq!(events[0]["result"]["status"]["state"], "working");
            assert_eq!(events[1]["result"]["kind"], "status-update");
            assert_eq!(events[1]["result"]["final"], true);
            assert!(out.contains(": ping\n\n"), "{out}");
        }
    }

    #[test]
    fn cards_offer_the_other_version_on_json_rpc() {
        let mut card = json!({"name": "x", "supportedInterfaces": [
            {"url": "http://gw/a/jsonrpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": "http://gw/a/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"}]});
        assert!(card_offers_both(&mut card, ProtocolVersion::V1_0));
        let ifaces = card["supportedInterfaces"].as_array().unwrap();
        assert_eq!(ifaces.len(), 3);
        assert_eq!(
            ifaces[2],
            json!({"url": "http://gw/a/jsonrpc", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"})
        );
        assert_eq!(card["url"], "http://gw/a/jsonrpc");
        assert_eq!(card["preferredTransport"], "JSONRPC");
        assert!(
            !card_offers_both(&mut card, ProtocolVersion::V1_0),
            "idempotent"
        );
        let mut old = json!({"name": "x", "url": "http://gw/b", "preferredTransport": "JSONRPC", "protocolVersion": "0.3.0"});
        assert!(card_offers_both(&mut old, ProtocolVersion::V0_3));
        assert_eq!(
            old["supportedInterfaces"],
            json!([{"url": "http://gw/b", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}])
        );
    }
}
