//! A2A through the gateway, end to end: the real binary in front of an echo agent built on the
//! official `a2a-sdk` server (`tests/a2a/agent.py`), driven by the same SDK's client
//! (`tests/a2a/client.py`) on every binding and version the SDK speaks, and by raw HTTP for
//! the wire details the SDK hides (malformed JSON-RPC, push allow-list refusals, error shapes
//! when the agent is down, `X-Forwarded-Proto`).
//!
//! The `@a2a-js/sdk` client (`tests/a2a/client.mjs`) drives the same agent on both HTTP
//! bindings and versions, and through version translation; its gRPC client and server
//! (`grpc_client.mjs`, `grpc_agent.mjs`) the gRPC pass-through.
//!
//! Needs the `.venv` that `.ci/run` creates from `tests/sdk/requirements.txt` (`a2a-sdk`) and
//! `npm ci` in `tests/a2a` (`@a2a-js/sdk`, `@grpc/grpc-js`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, http, http_with, python, wait_until, Proc, BIN};
use serde_json::Value;

fn tests_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/a2a")
}

/// The echo agent on a free port.
fn start_agent() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(python())
        .arg(tests_dir().join("agent.py"))
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("the agent", Duration::from_secs(30), || {
        http(addr, "GET", "/.well-known/agent-card.json", "").is_some_and(|(s, _)| s == 200)
    });
    (proc, port)
}

/// A gateway with the agent at `/agents/echo` (prefix rewritten to `/`) and a dead agent at
/// `/agents/dead`; its JSON access log lines are collected.
struct Gateway {
    _proc: Proc,
    addr: SocketAddr,
    stats: SocketAddr,
    log: Arc<Mutex<Vec<Value>>>,
    _dir: tempfile::TempDir,
}

fn start_gateway(agent_port: u16) -> Gateway {
    let port = free_port();
    let stats = free_port();
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
  logging:
    format: json
    fields:
      add:
        agent_said: 'a2a.method + "/" + a2a.task.state'
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - name: echo
      matches:
      - path:
          pathPrefix: /agents/echo
      policies:
        urlRewrite:
          path:
            prefix: /
      backends:
      - a2a:
          host: 127.0.0.1:{agent_port}
          pushNotificationAllowList: [hooks.example.com]
    - name: dead
      matches:
      - path:
          pathPrefix: /agents/dead
      policies:
        urlRewrite:
          path:
            prefix: /
      backends:
      - a2a:
          host: 127.0.0.1:{dead}
"#,
        admin = free_port(),
        dead = free_port(),
    );
    spawn_gateway(&yaml, port, stats, &[])
}

/// Runs the binary on `yaml` (with `files` written beside it), listening on `port`.
fn spawn_gateway(yaml: &str, port: u16, stats: u16, files: &[(&str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = dir.path().join("a2a.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["-f", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("gateway up", Duration::from_secs(20), || {
        TcpStream::connect(addr).is_ok()
    });
    Gateway {
        _proc: Proc(child),
        addr,
        stats: format!("127.0.0.1:{stats}").parse().unwrap(),
        log,
        _dir: dir,
    }
}

impl Gateway {
    /// Waits for a log line that `f` accepts.
    fn log_line(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        wait_until(what, Duration::from_secs(10), || {
            found = self.log.lock().unwrap().iter().find(|l| f(l)).cloned();
            found.is_some()
        });
        found.unwrap()
    }
}

#[test]
fn the_sdk_client_works_through_the_gateway_on_every_binding_and_version() {
    let (_agent, agent_port) = start_agent();
    let gw = start_gateway(agent_port);
    let base = format!("http://{}/agents/echo", gw.addr);
    let out = Command::new("timeout")
        .arg("90")
        .arg(python())
        .arg(tests_dir().join("client.py"))
        .arg(&base)
        .arg(format!("http://127.0.0.1:{agent_port}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let count = |check: &str| reports.iter().filter(|r| r["check"] == check).count();
    for check in ["send", "stream", "get", "cancel", "resubscribe"] {
        assert_eq!(
            count(check),
            4,
            "{check} on each binding and version: {stdout}"
        );
    }
    assert_eq!(count("extended_card"), 2);
    assert_eq!(count("done"), 1);
    eprintln!("{stdout}");

    // The access log names the operation, binding, version, task and its final state, read
    // from the stream as it passed.
    let streamed = gw.log_line("a streamed send logged", |l| {
        l["a2a.method"] == "SendStreamingMessage"
            && l["a2a.binding"] == "HTTP+JSON"
            && l["a2a.version"] == "1.0"
    });
    assert_eq!(streamed["a2a.task.state"], "completed", "{streamed}");
    assert_eq!(streamed["a2a.artifacts"], 1, "{streamed}");
    assert!(streamed["a2a.events"].as_u64().unwrap() >= 5, "{streamed}");
    assert!(streamed["a2a.task.id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(streamed["a2a.context.id"].is_string());
    let old = gw.log_line("a v0.3 JSON-RPC stream logged", |l| {
        l["a2a.method"] == "SendStreamingMessage"
            && l["a2a.version"] == "0.3"
            && l["a2a.binding"] == "JSONRPC"
    });
    assert_eq!(old["a2a.task.state"], "completed", "{old}");
    let cancel = gw.log_line("a cancel logged", |l| l["a2a.method"] == "CancelTask");
    assert_eq!(cancel["a2a.task.state"], "canceled", "{cancel}");
    assert_eq!(
        cancel["agent_said"], "CancelTask/canceled",
        "CEL fields read `a2a`: {cancel}"
    );
    let get = gw.log_line("a get logged", |l| {
        l["a2a.method"] == "GetTask" && l["a2a.binding"] == "JSONRPC"
    });
    assert_eq!(get["a2a.task.state"], "completed", "{get}");
    let card = gw.log_line("the card fetch logged", |l| {
        l["a2a.method"] == "GetAgentCard"
    });
    assert_eq!(card["route"], "echo");
    gw.log_line("a resubscribe logged", |l| {
        l["a2a.method"] == "SubscribeToTask" && l["a2a.task.state"] == "completed"
    });

    // The bounded metric: agent (backend name), operation, last task state.
    let (_, metrics) = http(gw.stats, "GET", "/metrics", "").unwrap();
    let streamed = metrics
        .lines()
        .find(|l| {
            l.starts_with("switchyard_a2a_requests_total{")
                && l.contains("a2a_method=\"SendStreamingMessage\"")
                && l.contains("a2a_task_state=\"completed\"")
        })
        .unwrap_or_else(|| panic!("no a2a metric in:\n{metrics}"));
    assert!(
        streamed.contains(&format!("backend=\"127.0.0.1:{agent_port}\"")),
        "{streamed}"
    );
    let n: f64 = streamed.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 4.0, "{streamed}");
}

#[test]
fn wire_errors_come_in_the_callers_binding() {
    let (_agent, agent_port) = start_agent();
    let gw = start_gateway(agent_port);
    let rpc = |path: &str, body: &str| {
        http_with(gw.addr, "POST", path, &[("A2A-Version", "1.0")], body).unwrap()
    };

    // Malformed JSON-RPC never reaches the agent.
    let (status, body) = rpc("/agents/echo/jsonrpc", "{\"jsonrpc\": \"2.0\", ");
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], -32700, "{v}");
    let (status, body) = rpc(
        "/agents/echo/jsonrpc",
        r#"[{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"x"}}]"#,
    );
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        -32600
    );

    // A push-notification URL outside the allow-list is refused, in each binding's shape.
    let (status, body) = rpc(
        "/agents/echo/jsonrpc",
        r#"{"jsonrpc":"2.0","id":"p1","method":"CreateTaskPushNotificationConfig","params":{"taskId":"t","url":"http://169.254.169.254/latest/meta-data"}}"#,
    );
    assert_eq!(status, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        ("p1".into(), (-32602).into())
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("169.254.169.254"));
    let (status, body) = http_with(
        gw.addr,
        "POST",
        "/agents/echo/rest/message:send",
        &[("A2A-Version", "1.0")],
        r#"{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"hi"}]},"configuration":{"taskPushNotificationConfig":{"url":"http://10.1.2.3/hook"}}}"#,
    )
    .unwrap();
    assert_eq!(status, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "a2a_push_url_not_allowed", "{v}");
    assert_eq!(v["status"], 403);
    // An allowed host passes the gateway (the agent answers for itself).
    let (status, body) = http_with(
        gw.addr,
        "POST",
        "/agents/echo/rest/message:send",
        &[("A2A-Version", "1.0")],
        r#"{"message":{"messageId":"m2","role":"ROLE_USER","parts":[{"text":"hi"}]},"configuration":{"taskPushNotificationConfig":{"url":"https://hooks.example.com/a2a"}}}"#,
    )
    .unwrap();
    assert_ne!(status, 403, "{body}");
    assert!(!body.contains("a2a_push_url_not_allowed"), "{body}");

    // The agent is down: JSON-RPC callers get a JSON-RPC error with their id, HTTP+JSON
    // callers a problem document.
    let (status, body) = rpc(
        "/agents/dead/jsonrpc",
        r#"{"jsonrpc":"2.0","id":42,"method":"GetTask","params":{"id":"t"}}"#,
    );
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], 42);
    assert_eq!(v["error"]["code"], -32603);
    assert_eq!(v["error"]["data"]["code"], "upstream_unavailable");
    let (status, body) = http_with(
        gw.addr,
        "GET",
        "/agents/dead/rest/tasks/t-1",
        &[("A2A-Version", "1.0")],
        "",
    )
    .unwrap();
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "about:blank", "{v}");
    assert_eq!(v["code"], "upstream_unavailable");

    // Behind a TLS-terminating proxy the card's URLs say https.
    let (status, body) = http_with(
        gw.addr,
        "GET",
        "/agents/echo/.well-known/agent-card.json",
        &[("X-Forwarded-Proto", "https")],
        "",
    )
    .unwrap();
    assert_eq!(status, 200);
    let card: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        card["url"], "https://localhost/agents/echo/jsonrpc",
        "{card}"
    );
    assert_eq!(
        card["supportedInterfaces"][1]["url"],
        "https://localhost/agents/echo/rest"
    );
    // The refusals are in the log with their reason.
    let refused = gw.log_line("a refusal logged", |l| {
        l["error"] == "a2a_push_url_not_allowed"
            && l["a2a.method"] == "CreateTaskPushNotificationConfig"
    });
    assert_eq!(refused["status"], 403);
}

