//! What an A2A request is, from its head: the binding it uses, the operation, the protocol
//! version and, where the path names it, the task. JSON-RPC calls name their operation in the
//! body ([`crate::jsonrpc`]); everything else is decided here without reading it.
//!
//! HTTP+JSON paths (v1.0 `a2a.proto` `google.api.http` options; v0.3 is the same set under
//! `/v1` plus `GET /v1/card`):
//!
//! | operation | method and path (after the interface's base path and optional `/{tenant}`) |
//! |---|---|
//! | SendMessage | `POST /message:send` |
//! | SendStreamingMessage | `POST /message:stream` |
//! | GetTask | `GET /tasks/{id}` |
//! | ListTasks | `GET /tasks` |
//! | CancelTask | `POST /tasks/{id}:cancel` |
//! | SubscribeToTask | `GET` or `POST /tasks/{id}:subscribe` |
//! | Create / List TaskPushNotificationConfig(s) | `POST` / `GET /tasks/{id}/pushNotificationConfigs` |
//! | Get / Delete TaskPushNotificationConfig | `GET` / `DELETE /tasks/{id}/pushNotificationConfigs/{config}` |
//! | GetExtendedAgentCard | `GET /extendedAgentCard` (v1.0), `GET /v1/card` (v0.3) |
//!
//! Interfaces are mounted under any base path, so paths are matched by their ending.

use http::Method;

/// The protocol version a request speaks, from `A2A-Version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolVersion {
    V0_3,
    V1_0,
    /// A version this gateway does not know (a future minor or major): forwarded unchanged,
    /// the agent decides.
    Other,
}

impl ProtocolVersion {
    /// The version a header value names; no header means 0.3 (the spec's rule for clients
    /// that predate the header).
    pub fn from_header(value: Option<&[u8]>) -> ProtocolVersion {
        let Some(v) = value else {
            return ProtocolVersion::V0_3;
        };
        let v = std::str::from_utf8(v).unwrap_or("").trim();
        if v.is_empty() {
            return ProtocolVersion::V0_3;
        }
        let mut parts = v.split('.');
        match (parts.next(), parts.next()) {
            (Some("0"), Some("3")) => ProtocolVersion::V0_3,
            (Some("1"), Some("0") | None) => ProtocolVersion::V1_0,
            _ => ProtocolVersion::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V0_3 => "0.3",
            ProtocolVersion::V1_0 => "1.0",
            ProtocolVersion::Other => "other",
        }
    }
}

/// The three bindings of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    JsonRpc,
    HttpJson,
    Grpc,
}

impl Binding {
    /// The name agent cards use (`protocolBinding`, v0.3 `transport`).
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::JsonRpc => "JSONRPC",
            Binding::HttpJson => "HTTP+JSON",
            Binding::Grpc => "GRPC",
        }
    }

    /// A card's binding name; case-insensitive, as cards in the wild vary (`jsonrpc`,
    /// `REST` was the name in early 0.3 drafts).
    pub fn parse(s: &str) -> Option<Binding> {
        match s.to_ascii_uppercase().as_str() {
            "JSONRPC" | "JSON-RPC" => Some(Binding::JsonRpc),
            "HTTP+JSON" | "REST" | "HTTP_JSON" => Some(Binding::HttpJson),
            "GRPC" => Some(Binding::Grpc),
            _ => None,
        }
    }
}

/// The bindings the gateway proxies for a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingSet {
    pub json_rpc: bool,
    pub http_json: bool,
    pub grpc: bool,
}

impl BindingSet {
    pub const ALL: BindingSet = BindingSet {
        json_rpc: true,
        http_json: true,
        grpc: true,
    };

    pub fn contains(self, b: Binding) -> bool {
        match b {
            Binding::JsonRpc => self.json_rpc,
            Binding::HttpJson => self.http_json,
            Binding::Grpc => self.grpc,
        }
    }
}

