//! The `switchyard` binary as a user runs it: validate, schema, run with hot reload, demo.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{
    free_port, http, http_with, spawn_ready_with_stdout, test_pki, wait_until, Proc, BIN,
};

/// Writes `yaml` to `dir/name` and runs `switchyard validate` on it: (success, stderr).
fn validate_text(dir: &Path, name: &str, yaml: &str) -> (bool, String) {
    let file = dir.join(name);
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn validate_reports_file_line_column_key_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = validate_text(
        dir.path(),
        "bad.yaml",
        "binds:\n- port: 8080\n  listeners:\n  - routes:\n    - backends:\n      - host: 127.0.0.1:9\n        wieght: 2\n",
    );
    assert!(!ok);
    let file = dir.path().join("bad.yaml");
    let expected_prefix = format!(
        "{}:7:9: binds[0].listeners[0].routes[0].backends[0].wieght",
        file.display()
    );
    assert!(err.starts_with(&expected_prefix), "{err}");
    assert!(
        err.contains("unknown field `wieght`, expected one of"),
        "{err}"
    );
}

#[test]
fn validate_accepts_the_seed_example_with_env_credentials() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed.yaml");
    let out = Command::new(BIN)
        .args(["validate", "-f"])
        .arg(&seed)
        .env("DASHSCOPE_API_KEY", "sk-test")
        .env("MCP_TOKEN", "tok")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the credentials in the environment, the error says which one is missing.
    let out = Command::new(BIN)
        .args(["validate", "-f"])
        .arg(&seed)
        .env_remove("DASHSCOPE_API_KEY")
        .env("MCP_TOKEN", "tok")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DASHSCOPE_API_KEY is not set"));
}

#[test]
fn schema_is_json_schema_of_the_config() {
    let out = Command::new(BIN).arg("schema").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"));
    assert!(v["properties"]["binds"].is_object());
    assert!(v["properties"]["config"].is_object());
}

