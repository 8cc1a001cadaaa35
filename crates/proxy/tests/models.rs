//! One endpoint for many models: `GET /v1/models` on a listener that routes by model lists the
//! models its routes serve by name, in the caller's shape.

mod common;

use common::*;
use http::Request;

#[tokio::test]
async fn the_model_list_is_the_route_table() {
    let up = echo("provider").await;
    let a = up.addr;
    let yaml = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - matches: [{{path: {{pathPrefix: /v1}}, model: {{exact: gpt-4o}}}}]\n      backends: [{{ai: {{name: o, hostOverride: '{a}', provider: {{openAI: {{}}}}}}}}]\n    - matches: [{{path: {{pathPrefix: /v1}}, model: {{exact: claude-sonnet-4-5}}}}, {{path: {{pathPrefix: /v1}}, model: {{exact: gpt-4o}}}}]\n      backends: [{{ai: {{name: c, hostOverride: '{a}', provider: {{anthropic: {{}}}}}}}}]\n    - matches: [{{path: {{pathPrefix: /v1}}, model: {{regex: 'llama-.*'}}}}]\n      backends: [{{ai: {{name: l, hostOverride: '{a}', provider: {{openAI: {{}}}}}}}}]\n"
    );
    let (_gw, addr) = gateway(&yaml).await;
    let r = get(addr, "/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    // Exact names once each, in file order; patterns name no model.
    assert_eq!(ids, ["gpt-4o", "claude-sonnet-4-5"]);
    assert_eq!(r.json()["object"], "list");
    let r = send(
        addr,
        Request::get("/v1/models")
            .header("anthropic-version", "2023-06-01")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(r.json()["data"][1]["type"], "model");
    assert_eq!(r.json()["last_id"], "claude-sonnet-4-5");
    assert_eq!(r.json()["has_more"], false);
}

/// The list shows what the caller's API key may use: a key limited to some models sees those,
/// an unlimited key sees all (aliases of backends on pattern routes included), and a caller
/// with no key where keys are required gets 401 in its own shape rather than an empty list.
#[tokio::test]
async fn the_model_list_is_what_the_callers_key_may_use() {
    let up = echo("provider").await;
    let a = up.addr;
    let keys = "      policies:\n        apiKeyAuth:\n          keys:\n          - {name: alice, key: sk-alice, models: ['gpt-*']}\n          - {name: bob, key: sk-bob}\n";
    let yaml = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - matches: [{{path: {{pathPrefix: /v1}}, model: {{exact: gpt-4o}}}}]\n{keys}      backends: [{{ai: {{name: o, hostOverride: '{a}', provider: {{openAI: {{}}}}}}}}]\n    - matches: [{{path: {{pathPrefix: /v1}}, model: {{exact: claude-sonnet-4-5}}}}]\n{keys}      backends: [{{ai: {{name: c, hostOverride: '{a}', provider: {{anthropic: {{}}}}}}}}]\n    - matches: [{{path: {{pathPrefix: /v1}}, model: {{regex: 'llama-.*|gpt-fast'}}}}]\n{keys}      backends: [{{ai: {{name: l, hostOverride: '{a}', provider: {{openAI: {{}}}}, policies: {{ai: {{modelAliases: {{gpt-fast: llama-3-70b, other: x}}}}}}}}}}]\n"
    );
    let (_gw, addr) = gateway(&yaml).await;
    let ids = |r: &Reply| -> Vec<String> {
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let list = |key: Option<&'static str>| {
        let mut b = Request::get("/v1/models");
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        send(addr, b.body(full("")).unwrap())
    };
    let r = list(Some("sk-bob")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // `other` is an alias the pattern route does not accept: not listed.
    assert_eq!(
        ids(&r),
        ["gpt-4o", "claude-sonnet-4-5", "gpt-fast", "llama-3-70b"]
    );
    let r = list(Some("sk-alice")).await;
    assert_eq!(ids(&r), ["gpt-4o", "gpt-fast"]);
    let r = list(None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unauthenticated");
    let r = list(Some("sk-wrong")).await;
    assert_eq!(r.status, 401);
    let r = send(
        addr,
        Request::get("/v1/models")
            .header("x-api-key", "sk-alice")
            .header("anthropic-version", "2023-06-01")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(ids(&r), ["gpt-4o", "gpt-fast"]);
    assert_eq!(r.json()["first_id"], "gpt-4o");
}
