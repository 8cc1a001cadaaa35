//! The Gemini / Vertex AI simulator over real sockets: content, function calling, both stream
//! framings, API-key auth, the OAuth JWT-bearer flow end to end, and faults.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{post, send, Reply};
use serde_json::{json, Value};
use sim::gemini::{self, Options};

const KEY: &str = "test-gemini-key";

async fn gemini_sim() -> sim::SimServer {
    gemini::spawn(Options {
        api_key: Some(KEY.into()),
        ..Default::default()
    })
    .await
    .expect("spawn")
}

fn gemini_path(model: &str, method: &str) -> String {
    format!("/v1beta/models/{model}:{method}")
}

fn vertex_path(method: &str) -> String {
    format!("/v1/projects/sim-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:{method}")
}

fn user(text: &str) -> Value {
    json!({"role": "user", "parts": [{"text": text}]})
}

fn weather_tools() -> Value {
    json!([{"functionDeclarations": [{
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "OBJECT", "properties": {
            "location": {"type": "STRING"},
            "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"]}
        }, "required": ["location"]}
    }]}])
}

/// Text of the first candidate (thoughts excluded).
fn text_of(resp: &Value) -> String {
    resp["candidates"][0]["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["thought"] != json!(true))
        .filter_map(|p| p["text"].as_str())
        .collect()
}

#[tokio::test]
async fn generate_content_echoes_with_usage_and_ids() {
    let server = gemini_sim().await;
    let body = json!({
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [user("hello there")],
        "generationConfig": {"thinkingConfig": {"includeThoughts": true}}
    });
    let reply = post(
        server.addr,
        &gemini_path("gemini-2.5-flash", "generateContent"),
        &[("x-goog-api-key", KEY)],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(text_of(&v), "Hello! You said: hello there");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["candidates"][0]["content"]["role"], "model");
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["thought"], true);
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    assert!(v["responseId"].as_str().is_some_and(|id| !id.is_empty()));
    let u = &v["usageMetadata"];
    let (prompt, cands, thoughts) = (
        u["promptTokenCount"].as_u64().expect("prompt"),
        u["candidatesTokenCount"].as_u64().expect("candidates"),
        u["thoughtsTokenCount"].as_u64().expect("thoughts"),
    );
    assert_eq!(cands, sim::count_tokens("Hello! You said: hello there"));
    assert!(prompt > 0 && thoughts > 0);
    assert_eq!(
        u["totalTokenCount"].as_u64(),
        Some(prompt + cands + thoughts)
    );

    // Two requests get different response ids.
    let again = post(
        server.addr,
        &gemini_path("m", "generateContent"),
        &[("x-goog-api-key", KEY)],
        &body,
    )
    .await;
    assert_ne!(again.json()["responseId"], v["responseId"]);
}

