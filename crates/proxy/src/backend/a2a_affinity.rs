//! Task affinity for a route with several `a2a` backends (protocol logic in
//! `a2a::tasks`): the backend that owns a task is sealed into the task ids the client sees,
//! and a request naming a task goes to that backend only, with the agent's own id restored.
//!
//! - [`A2aBackend::affinity`](super::a2a::A2aBackend) (asked by the pipeline before the
//!   attempts) opens the id the request names: the REST path's `/tasks/{id}`, or in a JSON body
//!   the JSON-RPC `params.id` of a task call, `taskId`, `referenceTaskIds`. An id that does not
//!   open is answered with the binding's "task not found" and reaches no agent.
//! - [`open_request`] puts the agent's ids back into the request sent upstream.
//! - [`seal_response`] seals every task id of the answer: a JSON body once it is whole, an SSE
//!   stream event by event.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use serde_json::Value;

use ::a2a::classify::HeadClass;
use ::a2a::tasks::{params_id_is_task, place_context, OpenedRequest, SseSealer, TaskSealer};
use ::a2a::{jsonrpc, Binding, ErrorDialect, Operation, ProtocolVersion};

use super::{Affinity, Failure};
use crate::body::{self, Body, BoxError};
use crate::error::ProxyError;

/// Largest JSON answer whose task ids are sealed; one declared larger passes unsealed.
const MAX_SEALED_JSON: usize = 4 << 20;
/// Largest SSE event sealed.
const MAX_SEALED_EVENT: usize = 1 << 20;

/// This backend's part in its route's task affinity.
pub struct TaskAffinity {
    pub sealer: Arc<TaskSealer>,
    /// The route's backends by index, by name.
    pub backends: Arc<[Arc<str>]>,
    /// This backend's name (sealed into its tasks' ids).
    pub own: Arc<str>,
}

/// What a request says about its task: the binding's error shape, and the sealed ids' owner.
pub(super) fn route(
    aff: &TaskAffinity,
    class: &HeadClass,
    version: ProtocolVersion,
    body: Option<&Bytes>,
) -> Affinity {
    let (dialect, owner) = match class {
        HeadClass::Known(call) if call.binding == Binding::HttpJson => {
            let dialect = ErrorDialect::HttpJson { version };
            let owner = match (&call.task_id, body) {
                (Some(id), _) => aff
                    .sealer
                    .open(id)
                    .map(|o| OpenedRequest {
                        owner: Some(o.backend),
                        client_context: None,
                    })
                    .ok_or(()),
                (None, Some(b)) if names_tasks_in_body(call.operation) => {
                    match serde_json::from_slice::<Value>(b) {
                        Ok(mut v) => aff.sealer.open_request_ids(&mut v, false).map_err(|_| ()),
                        Err(_) => Ok(OpenedRequest::default()),
                    }
                }
                _ => Ok(OpenedRequest::default()),
            };
            (dialect, owner)
        }
        HeadClass::JsonRpc => {
            let Some(raw) = body else {
                return Affinity::Any;
            };
            // A malformed call is refused by `send` in JSON-RPC's own terms.
            let Ok(req) = jsonrpc::parse_request(raw) else {
                return Affinity::Any;
            };
            let dialect = ErrorDialect::JsonRpc { id: req.id.clone() };
            let owner = match serde_json::from_slice::<Value>(raw) {
                Ok(mut v) => {
                    let by_id = params_id_is_task(req.operation, v.get("params"));
                    aff.sealer.open_request_ids(&mut v, by_id).map_err(|_| ())
                }
                Err(_) => Ok(OpenedRequest::default()),
            };
            (dialect, owner)
        }
        _ => return Affinity::Any,
    };
    let owner = owner.map(|o| (o.owner, o.client_context));
    match owner {
        // A context the client named itself: placed by its id, the same on every replica.
        Ok((None, Some(context))) => match place_context(&context, &aff.backends) {
            Some(i) => Affinity::Backend(i),
            None => Affinity::Any,
        },
        Ok((None, None)) => Affinity::Any,
        Ok((Some(name), _)) => match aff.backends.iter().position(|b| **b == *name) {
            Some(i) => Affinity::Backend(i),
            // The route no longer has that backend: its tasks are gone with it.
            None => refuse(&dialect),
        },
        Err(()) => refuse(&dialect),
    }
}

fn refuse(dialect: &ErrorDialect) -> Affinity {
    let e = ::a2a::errors::task_not_found(dialect);
    Affinity::Refuse("a2a_task_not_found", super::a2a::error_response(e))
}

/// HTTP+JSON calls whose body may name a task (a message continuing one, a push config).
pub(super) fn names_tasks_in_body(op: Operation) -> bool {
    matches!(
        op,
        Operation::SendMessage | Operation::SendStreamingMessage | Operation::CreatePushConfig
    )
}

/// The request as the agent must see it (see [`open_request`]).
pub(super) struct OpenedForAgent {
    /// The new body, if it changed.
    pub body: Option<Bytes>,
    /// The agent's id for the task the path names.
    pub path_task: Option<String>,
    /// The context id the client chose itself: left unsealed in the answer.
    pub client_context: Option<String>,
}

