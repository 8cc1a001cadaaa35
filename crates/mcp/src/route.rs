//! Federated calls: list methods fanned out and merged, everything else routed to the one
//! target a prefixed name or URI belongs to, and the answer relayed as JSON or a stream.

use crate::authz::Caller;
use crate::authz::ToolGuard;
use crate::downstream::{error_text, json_response, ok, RpcError, SESSION_NOT_FOUND};
use crate::federate::{decode_cursor, encode_cursor, from_upstream};
use crate::jsonrpc::{self, Code, Kind};
use crate::modern::Modern;
use crate::mrtr::Exchange;
use crate::names;
use crate::replay::StreamKind;
use crate::session::{SessionState, TargetSession};
use crate::stream::{sse_response, Event, Opts};
use crate::upstream::{answer, CallCtx, Target, UpstreamError};
use crate::{boxed, Body, FailureMode, Gateway, Observed};
use futures_util::future::join_all;
use http::{Response, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

impl Gateway {
    /// The targets of this session, with their upstream sessions.
    pub(crate) fn joined<'s>(
        &'s self,
        state: &'s SessionState,
    ) -> impl Iterator<Item = (&'s Arc<Target>, &'s TargetSession)> {
        state
            .targets
            .iter()
            .filter_map(|ts| self.target(&ts.target).map(|t| (t, ts)))
    }

    /// The targets a merged list asks, each with its own cursor: every joined target for a
    /// first page, else those the client's cursor still has pages of.
    fn paged_targets<'s>(
        &'s self,
        state: &'s SessionState,
        pages: Option<&'s BTreeMap<String, String>>,
    ) -> Vec<(&'s Arc<Target>, &'s TargetSession, Option<&'s str>)> {
        self.joined(state)
            .filter_map(|(t, ts)| match pages {
                None => Some((t, ts, None)),
                Some(p) => p.get(&*t.name).map(|c| (t, ts, Some(c.as_str()))),
            })
            .collect()
    }

    pub(crate) async fn notify_all(&self, ctx: &CallCtx<'_>, state: &SessionState, msg: &Value) {
        let sends = self.joined(state).map(|(t, ts)| {
            boxed(async move {
                if let Err(e) = t.send(ctx, ts, msg).await {
                    tracing::debug!(mcp_target = %t.name, error = %e, "notification not delivered");
                }
            })
        });
        join_all(sends).await;
    }

    /// The client answers a request one of the targets sent: route it back with its own id.
    pub(crate) async fn answer_server(
        &self,
        ctx: &CallCtx<'_>,
        state: &SessionState,
        mut msg: Value,
    ) {
        let Some((target, original)) =
            jsonrpc::untag_server_id(&jsonrpc::id(&msg)).map(|(t, id)| (t.to_string(), id))
        else {
            tracing::debug!("client answered a request no target sent");
            return;
        };
        let Some((t, ts)) = self.joined(state).find(|(t, _)| *t.name == *target) else {
            return;
        };
        msg["id"] = original;
        crate::tasks::open_answer(&self.sealer, &state.id, &t.name, &mut msg);
        if let Err(e) = t.send(ctx, ts, &msg).await {
            tracing::debug!(mcp_target = %t.name, error = %e, "answer to a server request not delivered");
        }
    }

    /// Serves one request of a session (`modern`: of a modern client, on pooled sessions).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn request(
        &self,
        ctx: &CallCtx<'_>,
        state: &SessionState,
        mut msg: Value,
        caller: &Caller<'_>,
        sse: bool,
        observed: &mut Observed,
        modern: Option<&Modern>,
    ) -> Response<Body> {
        let id = jsonrpc::id(&msg);
        let method = jsonrpc::method(&msg).to_string();
        if method == "ping" {
            return ok(&jsonrpc::result(id, json!({})));
        }
        if names::list_key(&method).is_some() {
            let answer = match self.list(ctx, state, &msg, caller, modern).await {
                Ok(v) => jsonrpc::result(id, v),
                Err(e) => e.with_id(id),
            };
            return ok(&match modern {
                Some(_) => crate::modern::complete(answer, &method),
                None => answer,
            });
        }
        if method == "logging/setLevel" {
            let calls = self.joined(state).map(|(t, ts)| {
                let m = msg.clone();
                boxed(async move {
                    if let Ok(rx) = t.request(ctx, ts, m).await {
                        let _ = answer(rx, |_| {}).await;
                    }
                })
            });
            join_all(calls).await;
            return ok(&jsonrpc::result(id, json!({})));
        }
        // Tasks (2025-11-25) of sessions: a handle names its target ([`crate::tasks`]).
        if modern.is_none() {
            if method == "tasks/list" {
                return ok(&match self.list_tasks(ctx, state, &msg).await {
                    Ok(v) => jsonrpc::result(id, v),
                    Err(e) => e.with_id(id),
                });
            }
            if matches!(
                method.as_str(),
                "tasks/get" | "tasks/result" | "tasks/cancel"
            ) {
                let handle = jsonrpc::params(&msg)
                    .and_then(|p| p.get("taskId"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let found = crate::tasks::open(&self.sealer, &state.id, handle).and_then(
                    |(target, task)| {
                        let (t, ts) = self.joined(state).find(|(t, _)| *t.name == *target)?;
                        Some((t, ts, task))
                    },
                );
                let Some((t, ts, task)) = found else {
                    return ok(&jsonrpc::error(
                        id,
                        Code::INVALID_PARAMS,
                        format!("{method}: unknown task"),
                    ));
                };
                observed.target = Some(t.name.to_string());
                jsonrpc::params_mut(&mut msg).insert("taskId".into(), Value::from(task));
                let reply = Reply {
                    id,
                    sse,
                    guard: match method.as_str() {
                        "tasks/result" => caller.tool_guard.cloned(),
                        _ => None,
                    },
                    tasks: Some(state.id.clone()),
                };
                return self.forward(ctx, t, ts, msg, reply, None).await;
            }
        }
        // Everything else goes to one target: find it from the name or URI it addresses.
        let routing = match method.as_str() {
            "tools/call" | "prompts/get" => Some(("name", "name")),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                Some(("uri", "uri"))
            }
            _ => None,
        };
        let (target, ts) = if let Some((field, _)) = routing {
            let Some(addressed) = jsonrpc::params(&msg)
                .and_then(|p| p.get(field))
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                return ok(&jsonrpc::error(
                    id,
                    Code::INVALID_PARAMS,
                    format!("{method} needs params.{field}"),
                ));
            };
            let list = match method.as_str() {
                "tools/call" => "tools/list",
                "prompts/get" => "prompts/list",
                _ => "resources/list",
            };
            let Some((t, ts, original)) = self.resolve(ctx, state, list, field, &addressed).await
            else {
                let what = if field == "uri" {
                    "resource"
                } else if method == "tools/call" {
                    "tool"
                } else {
                    "prompt"
                };
                return ok(&jsonrpc::error(
                    id,
                    Code::INVALID_PARAMS,
                    format!("unknown {what}: {addressed}"),
                ));
            };
            observed.target = Some(t.name.to_string());
            if method == "tools/call" {
                observed.tool = Some(original.clone());
                if let Some(a) = &self.authz {
                    if !a.allows(caller, &method, &t.name, &original) {
                        return ok(&jsonrpc::error(
                            id,
                            Code::INVALID_PARAMS,
                            format!("tool {addressed} is not permitted"),
                        ));
                    }
                }
            }
            // The tasks extension (2026-07-28): a modern client that declares it gets a task
            // when the tool runs as one on its (legacy) target; the gateway asks for it.
            // A tool that runs only as a task is refused (-32021) to a client without it.
            if let Some(m) = modern.filter(|m| m.tasks_offered && method == "tools/call") {
                // A modern target decides for itself under the extension: the call goes out
                // declaring it (the upgrade shim), and may or may not become a task.
                let support = match crate::upstream::modern::is_modern(&ts.version) {
                    true => Some("optional".to_string()),
                    false => self.task_support(ctx, t, ts, &original).await,
                };
                match (support.as_deref(), crate::tasks::declared(&m.capabilities)) {
                    (Some("optional" | "required"), true) => {
                        jsonrpc::params_mut(&mut msg).insert("task".into(), json!({}));
                    }
                    (Some("required"), false) => {
                        return ok(&crate::tasks::missing_extension(
                            id,
                            &format!("tool {addressed} runs only as a task"),
                        ));
                    }
                    _ => {}
                }
            }
            jsonrpc::params_mut(&mut msg).insert(field.into(), Value::from(original));
            // Tool calls, prompts and resources: the arguments (a tool's, a prompt's) through
            // the request guards, the result through the response guards.
            let what = match method.as_str() {
                "tools/call" => Some("tool call"),
                "prompts/get" => Some("prompt request"),
                "resources/read" => Some("resource request"),
                _ => None,
            };
            if let Some(asked) = what {
                if let Some(g) = caller.tool_guard {
                    let params = jsonrpc::params_mut(&mut msg);
                    if let Some(args) = params.get_mut("arguments") {
                        if let Err(guard) = g.arguments(args) {
                            return ok(&guard_refusal(id, &guard, asked));
                        }
                    }
                    // A task-augmented call answers with the task, not the tool's result:
                    // the result guards apply to `tasks/result`.
                    let augmented = method == "tools/call" && params_have_task(&msg);
                    let reply = Reply {
                        id,
                        sse,
                        guard: (!augmented).then(|| g.clone()),
                        tasks: Some(state.id.clone()),
                    };
                    return self.forward(ctx, t, ts, msg, reply, modern).await;
                }
            }
            (t, ts)
        } else if method == "completion/complete" {
            let r = jsonrpc::params(&msg)
                .and_then(|p| p.get("ref"))
                .cloned()
                .unwrap_or_default();
            let (field, list) = match r.get("type").and_then(Value::as_str) {
                Some("ref/prompt") => ("name", "prompts/list"),
                _ => ("uri", "resources/templates/list"),
            };
            let addressed = r
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let Some((t, ts, original)) = self.resolve(ctx, state, list, field, &addressed).await
            else {
                return ok(&jsonrpc::error(
                    id,
                    Code::INVALID_PARAMS,
                    format!("unknown reference: {addressed}"),
                ));
            };
            if let Some(Value::Object(r)) = jsonrpc::params_mut(&mut msg).get_mut("ref") {
                r.insert(field.into(), Value::from(original));
            }
            (t, ts)
        } else {
            let mut joined = self.joined(state);
            match (joined.next(), joined.next()) {
                (Some(only), None) => only,
                _ => {
                    return ok(&jsonrpc::error(
                        id,
                        Code::METHOD_NOT_FOUND,
                        format!("method {method} is not supported across several MCP targets"),
                    ));
                }
            }
        };
        let reply = Reply {
            id,
            sse,
            guard: None,
            tasks: Some(state.id.clone()),
        };
        self.forward(ctx, target, ts, msg, reply, modern).await
    }

    /// The target a prefixed (or, unprefixed, listed) name or URI belongs to, and the name the
    /// target knows it by.
    async fn resolve<'s>(
        &'s self,
        ctx: &CallCtx<'_>,
        state: &'s SessionState,
        list: &str,
        field: &str,
        addressed: &str,
    ) -> Option<(&'s Arc<Target>, &'s TargetSession, String)> {
        if self.prefixed {
            let (t, original) = if field == "name" {
                names::split_name(addressed)?
            } else {
                names::split_uri(addressed)?
            };
            let (t, ts) = self.joined(state).find(|(x, _)| &*x.name == t)?;
            return Some((t, ts, original.to_string()));
        }
        let mut joined = self.joined(state);
        if let (Some((t, ts)), None) = (joined.next(), joined.next()) {
            return Some((t, ts, addressed.to_string()));
        }
        // Unprefixed names over several targets: the first target that lists it owns it.
        let (key, _) = names::list_key(list)?;
        for (t, ts) in self.joined(state) {
            let page = self.list_one(ctx, t, ts, list, None, None).await.ok()?;
            let found = page
                .get(key)
                .and_then(Value::as_array)
                .is_some_and(|items| {
                    items
                        .iter()
                        .any(|i| i.get(field).and_then(Value::as_str) == Some(addressed))
                });
            if found {
                return Some((t, ts, addressed.to_string()));
            }
        }
        None
    }

    /// A tool's `execution.taskSupport` as its target lists it (none: not as a task).
    async fn task_support(
        &self,
        ctx: &CallCtx<'_>,
        t: &Target,
        ts: &TargetSession,
        tool: &str,
    ) -> Option<String> {
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let page = self
                .list_one(ctx, t, ts, "tools/list", cursor.as_deref(), None)
                .await
                .ok()?;
            let found = page
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|x| x.get("name").and_then(Value::as_str) == Some(tool));
            if let Some(x) = found {
                return x
                    .get("execution")
                    .and_then(|e| e.get("taskSupport"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            cursor = page
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_string);
            cursor.as_ref()?;
        }
        None
    }

    pub(crate) async fn list_one(
        &self,
        ctx: &CallCtx<'_>,
        t: &Target,
        ts: &TargetSession,
        method: &str,
        cursor: Option<&str>,
        caller: Option<&str>,
    ) -> Result<Value, ListError> {
        let cached = match (&self.list_cache, caller) {
            (Some(cache), Some(who)) => {
                let caps = crate::mrtr::canonical(ctx.init.get("capabilities").unwrap_or_default());
                if let Some(page) = cache.get(&t.name, method, cursor, &caps, who) {
                    return Ok(page);
                }
                Some((cache, caps, who))
            }
            _ => None,
        };
        let mut params = Map::new();
        if let Some(c) = cursor {
            params.insert("cursor".into(), Value::from(c));
        }
        let msg = json!({"jsonrpc": "2.0", "id": jsonrpc::gateway_id(), "method": method, "params": params});
        let rx = t.request(ctx, ts, msg).await.map_err(ListError::Upstream)?;
        let a = answer(rx, |_| {}).await.map_err(ListError::Upstream)?;
        if let Some(code) = a
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64)
        {
            if code == Code::METHOD_NOT_FOUND.0 as i64 {
                return Err(ListError::Unsupported);
            }
            return Err(ListError::Upstream(UpstreamError::Failed(error_text(&a))));
        }
        let page = a.get("result").cloned().unwrap_or_default();
        if let Some((cache, caps, who)) = cached {
            cache.put(&t.name, method, cursor, &caps, who, &page);
        }
        Ok(page)
    }

    /// A `*/list` across the session's targets: items renamed, tools the caller may not call
    /// left out, and one cursor carrying every target's next page.
    async fn list(
        &self,
        ctx: &CallCtx<'_>,
        state: &SessionState,
        msg: &Value,
        caller: &Caller<'_>,
        modern: Option<&Modern>,
    ) -> Result<Value, RpcError> {
        let method = jsonrpc::method(msg);
        let (key, field) = names::list_key(method).unwrap_or(("items", "name"));
        let pages = cursor_pages(msg)?;
        let queries = self.paged_targets(state, pages.as_ref());
        let who = self
            .list_cache
            .as_ref()
            .map(|_| crate::cache::caller_key(caller));
        let results = join_all(
            queries
                .iter()
                .map(|(t, ts, c)| boxed(self.list_one(ctx, t, ts, method, *c, who.as_deref()))),
        )
        .await;
        let mut items = Vec::new();
        let mut next = BTreeMap::new();
        // The merged answer's caching hints: the shortest lifetime, public only if every page
        // is and no per-caller authorization filtered it.
        let mut ttl: Option<std::time::Duration> = None;
        let mut public = self.authz.is_none();
        for ((t, _, _), r) in queries.iter().zip(results) {
            if let (Some(m), Err(ListError::Upstream(UpstreamError::SessionGone))) = (modern, &r) {
                m.gone.store(true, std::sync::atomic::Ordering::Release);
            }
            let page = match r {
                Ok(p) => p,
                Err(ListError::Unsupported) => continue,
                Err(ListError::Upstream(UpstreamError::SessionGone))
                    if self.failure == FailureMode::FailClosed =>
                {
                    return Err(RpcError::new(
                        Code::INTERNAL_ERROR,
                        format!(
                            "MCP target {}: the upstream session expired; start a new session",
                            t.name
                        ),
                    ));
                }
                Err(ListError::Upstream(e)) => {
                    if self.failure == FailureMode::FailOpen {
                        tracing::warn!(mcp_target = %t.name, error = %e, "MCP target left out of {method} (failOpen)");
                        continue;
                    }
                    return Err(RpcError::new(
                        Code::INTERNAL_ERROR,
                        format!("MCP target {} failed: {e}", t.name),
                    ));
                }
            };
            let (page_ttl, page_public) = crate::cache::hints(&page);
            ttl = Some(ttl.map_or(page_ttl, |t| t.min(page_ttl)));
            public &= page_public;
            if let Some(c) = page.get("nextCursor").and_then(Value::as_str) {
                next.insert(t.name.to_string(), c.to_string());
            }
            let Some(Value::Array(list)) = page.get(key).cloned() else {
                continue;
            };
            for mut item in list {
                if key == "tools" {
                    if let (Some(a), Some(name)) =
                        (&self.authz, item.get("name").and_then(Value::as_str))
                    {
                        if !a.allows(caller, "tools/call", &t.name, name) {
                            continue;
                        }
                    }
                }
                if self.prefixed {
                    names::prefix_item(&mut item, field, &t.name);
                }
                items.push(item);
            }
        }
        let mut result = Map::new();
        result.insert(key.into(), Value::Array(items));
        if !next.is_empty() {
            result.insert("nextCursor".into(), Value::from(encode_cursor(&next)));
        }
        if modern.is_some() {
            let ms = ttl.unwrap_or_default().as_millis() as u64;
            result.insert("ttlMs".into(), Value::from(ms));
            let scope = if public { "public" } else { "private" };
            result.insert("cacheScope".into(), Value::from(scope));
        }
        Ok(Value::Object(result))
    }

    /// `tasks/list` across the session's targets: their tasks under handles, one cursor
    /// carrying every target's next page. Targets without tasks are left out.
    async fn list_tasks(
        &self,
        ctx: &CallCtx<'_>,
        state: &SessionState,
        msg: &Value,
    ) -> Result<Value, RpcError> {
        let pages = cursor_pages(msg)?;
        let queries = self.paged_targets(state, pages.as_ref());
        let results = join_all(
            queries
                .iter()
                .map(|(t, ts, c)| boxed(self.list_one(ctx, t, ts, "tasks/list", *c, None))),
        )
        .await;
        let mut tasks = Vec::new();
        let mut next = BTreeMap::new();
        for ((t, _, _), r) in queries.iter().zip(results) {
            let page = match r {
                Ok(p) => p,
                Err(ListError::Unsupported) => continue,
                Err(ListError::Upstream(e)) if self.failure == FailureMode::FailOpen => {
                    tracing::warn!(mcp_target = %t.name, error = %e, "MCP target left out of tasks/list (failOpen)");
                    continue;
                }
                Err(ListError::Upstream(e)) => {
                    return Err(RpcError::new(
                        Code::INTERNAL_ERROR,
                        format!("MCP target {} failed: {e}", t.name),
                    ));
                }
            };
            if let Some(c) = page.get("nextCursor").and_then(Value::as_str) {
                next.insert(t.name.to_string(), c.to_string());
            }
            let mut page = json!({"jsonrpc": "2.0", "id": 0, "result": page});
            crate::tasks::seal_message(&self.sealer, &state.id, &t.name, &mut page);
            if let Some(Value::Array(list)) = page["result"].get_mut("tasks").map(Value::take) {
                tasks.extend(list);
            }
        }
        let mut result = Map::new();
        result.insert("tasks".into(), Value::Array(tasks));
        if !next.is_empty() {
            result.insert("nextCursor".into(), Value::from(encode_cursor(&next)));
        }
        Ok(Value::Object(result))
    }

    /// Sends a request to one target and relays what comes back: a JSON answer when the
    /// answer is all there is (or the client takes only JSON), else an SSE stream.
    async fn forward(
        &self,
        ctx: &CallCtx<'_>,
        t: &Arc<Target>,
        ts: &TargetSession,
        msg: Value,
        reply: Reply,
        modern: Option<&Modern>,
    ) -> Response<Body> {
        if let Some(m) = modern {
            return self.forward_modern(ctx, t, ts, msg, reply, m).await;
        }
        let Reply {
            id,
            sse,
            guard,
            tasks,
        } = reply;
        let sealer = self.sealer.clone();
        let seal = move |mut m: Value, target: &str| {
            if let Some(scope) = &tasks {
                crate::tasks::seal_message(&sealer, scope, target, &mut m);
            }
            m
        };
        let mut rx = match t.request(ctx, ts, msg).await {
            Ok(rx) => rx,
            Err(UpstreamError::SessionGone) => {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &jsonrpc::error(
                        id,
                        SESSION_NOT_FOUND,
                        format!(
                            "MCP target {}: the upstream session expired; start a new session",
                            t.name
                        ),
                    ),
                )
            }
            Err(e) => return ok(&target_failed(id, &t.name, &e)),
        };
        let prefixed = self.prefixed;
        let name = t.name.clone();
        let first = match rx.recv().await {
            Some(m) => m,
            None => {
                return ok(&target_failed(
                    id,
                    &t.name,
                    &UpstreamError::Failed("it closed the call without answering".into()),
                ))
            }
        };
        if jsonrpc::kind(&first) == Kind::Response {
            return ok(&seal(
                from_upstream(guarded(first, &guard), &name, prefixed),
                &name,
            ));
        }
        if !sse {
            // A client that takes only JSON cannot be asked anything: a target's question is
            // refused at once rather than left waiting for an answer that cannot come.
            let mut next = Some(first);
            let a = loop {
                let m = match next.take() {
                    Some(m) => m,
                    None => match rx.recv().await {
                        Some(m) => m,
                        None => {
                            break Err(UpstreamError::Failed(
                                "it closed the call without answering".into(),
                            ))
                        }
                    },
                };
                match jsonrpc::kind(&m) {
                    Kind::Response => break Ok(m),
                    Kind::Request => {
                        let refusal = jsonrpc::error(
                            jsonrpc::id(&m),
                            Code::METHOD_NOT_FOUND,
                            "the client takes no event stream, so it cannot be asked",
                        );
                        if let Err(e) = t.send(ctx, ts, &refusal).await {
                            tracing::debug!(mcp_target = %t.name, error = %e, "refusal not delivered");
                        }
                    }
                    _ => {}
                }
            };
            return ok(&match a {
                Ok(m) => seal(from_upstream(guarded(m, &guard), &name, prefixed), &name),
                Err(e) => target_failed(id, &name, &e),
            });
        }
        let (tx, out) = mpsc::channel::<Event>(64);
        let log = ctx.local.events.clone();
        let stream = log.open(StreamKind::Post);
        tokio::spawn(async move {
            // Read to the answer even if the client left: it may resume with Last-Event-ID.
            let mut client = Some(tx);
            let mut pending = Some(first);
            loop {
                let m = match pending.take() {
                    Some(m) => m,
                    None => match rx.recv().await {
                        Some(m) => m,
                        // The target went away mid-call: the client still gets an answer.
                        None => target_failed(
                            id.clone(),
                            &name,
                            &UpstreamError::Failed("it closed the call without answering".into()),
                        ),
                    },
                };
                let done = jsonrpc::kind(&m) == Kind::Response;
                let m = match done {
                    true => guarded(m, &guard),
                    false => m,
                };
                let m = seal(from_upstream(m, &name, prefixed), &name);
                let event = Event {
                    id: Some(log.record(stream, &m)),
                    msg: m,
                };
                if let Some(tx) = &client {
                    if tx.send(event).await.is_err() {
                        client = None;
                    }
                }
                if done {
                    break;
                }
            }
            log.finish(stream);
        });
        sse_response(out, Opts::default())
    }
}