#[test]
fn help_on_every_command() {
    for args in [
        vec!["--help"],
        vec!["validate", "--help"],
        vec!["schema", "--help"],
        vec!["demo", "--help"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

fn gateway_yaml(port: u16, admin: u16, body: &str) -> String {
    format!(
        "config:\n  adminAddr: 127.0.0.1:{admin}\n  drainTimeout: 5s\nbinds:\n- port: {port}\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - policies:\n        directResponse: {{status: 200, body: {body}}}\n        backendAuth: {{key: sk-never-shown}}\n"
    )
}

/// Runs `switchyard -f file` and waits until it is ready: the process and its gateway and
/// admin addresses.
fn run_gateway(
    file: &Path,
    port: u16,
    admin: u16,
    stdout: Stdio,
) -> (Proc, SocketAddr, SocketAddr) {
    let proc = spawn_ready_with_stdout(&["-f".as_ref(), file.as_os_str()], admin, stdout);
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    (proc, addr(port), addr(admin))
}

/// Sends SIGTERM to the process.
fn sigterm(proc: &Proc) {
    let pid = proc.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits (at most 5 s) for the process to exit; it must exit 0.
fn assert_exits_cleanly(proc: &mut Proc) {
    let t = Instant::now();
    loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_hot_reloads_refuses_bad_config_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    let (port, admin) = (free_port(), free_port());
    std::fs::write(&file, gateway_yaml(port, admin, "one")).unwrap();
    let (mut proc, gw, adm) = run_gateway(&file, port, admin, Stdio::null());
    assert_eq!(http(gw, "GET", "/", "").unwrap(), (200, "one".into()));

    // Secrets never appear in the config dump.
    let (_, dump) = http(adm, "GET", "/config_dump", "").unwrap();
    assert!(!dump.contains("sk-never-shown"), "{dump}");
    assert!(dump.contains("<redacted>"));

    // A valid change takes effect within a second.
    std::fs::write(&file, gateway_yaml(port, admin, "two")).unwrap();
    let t = Instant::now();
    wait_until("reload", Duration::from_secs(3), || {
        http(gw, "GET", "/", "").is_some_and(|r| r.1 == "two")
    });
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "reload took {:?}",
        t.elapsed()
    );

    // An invalid change is refused; the old config serves and the admin server says why.
    std::fs::write(
        &file,
        gateway_yaml(port, admin, "three").replace("directResponse", "directResponce"),
    )
    .unwrap();
    wait_until("refusal", Duration::from_secs(3), || {
        http(adm, "GET", "/reload_status", "").is_some_and(|(_, b)| b.contains("directResponce"))
    });
    let (_, status) = http(adm, "GET", "/reload_status", "").unwrap();
    assert!(
        status.contains("gw.yaml:10:"),
        "error should name file and line: {status}"
    );
    assert_eq!(http(gw, "GET", "/", "").unwrap().1, "two");

    // SIGTERM: drain and exit 0.
    sigterm(&proc);
    assert_exits_cleanly(&mut proc);
}

/// An upstream that answers each request after `delay`.
/// An upstream that answers `delay` after each request head; the receiver hears of every
/// request head as it arrives, so a test knows the request is in flight.
fn slow_upstream(delay: Duration) -> (SocketAddr, std::sync::mpsc::Receiver<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, arrivals) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let arrived = arrived.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = arrived.send(());
                std::thread::sleep(delay);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow",
                );
            });
        }
    });
    (addr, arrivals)
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_and_logs_it_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    let (port, admin) = (free_port(), free_port());
    let (upstream, arrivals) = slow_upstream(Duration::from_millis(400));
    std::fs::write(
        &file,
        format!(
            "config:\n  adminAddr: 127.0.0.1:{admin}\n  drainTimeout: 5s\n  logging: {{format: json}}\nbinds:\n- port: {port}\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - backends:\n      - host: {upstream}\n"
        ),
    )
    .unwrap();
    let (mut proc, gw, _) = run_gateway(&file, port, admin, Stdio::piped());
    let in_flight = std::thread::spawn(move || http(gw, "GET", "/in-flight", ""));
    // SIGTERM once the request is at the upstream (a fixed sleep raced the accept on a busy
    // machine, and a request not yet accepted is not in flight).
    arrivals
        .recv_timeout(Duration::from_secs(10))
        .expect("the request reaches the upstream");
    sigterm(&proc);
    assert_eq!(in_flight.join().unwrap(), Some((200, "slow".into())));
    assert_exits_cleanly(&mut proc);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut proc.0.stdout.take().unwrap(), &mut out).unwrap();
    let line = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["path"] == "/in-flight")
        .unwrap_or_else(|| panic!("no access-log line for the drained request in {out:?}"));
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_out"], 4);
    assert!(line["duration_ms"].as_f64().unwrap() >= 300.0, "{line}");
}

