//! The Bedrock Runtime simulator over real sockets: SigV4 verification (signed requests accepted;
//! tampered body, wrong keys, stale dates and missing signatures refused), Converse content, the
//! ConverseStream event-stream framing (valid CRCs, tool input reassembled), faults, and the llm
//! crate's translation end to end.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::{send, Reply};
use llm::eventstream::{Decoder, Message};
use serde_json::{json, Map, Value};
use sim::bedrock::{self, sign_request, Keys, Options};

async fn bedrock_sim() -> sim::SimServer {
    bedrock::spawn(Options::default()).await.expect("spawn")
}

fn test_keys() -> Keys<'static> {
    Keys {
        access_key_id: bedrock::TEST_ACCESS_KEY_ID,
        secret_access_key: bedrock::TEST_SECRET_ACCESS_KEY,
        region: bedrock::TEST_REGION,
    }
}

/// How a test signs: keys, optional session token, and the signing time.
struct Signer<'a> {
    keys: Keys<'a>,
    session_token: Option<&'a str>,
    time: SystemTime,
}

impl Signer<'static> {
    fn now() -> Self {
        Signer {
            keys: test_keys(),
            session_token: None,
            time: SystemTime::now(),
        }
    }
}

/// Signs `signed_body` with `signer` (every header sent is signed, as the AWS SDK and the
/// gateway do), then sends `sent_body`, which a test may make differ.
async fn send_signed(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    signed_body: &[u8],
    sent_body: &[u8],
    signer: &Signer<'_>,
) -> Reply {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let mut req = builder.body(()).expect("request");
    sign_request(
        &mut req,
        signed_body,
        &signer.keys,
        signer.session_token,
        signer.time,
    )
    .expect("signed");
    // `send` adds content-type itself.
    let sent: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(k, _)| *k != "content-type")
        .map(|(k, v)| (k.to_string(), v.to_str().expect("ascii").to_string()))
        .collect();
    let sent: Vec<(&str, &str)> = sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    send(addr, "POST", path, &sent, Bytes::copy_from_slice(sent_body)).await
}

async fn converse(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let bytes = body.to_string().into_bytes();
    send_signed(addr, path, headers, &bytes, &bytes, &Signer::now()).await
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"text": text}]})
}

fn weather_tool_config() -> Value {
    json!({"tools": [{"toolSpec": {
        "name": "get_weather",
        "description": "Current weather",
        "inputSchema": {"json": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}
    }}]})
}

fn error_type(reply: &Reply) -> &str {
    reply
        .header("x-amzn-errortype")
        .and_then(|t| t.split(':').next())
        .unwrap_or("")
}

/// Decodes a whole event-stream body (CRCs checked), asserting nothing is left over.
fn frames(body: &[u8]) -> Vec<Message> {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    decoder.feed(body, &mut out).expect("valid frames");
    assert_eq!(decoder.pending_bytes(), 0, "no partial frame at the end");
    out
}

fn payload(m: &Message) -> Value {
    serde_json::from_slice(&m.payload).expect("JSON payload")
}

// ---------- signatures ----------

