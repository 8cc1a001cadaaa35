//! The `a2a` backend: an A2A agent at `host:port`. Every request is forwarded as the `host`
//! backend would (same backend-phase policies); what A2A adds, with the protocol logic in the
//! `a2a` crate:
//!
//! - the request is classified (binding, operation, `A2A-Version`, task) for telemetry and
//!   for errors in the binding's own shape; a malformed JSON-RPC body is refused here
//!   (-32700 / -32600, HTTP 400) instead of reaching the agent;
//! - agent cards (well-known paths, the extended card of each binding) are rewritten so their
//!   interfaces point at the gateway, as the client reached it, and signed with the gateway's
//!   key when one is configured (its JWK set at [`JWKS_PATH`] under the route);
//! - push-notification callback URLs are checked against the backend's allow-list;
//! - answers are watched as they pass (SSE event by event, JSON teed up to a bound) for the
//!   task id, context id, state and artifacts; nothing is held back from the client.
//!
//! `A2A-Version` and `A2A-Extensions` are end-to-end headers and travel as they are.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use ::a2a::classify::HeadClass;
use ::a2a::{jsonrpc, push, Binding, BindingSet, ErrorDialect, Operation, ProtocolVersion};

use super::a2a_affinity::{self as affinity, TaskAffinity};
use super::{Adapter, Affinity, Attempt, Failure, Head, RefusalNeeds, UpstreamRequest};
use crate::body::{self, Body, BoxError};
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::observe::A2aSlot;
use crate::policy::BackendPolicies;
use crate::upstream::Upstream;

/// Largest agent card read for rewriting; a larger one is refused (502), never passed on
/// with the agent's own URLs in it.
const MAX_CARD_BYTES: usize = 1 << 20;
/// Largest JSON answer teed for telemetry; past it the answer still streams, unobserved.
const MAX_OBSERVED_JSON: usize = 1 << 20;

/// Where, under the route's path, the JWK set of the gateway's card-signing key is served.
pub const JWKS_PATH: &str = "/.well-known/switchyard/jwks.json";

pub struct A2aBackend {
    pub upstream: Upstream,
    bindings: BindingSet,
    push_allow: Option<push::AllowList>,
    /// Signs rewritten cards; `None`: their stale signatures are removed.
    signer: Option<::a2a::CardSigner>,
    /// The agent's card as last read for the listener's catalog.
    card_cache: CardCache,
    /// Set when the route has several `a2a` backends: task ids name their backend.
    affinity: Option<TaskAffinity>,
    /// The one version the agent speaks (`agentVersion`): JSON-RPC calls of the other are
    /// translated.
    agent_version: Option<ProtocolVersion>,
    /// `pushRelay`: the gateway stands in as the push-notification callback.
    relay: Option<Relay>,
}

/// The push-notification relay of a backend.
struct Relay {
    /// Where the agent reaches the route (no trailing slash).
    base: String,
    /// Seals the client's URL (and this backend's name) into the relay URL's token.
    sealer: Arc<::a2a::TaskSealer>,
}

/// Gives the `a2a` backends of a route their task affinity, when it has several.
pub(crate) fn share_tasks(
    backends: &mut [crate::snapshot::BackendRt],
    route_policies: Option<&config::Policies>,
) -> Result<(), String> {
    let count = backends
        .iter()
        .filter(|b| matches!(b.adapter, super::Backend::A2a(_)))
        .count();
    let key = route_policies
        .and_then(|p| p.a2a.as_ref())
        .and_then(|a| a.task_key.as_ref());
    let relays = backends
        .iter()
        .any(|b| matches!(&b.adapter, super::Backend::A2a(a) if a.relay.is_some()));
    if count < 2 && !relays {
        return Ok(());
    }
    let sealer = Arc::new(match key {
        Some(k) => ::a2a::TaskSealer::new(Some(k.expose()))?,
        // One random key for the life of the process, so a reload keeps the tasks.
        None => ::a2a::TaskSealer::new(Some(process_task_key()?))?,
    });
    // Push relay tokens open on every replica that shares the route's key.
    for b in backends.iter_mut() {
        if let super::Backend::A2a(a) = &mut b.adapter {
            if let Some(relay) = &mut a.relay {
                relay.sealer = sealer.clone();
            }
        }
    }
    if count < 2 {
        return Ok(());
    }
    let names: Arc<[Arc<str>]> = backends.iter().map(|b| b.name.clone()).collect();
    for b in backends.iter_mut() {
        let own = b.name.clone();
        if let super::Backend::A2a(a) = &mut b.adapter {
            a.affinity = Some(TaskAffinity {
                sealer: sealer.clone(),
                backends: names.clone(),
                own,
            });
        }
    }
    Ok(())
}

fn process_task_key() -> Result<&'static str, String> {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(k) = KEY.get() {
        return Ok(k);
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        "cannot make a random A2A task key: the OS randomness source failed (set \
         policies.a2a.taskKey)"
            .to_string()
    })?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(KEY.get_or_init(|| hex))
}

/// An agent's card (as the agent sent it) kept for [`crate::catalog::CARD_TTL`].
#[derive(Default)]
struct CardCache(Mutex<Option<(std::time::Instant, Bytes)>>);

impl CardCache {
    fn get(&self) -> Option<Bytes> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((at, card)) if at.elapsed() < crate::catalog::CARD_TTL => Some(card.clone()),
            _ => None,
        }
    }

    fn put(&self, card: Bytes) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), card));
    }
}