/// A P-256 key (PKCS#8) for the gateway's card signatures in these tests.
const CARD_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSDcD5W8oTA/xt2bB
6NVAbHZjAN17D3XoPMM7qzyYuKShRANCAAQnn73bKQmiPimg3s5NSep/3GHr5vTK
/nvL8FJ0ydx26cK48JN5i/+K0AcYPimYKn8ReQEC/SSK5meY4L8NE8qU
-----END PRIVATE KEY-----
";

/// The agent's own HS256 card key (`CARD_KEY` in `tests/a2a/agent.py`).
const AGENT_CARD_KEY: &str = "test-card-key-for-the-gateway-tests-0123456789";

/// One route per agent: `/agents/{name}` (prefix rewritten to `/`), with `extra` YAML under
/// the backend's `a2a:`.
fn a2a_route(name: &str, agent_port: u16, extra: &str) -> String {
    a2a_route_with(name, &[agent_port], "", extra)
}

/// A route to one or more agents, with `policies` YAML added to the route's policies and
/// `extra` under each backend's `a2a:`.
fn a2a_route_with(name: &str, agent_ports: &[u16], policies: &str, extra: &str) -> String {
    let backends: String = agent_ports
        .iter()
        .map(|p| format!("      - a2a:\n          host: 127.0.0.1:{p}\n{extra}"))
        .collect();
    format!(
        r#"    - name: {name}
      matches:
      - path:
          pathPrefix: /agents/{name}
      policies:
        urlRewrite:
          path:
            prefix: /
{policies}      backends:
{backends}"#
    )
}

#[test]
fn rewritten_cards_are_signed_with_the_gateway_key_and_verify_independently() {
    let (_agent, agent_port) = start_agent();
    let port = free_port();
    let stats = free_port();
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
{signed}{plain}"#,
        admin = free_port(),
        signed = a2a_route(
            "signed",
            agent_port,
            "          cardSigning: {key: {file: card.pem}, keyId: gw-1, alg: ES256}\n"
        ),
        plain = a2a_route("plain", agent_port, ""),
    );
    let gw = spawn_gateway(&yaml, port, stats, &[("card.pem", CARD_KEY_PEM)]);
    let out = Command::new("timeout")
        .arg("60")
        .arg(python())
        .arg(tests_dir().join("verify_card.py"))
        .arg(format!("http://{}/agents/signed", gw.addr))
        .args(["ES256", "gw-1"])
        .arg(format!("http://{}/agents/plain", gw.addr))
        .arg(format!("http://127.0.0.1:{agent_port}"))
        .arg(AGENT_CARD_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verification failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "public_card_verified",
        "extended_card_verified",
        "stripped_when_no_key",
        "done",
    ] {
        assert!(
            stdout.contains(&format!("\"check\": \"{check}\"")),
            "{check}: {stdout}"
        );
    }

    // The JWK set: public parts only, cacheable; no JWK set where no key is configured.
    let (status, body) = http(
        gw.addr,
        "GET",
        "/agents/signed/.well-known/switchyard/jwks.json",
        "",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let jwks: Value = serde_json::from_str(&body).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            &key["kty"],
            &key["crv"],
            &key["kid"],
            &key["alg"],
            &key["use"]
        ),
        (
            &Value::from("EC"),
            &Value::from("P-256"),
            &Value::from("gw-1"),
            &Value::from("ES256"),
            &Value::from("sig")
        )
    );
    assert!(key.get("d").is_none());
    let (status, _) = http(
        gw.addr,
        "GET",
        "/agents/plain/.well-known/switchyard/jwks.json",
        "",
    )
    .unwrap();
    assert_eq!(
        status, 404,
        "the agent's own answer: it serves no such path"
    );
}

