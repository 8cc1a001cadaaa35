use std::path::Path;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "DASHSCOPE_API_KEY" => Some("sk-seed-secret".into()),
        "MCP_TOKEN" => Some("mcp-seed-token".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Loaded, ConfigError> {
    load_str(text, Path::new("test.yaml"), Path::new("."), env)
}

fn seed_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/seed.yaml");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn seed_example_loads_with_every_key() {
    let loaded = parse(&seed_text()).unwrap();
    let c = &loaded.config;
    assert_eq!(c.config.admin_addr.as_deref(), Some("127.0.0.1:15000"));
    let logging = c.config.logging.as_ref().unwrap();
    assert_eq!(logging.level, Some(LogLevel::Debug));
    assert_eq!(logging.fields.as_ref().unwrap().add.len(), 10);
    let tracing = c.config.tracing.as_ref().unwrap();
    assert_eq!(tracing.random_sampling, Some(Sampling::Enabled(true)));
    assert_eq!(c.binds.len(), 2);
    assert_eq!(c.binds[0].port, 3100);

    let route = &c.binds[0].listeners[0].routes[0];
    let p = route.policies.as_ref().unwrap();
    assert!(matches!(
        p.url_rewrite.as_ref().unwrap().authority,
        Some(AuthorityRewrite::Full(ref h)) if h == "dashscope.aliyuncs.com"
    ));
    let set = &p.request_header_modifier.as_ref().unwrap().set;
    assert_eq!(set.keys().next().unwrap().as_str(), "host");
    assert!(p.backend_tls.is_some());
    assert_eq!(
        p.backend_auth.as_ref().unwrap().key.expose(),
        "sk-seed-secret"
    );
    let BackendKind::Ai(ai) = &route.backends[0].kind else {
        panic!("expected ai backend")
    };
    assert_eq!(ai.name, "qwen-plus");
    assert_eq!(ai.host_override.as_ref().unwrap().port(), 8443);
    assert!(matches!(&ai.provider, Provider::OpenAi(m) if m.model.as_deref() == Some("qwen-plus")));
    let routes = &ai.policies.as_ref().unwrap().ai.as_ref().unwrap().routes;
    assert_eq!(
        routes["/compatible-mode/v1/chat/completions"],
        AiRouteType::Completions
    );
    assert_eq!(routes["*"], AiRouteType::Passthrough);

    let mcp_route = &c.binds[1].listeners[0].routes[0];
    let cors = mcp_route.policies.as_ref().unwrap().cors.as_ref().unwrap();
    assert_eq!(cors.allow_headers.len(), 3);
    let BackendKind::Mcp(mcp) = &mcp_route.backends[0].kind else {
        panic!("expected mcp backend")
    };
    assert_eq!(
        mcp.targets[0].mcp.as_ref().unwrap().host,
        "http://127.0.0.1:8123/api/mcp"
    );
}

#[test]
fn dump_redacts_secrets_and_credential_headers() {
    let loaded = parse(&seed_text()).unwrap();
    let dump = redacted_dump(&loaded.config).to_string();
    assert!(!dump.contains("sk-seed-secret"), "{dump}");
    assert!(!dump.contains("mcp-seed-token"), "{dump}");
    assert!(dump.contains("<redacted>"));
    // Non-secret values stay visible.
    assert!(dump.contains("dashscope.aliyuncs.com"));
}

#[test]
fn unknown_key_names_file_line_column_key_and_expected() {
    let text = "binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - hots: 127.0.0.1:1\n";
    let e = parse(text).unwrap_err();
    assert_eq!(e.file, Path::new("test.yaml"));
    assert_eq!(e.line, 6, "{e}");
    assert_eq!(
        e.key, "binds[0].listeners[0].routes[0].backends[0].hots",
        "{e}"
    );
    assert!(e.message.contains("unknown field `hots`"), "{e}");
    assert!(e.message.contains("`host`"), "expected keys listed: {e}");
    let shown = e.to_string();
    assert!(shown.starts_with("test.yaml:6:"), "{shown}");
}

#[test]
fn wrong_type_is_located() {
    let text = "binds:\n- port: eighty\n  listeners: []\n";
    let e = parse(text).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (2, "binds[0].port"), "{e}");
    assert!(e.message.contains("u16"), "{e}");
}