impl A2aBackend {
    pub(crate) fn compile(cfg: &config::A2aBackend, upstream: Upstream) -> Result<Self, String> {
        let bindings = match &cfg.bindings {
            None => BindingSet {
                json_rpc: true,
                http_json: true,
                grpc: false,
            },
            Some(list) => BindingSet {
                json_rpc: list.contains(&config::A2aBinding::JsonRpc),
                http_json: list.contains(&config::A2aBinding::HttpJson),
                grpc: list.contains(&config::A2aBinding::Grpc),
            },
        };
        let push_allow = cfg
            .push_notification_allow_list
            .as_deref()
            .map(push::AllowList::new)
            .transpose()
            .map_err(|e| format!("pushNotificationAllowList: {e}"))?;
        let signer = cfg
            .card_signing
            .as_ref()
            .map(|cs| ::a2a::CardSigner::from_pem(cs.key.expose(), cs.alg.to_a2a(), &cs.key_id))
            .transpose()
            .map_err(|e| format!("cardSigning.key: {e}"))?;
        Ok(A2aBackend {
            upstream,
            bindings,
            push_allow,
            signer,
            card_cache: CardCache::default(),
            affinity: None,
            agent_version: cfg.agent_version.map(config::A2aVersion::to_a2a),
            relay: cfg
                .push_relay
                .as_ref()
                .map(|r| -> Result<Relay, String> {
                    if cfg.push_notification_allow_list.is_none() {
                        return Err("pushRelay needs pushNotificationAllowList: the gateway \
                                    relays only to allowed hosts"
                            .into());
                    }
                    let base = r.callback_url.trim_end_matches('/').to_string();
                    let uri: http::Uri = base
                        .parse()
                        .map_err(|_| format!("pushRelay.callbackUrl {base:?} is not a URL"))?;
                    if !matches!(uri.scheme_str(), Some("http" | "https")) {
                        return Err("pushRelay.callbackUrl must be http or https".into());
                    }
                    Ok(Relay {
                        base,
                        sealer: Arc::new(::a2a::TaskSealer::new(Some(process_task_key()?))?),
                    })
                })
                .transpose()?,
        })
    }

    fn classify(&self, parts: &Parts, headers: &HeaderMap) -> (HeadClass, ProtocolVersion) {
        let version = ProtocolVersion::from_header(
            headers
                .get(::a2a::VERSION_HEADER)
                .map(HeaderValue::as_bytes),
        );
        let content_type = headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes);
        let class = ::a2a::classify_http(&parts.method, parts.uri.path(), content_type, version);
        (class, version)
    }
}