#[test]
fn the_catalog_lists_the_cards_each_caller_may_read() {
    let (agent, agent_port) = start_agent();
    let port = free_port();
    let stats = free_port();
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
  logging:
    format: json
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - a2a:
      catalogPath: /.well-known/agents.json
    routes:
{signed}{plain}{secret}{dead}"#,
        admin = free_port(),
        signed = a2a_route(
            "signed",
            agent_port,
            "          cardSigning: {key: {file: card.pem}, keyId: gw-1}\n"
        ),
        plain = a2a_route("plain", agent_port, ""),
        secret = a2a_route_with(
            "secret",
            &[agent_port],
            "        authorization:\n          rules:\n          - allow: 'request.headers[\"x-team\"] == \"blue\"'\n",
            ""
        ),
        dead = a2a_route("dead", free_port(), ""),
    );
    let gw = spawn_gateway(&yaml, port, stats, &[("card.pem", CARD_KEY_PEM)]);
    let catalog = |headers: &[(&str, &str)]| -> Value {
        let (status, body) =
            http_with(gw.addr, "GET", "/.well-known/agents.json", headers, "").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let routes = |doc: &Value, key: &str| -> Vec<String> {
        doc[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["route"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };

    // Without the header the authorization rule wants, `secret` is not listed.
    let doc = catalog(&[]);
    assert_eq!(routes(&doc, "agents"), ["signed", "plain"], "{doc}");
    assert_eq!(routes(&doc, "unavailable"), ["dead"], "{doc}");
    assert_eq!(doc["unavailable"][0]["status"], 503);
    let signed = &doc["agents"][0];
    // The test client names `localhost` as the host.
    assert_eq!(
        signed["cardUrl"],
        "http://localhost/agents/signed/.well-known/agent-card.json"
    );
    let card = &signed["card"];
    assert_eq!(
        card["supportedInterfaces"][0]["url"], "http://localhost/agents/signed/jsonrpc",
        "{card}"
    );
    assert_eq!(card["signatures"].as_array().unwrap().len(), 1, "{card}");
    assert!(doc["agents"][1]["card"].get("signatures").is_none());
    assert!(
        !doc.to_string().contains(&format!(":{agent_port}")),
        "{doc}"
    );

    // The card the catalog lists is the one its route serves (same content).
    let (_, direct) = http(
        gw.addr,
        "GET",
        "/agents/plain/.well-known/agent-card.json",
        "",
    )
    .unwrap();
    let direct: Value = serde_json::from_str(&direct).unwrap();
    assert_eq!(direct, doc["agents"][1]["card"]);

    // A caller the rule allows sees `secret` too; behind TLS termination, https URLs.
    let doc = catalog(&[("x-team", "blue"), ("x-forwarded-proto", "https")]);
    assert_eq!(
        routes(&doc, "agents"),
        ["signed", "plain", "secret"],
        "{doc}"
    );
    assert!(doc["agents"][2]["cardUrl"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    assert!(doc["agents"][2]["card"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));

    // The agents' cards are reused for a while: with the agent gone, the catalog still
    // lists them (a direct card fetch, which is not cached, fails).
    drop(agent);
    let doc = catalog(&[]);
    assert_eq!(routes(&doc, "agents"), ["signed", "plain"], "{doc}");
    let (status, _) = http(
        gw.addr,
        "GET",
        "/agents/plain/.well-known/agent-card.json",
        "",
    )
    .unwrap();
    assert_eq!(status, 503);
    // Each card fetch is in the access log, under its route.
    gw.log_line("a catalog card fetch logged", |l| {
        l["route"] == "secret" && l["status"] == 403
    });
}

/// Two gateway replicas sharing a task key, each in front of the same two agents.
fn affinity_pair(ports: &[u16]) -> (Gateway, Gateway) {
    let replica = || {
        let port = free_port();
        let stats = free_port();
        let yaml = format!(
            r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
  logging:
    format: json
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
{pair}"#,
            admin = free_port(),
            pair = a2a_route_with(
                "pair",
                ports,
                "        a2a:\n          taskKey: {file: task.key}\n",
                ""
            ),
        );
        spawn_gateway(
            &yaml,
            port,
            stats,
            &[("task.key", "replicas-share-this-key\n")],
        )
    };
    (replica(), replica())
}

fn rpc(gw: &Gateway, method: &str, params: Value) -> (u16, Value) {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params});
    let (status, text) = http_with(
        gw.addr,
        "POST",
        "/agents/pair/jsonrpc",
        &[("A2A-Version", "1.0")],
        &body.to_string(),
    )
    .unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}")),
    )
}

fn message(text: &str, immediately: bool) -> Value {
    serde_json::json!({
        "message": {"messageId": format!("m-{}", fastrand_id()), "role": "ROLE_USER",
                    "parts": [{"text": text}]},
        "configuration": {"returnImmediately": immediately}
    })
}

fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn tasks_stay_with_their_agent_across_backends_and_replicas() {
    let (_a, a_port) = start_agent();
    let (_b, b_port) = start_agent();
    let (g1, g2) = affinity_pair(&[a_port, b_port]);

    // Tasks made through replica 1 land on both agents; every one is found, by its sealed id,
    // through replica 2 (without affinity about half would be "task not found").
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (status, v) = rpc(&g1, "SendMessage", message(&format!("hello {i}"), false));
        assert_eq!(status, 200, "{v}");
        let task = &v["result"]["task"];
        assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{v}");
        let id = task["id"].as_str().unwrap().to_string();
        assert!(id.len() > 60, "sealed, not the agent's UUID: {v}");
        tasks.push(id);
        let backends: std::collections::HashSet<String> = g1
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["a2a.method"] == "SendMessage")
            .filter_map(|l| l["backend"].as_str().map(str::to_string))
            .collect();
        if i >= 5 && backends.len() == 2 {
            break;
        }
    }
    let used: std::collections::HashSet<String> = g1
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l["backend"].as_str().map(str::to_string))
        .collect();
    assert_eq!(used.len(), 2, "both agents served: {used:?}");
    for id in &tasks {
        let (status, v) = rpc(&g2, "GetTask", serde_json::json!({"id": id}));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["result"]["id"], *id, "{v}");
        assert_eq!(v["result"]["status"]["state"], "TASK_STATE_COMPLETED");
        // HTTP+JSON, with the id in the path.
        let (status, body) = http_with(
            g2.addr,
            "GET",
            &format!("/agents/pair/rest/tasks/{id}"),
            &[("A2A-Version", "1.0")],
            "",
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["id"], *id);
    }
    // The log names the agent's own id, not the sealed one.
    let get = g2.log_line("a GetTask logged", |l| l["a2a.method"] == "GetTask");
    let logged = get["a2a.task.id"].as_str().unwrap();
    assert!(!tasks.iter().any(|t| t == logged), "{get}");

    // Cancel through replica 2 (HTTP+JSON) a task started through replica 1 (JSON-RPC).
    let (_, v) = rpc(&g1, "SendMessage", message("wait", true));
    let waiting = v["result"]["task"]["id"].as_str().unwrap().to_string();
    let (status, body) = http_with(
        g2.addr,
        "POST",
        &format!("/agents/pair/rest/tasks/{waiting}:cancel"),
        &[("A2A-Version", "1.0")],
        "{}",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let canceled: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        canceled["status"]["state"], "TASK_STATE_CANCELED",
        "{canceled}"
    );
    assert_eq!(canceled["id"], waiting);

    // Resubscribe through replica 2 to a task running on whichever agent replica 1 chose:
    // every event names the task by its sealed id.
    let (_, v) = rpc(&g1, "SendMessage", message("slow 3", true));
    let running = v["result"]["task"]["id"].as_str().unwrap().to_string();
    let (status, stream) = http_with(
        g2.addr,
        "POST",
        "/agents/pair/jsonrpc",
        &[("A2A-Version", "1.0")],
        &serde_json::json!({"jsonrpc": "2.0", "id": 5, "method": "SubscribeToTask",
                            "params": {"id": running}})
        .to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{stream}");
    let events: Vec<Value> = stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(events.len() >= 3, "{stream}");
    for e in &events {
        let r = &e["result"];
        let id = r["task"]["id"]
            .as_str()
            .or(r["statusUpdate"]["taskId"].as_str())
            .or(r["artifactUpdate"]["taskId"].as_str());
        assert_eq!(id, Some(running.as_str()), "{e}");
    }
    assert_eq!(
        events.last().unwrap()["result"]["statusUpdate"]["status"]["state"],
        "TASK_STATE_COMPLETED",
        "{stream}"
    );

    // Ids the gateway did not seal, or garbled ones, are no one's task: the binding's own
    // "task not found", and no agent is asked.
    let mut garbled = tasks[0].clone().into_bytes();
    let mid = garbled.len() / 2;
    garbled[mid] = if garbled[mid] == b'A' { b'B' } else { b'A' };
    let garbled = String::from_utf8(garbled).unwrap();
    for bad in ["made-up-task", garbled.as_str()] {
        let (status, v) = rpc(&g2, "GetTask", serde_json::json!({"id": bad}));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["error"]["code"], -32001, "{v}");
        assert_eq!(v["id"], 9);
        let (status, body) = http_with(
            g2.addr,
            "GET",
            &format!("/agents/pair/rest/tasks/{bad}"),
            &[("A2A-Version", "1.0")],
            "",
        )
        .unwrap();
        assert_eq!(status, 404, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["status"], "NOT_FOUND", "{v}");
        assert_eq!(v["error"]["details"][0]["reason"], "TASK_NOT_FOUND");
    }
    let refused = g2.log_line("the refusal logged", |l| l["error"] == "a2a_task_not_found");
    assert!(
        refused["backend"].is_null() || refused["upstream"].is_null(),
        "{refused}"
    );

    // The official SDK client, on every binding and version, through the two-agent route:
    // it follows the sealed ids through send, stream, get, cancel and resubscribe.
    let out = Command::new("timeout")
        .arg("90")
        .arg(python())
        .arg(tests_dir().join("client.py"))
        .arg(format!("http://{}/agents/pair", g1.addr))
        .arg(format!("http://127.0.0.1:{a_port}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A raw HTTP/1.1 exchange: (status, lower-case head, body).
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (
        head[9..12].parse().unwrap(),
        head.to_ascii_lowercase(),
        body.to_string(),
    )
}

/// Routes with policies that refuse: API keys (401), an authorization rule on the A2A
/// operation (403), a rate limit (429); and no route for `/agents/nope`.
fn refusing_gateway(agent_port: u16) -> Gateway {
    let port = free_port();
    let stats = free_port();
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
  logging:
    format: json
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
{keyed}{ruled}{limited}{per_method}"#,
        admin = free_port(),
        keyed = a2a_route_with(
            "keyed",
            &[agent_port],
            "        apiKeyAuth: {keys: [{name: alice, key: sk-a2a-alice}]}\n",
            ""
        ),
        ruled = a2a_route_with(
            "ruled",
            &[agent_port],
            "        authorization:\n          rules:\n          - deny: 'a2a.method == \"CancelTask\"'\n          - deny: 'has(a2a.skill) && a2a.skill == \"delete-everything\"'\n          - allow: 'a2a.method != \"ListTasks\" || request.headers[\"x-team\"] == \"ops\"'\n",
            ""
        ),
        limited = a2a_route_with(
            "limited",
            &[agent_port],
            "        localRateLimit: [{key: 'request.headers[\"x-user\"]', requests: {limit: 1, per: 1m}}]\n",
            ""
        ),
        per_method = a2a_route_with(
            "per-method",
            &[agent_port],
            "        localRateLimit: [{key: 'a2a.method', requests: {limit: 1, per: 1m}}]\n",
            ""
        ),
    );
    spawn_gateway(&yaml, port, stats, &[])
}

