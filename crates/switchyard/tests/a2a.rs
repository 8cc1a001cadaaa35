//! A2A through the gateway, end to end: the real binary in front of an echo agent built on the
//! official `a2a-sdk` server (`tests/a2a/agent.py`), driven by the same SDK's client
//! (`tests/a2a/client.py`) on every binding and version the SDK speaks, and by raw HTTP for
//! the wire details the SDK hides (malformed JSON-RPC, push allow-list refusals, error shapes
//! when the agent is down, `X-Forwarded-Proto`).
//!
//! Needs the `.venv` that `.ci/run` creates from `tests/sdk/requirements.txt` (`a2a-sdk`).

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