impl Adapter for A2aBackend {
    fn kind(&self) -> &'static str {
        "a2a"
    }

    /// JSON-RPC names its operation in the body; an HTTP+JSON push config is read when an
    /// allow-list must check it. Everything else streams.
    fn head(&self, req: &Parts) -> Head {
        let class = self.classify(req, &req.headers).0;
        if self.affinity.is_some() && affinity::reads_body(&class) {
            return Head {
                needs_whole_body: true,
                dialect: None,
            };
        }
        let needs_whole_body = match class {
            HeadClass::JsonRpc => true,
            HeadClass::Known(call) => {
                call.binding == Binding::HttpJson
                    && self.push_allow.is_some()
                    && call.operation.may_carry_push_config()
            }
            HeadClass::Other => false,
        };
        Head {
            needs_whole_body,
            dialect: None,
        }
    }

    /// A request naming a sealed task goes to the backend that owns it.
    fn affinity(&self, req: &Parts, body: Option<&Bytes>) -> Affinity {
        let Some(aff) = &self.affinity else {
            return Affinity::Any;
        };
        let (class, version) = self.classify(req, &req.headers);
        affinity::route(aff, &class, version, body)
    }

    /// Browser clients read the version and extensions the agent answered with.
    fn cors_expose(&self) -> Option<HeaderValue> {
        Some(HeaderValue::from_static("a2a-version, a2a-extensions"))
    }

    /// The call as the head (and, when the route's policies read it, the body) tells it:
    /// the binding's error shape, and the `a2a` CEL variable route policies decide on.
    fn classify_early(&self, ctx: &mut RequestCtx<'_>, req: &Parts, body: Option<&Bytes>) {
        let (class, version) = self.classify(req, &req.headers);
        let mut record = telemetry::A2aRecord {
            version: version.as_str(),
            ..Default::default()
        };
        match class {
            HeadClass::Other => return,
            // The head told everything already.
            HeadClass::Known(_) if body.is_some() => return,
            HeadClass::Known(call) => {
                ctx.a2a_errors = Some(dialect_of(call.binding, version));
                record.binding = call.binding.as_str();
                record.method = call.operation.as_str();
                record.task_id = call.task_id.map(|t| self.agent_id(t));
            }
            HeadClass::JsonRpc => {
                let Some(raw) = body else {
                    ctx.a2a_errors = Some(ErrorDialect::JsonRpc {
                        id: serde_json::Value::Null,
                    });
                    return;
                };
                // A malformed call is answered by `send`, in JSON-RPC's terms.
                let Ok(call) = jsonrpc::parse_request(raw) else {
                    return;
                };
                ctx.a2a_errors = Some(ErrorDialect::JsonRpc { id: call.id });
                record.binding = Binding::JsonRpc.as_str();
                record.method = call.operation.as_str();
                if let Some(v) = call.method_version {
                    record.version = v.as_str();
                }
                record.task_id = call.task_id.map(|t| self.agent_id(t));
                record.context_id = call.context_id.map(|t| self.agent_id(t));
                record.skill = call.skill;
            }
        }
        // Before a backend is chosen, the agent is known when the route has only one.
        if let [only] = &ctx.route.backends[..] {
            record.agent = Some(only.name.clone());
        }
        ctx.trail.a2a = Some(Arc::new(Mutex::new(Some(record))));
    }

    fn shapes_refusals(&self, ctx: &RequestCtx<'_>) -> Option<RefusalNeeds> {
        let dialect = ctx.a2a_errors.as_ref()?;
        Some(RefusalNeeds {
            request_body: matches!(dialect, ErrorDialect::JsonRpc { id } if id.is_null()),
        })
    }

    /// The gateway's own refusals (`{"error": {"code", "message"}}`) in the caller's binding,
    /// with the policy's status and headers (`WWW-Authenticate`, `Retry-After`, rate-limit
    /// state); anything else a policy answers (a configured direct response) stays as it is.
    fn refusal(
        &self,
        ctx: &RequestCtx<'_>,
        resp: Response<Body>,
        answer: &Bytes,
        request: Option<&Bytes>,
    ) -> Response<Body> {
        let Some(dialect) = ctx.a2a_errors.as_ref() else {
            return resp;
        };
        if resp.status().as_u16() < 400 {
            return resp;
        }
        let Some((code, message)) = gateway_error(answer) else {
            return resp;
        };
        let dialect = match (dialect, request) {
            (ErrorDialect::JsonRpc { id }, Some(raw)) if id.is_null() => ErrorDialect::JsonRpc {
                id: jsonrpc::parse_request(raw)
                    .map(|r| r.id)
                    .unwrap_or(serde_json::Value::Null),
            },
            (d, _) => d.clone(),
        };
        let shaped = dialect.response(resp.status().as_u16(), &code, &message);
        let (mut head, _) = resp.into_parts();
        head.headers.remove(header::CONTENT_LENGTH);
        let (shaped_head, body) = error_response(shaped).into_parts();
        head.status = shaped_head.status;
        for (name, value) in shaped_head.headers {
            if let Some(name) = name {
                head.headers.insert(name, value);
            }
        }
        Response::from_parts(head, body)
    }

    fn error_response(&self, ctx: &RequestCtx<'_>, e: &ProxyError) -> Option<Response<Body>> {
        let dialect = ctx.a2a_errors.as_ref()?;
        Some(error_response(dialect.response(
            e.status.as_u16(),
            e.code,
            &e.message,
        )))
    }

    async fn send(
        &self,
        policies: &BackendPolicies,
        attempt: Attempt<'_>,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<Response<Body>, Failure> {
        let Attempt {
            parts,
            mut headers,
            mut body,
            raw,
        } = attempt;
        if let Some(signer) = &self.signer {
            if parts.method == http::Method::GET && parts.uri.path().ends_with(JWKS_PATH) {
                let jwks = ::a2a::CardSigner::jwks([signer]);
                let mut resp = json_response(StatusCode::OK, jwks.to_string().into_bytes());
                resp.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                );
                return Ok(resp);
            }
        }
        if let Some(relay) = &self.relay {
            if let Some(token) = parts.uri.path().split_once(::a2a::push::RELAY_PATH) {
                let token = token.1.to_string();
                return self.relay(relay, &token, parts, &headers, body, ctx).await;
            }
        }
        let (class, version) = self.classify(parts, &headers);
        let mut record = telemetry::A2aRecord {
            version: version.as_str(),
            ..Default::default()
        };
        // Where a card returned by this call sits in the answer (JSON-RPC: under `result`).
        let mut card_in_result = false;
        // The task id an HTTP+JSON path names (sealed, under task affinity).
        let mut path_task: Option<String> = None;
        // A JSON-RPC call translated for the agent: (the client's version, the agent's).
        let mut translate: Option<(ProtocolVersion, ProtocolVersion)> = None;
        let operation = match class {
            HeadClass::Other => {
                let req = UpstreamRequest::to(&self.upstream)
                    .build(parts, headers, body, policies, ctx)
                    .map_err(Failure::Fatal)?;
                return super::timed_call(&self.upstream, req, policies, ctx).await;
            }
            HeadClass::Known(call) => {
                ctx.a2a_errors = Some(match call.binding {
                    Binding::JsonRpc | Binding::HttpJson => ErrorDialect::HttpJson { version },
                    Binding::Grpc => ErrorDialect::Grpc,
                });
                record.binding = call.binding.as_str();
                if call.binding == Binding::HttpJson {
                    path_task.clone_from(&call.task_id);
                }
                record.task_id = call.task_id;
                record.method = call.operation.as_str();
                if call.binding == Binding::HttpJson {
                    if let Some(refusal) = self.check_push(call.operation, raw.map(|b| &b[..])) {
                        refused(ctx, record);
                        return Ok(error_response(ErrorDialect::HttpJson { version }.response(
                            403,
                            "a2a_push_url_not_allowed",
                            &refusal,
                        )));
                    }
                } else if call.binding == Binding::Grpc
                    && self.push_allow.is_some()
                    && call.operation == Operation::CreatePushConfig
                {
                    // Protobuf bodies are not read here: a config the gateway cannot check
                    // is refused rather than passed unchecked.
                    refused(ctx, record);
                    return Ok(error_response(ErrorDialect::Grpc.response(
                        403,
                        "a2a_push_url_not_allowed",
                        "push-notification configs over gRPC cannot be checked against the allow-list",
                    )));
                }
                call.operation
            }
            HeadClass::JsonRpc => {
                record.binding = Binding::JsonRpc.as_str();
                ctx.a2a_errors = Some(ErrorDialect::JsonRpc {
                    id: serde_json::Value::Null,
                });
                match raw {
                    // Past the buffering limit: forwarded unread (the agent answers it).
                    None if self.push_allow.is_none() => Operation::Unknown,
                    None => {
                        ctx.error = Some("a2a_push_url_not_allowed");
                        let e = ProxyError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "a2a_push_url_not_allowed",
                            "the JSON-RPC request is too large to check its push-notification config",
                        );
                        return Ok(self
                            .error_response(ctx, &e)
                            .unwrap_or_else(|| e.into_response()));
                    }
                    Some(raw) => match jsonrpc::parse_request(raw) {
                        Err(e) => {
                            ctx.error = Some("a2a_invalid_jsonrpc");
                            let body = jsonrpc::error_body(&e.id, e.code, &e.message, None);
                            return Ok(json_response(StatusCode::BAD_REQUEST, body));
                        }
                        Ok(req) => {
                            ctx.a2a_errors = Some(ErrorDialect::JsonRpc { id: req.id.clone() });
                            let params = req.params.map(|p| p.get().as_bytes());
                            record.method = req.operation.as_str();
                            if let Some(refusal) = self.check_push(req.operation, params) {
                                refused(ctx, record);
                                let body = jsonrpc::error_body(
                                    &req.id,
                                    jsonrpc::INVALID_PARAMS,
                                    &refusal,
                                    Some(serde_json::json!({"code": "a2a_push_url_not_allowed"})),
                                );
                                return Ok(json_response(StatusCode::FORBIDDEN, body));
                            }
                            if let Some(v) = req.method_version {
                                record.version = v.as_str();
                            }
                            if let (Some(agent), Some(client)) =
                                (self.agent_version, req.method_version)
                            {
                                if agent != client && ::a2a::translate::translatable(req.operation)
                                {
                                    translate = Some((client, agent));
                                }
                            }
                            record.task_id = req.task_id;
                            record.context_id = req.context_id;
                            record.skill = req.skill;
                            card_in_result = req.operation == Operation::GetExtendedAgentCard;
                            req.operation
                        }
                    },
                }
            }
        };
        record.method = operation.as_str();
        record.agent = ctx.backend.map(|b| b.name.clone());
        if let (Operation::ListTasks, Some(aff)) = (operation, &self.affinity) {
            // Every agent of the route holds tasks: the listing is theirs merged.
            let asked = match (record.binding == Binding::JsonRpc.as_str(), raw) {
                (true, Some(raw)) => Some(super::a2a_list::Asked::JsonRpc(raw)),
                (false, _) if record.binding == Binding::HttpJson.as_str() => {
                    Some(super::a2a_list::Asked::Rest)
                }
                _ => None,
            };
            if let (Some(asked), Some(dialect)) = (asked, ctx.a2a_errors.clone()) {
                ctx.trail.a2a = Some(Arc::new(Mutex::new(Some(record))));
                return super::a2a_list::fan_out(aff, parts, &headers, asked, &dialect, ctx).await;
            }
        }
        let rewrites_card = operation.returns_card() && record.binding != Binding::Grpc.as_str();
        let origin = match rewrites_card {
            true => Some(self.origin(ctx, parts, &headers)?),
            false => None,
        };
        if rewrites_card {
            // The card is read and rewritten: ask for it whole and uncompressed.
            for h in [
                header::IF_NONE_MATCH,
                header::IF_MODIFIED_SINCE,
                header::ACCEPT_ENCODING,
            ] {
                headers.remove(h);
            }
        }
        // Under task affinity the agent gets its own task ids back.
        let mut path_fix = None;
        let mut keep_context = None;
        let mut opened_body: Option<Bytes> = None;
        // The body as translated for the agent, when it was.
        let mut relayed_source: Option<Bytes> = None;
        let ctx_backend: Arc<str> = ctx.backend.map(|b| b.name.clone()).unwrap_or_default();
        if let Some(aff) = &self.affinity {
            let rpc_op = (record.binding == Binding::JsonRpc.as_str()).then_some(operation);
            let opened = affinity::open_request(aff, raw, rpc_op, path_task.as_deref());
            if let Some(b) = opened.body {
                affinity::set_length(&mut headers, b.len());
                body = affinity::body_of(b.clone());
                opened_body = Some(b);
            }
            keep_context = opened.client_context;
            if let Some(opened) = record.task_id.as_deref().and_then(|t| aff.sealer.open(t)) {
                record.task_id = Some(opened.task_id);
            }
            if let Some(opened) = record
                .context_id
                .as_deref()
                .and_then(|t| aff.sealer.open(t))
            {
                record.context_id = Some(opened.task_id);
            }
            if let (Some(sealed), Some(raw_id)) = (path_task, opened.path_task) {
                path_fix = Some((sealed, raw_id));
            }
        }
        if let Some((_, agent)) = translate {
            // The call in the agent's version (its ids already the agent's own).
            let source = opened_body.as_ref().or(raw);
            let translated = source
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .and_then(|mut v| {
                    ::a2a::translate::request(&mut v, operation, agent);
                    serde_json::to_vec(&v).ok()
                });
            match translated {
                Some(b) => {
                    let b = Bytes::from(b);
                    relayed_source = Some(b.clone());
                    affinity::set_length(&mut headers, b.len());
                    body = affinity::body_of(b);
                    headers.insert(
                        ::a2a::VERSION_HEADER,
                        HeaderValue::from_static(agent.as_str()),
                    );
                }
                None => translate = None,
            }
        }
        let relays = self.relay.is_some()
            && operation.may_carry_push_config()
            && record.binding != Binding::Grpc.as_str();
        if let (Some(relay), true) = (&self.relay, relays) {
            // The agent gets the gateway's callback in place of the client's.
            let source = relayed_source.as_ref().or(opened_body.as_ref()).or(raw);
            let rpc = record.binding == Binding::JsonRpc.as_str();
            let rewritten = source
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .and_then(|mut v| {
                    let target = match rpc {
                        true => v.get_mut("params")?,
                        false => &mut v,
                    };
                    let n = ::a2a::push::replace_callback_urls(operation, target, &mut |url| {
                        let token = ::a2a::push::relay_token(&relay.sealer, &ctx_backend, url);
                        format!("{}{}{token}", relay.base, ::a2a::push::RELAY_PATH)
                    });
                    (n > 0).then(|| serde_json::to_vec(&v).ok()).flatten()
                });
            if let Some(b) = rewritten {
                affinity::set_length(&mut headers, b.len());
                body = affinity::body_of(Bytes::from(b));
            }
        }
        let slot = Arc::new(Mutex::new(Some(record)));
        ctx.trail.a2a = Some(slot.clone());
        // The catalog's fetches of the public card share one recent copy.
        let cache = (operation == Operation::GetAgentCard
            && parts
                .extensions
                .get::<crate::catalog::CatalogFetch>()
                .is_some())
        .then_some(&self.card_cache);
        if let (Some(origin), Some(card)) = (&origin, cache.and_then(CardCache::get)) {
            let resp = json_response(StatusCode::OK, card);
            return self
                .rewrite_card_response(resp, origin, false, None, policies, ctx)
                .await;
        }
        let mut req = UpstreamRequest::to(&self.upstream)
            .build(parts, headers, body, policies, ctx)
            .map_err(Failure::Fatal)?;
        if let Some((sealed, raw_id)) = &path_fix {
            affinity::patch_path(&mut req, sealed, raw_id);
        }
        let resp = super::timed_call(&self.upstream, req, policies, ctx).await?;
        if let Some(origin) = origin {
            return self
                .rewrite_card_response(resp, &origin, card_in_result, cache, policies, ctx)
                .await;
        }
        let resp = match translate {
            Some((client, _)) => translate_answer(resp, operation, client).await?,
            None => resp,
        };
        let resp = match &self.relay {
            Some(relay)
                if matches!(
                    operation,
                    Operation::CreatePushConfig
                        | Operation::GetPushConfig
                        | Operation::ListPushConfigs
                ) =>
            {
                restore_relayed_urls(resp, relay).await?
            }
            _ => resp,
        };
        let resp = watch(resp, slot, operation.streams());
        match &self.affinity {
            Some(aff) => affinity::seal_response(resp, aff, keep_context).await,
            None => Ok(resp),
        }
    }
}

