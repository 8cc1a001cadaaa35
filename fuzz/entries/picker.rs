// Fuzz entry points for crates/picker. Included with `#[path]` by fuzz/fuzz_targets/*.rs and
// by crates/picker/tests/fuzz_replay.rs.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use picker::{PodState, PrefixConfig};

/// A request body as the picker reads it (OpenAI Chat / Completions / Anthropic / Responses
/// bodies), then ranked by every strategy over three pods.
pub fn picker_request(data: &[u8]) {
    let Ok(parsed) = picker::parse_request(data) else {
        return;
    };
    static PICKERS: OnceLock<Vec<Box<dyn picker::Picker>>> = OnceLock::new();
    let pickers = PICKERS.get_or_init(|| {
        let cfg = PrefixConfig {
            block_size: 16,
            max_blocks_per_pod: 64,
            imbalance_threshold: 8,
        };
        let mut v: Vec<_> = picker::STRATEGIES
            .iter()
            .map(|s| picker::parse_strategy(s, &cfg).expect("a listed strategy parses"))
            .collect();
        v.push(
            picker::parse_strategy("prefix-cache:2,least-request:1,session-affinity:0.5", &cfg)
                .expect("a weighted mix parses"),
        );
        v
    });
    let mut pods = vec![
        PodState::new("10.0.0.1:8000"),
        PodState::new("10.0.0.2:8000"),
        PodState::new("10.0.0.3:8000"),
    ];
    pods[1].in_flight = 3;
    let req = parsed.pick_request(parsed.user.as_deref());
    for p in pickers {
        if let Ok(chosen) = picker::pick(p.as_ref(), &req, &pods) {
            p.observe(&req, &chosen);
        }
    }
}

/// A vLLM `/metrics` page; two scrapes in a row derive rates.
pub fn vllm_metrics(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let t0 = Instant::now();
    let Ok(first) = picker::metrics::parse_vllm_metrics(&text, t0) else {
        return;
    };
    if let Ok(mut second) = picker::metrics::parse_vllm_metrics(&text, t0 + Duration::from_secs(1))
    {
        second.derive_rates(&first);
    }
}