#[test]
fn policy_refusals_and_unknown_agents_come_in_the_callers_binding() {
    let (_agent, agent_port) = start_agent();
    let gw = refusing_gateway(agent_port);
    let v1 = [("A2A-Version", "1.0")];
    let send = r#"{"jsonrpc":"2.0","id":"req-401","method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"hi"}]}}}"#;

    // 401 from apiKeyAuth: a JSON-RPC error with the caller's id, the challenge kept.
    let (status, head, body) = exchange(gw.addr, "POST", "/agents/keyed/jsonrpc", &v1, send);
    assert_eq!(status, 401, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(v["id"], "req-401", "{v}");
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert_eq!(v["error"]["data"]["httpStatus"], 401, "{v}");
    assert!(v["error"]["data"]["code"].is_string(), "{v}");
    assert!(head.contains("content-type: application/json"), "{head}");
    // HTTP+JSON: a problem document.
    let (status, head, body) = exchange(gw.addr, "GET", "/agents/keyed/rest/tasks/t-1", &v1, "");
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("application/problem+json"), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["status"].clone(), v["type"].clone()),
        (401.into(), "about:blank".into()),
        "{v}"
    );
    // With the key, it passes.
    let (status, _, body) = exchange(
        gw.addr,
        "POST",
        "/agents/keyed/jsonrpc",
        &[
            ("A2A-Version", "1.0"),
            ("Authorization", "Bearer sk-a2a-alice"),
        ],
        send,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("TASK_STATE_COMPLETED"), "{body}");

    // 429 from the rate limit: JSON-RPC with its id and the retry-after kept.
    let user = [("A2A-Version", "1.0"), ("x-user", "u1")];
    let (status, _, body) = exchange(gw.addr, "POST", "/agents/limited/jsonrpc", &user, send);
    assert_eq!(status, 200, "{body}");
    let again = send.replace("req-401", "req-429");
    let (status, head, body) = exchange(gw.addr, "POST", "/agents/limited/jsonrpc", &user, &again);
    assert_eq!(status, 429, "{body}");
    assert!(head.contains("retry-after:"), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], "req-429", "{v}");
    assert_eq!(v["error"]["data"]["httpStatus"], 429, "{v}");

    // A limit keyed on the A2A operation: one bucket per operation, whatever the binding.
    let per_method = |path: &str, body: &str| {
        exchange(
            gw.addr,
            "POST",
            &format!("/agents/per-method/{path}"),
            &v1,
            body,
        )
        .0
    };
    assert_eq!(per_method("jsonrpc", send), 200);
    assert_eq!(per_method("jsonrpc", send), 429, "a second SendMessage");
    assert_eq!(
        per_method(
            "rest/message:send",
            r#"{"message":{"messageId":"m9","role":"ROLE_USER","parts":[{"text":"hi"}]}}"#
        ),
        429,
        "SendMessage over HTTP+JSON is the same operation"
    );
    assert_eq!(
        per_method(
            "jsonrpc",
            r#"{"jsonrpc":"2.0","id":7,"method":"ListTasks","params":{}}"#
        ),
        200,
        "another operation has its own bucket"
    );

    // No route: A2A calls get a 404 in their binding's shape; anything else the gateway's.
    let (status, _, body) = exchange(
        gw.addr,
        "POST",
        "/agents/nope/jsonrpc",
        &v1,
        &send.replace("req-401", "req-404"),
    );
    assert_eq!(status, 404, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        ("req-404".into(), (-32601).into()),
        "{v}"
    );
    let (status, head, body) = exchange(
        gw.addr,
        "GET",
        "/agents/nope/.well-known/agent-card.json",
        &[],
        "",
    );
    assert_eq!(status, 404, "{body}");
    assert!(head.contains("application/problem+json"), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["status"].clone(), v["code"].clone()),
        (404.into(), "no_route".into()),
        "{v}"
    );
    let (status, _, body) = exchange(gw.addr, "POST", "/agents/nope/rest/message:send", &v1, "{}");
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        404,
        "{body}"
    );
    let (status, _, body) = exchange(gw.addr, "POST", "/elsewhere", &[], r#"{"hello":1}"#);
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "no_route",
        "not an A2A call: the gateway's own 404: {body}"
    );
}

