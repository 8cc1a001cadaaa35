//! `POST /v1/moderations`.
//!
//! Per the OpenAI API reference, "Moderations" (create, the moderation object;
//! <https://platform.openai.com/docs/api-reference/moderations>): `input` is a string or an
//! array of strings (multimodal inputs are objects, not simulated here); `model` defaults to
//! `omni-moderation-latest`. The answer is `{id: "modr-...", model, results: [...]}`, one result
//! per input: `flagged`, and for each of the 13 categories a boolean in `categories`, a score
//! in `category_scores` and the input types it applies to in `category_applied_input_types`.
//!
//! The scores are deterministic: a category scores 0.93 when the text contains one of its
//! trigger words (below), else 0.0004; a category is flagged at 0.5.

use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::{invalid_param, State};
use crate::body;
use crate::{Fault, SimBody};

/// The categories, in the API's order, with the words that trigger each in the simulator.
const CATEGORIES: &[(&str, &[&str])] = &[
    ("harassment", &["idiot", "loser"]),
    ("harassment/threatening", &["i will hurt you"]),
    ("hate", &["hateful slur"]),
    ("hate/threatening", &[]),
    ("illicit", &["make a bomb", "launder money"]),
    ("illicit/violent", &["make a bomb"]),
    ("self-harm", &["hurt myself"]),
    ("self-harm/intent", &["hurt myself"]),
    ("self-harm/instructions", &[]),
    ("sexual", &["explicit sexual"]),
    ("sexual/minors", &[]),
    ("violence", &["kill", "murder", "make a bomb"]),
    ("violence/graphic", &["gore"]),
];

pub(crate) fn create(_state: &State, req: &Value, fault: Option<Fault>) -> Response<SimBody> {
    let inputs: Vec<&str> = match &req["input"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect()
        }
        _ => {
            return invalid_param(
                "Invalid 'input': expected a string or an array of strings.",
                "input",
                Some("invalid_type"),
            )
        }
    };
    let model = req["model"]
        .as_str()
        .unwrap_or("omni-moderation-latest")
        .to_string();
    let results: Vec<Value> = inputs.iter().map(|t| result(t)).collect();
    let id = format!(
        "modr-{:016x}",
        crate::stable_hash(inputs.join("\u{0}").as_bytes())
    );
    body::json(
        StatusCode::OK,
        &json!({"id": id, "model": model, "results": results}),
        fault,
    )
}

fn result(text: &str) -> Value {
    let lower = text.to_lowercase();
    let (mut categories, mut scores, mut applied) = (Map::new(), Map::new(), Map::new());
    let mut flagged = false;
    for (name, triggers) in CATEGORIES {
        let hit = triggers.iter().any(|w| lower.contains(w));
        let score = if hit { 0.93 } else { 0.0004 };
        flagged |= hit;
        categories.insert(name.to_string(), Value::Bool(hit));
        scores.insert(name.to_string(), json!(score));
        applied.insert(name.to_string(), json!(["text"]));
    }
    json!({
        "flagged": flagged,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_per_input_with_every_category() {
        let r = result("I will kill the process");
        assert_eq!(r["flagged"], true);
        assert_eq!(r["categories"]["violence"], true);
        assert_eq!(r["category_scores"].as_object().unwrap().len(), 13);
        assert_eq!(result("hello")["flagged"], false);
    }
}