#[test]
fn bad_regex_is_located() {
    let text = "binds:\n- port: 80\n  listeners:\n  - routes:\n    - matches:\n      - path:\n          regex: '/v1/(unclosed'\n      backends:\n      - host: 127.0.0.1:1\n";
    let e = parse(text).unwrap_err();
    assert_eq!(e.line, 7, "{e}");
    assert!(e.key.ends_with("matches[0].path.regex"), "{e}");
    assert!(e.message.contains("invalid regular expression"), "{e}");
}

#[test]
fn missing_env_var_is_located() {
    let e = parse("binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - host: ${UPSTREAM}\n").unwrap_err();
    assert_eq!((e.line, e.column), (6, 15), "{e}");
    assert!(e.message.contains("UPSTREAM is not set"), "{e}");
}

#[test]
fn backend_needs_exactly_one_kind() {
    let e = parse(
        "binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - weight: 2\n",
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("one of `host`, `ai`, `mcp`, `a2a` or `pool`"),
        "{e}"
    );
    assert!(e.key.contains("backends[0]"), "{e}");
}

#[test]
fn duplicate_ports_refused() {
    let text = "binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - host: a:1\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - host: a:1\n";
    let e = parse(text).unwrap_err();
    assert_eq!(e.key, "binds[1].port");
    assert!(e.message.contains("more than one bind"), "{e}");
}

#[test]
fn https_listener_requires_tls() {
    let text = "binds:\n- port: 443\n  listeners:\n  - protocol: HTTPS\n    routes:\n    - backends:\n      - host: a:1\n";
    let e = parse(text).unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("tls"), "{e}");
}

#[test]
fn invalid_header_value_rejected() {
    let text = "binds:\n- port: 80\n  listeners:\n  - routes:\n    - policies:\n        requestHeaderModifier:\n          set:\n            x-a: \"a\\r\\nb\"\n      backends:\n      - host: a:1\n";
    let e = parse(text).unwrap_err();
    assert!(e.message.contains("control characters"), "{e}");
    assert_eq!(e.line, 8, "{e}");
}

#[test]
fn secret_from_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.txt"), "sk-from-file\n").unwrap();
    let text = "binds:\n- port: 80\n  listeners:\n  - routes:\n    - policies:\n        backendAuth:\n          key: {file: key.txt}\n      backends:\n      - host: a:1\n";
    let loaded = load_str(text, Path::new("t.yaml"), dir.path(), env).unwrap();
    let p = loaded.config.binds[0].listeners[0].routes[0]
        .policies
        .as_ref()
        .unwrap();
    assert_eq!(
        p.backend_auth.as_ref().unwrap().key.expose(),
        "sk-from-file"
    );

    let missing = text.replace("key.txt", "nope.txt");
    let e = load_str(&missing, Path::new("t.yaml"), dir.path(), env).unwrap_err();
    assert_eq!(e.line, 7, "{e}");
    assert!(e.message.contains("cannot read secret file"), "{e}");
}

#[test]
fn route_without_backends_or_terminal_policy_refused() {
    let e =
        parse("binds:\n- port: 80\n  listeners:\n  - routes:\n    - name: empty\n").unwrap_err();
    assert!(e.message.contains("at least one backend"), "{e}");
    assert_eq!(e.line, 5, "{e}");
}

#[test]
fn empty_file_is_an_empty_config() {
    let loaded = parse("").unwrap();
    assert!(loaded.config.binds.is_empty());
}

#[test]
fn schema_describes_seed_keys() {
    let schema = json_schema().to_string();
    for key in [
        "adminAddr",
        "binds",
        "listeners",
        "urlRewrite",
        "requestHeaderModifier",
        "backendTLS",
        "backendAuth",
        "hostOverride",
        "openAI",
        "allowOrigins",
        "targets",
        "otlpEndpoint",
    ] {
        assert!(schema.contains(&format!("\"{key}\"")), "schema lacks {key}");
    }
}

