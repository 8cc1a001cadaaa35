//! Governance through a real gateway (one process, the in-process store): API keys, the
//! `authorization` rules, local token buckets, shared limits and budgets reserved and settled,
//! keys files and virtual keys. Several replicas sharing Redis are tested with the binary
//! (`crates/switchyard/tests/governance.rs`).

mod common;

use std::time::Duration;

use common::*;
use http::Request;
use serde_json::{json, Value};

fn bind(policies: &str, backends: &str) -> String {
    format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - policies:\n{policies}      backends:\n{backends}"
    )
}

const KEYS: &str = "        apiKeyAuth:\n          keys:\n          - {name: alice, key: sk-alice, team: research, org: acme, models: ['sim-gpt*']}\n          - {name: bob, key: sk-bob, team: sales}\n";

fn chat(model: &str, key: Option<(&str, &str)>, max_tokens: Option<u64>) -> Request<TestBody> {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hello there, how are you today?"}]});
    if let Some(n) = max_tokens {
        body["max_tokens"] = json!(n);
    }
    let mut r = Request::post("/v1/chat/completions").header("content-type", "application/json");
    if let Some((h, v)) = key {
        r = r.header(h, v);
    }
    r.body(full(body.to_string())).unwrap()
}

#[tokio::test]
async fn api_keys_answer_in_the_callers_dialect_and_never_reach_the_upstream() {
    let up = echo("provider").await;
    let yaml = bind(
        KEYS,
        &format!(
            "      - ai: {{name: p, hostOverride: '{}', provider: {{openAI: {{}}}}}}\n",
            up.addr
        ),
    );
    let (_gw, addr) = gateway(&yaml).await;

    // No key, a wrong key: 401 in OpenAI's shape, with WWW-Authenticate.
    let r = send(addr, chat("sim-gpt", None, None)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unauthenticated");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = send(
        addr,
        chat("sim-gpt", Some(("authorization", "Bearer sk-nope")), None),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    assert!(!r.text().contains("sk-nope"), "the key is never echoed");

    // Anthropic clients send x-api-key and get Anthropic's error shape.
    let r = send(
        addr,
        Request::post("/v1/messages")
            .header("content-type", "application/json")
            .header("x-api-key", "sk-wrong")
            .header("anthropic-version", "2023-06-01")
            .body(full(json!({"model": "sim-gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "authentication_error");

    // A good key passes; the header that carried it is not sent upstream.
    let r = send(addr, chat("sim-gpt", Some(("x-api-key", "sk-alice")), None)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.seen("x-api-key").is_empty(), "{}", r.text());

    // The key's model list: another model is 403 model_not_allowed.
    let r = send(
        addr,
        chat("gpt-4o", Some(("authorization", "Bearer sk-alice")), None),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "model_not_allowed");
    // bob has no list.
    let r = send(
        addr,
        chat("gpt-4o", Some(("authorization", "Bearer sk-bob")), None),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn authorization_rules_read_identity_headers_and_the_model() {
    let up = echo("provider").await;
    let policies = format!(
        "{KEYS}        authorization:\n          rules:\n          - deny: 'request.headers[\"x-block\"] == \"1\"'\n          - deny: 'llm.requestModel.startsWith(\"gpt-4\") && apiKey.team != \"research\"'\n          - allow: 'apiKey.org == \"acme\" || apiKey.name == \"bob\"'\n"
    );
    let yaml = bind(
        &policies,
        &format!(
            "      - ai: {{name: p, hostOverride: '{}', provider: {{openAI: {{}}}}}}\n",
            up.addr
        ),
    );
    let (_gw, addr) = gateway(&yaml).await;
    let bob = Some(("authorization", "Bearer sk-bob"));
    assert_eq!(send(addr, chat("sim-gpt", bob, None)).await.status, 200);
    let r = send(addr, chat("gpt-4o-mini", bob, None)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "forbidden");
    let mut blocked = chat("sim-gpt", bob, None);
    blocked
        .headers_mut()
        .insert("x-block", "1".parse().unwrap());
    assert_eq!(send(addr, blocked).await.status, 403);
}

#[tokio::test]
async fn local_token_buckets_answer_429_with_retry_after_and_openai_headers() {
    let up = echo("up").await;
    let policies = format!(
        "{KEYS}        localRateLimit:\n        - key: apiKey.name\n          requests: {{limit: 3, per: 1m}}\n"
    );
    let yaml = bind(&policies, &format!("      - host: {}\n", up.addr));
    let (_gw, addr) = gateway(&yaml).await;
    let get_as = |key: &'static str| {
        Request::get("/x")
            .header("authorization", format!("Bearer {key}"))
            .body(full(""))
            .unwrap()
    };
    for remaining in ["2", "1", "0"] {
        let r = send(addr, get_as("sk-alice")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some(remaining));
        assert!(r.header("x-ratelimit-reset-requests").is_some());
        assert!(
            r.seen("authorization").is_empty(),
            "the key stays at the gateway"
        );
    }
    let r = send(addr, get_as("sk-alice")).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    // One token comes back every 20 s.
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&after), "{after}");
    // The refusal shows the bucket too, as OpenAI's own 429s do.
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(r.header("x-ratelimit-reset-requests").is_some());
    // bob has his own bucket.
    assert_eq!(send(addr, get_as("sk-bob")).await.status, 200);
    let metrics = telemetry::Metrics::global().encode();
    assert!(
        metrics.contains(r#"switchyard_limit_decisions_total{route="binds[0].listeners[0].routes[0]",policy="localRateLimit",outcome="refused"}"#),
        "{metrics}"
    );
}

/// The store key of a budget counter for today (`month`: this month).
fn budget_key(scope: &str, name: &str, unit: &str) -> String {
    budget_key_in(scope, name, unit, false)
}

fn budget_key_in(scope: &str, name: &str, unit: &str, month: bool) -> String {
    let day = {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // The UTC date, from `date` rather than the gateway's own calendar code.
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d"])
            .output()
            .unwrap();
        let day = String::from_utf8(out.stdout).unwrap().trim().to_string();
        match month {
            true => day[..7].to_string(),
            false => day,
        }
    };
    format!("switchyard:budget:{scope}:{name}:{unit}:{day}")
}

#[tokio::test]
async fn budgets_reserve_before_the_call_and_settle_with_real_usage() {
    let sim = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let policies = format!(
        "{KEYS}        budgets:\n          key: {{tokens: 100000, window: day}}\n          teams:\n            research: {{tokens: 1000000, cost: 1.0, window: month}}\n          prices:\n            sim-gpt: {{input: 1000, output: 2000}}\n"
    );
    let yaml = bind(
        &policies,
        &format!(
            "      - ai: {{name: p, hostOverride: '{}', provider: {{openAI: {{}}}}}}\n",
            sim.addr
        ),
    );
    let (gw, addr) = gateway(&yaml).await;
    let shared = gw.governance().current().unwrap();
    let alice = Some(("authorization", "Bearer sk-alice"));

    let r = send(addr, chat("sim-gpt", alice, Some(7))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let usage = &r.json()["usage"];
    let used = usage["total_tokens"].as_i64().unwrap();
    let key = budget_key("key", "alice", "tokens");
    // Settled off the request path: the counter ends at the real usage, not the reservation.
    let store = shared.store.clone();
    wait_for(|| {
        let store = store.clone();
        let key = key.clone();
        async move { store.value(&key).await.unwrap() == used }
    })
    .await;
    // Money: 1000 and 2000 USD per million tokens (the test's price) in micro-dollars.
    let cost = usage["prompt_tokens"].as_i64().unwrap() * 1000
        + usage["completion_tokens"].as_i64().unwrap() * 2000;
    let cost_key = budget_key_in("team", "research", "cost", true);
    assert_eq!(
        shared.store.value(&cost_key).await.unwrap(),
        cost,
        "{cost_key}"
    );

    // A call the provider refuses is refunded whole.
    let mut refused = chat("sim-gpt", alice, Some(7));
    refused
        .headers_mut()
        .insert("x-sim-fault", "500".parse().unwrap());
    assert_eq!(send(addr, refused).await.status, 500);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(shared.store.value(&key).await.unwrap(), used);

    // Over the team's money budget ($1 = 1,000,000 micro-dollars at $1000 per million input
    // tokens is ~1000 tokens): a prompt that big does not fit and is refused before the call.
    let big = "word ".repeat(1500);
    let body = json!({"model": "sim-gpt", "max_tokens": 5, "messages": [{"role": "user", "content": big}]});
    let r = send(
        addr,
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-alice")
            .body(full(body.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "budget_exceeded");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("team \"research\" budget (month)"));
    assert!(r.header("retry-after").is_some());

    // Usage is queryable per key, team and model.
    let (status, usage) = proxy::governance::admin::handle(
        &gw.governance(),
        &http::Method::GET,
        "/usage",
        None,
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    // The 200 and the 500 were admitted; the refused call was never made.
    assert_eq!(usage["keys"]["alice"]["requests"], 2, "{usage}");
    assert_eq!(
        usage["teams"]["research"]["inputTokens"],
        usage["models"]["sim-gpt"]["inputTokens"]
    );
}

#[tokio::test]
async fn a_stream_broken_by_the_upstream_is_charged_what_was_sent() {
    let sim = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let policies =
        format!("{KEYS}        budgets:\n          key: {{tokens: 100000, window: day}}\n");
    let yaml = bind(
        &policies,
        &format!(
            "      - ai: {{name: p, hostOverride: '{}', provider: {{openAI: {{}}}}}}\n",
            sim.addr
        ),
    );
    let (gw, addr) = gateway(&yaml).await;
    let shared = gw.governance().current().unwrap();
    let body = json!({"model": "sim-gpt", "stream": true, "max_tokens": 500,
        "messages": [{"role": "user", "content": "tell me a long story about the sea"}]});
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bob")
        .header("x-sim-fault", "reset")
        .body(full(body.to_string()))
        .unwrap();
    let client = h1_client();
    let uri = format!("http://{addr}/v1/chat/completions");
    let mut req = req;
    *req.uri_mut() = uri.parse().unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    let key = budget_key("key", "bob", "tokens");
    let store = shared.store.clone();
    // Settled: the prompt and the few streamed tokens, far less than the 500-token ceiling.
    wait_for(|| {
        let (store, key) = (store.clone(), key.clone());
        async move {
            let v = store.value(&key).await.unwrap();
            v > 0 && v < 100
        }
    })
    .await;
}

#[tokio::test]
async fn keys_files_reload_and_virtual_keys_live_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.yaml");
    std::fs::write(&file, "- {name: one, key: sk-one}\n").unwrap();
    let up = echo("up").await;
    let yaml = bind(
        "        apiKeyAuth: {keysFile: keys.yaml}\n",
        &format!("      - host: {}\n", up.addr),
    );
    let (gw, addrs) = gateway_in(&yaml, dir.path()).await;
    let addr = addrs[0];
    let get_as = |key: &str| {
        Request::get("/x")
            .header("authorization", format!("Bearer {key}"))
            .body(full(""))
            .unwrap()
    };
    assert_eq!(send(addr, get_as("sk-one")).await.status, 200);
    assert_eq!(send(addr, get_as("sk-two")).await.status, 401);
    // Rewritten (with a different mtime): the next check, at most a second later, sees it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&file, "- {name: two, key: sk-two}\n").unwrap();
    let mut ok = false;
    for _ in 0..40 {
        if send(addr, get_as("sk-two")).await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the keys file was not reloaded");
    assert_eq!(send(addr, get_as("sk-one")).await.status, 401);
    // A broken file keeps the previous keys.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&file, "- {name: three}\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(send(addr, get_as("sk-two")).await.status, 200);

    // Virtual keys through the admin API.
    let gov = gw.governance();
    let (status, made) = proxy::governance::admin::handle(
        &gov,
        &http::Method::POST,
        "/keys",
        None,
        bytes::Bytes::from(r#"{"name": "ci-bot", "team": "platform"}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk-sy-"));
    assert_eq!(send(addr, get_as(&key)).await.status, 200);
    let (_, list) = proxy::governance::admin::handle(
        &gov,
        &http::Method::GET,
        "/keys",
        None,
        Default::default(),
    )
    .await
    .unwrap();
    let listed = list["keys"].to_string();
    assert!(
        listed.contains("ci-bot") && !listed.contains(&key),
        "{listed}"
    );
    assert!(!listed.contains("sha256"), "hashes are not shown");
    let id = made["id"].as_str().unwrap();
    let (status, _) = proxy::governance::admin::handle(
        &gov,
        &http::Method::DELETE,
        &format!("/keys/{id}"),
        None,
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(send(addr, get_as(&key)).await.status, 401);
    let v: Value = made;
    assert_eq!(v["team"], "platform");
}

async fn wait_for<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within 2 s");
}

#[tokio::test]
async fn each_policy_reserves_with_its_own_default_ceiling() {
    // The local bucket (default ceiling 1024) estimates first; the budget's own
    // `defaultMaxTokens: 5000` must still be what it reserves for a call without max_tokens.
    let sim = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let policies = format!(
        "{KEYS}        localRateLimit:\n        - key: apiKey.name\n          tokens: {{limit: 100000, per: 1m}}\n        budgets:\n          defaultMaxTokens: 5000\n          key: {{tokens: 4000, window: day}}\n"
    );
    let yaml = bind(
        &policies,
        &format!(
            "      - ai: {{name: p, hostOverride: '{}', provider: {{openAI: {{}}}}}}\n",
            sim.addr
        ),
    );
    let (_gw, addr) = gateway(&yaml).await;
    let bob = Some(("authorization", "Bearer sk-bob"));
    let r = send(addr, chat("sim-gpt", bob, None)).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "budget_exceeded");
    // With its own ceiling it fits.
    assert_eq!(send(addr, chat("sim-gpt", bob, Some(50))).await.status, 200);
}
