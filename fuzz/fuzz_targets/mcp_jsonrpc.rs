#![no_main]

#[allow(dead_code)]
#[path = "../entries/mcp.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::mcp_jsonrpc(data));
