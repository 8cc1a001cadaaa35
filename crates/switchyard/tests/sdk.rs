//! End to end with the official `openai` and `anthropic` Python SDKs as clients: the real
//! `switchyard` binary in front of the simulated providers, driven by pytest
//! (`tests/sdk/*.py`). Python comes from `$SWITCHYARD_PYTHON` or the workspace's `.venv`
//! (`.ci/run` creates it from `tests/sdk/requirements.txt`).

mod common;

use common::{python, Proc, BIN};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// One bind with one `ai` backend; `provider` is the provider's YAML (`openAI: {}`), `auth` a
/// policies line for its credentials (or empty). An empty `routes` leaves out the `ai.routes`
/// table (the gateway classifies by well-known path), an empty `alias` the `modelAliases`.
/// `route_policies` (a YAML mapping, or empty) are the route's own policies: the route-phase
/// ones (`apiKeyAuth`, `localRateLimit`...) belong there, not on the backend.
fn ai_bind(port: u16, b: &Binding, upstream: SocketAddr, route_policies: &str) -> String {
    let mut ai = String::new();
    if !b.routes.is_empty() {
        ai += &format!("\n              routes: {{{}}}", b.routes);
    }
    if !b.alias.is_empty() {
        ai += &format!("\n              modelAliases: {{fast: {}}}", b.alias);
    }
    if ai.is_empty() {
        ai = " {}".into();
    }
    let route = match route_policies {
        "" => String::new(),
        p => format!("policies: {p}\n      "),
    };
    format!(
        r#"- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - {route}backends:
      - ai:
          name: {name}
          hostOverride: {upstream}
          provider: {{{provider}}}
          policies:
            {auth}
            ai:{ai}
"#,
        name = b.env,
        provider = b.provider,
        auth = b.auth,
    )
}

/// A gateway bind the Python tests reach through the environment variable `env`.
struct Binding {
    env: &'static str,
    provider: &'static str,
    auth: &'static str,
    routes: &'static str,
    alias: &'static str,
}

const OPENAI_ROUTES: &str =
    "/v1/chat/completions: completions, /v1/responses: responses, /v1/models: models, '*': passthrough";
const ANTHROPIC_ROUTES: &str =
    "/v1/messages: messages, /v1/messages/count_tokens: anthropicTokenCount, '*': passthrough";

/// A bind whose routes are chosen by the request's model: `gpt-4o` (a deployment that always
/// answers 429, then the Anthropic simulator as its standby), `gpt-4o-mini` (one that always
/// answers 500, then the OpenAI simulator), `o3-mini` (nothing listening, then the OpenAI
/// simulator), `claude-sim-1` (Anthropic) and `gemini-sim-flash` (Gemini), all behind one base
/// URL.
fn models_bind(
    port: u16,
    faulty: &FaultyDeployments,
    anthropic: SocketAddr,
    google: SocketAddr,
) -> String {
    let FaultyDeployments {
        limited,
        broken,
        dead,
        openai,
    } = faulty;
    format!(
        r#"- port: {port}
  address: 127.0.0.1
  listeners:
  - routes:
    - name: gpt-4o
      matches: [{{path: {{pathPrefix: /v1}}, model: {{exact: gpt-4o}}}}]
      policies: {{failover: {{cooldown: 30s}}}}
      backends:
      - weight: 1
        ai: {{name: openai-limited, hostOverride: '{limited}', provider: {{openAI: {{}}}}, policies: {{backendAuth: {{key: sk-upstream-openai}}}}}}
      - weight: 0
        ai: {{name: claude-standby, hostOverride: '{anthropic}', provider: {{anthropic: {{}}}}, policies: {{backendAuth: {{key: sk-upstream-anthropic}}, ai: {{modelAliases: {{'*': claude-sim-1}}}}}}}}
    - name: gpt-4o-mini
      matches: [{{path: {{pathPrefix: /v1}}, model: {{exact: gpt-4o-mini}}}}]
      policies: {{failover: {{}}}}
      backends:
      - weight: 1
        ai: {{name: openai-broken, hostOverride: '{broken}', provider: {{openAI: {{}}}}, policies: {{backendAuth: {{key: sk-upstream-openai}}}}}}
      - weight: 0
        ai: {{name: openai-standby, hostOverride: '{openai}', provider: {{openAI: {{}}}}, policies: {{backendAuth: {{key: sk-upstream-openai}}}}}}
    - name: o3-mini
      matches: [{{path: {{pathPrefix: /v1}}, model: {{exact: o3-mini}}}}]
      policies: {{failover: {{}}}}
      backends:
      - weight: 1
        ai: {{name: openai-gone, hostOverride: '127.0.0.1:{dead}', provider: {{openAI: {{}}}}}}
      - weight: 0
        ai: {{name: openai-standby, hostOverride: '{openai}', provider: {{openAI: {{}}}}, policies: {{backendAuth: {{key: sk-upstream-openai}}}}}}
    - name: claude
      matches: [{{path: {{pathPrefix: /v1}}, model: {{exact: claude-sim-1}}}}]
      backends:
      - ai: {{name: anthropic, hostOverride: '{anthropic}', provider: {{anthropic: {{}}}}, policies: {{backendAuth: {{key: sk-upstream-anthropic}}}}}}
    - name: gemini
      matches: [{{path: {{pathPrefix: /v1}}, model: {{exact: gemini-sim-flash}}}}]
      backends:
      - ai: {{name: gemini, hostOverride: '{google}', provider: {{gemini: {{}}}}, policies: {{backendAuth: {{key: gemini-upstream-key}}}}}}
"#
    )
}

