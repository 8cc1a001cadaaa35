#![no_main]

#[allow(dead_code)]
#[path = "../entries/cel.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::cel(data));
