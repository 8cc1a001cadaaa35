//! `switchyard demo`: the gateway on a built-in config, with simulated backends in-process.

use std::path::Path;
use std::process::ExitCode;

const DEMO_CONFIG: &str = include_str!("../../../examples/demo.yaml");

pub async fn run(port: u16, admin_port: u16) -> ExitCode {
    crate::run::init_logging(None);
    let sim = match sim::openai::spawn(sim::openai::Options::default()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: cannot start the simulated OpenAI server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let anthropic = match sim::anthropic::spawn(sim::anthropic::Options {
        api_key: Some("sk-demo-anthropic-key".into()),
        ..Default::default()
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: cannot start the simulated Anthropic server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut mcp_sims = Vec::new();
    for name in ["alpha", "beta"] {
        match sim::mcp::spawn(sim::mcp::Options {
            name: Some(format!("sim-mcp-{name}")),
            ..Default::default()
        })
        .await
        {
            Ok(s) => mcp_sims.push(s),
            Err(e) => {
                eprintln!("demo: cannot start the simulated MCP server: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let a2a_agent = match sim::a2a::spawn(sim::a2a::Options::default()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: cannot start the simulated A2A agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let a2a_addr = a2a_agent.server.addr.to_string();
    let vllm_pods = sim::vllm::fleet(3, sim::vllm::VllmOptions::default()).await;
    let pod_addrs: Vec<String> = vllm_pods.iter().map(|p| p.addr.to_string()).collect();
    let (mcp_url, mcp2_url) = (mcp_sims[0].url.clone(), mcp_sims[1].url.clone());
    let sim_addr = sim.addr.to_string();
    let anthropic_addr = anthropic.addr.to_string();
    let port_s = port.to_string();
    let text = DEMO_CONFIG.replace("127.0.0.1:15000", &format!("127.0.0.1:{admin_port}"));
    let loaded = match config::load_str(
        &text,
        Path::new("examples/demo.yaml"),
        Path::new("."),
        |name| match name {
            "SIM_OPENAI_ADDR" => Some(sim_addr.clone()),
            "SIM_ANTHROPIC_ADDR" => Some(anthropic_addr.clone()),
            "DEMO_PORT" => Some(port_s.clone()),
            "SIM_MCP_URL" => Some(mcp_url.clone()),
            "SIM_MCP2_URL" => Some(mcp2_url.clone()),
            "SIM_A2A_ADDR" => Some(a2a_addr.clone()),
            "SIM_VLLM_POD0" => Some(pod_addrs[0].clone()),
            "SIM_VLLM_POD1" => Some(pod_addrs[1].clone()),
            "SIM_VLLM_POD2" => Some(pod_addrs[2].clone()),
            other => std::env::var(other).ok(),
        },
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo: built-in config is invalid: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match crate::run::Running::start(&loaded, "built-in demo config").await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "\nSwitchyard demo is running: gateway on http://127.0.0.1:{port}, admin on http://127.0.0.1:{admin_port}\n\
         Simulated providers: OpenAI at http://{sim_addr}, Anthropic at http://{anthropic_addr}\n\n\
         Try:\n\
         \x20 curl -s http://127.0.0.1:{port}/v1/chat/completions -H 'content-type: application/json' \\\n\
         \x20      -d '{{\"model\":\"sim-gpt\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'\n\
         \x20 curl -sN http://127.0.0.1:{port}/v1/chat/completions -H 'content-type: application/json' \\\n\
         \x20      -d '{{\"model\":\"sim-gpt\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'\n\
         \x20 curl -s http://127.0.0.1:{port}/anthropic/v1/messages -H 'content-type: application/json' \\\n\
         \x20      -d '{{\"model\":\"claude-sim-1\",\"max_tokens\":100,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'\n\
         \x20 curl -s http://127.0.0.1:{port}/anthropic/v1/chat/completions -H 'content-type: application/json' \\\n\
         \x20      -d '{{\"model\":\"any\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'   # translated to Anthropic\n\
         \x20 curl -s http://127.0.0.1:{port}/v1/models\n\
         \x20 curl -si http://127.0.0.1:{port}/vllm/v1/chat/completions -H 'content-type: application/json' \\\n\
         \x20      -d '{{\"model\":\"sim-llama\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'   # 3 simulated vLLM pods; see target-pod\n\
         \x20 curl -s http://127.0.0.1:{admin_port}/config_dump\n\n\
         MCP: two simulated MCP servers federated at /mcp (initialize, then list tools):\n\
         \x20 SID=$(curl -si http://127.0.0.1:{port}/mcp -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\\n\
         \x20      -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"curl\",\"version\":\"1\"}}}}}}' \\\n\
         \x20      | tr -d '\\r' | awk 'tolower($1)==\"mcp-session-id:\"{{print $2}}')\n\
         \x20 curl -s http://127.0.0.1:{port}/mcp -H 'content-type: application/json' -H \"mcp-session-id: $SID\" \\\n\
         \x20      -d '{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}}'\n\n\
         A2A: a simulated agent at /a2a (its card, rewritten to the gateway; a message; the catalog):\n\
         \x20 curl -s http://127.0.0.1:{port}/a2a/.well-known/agent-card.json\n\
         \x20 curl -s http://127.0.0.1:{port}/a2a -H 'content-type: application/json' -H 'a2a-version: 1.0' \\\n\
         \x20      -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"SendMessage\",\"params\":{{\"message\":{{\"messageId\":\"m1\",\"role\":\"ROLE_USER\",\"parts\":[{{\"text\":\"Hello!\"}}]}}}}}}'\n\
         \x20 curl -s http://127.0.0.1:{port}/.well-known/agents.json\n\n\
         Ctrl-C to stop.\n"
    );
    let code = running.wait_for_signal_and_drain().await;
    drop(sim);
    drop(anthropic);
    drop(mcp_sims);
    drop(a2a_agent);
    drop(vllm_pods);
    code
}
