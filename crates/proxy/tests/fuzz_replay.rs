//! Replays the committed config fuzz corpus (`fuzz/corpus/config`: seeds and every crash the
//! fuzzer found) through the fuzz target's own entry function (config load, validation and
//! `snapshot::compile`), so CI keeps them passing without building the fuzz workspace. See
//! bench/fuzz/README.md.

#[allow(dead_code)]
#[path = "../../../fuzz/entries/config.rs"]
mod entries;
#[path = "../../../fuzz/entries/replay.rs"]
mod replay;

#[test]
fn config() {
    replay::replay("config", entries::config);
}
