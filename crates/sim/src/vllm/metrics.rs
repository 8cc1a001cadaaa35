//! `GET /metrics`: the engine's [`Stats`] in the Prometheus text format, under vLLM's metric
//! names (vLLM docs, "Production Metrics"), each with a `model_name` label. Counters are written
//! the way Python's `prometheus_client` writes them (`# TYPE vllm:x_total counter`).

use std::fmt::Write;

use super::engine::{Histogram, Stats};

/// A number the way `prometheus_client` prints it (`1.0`, `0.25`).
fn num(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out {
    text: String,
    labels: String,
}

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, "gauge", help);
        let _ = writeln!(self.text, "{name}{{{}}} {}", self.labels, num(value));
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "counter", help);
        let _ = writeln!(self.text, "{name}{{{}}} {}", self.labels, num(value as f64));
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, "histogram", help);
        let labels = &self.labels;
        let _ = writeln!(self.text, "{name}_sum{{{labels}}} {}", num(h.sum));
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = h
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| num(*b));
            let _ = writeln!(
                self.text,
                "{name}_bucket{{le=\"{le}\",{labels}}} {}",
                num(cumulative as f64)
            );
        }
        let _ = writeln!(
            self.text,
            "{name}_count{{{labels}}} {}",
            num(h.count as f64)
        );
    }
}

/// The exposition text for `stats` of a pod serving `model`.
pub(crate) fn render(model: &str, stats: &Stats) -> String {
    let mut out = Out {
        text: String::with_capacity(16 * 1024),
        labels: format!("model_name=\"{}\"", escape(model)),
    };
    out.gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        stats.running as f64,
    );
    out.gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        stats.waiting as f64,
    );
    out.gauge(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        stats.kv_usage,
    );
    out.gauge(
        "vllm:gpu_cache_usage_perc",
        "GPU KV-cache usage. 1 means 100 percent usage. DEPRECATED: use vllm:kv_cache_usage_perc.",
        stats.kv_usage,
    );
    out.counter(
        "vllm:prefix_cache_queries_total",
        "Prefix cache queries, in terms of number of queried tokens.",
        stats.prefix_cache_queries,
    );
    out.counter(
        "vllm:prefix_cache_hits_total",
        "Prefix cache hits, in terms of number of cached tokens.",
        stats.prefix_cache_hits,
    );
    out.counter(
        "vllm:gpu_prefix_cache_queries_total",
        "GPU prefix cache queries, in terms of number of queried tokens. DEPRECATED.",
        stats.prefix_cache_queries,
    );
    out.counter(
        "vllm:gpu_prefix_cache_hits_total",
        "GPU prefix cache hits, in terms of number of cached tokens. DEPRECATED.",
        stats.prefix_cache_hits,
    );
    out.counter(
        "vllm:num_preemptions_total",
        "Cumulative number of preemption from the engine.",
        stats.preemptions,
    );
    out.counter(
        "vllm:prompt_tokens_total",
        "Number of prefill tokens processed.",
        stats.prompt_tokens,
    );
    out.counter(
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        stats.generation_tokens,
    );
    out.header(
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
    );
    for (reason, n) in [
        ("stop", stats.finished_stop),
        ("length", stats.finished_length),
        ("abort", stats.aborted),
    ] {
        let _ = writeln!(
            out.text,
            "vllm:request_success_total{{finished_reason=\"{reason}\",{}}} {}",
            out.labels,
            num(n as f64)
        );
    }
    out.histogram(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &stats.ttft,
    );
    out.histogram(
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        &stats.itl,
    );
    out.histogram(
        "vllm:time_per_output_token_seconds",
        "Histogram of time per output token in seconds. DEPRECATED: use \
         vllm:inter_token_latency_seconds.",
        &stats.itl,
    );
    out.histogram(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &stats.e2e,
    );
    out.histogram(
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        &stats.queue_time,
    );
    out.header(
        "vllm:cache_config_info",
        "gauge",
        "Information of the LLMEngine CacheConfig",
    );
    let _ = writeln!(
        out.text,
        "vllm:cache_config_info{{block_size=\"{}\",num_gpu_blocks=\"{}\",enable_prefix_caching=\"True\",{}}} 1.0",
        stats.block_size, stats.num_blocks, out.labels
    );
    out.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vllm::engine::{Engine, EngineConfig};

    #[test]
    fn renders_cumulative_buckets_and_counters() {
        let mut stats = Engine::new(EngineConfig::default()).stats();
        stats.ttft.observe(0.003);
        stats.ttft.observe(0.5);
        stats.prefix_cache_hits = 32;
        let text = render("m\"x", &stats);
        assert!(text.contains("# TYPE vllm:prefix_cache_hits_total counter\n"));
        assert!(text.contains("vllm:prefix_cache_hits_total{model_name=\"m\\\"x\"} 32.0\n"));
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{le=\"0.001\",model_name=\"m\\\"x\"} 0.0\n"
        ));
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{le=\"0.005\",model_name=\"m\\\"x\"} 1.0\n"
        ));
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{le=\"0.5\",model_name=\"m\\\"x\"} 2.0\n"
        ));
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"m\\\"x\"} 2.0\n"
        ));
        assert!(
            text.contains("vllm:time_to_first_token_seconds_count{model_name=\"m\\\"x\"} 2.0\n")
        );
    }
}
