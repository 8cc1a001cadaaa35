//! `ListTasks` on a route with several `a2a` backends (the merge itself is `a2a::list`):
//! every agent is asked, their tasks come back merged newest first, with sealed task ids and a
//! sealed page token that resumes the listing on any replica with the same task key.
//!
//! A `contextId` filter narrows the listing to the agent that holds the context: the one
//! sealed into it, or, for a context id the client chose, the one it is placed on. An agent
//! that fails, or answers with an error, makes the listing fail with its answer: a partial
//! list would hide tasks without saying so.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use serde_json::{Map, Value};

use ::a2a::list::{self, Cursor, Lane, LaneCursor, Merger, Page, Step};
use ::a2a::tasks::place_context;
use ::a2a::{jsonrpc, ErrorDialect};

use super::a2a::{error_response, read_bounded};
use super::a2a_affinity::TaskAffinity;
use super::{Failure, UpstreamRequest};
use crate::body::{self, Body};
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::upstream::Upstream;

/// Largest answer read from one agent.
const MAX_PAGE_BYTES: usize = 4 << 20;

/// How the client asked: a JSON-RPC call (its request object) or the REST `GET .../tasks`.
pub(super) enum Asked<'r> {
    JsonRpc(&'r Bytes),
    Rest,
}

/// The request, read: the filter and paging parameters, and where the rest of it lives.
struct Listing {
    /// JSON-RPC: the request object; REST: the query's pairs.
    rpc: Option<Value>,
    query: Vec<(String, String)>,
    context: Option<String>,
    page_token: Option<String>,
    page_size: Option<i64>,
}

impl Listing {
    fn read(parts: &Parts, asked: &Asked<'_>) -> Result<Listing, String> {
        match asked {
            Asked::JsonRpc(raw) => {
                let v: Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
                let params = v.get("params").cloned().unwrap_or(Value::Null);
                let text = |k: &str| {
                    params
                        .get(k)
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                };
                Ok(Listing {
                    context: text("contextId"),
                    page_token: text("pageToken"),
                    page_size: params.get("pageSize").and_then(|n| {
                        n.as_i64()
                            .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
                    }),
                    rpc: Some(v),
                    query: Vec::new(),
                })
            }
            Asked::Rest => {
                let query: Vec<(String, String)> =
                    parts.uri.query().map(parse_query).unwrap_or_default();
                let get = |k: &str| {
                    query
                        .iter()
                        .find(|(n, v)| n == k && !v.is_empty())
                        .map(|(_, v)| v.clone())
                };
                Ok(Listing {
                    context: get("contextId"),
                    page_token: get("pageToken"),
                    page_size: get("pageSize").and_then(|s| s.parse().ok()),
                    rpc: None,
                    query,
                })
            }
        }
    }

    /// The request one agent gets: its own page token, the upstream page size, the
    /// agent's own context id.
    fn for_agent(&self, token: &str, page_size: u32, context: Option<&str>) -> AgentAsk {
        match &self.rpc {
            Some(v) => {
                let mut v = v.clone();
                if !v.get("params").is_some_and(Value::is_object) {
                    v["params"] = Value::Object(Map::new());
                }
                let p = &mut v["params"];
                if let Some(p) = p.as_object_mut() {
                    match token.is_empty() {
                        true => p.remove("pageToken"),
                        false => p.insert("pageToken".into(), token.into()),
                    };
                    p.insert("pageSize".into(), page_size.into());
                    if let Some(c) = context {
                        p.insert("contextId".into(), c.into());
                    }
                }
                AgentAsk::Body(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
            }
            None => {
                let mut q: Vec<(String, String)> = self
                    .query
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "pageToken" | "pageSize" | "contextId"))
                    .cloned()
                    .collect();
                if !token.is_empty() {
                    q.push(("pageToken".into(), token.into()));
                }
                q.push(("pageSize".into(), page_size.to_string()));
                if let Some(c) = context {
                    q.push(("contextId".into(), c.into()));
                }
                AgentAsk::Query(
                    q.iter()
                        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                        .collect::<Vec<_>>()
                        .join("&"),
                )
            }
        }
    }
}

enum AgentAsk {
    Body(Bytes),
    Query(String),
}

/// One agent of the route.
struct Agent<'a> {
    name: &'a str,
    upstream: &'a Upstream,
    policies: &'a crate::policy::BackendPolicies,
}

/// What one agent answered: its page, or an answer to pass to the client as it is.
enum Answer {
    Page(Page),
    Refused(Response<Body>),
}

