//! Runs the simulators in the foreground:
//!
//! ```text
//! switchyard-sim --openai 127.0.0.1:8080 --anthropic 127.0.0.1:8081 --gemini 127.0.0.1:8082 --bedrock 127.0.0.1:8083 [--ttft MS] [--itl MS]
//! ```
//!
//! Prints one `<provider> listening on <addr>` line per simulator and serves until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str =
    "usage: switchyard-sim [--openai ADDR] [--anthropic ADDR] [--gemini ADDR] [--bedrock ADDR] [--ttft MS] [--itl MS]
  --openai ADDR      serve the OpenAI-compatible simulator on ADDR (e.g. 127.0.0.1:8080)
  --anthropic ADDR   serve the Anthropic Messages simulator on ADDR
  --gemini ADDR      serve the Gemini API / Vertex AI simulator on ADDR (Vertex auth against
                     the test service account in crates/sim/testdata, token endpoint /token)
  --bedrock ADDR     serve the Bedrock Runtime Converse simulator on ADDR (SigV4 with the test
                     keys sim::bedrock::TEST_ACCESS_KEY_ID / TEST_SECRET_ACCESS_KEY, us-east-1)
  --ttft MS          delay before the first streamed token (default 0)
  --itl MS           delay between streamed tokens (default 0)
At least one of --openai / --anthropic / --gemini / --bedrock is required.";

#[derive(Default)]
struct Args {
    openai: Option<String>,
    anthropic: Option<String>,
    gemini: Option<String>,
    bedrock: Option<String>,
    ttft: Duration,
    itl: Duration,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args::default();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let millis = || {
            value
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{flag}: not a number of milliseconds: {value}"))
        };
        match flag.as_str() {
            "--openai" => out.openai = Some(value.clone()),
            "--anthropic" => out.anthropic = Some(value.clone()),
            "--gemini" => out.gemini = Some(value.clone()),
            "--bedrock" => out.bedrock = Some(value.clone()),
            "--ttft" => out.ttft = millis()?,
            "--itl" => out.itl = millis()?,
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    if out.openai.is_none()
        && out.anthropic.is_none()
        && out.gemini.is_none()
        && out.bedrock.is_none()
    {
        return Err(
            "nothing to serve: pass --openai, --anthropic, --gemini and/or --bedrock".into(),
        );
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("switchyard-sim: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    // Keep the servers alive until Ctrl-C: dropping a SimServer stops it.
    let mut running = Vec::new();
    if let Some(addr) = &args.openai {
        let options = sim::openai::Options {
            time_to_first_token: args.ttft,
            inter_token_delay: args.itl,
            ..Default::default()
        };
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let server = sim::openai::serve(listener, options);
                println!("openai listening on {}", server.addr);
                running.push(server);
            }
            Err(e) => {
                eprintln!("switchyard-sim: cannot bind --openai {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(addr) = &args.anthropic {
        let options = sim::anthropic::Options {
            time_to_first_token: args.ttft,
            inter_token_delay: args.itl,
            ..Default::default()
        };
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let server = sim::anthropic::serve(listener, options);
                println!("anthropic listening on {}", server.addr);
                running.push(server);
            }
            Err(e) => {
                eprintln!("switchyard-sim: cannot bind --anthropic {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(addr) = &args.gemini {
        let options = sim::gemini::Options {
            time_to_first_token: args.ttft,
            inter_token_delay: args.itl,
            ..Default::default()
        }
        .with_test_service_account();
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let server = sim::gemini::serve(listener, options);
                println!("gemini listening on {}", server.addr);
                running.push(server);
            }
            Err(e) => {
                eprintln!("switchyard-sim: cannot bind --gemini {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(addr) = &args.bedrock {
        let options = sim::bedrock::Options {
            time_to_first_token: args.ttft,
            inter_token_delay: args.itl,
            ..Default::default()
        };
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let server = sim::bedrock::serve(listener, options);
                println!("bedrock listening on {}", server.addr);
                running.push(server);
            }
            Err(e) => {
                eprintln!("switchyard-sim: cannot bind --bedrock {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    drop(running);
    ExitCode::SUCCESS
}