#[test]
fn route_authorization_decides_on_the_a2a_method() {
    let (_agent, agent_port) = start_agent();
    let gw = refusing_gateway(agent_port);
    let rpc = |version: &str, body: String| {
        exchange(
            gw.addr,
            "POST",
            "/agents/ruled/jsonrpc",
            &[("A2A-Version", version)],
            &body,
        )
    };
    // SendMessage passes the rules; its task cannot be canceled, by either version's name.
    let (status, _, body) = rpc(
        "1.0",
        r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER","parts":[{"text":"wait"}]},"configuration":{"returnImmediately":true}}}"#.into(),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let task = v["result"]["task"]["id"].as_str().unwrap().to_string();
    let (status, _, body) = rpc(
        "1.0",
        format!(
            r#"{{"jsonrpc":"2.0","id":"c1","method":"CancelTask","params":{{"id":"{task}"}}}}"#
        ),
    );
    assert_eq!(status, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["id"].clone(), v["error"]["data"]["code"].clone()),
        ("c1".into(), "forbidden".into()),
        "{v}"
    );
    let (status, _, body) = rpc(
        "0.3",
        format!(
            r#"{{"jsonrpc":"2.0","id":"c2","method":"tasks/cancel","params":{{"id":"{task}"}}}}"#
        ),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["id"], "c2");
    let (status, head, body) = exchange(
        gw.addr,
        "POST",
        &format!("/agents/ruled/rest/tasks/{task}:cancel"),
        &[("A2A-Version", "1.0")],
        "{}",
    );
    assert_eq!(status, 403, "{body}");
    assert!(head.contains("application/problem+json"), "{head}");
    // A message naming a refused skill (in its metadata) is refused; another skill passes.
    for (skill, want) in [("delete-everything", 403), ("translate", 200)] {
        let (status, _, body) = rpc(
            "1.0",
            format!(
                r#"{{"jsonrpc":"2.0","id":"s","method":"SendMessage","params":{{"message":{{"messageId":"m-{skill}","role":"ROLE_USER","parts":[{{"text":"hi"}}],"metadata":{{"skillId":"{skill}"}}}},"configuration":{{"returnImmediately":true}}}}}}"#
            ),
        );
        assert_eq!(status, want, "{skill}: {body}");
    }
    // The task is still running: the agent never saw a cancel.
    let (status, _, body) = rpc(
        "1.0",
        format!(r#"{{"jsonrpc":"2.0","id":3,"method":"GetTask","params":{{"id":"{task}"}}}}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["result"]["status"]["state"],
        "TASK_STATE_WORKING",
        "{body}"
    );
    // An allow rule on the method and a header: ListTasks only for ops.
    let list = r#"{"jsonrpc":"2.0","id":4,"method":"ListTasks","params":{}}"#.to_string();
    let (status, _, body) = rpc("1.0", list.clone());
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = exchange(
        gw.addr,
        "POST",
        "/agents/ruled/jsonrpc",
        &[("A2A-Version", "1.0"), ("x-team", "ops")],
        &list,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["result"]["tasks"].is_array(),
        "{body}"
    );
    // The refusal is logged with the operation it refused.
    let refused = gw.log_line("the refused cancel logged", |l| {
        l["route"] == "ruled" && l["status"] == 403 && l["a2a.method"] == "CancelTask"
    });
    assert!(refused["upstream"].is_null(), "{refused}");
}

fn count_of(v: &Value) -> (u64, String) {
    let task = &v["result"]["task"];
    let text = task["artifacts"][0]["parts"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    let n = text.strip_prefix("count: ").unwrap().parse().unwrap();
    (n, task["contextId"].as_str().unwrap().to_string())
}

fn count_in(context: Option<&str>) -> Value {
    let mut m = serde_json::json!({"messageId": format!("m-{}", fastrand_id()), "role": "ROLE_USER",
                                   "parts": [{"text": "count"}]});
    if let Some(c) = context {
        m["contextId"] = c.into();
    }
    serde_json::json!({"message": m})
}

#[test]
fn conversations_stay_with_their_agent_across_backends_and_replicas() {
    let (_a, a_port) = start_agent();
    let (_b, b_port) = start_agent();
    let (g1, g2) = affinity_pair(&[a_port, b_port]);
    // Conversations the agents started: their context ids come back sealed, and every
    // follow-up (through either replica) reaches the agent that holds the conversation, so
    // its count goes up by one each time. Without affinity each follow-up would have an
    // even chance of reaching the other agent, which would count 1.
    for _ in 0..5 {
        let (status, v) = rpc(&g1, "SendMessage", count_in(None));
        assert_eq!(status, 200, "{v}");
        let (n, context) = count_of(&v);
        assert_eq!(n, 1);
        assert!(context.len() > 60, "sealed: {context}");
        for (i, gw) in [&g2, &g1, &g2].into_iter().enumerate() {
            let (status, v) = rpc(gw, "SendMessage", count_in(Some(&context)));
            assert_eq!(status, 200, "{v}");
            assert_eq!(count_of(&v), (i as u64 + 2, context.clone()), "{v}");
        }
    }
    // A context id the client chose: placed by its id on the same agent from every replica,
    // and left as the client wrote it.
    for k in 0..4 {
        let mine = format!("my-own-conversation-{k}");
        for (i, gw) in [&g1, &g2, &g1].into_iter().enumerate() {
            let (status, v) = rpc(gw, "SendMessage", count_in(Some(&mine)));
            assert_eq!(status, 200, "{v}");
            assert_eq!(count_of(&v), (i as u64 + 1, mine.clone()), "{v}");
        }
    }
    // HTTP+JSON follow-ups are pinned the same way.
    let (_, v) = rpc(&g1, "SendMessage", count_in(None));
    let (_, context) = count_of(&v);
    let (status, body) = http_with(
        g2.addr,
        "POST",
        "/agents/pair/rest/message:send",
        &[("A2A-Version", "1.0")],
        &count_in(Some(&context)).to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        count_of(&serde_json::json!({"result": v})),
        (2, context),
        "{v}"
    );
}

#[test]
fn list_tasks_merges_every_agent_newest_first_across_replicas() {
    let (_a, a_port) = start_agent();
    let (_b, b_port) = start_agent();
    let (g1, g2) = affinity_pair(&[a_port, b_port]);
    let mut made = Vec::new();
    let mut contexts = Vec::new();
    for i in 0..11 {
        let (status, v) = rpc(&g1, "SendMessage", message(&format!("list {i}"), false));
        assert_eq!(status, 200, "{v}");
        made.push(v["result"]["task"]["id"].as_str().unwrap().to_string());
        contexts.push(
            v["result"]["task"]["contextId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Access-log lines are written after each answer has gone: wait for all eleven.
    let sends = || {
        g1.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["a2a.method"] == "SendMessage")
            .filter_map(|l| l["backend"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    wait_until("the eleven sends logged", Duration::from_secs(10), || {
        sends().len() >= 11
    });
    let served: std::collections::HashSet<String> = sends().into_iter().collect();
    assert_eq!(served.len(), 2, "both agents hold tasks: {served:?}");

    // JSON-RPC, pages of 3 through replica 2, each page token followed.
    let mut listed: Vec<Value> = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let mut params = serde_json::json!({"pageSize": 3});
        if !token.is_empty() {
            params["pageToken"] = token.clone().into();
        }
        let (status, v) = rpc(&g2, "ListTasks", params);
        assert_eq!(status, 200, "{v}");
        let r = &v["result"];
        assert_eq!(r["totalSize"], 11, "{v}");
        assert_eq!(r["pageSize"], 3, "{v}");
        let tasks = r["tasks"].as_array().unwrap();
        pages += 1;
        token = r["nextPageToken"].as_str().unwrap().to_string();
        if !token.is_empty() {
            assert_eq!(tasks.len(), 3, "full pages until the last: {v}");
        }
        listed.extend(tasks.iter().cloned());
        if token.is_empty() {
            break;
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 4);
    let ids: Vec<String> = listed
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    let mut want = made.clone();
    want.sort();
    assert_eq!(sorted_ids, want, "every task once, by its sealed id");
    let stamps: Vec<&str> = listed
        .iter()
        .map(|t| t["status"]["timestamp"].as_str().unwrap())
        .collect();
    let mut newest_first = stamps.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(stamps, newest_first, "newest first");
    // A listed id works as any other.
    let (status, v) = rpc(&g1, "GetTask", serde_json::json!({"id": ids[5]}));
    assert_eq!(
        (status, v["result"]["id"].clone()),
        (200, ids[5].clone().into()),
        "{v}"
    );

    // HTTP+JSON: the same listing in pages of 4.
    let mut rest_ids = Vec::new();
    let mut token = String::new();
    loop {
        let q = match token.is_empty() {
            true => "pageSize=4".to_string(),
            false => format!("pageSize=4&pageToken={token}"),
        };
        let (status, body) = http_with(
            g1.addr,
            "GET",
            &format!("/agents/pair/rest/tasks?{q}"),
            &[("A2A-Version", "1.0")],
            "",
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        for t in v["tasks"].as_array().unwrap() {
            rest_ids.push(t["id"].as_str().unwrap().to_string());
        }
        token = v["nextPageToken"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        rest_ids, ids,
        "both bindings list the same tasks in the same order"
    );

    // A context filter asks only the agent that holds the context.
    let (status, v) = rpc(
        &g2,
        "ListTasks",
        serde_json::json!({"contextId": contexts[3]}),
    );
    assert_eq!(status, 200, "{v}");
    let tasks = v["result"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{v}");
    assert_eq!(tasks[0]["id"], made[3]);
    assert_eq!(tasks[0]["contextId"], contexts[3]);
    // A page token the gateway did not issue is an invalid argument.
    let (status, v) = rpc(&g2, "ListTasks", serde_json::json!({"pageToken": "forged"}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["error"]["code"], -32602, "{v}");
}

#[test]
fn the_js_sdk_client_works_through_the_gateway() {
    // `@a2a-js/sdk`, installed by `.ci/run` (`npm ci` in tests/a2a).
    assert!(
        tests_dir().join("node_modules/@a2a-js/sdk").is_dir(),
        "run `npm ci --prefix crates/switchyard/tests/a2a` first"
    );
    let (_agent, agent_port) = start_agent();
    let gw = start_gateway(agent_port);
    let out = Command::new("timeout")
        .arg("90")
        .arg("node")
        .arg(tests_dir().join("client.mjs"))
        .arg(format!("http://{}/agents/echo", gw.addr))
        .arg(format!("http://127.0.0.1:{agent_port}"))
        .current_dir(tests_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "JS client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for check in ["send", "stream", "get", "cancel"] {
        let n = reports.iter().filter(|r| r["check"] == check).count();
        assert_eq!(n, 4, "{check} on each binding and version: {stdout}");
    }
    // The gateway saw each binding and version the client chose.
    for (binding, version) in [
        ("JSONRPC", "1.0"),
        ("HTTP+JSON", "1.0"),
        ("JSONRPC", "0.3"),
        ("HTTP+JSON", "0.3"),
    ] {
        let line = gw.log_line("the JS client's stream logged", |l| {
            l["a2a.method"] == "SendStreamingMessage"
                && l["a2a.binding"] == binding
                && l["a2a.version"] == version
        });
        assert_eq!(line["a2a.task.state"], "completed", "{line}");
    }
}

/// The echo agent serving v1.0 alone (`--v1-only`).
fn start_v1_agent() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(python())
        .arg(tests_dir().join("agent.py"))
        .arg(port.to_string())
        .arg("--v1-only")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("the v1.0 agent", Duration::from_secs(30), || {
        http(addr, "GET", "/.well-known/agent-card.json", "").is_some_and(|(s, _)| s == 200)
    });
    (proc, port)
}

#[test]
fn v0_3_clients_reach_a_v1_0_only_agent_through_translation() {
    let (_agent, agent_port) = start_v1_agent();
    let port = free_port();
    let stats = free_port();
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
  logging:
    format: json
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
{translated}{plain}"#,
        admin = free_port(),
        translated = a2a_route("v1", agent_port, "          agentVersion: \"1.0\"\n"),
        plain = a2a_route("untranslated", agent_port, ""),
    );
    let gw = spawn_gateway(&yaml, port, stats, &[]);
    let v03 = |route: &str, body: &str| {
        let (status, body) =
            http(gw.addr, "POST", &format!("/agents/{route}/jsonrpc"), body).unwrap();
        (status, body)
    };
    let send = |text: &str, blocking: bool| {
        serde_json::json!({"jsonrpc": "2.0", "id": "s1", "method": "message/send", "params": {
            "message": {"kind": "message", "messageId": format!("m-{}", fastrand_id()), "role": "user",
                        "parts": [{"kind": "text", "text": text}]},
            "configuration": {"blocking": blocking}}})
        .to_string()
    };
    // Without translation the agent does not know the v0.3 method.
    let (_, body) = v03("untranslated", &send("hi", true));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].is_object(), "the agent speaks v1.0 only: {v}");

    // message/send: a v0.3 Task back.
    let (status, body) = v03("v1", &send("hi", true));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let task = &v["result"];
    assert_eq!(v["id"], "s1");
    assert_eq!(task["kind"], "task", "{v}");
    assert_eq!(task["status"]["state"], "completed", "{v}");
    assert_eq!(
        task["artifacts"][0]["parts"][0],
        serde_json::json!({"kind": "text", "text": "echo: hi"}),
        "{v}"
    );
    let id = task["id"].as_str().unwrap().to_string();
    // tasks/get and tasks/cancel.
    let (_, body) = v03(
        "v1",
        &format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{{"id":"{id}"}}}}"#),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            v["result"]["kind"].clone(),
            v["result"]["status"]["state"].clone()
        ),
        ("task".into(), "completed".into()),
        "{v}"
    );
    let (_, body) = v03("v1", &send("wait", false));
    let v: Value = serde_json::from_str(&body).unwrap();
    let waiting = v["result"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    // `blocking: false` became `returnImmediately`: the task is not done yet.
    let state = v["result"]["status"]["state"].as_str().unwrap_or("");
    assert!(matches!(state, "submitted" | "working"), "{v}");
    let (_, body) = v03(
        "v1",
        &format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"tasks/cancel","params":{{"id":"{waiting}"}}}}"#
        ),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["status"]["state"], "canceled", "{v}");
    // message/stream: v0.3 events, `kind` and `final` on each.
    let (status, stream) = v03(
        "v1",
        &send("slow 2", true).replace("message/send", "message/stream"),
    );
    assert_eq!(status, 200, "{stream}");
    let events: Vec<Value> = stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["result"]["kind"].as_str().unwrap_or("?"))
        .collect();
    assert!(
        kinds.contains(&"artifact-update") && kinds.contains(&"status-update"),
        "{stream}"
    );
    let last = &events.last().unwrap()["result"];
    assert_eq!(
        (
            last["kind"].clone(),
            last["status"]["state"].clone(),
            last["final"].clone()
        ),
        ("status-update".into(), "completed".into(), true.into()),
        "{stream}"
    );
    // The card offers JSON-RPC in v0.3 too.
    let (_, body) = http(gw.addr, "GET", "/agents/v1/.well-known/agent-card.json", "").unwrap();
    let card: Value = serde_json::from_str(&body).unwrap();
    assert!(
        card["supportedInterfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["protocolVersion"] == "0.3" && i["protocolBinding"] == "JSONRPC"),
        "{card}"
    );
    // The log names the call by its operation and the version the client spoke.
    let line = gw.log_line("a translated stream logged", |l| {
        l["a2a.method"] == "SendStreamingMessage" && l["route"] == "v1"
    });
    assert_eq!(
        (line["a2a.version"].clone(), line["a2a.task.state"].clone()),
        ("0.3".into(), "completed".into()),
        "{line}"
    );

    // The JS SDK's v0.3 client (and its v1.0 one) from the card the gateway serves.
    let out = Command::new("timeout")
        .arg("90")
        .arg("node")
        .arg(tests_dir().join("client.mjs"))
        .arg(format!("http://{}/agents/v1", gw.addr))
        .arg(format!("http://127.0.0.1:{agent_port}"))
        .arg("JSONRPC:0.3,JSONRPC:1.0")
        .current_dir(tests_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "JS client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("\"check\":\"stream\"").count(),
        2,
        "{stdout}"
    );
}

#[test]
fn grpc_passes_through_with_the_js_sdk_generated_client() {
    // A gRPC agent and client, both `@a2a-js/sdk` (its generated `lf.a2a.v1.A2AService`
    // stubs over `@grpc/grpc-js`), h2c on both sides of the gateway.
    let agent_port = free_port();
    let mut agent = Command::new("node")
        .arg(tests_dir().join("grpc_agent.mjs"))
        .arg(agent_port.to_string())
        .current_dir(tests_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let _agent = Proc(agent);
    assert_eq!(ready.trim(), "ready");
    let port = free_port();
    let stats = free_port();
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
  logging:
    format: json
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - name: grpc-agent
      matches: [{{path: {{pathPrefix: /lf.a2a.v1.A2AService/}}}}]
      backends:
      - a2a: {{host: 127.0.0.1:{agent_port}, bindings: [GRPC]}}
        policies: {{backendHTTP: {{version: "2"}}}}
"#,
        admin = free_port(),
    );
    let gw = spawn_gateway(&yaml, port, stats, &[]);
    let out = Command::new("timeout")
        .arg("60")
        .arg("node")
        .arg(tests_dir().join("grpc_client.mjs"))
        .arg(gw.addr.to_string())
        .current_dir(tests_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gRPC client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in ["send", "stream", "get", "done"] {
        assert!(
            stdout.contains(&format!("\"check\":\"{check}\"")),
            "{check}: {stdout}"
        );
    }
    // Each call classified from its gRPC path, and answered by the agent through the gateway.
    for method in ["SendMessage", "SendStreamingMessage", "GetTask"] {
        let line = gw.log_line("a gRPC call logged", |l| {
            l["a2a.method"] == method && l["a2a.binding"] == "GRPC"
        });
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["route"], "grpc-agent", "{line}");
        assert_eq!(
            line["upstream"],
            format!("127.0.0.1:{agent_port}"),
            "{line}"
        );
    }
}

/// What a webhook received: each request's path, lower-case head and body.
type Hooks = Arc<Mutex<Vec<(String, String, String)>>>;

/// A webhook receiver on a free port.
fn webhook() -> (u16, Hooks) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head, body) = loop {
                let Ok(n) = s.read(&mut chunk) else {
                    break (String::new(), String::new());
                };
                if n == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let head = head.to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break (head, body.to_string());
                    }
                }
            };
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            sink.lock().unwrap().push((path, head, body));
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

