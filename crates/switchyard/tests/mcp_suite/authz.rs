//! Tool authorization by CEL rules over JWT claims.

use crate::common::free_port;
use crate::harness::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_authorization_by_jwt_claims() {
    use base64::Engine as _;
    let secret = b"switchyard-mcp-jwt-test-secret-0123456789";
    let jwks = format!(
        r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{}"}}]}}"#,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks).unwrap();
    let port = free_port();
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - policies:
        jwtAuth:
          issuer: https://idp.example
          audiences: [mcp]
          jwks: {{file: jwks.json}}
        mcpAuthorization:
          rules:
          - 'mcp.tool.name == "echo"'
          - 'jwt.groups.exists(g, g == "math") && mcp.tool.name in ["add", "slow_count"]'
      backends:
      - mcp:
          targets:
          - name: sim
            mcp: {{host: "{url}"}}
"#,
        admin = free_port(),
        stats = free_port(),
        url = sim.url
    );
    let _gw = start(dir.path(), port, &yaml);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |groups: &[&str]| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("k1".into());
        let claims = serde_json::json!({"sub": "u", "iss": "https://idp.example", "aud": "mcp", "exp": now + 600, "groups": groups});
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(secret))
                .unwrap()
        )
    };
    // No token: refused before any MCP handling.
    let (status, head, body) = exchange(port, "POST", &[JSON, ACCEPT], INIT);
    assert_eq!(status, 401, "{body}");
    assert_eq!(header(&head, "www-authenticate"), Some("Bearer"));
    let tools_for = |auth: &str| {
        let (status, head, body) =
            exchange(port, "POST", &[JSON, ACCEPT, ("authorization", auth)], INIT);
        assert_eq!(status, 200, "{body}");
        let sid = header(&head, "mcp-session-id").unwrap().to_string();
        let (_, _, body) = exchange(
            port,
            "POST",
            &[JSON, ("authorization", auth), ("mcp-session-id", &sid)],
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        let mut names: Vec<String> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        let (_, _, call) = exchange(
            port,
            "POST",
            &[JSON, ("authorization", auth), ("mcp-session-id", &sid)],
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":1}}}"#,
        );
        (names, call)
    };
    let (math, call) = tools_for(&token(&["math"]));
    assert_eq!(math, ["add", "echo", "slow_count"]);
    assert!(call.contains(r#""text":"2""#), "{call}");
    let (plain, call) = tools_for(&token(&["ops"]));
    assert_eq!(
        plain,
        ["echo"],
        "tools the claims do not allow are not listed"
    );
    assert!(call.contains("not permitted"), "{call}");
}

/// The route's regex guards on tool traffic: arguments masked before the target sees them,
/// a refused call answered with a JSON-RPC error naming the guard, results masked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrails_mask_and_refuse_tool_calls() {
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - policies:
        guardrails:
          request:
          - {{name: pii, regex: {{builtins: [email]}}, action: mask}}
          - {{name: no-tickets, regex: {{patterns: ['TICKET-[0-9]+']}}, action: reject}}
          response:
          - {{name: no-cards, regex: {{builtins: [creditCard]}}, action: mask}}
          - {{name: no-sim, regex: {{patterns: ['simulated MCP']}}, action: mask, placeholder: '[sim]'}}
          - {{name: no-mallory, regex: {{patterns: ['hello to Mallory']}}, action: reject}}
      backends:
      - mcp:
          targets:
          - name: sim
            mcp: {{host: "{url}"}}
"#,
        admin = free_port(),
        url = sim.url
    );
    let _gw = start(dir.path(), port, &yaml);
    let (status, head, body) = exchange(port, "POST", &[JSON, ACCEPT], INIT);
    assert_eq!(status, 200, "{body}");
    let sid = header(&head, "mcp-session-id").unwrap().to_string();
    let call = |text: &str| {
        let msg = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text}}});
        let (_, _, body) = exchange(
            port,
            "POST",
            &[JSON, ACCEPT, ("mcp-session-id", &sid)],
            &msg.to_string(),
        );
        // A JSON answer, or the one event of an SSE answer.
        let json = body
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or(&body)
            .to_string();
        serde_json::from_str::<Value>(&json).unwrap()
    };
    // The echo tool returns its argument: the target only ever saw the masked one.
    let v = call("write to jane@example.com");
    assert_eq!(v["result"]["content"][0]["text"], "write to <EMAIL>", "{v}");
    // The result guard masks what the tool returns.
    let v = call("card 4111 1111 1111 1111");
    assert_eq!(
        v["result"]["content"][0]["text"], "card <CREDIT_CARD>",
        "{v}"
    );
    // A refused call never reaches the target.
    let v = call("about TICKET-1234");
    assert_eq!(v["id"], 7);
    assert_eq!(v["error"]["data"]["guard"], "no-tickets", "{v}");
    assert!(!v.to_string().contains("TICKET-1234"), "{v}");

    // Prompts and resources: the same guards, the same answers.
    let rpc = |method: &str, params: Value| {
        let msg =
            serde_json::json!({"jsonrpc": "2.0", "id": 8, "method": method, "params": params});
        let (_, _, body) = exchange(
            port,
            "POST",
            &[JSON, ACCEPT, ("mcp-session-id", &sid)],
            &msg.to_string(),
        );
        let json = body
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or(&body)
            .to_string();
        serde_json::from_str::<Value>(&json).unwrap()
    };
    let get = |who: &str| {
        rpc(
            "prompts/get",
            serde_json::json!({"name": "greeting", "arguments": {"who": who}}),
        )
    };
    // The prompt's arguments through the request guards, its messages through the response's.
    let v = get("jane@example.com");
    assert_eq!(
        v["result"]["messages"][0]["content"]["text"], "Say hello to <EMAIL>.",
        "{v}"
    );
    let v = get("Mallory");
    assert_eq!(v["error"]["data"]["code"], "guardrail_rejected", "{v}");
    assert_eq!(v["error"]["data"]["guard"], "no-mallory", "{v}");
    assert!(!v.to_string().contains("Mallory"), "{v}");
    let v = get("TICKET-77");
    assert_eq!(v["error"]["data"]["guard"], "no-tickets", "{v}");
    // A resource's contents are masked; its address and type are not text.
    let v = rpc("resources/read", serde_json::json!({"uri": "sim://readme"}));
    assert_eq!(
        v["result"]["contents"][0],
        serde_json::json!({"uri": "sim://readme", "mimeType": "text/plain", "text": "Switchyard's [sim] server."}),
        "{v}"
    );
}
