#![no_main]

#[allow(dead_code)]
#[path = "../entries/llm.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::response_translate(data));
