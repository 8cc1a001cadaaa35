#![no_main]

#[allow(dead_code)]
#[path = "../entries/config.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::config(data));