/// The error shape of a binding.
fn dialect_of(binding: Binding, version: ProtocolVersion) -> ErrorDialect {
    match binding {
        Binding::JsonRpc => ErrorDialect::JsonRpc {
            id: serde_json::Value::Null,
        },
        Binding::HttpJson => ErrorDialect::HttpJson { version },
        Binding::Grpc => ErrorDialect::Grpc,
    }
}

/// The stable code and message of the gateway's own error body.
fn gateway_error(answer: &[u8]) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Doc {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        message: String,
    }
    let d: Doc = serde_json::from_slice(answer).ok()?;
    Some((d.error.code, d.error.message))
}

/// Largest request prefix read to find a JSON-RPC id for an error the gateway writes before
/// the body was read (a refusal, an unknown agent); past it the id is `null`.
pub(crate) const ID_READ_LIMIT: usize = 64 * 1024;

/// The request body, when it is whole within [`ID_READ_LIMIT`] and arrives within 2 s.
pub(crate) async fn read_for_id(body: Body) -> Option<Bytes> {
    let read = body::buffer_for_replay(body, ID_READ_LIMIT);
    match tokio::time::timeout(std::time::Duration::from_secs(2), read).await {
        Ok(Ok(body::Buffered::Complete(b))) => Some(b),
        _ => None,
    }
}

