//! Helpers shared by the translation tests.
#![allow(dead_code)]

use llm::{prepare_request, Format, LlmError, PreparedRequest, RequestOptions};
use serde_json::{Map, Value};

/// A golden fixture from `tests/fixtures/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// `prepare_request` with no gateway options (no model override, aliases, defaults or
/// overrides; `max_tokens` 4096 where the provider needs one).
pub fn prepare_plain(
    ingress: Format,
    egress: Format,
    body: &[u8],
) -> Result<PreparedRequest, LlmError> {
    let empty = Map::new();
    let opts = RequestOptions {
        model_override: None,
        model_aliases: &[],
        defaults: &empty,
        overrides: &empty,
        default_max_tokens: 4096,
    };
    prepare_request(ingress, egress, body, &opts)
}
