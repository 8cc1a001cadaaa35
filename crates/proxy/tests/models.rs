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