/// A request on a listener that serves A2A matched no route: when it is an A2A call (an
/// HTTP+JSON path, a card, gRPC, a JSON-RPC call with an A2A method or `A2A-Version`), the 404
/// in its binding's shape; `None` otherwise (the gateway's plain 404).
pub(crate) async fn unknown_agent(parts: &Parts, body: Body) -> Option<Response<Body>> {
    let version = ProtocolVersion::from_header(
        parts
            .headers
            .get(::a2a::VERSION_HEADER)
            .map(HeaderValue::as_bytes),
    );
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes);
    let dialect = match ::a2a::classify_http(&parts.method, parts.uri.path(), content_type, version)
    {
        HeadClass::Known(call) => dialect_of(call.binding, version),
        HeadClass::JsonRpc => {
            let raw = read_for_id(body).await?;
            let call = jsonrpc::parse_request(&raw).ok()?;
            if call.operation == Operation::Unknown
                && !parts.headers.contains_key(::a2a::VERSION_HEADER)
            {
                return None;
            }
            ErrorDialect::JsonRpc { id: call.id }
        }
        HeadClass::Other => return None,
    };
    Some(error_response(dialect.response(
        404,
        "no_route",
        "no A2A agent is served at this path",
    )))
}

impl A2aBackend {
    /// The agent's own id for an id the client sent (sealed under task affinity).
    fn agent_id(&self, id: String) -> String {
        match self.affinity.as_ref().and_then(|a| a.sealer.open(&id)) {
            Some(opened) => opened.task_id,
            None => id,
        }
    }