#[tokio::test]
async fn api_key_header_or_query_and_google_error_shapes() {
    let server = gemini_sim().await;
    let body = json!({"contents": [user("hi")]});
    let path = gemini_path("gemini-2.5-flash", "generateContent");
    let by_query = post(server.addr, &format!("{path}?key={KEY}"), &[], &body).await;
    assert_eq!(by_query.status, 200);

    let wrong = post(server.addr, &path, &[("x-goog-api-key", "nope")], &body).await;
    assert_eq!(wrong.status, 400);
    let e = wrong.json();
    assert_eq!(e["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(e["error"]["code"], 400);
    assert_eq!(e["error"]["details"][0]["reason"], "API_KEY_INVALID");

    let missing = post(server.addr, &path, &[], &body).await;
    assert_eq!(missing.status, 403);
    assert_eq!(missing.json()["error"]["status"], "PERMISSION_DENIED");

    let no_contents = post(server.addr, &path, &[("x-goog-api-key", KEY)], &json!({})).await;
    assert_eq!(no_contents.status, 400);
    assert_eq!(no_contents.json()["error"]["status"], "INVALID_ARGUMENT");

    let unknown = post(
        server.addr,
        "/v1beta/models/m:embedContentX",
        &[("x-goog-api-key", KEY)],
        &body,
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["status"], "NOT_FOUND");
}

#[tokio::test]
async fn function_call_then_function_response() {
    let server = gemini_sim().await;
    let path = gemini_path("gemini-2.5-flash", "generateContent");
    let ask = json!({"contents": [user("What's the weather like?")], "tools": weather_tools()});
    let v = post(server.addr, &path, &[("x-goog-api-key", KEY)], &ask)
        .await
        .json();
    let part = &v["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "get_weather");
    assert_eq!(
        part["functionCall"]["args"],
        json!({"location": "Paris", "unit": "celsius"})
    );
    assert!(part["thoughtSignature"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");

    let answer = json!({"contents": [
        user("What's the weather like?"),
        {"role": "model", "parts": [part]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}]}
    ], "tools": weather_tools()});
    let v = post(server.addr, &path, &[("x-goog-api-key", KEY)], &answer)
        .await
        .json();
    let text = text_of(&v);
    assert!(
        text.contains("get_weather") && text.contains("21"),
        "{text}"
    );

    // Mode NONE: no call even though the prompt asks for weather.
    let none = json!({"contents": [user("weather?")], "tools": weather_tools(),
                      "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}});
    let v = post(server.addr, &path, &[("x-goog-api-key", KEY)], &none)
        .await
        .json();
    assert!(v["candidates"][0]["content"]["parts"][0]["functionCall"].is_null());
}

/// Splits a `\r\n\r\n`-framed SSE body into its `data:` payloads, checking the framing.
fn sse_payloads(reply: &Reply) -> Vec<Value> {
    let text = reply.text();
    assert!(text.ends_with("\r\n\r\n"), "complete events: {text:?}");
    text.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("data line: {e:?}"));
            assert!(!data.contains('\n'), "one line per event: {e:?}");
            serde_json::from_str(data).unwrap_or_else(|err| panic!("{err}: {data}"))
        })
        .collect()
}

#[tokio::test]
async fn sse_stream_reassembles_to_the_whole_response() {
    let server = gemini_sim().await;
    let body = json!({"contents": [user("stream me a fairly long answer please")]});
    let whole = post(
        server.addr,
        &gemini_path("g", "generateContent"),
        &[("x-goog-api-key", KEY)],
        &body,
    )
    .await
    .json();
    let reply = post(
        server.addr,
        &format!("{}?alt=sse", gemini_path("g", "streamGenerateContent")),
        &[("x-goog-api-key", KEY)],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let chunks = sse_payloads(&reply);
    assert!(chunks.len() > 1, "streamed in several chunks");
    let text: String = chunks.iter().map(text_of).collect();
    assert_eq!(text, text_of(&whole));
    let (last, rest) = chunks.split_last().expect("chunks");
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(rest
        .iter()
        .all(|c| c["candidates"][0]["finishReason"].is_null()));
    assert_eq!(last["usageMetadata"], whole["usageMetadata"]);
    assert!(chunks.iter().all(|c| c["responseId"] == last["responseId"]));
    assert!(!reply.text().contains("[DONE]"));
}

#[tokio::test]
async fn json_array_stream_without_alt_sse() {
    let server = gemini_sim().await;
    let body = json!({"contents": [user("array framing works")], "tools": weather_tools()});
    let reply = post(
        server.addr,
        &gemini_path("g", "streamGenerateContent"),
        &[("x-goog-api-key", KEY)],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200);
    let v = reply.json();
    let items = v.as_array().expect("a JSON array");
    assert!(items.len() > 1);
    let text: String = items.iter().map(text_of).collect();
    assert_eq!(text, "Hello! You said: array framing works");
}

// ---------- Vertex AI and OAuth ----------

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A JWT assertion signed with the test service account's private key.
fn assertion(claims: &Claims) -> String {
    let der = gemini::rsa_der_from_pem(gemini::TEST_SERVICE_ACCOUNT_PRIVATE_KEY_PEM).expect("key");
    let key = jsonwebtoken::EncodingKey::from_rsa_der(&der);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("sim-test-key-1".into());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

fn good_claims(aud: &str) -> Claims<'_> {
    let iat = now();
    Claims {
        iss: gemini::TEST_SERVICE_ACCOUNT_EMAIL,
        scope: gemini::CLOUD_PLATFORM_SCOPE,
        aud,
        iat,
        exp: iat + 3600,
    }
}

async fn request_token(addr: SocketAddr, grant_type: &str, assertion: &str) -> Reply {
    let form = format!(
        "grant_type={}&assertion={assertion}",
        grant_type.replace(':', "%3A")
    );
    send(
        addr,
        "POST",
        "/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        Bytes::from(form),
    )
    .await
}

async fn vertex(addr: SocketAddr, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    post(
        addr,
        &vertex_path("generateContent"),
        &headers,
        &json!({"contents": [user("from vertex")]}),
    )
    .await
}

#[tokio::test]
async fn oauth_flow_end_to_end_and_token_reuse() {
    let options = Options::default().with_test_service_account();
    let stats = options.stats.clone();
    let server = gemini::spawn(options).await.expect("spawn");
    let aud = format!("http://{}/token", server.addr);

    let sa: Value = serde_json::from_str(&gemini::test_service_account_json(&aud)).expect("json");
    assert_eq!(sa["type"], "service_account");
    assert_eq!(sa["client_email"], gemini::TEST_SERVICE_ACCOUNT_EMAIL);
    assert_eq!(sa["token_uri"], aud.as_str());
    assert!(sa["private_key"]
        .as_str()
        .is_some_and(|k| k.contains("BEGIN PRIVATE KEY")));

    let reply = request_token(
        server.addr,
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        &assertion(&good_claims(&aud)),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let tok = reply.json();
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 3600);
    let access = tok["access_token"].as_str().expect("token").to_string();
    assert_eq!(stats.tokens_issued(), 1);

    for _ in 0..2 {
        let ok = vertex(server.addr, Some(&access)).await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_eq!(text_of(&ok.json()), "Hello! You said: from vertex");
    }
    assert_eq!(stats.vertex_requests(), 2);
    assert_eq!(
        stats.tokens_issued(),
        1,
        "using a token does not issue another"
    );

    let missing = vertex(server.addr, None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"]["status"], "UNAUTHENTICATED");
    let forged = vertex(server.addr, Some("ya29.sim-1-0000000000000000")).await;
    assert_eq!(forged.status, 401);

    // Vertex streaming uses the same token.
    let stream = post(
        server.addr,
        &format!("{}?alt=sse", vertex_path("streamGenerateContent")),
        &[("authorization", &format!("Bearer {access}"))],
        &json!({"contents": [user("s")]}),
    )
    .await;
    assert_eq!(stream.status, 200);
    assert!(!sse_payloads(&stream).is_empty());
}

#[tokio::test]
async fn bad_assertions_are_refused() {
    let server = gemini::spawn(Options::default().with_test_service_account())
        .await
        .expect("spawn");
    let aud = format!("http://{}/token", server.addr);
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let error_of = |r: &Reply| {
        assert_eq!(r.status, 400, "{}", r.text());
        r.json()["error"].as_str().unwrap_or_default().to_string()
    };

    let good = assertion(&good_claims(&aud));
    let (head, sig) = good.rsplit_once('.').expect("jwt");
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{head}.{flipped}{}", &sig[1..]);
    let r = request_token(server.addr, grant, &tampered).await;
    assert_eq!(error_of(&r), "invalid_grant");
    assert_eq!(r.json()["error_description"], "Invalid JWT Signature.");

    let other_aud = assertion(&good_claims("https://oauth2.googleapis.com/token"));
    assert_eq!(
        error_of(&request_token(server.addr, grant, &other_aud).await),
        "invalid_grant"
    );

    let mut long = good_claims(&aud);
    long.exp = long.iat + 7200;
    assert_eq!(
        error_of(&request_token(server.addr, grant, &assertion(&long)).await),
        "invalid_grant"
    );

    let mut expired = good_claims(&aud);
    expired.iat -= 7200;
    expired.exp = expired.iat + 3600;
    assert_eq!(
        error_of(&request_token(server.addr, grant, &assertion(&expired)).await),
        "invalid_grant"
    );

    let mut stranger = good_claims(&aud);
    stranger.iss = "someone@else.iam.gserviceaccount.com";
    assert_eq!(
        error_of(&request_token(server.addr, grant, &assertion(&stranger)).await),
        "invalid_grant"
    );

    let mut narrow = good_claims(&aud);
    narrow.scope = "https://www.googleapis.com/auth/devstorage.read_only";
    assert_eq!(
        error_of(&request_token(server.addr, grant, &assertion(&narrow)).await),
        "invalid_scope"
    );

    assert_eq!(
        error_of(&request_token(server.addr, "client_credentials", &good).await),
        "unsupported_grant_type"
    );
    assert_eq!(
        error_of(&request_token(server.addr, grant, "not.a.jwt").await),
        "invalid_grant"
    );
}

#[tokio::test]
async fn issued_tokens_expire() {
    let options = Options {
        token_lifetime: Duration::from_secs(1),
        ..Options::default().with_test_service_account()
    };
    let server = gemini::spawn(options).await.expect("spawn");
    let aud = format!("http://{}/token", server.addr);
    let reply = request_token(
        server.addr,
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        &assertion(&good_claims(&aud)),
    )
    .await;
    let tok = reply.json();
    assert_eq!(tok["expires_in"], 1);
    let access = tok["access_token"].as_str().expect("token").to_string();
    assert_eq!(vertex(server.addr, Some(&access)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(vertex(server.addr, Some(&access)).await.status, 401);
}

// ---------- faults ----------

#[tokio::test]
async fn faults_in_google_shape_and_mid_stream_reset() {
    let server = gemini_sim().await;
    let body = json!({"contents": [user("a long enough prompt to stream in several chunks")]});
    let path = gemini_path("g", "generateContent");
    let limited = post(
        server.addr,
        &path,
        &[("x-goog-api-key", KEY), ("x-sim-fault", "429")],
        &body,
    )
    .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.json()["error"]["status"], "RESOURCE_EXHAUSTED");

    let internal = post(
        server.addr,
        &path,
        &[("x-goog-api-key", KEY), ("x-sim-fault", "500")],
        &body,
    )
    .await;
    assert_eq!(internal.status, 500);
    assert_eq!(internal.json()["error"]["status"], "INTERNAL");

    let overloaded = post(
        server.addr,
        &path,
        &[("x-goog-api-key", KEY), ("x-sim-fault", "529")],
        &body,
    )
    .await;
    assert_eq!(overloaded.status, 503);
    assert_eq!(overloaded.json()["error"]["status"], "UNAVAILABLE");

    let stream_path = format!("{}?alt=sse", gemini_path("g", "streamGenerateContent"));
    let reset = post(
        server.addr,
        &stream_path,
        &[("x-goog-api-key", KEY), ("x-sim-fault", "reset")],
        &body,
    )
    .await;
    assert_eq!(reset.status, 200);
    assert!(
        reset.body_error.is_some(),
        "the body must end in an error, not cleanly"
    );
    let text = reset.text();
    assert!(
        text.starts_with("data: "),
        "some events arrive first: {text:?}"
    );
    assert!(
        !text.contains("finishReason"),
        "the final chunk never arrives"
    );
}
