//! Runs a fleet of simulated vLLM pods (see `sim::vllm`) in the foreground:
//!
//! ```text
//! vllm-fleet --pods 8 [--base-port 8000] [--model sim-llama] [--num-blocks 2048]
//!            [--cost-model a100-llama8b|legacy] [--step-base-us 13200] ...
//! ```
//!
//! Prints one `pod-<i> <addr>` line per pod once all listen, then serves until SIGTERM or
//! Ctrl-C.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sim::vllm::{self, EngineConfig, VllmOptions};

#[derive(Parser, Debug)]
#[command(name = "vllm-fleet", about = "A fleet of simulated vLLM pods")]
struct Args {
    /// Number of pods.
    #[arg(long, default_value_t = 8)]
    pods: usize,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of pod-0; pod-i listens on base-port + i. 0 = ephemeral ports.
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// Served model name.
    #[arg(long, default_value = "sim-llama")]
    model: String,
    /// Seed of pod-0 (pod-i uses seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// KV cache capacity per pod, in blocks.
    #[arg(long, default_value_t = EngineConfig::default().num_blocks)]
    num_blocks: usize,
    /// Tokens per KV block.
    #[arg(long, default_value_t = EngineConfig::default().block_size)]
    block_size: usize,
    /// Most running sequences per pod.
    #[arg(long, default_value_t = EngineConfig::default().max_num_seqs)]
    max_num_seqs: usize,
    /// Token budget of one engine step.
    #[arg(long, default_value_t = EngineConfig::default().max_num_batched_tokens)]
    max_num_batched_tokens: usize,
    /// Longest prompt + completion accepted.
    #[arg(long, default_value_t = EngineConfig::default().max_model_len)]
    max_model_len: usize,
    /// Most waiting requests per pod before answering 429.
    #[arg(long, default_value_t = EngineConfig::default().max_waiting)]
    max_waiting: usize,
    /// Timing constants: `a100-llama8b` (calibrated to Llama-3.1-8B on an A100 40GB; see
    /// bench/routing/README.md) or `legacy` (the earlier model: 2 ms per step, 60 µs per
    /// prefilled token, 250 µs per decoding sequence, no attention, KV-read or API-server
    /// cost). The flags below override single constants.
    #[arg(long, default_value = "a100-llama8b", value_parser = ["a100-llama8b", "legacy"])]
    cost_model: String,
    /// Fixed cost of each engine step, in microseconds.
    #[arg(long)]
    step_base_us: Option<f64>,
    /// Prefill cost per uncached prompt token, in microseconds.
    #[arg(long)]
    prefill_us_per_token: Option<f64>,
    /// Decode cost per running sequence per step, in microseconds.
    #[arg(long)]
    decode_us_per_seq: Option<f64>,
    /// Attention cost per (new token, context token) pair in prefill, in nanoseconds.
    #[arg(long)]
    attention_ns_per_pair: Option<f64>,
    /// Cost of reading one context token's KV per sequence per step, in nanoseconds.
    #[arg(long)]
    kv_read_ns_per_token: Option<f64>,
    /// The API server's fixed cost per request, in microseconds.
    #[arg(long)]
    request_us: Option<f64>,
    /// The API server's cost per prompt token (tokenization), in microseconds.
    #[arg(long)]
    tokenize_us_per_token: Option<f64>,
    /// Shortest completion drawn for requests without max_tokens.
    #[arg(long, default_value_t = 16)]
    output_len_min: u32,
    /// Longest completion drawn (exclusive) for requests without max_tokens.
    #[arg(long, default_value_t = 64)]
    output_len_max: u32,
    /// Disable automatic prefix caching.
    #[arg(long)]
    no_prefix_caching: bool,
}

fn micros(us: f64) -> Duration {
    Duration::try_from_secs_f64(us.max(0.0) / 1e6).unwrap_or(Duration::ZERO)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let costs = if args.cost_model == "legacy" {
        EngineConfig::default()
    } else {
        EngineConfig::a100_llama8b()
    };
    let us = |flag: Option<f64>, preset: Duration| flag.map(micros).unwrap_or(preset);
    let base = VllmOptions {
        name: String::new(),
        model: args.model.clone(),
        lora_adapters: Vec::new(),
        seed: args.seed,
        engine: EngineConfig {
            max_num_seqs: args.max_num_seqs,
            max_num_batched_tokens: args.max_num_batched_tokens,
            block_size: args.block_size,
            num_blocks: args.num_blocks,
            max_model_len: args.max_model_len,
            max_waiting: args.max_waiting,
            step_base: us(args.step_base_us, costs.step_base),
            prefill_per_token: us(args.prefill_us_per_token, costs.prefill_per_token),
            decode_per_seq: us(args.decode_us_per_seq, costs.decode_per_seq),
            attention_ns_per_pair: args
                .attention_ns_per_pair
                .unwrap_or(costs.attention_ns_per_pair)
                .max(0.0),
            kv_read_ns_per_token: args
                .kv_read_ns_per_token
                .unwrap_or(costs.kv_read_ns_per_token)
                .max(0.0),
            request_base: us(args.request_us, costs.request_base),
            tokenize_per_token: us(args.tokenize_us_per_token, costs.tokenize_per_token),
            output_len: args.output_len_min..args.output_len_max,
            enable_prefix_caching: !args.no_prefix_caching,
        },
    };
    let mut pods = Vec::with_capacity(args.pods);
    for i in 0..args.pods {
        let port = if args.base_port == 0 {
            0
        } else {
            match u16::try_from(usize::from(args.base_port) + i) {
                Ok(p) => p,
                Err(_) => {
                    eprintln!("vllm-fleet: base port {} + {i} overflows", args.base_port);
                    return ExitCode::FAILURE;
                }
            }
        };
        let addr = SocketAddr::new(args.host, port);
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("vllm-fleet: cannot bind {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let options = vllm::pod_options(&base, i);
        pods.push((options.name.clone(), vllm::serve(listener, options)));
    }
    let mut stdout = std::io::stdout().lock();
    for (name, pod) in &pods {
        let _ = writeln!(stdout, "{name} {}", pod.addr);
    }
    let _ = stdout.flush();
    drop(stdout);
    shutdown_signal().await;
    ExitCode::SUCCESS
}