/// Lists the tasks of the route's agents for the client, in the client's binding.
pub(super) async fn fan_out(
    aff: &TaskAffinity,
    parts: &Parts,
    headers: &HeaderMap,
    asked: Asked<'_>,
    dialect: &ErrorDialect,
    ctx: &mut RequestCtx<'_>,
) -> Result<Response<Body>, Failure> {
    let invalid = |message: &str| match dialect {
        ErrorDialect::JsonRpc { id } => {
            let body = jsonrpc::error_body(id, jsonrpc::INVALID_PARAMS, message, None);
            let mut resp = Response::new(body::full(body));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
        d => Ok(error_response(d.response(
            400,
            "a2a_invalid_page_token",
            message,
        ))),
    };
    let listing = match Listing::read(parts, &asked) {
        Ok(l) => l,
        Err(e) => return invalid(&format!("the ListTasks request is not JSON: {e}")),
    };
    let route = ctx.route;
    let agents: Vec<Agent<'_>> = route
        .backends
        .iter()
        .filter_map(|b| match &b.adapter {
            super::Backend::A2a(a) => Some(Agent {
                name: &b.name,
                upstream: &a.upstream,
                policies: &b.policies,
            }),
            _ => None,
        })
        .collect();
    // A context narrows the listing to its agent; the client's own context id stays as it
    // is in the answer.
    let (only, agent_context, keep) = match &listing.context {
        None => (None, None, None),
        Some(c) => match aff.sealer.open(c) {
            Some(opened) => (Some(opened.backend), Some(opened.task_id), None),
            None => {
                let names: Vec<&str> = agents.iter().map(|a| a.name).collect();
                let at = place_context(c, &names).map(|i| names[i].to_string());
                (at, Some(c.clone()), Some(c.clone()))
            }
        },
    };
    let page_size = list::page_size(listing.page_size);
    let cursor = match &listing.page_token {
        Some(t) => match Cursor::open(&aff.sealer, t) {
            Some(c) => c,
            None => return invalid("the page token is not one this gateway issued"),
        },
        None => Cursor {
            upstream_page_size: page_size,
            lanes: agents
                .iter()
                .filter(|a| only.as_deref().is_none_or(|o| o == a.name))
                .map(|a| LaneCursor {
                    backend: a.name.to_string(),
                    token: String::new(),
                    skip: 0,
                    done: false,
                    total: 0,
                })
                .collect(),
        },
    };
    let upstream_size = cursor.upstream_page_size.clamp(1, list::MAX_PAGE_SIZE);
    let started = std::time::Instant::now();
    ctx.upstream = Some(aff_upstream(&agents, &aff.own));

    // The first page of every lane at once.
    let mut pending = Vec::new();
    for lane in cursor.lanes.iter().filter(|l| !l.done) {
        let Some(agent) = agents.iter().find(|a| a.name == lane.backend) else {
            continue;
        };
        let ask = listing.for_agent(&lane.token, upstream_size, agent_context.as_deref());
        let req = build(agent, parts, headers, ask, ctx).map_err(Failure::Fatal)?;
        pending.push(fetch(agent, req));
    }
    let mut answers = futures_util::future::join_all(pending).await.into_iter();
    let mut lanes = Vec::new();
    for lane in &cursor.lanes {
        let present = agents.iter().any(|a| a.name == lane.backend);
        if lane.done || !present {
            // (An agent the route no longer has: its tasks are gone with it.)
            if present {
                lanes.push(Lane::done(lane));
            }
            continue;
        }
        match answers.next() {
            Some(Ok(Answer::Page(page))) => lanes.push(Lane::resume(lane, page)),
            Some(Ok(Answer::Refused(resp))) => return Ok(resp),
            Some(Err(f)) => return Err(f),
            None => return Err(Failure::Fatal(ProxyError::upstream_error("lost an answer"))),
        }
    }
    let mut merger = Merger { lanes };
    let mut taken = Vec::new();
    loop {
        match merger.run(page_size, &mut taken) {
            Step::Done => break,
            Step::Fetch(i, token) => {
                let name = merger.lanes[i].backend.clone();
                let Some(agent) = agents.iter().find(|a| a.name == name) else {
                    break;
                };
                let ask = listing.for_agent(&token, upstream_size, agent_context.as_deref());
                let req = build(agent, parts, headers, ask, ctx).map_err(Failure::Fatal)?;
                match fetch(agent, req).await? {
                    Answer::Page(page) => merger.lanes[i].load(token, page),
                    Answer::Refused(resp) => return Ok(resp),
                }
            }
        }
    }
    ctx.upstream_time = Some(started.elapsed());

    let tasks: Vec<Value> = taken
        .into_iter()
        .map(|(i, mut task)| {
            let owner = &merger.lanes[i].backend;
            aff.sealer
                .seal_answer_keeping(&mut task, owner, keep.as_deref());
            task
        })
        .collect();
    let next = merger
        .cursor(upstream_size)
        .map(|c| c.seal(&aff.sealer))
        .unwrap_or_default();
    let result = serde_json::json!({
        "tasks": tasks,
        "nextPageToken": next,
        "pageSize": page_size,
        "totalSize": merger.total(),
    });
    let doc = match dialect {
        ErrorDialect::JsonRpc { id } => {
            serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result})
        }
        _ => result,
    };
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let mut resp = Response::new(body::full(bytes));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// The upstream this backend sends to, for the access log.
fn aff_upstream(agents: &[Agent<'_>], own: &str) -> std::sync::Arc<str> {
    agents
        .iter()
        .find(|a| a.name == own)
        .or(agents.first())
        .map(|a| a.upstream.address.clone())
        .unwrap_or_else(|| "".into())
}

fn build(
    agent: &Agent<'_>,
    parts: &Parts,
    headers: &HeaderMap,
    ask: AgentAsk,
    ctx: &RequestCtx<'_>,
) -> Result<Request<Body>, ProxyError> {
    let mut headers = headers.clone();
    let (body, query) = match ask {
        AgentAsk::Body(b) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
            (body::full(b), None)
        }
        AgentAsk::Query(q) => (body::empty(), Some(q)),
    };
    let mut req =
        UpstreamRequest::to(agent.upstream).build(parts, headers, body, agent.policies, ctx)?;
    if let Some(q) = query {
        set_query(&mut req, &q);
    }
    Ok(req)
}

