#![no_main]

#[allow(dead_code)]
#[path = "../entries/picker.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::picker_request(data));