#[test]
fn invalid_cel_names_file_line_key_expression_and_parse_error() {
    let text = "config:\n  logging:\n    fields:\n      add:\n        ok.field: 'llm.provider'\n        bad.field: 'flattenRecursive(llm.prompt'\n";
    let e = parse(text).unwrap_err().to_string();
    assert!(e.starts_with("test.yaml:6:"), "{e}");
    assert!(e.contains("config.logging.fields.add.bad.field"), "{e}");
    assert!(e.contains("`flattenRecursive(llm.prompt`"), "{e}");
    assert!(e.contains("Syntax error"), "{e}");

    let text = "config:\n  tracing:\n    otlpEndpoint: http://127.0.0.1:4317\n    fields:\n      add:\n        x: 'request.path =='\n";
    let e = parse(text).unwrap_err().to_string();
    assert!(e.starts_with("test.yaml:6:"), "{e}");
    assert!(e.contains("config.tracing.fields.add.x"), "{e}");

    let text = "config:\n  logging:\n    filter: 'response.code >= '\n";
    let e = parse(text).unwrap_err().to_string();
    assert!(e.starts_with("test.yaml:3:"), "{e}");
    assert!(e.contains("config.logging.filter"), "{e}");
    // The seed's own expressions compile (seed_example_loads_with_every_key loads them).
}

const POOL_ROUTES: &str =
    "binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - pool: fleet\n";

#[test]
fn pools_load_and_convert_to_the_runtime_spec() {
    let text = format!(
        "pools:\n- name: fleet\n  endpoints: [\"10.0.0.1:8000\", \"10.0.0.2:8000\"]\n  \
         strategy: prefix-cache:2,least-request:1\n  sessionHeader: X-Conversation\n  \
         metrics: {{interval: 2s}}\n  prefixCache: {{blockSize: 64}}\n{POOL_ROUTES}"
    );
    let loaded = parse(&text).unwrap();
    let spec = loaded.config.pools[0].spec();
    assert_eq!(
        spec.endpoints,
        picker::Endpoints::Static(vec!["10.0.0.1:8000".into(), "10.0.0.2:8000".into()])
    );
    assert_eq!(spec.strategy, "prefix-cache:2,least-request:1");
    assert_eq!(spec.session_header, "x-conversation");
    let m = spec.metrics.unwrap();
    assert_eq!((m.path.as_str(), m.interval.as_secs()), ("/metrics", 2));
    assert_eq!(
        m.stale_after.as_secs(),
        6,
        "stale after three missed scrapes"
    );
    assert_eq!(spec.prefix.block_size, 64);
    assert_eq!(spec.prefix.imbalance_threshold, 8);
}

#[test]
fn pool_errors_name_line_key_and_choices() {
    let text = format!(
        "pools:\n- name: fleet\n  endpoints: [\"a:1\"]\n  strategy: fastest\n{POOL_ROUTES}"
    );
    let e = parse(&text).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (4, "pools[0].strategy"), "{e}");
    assert!(e.message.contains("least-kv-cache"), "{e}");

    let text = format!("pools:\n- name: other\n  endpoints: [\"a:1\"]\n{POOL_ROUTES}");
    let e = parse(&text).unwrap_err();
    assert_eq!(
        e.key, "binds[0].listeners[0].routes[0].backends[0].pool",
        "{e}"
    );
    assert_eq!(e.line, 9, "{e}");
    assert!(
        e.message
            .contains("unknown pool \"fleet\"; defined pools: other"),
        "{e}"
    );

    let e = parse(&format!(
        "pools:\n- name: fleet\n  endpoints: [\"a:1\"]\n  endpointsFile: pods.txt\n{POOL_ROUTES}"
    ))
    .unwrap_err();
    assert!(e.message.contains("exactly one of `endpoints`"), "{e}");

    let e = parse(&format!(
        "config:\n  extProc: {{addr: \"127.0.0.1:9002\", pool: nope}}\npools:\n- name: fleet\n  endpoints: [\"a:1\"]\n{POOL_ROUTES}"
    ))
    .unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (2, "config.extProc.pool"), "{e}");
}