async fn fetch(agent: &Agent<'_>, req: Request<Body>) -> Result<Answer, Failure> {
    let resp = match super::call_upstream(agent.upstream, req, agent.policies).await {
        Ok(r) => r,
        Err(Failure::Connect(m)) => {
            return Err(Failure::Fatal(ProxyError::upstream_unavailable(m)))
        }
        Err(f) => return Err(f),
    };
    let (head, b) = resp.into_parts();
    let bytes = read_bounded(b, MAX_PAGE_BYTES).await.map_err(|e| {
        Failure::Fatal(ProxyError::upstream_error(format!(
            "reading the agent's task list: {e}"
        )))
    })?;
    let passed = |head, bytes: Bytes| {
        Ok(Answer::Refused(Response::from_parts(
            head,
            body::full(bytes),
        )))
    };
    if head.status != StatusCode::OK {
        return passed(head, bytes);
    }
    let Ok(mut doc) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(Failure::Fatal(ProxyError::upstream_error(
            "the agent's task list is not JSON",
        )));
    };
    if doc.get("error").is_some_and(|e| !e.is_null()) {
        return passed(head, bytes);
    }
    let page = match doc.get_mut("result") {
        Some(result) => Page::read(result),
        None => Page::read(&mut doc),
    };
    match page {
        Some(p) => Ok(Answer::Page(p)),
        None => Err(Failure::Fatal(ProxyError::upstream_error(
            "the agent's task list has no `tasks`",
        ))),
    }
}

/// Replaces the query of the upstream request.
fn set_query(req: &mut Request<Body>, query: &str) {
    let uri = req.uri().clone();
    let path = uri.path();
    let pq = match query.is_empty() {
        true => path.to_string(),
        false => format!("{path}?{query}"),
    };
    let mut p = uri.into_parts();
    if let Ok(pq) = http::uri::PathAndQuery::try_from(pq) {
        p.path_and_query = Some(pq);
        if let Ok(u) = http::Uri::from_parts(p) {
            *req.uri_mut() = u;
        }
    }
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
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
    fn queries_round_trip() {
        let q =
            parse_query("contextId=a%2Fb&pageSize=5&status=TASK_STATE_WORKING&x=1+2&bad=%zz&t=%4");
        assert_eq!(q[0], ("contextId".into(), "a/b".into()));
        assert_eq!(q[3], ("x".into(), "1 2".into()));
        assert_eq!(q[4], ("bad".into(), "%zz".into()));
        assert_eq!(q[5], ("t".into(), "%4".into()));
        assert_eq!(decode(&encode("a b/c=d&é")), "a b/c=d&é");
    }
}
