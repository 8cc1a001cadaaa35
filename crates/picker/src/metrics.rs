//! Parsing of vLLM's Prometheus `/metrics` text exposition into [`PodMetrics`].

use std::time::Instant;

use crate::PodMetrics;

/// Running sum of one metric across label sets.
#[derive(Default, Clone, Copy)]
struct Acc {
    sum: f64,
    n: u32,
}

impl Acc {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }
    fn total(self) -> Option<f64> {
        (self.n > 0).then_some(self.sum)
    }
    fn mean(self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / f64::from(self.n))
    }
}

#[derive(Clone, Copy)]
enum Field {
    Running,
    Waiting,
    KvUsage,
    GpuCacheUsage,
    PrefixQueries,
    PrefixHits,
    TtftSum,
    TtftCount,
    TpotSum,
    TpotCount,
    GenTokens,
}

const N_FIELDS: usize = 11;

fn field(name: &str) -> Option<Field> {
    let rest = name.strip_prefix("vllm:")?;
    Some(match rest {
        "num_requests_running" => Field::Running,
        "num_requests_waiting" => Field::Waiting,
        "kv_cache_usage_perc" => Field::KvUsage,
        "gpu_cache_usage_perc" => Field::GpuCacheUsage,
        "prefix_cache_queries_total" | "prefix_cache_queries" => Field::PrefixQueries,
        "prefix_cache_hits_total" | "prefix_cache_hits" => Field::PrefixHits,
        "time_to_first_token_seconds_sum" => Field::TtftSum,
        "time_to_first_token_seconds_count" => Field::TtftCount,
        "time_per_output_token_seconds_sum" => Field::TpotSum,
        "time_per_output_token_seconds_count" => Field::TpotCount,
        "generation_tokens_total" | "generation_tokens" => Field::GenTokens,
        _ => return None,
    })
}