/// An A2A operation, by its v1.0 name (one vocabulary for every binding and version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    SendMessage,
    SendStreamingMessage,
    GetTask,
    ListTasks,
    CancelTask,
    SubscribeToTask,
    CreatePushConfig,
    GetPushConfig,
    ListPushConfigs,
    DeletePushConfig,
    GetExtendedAgentCard,
    /// `GET` on a well-known card path.
    GetAgentCard,
    /// Not an operation this gateway knows (a newer method, an extension's): forwarded.
    Unknown,
}

impl Operation {
    /// The v1.0 name: bounded, so it can label a metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::SendMessage => "SendMessage",
            Operation::SendStreamingMessage => "SendStreamingMessage",
            Operation::GetTask => "GetTask",
            Operation::ListTasks => "ListTasks",
            Operation::CancelTask => "CancelTask",
            Operation::SubscribeToTask => "SubscribeToTask",
            Operation::CreatePushConfig => "CreateTaskPushNotificationConfig",
            Operation::GetPushConfig => "GetTaskPushNotificationConfig",
            Operation::ListPushConfigs => "ListTaskPushNotificationConfigs",
            Operation::DeletePushConfig => "DeleteTaskPushNotificationConfig",
            Operation::GetExtendedAgentCard => "GetExtendedAgentCard",
            Operation::GetAgentCard => "GetAgentCard",
            Operation::Unknown => "unknown",
        }
    }

    /// The answer is an SSE stream (HTTP bindings) or a server stream (gRPC).
    pub fn streams(self) -> bool {
        matches!(
            self,
            Operation::SendStreamingMessage | Operation::SubscribeToTask
        )
    }

    /// The request may carry a push-notification callback URL.
    pub fn may_carry_push_config(self) -> bool {
        matches!(
            self,
            Operation::SendMessage | Operation::SendStreamingMessage | Operation::CreatePushConfig
        )
    }

    /// The answer is an agent card (to be rewritten).
    pub fn returns_card(self) -> bool {
        matches!(
            self,
            Operation::GetAgentCard | Operation::GetExtendedAgentCard
        )
    }

    /// A JSON-RPC method name of either version, and the version it belongs to.
    pub fn from_jsonrpc(method: &str) -> (Operation, Option<ProtocolVersion>) {
        use Operation::*;
        use ProtocolVersion::{V0_3, V1_0};
        let (op, v) = match method {
            "SendMessage" => (SendMessage, V1_0),
            "SendStreamingMessage" => (SendStreamingMessage, V1_0),
            "GetTask" => (GetTask, V1_0),
            "ListTasks" => (ListTasks, V1_0),
            "CancelTask" => (CancelTask, V1_0),
            "SubscribeToTask" => (SubscribeToTask, V1_0),
            "CreateTaskPushNotificationConfig" => (CreatePushConfig, V1_0),
            "GetTaskPushNotificationConfig" => (GetPushConfig, V1_0),
            "ListTaskPushNotificationConfigs" => (ListPushConfigs, V1_0),
            "DeleteTaskPushNotificationConfig" => (DeletePushConfig, V1_0),
            "GetExtendedAgentCard" => (GetExtendedAgentCard, V1_0),
            "message/send" => (SendMessage, V0_3),
            "message/stream" => (SendStreamingMessage, V0_3),
            "tasks/get" => (GetTask, V0_3),
            "tasks/cancel" => (CancelTask, V0_3),
            "tasks/resubscribe" => (SubscribeToTask, V0_3),
            "tasks/pushNotificationConfig/set" => (CreatePushConfig, V0_3),
            "tasks/pushNotificationConfig/get" => (GetPushConfig, V0_3),
            "tasks/pushNotificationConfig/list" => (ListPushConfigs, V0_3),
            "tasks/pushNotificationConfig/delete" => (DeletePushConfig, V0_3),
            "agent/getAuthenticatedExtendedCard" => (GetExtendedAgentCard, V0_3),
            _ => return (Unknown, None),
        };
        (op, Some(v))
    }

    /// A gRPC method of `lf.a2a.v1.A2AService` (v1.0) or `a2a.v1.A2AService` (v0.3).
    fn from_grpc(method: &str) -> Operation {
        use Operation::*;
        match method {
            "SendMessage" => SendMessage,
            "SendStreamingMessage" => SendStreamingMessage,
            "GetTask" => GetTask,
            "ListTasks" => ListTasks,
            "CancelTask" => CancelTask,
            "SubscribeToTask" | "TaskSubscription" => SubscribeToTask,
            "CreateTaskPushNotificationConfig" => CreatePushConfig,
            "GetTaskPushNotificationConfig" => GetPushConfig,
            "ListTaskPushNotificationConfigs" | "ListTaskPushNotificationConfig" => ListPushConfigs,
            "DeleteTaskPushNotificationConfig" => DeletePushConfig,
            "GetExtendedAgentCard" | "GetAgentCard" => GetExtendedAgentCard,
            _ => Unknown,
        }
    }
}