#[test]
fn a_route_policy_on_a_backend_is_refused_with_its_place() {
    let text = "binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - host: 127.0.0.1:1\n        policies:\n          requestHeaderModifier: {set: {x-a: b}}\n          jwtAuth:\n            jwks: '{\"keys\": []}'\n";
    let e = parse(text).unwrap_err();
    assert_eq!(
        e.key, "binds[0].listeners[0].routes[0].backends[0].policies.jwtAuth",
        "{e}"
    );
    assert_eq!(e.line, 9, "{e}");
    assert!(e.message.contains("route policy"), "{e}");

    let text = "binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - ai:\n          name: a\n          provider: {openAI: {}}\n          policies:\n            timeout: {requestTimeout: 1s}\n";
    let e = parse(text).unwrap_err();
    assert_eq!(
        e.key, "binds[0].listeners[0].routes[0].backends[0].ai.policies.timeout.requestTimeout",
        "{e}"
    );
    // Backend-phase kinds stay allowed on a backend.
    let text = "binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - host: 127.0.0.1:1\n        policies:\n          timeout: {backendRequestTimeout: 1s}\n          backendAuth: {key: k}\n          urlRewrite: {path: {full: /x}}\n";
    parse(text).unwrap();
}

const GUARDED: &str = "binds:\n- port: 80\n  listeners:\n  - routes:\n    - policies:\n        guardrails:\n          request:\n          - name: pii\n            regex: {builtins: [email, creditCard, iban], patterns: ['ACME-[0-9]{6}']}\n            action: mask\n          response:\n          - name: secrets\n            regex: {builtins: [secrets]}\n            action: reject\n      backends:\n      - ai: {name: a, provider: {openAI: {}}}\n";

#[test]
fn guardrails_load_and_bad_ones_are_refused_at_their_line() {
    let loaded = parse(GUARDED).unwrap();
    let g = loaded.config.binds[0].listeners[0].routes[0]
        .policies
        .as_ref()
        .unwrap()
        .guardrails
        .clone()
        .unwrap();
    assert_eq!(g.request[0].regex.as_ref().unwrap().builtins.len(), 3);
    assert_eq!(g.request[0].action, GuardAction::Mask);
    assert_eq!(g.response[0].action, GuardAction::Reject);

    let bad = GUARDED.replace("ACME-[0-9]{6}", "ACME-[0-9");
    let e = parse(&bad).unwrap_err();
    assert_eq!(
        e.key, "binds[0].listeners[0].routes[0].policies.guardrails.request[0].regex.patterns[0]",
        "{e}"
    );
    assert_eq!(e.line, 9, "{e}");

    let e = parse(&GUARDED.replace("creditCard", "creditcard")).unwrap_err();
    assert_eq!(e.line, 9, "{e}");
    let e = parse(&GUARDED.replace("action: reject", "action: block")).unwrap_err();
    assert_eq!(e.line, 14, "{e}");
    let e = parse(&GUARDED.replace("name: secrets", "name: secrets\n            extra: 1"))
        .unwrap_err();
    assert!(e.message.contains("extra"), "{e}");

    // Not on a non-LLM route, not on a backend.
    let e = parse(&GUARDED.replace("ai: {name: a, provider: {openAI: {}}}", "host: 127.0.0.1:1"))
        .unwrap_err();
    assert!(e.message.contains("must be `ai`"), "{e}");
    assert_eq!(e.line, 6, "{e}");
    let text = "binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - ai:\n          name: a\n          provider: {openAI: {}}\n          policies:\n            guardrails: {request: [{name: x, regex: {builtins: [email]}, action: audit}]}\n";
    let e = parse(text).unwrap_err();
    assert!(e.message.contains("route policy"), "{e}");
    assert_eq!(e.line, 10, "{e}");

    // A remote guard on the answer may pace itself over streams; on the prompt it may not.
    let hook = "          - name: hook\n            webhook: {url: 'http://127.0.0.1:1/x', streamWindow: 200}\n            action: reject\n";
    let ok = GUARDED.replace(
        "          response:\n",
        &format!("          response:\n{hook}"),
    );
    parse(&ok).unwrap();
    let e = parse(&GUARDED.replace(
        "          response:\n",
        &format!("{hook}          response:\n"),
    ))
    .unwrap_err();
    assert_eq!(
        e.key,
        "binds[0].listeners[0].routes[0].policies.guardrails.request[1].webhook.streamWindow",
        "{e}"
    );
    assert_eq!(e.line, 12, "{e}");
    let e = parse(&ok.replace("streamWindow: 200", "streamWindow: 0")).unwrap_err();
    assert!(e.message.contains("at least 1"), "{e}");

    // Response guards cannot read a passthrough operation's answers: refused at its line.
    let table = |routes: &str| {
        GUARDED.replace(
            "ai: {name: a, provider: {openAI: {}}}",
            &format!("ai:\n          name: a\n          provider: {{openAI: {{}}}}\n          policies:\n            ai:\n              routes: {routes}\n"),
        )
    };
    let e = parse(&table(
        "{/v1/chat/completions: completions, '*': passthrough}",
    ))
    .unwrap_err();
    assert_eq!(
        e.key,
        "binds[0].listeners[0].routes[0].policies.guardrails.backends[0].ai.policies.ai.routes"
            .replace(".policies.guardrails.backends", ".backends"),
        "{e}"
    );
    assert!(e.message.contains("passthrough"), "{e}");
    assert_eq!(e.line, 21, "{e}");
    let e = parse(&table("{/v1/chat/completions: completions}")).unwrap_err();
    assert!(e.message.contains("without `*`"), "{e}");
    assert_eq!(e.line, 21, "{e}");
    parse(&table(
        "{/v1/chat/completions: completions, '*': completions}",
    ))
    .unwrap();
}

