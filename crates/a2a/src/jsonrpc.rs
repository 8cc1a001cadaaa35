//! The JSON-RPC 2.0 envelope of an A2A call: read without building a tree of the whole body
//! (a message may carry large file parts), only the fields the gateway acts on.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::classify::{Operation, ProtocolVersion};

/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: JSON, but not a request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: the method is not available (no agent serves the call at this path).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: the method's parameters are not acceptable (a refused push-notification URL).
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: the server failed (the gateway could not reach the agent).
pub const INTERNAL_ERROR: i64 = -32603;
/// A2A: the task does not exist or is not accessible.
pub const TASK_NOT_FOUND: i64 = -32001;

/// A JSON-RPC request, as far as the gateway reads it.
#[derive(Debug)]
pub struct Request<'a> {
    /// The request id, echoed in any answer the gateway writes itself.
    pub id: Value,
    pub method: String,
    pub operation: Operation,
    /// The version the method name belongs to (`message/send` is 0.3, `SendMessage` 1.0).
    pub method_version: Option<ProtocolVersion>,
    /// The task the call names: `params.id` (get, cancel, resubscribe), `params.taskId` /
    /// `params.message.taskId` (push configs, a follow-up message).
    pub task_id: Option<String>,
    pub context_id: Option<String>,
    /// The skill the message names in its `metadata` (`skillId` or `skill`), if any.
    pub skill: Option<String>,
    /// The parameters, unparsed (for the push-notification check), borrowed from the body.
    pub params: Option<&'a RawValue>,
}

/// Why a body is not an acceptable JSON-RPC request.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    /// The request id, when it could be read.
    pub id: Value,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<std::borrow::Cow<'a, str>>,
    method: Option<Value>,
    #[serde(default = "missing_id")]
    id: Value,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// A request without `id` (a notification) keeps `null` as its id in answers.
fn missing_id() -> Value {
    Value::Null
}

/// Ids the gateway reads from `params`; everything else in them is skipped unparsed.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ParamIds {
    id: Option<Value>,
    task_id: Option<String>,
    context_id: Option<String>,
    message: Option<MessageIds>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MessageIds {
    task_id: Option<String>,
    context_id: Option<String>,
    metadata: Option<MessageMetadata>,
}

/// A2A defines no field naming the skill a message is for; the message's `metadata` carries
/// one by convention (`skillId`, or `skill`).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MessageMetadata {
    skill_id: Option<Value>,
    skill: Option<Value>,
}

/// Reads a JSON-RPC request: -32700 when the body is not JSON, -32600 when it is not a
/// single request object (A2A defines no batches).
pub fn parse_request(body: &[u8]) -> Result<Request<'_>, RpcError> {
    let parse_error = |e: &dyn std::fmt::Display| RpcError {
        code: PARSE_ERROR,
        message: format!("Parse error: {e}"),
        id: Value::Null,
    };
    let invalid = |message: &str, id: Value| RpcError {
        code: INVALID_REQUEST,
        message: format!("Invalid Request: {message}"),
        id,
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') || (first.is_some() && first != Some(&b'{')) {
        // Not an object: JSON at all? (One scan; a request object is read in one scan too.)
        serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|e| parse_error(&e))?;
        return Err(invalid(
            match first {
                Some(b'[') => "batch requests are not part of A2A",
                _ => "the request must be a JSON object",
            },
            Value::Null,
        ));
    }
    let env: Envelope = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            invalid(&format!("not a JSON-RPC request ({e})"), Value::Null)
        }
        _ => parse_error(&e),
    })?;
    let id = match env.id {
        id @ (Value::String(_) | Value::Number(_) | Value::Null) => id,
        _ => {
            return Err(invalid(
                "`id` must be a string, a number or null",
                Value::Null,
            ))
        }
    };
    if env.jsonrpc.as_deref() != Some("2.0") {
        return Err(invalid("`jsonrpc` must be \"2.0\"", id));
    }
    let method = match env.method {
        Some(Value::String(m)) => m,
        _ => return Err(invalid("`method` must be a string", id)),
    };
    let (operation, method_version) = Operation::from_jsonrpc(&method);
    let ids: ParamIds = env
        .params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    let message = ids.message.unwrap_or_default();
    let skill = message
        .metadata
        .and_then(|m| m.skill_id.or(m.skill))
        .and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s),
            _ => None,
        });
    // `params.id` is the task for get/cancel/resubscribe (both versions).
    let task_id = match operation {
        Operation::GetTask | Operation::CancelTask | Operation::SubscribeToTask => match ids.id {
            Some(Value::String(s)) => Some(s),
            _ => ids.task_id,
        },
        _ => ids.task_id.or(message.task_id),
    };
    Ok(Request {
        id,
        method,
        operation,
        method_version,
        task_id,
        context_id: ids.context_id.or(message.context_id),
        skill,
        params: env.params,
    })
}