#[test]
fn the_gateway_relays_push_notifications_to_allowed_clients() {
    let (_agent, agent_port) = start_agent();
    let (hook_port, hooks) = webhook();
    let port = free_port();
    let stats = free_port();
    let yaml = format!(
        r#"config:
  adminAddr: 127.0.0.1:{admin}
  statsAddr: 127.0.0.1:{stats}
  logging:
    format: json
binds:
- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
{relayed}"#,
        admin = free_port(),
        relayed = a2a_route(
            "relayed",
            agent_port,
            &format!(
                "          pushNotificationAllowList: ['127.0.0.1:{hook_port}']\n          pushRelay: {{callbackUrl: 'http://127.0.0.1:{port}/agents/relayed'}}\n"
            )
        ),
    );
    let gw = spawn_gateway(&yaml, port, stats, &[]);
    let hook = format!("http://127.0.0.1:{hook_port}/hook");
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
        "message": {"messageId": "m-push", "role": "ROLE_USER", "parts": [{"text": "slow 2"}]},
        "configuration": {"returnImmediately": true,
                          "taskPushNotificationConfig": {"url": hook, "token": "client-token"}}}});
    let (status, text) = http_with(
        gw.addr,
        "POST",
        "/agents/relayed/jsonrpc",
        &[("A2A-Version", "1.0")],
        &body.to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let task = v["result"]["task"]["id"].as_str().unwrap().to_string();

    // The notifications reach the client's hook through the gateway, with its token.
    wait_until(
        "the completed notification",
        Duration::from_secs(20),
        || {
            hooks
                .lock()
                .unwrap()
                .iter()
                .any(|(_, _, b)| b.contains("TASK_STATE_COMPLETED"))
        },
    );
    let got = hooks.lock().unwrap().clone();
    assert!(got.len() >= 2, "{got:?}");
    for (path, head, body) in &got {
        assert_eq!(path, "/hook");
        assert!(
            head.contains("x-a2a-notification-token: client-token"),
            "{head}"
        );
        assert!(body.contains(&task), "{body}");
    }
    // Each was relayed by the gateway (its access log has them, sent to the hook).
    let relayed = gw.log_line("a relayed notification logged", |l| {
        l["path"]
            .as_str()
            .is_some_and(|p| p.contains("/.well-known/switchyard/a2a-push/"))
    });
    assert_eq!(relayed["status"], 200, "{relayed}");
    assert_eq!(
        relayed["upstream"],
        format!("127.0.0.1:{hook_port}"),
        "{relayed}"
    );

    // The agent holds the gateway's URL; the client sees its own.
    let list = serde_json::json!({"jsonrpc": "2.0", "id": 2,
        "method": "ListTaskPushNotificationConfigs", "params": {"taskId": task}})
    .to_string();
    let agent: SocketAddr = format!("127.0.0.1:{agent_port}").parse().unwrap();
    let (_, direct) =
        http_with(agent, "POST", "/jsonrpc", &[("A2A-Version", "1.0")], &list).unwrap();
    assert!(
        direct.contains(&format!(
            "http://127.0.0.1:{port}/agents/relayed/.well-known/switchyard/a2a-push/"
        )),
        "{direct}"
    );
    assert!(
        !direct.contains(&hook),
        "the agent never sees the client's URL: {direct}"
    );
    let (_, through) = http_with(
        gw.addr,
        "POST",
        "/agents/relayed/jsonrpc",
        &[("A2A-Version", "1.0")],
        &list,
    )
    .unwrap();
    let v: Value = serde_json::from_str(&through).unwrap();
    assert_eq!(v["result"]["configs"][0]["url"], hook, "{v}");

    // A token the gateway did not make relays nothing.
    let before = hooks.lock().unwrap().len();
    let (status, _) = http(
        gw.addr,
        "POST",
        "/agents/relayed/.well-known/switchyard/a2a-push/forged",
        "{}",
    )
    .unwrap();
    assert_eq!(status, 404);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(hooks.lock().unwrap().len(), before);
}
