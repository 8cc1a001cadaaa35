//! End to end with the official `openai` and `anthropic` Python SDKs as clients: the real
//! `switchyard` binary in front of the simulated providers, driven by pytest
//! (`tests/sdk/*.py`). Python comes from `$SWITCHYARD_PYTHON` or the workspace's `.venv`
//! (`.ci/run` creates it from `tests/sdk/requirements.txt`).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "the SDK tests need Python with the `openai`, `anthropic` and `pytest` packages: \
         python3 -m venv .venv && .venv/bin/pip install -r crates/switchyard/tests/sdk/requirements.txt \
         (or set SWITCHYARD_PYTHON)"
    );
    venv
}

fn ai_bind(
    port: u16,
    name: &str,
    provider: &str,
    upstream: SocketAddr,
    key: &str,
    routes: &str,
    alias: &str,
) -> String {
    format!(
        r#"- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - backends:
      - ai:
          name: {name}
          hostOverride: {upstream}
          provider: {{{provider}: {{}}}}
          policies:
            backendAuth: {{key: {key}}}
            ai:
              routes: {{{routes}}}
              modelAliases: {{fast: {alias}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_through_the_gateway() {
    let python = python();
    let openai_sim = sim::openai::spawn(sim::openai::Options {
        api_key: Some("sk-upstream-openai".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let anthropic_sim = sim::anthropic::spawn(sim::anthropic::Options {
        api_key: Some("sk-upstream-anthropic".into()),
        ..Default::default()
    })
    .await
    .unwrap();

    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let openai_routes = "/v1/chat/completions: completions, /v1/models: models, '*': passthrough";
    let anthropic_routes =
        "/v1/messages: messages, /v1/messages/count_tokens: anthropicTokenCount, '*': passthrough";
    let mut yaml = format!("config:\n  adminAddr: 127.0.0.1:{}\nbinds:\n", free_port());
    yaml += &ai_bind(
        ports[0],
        "openai",
        "openAI",
        openai_sim.addr,
        "sk-upstream-openai",
        openai_routes,
        "sim-gpt-mini",
    );
    yaml += &ai_bind(
        ports[1],
        "anthropic",
        "anthropic",
        anthropic_sim.addr,
        "sk-upstream-anthropic",
        anthropic_routes,
        "claude-sim-1",
    );
    yaml += &ai_bind(
        ports[2],
        "o2a",
        "anthropic",
        anthropic_sim.addr,
        "sk-upstream-anthropic",
        openai_routes,
        "claude-sim-1",
    );
    yaml += &ai_bind(
        ports[3],
        "a2o",
        "openAI",
        openai_sim.addr,
        "sk-upstream-openai",
        anthropic_routes,
        "sim-gpt-mini",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, yaml).unwrap();
    let _gw = Proc(Command::new(BIN).arg("-f").arg(&file).spawn().unwrap());
    let t = Instant::now();
    for p in &ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], *p));
        while TcpStream::connect(addr).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "gateway did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let base = |p: u16| format!("http://127.0.0.1:{p}");
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&tests)
        .env("GW_OPENAI", base(ports[0]))
        .env("GW_ANTHROPIC", base(ports[1]))
        .env("GW_O2A", base(ports[2]))
        .env("GW_A2O", base(ports[3]))
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY");
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "pytest failed (see its output above)");
}