/// A JSON-RPC error response body.
pub fn error_body(id: &Value, code: i64, message: &str, data: Option<Value>) -> Vec<u8> {
    let mut error = serde_json::Map::new();
    error.insert("code".into(), code.into());
    error.insert("message".into(), message.into());
    if let Some(d) = data {
        error.insert("data".into(), d);
    }
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skill_a_message_names_in_its_metadata_is_read() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"hi"}],"metadata":{"skillId":"translate"}}}}"#;
        assert_eq!(
            parse_request(body).unwrap().skill.as_deref(),
            Some("translate")
        );
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"message/send","params":{"message":{"messageId":"m","role":"user","parts":[],"metadata":{"skill":"summarize"}}}}"#;
        assert_eq!(
            parse_request(body).unwrap().skill.as_deref(),
            Some("summarize")
        );
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"message/send","params":{"message":{"messageId":"m","role":"user","parts":[],"metadata":{"skillId":5}}}}"#;
        assert_eq!(parse_request(body).unwrap().skill, None);
    }

    #[test]
    fn reads_a_v0_3_message_send() {
        // From the v0.3 specification's `message/send` example.
        let body = br#"{
          "jsonrpc": "2.0",
          "id": 1,
          "method": "message/send",
          "params": {
            "message": {
              "role": "user",
              "parts": [{"kind": "text", "text": "tell me a joke"}],
              "messageId": "9229e770-767c-417b-a0b0-f0741243c589",
              "taskId": "363422be-b0f9-4692-a24d-278670e7c7f1",
              "contextId": "c295ea44-7543-4f78-b524-7a38915ad6e4"
            },
            "metadata": {}
          }
        }"#;
        let r = parse_request(body).unwrap();
        assert_eq!(r.id, Value::from(1));
        assert_eq!(r.method, "message/send");
        assert_eq!(r.operation, Operation::SendMessage);
        assert_eq!(r.method_version, Some(ProtocolVersion::V0_3));
        assert_eq!(
            r.task_id.as_deref(),
            Some("363422be-b0f9-4692-a24d-278670e7c7f1")
        );
        assert_eq!(
            r.context_id.as_deref(),
            Some("c295ea44-7543-4f78-b524-7a38915ad6e4")
        );
    }

    #[test]
    fn reads_v1_0_task_calls() {
        let r = parse_request(
            br#"{"jsonrpc":"2.0","id":"req-7","method":"GetTask","params":{"id":"task-1","historyLength":10}}"#,
        )
        .unwrap();
        assert_eq!(r.operation, Operation::GetTask);
        assert_eq!(r.method_version, Some(ProtocolVersion::V1_0));
        assert_eq!(r.task_id.as_deref(), Some("task-1"));
        assert_eq!(r.id, Value::from("req-7"));
        let r = parse_request(
            br#"{"jsonrpc":"2.0","id":2,"method":"CreateTaskPushNotificationConfig","params":{"taskId":"task-2","url":"https://hooks.example.com/a2a"}}"#,
        )
        .unwrap();
        assert_eq!(r.operation, Operation::CreatePushConfig);
        assert_eq!(r.task_id.as_deref(), Some("task-2"));
        let r = parse_request(
            br#"{"jsonrpc":"2.0","id":3,"method":"tasks/resubscribe","params":{"id":"t-3"}}"#,
        )
        .unwrap();
        assert_eq!(r.operation, Operation::SubscribeToTask);
        assert_eq!(r.task_id.as_deref(), Some("t-3"));
    }

    #[test]
    fn malformed_bodies_get_parse_error_or_invalid_request() {
        let code = |b: &[u8]| parse_request(b).unwrap_err().code;
        assert_eq!(code(b"{\"jsonrpc\": \"2.0\", "), PARSE_ERROR);
        assert_eq!(code(b"not json"), PARSE_ERROR);
        assert_eq!(code(b""), PARSE_ERROR);
        assert_eq!(
            code(br#"[{"jsonrpc":"2.0","id":1,"method":"tasks/get"}]"#),
            INVALID_REQUEST
        );
        assert_eq!(code(b"42"), INVALID_REQUEST);
        assert_eq!(
            code(br#"{"jsonrpc":"1.0","id":1,"method":"tasks/get"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":{"a":1},"method":"tasks/get"}"#),
            INVALID_REQUEST
        );
        // The id is echoed when it could be read.
        let e = parse_request(br#"{"jsonrpc":"2.0","id":"x","params":{}}"#).unwrap_err();
        assert_eq!((e.code, e.id), (INVALID_REQUEST, Value::from("x")));
    }

    #[test]
    fn unknown_methods_pass_as_unknown() {
        let r = parse_request(br#"{"jsonrpc":"2.0","id":1,"method":"x/custom","params":[1,2]}"#)
            .unwrap();
        assert_eq!(r.operation, Operation::Unknown);
        assert_eq!(r.method_version, None);
        assert_eq!(r.task_id, None);
    }

    #[test]
    fn error_bodies_are_json_rpc_responses() {
        let b = error_body(&Value::from(5), INTERNAL_ERROR, "agent unavailable", None);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 5);
        assert_eq!(v["error"]["code"], INTERNAL_ERROR);
        assert!(v["error"].get("data").is_none());
    }
}