/// The failing first deployments of `models_bind`, and the healthy OpenAI simulator that
/// stands by for them.
struct FaultyDeployments {
    limited: SocketAddr,
    broken: SocketAddr,
    dead: u16,
    openai: SocketAddr,
}

/// The governed binds' route policies (`test_governance_sdk.py`): API keys, each limited to
/// 3 requests a minute; `erin`'s team also to 1 every 2 s (a `retry-after` short enough for
/// the SDK's own retry). Each test that spends a limit has its own key.
const GOVERNANCE: &str = "{apiKeyAuth: {keys: [\
    {name: alice, key: sk-gov-alice, models: ['sim-gpt*']}, \
    {name: bob, key: sk-gov-bob}, \
    {name: carol, key: sk-gov-carol}, \
    {name: dave, key: sk-gov-dave}, \
    {name: erin, key: sk-gov-erin, team: burst}]}, \
    localRateLimit: [{key: apiKey.name, requests: {limit: 3, per: 1m}}, \
    {key: apiKey.team, requests: {limit: 1, per: 2s}}]}";

/// The guarded binds' route policies (`test_guardrails_sdk.py`): response guards that mask
/// e-mail addresses (with a placeholder that has quotes, which must stay valid JSON inside
/// tool-call arguments) and card numbers, and refuse tickets.
const GUARDRAILS: &str = "{guardrails: {response: [\
    {name: mail, regex: {builtins: [email]}, action: mask, placeholder: '\"<EMAIL>\"'}, \
    {name: cards, regex: {builtins: [creditCard]}, action: mask}, \
    {name: tickets, regex: {patterns: ['TICKET-[0-9]{4}']}, action: reject}]}}";

/// Routes of the guarded binds: LLM operations only (response guards cannot read what a
/// passthrough answers; the config refuses that).
const GUARDED_OPENAI_ROUTES: &str =
    "/v1/chat/completions: completions, /v1/responses: responses, '*': completions";