    /// The refusal, when a request registers a push-notification URL the allow-list does not
    /// allow (or one that cannot be read).
    fn check_push(&self, op: Operation, json: Option<&[u8]>) -> Option<String> {
        let allow = self.push_allow.as_ref()?;
        if !op.may_carry_push_config() {
            return None;
        }
        let Some(json) = json else {
            return Some("the push-notification config was too large to check".into());
        };
        let urls = match push::callback_urls(op, json) {
            Ok(u) => u,
            Err(e) => return Some(e),
        };
        urls.iter().find_map(|u| allow.check(u).err())
    }

    /// The gateway as this client reached it: `scheme://authority`. The scheme is `https` on
    /// TLS, else what a proxy in front says (`X-Forwarded-Proto`), else `http`.
    fn origin(
        &self,
        ctx: &RequestCtx<'_>,
        parts: &Parts,
        headers: &HeaderMap,
    ) -> Result<String, Failure> {
        let scheme = if ctx.conn.tls {
            "https"
        } else {
            match ctx.forwarded_proto.as_ref().map(HeaderValue::as_bytes) {
                Some(p) if p.eq_ignore_ascii_case(b"https") => "https",
                _ => "http",
            }
        };
        let authority = match parts.uri.authority() {
            Some(a) => a.clone(),
            None => headers
                .get(header::HOST)
                .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
                .ok_or_else(|| {
                    Failure::Fatal(ProxyError::bad_request(
                        "an agent card is served only to requests naming the gateway's host",
                    ))
                })?,
        };
        Ok(format!("{scheme}://{authority}"))
    }

    /// The agent's paths as clients see them, from the backend's `urlRewrite`.
    fn path_map(policies: &BackendPolicies, ctx: &RequestCtx<'_>) -> ::a2a::PathMap {
        let client = ctx.matched_prefix.unwrap_or("").to_string();
        match policies.url_rewrite.as_ref().and_then(|r| r.path.as_ref()) {
            None => ::a2a::PathMap::Same,
            Some(config::PathRewrite::Prefix(upstream)) => ::a2a::PathMap::Prefix {
                upstream: upstream.clone(),
                client,
            },
            Some(config::PathRewrite::Full(_)) => ::a2a::PathMap::Fixed {
                client: if client.is_empty() {
                    "/".into()
                } else {
                    client
                },
            },
        }
    }

    async fn rewrite_card_response(
        &self,
        resp: Response<Body>,
        origin: &str,
        in_result: bool,
        cache: Option<&CardCache>,
        policies: &BackendPolicies,
        ctx: &RequestCtx<'_>,
    ) -> Result<Response<Body>, Failure> {
        let is_json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|c| memchr_json(c.as_bytes()));
        if !resp.status().is_success() || !is_json {
            return Ok(resp);
        }
        let (mut head, body) = resp.into_parts();
        let bytes = read_bounded(body, MAX_CARD_BYTES).await.map_err(|e| {
            Failure::Fatal(ProxyError::upstream_error(format!(
                "reading the agent card: {e}"
            )))
        })?;
        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Fatal(ProxyError::upstream_error(format!(
                "the agent card is not JSON: {e}"
            )))
        })?;
        if let Some(cache) = cache {
            cache.put(bytes);
        }
        let card = match in_result {
            true => doc.get_mut("result"),
            false => Some(&mut doc),
        };
        if let Some(card) = card {
            let paths = Self::path_map(policies, ctx);
            let out = ::a2a::rewrite_card(
                card,
                &::a2a::CardRewrite {
                    origin,
                    paths: &paths,
                    bindings: self.bindings,
                },
            );
            if let (Some(agent), true) = (self.agent_version, self.bindings.json_rpc) {
                // The gateway translates JSON-RPC: the agent is reachable in both versions.
                ::a2a::translate::card_offers_both(card, agent);
            }
            if let Some(signer) = &self.signer {
                let prefix = ctx.matched_prefix.unwrap_or("").trim_end_matches('/');
                let jku = format!("{origin}{prefix}{JWKS_PATH}");
                signer.sign(card, Some(&jku)).map_err(|e| {
                    Failure::Fatal(ProxyError::upstream_error(format!(
                        "signing the agent card: {e}"
                    )))
                })?;
                if out.signatures_removed > 0 {
                    tracing::debug!(
                        route = %ctx.route.name,
                        signatures = out.signatures_removed,
                        "agent card re-signed by the gateway: its URLs were rewritten"
                    );
                }
            } else if out.signatures_removed > 0 {
                tracing::info!(
                    route = %ctx.route.name,
                    signatures = out.signatures_removed,
                    "agent card signatures removed: the card's URLs were rewritten to the \
                     gateway, which has no key to sign it again (a2a.cardSigning)"
                );
            }
            if !out.dropped.is_empty() {
                tracing::debug!(
                    route = %ctx.route.name,
                    dropped = ?out.dropped,
                    "agent card interfaces dropped: bindings this route does not proxy"
                );
            }
        }
        let bytes = serde_json::to_vec(&doc).map_err(|e| {
            Failure::Fatal(ProxyError::upstream_error(format!(
                "writing the agent card: {e}"
            )))
        })?;
        // The content changed: the agent's validators and length no longer describe it.
        head.headers.remove(header::ETAG);
        head.headers.remove(header::CONTENT_ENCODING);
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        Ok(Response::from_parts(head, body::full(bytes)))
    }
}