#[tokio::test]
async fn signed_converse_is_answered() {
    let server = bedrock_sim().await;
    let body = json!({"messages": [user("hi there")], "system": [{"text": "Be brief."}]});
    let reply = converse(
        server.addr,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
        &[],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(
        v["output"]["message"],
        json!({"role": "assistant", "content": [{"text": "Hello! You said: hi there"}]})
    );
    assert_eq!(v["stopReason"], "end_turn");
    // "hi there" (2) + "Be brief." (2); "Hello! You said: hi there" (5).
    assert_eq!(
        v["usage"],
        json!({"inputTokens": 4, "outputTokens": 5, "totalTokens": 9})
    );
    assert!(reply.header("x-amzn-requestid").is_some());
}

#[tokio::test]
async fn session_tokens_are_signed_and_accepted() {
    let server = bedrock_sim().await;
    let bytes = json!({"messages": [user("hi")]}).to_string().into_bytes();
    let reply = send_signed(
        server.addr,
        "/model/m/converse",
        &[],
        &bytes,
        &bytes,
        &Signer {
            session_token: Some("session-token-value"),
            ..Signer::now()
        },
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn tampered_body_is_refused() {
    let server = bedrock_sim().await;
    let signed = json!({"messages": [user("hi")]}).to_string().into_bytes();
    let sent = json!({"messages": [user("ho")]}).to_string().into_bytes();
    let reply = send_signed(
        server.addr,
        "/model/m/converse",
        &[],
        &signed,
        &sent,
        &Signer::now(),
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(error_type(&reply), "InvalidSignatureException");
    assert!(reply.json()["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("The request signature we calculated does not match"));
}

#[tokio::test]
async fn wrong_keys_and_region_are_refused() {
    let server = bedrock_sim().await;
    let bytes = json!({"messages": [user("hi")]}).to_string().into_bytes();
    let cases = [
        (
            Keys {
                secret_access_key: "not-the-secret",
                ..test_keys()
            },
            "InvalidSignatureException",
        ),
        (
            Keys {
                access_key_id: "AKIAUNKNOWN000000000",
                ..test_keys()
            },
            "UnrecognizedClientException",
        ),
        (
            Keys {
                region: "eu-west-1",
                ..test_keys()
            },
            "InvalidSignatureException",
        ),
    ];
    for (keys, expected) in cases {
        let reply = send_signed(
            server.addr,
            "/model/m/converse",
            &[],
            &bytes,
            &bytes,
            &Signer {
                keys,
                ..Signer::now()
            },
        )
        .await;
        assert_eq!(reply.status, 403, "{}", reply.text());
        assert_eq!(error_type(&reply), expected);
    }
}

#[tokio::test]
async fn stale_and_future_dates_are_refused_recent_ones_accepted() {
    let server = bedrock_sim().await;
    let bytes = json!({"messages": [user("hi")]}).to_string().into_bytes();
    let now = SystemTime::now();
    for (time, ok) in [
        (now - Duration::from_secs(10 * 60), false),
        (now + Duration::from_secs(10 * 60), false),
        (now - Duration::from_secs(60), true),
    ] {
        let reply = send_signed(
            server.addr,
            "/model/m/converse",
            &[],
            &bytes,
            &bytes,
            &Signer {
                time,
                ..Signer::now()
            },
        )
        .await;
        if ok {
            assert_eq!(reply.status, 200, "{}", reply.text());
        } else {
            assert_eq!(reply.status, 403);
            assert_eq!(error_type(&reply), "InvalidSignatureException");
            assert!(reply.text().contains("Signature expired"));
        }
    }
}

#[tokio::test]
async fn unsigned_and_malformed_authorization_are_refused() {
    let server = bedrock_sim().await;
    let body = Bytes::from(json!({"messages": [user("hi")]}).to_string());
    let unsigned = send(server.addr, "POST", "/model/m/converse", &[], body.clone()).await;
    assert_eq!(unsigned.status, 403);
    assert_eq!(error_type(&unsigned), "MissingAuthenticationTokenException");
    let garbage = send(
        server.addr,
        "POST",
        "/model/m/converse",
        &[
            ("authorization", "AWS4-HMAC-SHA256 nonsense"),
            ("x-amz-date", "20250101T000000Z"),
        ],
        body,
    )
    .await;
    assert_eq!(garbage.status, 403);
    assert_eq!(error_type(&garbage), "IncompleteSignatureException");
}

#[tokio::test]
async fn a_changed_signed_header_is_refused() {
    let server = bedrock_sim().await;
    let bytes = json!({"messages": [user("hi")]}).to_string().into_bytes();
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/model/m/converse", server.addr))
        .header("content-type", "application/json")
        .header("x-custom", "signed-value")
        .body(())
        .expect("request");
    sign_request(&mut req, &bytes, &test_keys(), None, SystemTime::now()).expect("signed");
    let auth = req.headers()["authorization"]
        .to_str()
        .expect("ascii")
        .to_string();
    let date = req.headers()["x-amz-date"]
        .to_str()
        .expect("ascii")
        .to_string();
    let reply = send(
        server.addr,
        "POST",
        "/model/m/converse",
        &[
            ("authorization", &auth),
            ("x-amz-date", &date),
            ("x-custom", "other-value"),
        ],
        Bytes::from(bytes),
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(error_type(&reply), "InvalidSignatureException");
}

// ---------- content ----------

#[tokio::test]
async fn validation_errors_are_400() {
    let server = bedrock_sim().await;
    for body in [
        json!({"messages": []}),
        json!({"messages": [user("a"), user("b")]}),
        json!({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}),
        json!({"messages": [{"role": "user", "content": []}]}),
    ] {
        let reply = converse(server.addr, "/model/m/converse", &[], &body).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(error_type(&reply), "ValidationException");
    }
    let unknown = converse(server.addr, "/model/m/invoke-something", &[], &json!({})).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn tool_use_then_tool_result_reply() {
    let server = bedrock_sim().await;
    let body =
        json!({"messages": [user("What's the weather?")], "toolConfig": weather_tool_config()});
    let v = converse(server.addr, "/model/m/converse", &[], &body)
        .await
        .json();
    assert_eq!(v["stopReason"], "tool_use");
    let tool = &v["output"]["message"]["content"][0]["toolUse"];
    assert_eq!(tool["name"], "get_weather");
    assert_eq!(tool["input"], json!({"location": "Paris"}));
    let id = tool["toolUseId"].as_str().expect("id").to_string();

    let body = json!({"toolConfig": weather_tool_config(), "messages": [
        user("What's the weather?"),
        v["output"]["message"],
        {"role": "user", "content": [{"toolResult": {"toolUseId": id, "content": [{"json": {"temp_c": 21}}]}}]}
    ]});
    let v = converse(server.addr, "/model/m/converse", &[], &body)
        .await
        .json();
    assert_eq!(v["stopReason"], "end_turn");
    assert_eq!(
        v["output"]["message"]["content"][0]["text"],
        "The tool returned: {\"temp_c\":21}"
    );
}

#[tokio::test]
async fn stream_frames_have_valid_crcs_and_reassemble_tool_input() {
    let server = bedrock_sim().await;
    let body = json!({
        "messages": [user("weather in both places?")],
        "toolConfig": {"tools": [
            weather_tool_config()["tools"][0].clone(),
            {"toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}
        ]},
        "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    });
    let reply = converse(server.addr, "/model/m/converse-stream", &[], &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    let messages = frames(&reply.body);
    for m in &messages {
        assert_eq!(m.header_str(":message-type"), Some("event"));
        assert_eq!(m.header_str(":content-type"), Some("application/json"));
    }
    let kinds: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.header_str(":event-type"))
        .collect();
    assert_eq!(kinds.first(), Some(&"messageStart"));
    assert_eq!(&kinds[kinds.len() - 2..], ["messageStop", "metadata"]);
    // Reassemble tool inputs per content block.
    let mut names: Map<String, Value> = Map::new();
    let mut inputs: Map<String, Value> = Map::new();
    let mut signature = None;
    for m in &messages {
        let p = payload(m);
        let index = p["contentBlockIndex"].to_string();
        if let Some(tool) = p["start"].get("toolUse") {
            names.insert(index.clone(), tool["name"].clone());
            inputs.insert(index, json!(""));
        } else if let Some(fragment) = p["delta"]["toolUse"]["input"].as_str() {
            let so_far = inputs
                .get_mut(&index)
                .expect("block started before its deltas");
            *so_far = json!(format!("{}{fragment}", so_far.as_str().unwrap_or("")));
        } else if let Some(sig) = p["delta"]["reasoningContent"]["signature"].as_str() {
            signature = Some(sig.to_string());
        }
    }
    assert!(
        signature.is_some(),
        "thinking adds a signed reasoning block"
    );
    let calls: Vec<(Value, Value)> = names
        .iter()
        .map(|(i, name)| {
            let text = inputs[i].as_str().unwrap_or("");
            (
                name.clone(),
                serde_json::from_str(text).expect("fragments join to JSON"),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            (json!("get_weather"), json!({"location": "Paris"})),
            (json!("get_time"), json!({"city": "Paris"})),
        ]
    );
    let stop = messages
        .iter()
        .find(|m| m.header_str(":event-type") == Some("messageStop"));
    assert_eq!(
        payload(stop.expect("messageStop"))["stopReason"],
        "tool_use"
    );
    let meta = payload(messages.last().expect("metadata"));
    assert!(meta["usage"]["outputTokens"]
        .as_u64()
        .is_some_and(|n| n > 0));
}

// ---------- faults ----------

#[tokio::test]
async fn error_faults_use_bedrock_error_types() {
    let server = bedrock_sim().await;
    let body = json!({"messages": [user("hi")]});
    for (fault, status, kind) in [
        ("429", 429, "ThrottlingException"),
        ("500", 500, "InternalServerException"),
        ("529", 503, "ServiceUnavailableException"),
    ] {
        let reply = converse(
            server.addr,
            "/model/m/converse",
            &[("x-sim-fault", fault)],
            &body,
        )
        .await;
        assert_eq!(reply.status, status);
        assert_eq!(error_type(&reply), kind);
        assert!(reply.json()["message"].is_string());
    }
}

#[tokio::test]
async fn reset_cuts_the_stream_after_whole_frames() {
    let server = bedrock_sim().await;
    let body = json!({"messages": [user("one two three four five six seven eight")]});
    let reply = converse(
        server.addr,
        "/model/m/converse-stream",
        &[("x-sim-fault", "reset")],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body_error.is_some(), "the body ends in an error");
    let messages = frames(&reply.body);
    assert!(!messages.is_empty());
    assert!(!messages
        .iter()
        .any(|m| m.header_str(":event-type") == Some("metadata")));
}

// ---------- through the llm translation ----------

#[tokio::test]
async fn openai_client_round_trip_through_llm() {
    let server = bedrock_sim().await;
    let openai = json!({
        "model": "anthropic.claude-3-haiku-20240307-v1:0",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello bedrock"}]
    });
    let empty = Map::new();
    let prepared = llm::prepare_request(
        llm::Format::OpenAiChat,
        llm::Format::Bedrock,
        openai.to_string().as_bytes(),
        &llm::RequestOptions {
            model_override: None,
            model_aliases: &[],
            defaults: &empty,
            overrides: &empty,
            default_max_tokens: 1024,
        },
    )
    .expect("prepared");
    let model = prepared.upstream_model.expect("model");
    let path = format!("/model/{}/converse-stream", model.replace(':', "%3A"));
    let reply = send_signed(
        server.addr,
        &path,
        &[],
        &prepared.body,
        &prepared.body,
        &Signer::now(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut translator =
        llm::StreamTranslator::new(llm::Format::OpenAiChat, llm::Format::Bedrock, true);
    let mut out = Vec::new();
    for piece in reply.body.chunks(5) {
        out.extend_from_slice(&translator.feed(Bytes::copy_from_slice(piece)));
    }
    out.extend_from_slice(&translator.finish());
    let text = String::from_utf8(out).expect("utf8");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let info = translator.info();
    assert_eq!(
        info.completion,
        vec!["Hello! You said: hello bedrock".to_string()]
    );
    assert_eq!(info.usage.input_tokens, Some(4));
}