/// Splits a sample line into `(name, value token)`; label values may contain
/// spaces, commas, braces and escaped quotes. `None` for malformed lines.
fn split_sample(line: &str) -> Option<(&str, &str)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        let bytes = rest.as_bytes();
        let (mut in_quotes, mut escaped, mut close) = (false, false, None);
        for (i, &b) in bytes.iter().enumerate().skip(1) {
            match b {
                _ if escaped => escaped = false,
                b'\\' if in_quotes => escaped = true,
                b'"' => in_quotes = !in_quotes,
                b'}' if !in_quotes => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[close? + 1..];
    }
    // The value, optionally followed by a timestamp.
    let value = rest.split_ascii_whitespace().next()?;
    Some((name, value))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// Parses vLLM's `/metrics` page. Values are summed across label sets (e.g.
/// several `model_name`s), except KV-cache usage which is a ratio and is
/// averaged. `NaN`/`±Inf` samples are ignored. Histogram averages are
/// `_sum / _count` (`None` while the count is 0). `generation_tokens_per_second`
/// is left `None`: use [`PodMetrics::derive_rates`] with the previous scrape.
///
/// Errors if a relevant sample has an unparsable value or if
/// `vllm:num_requests_running`, `vllm:num_requests_waiting` or the KV-cache
/// usage (`vllm:kv_cache_usage_perc` / `vllm:gpu_cache_usage_perc`) is missing.
pub fn parse_vllm_metrics(text: &str, now: Instant) -> Result<PodMetrics, String> {
    let mut acc = [Acc::default(); N_FIELDS];
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with("vllm:") {
            continue; // comments, blank lines, other exporters' metrics
        }
        let Some((name, value)) = split_sample(line) else {
            continue;
        };
        let Some(f) = field(name) else { continue };
        let v = parse_value(value)
            .ok_or_else(|| format!("line {}: bad value {value:?} for {name}", lineno + 1))?;
        if v.is_finite() {
            acc[f as usize].add(v);
        }
    }
    let get = |f: Field| acc[f as usize];
    let mut missing = Vec::new();
    let running = get(Field::Running).total();
    let waiting = get(Field::Waiting).total();
    let kv = get(Field::KvUsage)
        .mean()
        .or(get(Field::GpuCacheUsage).mean());
    if running.is_none() {
        missing.push("vllm:num_requests_running");
    }
    if waiting.is_none() {
        missing.push("vllm:num_requests_waiting");
    }
    if kv.is_none() {
        missing.push("vllm:kv_cache_usage_perc (or vllm:gpu_cache_usage_perc)");
    }
    if !missing.is_empty() {
        return Err(format!("missing metrics: {}", missing.join(", ")));
    }
    let avg = |sum: Field, count: Field| {
        let (s, c) = (get(sum).total()?, get(count).total()?);
        (c > 0.0).then(|| s / c)
    };
    Ok(PodMetrics {
        running: running.unwrap_or(0.0),
        waiting: waiting.unwrap_or(0.0),
        kv_cache_usage: kv.unwrap_or(0.0).clamp(0.0, 1.0),
        prefix_cache_queries: get(Field::PrefixQueries).total(),
        prefix_cache_hits: get(Field::PrefixHits).total(),
        avg_ttft_seconds: avg(Field::TtftSum, Field::TtftCount),
        avg_tpot_seconds: avg(Field::TpotSum, Field::TpotCount),
        generation_tokens_per_second: None,
        generation_tokens_total: get(Field::GenTokens).total(),
        scraped_at: now,
        in_flight_at_scrape: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12873.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0 1718000000000
vllm:num_requests_waiting{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} NaN
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.75
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 40960.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 30720.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 51234.0
vllm:generation_tokens_total{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 48766.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} 180.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 200.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 200.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 50.0
vllm:time_to_first_token_seconds_count{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_sum{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
# HELP vllm:time_per_output_token_seconds Histogram of time per output token in seconds.
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{engine="0",le="0.025",model_name="meta-llama/Llama-3.1-8B-Instruct"} 9000.0
vllm:time_per_output_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 10000.0
vllm:time_per_output_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 200.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",note="a, b} c \"quoted\"",num_gpu_blocks="27000"} 1.0
vllm:num_requests_running{model_name="odd name, with {braces} and \"quotes\""} +Inf
"#;

    #[test]
    fn parses_realistic_vllm_sample() {
        let now = Instant::now();
        let m = parse_vllm_metrics(SAMPLE, now).unwrap();
        assert_eq!(m.running, 5.0, "summed across engines, +Inf ignored");
        assert_eq!(m.waiting, 1.0, "timestamp ignored, NaN ignored");
        assert_eq!(m.kv_cache_usage, 0.5, "ratio averaged across engines");
        assert_eq!(m.prefix_cache_queries, Some(40960.0));
        assert_eq!(m.prefix_cache_hits, Some(30720.0));
        assert_eq!(m.avg_ttft_seconds, Some(0.25));
        assert_eq!(m.avg_tpot_seconds, Some(0.02));
        assert_eq!(m.generation_tokens_total, Some(100000.0));
        assert_eq!(m.generation_tokens_per_second, None);
        assert_eq!(m.scraped_at, now);
    }

    #[test]
    fn accepts_legacy_names() {
        let text = "vllm:num_requests_running{model_name=\"m\"} 1\n\
                    vllm:num_requests_waiting{model_name=\"m\"} 0\n\
                    vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.9\n\
                    vllm:prefix_cache_hits{model_name=\"m\"} 7\n\
                    vllm:prefix_cache_queries{model_name=\"m\"} 9\n";
        let m = parse_vllm_metrics(text, Instant::now()).unwrap();
        assert_eq!(m.kv_cache_usage, 0.9);
        assert_eq!(
            (m.prefix_cache_hits, m.prefix_cache_queries),
            (Some(7.0), Some(9.0))
        );
        assert_eq!(m.avg_ttft_seconds, None);
        assert_eq!(m.generation_tokens_total, None);
    }

    #[test]
    fn reports_missing_and_bad_values() {
        let e = parse_vllm_metrics("# HELP nothing\nfoo 1\n", Instant::now()).unwrap_err();
        assert!(e.contains("vllm:num_requests_running"), "{e}");
        assert!(e.contains("vllm:num_requests_waiting"), "{e}");
        assert!(e.contains("kv_cache_usage_perc"), "{e}");
        let e =
            parse_vllm_metrics("vllm:num_requests_waiting 1.2.3\n", Instant::now()).unwrap_err();
        assert!(e.contains("line 1") && e.contains("1.2.3"), "{e}");
    }

    #[test]
    fn splits_tricky_label_sets() {
        assert_eq!(
            split_sample(r#"a{x="1 2, }",y="\"}"} 3.5 123"#),
            Some(("a", "3.5"))
        );
        assert_eq!(split_sample("a 4"), Some(("a", "4")));
        assert_eq!(split_sample(r#"a{x="unterminated} 4"#), None);
        assert_eq!(split_sample("a"), None);
    }
}