/// A push-config answer with the client's own URLs in place of the relay's.
async fn restore_relayed_urls(
    resp: Response<Body>,
    relay: &Relay,
) -> Result<Response<Body>, Failure> {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| memchr_json(c.as_bytes()));
    if !is_json {
        return Ok(resp);
    }
    let (mut head, inner) = resp.into_parts();
    let bytes = read_bounded(inner, MAX_OBSERVED_JSON).await.map_err(|e| {
        Failure::Fatal(ProxyError::upstream_error(format!(
            "reading the agent's push config: {e}"
        )))
    })?;
    let open = |t: &str| ::a2a::push::open_relay_token(&relay.sealer, t).map(|(_, u)| u);
    let out = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) => match ::a2a::push::restore_callback_urls(&mut v, &open, 0) {
            true => serde_json::to_vec(&v).map(Bytes::from).unwrap_or(bytes),
            false => bytes,
        },
        Err(_) => bytes,
    };
    head.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(head, body::full(out)))
}

/// Largest notification relayed.
const MAX_NOTIFICATION_BYTES: usize = 1 << 20;

impl A2aBackend {
    /// A notification the agent posted to the gateway's callback: relayed to the client's URL
    /// (from the sealed token) when the allow-list still allows it, with the agent's
    /// `Content-Type`, `Authorization` and `X-A2A-Notification-Token`; under task affinity its
    /// task and context ids sealed as in every answer. The agent gets the client's status.
    async fn relay(
        &self,
        relay: &Relay,
        token: &str,
        parts: &Parts,
        headers: &HeaderMap,
        body: Body,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<Response<Body>, Failure> {
        let problem = |status: u16, code: &'static str, message: &str| {
            error_response(
                ErrorDialect::HttpJson {
                    version: ProtocolVersion::V1_0,
                }
                .response(status, code, message),
            )
        };
        let Some((backend, url)) = ::a2a::push::open_relay_token(&relay.sealer, token) else {
            ctx.error = Some("a2a_push_relay_unknown");
            return Ok(problem(
                404,
                "a2a_push_relay_unknown",
                "no push-notification relay here",
            ));
        };
        if parts.method != http::Method::POST {
            return Ok(problem(
                405,
                "method_not_allowed",
                "notifications are POSTed",
            ));
        }
        if let Some(Err(refusal)) = self.push_allow.as_ref().map(|a| a.check(&url)) {
            ctx.error = Some("a2a_push_url_not_allowed");
            return Ok(problem(403, "a2a_push_url_not_allowed", &refusal));
        }
        let bytes = read_bounded(body, MAX_NOTIFICATION_BYTES)
            .await
            .map_err(|e| {
                Failure::Fatal(ProxyError::bad_request(format!(
                    "reading the notification: {e}"
                )))
            })?;
        let bytes = match &self.affinity {
            Some(aff) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(mut v) => match aff.sealer.seal_answer(&mut v, &backend) {
                    true => serde_json::to_vec(&v).map(Bytes::from).unwrap_or(bytes),
                    false => bytes,
                },
                Err(_) => bytes,
            },
            None => bytes,
        };
        let uri: http::Uri = url.parse().map_err(|_| {
            Failure::Fatal(ProxyError::upstream_error("the relayed URL is not a URL"))
        })?;
        let https = uri.scheme_str() == Some("https");
        let Some(host) = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        else {
            return Ok(problem(
                502,
                "upstream_error",
                "the relayed URL names no host",
            ));
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match https {
            true => Some(
                crate::tls::client_config(&config::BackendTls::default(), host, false)
                    .map_err(|e| Failure::Fatal(ProxyError::upstream_error(e)))?,
            ),
            false => None,
        };
        let key = crate::upstream::UpstreamKey {
            host: host.into(),
            port,
            http2: false,
            tls_fingerprint: https.then_some(0),
            connect_timeout: std::time::Duration::from_secs(5),
            pool_idle_timeout: std::time::Duration::from_secs(1),
            pool_max_idle: 0,
        };
        let upstream = crate::upstream::Upstream::new(&key, tls);
        let mut req = http::Request::new(body::full(bytes.clone()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        for name in [
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            http::HeaderName::from_static("x-a2a-notification-token"),
        ] {
            if let Some(v) = headers.get(&name) {
                h.insert(name, v.clone());
            }
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        ctx.upstream = Some(upstream.address.clone());
        let sent = std::time::Instant::now();
        let call = upstream.request(req);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), call).await;
        ctx.upstream_time = Some(sent.elapsed());
        match answer {
            Ok(Ok(resp)) => {
                let mut out = Response::new(body::empty());
                *out.status_mut() = resp.status();
                Ok(out)
            }
            Ok(Err(e)) => Ok(problem(
                502,
                "upstream_unavailable",
                &format!(
                    "relaying the notification: {}",
                    crate::upstream::root_message(&*e)
                ),
            )),
            Err(_) => Ok(problem(
                504,
                "upstream_timeout",
                "relaying the notification timed out",
            )),
        }
    }
}

/// The agent's answer to a translated call, in the client's version: a JSON answer read
/// whole (up to [`MAX_OBSERVED_JSON`]; a larger one is refused rather than passed in the
/// wrong version), an SSE stream event by event.
async fn translate_answer(
    resp: Response<Body>,
    op: Operation,
    client: ProtocolVersion,
) -> Result<Response<Body>, Failure> {
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .unwrap_or(b"");
    if content_type.starts_with(b"text/event-stream") {
        let (mut head, inner) = resp.into_parts();
        head.headers.remove(header::CONTENT_LENGTH);
        let body = TranslatedSse {
            inner,
            sse: ::a2a::translate::SseTranslator::new(client, MAX_OBSERVED_JSON),
            done: false,
        };
        return Ok(Response::from_parts(head, body.boxed_unsync()));
    }
    if !memchr_json(content_type) {
        return Ok(resp);
    }
    let (mut head, inner) = resp.into_parts();
    let bytes = read_bounded(inner, MAX_OBSERVED_JSON).await.map_err(|e| {
        Failure::Fatal(ProxyError::upstream_error(format!(
            "reading the agent's answer to translate it: {e}"
        )))
    })?;
    let out = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) => {
            ::a2a::translate::response(&mut v, op, client);
            serde_json::to_vec(&v).map(Bytes::from).unwrap_or(bytes)
        }
        Err(_) => bytes,
    };
    head.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(head, body::full(out)))
}

