//! Replays the committed fuzz corpus (`fuzz/corpus/cel`: seeds and every crash the fuzzer
//! found) through the fuzz target's own entry function, so CI keeps them passing without
//! building the fuzz workspace. See bench/fuzz/README.md.

// The entry function names this crate `cel`, as the fuzz workspace does.
extern crate switchyard_cel as cel;

#[allow(dead_code)]
#[path = "../../../fuzz/entries/cel.rs"]
mod entries;
#[path = "../../../fuzz/entries/replay.rs"]
mod replay;

#[test]
fn cel() {
    replay::replay("cel", entries::cel);
}