const GUARDED_ANTHROPIC_ROUTES: &str = "/v1/messages: messages, '*': messages";

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

    let google = sim::gemini::spawn(
        sim::gemini::Options {
            api_key: Some("gemini-upstream-key".into()),
            ..Default::default()
        }
        .with_test_service_account(),
    )
    .await
    .unwrap();

    let azure = sim::openai::spawn(sim::openai::Options {
        azure: Some(sim::openai::Azure {
            deployments: vec![("prod-mini".into(), "sim-gpt-mini".into())],
            api_key: "az-upstream-key".into(),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let bedrock = sim::bedrock::spawn(sim::bedrock::Options::default())
        .await
        .unwrap();
    let bedrock_provider = format!(
        "bedrock: {{region: {}, accessKeyId: {}, secretAccessKey: {}}}",
        sim::bedrock::TEST_REGION,
        sim::bedrock::TEST_ACCESS_KEY_ID,
        sim::bedrock::TEST_SECRET_ACCESS_KEY
    )
    .leak();

    // (client dialect -> provider) pairs; the Python tests pick them by env name.
    let bindings = [
        (Binding { env: "GW_OPENAI", provider: "openAI: {}", auth: "backendAuth: {key: sk-upstream-openai}", routes: OPENAI_ROUTES, alias: "sim-gpt-mini" }, openai_sim.addr),
        (Binding { env: "GW_ANTHROPIC", provider: "anthropic: {}", auth: "backendAuth: {key: sk-upstream-anthropic}", routes: ANTHROPIC_ROUTES, alias: "claude-sim-1" }, anthropic_sim.addr),
        (Binding { env: "GW_O2A", provider: "anthropic: {}", auth: "backendAuth: {key: sk-upstream-anthropic}", routes: OPENAI_ROUTES, alias: "claude-sim-1" }, anthropic_sim.addr),
        (Binding { env: "GW_A2O", provider: "openAI: {}", auth: "backendAuth: {key: sk-upstream-openai}", routes: ANTHROPIC_ROUTES, alias: "sim-gpt-mini" }, openai_sim.addr),
        (Binding { env: "GW_O2G", provider: "gemini: {}", auth: "backendAuth: {key: gemini-upstream-key}", routes: OPENAI_ROUTES, alias: "gemini-sim-flash" }, google.addr),
        (Binding { env: "GW_AZURE", provider: "azureOpenAI: {host: sdk-test.openai.azure.com, deployment: prod-mini, apiVersion: '2024-10-21'}", auth: "backendAuth: {key: az-upstream-key}", routes: OPENAI_ROUTES, alias: "ignored-by-azure" }, azure.addr),
        (Binding { env: "GW_O2B", provider: bedrock_provider, auth: "", routes: OPENAI_ROUTES, alias: "anthropic.claude-sim-v1:0" }, bedrock.addr),
        (Binding { env: "GW_A2B", provider: bedrock_provider, auth: "", routes: ANTHROPIC_ROUTES, alias: "anthropic.claude-sim-v1:0" }, bedrock.addr),
        // No `ai.routes` table: classified by well-known path. Only the Anthropic one names
        // a model (so its model list comes from config; the OpenAI one's from the provider).
        (Binding { env: "GW_OPENAI_NO_TABLE", provider: "openAI: {}", auth: "backendAuth: {key: sk-upstream-openai}", routes: "", alias: "" }, openai_sim.addr),
        (Binding { env: "GW_ANTHROPIC_NO_TABLE", provider: "anthropic: {}", auth: "backendAuth: {key: sk-upstream-anthropic}", routes: "", alias: "claude-sim-1" }, anthropic_sim.addr),
        (Binding { env: "GW_A2V", provider: "vertex: {projectId: sdk-test, region: us-central1, credentials: {file: sa.json}}", auth: "", routes: ANTHROPIC_ROUTES, alias: "gemini-sim-pro" }, google.addr),
    ];
    // The same pairs behind API keys and rate limits (the route's policies).
    let governed = [
        (
            Binding {
                env: "GW_GOV_OPENAI",
                provider: "openAI: {}",
                auth: "backendAuth: {key: sk-upstream-openai}",
                routes: OPENAI_ROUTES,
                alias: "",
            },
            openai_sim.addr,
        ),
        (
            Binding {
                env: "GW_GOV_ANTHROPIC",
                provider: "anthropic: {}",
                auth: "backendAuth: {key: sk-upstream-anthropic}",
                routes: ANTHROPIC_ROUTES,
                alias: "",
            },
            anthropic_sim.addr,
        ),
    ];
    // Native and translated pairs behind response guardrails.
    let guarded = [
        (
            Binding {
                env: "GW_GUARD_OPENAI",
                provider: "openAI: {}",
                auth: "backendAuth: {key: sk-upstream-openai}",
                routes: GUARDED_OPENAI_ROUTES,
                alias: "sim-gpt-mini",
            },
            openai_sim.addr,
        ),
        (
            Binding {
                env: "GW_GUARD_O2G",
                provider: "gemini: {}",
                auth: "backendAuth: {key: gemini-upstream-key}",
                routes: GUARDED_OPENAI_ROUTES,
                alias: "gemini-sim-flash",
            },
            google.addr,
        ),
        (
            Binding {
                env: "GW_GUARD_O2B",
                provider: bedrock_provider,
                auth: "",
                routes: GUARDED_OPENAI_ROUTES,
                alias: "anthropic.claude-sim-v1:0",
            },
            bedrock.addr,
        ),
        (
            Binding {
                env: "GW_GUARD_ANTHROPIC",
                provider: "anthropic: {}",
                auth: "backendAuth: {key: sk-upstream-anthropic}",
                routes: GUARDED_ANTHROPIC_ROUTES,
                alias: "claude-sim-1",
            },
            anthropic_sim.addr,
        ),
        (
            Binding {
                env: "GW_GUARD_A2O",
                provider: "openAI: {}",
                auth: "backendAuth: {key: sk-upstream-openai}",
                routes: GUARDED_ANTHROPIC_ROUTES,
                alias: "sim-gpt-mini",
            },
            openai_sim.addr,
        ),
        (
            Binding {
                env: "GW_GUARD_A2B",
                provider: bedrock_provider,
                auth: "",
                routes: GUARDED_ANTHROPIC_ROUTES,
                alias: "anthropic.claude-sim-v1:0",
            },
            bedrock.addr,
        ),
    ];
    let binds: Vec<(&Binding, SocketAddr, &str)> = bindings
        .iter()
        .map(|(b, up)| (b, *up, ""))
        .chain(governed.iter().map(|(b, up)| (b, *up, GOVERNANCE)))
        .chain(guarded.iter().map(|(b, up)| (b, *up, GUARDRAILS)))
        .collect();
    let mut ports = common::free_ports(binds.len() + 2);
    let (admin_port, models_port) = (ports.pop().unwrap(), ports.pop().unwrap());
    let mut yaml = format!("config:\n  adminAddr: 127.0.0.1:{admin_port}\nbinds:\n");
    for ((binding, upstream, policies), port) in binds.iter().zip(&ports) {
        yaml += &ai_bind(*port, binding, *upstream, policies);
    }
    // One base URL, routes chosen by model (test_models_sdk.py); gpt-4o's first deployment
    // always answers 429, its standby is the Anthropic simulator.
    let limited = sim::openai::spawn(sim::openai::Options {
        api_key: Some("sk-upstream-openai".into()),
        fault: Some(sim::Fault::RateLimit),
        ..Default::default()
    })
    .await
    .unwrap();
    let broken = sim::openai::spawn(sim::openai::Options {
        api_key: Some("sk-upstream-openai".into()),
        fault: Some(sim::Fault::ServerError),
        ..Default::default()
    })
    .await
    .unwrap();
    let faulty = FaultyDeployments {
        limited: limited.addr,
        broken: broken.addr,
        dead: common::free_port(),
        openai: openai_sim.addr,
    };
    yaml += &models_bind(models_port, &faulty, anthropic_sim.addr, google.addr);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sa.json"),
        sim::gemini::test_service_account_json(&format!("http://{}/token", google.addr)),
    )
    .unwrap();
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, yaml).unwrap();
    let _gw = Proc(Command::new(BIN).arg("-f").arg(&file).spawn().unwrap());
    let t = Instant::now();
    for p in ports.iter().chain([&models_port]) {
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
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY");
    for ((binding, _, _), port) in binds.iter().zip(&ports) {
        cmd.env(binding.env, base(*port));
    }
    cmd.env("GW_MODELS", base(models_port));
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "pytest failed (see its output above)");
}