/// An SSE answer translated event by event.
struct TranslatedSse {
    inner: Body,
    sse: ::a2a::translate::SseTranslator,
    done: bool,
}

impl http_body::Body for TranslatedSse {
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
                    let rest = this.sse.finish();
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest.into()))));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.sse.feed(&data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// The whole body, up to `limit` bytes.
pub(super) async fn read_bounded(mut body: Body, limit: usize) -> Result<Bytes, String> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(format!("larger than {limit} bytes"));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn memchr_json(content_type: &[u8]) -> bool {
    content_type
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"json"))
}

/// Notes a push-notification refusal in the log: the error and the call refused.
fn refused(ctx: &mut RequestCtx<'_>, record: telemetry::A2aRecord) {
    ctx.error = Some("a2a_push_url_not_allowed");
    ctx.trail.a2a = Some(Arc::new(Mutex::new(Some(record))));
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(super) fn error_response(e: ::a2a::ErrorResponse) -> Response<Body> {
    let mut resp = Response::new(body::full(e.body));
    *resp.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(e.content_type),
    );
    for (name, value) in e.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

/// Wraps the answer so its task is observed as it streams; gRPC and other media pass as they
/// are (the record keeps what the request said).
fn watch(resp: Response<Body>, slot: Arc<A2aSlot>, streams: bool) -> Response<Body> {
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .unwrap_or(b"");
    let watcher = if content_type.starts_with(b"text/event-stream") {
        Watcher::Sse(Box::default())
    } else if memchr_json(content_type) && !streams {
        Watcher::Json(Vec::new())
    } else {
        return resp;
    };
    resp.map(|inner| {
        WatchedBody {
            inner,
            watcher,
            slot,
            seen_events: 0,
            done: false,
        }
        .boxed_unsync()
    })
}

enum Watcher {
    /// SSE: read event by event.
    Sse(Box<::a2a::EventReader>),
    /// One JSON document, teed up to [`MAX_OBSERVED_JSON`] and read at its end.
    Json(Vec<u8>),
    /// Too large to observe.
    Gave,
}

/// A response body passed through unchanged while its A2A content is observed.
struct WatchedBody {
    inner: Body,
    watcher: Watcher,
    slot: Arc<A2aSlot>,
    /// Events already written to the slot.
    seen_events: u32,
    done: bool,
}

impl WatchedBody {
    fn feed(&mut self, data: &Bytes) {
        match &mut self.watcher {
            Watcher::Sse(reader) => {
                reader.feed(data);
                // Written as events arrive, so a client that leaves mid-stream still leaves
                // a record of what it saw.
                if reader.observation.events != self.seen_events {
                    self.seen_events = reader.observation.events;
                    update(&self.slot, &reader.observation, true);
                }
            }
            Watcher::Json(buf) => {
                if buf.len() + data.len() > MAX_OBSERVED_JSON {
                    self.watcher = Watcher::Gave;
                } else {
                    buf.extend_from_slice(data);
                }
            }
            Watcher::Gave => {}
        }
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Watcher::Json(buf) = &self.watcher {
            let mut o = ::a2a::Observation::default();
            o.read(buf);
            update(&self.slot, &o, false);
        }
    }
}

/// Copies what an observation learned into the record.
fn update(slot: &A2aSlot, o: &::a2a::Observation, stream: bool) {
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    let Some(rec) = guard.as_mut() else {
        return;
    };
    if let Some(id) = &o.task_id {
        if rec.task_id.as_ref() != Some(id) {
            rec.task_id = Some(id.clone());
        }
    }
    if let Some(id) = &o.context_id {
        if rec.context_id.as_ref() != Some(id) {
            rec.context_id = Some(id.clone());
        }
    }
    if let Some(s) = o.state {
        rec.task_state = Some(s.as_str());
    }
    if stream {
        rec.events = o.events;
    }
    rec.artifacts = o.artifacts;
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.feed(data);
                }
                // The record must be complete before the body reports its end: telemetry
                // reads it then.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
