//! JSON-RPC message helpers. Messages are forwarded as `serde_json::Value` so that fields this
//! gateway does not know (newer spec revisions, `_meta`, vendor extensions) pass unchanged;
//! error bodies are built from rmcp's types.

use rmcp::model::{ErrorCode, ErrorData, JsonRpcError, RequestId};
use serde_json::{json, Map, Value};

pub use rmcp::model::ErrorCode as Code;

/// What a JSON-RPC message is, by its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
    Invalid,
}

pub fn kind(msg: &Value) -> Kind {
    let Some(obj) = msg.as_object() else {
        return Kind::Invalid;
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Kind::Invalid;
    }
    let has_id = obj
        .get("id")
        .is_some_and(|id| id.is_string() || id.is_number());
    match (obj.get("method").and_then(Value::as_str), has_id) {
        (Some(_), true) => Kind::Request,
        (Some(_), false) if obj.get("id").is_none() => Kind::Notification,
        (None, true) if obj.contains_key("result") || obj.contains_key("error") => Kind::Response,
        _ => Kind::Invalid,
    }
}

pub fn method(msg: &Value) -> &str {
    msg.get("method").and_then(Value::as_str).unwrap_or("")
}

pub fn params(msg: &Value) -> Option<&Map<String, Value>> {
    msg.get("params").and_then(Value::as_object)
}

pub fn params_mut(msg: &mut Value) -> &mut Map<String, Value> {
    let obj = msg
        .as_object_mut()
        .expect("a JSON-RPC message is an object");
    let p = obj
        .entry("params")
        .or_insert_with(|| Value::Object(Map::new()));
    if !p.is_object() {
        *p = Value::Object(Map::new());
    }
    p.as_object_mut().expect("just made an object")
}

pub fn id(msg: &Value) -> Value {
    msg.get("id").cloned().unwrap_or(Value::Null)
}

pub fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn error(id: Value, code: ErrorCode, message: impl Into<String>) -> Value {
    error_with(id, code, message, None)
}

pub fn error_with(
    id: Value,
    code: ErrorCode,
    message: impl Into<String>,
    data: Option<Value>,
) -> Value {
    let id: Option<RequestId> = serde_json::from_value(id).ok();
    let err = JsonRpcError::new(
        id,
        ErrorData {
            code,
            message: message.into().into(),
            data,
        },
    );
    serde_json::to_value(err).unwrap_or_else(|_| json!({"jsonrpc": "2.0", "id": null}))
}

/// A request id for the gateway's own requests to a target, unique in this process and
/// unlikely to meet another replica's (a random prefix): upstream sessions can be shared by
/// several clients' requests (and replicas), whose own ids could collide.
pub fn gateway_id() -> Value {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let p = PREFIX.get_or_init(|| fastrand::u32(..));
    Value::String(format!(
        "sy-{p:08x}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Is this response an error response?
pub fn is_error(msg: &Value) -> bool {
    msg.get("error").is_some()
}

/// A server-to-client request id, rewritten so the client's answer can be routed back to the
/// target that asked: `"sy~<target>~<original id as JSON>"`.
pub fn tag_server_id(target: &str, id: &Value) -> Value {
    Value::String(format!("sy~{target}~{id}"))
}

/// The target and original id inside a tagged id.
pub fn untag_server_id(id: &Value) -> Option<(&str, Value)> {
    let s = id.as_str()?.strip_prefix("sy~")?;
    let (target, original) = s.split_once('~')?;
    let id = match serde_json::from_str(original).ok()? {
        // serde_json's float parsing (without its `float_roundtrip` feature) can miss the
        // nearest f64 by an ulp, so a float id (or an integer too large for 64 bits) would
        // come back changed; the standard library's parser is exact.
        Value::Number(n) if n.is_f64() => {
            Value::Number(serde_json::Number::from_f64(original.parse().ok()?)?)
        }
        id => id,
    };
    Some((target, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `mcp_jsonrpc` fuzz target (fuzz/corpus/mcp_jsonrpc/crash-big-integer-id):
    /// an upstream's request id too large for 64 bits is a float, and came back from the
    /// tag round trip an ulp off.
    #[test]
    fn server_ids_round_trip_exactly() {
        for text in [
            "1510102575831388313840",
            "1.5101025758313845e26",
            "0.1",
            "-7",
            "\"x~y\"",
        ] {
            let id: Value = serde_json::from_str(text).unwrap();
            let tagged = tag_server_id("alpha", &id);
            assert_eq!(untag_server_id(&tagged), Some(("alpha", id)), "{text}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
            Kind::Request
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Kind::Notification
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":"a","result":{}})),
            Kind::Response
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"x"}})),
            Kind::Response
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"1.0","id":1,"method":"ping"})),
            Kind::Invalid
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":null,"method":"ping"})),
            Kind::Invalid
        );
        assert_eq!(kind(&json!([1])), Kind::Invalid);
    }

    #[test]
    fn server_ids_round_trip() {
        for id in [json!(7), json!("abc~def"), json!(-1)] {
            let tagged = tag_server_id("everything", &id);
            assert_eq!(untag_server_id(&tagged), Some(("everything", id)));
        }
        assert_eq!(untag_server_id(&json!(3)), None);
        assert_eq!(untag_server_id(&json!("plain")), None);
    }

    #[test]
    fn errors_carry_code_and_id() {
        let e = error(json!(5), Code::METHOD_NOT_FOUND, "no such method");
        assert_eq!(e["id"], 5);
        assert_eq!(e["error"]["code"], -32601);
        let e = error(Value::Null, Code::PARSE_ERROR, "bad json");
        assert!(e.get("id").is_none() || e["id"].is_null());
    }
}