#[test]
fn governance_and_failover_mistakes_name_their_place() {
    let route = |policies: &str| {
        format!("binds:\n- port: 80\n  listeners:\n  - routes:\n    - policies:\n{policies}      backends:\n      - host: 127.0.0.1:1\n")
    };
    // A key with neither `key` nor `hash`.
    let e = parse(&route(
        "        apiKeyAuth:\n          keys:\n          - {name: alice}\n",
    ))
    .unwrap_err();
    assert_eq!(
        e.key, "binds[0].listeners[0].routes[0].policies.apiKeyAuth.keys[0]",
        "{e}"
    );
    assert_eq!(e.line, 8, "{e}");
    // A malformed hash.
    let e = parse(&route(
        "        apiKeyAuth:\n          keys:\n          - {name: bob, hash: 'sha256:abc'}\n",
    ))
    .unwrap_err();
    assert!(
        e.key.ends_with("keys[0].hash") && e.message.contains("64 hex"),
        "{e}"
    );
    // A rule that is both allow and deny; a CEL error in a limit key.
    let e = parse(&route(
        "        authorization:\n          rules:\n          - {allow: 'true', deny: 'false'}\n",
    ))
    .unwrap_err();
    assert!(e.key.ends_with("authorization.rules[0]"), "{e}");
    let e = parse(&route("        rateLimit:\n          limits:\n          - {name: a, key: 'apiKey.', requests: 1, window: 1m}\n")).unwrap_err();
    assert!(
        e.key.ends_with("rateLimit.limits[0].key") && e.message.contains("CEL"),
        "{e}"
    );
    // A budget of nothing.
    let e = parse(&route(
        "        budgets:\n          teams:\n            research: {window: day}\n",
    ))
    .unwrap_err();
    assert!(e.key.ends_with("budgets.teams.research"), "{e}");
    // retry and failover together.
    let e = parse(&route(
        "        retry: {attempts: 2}\n        failover: {attempts: 3}\n",
    ))
    .unwrap_err();
    assert!(e.key.ends_with("policies.failover") && e.line == 7, "{e}");
    // Governance is route-phase: not on a backend.
    let e = parse("binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - host: 127.0.0.1:1\n        policies:\n          rateLimit: {limits: []}\n").unwrap_err();
    assert!(e.key.ends_with("backends[0].policies.rateLimit"), "{e}");
    // And a good one loads.
    parse(&route("        apiKeyAuth:\n          keys:\n          - {name: a, key: k, team: t, rateLimit: {requests: 5}}\n        budgets:\n          key: {cost: 1.5, window: day}\n          teams: {t: {tokens: 100, window: month}}\n        failover: {on: [rateLimited, contextLength], circuit: {failures: 3}}\n")).unwrap();
}