/// The request as the agent must see it: its own task and context ids in the body (`raw`,
/// when the pipeline read it) and in the path (`path_task`, a sealed id the path names).
pub(super) fn open_request(
    aff: &TaskAffinity,
    raw: Option<&Bytes>,
    json_rpc_op: Option<Operation>,
    path_task: Option<&str>,
) -> OpenedForAgent {
    let path_raw = path_task
        .and_then(|id| aff.sealer.open(id))
        .map(|o| o.task_id);
    let mut client_context = None;
    let body = raw.and_then(|raw| {
        let mut v: Value = serde_json::from_slice(raw).ok()?;
        let by_id = json_rpc_op.is_some_and(|op| params_id_is_task(op, v.get("params")));
        let opened = aff.sealer.open_request_ids(&mut v, by_id).ok()?;
        client_context = opened.client_context;
        match opened.owner {
            Some(_) => serde_json::to_vec(&v).ok().map(Bytes::from),
            None => None,
        }
    });
    OpenedForAgent {
        body,
        path_task: path_raw,
        client_context,
    }
}

/// Puts the agent's task id in place of the sealed one in the upstream request's path.
pub(super) fn patch_path(req: &mut Request<Body>, sealed: &str, raw: &str) {
    let uri = req.uri();
    let Some(pq) = uri.path_and_query() else {
        return;
    };
    let segment = format!("/{sealed}");
    let path = pq.path();
    let Some(at) = path.find(&segment) else {
        return;
    };
    let mut new = String::with_capacity(pq.as_str().len());
    new.push_str(&path[..at + 1]);
    new.push_str(&percent_encode_segment(raw));
    new.push_str(&path[at + segment.len()..]);
    if let Some(q) = pq.query() {
        new.push('?');
        new.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = http::uri::PathAndQuery::try_from(new) {
        parts.path_and_query = Some(pq);
        if let Ok(u) = http::Uri::from_parts(parts) {
            *req.uri_mut() = u;
        }
    }
}

fn percent_encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The new length of a rewritten request body.
pub(super) fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// The answer with its task ids sealed: a JSON body read whole (up to [`MAX_SEALED_JSON`];
/// a larger one passes unsealed) and sent with its new length, an SSE stream event by event;
/// other media pass as they are.
pub(super) async fn seal_response(
    resp: Response<Body>,
    aff: &TaskAffinity,
    keep_context: Option<String>,
) -> Result<Response<Body>, Failure> {
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .unwrap_or(b"");
    if content_type.starts_with(b"text/event-stream") {
        let (mut head, inner) = resp.into_parts();
        head.headers.remove(header::CONTENT_LENGTH);
        let sealed = SealedBody {
            inner,
            mode: Mode::Sse(Box::new(
                SseSealer::new(MAX_SEALED_EVENT).keeping(keep_context),
            )),
            sealer: aff.sealer.clone(),
            own: aff.own.clone(),
            done: false,
        };
        return Ok(Response::from_parts(head, sealed.boxed_unsync()));
    }
    let is_json = content_type
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"json"));
    let declared = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if !is_json || declared.is_some_and(|n| n > MAX_SEALED_JSON) {
        return Ok(resp);
    }
    let (mut head, inner) = resp.into_parts();
    let bytes = super::a2a::read_bounded(inner, MAX_SEALED_JSON)
        .await
        .map_err(|e| {
            Failure::Fatal(ProxyError::upstream_error(format!(
                "reading the agent's answer: {e}"
            )))
        })?;
    let out = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut v) => match aff
            .sealer
            .seal_answer_keeping(&mut v, &aff.own, keep_context.as_deref())
        {
            true => serde_json::to_vec(&v).map(Bytes::from).unwrap_or(bytes),
            false => bytes,
        },
        Err(_) => bytes,
    };
    head.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(head, body::full(out)))
}

enum Mode {
    Sse(Box<SseSealer>),
    /// Ended.
    Pass,
}

struct SealedBody {
    inner: Body,
    mode: Mode,
    sealer: Arc<TaskSealer>,
    own: Arc<str>,
    done: bool,
}

impl SealedBody {
    /// What is left to send when the answer ends.
    fn finish(&mut self) -> Option<Bytes> {
        let out = match std::mem::replace(&mut self.mode, Mode::Pass) {
            Mode::Sse(mut sse) => sse.finish(),
            Mode::Pass => Vec::new(),
        };
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

impl http_body::Body for SealedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(this.finish().map(|b| Ok(Frame::data(b))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(data) => data,
                        // Trailers: whatever is held goes first... there is none for JSON or
                        // SSE over HTTP/1.1; pass them on.
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    let out = match &mut this.mode {
                        Mode::Sse(sse) => Bytes::from(sse.feed(&frame, &this.sealer, &this.own)),
                        Mode::Pass => frame,
                    };
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The full body a rewritten request sends.
pub(super) fn body_of(bytes: Bytes) -> Body {
    body::full(bytes)
}

/// Whether `parts` carries a JSON-RPC or HTTP+JSON body this affinity must read.
pub(super) fn reads_body(class: &HeadClass) -> bool {
    match class {
        HeadClass::Known(call) => {
            call.binding == Binding::HttpJson && names_tasks_in_body(call.operation)
        }
        HeadClass::JsonRpc => true,
        HeadClass::Other => false,
    }
}