impl Gateway {
    /// A modern client's request to one target: the exchange runs in rounds ([`crate::mrtr`]).
    /// The target sees a gateway id (pooled sessions are shared: clients' ids could collide).
    async fn forward_modern(
        &self,
        ctx: &CallCtx<'_>,
        t: &Arc<Target>,
        ts: &TargetSession,
        mut msg: Value,
        reply: Reply,
        m: &Modern,
    ) -> Response<Body> {
        msg["id"] = jsonrpc::gateway_id();
        let rx = match t.request(ctx, ts, msg).await {
            Ok(rx) => rx,
            Err(e) => {
                if e == UpstreamError::SessionGone {
                    m.gone.store(true, std::sync::atomic::Ordering::Release);
                }
                return ok(&target_failed(reply.id, &t.name, &e));
            }
        };
        let ex = Exchange {
            rx,
            target: t.clone(),
            ts: ts.clone(),
            local: ctx.local.clone(),
            init: ctx.init.clone(),
            fwd: ctx.headers.clone(),
            guard: reply.guard,
            prefixed: self.prefixed,
            method: m.method.clone(),
            digest: m.digest.clone(),
            principal: m.principal.clone(),
            capabilities: m.capabilities.clone(),
            log_level: m.log_level,
            pre: m.pre.clone(),
            asks: Vec::new(),
        };
        self.rounds().drive(ex, reply.id, reply.sse).await
    }
}

