//! `POST /v1/embeddings`.
//!
//! Per the OpenAI API reference, "Embeddings" (create, the embedding object;
//! <https://platform.openai.com/docs/api-reference/embeddings>): `input` is a string, an array
//! of strings, an array of token ids or an array of such arrays; the answer is
//! `{object: "list", data: [{object: "embedding", embedding, index}], model, usage:
//! {prompt_tokens, total_tokens}}`. With `encoding_format: "base64"` each embedding is the
//! base64 of its little-endian f32 values. Vectors are unit length (as OpenAI's are) and derived
//! from a hash of the input, so equal inputs embed equally.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::{invalid_param, missing_param, model_of, State};
use crate::body;
use crate::{Fault, SimBody};

/// The largest `dimensions` a request may ask for.
const MAX_DIMENSIONS: u64 = 4096;

pub(crate) fn create(state: &State, req: &Value, fault: Option<Fault>) -> Response<SimBody> {
    let model = match model_of(state, req) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let inputs = match inputs(&req["input"]) {
        Ok(inputs) => inputs,
        Err(resp) => return resp,
    };
    let dimensions = match &req["dimensions"] {
        Value::Null => state.options.embedding_dimensions.max(1),
        v => match v.as_u64().filter(|d| (1..=MAX_DIMENSIONS).contains(d)) {
            Some(d) => d as usize,
            None => {
                return invalid_param(
                    &format!("Invalid 'dimensions': must be between 1 and {MAX_DIMENSIONS}."),
                    "dimensions",
                    Some("invalid_value"),
                )
            }
        },
    };
    let base64 = match req["encoding_format"].as_str() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return invalid_param(
                &format!(
                    "Invalid value for 'encoding_format': '{other}'. Expected 'float' or 'base64'."
                ),
                "encoding_format",
                Some("invalid_value"),
            )
        }
    };
    let mut prompt_tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            prompt_tokens += input.tokens;
            let vector = embed(&input.text, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(crate::base64(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "embedding": embedding, "index": index})
        })
        .collect();
    let resp = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    });
    body::json(StatusCode::OK, &resp, fault)
}

/// One input to embed: its text (token ids are embedded by their decimal spelling) and token
/// count.
struct Input {
    text: String,
    tokens: u64,
}

fn inputs(input: &Value) -> Result<Vec<Input>, Response<SimBody>> {
    let invalid = || {
        invalid_param(
            "'input' must be a string, an array of strings, an array of tokens or an array of \
             token arrays, and must not be empty.",
            "input",
            Some("invalid_value"),
        )
    };
    let text_input = |s: &str| Input {
        text: s.to_string(),
        tokens: crate::count_tokens(s),
    };
    let token_input = |ids: &[Value]| -> Option<Input> {
        let ids: Option<Vec<u64>> = ids.iter().map(Value::as_u64).collect();
        let ids = ids?;
        let text = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        Some(Input {
            text,
            tokens: ids.len() as u64,
        })
    };
    let items = match input {
        Value::Null => return Err(missing_param("input")),
        Value::String(s) if !s.is_empty() => vec![text_input(s)],
        Value::Array(a) if a.is_empty() => return Err(invalid()),
        Value::Array(a) if a.iter().all(Value::is_u64) => {
            vec![token_input(a).ok_or_else(invalid)?]
        }
        Value::Array(a) => a
            .iter()
            .map(|item| match item {
                Value::String(s) if !s.is_empty() => Some(text_input(s)),
                Value::Array(ids) if !ids.is_empty() => token_input(ids),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(invalid)?,
        _ => return Err(invalid()),
    };
    Ok(items)
}

/// A deterministic unit vector for `text`.
fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(crate::stable_hash(text.as_bytes()));
    let raw: Vec<f32> = (0..dimensions).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return raw;
    }
    raw.iter().map(|x| x / norm).collect()
}
