//! Checks that need more than one value at a time, run after parsing. Single values check
//! themselves while parsing (see `values.rs`), which gives exact positions; here a problem
//! carries a `needle`, a piece of source text used to find its line.

use std::collections::HashSet;
use std::path::Path;

use crate::schema::*;
use crate::values::Secret;

mod governance;

/// Checks an `apiKeyAuth.keysFile`'s keys (key paths start at `keys`).
pub(crate) fn check_api_keys(keys: &mut [ApiKey], base: &Path) -> Result<(), Problem> {
    governance::check_keys(keys, "keys", base)
}

pub(crate) struct Problem {
    pub key: String,
    pub message: String,
    pub needle: Option<String>,
    /// Tried when `needle` is not in the source (it may be written with YAML escapes).
    pub fallback_needle: Option<String>,
}

fn problem(key: impl Into<String>, message: impl Into<String>, needle: Option<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
        needle,
        fallback_needle: None,
    }
}

/// Compiles a CEL expression the way the gateway will, so a bad one fails the load.
fn check_cel(key: &str, field: &str, source: &str) -> Result<(), Problem> {
    cel::Expression::compile(source)
        .map(|_| ())
        .map_err(|e| Problem {
            key: key.to_string(),
            message: format!(
                "invalid CEL expression `{source}`: {}",
                e.replace("<input>:", "column ").trim_end()
            ),
            needle: Some(source.lines().next().unwrap_or(source).to_string()),
            fallback_needle: Some(field.to_string()),
        })
}

fn check_fields(key: &str, fields: &Option<Fields>) -> Result<(), Problem> {
    for (name, source) in fields.iter().flat_map(|f| &f.add) {
        check_cel(&format!("{key}.fields.add.{name}"), name, source)?;
    }
    Ok(())
}