/// Whether a request asks for task-augmented execution (`params.task`).
fn params_have_task(msg: &Value) -> bool {
    jsonrpc::params(msg).is_some_and(|p| p.get("task").is_some_and(Value::is_object))
}

/// How a forwarded request is answered: its id, whether as an SSE stream, and the guards on a
/// tool call's result.
struct Reply {
    id: Value,
    sse: bool,
    guard: Option<Arc<dyn ToolGuard>>,
    /// The session whose task handles the target's task ids become ([`crate::tasks`]).
    tasks: Option<String>,
}

/// A guarded answer (a tool call's, a prompt's, a resource's) after the route's guards: its
/// `result` masked, or replaced by an error naming the guard.
pub(crate) fn guarded(mut m: Value, guard: &Option<Arc<dyn ToolGuard>>) -> Value {
    let Some(g) = guard else {
        return m;
    };
    let Some(result) = m.get_mut("result") else {
        return m;
    };
    match g.result(result) {
        Ok(()) => m,
        Err(name) => guard_refusal(m.get("id").cloned().unwrap_or(Value::Null), &name, "result"),
    }
}

/// The JSON-RPC error of a guard's refusal (the stable code and the guard, never the text).
fn guard_refusal(id: Value, guard: &str, what: &str) -> Value {
    jsonrpc::error_with(
        id,
        Code::INVALID_PARAMS,
        format!("guardrail_rejected: the {what} was refused by guardrail {guard:?}"),
        Some(json!({"code": "guardrail_rejected", "guard": guard})),
    )
}

pub(crate) fn target_failed(id: Value, target: &str, e: &UpstreamError) -> Value {
    jsonrpc::error_with(
        id,
        Code::INTERNAL_ERROR,
        format!("MCP target {target} failed: {e}"),
        Some(json!({"target": target})),
    )
}

pub(crate) enum ListError {
    Unsupported,
    Upstream(UpstreamError),
}

/// The per-target cursors a merged list's `cursor` carries (`None`: the first page); a
/// cursor the gateway did not make is -32602.
fn cursor_pages(msg: &Value) -> Result<Option<BTreeMap<String, String>>, RpcError> {
    match jsonrpc::params(msg)
        .and_then(|p| p.get("cursor"))
        .and_then(Value::as_str)
    {
        None => Ok(None),
        Some(c) => decode_cursor(c)
            .map(Some)
            .ok_or_else(|| RpcError::new(Code::INVALID_PARAMS, "invalid cursor")),
    }
}
