//! Replays the committed fuzz corpora (`fuzz/corpus/<target>`: seeds and every crash the
//! fuzzers found) through the fuzz targets' own entry functions, so CI keeps them passing
//! without building the fuzz workspace. See bench/fuzz/README.md.

#[allow(dead_code)]
#[path = "../../../fuzz/entries/picker.rs"]
mod entries;
#[path = "../../../fuzz/entries/replay.rs"]
mod replay;

#[test]
fn picker_request() {
    replay::replay("picker_request", entries::picker_request);
}

#[test]
fn vllm_metrics() {
    replay::replay("vllm_metrics", entries::vllm_metrics);
}