pub(crate) fn check(config: &mut Config, base: &Path) -> Result<(), Problem> {
    for (name, addr) in [
        ("config.adminAddr", &config.config.admin_addr),
        ("config.statsAddr", &config.config.stats_addr),
    ] {
        if let Some(a) = addr {
            a.parse::<std::net::SocketAddr>().map_err(|_| {
                problem(
                    name,
                    format!("invalid address {a:?}: expected ip:port, e.g. \"127.0.0.1:15000\""),
                    Some(a.clone()),
                )
            })?;
        }
    }
    if let Some(l) = &config.config.logging {
        if let Some(f) = &l.filter {
            check_cel("config.logging.filter", "filter", f)?;
        }
        check_fields("config.logging", &l.fields)?;
    }
    if let Some(t) = &config.config.tracing {
        check_fields("config.tracing", &t.fields)?;
    }
    if let Some(t) = &mut config.config.tracing {
        for (name, s) in [
            ("randomSampling", t.random_sampling),
            ("clientSampling", t.client_sampling),
        ] {
            if let Some(Sampling::Ratio(r)) = s {
                if !(0.0..=1.0).contains(&r) {
                    return Err(problem(
                        format!("config.tracing.{name}"),
                        format!(
                            "sampling ratio {r} is out of range: expected true, false or 0..=1"
                        ),
                        Some(name.to_string()),
                    ));
                }
            }
        }
        for (h, v) in t.headers.iter_mut() {
            load_secret(v, base, &format!("config.tracing.headers.{}", h.as_str()))?;
        }
    }
    let l = &config.config.limits;
    if l.max_connections == 0 || l.max_header_bytes < 1024 {
        return Err(problem(
            "config.limits",
            "maxConnections must be at least 1 and maxHeaderBytes at least 1024",
            Some("limits".into()),
        ));
    }
    if l.http2_max_concurrent_streams == 0
        || l.body_read_timeout.0.is_zero()
        || l.write_timeout.0.is_zero()
    {
        return Err(problem(
            "config.limits",
            "http2MaxConcurrentStreams, bodyReadTimeout and writeTimeout must be above zero",
            Some("limits".into()),
        ));
    }
    if let Some(o) = &l.overload {
        if !(o.shed_at > 0.0 && o.shed_at <= 1.0)
            || o.max_connections == Some(0)
            || o.max_memory_bytes == Some(0)
        {
            return Err(problem(
                "config.limits.overload",
                "shedAt must be in (0, 1] and maxConnections/maxMemoryBytes above zero",
                Some("overload".into()),
            ));
        }
    }

    check_pools(config, base)?;
    let pool_names: Vec<String> = config.pools.iter().map(|p| p.name.clone()).collect();
    if let Some(x) = &config.config.ext_proc {
        x.addr.parse::<std::net::SocketAddr>().map_err(|_| {
            problem(
                "config.extProc.addr",
                format!(
                    "invalid address {:?}: expected ip:port, e.g. \"127.0.0.1:9002\"",
                    x.addr
                ),
                Some(x.addr.clone()),
            )
        })?;
        check_pool_ref(&x.pool, &pool_names, "config.extProc.pool")?;
    }

    let mut ports = HashSet::new();
    for (bi, bind) in config.binds.iter_mut().enumerate() {
        let bkey = format!("binds[{bi}]");
        if bind.port != 0 && !ports.insert(bind.port) {
            return Err(problem(
                format!("{bkey}.port"),
                format!("port {} is used by more than one bind", bind.port),
                Some(format!("port: {}", bind.port)),
            ));
        }
        if bind.listeners.is_empty() {
            return Err(problem(
                format!("{bkey}.listeners"),
                "a bind needs at least one listener",
                Some(format!("port: {}", bind.port)),
            ));
        }
        let mut hosts = HashSet::new();
        for (li, listener) in bind.listeners.iter_mut().enumerate() {
            let lkey = format!("{bkey}.listeners[{li}]");
            if let Some(h) = &listener.hostname {
                check_hostname(h, &format!("{lkey}.hostname"))?;
            }
            if !hosts.insert(listener.hostname.clone()) {
                return Err(problem(
                    format!("{lkey}.hostname"),
                    match &listener.hostname {
                        Some(h) => format!("two listeners on one bind serve hostname {h:?}"),
                        None => "two listeners on one bind have no hostname; give each a distinct `hostname`".into(),
                    },
                    listener.hostname.clone(),
                ));
            }
            match (listener.protocol, &mut listener.tls) {
                (ListenerProtocol::Https, None) => {
                    return Err(problem(
                        format!("{lkey}.tls"),
                        "protocol HTTPS needs `tls: {cert, key}`",
                        Some("HTTPS".into()),
                    ))
                }
                (ListenerProtocol::Http, Some(_)) => {
                    return Err(problem(
                        format!("{lkey}.protocol"),
                        "`tls` is set but protocol is HTTP: set `protocol: HTTPS`",
                        Some("tls:".into()),
                    ))
                }
                (ListenerProtocol::Https, Some(tls)) => {
                    resolve_file(&mut tls.cert, base, &format!("{lkey}.tls.cert"))?;
                    resolve_file(&mut tls.key, base, &format!("{lkey}.tls.key"))?;
                }
                (ListenerProtocol::Http, None) => {}
            }
            if let Some(path) = listener.a2a.as_ref().and_then(|a| a.catalog_path.as_ref()) {
                if !path.starts_with('/') || path.contains(['?', '#']) {
                    return Err(problem(
                        format!("{lkey}.a2a.catalogPath"),
                        format!("catalogPath {path:?} must be a path starting with '/'"),
                        Some("catalogPath".into()),
                    ));
                }
            }
            for (ri, route) in listener.routes.iter_mut().enumerate() {
                let rkey = format!("{lkey}.routes[{ri}]");
                check_route(route, &rkey, base)?;
                for (bi, b) in route.backends.iter().enumerate() {
                    match &b.kind {
                        BackendKind::Pool(p) => {
                            check_pool_ref(p, &pool_names, &format!("{rkey}.backends[{bi}].pool"))?
                        }
                        BackendKind::Ai(ai) => {
                            if let Some(p) = &ai.pool {
                                let key = format!("{rkey}.backends[{bi}].ai.pool");
                                check_pool_ref(p, &pool_names, &key)?;
                                if ai.host_override.is_some() {
                                    return Err(problem(
                                        key,
                                        "`pool` and `hostOverride` both say where to send: keep one",
                                        Some(p.clone()),
                                    ));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_pool_ref(name: &str, pools: &[String], key: &str) -> Result<(), Problem> {
    if pools.iter().any(|p| p == name) {
        return Ok(());
    }
    let known = if pools.is_empty() {
        "no pools are defined (top-level `pools:`)".to_string()
    } else {
        format!("defined pools: {}", pools.join(", "))
    };
    Err(problem(
        key,
        format!("unknown pool {name:?}; {known}"),
        Some(name.to_string()),
    ))
}

fn check_pools(config: &mut Config, base: &Path) -> Result<(), Problem> {
    let mut names = HashSet::new();
    for (pi, pool) in config.pools.iter_mut().enumerate() {
        let key = format!("pools[{pi}]");
        let needle = Some(pool.name.clone());
        if pool.name.is_empty() || !names.insert(pool.name.clone()) {
            return Err(problem(
                format!("{key}.name"),
                format!("pool name {:?} is empty or used twice", pool.name),
                needle,
            ));
        }
        let sources = [
            pool.endpoints.is_some(),
            pool.endpoints_file.is_some(),
            pool.endpoints_dns.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(problem(
                key,
                "a pool takes exactly one of `endpoints`, `endpointsFile` or `endpointsDns`",
                needle,
            ));
        }
        if let Some(f) = &mut pool.endpoints_file {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        if let Some(spec) = &pool.strategy {
            picker::parse_strategy(spec, &picker::PrefixConfig::default()).map_err(|e| {
                problem(format!("{key}.strategy"), e.to_string(), Some(spec.clone()))
            })?;
        }
        if pool.prefix_cache.block_size == Some(0) {
            return Err(problem(
                format!("{key}.prefixCache.blockSize"),
                "blockSize must be at least 1",
                Some("blockSize".into()),
            ));
        }
        let m = &pool.metrics;
        if m.enabled
            && (m.interval.0.is_zero() || m.timeout.0.is_zero() || !m.path.starts_with('/'))
        {
            return Err(problem(
                format!("{key}.metrics"),
                "metrics need a positive interval and timeout and a path starting with '/'",
                Some("metrics".into()),
            ));
        }
    }
    Ok(())
}

fn check_route(route: &mut Route, key: &str, base: &Path) -> Result<(), Problem> {
    let needle = route.name.clone();
    for h in &route.hostnames {
        check_hostname(h, &format!("{key}.hostnames"))?;
    }
    for (mi, m) in route.matches.iter().enumerate() {
        let mkey = format!("{key}.matches[{mi}]");
        match &m.path {
            Some(PathMatch::Exact(p)) | Some(PathMatch::PathPrefix(p)) if !p.starts_with('/') => {
                return Err(problem(
                    format!("{mkey}.path"),
                    format!("path {p:?} must start with '/'"),
                    Some(p.clone()),
                ));
            }
            _ => {}
        }
        if let Some(method) = &m.method {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(problem(
                    format!("{mkey}.method"),
                    format!("invalid method {method:?}: expected e.g. GET or POST"),
                    Some(method.clone()),
                ));
            }
        }
    }
    let has_terminal = route
        .policies
        .as_ref()
        .is_some_and(|p| p.direct_response.is_some() || p.request_redirect.is_some());
    if route.backends.is_empty() && !has_terminal {
        return Err(problem(
            format!("{key}.backends"),
            "a route needs at least one backend, or a `directResponse` or `requestRedirect` policy",
            needle,
        ));
    }
    if !route.backends.is_empty() && route.backends.iter().all(|b| b.weight == 0) {
        return Err(problem(
            format!("{key}.backends"),
            "every backend has weight 0: at least one needs a positive weight",
            Some("weight: 0".into()),
        ));
    }
    if let Some(p) = &mut route.policies {
        check_policies(p, &format!("{key}.policies"), base)?;
    }
    if let Some(g) = route.policies.as_ref().and_then(|p| p.guardrails.as_ref()) {
        check_guardrails(g, route, &format!("{key}.policies.guardrails"))?;
    }
    for (bi, backend) in route.backends.iter_mut().enumerate() {
        let bkey = format!("{key}.backends[{bi}]");
        if let Some(p) = &mut backend.policies {
            check_backend_phase_only(p, &format!("{bkey}.policies"))?;
            check_policies(p, &format!("{bkey}.policies"), base)?;
        }
        match &mut backend.kind {
            BackendKind::Ai(ai) => {
                if let Some(p) = &mut ai.policies {
                    check_backend_phase_only(p, &format!("{bkey}.ai.policies"))?;
                    check_policies(p, &format!("{bkey}.ai.policies"), base)?;
                }
                let pkey = format!("{bkey}.ai.provider");
                match &mut ai.provider {
                    crate::Provider::Vertex(v) => {
                        if let Some(c) = &mut v.credentials {
                            load_secret(c, base, &format!("{pkey}.vertex.credentials"))?;
                        }
                    }
                    crate::Provider::Bedrock(b) => {
                        for (name, secret) in [
                            ("accessKeyId", &mut b.access_key_id),
                            ("secretAccessKey", &mut b.secret_access_key),
                            ("sessionToken", &mut b.session_token),
                        ] {
                            if let Some(s) = secret {
                                load_secret(s, base, &format!("{pkey}.bedrock.{name}"))?;
                            }
                        }
                    }
                    _ => {}
                }
            }
            BackendKind::Mcp(mcp) => {
                if mcp.targets.is_empty() {
                    return Err(problem(
                        format!("{bkey}.mcp.targets"),
                        "an mcp backend needs at least one target",
                        Some("targets".into()),
                    ));
                }
                if let Some(k) = &mut mcp.session_key {
                    load_secret(k, base, &format!("{bkey}.mcp.sessionKey"))?;
                }
                let mut names = HashSet::new();
                for (ti, t) in mcp.targets.iter_mut().enumerate() {
                    let tkey = format!("{bkey}.mcp.targets[{ti}]");
                    let kinds = [
                        t.mcp.is_some(),
                        t.sse.is_some(),
                        t.stdio.is_some(),
                        t.openapi.is_some(),
                    ];
                    if kinds.iter().filter(|k| **k).count() != 1 {
                        return Err(problem(
                            tkey,
                            "an mcp target takes exactly one of `mcp`, `sse`, `stdio` or `openapi`",
                            Some(t.name.clone()),
                        ));
                    }
                    if t.name.is_empty()
                        || !t
                            .name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                    {
                        return Err(problem(
                            format!("{tkey}.name"),
                            format!(
                                "target name {:?} must be letters, digits, `-` or `.` (it prefixes tool names as `<target>_<tool>`)",
                                t.name
                            ),
                            Some(t.name.clone()),
                        ));
                    }
                    if !names.insert(t.name.clone()) {
                        return Err(problem(
                            format!("{tkey}.name"),
                            format!("target name {:?} is used twice", t.name),
                            Some(t.name.clone()),
                        ));
                    }
                    if let Some(o) = &mut t.openapi {
                        let is_url =
                            o.schema.starts_with("http://") || o.schema.starts_with("https://");
                        if !is_url && Path::new(&o.schema).is_relative() {
                            o.schema = base.join(&o.schema).to_string_lossy().into_owned();
                        }
                    }
                    if let Some(stdio) = &mut t.stdio {
                        for (k, v) in stdio.env.iter_mut() {
                            load_secret(v, base, &format!("{tkey}.stdio.env.{k}"))?;
                        }
                    }
                    if let Some(p) = &mut t.policies {
                        check_backend_phase_only(p, &format!("{tkey}.policies"))?;
                        check_policies(p, &format!("{tkey}.policies"), base)?;
                    }
                }
            }
            BackendKind::A2a(a) => {
                if let Some(list) = &a.push_notification_allow_list {
                    a2a::AllowList::new(list).map_err(|e| {
                        problem(
                            format!("{bkey}.a2a.pushNotificationAllowList"),
                            format!("invalid host: {e}"),
                            Some("pushNotificationAllowList".into()),
                        )
                    })?;
                }
                if let Some(cs) = &mut a.card_signing {
                    let ckey = format!("{bkey}.a2a.cardSigning");
                    load_secret(&mut cs.key, base, &format!("{ckey}.key"))?;
                    if cs.key_id.is_empty() {
                        return Err(problem(
                            format!("{ckey}.keyId"),
                            "keyId names the key in signatures and the JWK set: it cannot be empty",
                            Some("keyId".into()),
                        ));
                    }
                    a2a::CardSigner::from_pem(cs.key.expose(), cs.alg.to_a2a(), &cs.key_id)
                        .map_err(|e| {
                            problem(format!("{ckey}.key"), e, Some("cardSigning".into()))
                        })?;
                }
                if a.bindings.as_ref().is_some_and(|b| b.is_empty()) {
                    return Err(problem(
                        format!("{bkey}.a2a.bindings"),
                        "an a2a backend proxies at least one binding (JSONRPC, HTTP+JSON, GRPC)",
                        Some("bindings".into()),
                    ));
                }
            }
            BackendKind::Host(_) | BackendKind::Pool(_) => {}
        }
    }
    Ok(())
}

/// Route-phase policies decide what happens to the request before a backend is chosen, so
/// they never depend on which backend the dice pick: a backend (or MCP target) may not set
/// one.
fn check_backend_phase_only(p: &Policies, key: &str) -> Result<(), Problem> {
    let route_phase = [
        ("cors", p.cors.is_some()),
        ("jwtAuth", p.jwt_auth.is_some()),
        ("directResponse", p.direct_response.is_some()),
        ("requestRedirect", p.request_redirect.is_some()),
        ("retry", p.retry.is_some()),
        ("guardrails", p.guardrails.is_some()),
        ("apiKeyAuth", p.api_key_auth.is_some()),
        ("basicAuth", p.basic_auth.is_some()),
        ("extAuthz", p.ext_authz.is_some()),
        ("authorization", p.authorization.is_some()),
        ("localRateLimit", !p.local_rate_limit.is_empty()),
        ("rateLimit", p.rate_limit.is_some()),
        ("budgets", p.budgets.is_some()),
        ("remoteRateLimit", p.remote_rate_limit.is_some()),
        ("failover", p.failover.is_some()),
        ("balance", p.balance.is_some()),
        ("a2a", p.a2a.is_some()),
        (
            "timeout.requestTimeout",
            p.timeout
                .as_ref()
                .is_some_and(|t| t.request_timeout.is_some()),
        ),
    ];
    match route_phase.into_iter().find(|(_, set)| *set) {
        Some((name, _)) => {
            let needle = name.rsplit('.').next().unwrap_or(name);
            Err(problem(
                format!("{key}.{name}"),
                format!(
                    "`{name}` is a route policy: set it in the route's `policies` (a backend's \
                     policies apply only to the requests sent to it: urlRewrite, header \
                     modifiers, backendAuth, backendTLS, backendHTTP, \
                     timeout.backendRequestTimeout, ai, mcpAuthorization)"
                ),
                Some(format!("{needle}:")),
            ))
        }
        None => Ok(()),
    }
}

fn check_policies(p: &mut Policies, key: &str, base: &Path) -> Result<(), Problem> {
    if let Some(k) = p.a2a.as_mut().and_then(|a| a.task_key.as_mut()) {
        load_secret(k, base, &format!("{key}.a2a.taskKey"))?;
    }
    if let Some(r) = &p.request_redirect {
        if let Some(s) = r.status {
            if ![301, 302, 303, 307, 308].contains(&s.0) {
                return Err(problem(
                    format!("{key}.requestRedirect.status"),
                    format!(
                        "redirect status {} is not a redirect: expected 301, 302, 303, 307 or 308",
                        s.0
                    ),
                    Some(s.0.to_string()),
                ));
            }
        }
        if let Some(scheme) = &r.scheme {
            if scheme != "http" && scheme != "https" {
                return Err(problem(
                    format!("{key}.requestRedirect.scheme"),
                    format!("scheme {scheme:?}: expected http or https"),
                    Some(scheme.clone()),
                ));
            }
        }
    }
    if p.retry.is_some() && p.failover.is_some() {
        return Err(problem(
            format!("{key}.failover"),
            "a route has `retry` or `failover`, not both: `failover.attempts` counts every try, \
             on this backend or the next",
            Some("failover:".into()),
        ));
    }
    if p.failover.as_ref().is_some_and(|f| f.attempts == Some(0)) {
        return Err(problem(
            format!("{key}.failover.attempts"),
            "attempts counts the first try too: expected at least 1",
            Some("attempts".into()),
        ));
    }
    if let Some(r) = &p.retry {
        if r.attempts == 0 {
            return Err(problem(
                format!("{key}.retry.attempts"),
                "attempts counts the first try too: expected at least 1",
                Some("attempts".into()),
            ));
        }
    }
    if let Some(tls) = &mut p.backend_tls {
        let tkey = format!("{key}.backendTLS");
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(problem(
                tkey,
                "a client certificate needs both `cert` and `key`",
                Some("backendTLS".into()),
            ));
        }
        for (name, path) in [
            ("root", &mut tls.root),
            ("cert", &mut tls.cert),
            ("key", &mut tls.key),
        ] {
            if let Some(path) = path {
                resolve_file(path, base, &format!("{tkey}.{name}"))?;
            }
        }
    }
    if let Some(auth) = &mut p.backend_auth {
        load_secret(&mut auth.key, base, &format!("{key}.backendAuth.key"))?;
    }
    if let Some(g) = &mut p.guardrails {
        for (side, guards) in [("request", &mut g.request), ("response", &mut g.response)] {
            for (i, guard) in guards.iter_mut().enumerate() {
                let secret = match (&mut guard.webhook, &mut guard.moderation) {
                    (Some(w), _) => w.key.as_mut().map(|k| (k, "webhook")),
                    (_, Some(m)) => m.key.as_mut().map(|k| (k, "moderation")),
                    _ => None,
                };
                if let Some((k, kind)) = secret {
                    load_secret(k, base, &format!("{key}.guardrails.{side}[{i}].{kind}.key"))?;
                }
            }
        }
    }
    if let Some(cors) = &p.cors {
        if cors.allow_credentials && cors.allow_origins.iter().any(|o| o == "*") {
            return Err(problem(
                format!("{key}.cors"),
                "allowCredentials cannot be combined with allowOrigins \"*\" (browsers reject it); list the origins",
                Some("allowCredentials".into()),
            ));
        }
    }
    if let Some(j) = &mut p.jwt_auth {
        match (&mut j.jwks, &j.jwks_url) {
            (Some(jwks), None) => load_secret(jwks, base, &format!("{key}.jwtAuth.jwks"))?,
            (None, Some(_)) => {}
            _ => {
                return Err(problem(
                    format!("{key}.jwtAuth"),
                    "give exactly one of `jwks` (the JWK set) and `jwksUrl` (where to fetch it)",
                    Some("jwtAuth:".into()),
                ))
            }
        }
    }
    governance::check(p, key, base)?;
    if let Some(authz) = &p.mcp_authorization {
        for (i, rule) in authz.rules.iter().enumerate() {
            check_cel(&format!("{key}.mcpAuthorization.rules[{i}]"), "rules", rule)?;
        }
    }
    Ok(())
}

/// Guards compile here as the gateway will compile them, so a bad pattern fails the load at
/// its line; they read LLM bodies, so every backend of the route must be `ai`.
fn check_guardrails(g: &Guardrails, route: &Route, key: &str) -> Result<(), Problem> {
    let all = |f: fn(&BackendKind) -> bool| {
        !route.backends.is_empty() && route.backends.iter().all(|b| f(&b.kind))
    };
    let mcp = all(|k| matches!(k, BackendKind::Mcp(_)));
    if !mcp && !all(|k| matches!(k, BackendKind::Ai(_))) {
        return Err(problem(
            key,
            "guardrails read LLM prompts and completions, or MCP tool calls: every backend of \
             the route must be `ai`, or every one `mcp`",
            Some("guardrails:".into()),
        ));
    }
    if mcp
        && (g.prompt.is_some()
            || g.request
                .iter()
                .chain(&g.response)
                .any(|guard| guard.regex.is_none()))
    {
        return Err(problem(
            key,
            "on an MCP route the guards are `regex` guards on tool and prompt arguments \
             (request) and on tool results, prompts and resource contents (response); \
             webhook, moderation and prompt are for LLM routes",
            Some("guardrails:".into()),
        ));
    }
    // Response guards read LLM answers (JSON, SSE): a `passthrough` operation answers
    // anything (files, audio), which they cannot read. Refused here rather than skipped.
    if !g.response.is_empty() {
        let route_key = key.strip_suffix(".policies.guardrails").unwrap_or(key);
        for (i, b) in route.backends.iter().enumerate() {
            let BackendKind::Ai(ai) = &b.kind else {
                continue;
            };
            let Some(routes) = ai
                .policies
                .as_ref()
                .and_then(|p| p.ai.as_ref())
                .map(|a| &a.routes)
                .filter(|r| !r.is_empty())
            else {
                continue;
            };
            // (the suffix, and the text that finds its line)
            let passthrough = routes
                .iter()
                .find(|(_, t)| **t == AiRouteType::Passthrough)
                .map(|(s, _)| (s.clone(), "passthrough".to_string()))
                .or_else(|| {
                    let first = routes.keys().next().cloned().unwrap_or_default();
                    (!routes.contains_key("*")).then(|| ("*".to_string(), first))
                });
            if let Some((suffix, needle)) = passthrough {
                return Err(problem(
                    format!("{route_key}.backends[{i}].ai.policies.ai.routes"),
                    format!(
                        "response guardrails cannot read what a `passthrough` operation answers \
                         (any content: files, audio); here {suffix:?} is passthrough (a routes \
                         table without `*` passes everything else through): map `*` to an LLM \
                         operation, or put passthrough calls on a route without response guards"
                    ),
                    Some(needle),
                ));
            }
        }
    }
    let mut names = HashSet::new();
    for (side, guards) in [("request", &g.request), ("response", &g.response)] {
        for (i, guard) in guards.iter().enumerate() {
            let gkey = format!("{key}.{side}[{i}]");
            if guard.name.is_empty() || !names.insert((side, guard.name.clone())) {
                return Err(problem(
                    format!("{gkey}.name"),
                    format!("guard name {:?} is empty or used twice", guard.name),
                    Some(guard.name.clone()),
                ));
            }
            let kinds = [
                guard.regex.is_some(),
                guard.webhook.is_some(),
                guard.moderation.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(problem(
                    gkey,
                    "a guard is exactly one of `regex`, `webhook` or `moderation`",
                    Some(guard.name.clone()),
                ));
            }
            let window = match (&guard.webhook, &guard.moderation) {
                (Some(w), _) => w.stream_window.map(|n| (n, "webhook")),
                (_, Some(m)) => m.stream_window.map(|n| (n, "moderation")),
                _ => None,
            };
            if let Some((n, kind)) = window {
                if side == "request" {
                    return Err(problem(
                        format!("{gkey}.{kind}.streamWindow"),
                        "`streamWindow` paces a guard over a streamed answer: it belongs to \
                         `response` guards (a prompt is always checked whole)",
                        Some("streamWindow".into()),
                    ));
                }
                if n == 0 {
                    return Err(problem(
                        format!("{gkey}.{kind}.streamWindow"),
                        "`streamWindow` is a number of characters, at least 1",
                        Some("streamWindow".into()),
                    ));
                }
            }
            if guard.moderation.is_some() && guard.action == GuardAction::Mask {
                return Err(problem(
                    format!("{gkey}.action"),
                    "a moderation guard scores texts, it cannot mask them: `reject` or `audit`",
                    Some("action".into()),
                ));
            }
            let Some(rx) = &guard.regex else {
                continue;
            };
            if rx.builtins.is_empty() && rx.patterns.is_empty() {
                return Err(problem(
                    format!("{gkey}.regex"),
                    "a regex guard needs at least one of `builtins` or `patterns`",
                    Some(guard.name.clone()),
                ));
            }
            for (pi, pattern) in rx.patterns.iter().enumerate() {
                let bad = match regex::Regex::new(pattern) {
                    Ok(r) if r.is_match("") => Some("it matches the empty string".to_string()),
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                };
                if let Some(why) = bad {
                    return Err(Problem {
                        key: format!("{gkey}.regex.patterns[{pi}]"),
                        message: format!("invalid pattern {pattern:?}: {why}"),
                        needle: Some(pattern.clone()),
                        fallback_needle: Some("patterns".into()),
                    });
                }
            }
        }
    }
    if let Some(p) = &g.prompt {
        for (i, m) in p.prepend.iter().chain(&p.append).enumerate() {
            if !["system", "user", "assistant"].contains(&m.role.as_str()) {
                return Err(problem(
                    format!("{key}.prompt"),
                    format!(
                        "message {i}: role {:?}: expected system, user or assistant",
                        m.role
                    ),
                    Some(m.role.clone()),
                ));
            }
        }
    }
    Ok(())
}

fn check_hostname(h: &str, key: &str) -> Result<(), Problem> {
    let name = h.strip_prefix("*.").unwrap_or(h);
    let ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(problem(
            key,
            format!("invalid hostname {h:?}: expected a DNS name such as api.example.com or *.example.com"),
            Some(h.to_string()),
        ))
    }
}

/// Makes a relative path absolute against the config's directory and checks it is readable.
fn resolve_file(path: &mut std::path::PathBuf, base: &Path, key: &str) -> Result<(), Problem> {
    let original = path.display().to_string();
    let full = base.join(&*path);
    if let Err(e) = std::fs::metadata(&full) {
        return Err(problem(
            key,
            format!("cannot read {}: {e}", full.display()),
            Some(original),
        ));
    }
    *path = full;
    Ok(())
}

fn load_secret(secret: &mut Secret, base: &Path, key: &str) -> Result<(), Problem> {
    secret.load_file(base).map_err(|e| {
        let needle = match secret.source() {
            crate::values::SecretSource::File(p) => Some(p.display().to_string()),
            crate::values::SecretSource::Inline => None,
        };
        problem(key, e, needle)
    })
}