#[test]
fn demo_serves_a_chat_completion_and_an_a2a_agent() {
    let (port, admin) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args([
            "demo",
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _proc = Proc(child);
    let gw: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let adm: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_until("demo ready", Duration::from_secs(10), || {
        http(adm, "GET", "/healthz/ready", "").is_some_and(|(s, _)| s == 200)
    });
    let (status, body) = http(
        gw,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"sim-gpt","messages":[{"role":"user","content":"Hello!"}]}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello! You said: Hello!"
    );
    let (status, body) = http(gw, "GET", "/v1/models", "").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("sim-gpt"));
    // The demo's pool of simulated vLLM pods, through the picker.
    let (status, body) = http(
        gw,
        "POST",
        "/vllm/v1/chat/completions",
        r#"{"model":"sim-llama","max_tokens":3,"messages":[{"role":"user","content":"Hello!"}]}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 3);
    // The key-protected route: no key is 401; the README's key works and is counted.
    let chat =
        r#"{"model":"sim-gpt","max_tokens":50,"messages":[{"role":"user","content":"Hello!"}]}"#;
    let (status, _) = http(gw, "POST", "/team/v1/chat/completions", chat).unwrap();
    assert_eq!(status, 401);
    let key = [("authorization", "Bearer sk-demo-team")];
    let (status, body) = http_with(gw, "POST", "/team/v1/chat/completions", &key, chat).unwrap();
    assert_eq!(status, 200, "{body}");
    wait_until("usage recorded", Duration::from_secs(5), || {
        http(adm, "GET", "/usage", "").is_some_and(|(_, b)| b.contains("demo-user"))
    });

    // The simulated A2A agent, as the README shows it: its card points at the gateway, and a
    // message sent to the URL the card names is answered.
    let (status, body) = http(gw, "GET", "/a2a/.well-known/agent-card.json", "").unwrap();
    assert_eq!(status, 200, "{body}");
    let card: serde_json::Value = serde_json::from_str(&body).unwrap();
    let url = card["supportedInterfaces"][0]["url"].as_str().unwrap();
    assert_eq!(url, "http://localhost/a2a", "{card}");
    assert_eq!(card["url"], "http://localhost/a2a");
    let a2a = [("a2a-version", "1.0")];
    let (status, body) = http_with(
        gw,
        "POST",
        "/a2a",
        &a2a,
        r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER","parts":[{"text":"Hello!"}]}}}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let task = &v["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{v}");
    assert_eq!(task["artifacts"][0]["parts"][0]["text"], "echo: Hello!");
    // Streamed, and listed in the catalog.
    let (status, body) = http_with(
        gw,
        "POST",
        "/a2a",
        &a2a,
        r#"{"jsonrpc":"2.0","id":2,"method":"SendStreamingMessage","params":{"message":{"messageId":"m2","role":"ROLE_USER","parts":[{"text":"Hi"}]}}}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("TASK_STATE_COMPLETED") && body.contains("echo: Hi"),
        "{body}"
    );
    let (status, body) = http(gw, "GET", "/.well-known/agents.json", "").unwrap();
    assert_eq!(status, 200, "{body}");
    let catalog: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(catalog["agents"][0]["route"], "a2a", "{catalog}");
}

#[test]
fn validate_checks_certificates_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let (ok, err) = validate_text(
        dir.path(),
        "tls.yaml",
        "binds:\n- port: 8443\n  listeners:\n  - protocol: HTTPS\n    tls: {cert: cert.pem, key: key.pem}\n    routes:\n    - backends: [{host: 127.0.0.1:9}]\n",
    );
    assert!(!ok);
    assert!(
        err.contains("binds[0]") && err.contains("cert.pem"),
        "{err}"
    );
}

/// The seeds' port-3100 example, unchanged but for its hosts and ports: the seeds' curl through
/// it to a TLS provider (trusted through `SSL_CERT_FILE`) returns a chat completion.
#[test]
fn seed_llm_route_reaches_a_tls_provider_with_the_gateways_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, tls) = test_pki(&["dashscope.aliyuncs.com", "127.0.0.1"]);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let provider = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        sim::openai::serve_tls(
            l,
            tls,
            sim::openai::Options {
                api_key: Some("sk-seed-test".into()),
                ..Default::default()
            },
        )
    });

    let (llm_port, mcp_port, admin) = (free_port(), free_port(), free_port());
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/seed.yaml"
    ))
    .unwrap()
    .replace("127.0.0.1:8443", &provider.addr.to_string())
    .replace("port: 3100", &format!("port: {llm_port}"))
    .replace("port: 3101", &format!("port: {mcp_port}"))
    .replace("127.0.0.1:15000", &format!("127.0.0.1:{admin}"));
    let file = dir.path().join("seed.yaml");
    std::fs::write(&file, seed).unwrap();
    let _gw = Proc(
        Command::new(BIN)
            .arg("-f")
            .arg(&file)
            .env("DASHSCOPE_API_KEY", "sk-seed-test")
            .env("MCP_TOKEN", "mcp-token")
            .env("SSL_CERT_FILE", &ca_file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], llm_port));
    wait_until("the seed config to serve", Duration::from_secs(10), || {
        TcpStream::connect(addr).is_ok()
    });
    let (status, body) = http(
        addr,
        "POST",
        "/compatible-mode/v1/chat/completions",
        r#"{"model": "any-model-name", "messages": [{"role": "user", "content": "Hello!"}]}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // hyper may answer chunked; the JSON is the one object in the body.
    let json_text = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(
        v["model"], "qwen-plus",
        "the provider model from the config"
    );
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Hello!"));
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &v["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert!(usage["prompt_tokens_details"]["cached_tokens"].is_u64());
    drop(provider);
}
