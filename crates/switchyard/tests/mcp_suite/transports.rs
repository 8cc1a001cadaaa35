//! Target transports beyond streamable HTTP: legacy HTTP+SSE, OpenAPI operations as tools,
//! and stdio children's lifetimes.

use crate::common::{free_port, wait_until, Proc};
use crate::harness::*;
use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_clients_and_targets() {
    // The reference server on its legacy HTTP+SSE transport, as a third target.
    let sse_port = free_port();
    let _old = Proc(
        Command::new("node")
            .arg(everything())
            .arg("sse")
            .env("PORT", sse_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sse_addr: SocketAddr = format!("127.0.0.1:{sse_port}").parse().unwrap();
    wait_until("legacy SSE server up", Duration::from_secs(20), || {
        TcpStream::connect(sse_addr).is_ok()
    });
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let targets = format!("          - name: old\n            sse:\n              host: http://127.0.0.1:{sse_port}/sse\n");
    let _gw = start(dir.path(), port, &config_with(port, &sim.url, "", &targets));
    // A legacy client (the SDK's SSE transport) through the gateway.
    let v = run_client("legacy", port).await;
    let tools = v["tools"].to_string();
    for t in ["everything_echo", "old_echo", "sim_add"] {
        assert!(tools.contains(t), "{t} missing: {tools}");
    }
    assert!(v["old_echo"].as_str().unwrap().contains("via sse"), "{v}");
    assert!(
        v["stdio_echo"].as_str().unwrap().contains("via stdio"),
        "{v}"
    );
    assert_eq!(v["http_add"], "7");
}

/// A tiny HTTP service that answers every request with what it received, as JSON.
async fn echo_service() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break (head.to_string(), body.to_string());
                        }
                    }
                };
                let line = head.lines().next().unwrap_or("").to_string();
                let mut it = line.split(' ');
                let (method, target) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                let key = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("x-api-key: ")
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                let reply = serde_json::json!({"method": method, "target": target, "body": body, "key": key}).to_string();
                let status = if target.contains("/missing") {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}", reply.len()).as_bytes())
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_operations_are_tools() {
    let service = echo_service().await;
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pets.yaml"),
        r##"openapi: 3.0.3
info: {title: pets, version: "1"}
paths:
  /pets/{petId}:
    parameters:
    - {name: petId, in: path, required: true, schema: {type: integer}}
    get:
      operationId: getPet
      summary: Get a pet
      parameters:
      - {name: verbose, in: query, schema: {type: boolean}}
      - {name: x-api-key, in: header, schema: {type: string}}
  /pets:
    post:
      operationId: createPet
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Pet"}
components:
  schemas:
    Pet: {type: object, properties: {name: {type: string}}}
"##,
    )
    .unwrap();
    let port = free_port();
    // The schema path is relative to the config file.
    let targets = format!("          - name: pets\n            openapi:\n              schema: pets.yaml\n              host: http://{service}/api\n");
    let _gw = start(dir.path(), port, &config_with(port, &sim.url, "", &targets));
    let sid = raw_session(port);
    let call = |id: u32, body: &str| {
        let (status, _, out) = exchange(
            port,
            "POST",
            &[JSON, ("mcp-session-id", &sid)],
            &format!(r#"{{"jsonrpc":"2.0","id":{id},{body}}}"#),
        );
        assert_eq!(status, 200, "{out}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let list = call(2, r#""method":"tools/list""#);
    let tools = list["result"]["tools"].as_array().unwrap();
    let get = tools
        .iter()
        .find(|t| t["name"] == "pets_getPet")
        .expect("getPet is a tool");
    assert_eq!(get["description"], "Get a pet");
    assert_eq!(get["inputSchema"]["required"], serde_json::json!(["petId"]));
    let create = tools
        .iter()
        .find(|t| t["name"] == "pets_createPet")
        .unwrap();
    assert_eq!(
        create["inputSchema"]["properties"]["body"]["properties"]["name"]["type"],
        "string"
    );

    let r = call(
        3,
        r#""method":"tools/call","params":{"name":"pets_getPet","arguments":{"petId":7,"verbose":true,"x-api-key":"k1"}}"#,
    );
    let seen = &r["result"]["structuredContent"];
    assert_eq!(seen["method"], "GET", "{r}");
    assert_eq!(seen["target"], "/api/pets/7?verbose=true");
    assert_eq!(seen["key"], "k1");
    assert_eq!(r["result"]["isError"], false);
    let r = call(
        4,
        r#""method":"tools/call","params":{"name":"pets_createPet","arguments":{"body":{"name":"rex"}}}"#,
    );
    let seen = &r["result"]["structuredContent"];
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], r#"{"name":"rex"}"#);
    let r = call(
        5,
        r#""method":"tools/call","params":{"name":"pets_getPet","arguments":{}}"#,
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing path parameter petId"),
        "{r}"
    );
}

/// An OpenAPI target against a real OpenAPI-described service: a FastAPI app
/// (`tests/mcp/openapi_service.py`) whose generated 3.1 document the gateway fetches from
/// `/openapi.json`, driven by the official `mcp` SDK client through the gateway. The service
/// records what it received, so the HTTP requests the gateway made are checked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_target_against_a_fastapi_service() {
    let svc_port = free_port();
    let _svc = Proc(
        Command::new(crate::common::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/mcp/openapi_service.py"
            ))
            .arg(svc_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let svc: SocketAddr = format!("127.0.0.1:{svc_port}").parse().unwrap();
    wait_until("FastAPI service up", Duration::from_secs(30), || {
        crate::common::http(svc, "GET", "/openapi.json", "").is_some_and(|(s, _)| s == 200)
    });
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let targets = format!("          - name: inv\n            openapi:\n              schema: http://{svc}/openapi.json\n              host: http://{svc}\n");
    let _gw = start(dir.path(), port, &config_with(port, &sim.url, "", &targets));
    let v = run_client("openapi", port).await;

    assert_eq!(
        v["tools"],
        serde_json::json!([
            "inv_createItem",
            "inv_deleteItem",
            "inv_getItem",
            "inv_search_items_items_get"
        ]),
        "every operation of the generated document, and nothing left out of it: {v}"
    );
    assert_eq!(v["descriptions"]["inv_getItem"], "Read one item");
    let get = &v["schemas"]["inv_getItem"];
    assert_eq!(get["required"], serde_json::json!(["item_id"]), "{get}");
    assert_eq!(get["properties"]["item_id"]["type"], "integer");
    let create = &v["schemas"]["inv_createItem"];
    assert_eq!(
        create["properties"]["body"]["properties"]["price"]["type"], "number",
        "the body's $ref to components/schemas/NewItem was resolved: {create}"
    );
    assert_eq!(create["required"], serde_json::json!(["body"]));

    // The service's answers reach the client as the tool results.
    assert_eq!(v["get"]["isError"], false, "{v}");
    assert_eq!(
        v["get"]["structured"],
        serde_json::json!({"name": "lamp", "price": 12.5})
    );
    assert_eq!(
        v["get_null"]["structured"]["tags"],
        serde_json::json!(["home"])
    );
    let search = &v["search"]["structured"];
    assert_eq!(search["tags"], serde_json::json!(["home", "garden"]), "{v}");
    assert_eq!(search["limit"], 3);
    assert_eq!(search["token"], "t0k");
    assert_eq!(search["items"][0]["name"], "lamp");
    assert_eq!(v["create"]["isError"], false);
    assert_eq!(v["create"]["structured"]["id"], 2);
    assert_eq!(v["create"]["structured"]["name"], "rake");
    // Error statuses are isError results carrying the service's own answer.
    assert_eq!(v["missing"]["isError"], true, "{v}");
    assert_eq!(v["missing"]["structured"]["detail"], "no item 99");
    assert_eq!(v["invalid"]["isError"], true, "422 from FastAPI: {v}");
    assert!(v["invalid"]["text"].as_str().unwrap().contains("price"));
    assert_eq!(v["delete"]["isError"], false, "{v}");
    assert_eq!(v["delete"]["text"], "", "204: no content");
    assert_eq!(
        v["after_delete"]["isError"], true,
        "the delete really happened"
    );

    // What the service received.
    let (status, seen) = crate::common::http(svc, "GET", "/_seen", "").unwrap();
    assert_eq!(status, 200);
    let seen: Value = serde_json::from_str(&seen).unwrap();
    let reqs: Vec<(String, String, String)> = seen
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] != "/openapi.json")
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
                r["query"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = |m: &str, p: &str, q: &str| (m.to_string(), p.to_string(), q.to_string());
    assert_eq!(
        reqs,
        vec![
            want("GET", "/items/1", "fields=name%2Cprice"),
            want("GET", "/items/1", ""),
            want("GET", "/items", "tag=home&tag=garden&limit=3"),
            want("POST", "/items", ""),
            want("GET", "/items/99", ""),
            want("POST", "/items", ""),
            want("DELETE", "/items/2", ""),
            want("GET", "/items/2", ""),
        ],
        "{seen}"
    );
    let all = seen.as_array().unwrap();
    let search = all.iter().find(|r| r["path"] == "/items").unwrap();
    assert_eq!(search["token"], "t0k", "the header parameter");
    let post = all.iter().find(|r| r["method"] == "POST").unwrap();
    assert_eq!(post["content_type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(post["body"].as_str().unwrap()).unwrap(),
        serde_json::json!({"name": "rake", "price": 9.5, "tags": ["garden"]})
    );
    let fetched = all.iter().filter(|r| r["path"] == "/openapi.json").count();
    assert!(
        (1..reqs.len()).contains(&fetched),
        "the document is fetched and kept, not fetched per call: {fetched}"
    );
}

/// Live (not zombie) processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name; a zombie is already dead.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_children_never_outlive_the_gateway() {
    for signal in ["TERM", "KILL"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let yaml = format!(
            r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
  drainTimeout: 1s
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: everything
            stdio:
              cmd: node
              args: ["{script}", "stdio"]
"#,
            admin = free_port(),
            stats = free_port(),
            script = everything().display()
        );
        let mut gw = start(dir.path(), port, &yaml);
        raw_session(port);
        let gw_pid = gw.0.id();
        let children = children_of(gw_pid);
        assert!(!children.is_empty(), "the session started a stdio child");
        Command::new("kill")
            .args(["-s", signal, &gw_pid.to_string()])
            .status()
            .unwrap();
        let _ = gw.0.wait();
        wait_until(
            &format!("stdio children gone after SIG{signal}"),
            Duration::from_secs(10),
            || children.iter().all(|c| !is_running(*c)),
        );
    }
}
