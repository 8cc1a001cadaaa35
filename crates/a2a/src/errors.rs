//! The gateway's own errors (agent unreachable, timed out, request refused) written in the
//! shape the caller's binding expects, so an A2A client reports them as it would the agent's:
//! a JSON-RPC error object, an RFC 9457 problem document for HTTP+JSON (v1.0 names RFC 9457
//! for that binding), a trailers-only gRPC status.

use serde_json::Value;

use crate::classify::ProtocolVersion;
use crate::jsonrpc;

/// How errors are written for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorDialect {
    /// With the request's id (null until the body was read).
    JsonRpc {
        id: Value,
    },
    HttpJson {
        version: ProtocolVersion,
    },
    Grpc,
}

/// An error response, protocol-shaped; the caller turns it into an HTTP response.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorResponse {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra response headers (gRPC's status travels in them).
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl ErrorDialect {
    /// The response for a gateway error: its HTTP `status`, stable `code` and `message`.
    pub fn response(&self, status: u16, code: &str, message: &str) -> ErrorResponse {
        match self {
            ErrorDialect::JsonRpc { id } => {
                let rpc_code = match status {
                    500.. => jsonrpc::INTERNAL_ERROR,
                    // No agent serves the call here.
                    404 => jsonrpc::METHOD_NOT_FOUND,
                    _ => jsonrpc::INVALID_REQUEST,
                };
                let data = serde_json::json!({"code": code, "httpStatus": status});
                ErrorResponse {
                    status,
                    content_type: "application/json",
                    headers: Vec::new(),
                    body: jsonrpc::error_body(id, rpc_code, message, Some(data)),
                }
            }
            ErrorDialect::HttpJson { .. } => ErrorResponse {
                status,
                content_type: "application/problem+json",
                headers: Vec::new(),
                body: problem_body(status, code, message),
            },
            ErrorDialect::Grpc => ErrorResponse {
                // gRPC answers errors with HTTP 200 and the status in a trailers-only
                // response's headers.
                status: 200,
                content_type: "application/grpc",
                headers: vec![
                    ("grpc-status", grpc_status(status).to_string()),
                    ("grpc-message", percent_encode(message)),
                ],
                body: Vec::new(),
            },
        }
    }
}

/// The A2A `TaskNotFoundError` as an agent answers it (the official SDK's shapes): JSON-RPC
/// -32001 (HTTP 200), HTTP+JSON 404 with a `google.rpc.Status` body, gRPC NOT_FOUND. The
/// gateway answers it for a task id it did not seal.
pub fn task_not_found(dialect: &ErrorDialect) -> ErrorResponse {
    let info = serde_json::json!([{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "TASK_NOT_FOUND",
        "domain": "a2a-protocol.org",
        "metadata": {},
    }]);
    match dialect {
        ErrorDialect::JsonRpc { id } => ErrorResponse {
            status: 200,
            content_type: "application/json",
            headers: Vec::new(),
            body: jsonrpc::error_body(id, jsonrpc::TASK_NOT_FOUND, "Task not found", Some(info)),
        },
        ErrorDialect::HttpJson { .. } => ErrorResponse {
            status: 404,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::json!({"error": {
                "code": 404, "status": "NOT_FOUND", "message": "Task not found", "details": info,
            }})
            .to_string()
            .into_bytes(),
        },
        ErrorDialect::Grpc => ErrorResponse {
            status: 200,
            content_type: "application/grpc",
            headers: vec![
                ("grpc-status", "5".into()),
                ("grpc-message", "Task not found".into()),
            ],
            body: Vec::new(),
        },
    }
}

/// An RFC 9457 problem document; `code` is an extension member with the gateway's stable code.
pub fn problem_body(status: u16, code: &str, detail: &str) -> Vec<u8> {
    serde_json::json!({
        "type": "about:blank",
        "title": reason(status),
        "status": status,
        "detail": detail,
        "code": code,
    })
    .to_string()
    .into_bytes()
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The gRPC status code closest to an HTTP status (the mapping gRPC's HTTP gateways use).
fn grpc_status(status: u16) -> u8 {
    match status {
        400 => 3,        // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        404 => 12,       // UNIMPLEMENTED: no route serves the method
        408 | 504 => 4,  // DEADLINE_EXCEEDED
        413 | 429 => 8,  // RESOURCE_EXHAUSTED
        502 | 503 => 14, // UNAVAILABLE
        _ => 13,         // INTERNAL
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Status-Message").
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rpc_errors_echo_the_id() {
        let r = ErrorDialect::JsonRpc {
            id: Value::from("abc"),
        }
        .response(503, "upstream_unavailable", "agent down");
        assert_eq!(r.status, 503);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["id"], "abc");
        assert_eq!(v["error"]["code"], jsonrpc::INTERNAL_ERROR);
        assert_eq!(v["error"]["message"], "agent down");
        assert_eq!(v["error"]["data"]["code"], "upstream_unavailable");
    }

    #[test]
    fn json_rpc_refusals_keep_the_http_status_in_data() {
        let d = ErrorDialect::JsonRpc { id: Value::from(3) };
        for (status, code) in [
            (401, jsonrpc::INVALID_REQUEST),
            (403, jsonrpc::INVALID_REQUEST),
            (404, jsonrpc::METHOD_NOT_FOUND),
            (429, jsonrpc::INVALID_REQUEST),
        ] {
            let r = d.response(status, "x", "refused");
            assert_eq!(r.status, status);
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["error"]["code"], code, "{status}");
            assert_eq!(v["error"]["data"]["httpStatus"], status);
            assert_eq!(v["id"], 3);
        }
    }

    #[test]
    fn http_json_errors_are_problem_documents() {
        let r = ErrorDialect::HttpJson {
            version: ProtocolVersion::V1_0,
        }
        .response(504, "upstream_timeout", "the agent did not answer in time");
        assert_eq!(r.content_type, "application/problem+json");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["status"], 504);
        assert_eq!(v["title"], "Gateway Timeout");
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["code"], "upstream_timeout");
    }

    #[test]
    fn grpc_errors_are_trailers_only() {
        let r = ErrorDialect::Grpc.response(503, "upstream_unavailable", "agent down: 100%");
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert!(r.headers.contains(&("grpc-status", "14".into())));
        assert!(r
            .headers
            .contains(&("grpc-message", "agent down: 100%25".into())));
    }
}
