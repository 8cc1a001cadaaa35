//! What the engine counts: vLLM's counters, gauges and latency histograms.

/// A Prometheus-style histogram (cumulative buckets are computed when rendering).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending (`+Inf` implied).
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds` (the `+Inf` bucket).
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// The mean observation (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// vLLM's buckets for time-to-first-token.
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's buckets for inter-token latency / time per output token.
pub const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's buckets for request-level latencies (end-to-end, queue time).
pub const REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// Counters and histograms since the engine started, plus the current gauges.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub running: usize,
    pub waiting: usize,
    /// Blocks referenced by running sequences / `num_blocks` (vLLM's `kv_cache_usage_perc`).
    pub kv_usage: f64,
    pub used_blocks: usize,
    /// Free blocks that still hold a reusable prefix.
    pub cached_blocks: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    /// Prompt tokens looked up in the prefix cache on admission.
    pub prefix_cache_queries: u64,
    /// Of those, tokens found.
    pub prefix_cache_hits: u64,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    pub preemptions: u64,
    pub finished_stop: u64,
    pub finished_length: u64,
    pub aborted: u64,
    pub steps: u64,
    pub ttft: Histogram,
    /// Gap between consecutive tokens of a request (vLLM's inter-token latency).
    pub itl: Histogram,
    pub e2e: Histogram,
    pub queue_time: Histogram,
}
