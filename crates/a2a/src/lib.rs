//! The Agent-to-Agent protocol (A2A, v0.3 and v1.0) as the gateway understands it: no I/O, no
//! dependency on the proxy. The `a2a` backend adapter in `proxy` calls into this crate to
//!
//! - classify a request ([`classify`]): binding (JSON-RPC, HTTP+JSON, gRPC), operation,
//!   protocol version (`A2A-Version`, absent = 0.3), task id;
//! - read a JSON-RPC envelope ([`jsonrpc`]) and refuse a malformed one (-32700 / -32600);
//! - rewrite agent cards ([`card`]) so every interface URL points at the gateway;
//! - sign rewritten cards with a gateway key ([`sign`], over the RFC 8785 form, [`jcs`]);
//! - seal the backend that owns a task into the task ids clients see ([`tasks`]), and merge
//!   `ListTasks` across a route's agents ([`list`]);
//! - check push-notification callback URLs against an allow-list ([`push`]);
//! - translate JSON-RPC calls between v0.3 and v1.0 for an agent that speaks one ([`translate`]);
//! - watch responses and SSE streams event by event ([`observe`], [`sse`]) for telemetry:
//!   task id, context id, state, final flag, artifacts;
//! - answer errors in the binding's own shape ([`errors`]).
//!
//! Wire names come from the specification's `a2a.proto` (v1.0, package `lf.a2a.v1`), the v0.3
//! JSON schema, and the official `a2a-sdk`, which serves both.

pub mod card;
pub mod classify;
pub mod errors;
pub mod jcs;
pub mod jsonrpc;
pub mod list;
pub mod observe;
pub mod push;
pub mod sign;
pub mod sse;
pub mod tasks;
pub mod translate;

pub use card::{rewrite_card, CardRewrite, CardRewriteOutcome, PathMap};
pub use classify::{
    classify_http, Binding, BindingSet, Call, HeadClass, Operation, ProtocolVersion,
};
pub use errors::{ErrorDialect, ErrorResponse};
pub use observe::{Observation, TaskState};
pub use push::AllowList;
pub use sign::{Alg as SigningAlg, CardSigner};
pub use sse::EventReader;
pub use tasks::{SseSealer, TaskSealer};

/// The request header carrying the protocol version the client speaks (v1.0; absent = 0.3).
pub const VERSION_HEADER: &str = "a2a-version";
/// The request and response header listing the extensions in use.
pub const EXTENSIONS_HEADER: &str = "a2a-extensions";
/// Well-known paths of the public agent card: the current one and the pre-0.3 one.
pub const CARD_PATHS: [&str; 2] = ["/.well-known/agent-card.json", "/.well-known/agent.json"];