/// One request, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub binding: Binding,
    pub operation: Operation,
    pub version: ProtocolVersion,
    /// The task the request names, when its path does (HTTP+JSON).
    pub task_id: Option<String>,
}

/// What the head alone says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadClass {
    /// Fully classified (HTTP+JSON, gRPC, a card fetch).
    Known(Call),
    /// A `POST` that is not an HTTP+JSON path: a JSON-RPC call, whose method is in the body.
    JsonRpc,
    /// Not recognizably A2A (a `GET` on some other path): forwarded as it is.
    Other,
}

/// Classifies a request from its method, path, `Content-Type` and `A2A-Version`.
pub fn classify_http(
    method: &Method,
    path: &str,
    content_type: Option<&[u8]>,
    version: ProtocolVersion,
) -> HeadClass {
    let known = |operation, task_id: Option<&str>, binding| {
        HeadClass::Known(Call {
            binding,
            operation,
            version,
            task_id: task_id.map(str::to_string),
        })
    };
    if content_type.is_some_and(|c| c.starts_with(b"application/grpc")) {
        if let Some(op) = grpc_operation(path) {
            return known(op, None, Binding::Grpc);
        }
        return HeadClass::Other;
    }
    if method == Method::GET && crate::CARD_PATHS.iter().any(|p| path.ends_with(p)) {
        return known(Operation::GetAgentCard, None, Binding::HttpJson);
    }
    if let Some((op, task)) = rest_operation(method, path) {
        return known(op, task, Binding::HttpJson);
    }
    if method == Method::POST {
        return HeadClass::JsonRpc;
    }
    HeadClass::Other
}

/// `/{package}.A2AService/{Method}` of either version's package.
fn grpc_operation(path: &str) -> Option<Operation> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    match service {
        "lf.a2a.v1.A2AService" | "a2a.v1.A2AService" => Some(Operation::from_grpc(method)),
        _ => None,
    }
}

/// An HTTP+JSON operation from the end of the path, and the task id the path names.
fn rest_operation<'p>(method: &Method, path: &'p str) -> Option<(Operation, Option<&'p str>)> {
    use Operation::*;
    let path = path.trim_end_matches('/');
    let post = method == Method::POST;
    let get = method == Method::GET;
    if path.ends_with("/message:send") && post {
        return Some((SendMessage, None));
    }
    if path.ends_with("/message:stream") && post {
        return Some((SendStreamingMessage, None));
    }
    if get && (path.ends_with("/extendedAgentCard") || path.ends_with("/v1/card")) {
        return Some((GetExtendedAgentCard, None));
    }
    if get && (path.ends_with("/tasks") || path == "tasks") {
        return Some((ListTasks, None));
    }
    // The rest name a task: `.../tasks/{id}[:verb][/pushNotificationConfigs[/{config}]]`.
    let mut segments = path.rsplit('/');
    let last = segments.next()?;
    let before = segments.next();
    let before2 = segments.next();
    if before == Some("tasks") {
        let (id, verb) = match last.rsplit_once(':') {
            Some((id, verb)) if matches!(verb, "cancel" | "subscribe") => (id, Some(verb)),
            _ => (last, None),
        };
        if id.is_empty() {
            return None;
        }
        return match (verb, method) {
            (Some("cancel"), _) if post => Some((CancelTask, Some(id))),
            (Some("subscribe"), _) if post || get => Some((SubscribeToTask, Some(id))),
            (None, _) if get => Some((GetTask, Some(id))),
            _ => None,
        };
    }
    if last == "pushNotificationConfigs" && before2 == Some("tasks") {
        let id = before.filter(|s| !s.is_empty())?;
        return match *method {
            Method::POST => Some((CreatePushConfig, Some(id))),
            Method::GET => Some((ListPushConfigs, Some(id))),
            _ => None,
        };
    }
    if before == Some("pushNotificationConfigs") {
        let id = before2.filter(|s| !s.is_empty())?;
        // `.../tasks/{id}/pushNotificationConfigs/{config}`: the segment before the id.
        if segments.next() != Some("tasks") {
            return None;
        }
        return match *method {
            Method::GET => Some((GetPushConfig, Some(id))),
            Method::DELETE => Some((DeletePushConfig, Some(id))),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest(method: Method, path: &str) -> (Operation, Option<String>) {
        match classify_http(&method, path, None, ProtocolVersion::V1_0) {
            HeadClass::Known(c) => {
                assert_eq!(c.binding, Binding::HttpJson, "{path}");
                (c.operation, c.task_id)
            }
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn version_header_absent_means_0_3() {
        assert_eq!(ProtocolVersion::from_header(None), ProtocolVersion::V0_3);
        assert_eq!(
            ProtocolVersion::from_header(Some(b"1.0")),
            ProtocolVersion::V1_0
        );
        assert_eq!(
            ProtocolVersion::from_header(Some(b" 1.0.0 ")),
            ProtocolVersion::V1_0
        );
        assert_eq!(
            ProtocolVersion::from_header(Some(b"0.3.0")),
            ProtocolVersion::V0_3
        );
        assert_eq!(
            ProtocolVersion::from_header(Some(b"2.1")),
            ProtocolVersion::Other
        );
    }

    #[test]
    fn rest_paths_of_both_versions() {
        use Operation::*;
        let t = |s: &str| Some(s.to_string());
        // v1.0, at the root, under a base path and under a tenant.
        assert_eq!(rest(Method::POST, "/message:send"), (SendMessage, None));
        assert_eq!(
            rest(Method::POST, "/rest/acme/message:stream"),
            (SendStreamingMessage, None)
        );
        assert_eq!(rest(Method::GET, "/tasks/t-1"), (GetTask, t("t-1")));
        assert_eq!(rest(Method::GET, "/rest/tasks"), (ListTasks, None));
        assert_eq!(
            rest(Method::POST, "/tasks/t-1:cancel"),
            (CancelTask, t("t-1"))
        );
        assert_eq!(
            rest(Method::GET, "/tasks/t-1:subscribe"),
            (SubscribeToTask, t("t-1"))
        );
        assert_eq!(
            rest(Method::POST, "/tasks/t-1/pushNotificationConfigs"),
            (CreatePushConfig, t("t-1"))
        );
        assert_eq!(
            rest(Method::GET, "/tasks/t-1/pushNotificationConfigs"),
            (ListPushConfigs, t("t-1"))
        );
        assert_eq!(
            rest(Method::GET, "/tasks/t-1/pushNotificationConfigs/cfg-9"),
            (GetPushConfig, t("t-1"))
        );
        assert_eq!(
            rest(Method::DELETE, "/tasks/t-1/pushNotificationConfigs/cfg-9"),
            (DeletePushConfig, t("t-1"))
        );
        assert_eq!(
            rest(Method::GET, "/extendedAgentCard"),
            (GetExtendedAgentCard, None)
        );
        // v0.3 puts the same set under /v1, and names the extended card /v1/card.
        assert_eq!(rest(Method::POST, "/v1/message:send"), (SendMessage, None));
        assert_eq!(
            rest(Method::POST, "/a/v1/tasks/abc:cancel"),
            (CancelTask, t("abc"))
        );
        assert_eq!(
            rest(Method::POST, "/v1/tasks/abc:subscribe"),
            (SubscribeToTask, t("abc"))
        );
        assert_eq!(rest(Method::GET, "/v1/card"), (GetExtendedAgentCard, None));
        // Cards.
        assert_eq!(
            rest(Method::GET, "/agents/x/.well-known/agent-card.json"),
            (GetAgentCard, None)
        );
        assert_eq!(
            rest(Method::GET, "/.well-known/agent.json"),
            (GetAgentCard, None)
        );
    }

    #[test]
    fn other_posts_are_json_rpc_and_other_gets_are_not_a2a() {
        let v = ProtocolVersion::V0_3;
        assert_eq!(
            classify_http(&Method::POST, "/", Some(b"application/json"), v),
            HeadClass::JsonRpc
        );
        assert_eq!(
            classify_http(&Method::POST, "/a2a/jsonrpc", None, v),
            HeadClass::JsonRpc
        );
        assert_eq!(
            classify_http(&Method::GET, "/healthz", None, v),
            HeadClass::Other
        );
        // A DELETE on a task is not an operation.
        assert_eq!(
            classify_http(&Method::DELETE, "/tasks/x", None, v),
            HeadClass::Other
        );
    }

    #[test]
    fn grpc_methods_of_both_packages() {
        let grpc = |path: &str| match classify_http(
            &Method::POST,
            path,
            Some(b"application/grpc+proto"),
            ProtocolVersion::V1_0,
        ) {
            HeadClass::Known(c) => {
                assert_eq!(c.binding, Binding::Grpc);
                c.operation
            }
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(
            grpc("/lf.a2a.v1.A2AService/SendStreamingMessage"),
            Operation::SendStreamingMessage
        );
        assert_eq!(
            grpc("/a2a.v1.A2AService/TaskSubscription"),
            Operation::SubscribeToTask
        );
        assert_eq!(
            grpc("/lf.a2a.v1.A2AService/SomethingNew"),
            Operation::Unknown
        );
        assert_eq!(
            classify_http(
                &Method::POST,
                "/other.Service/Call",
                Some(b"application/grpc"),
                ProtocolVersion::V1_0
            ),
            HeadClass::Other
        );
    }

    #[test]
    fn json_rpc_method_names_of_both_versions() {
        use Operation::*;
        use ProtocolVersion::*;
        for (name, op, v) in [
            ("message/send", SendMessage, V0_3),
            ("message/stream", SendStreamingMessage, V0_3),
            ("tasks/get", GetTask, V0_3),
            ("tasks/cancel", CancelTask, V0_3),
            ("tasks/resubscribe", SubscribeToTask, V0_3),
            ("tasks/pushNotificationConfig/set", CreatePushConfig, V0_3),
            ("tasks/pushNotificationConfig/get", GetPushConfig, V0_3),
            ("tasks/pushNotificationConfig/list", ListPushConfigs, V0_3),
            (
                "tasks/pushNotificationConfig/delete",
                DeletePushConfig,
                V0_3,
            ),
            (
                "agent/getAuthenticatedExtendedCard",
                GetExtendedAgentCard,
                V0_3,
            ),
            ("SendMessage", SendMessage, V1_0),
            ("SendStreamingMessage", SendStreamingMessage, V1_0),
            ("GetTask", GetTask, V1_0),
            ("ListTasks", ListTasks, V1_0),
            ("CancelTask", CancelTask, V1_0),
            ("SubscribeToTask", SubscribeToTask, V1_0),
            ("CreateTaskPushNotificationConfig", CreatePushConfig, V1_0),
            ("GetTaskPushNotificationConfig", GetPushConfig, V1_0),
            ("ListTaskPushNotificationConfigs", ListPushConfigs, V1_0),
            ("DeleteTaskPushNotificationConfig", DeletePushConfig, V1_0),
            ("GetExtendedAgentCard", GetExtendedAgentCard, V1_0),
        ] {
            assert_eq!(Operation::from_jsonrpc(name), (op, Some(v)), "{name}");
        }
        assert_eq!(Operation::from_jsonrpc("tasks/list"), (Unknown, None));
        assert!(SendStreamingMessage.streams() && SubscribeToTask.streams());
        assert!(!SendMessage.streams());
    }
}
