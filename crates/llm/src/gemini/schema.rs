//! JSON Schema (as OpenAI and Anthropic clients write it) -> the OpenAPI 3.0
//! subset Gemini accepts in `functionDeclarations[].parameters` and
//! `generationConfig.responseSchema`.
//!
//! Reference: Gemini API `Schema` (<https://ai.google.dev/api/caching#Schema>)
//! and Vertex AI `Schema`
//! (<https://cloud.google.com/vertex-ai/docs/reference/rest/v1/Schema>). Both
//! reject unknown keys with 400 ("Invalid JSON payload received. Unknown
//! name ..."), so this is an allowlist: keys outside it (`additionalProperties`,
//! `$schema`, `$id`, `$ref`, `$defs`, `definitions`, `oneOf`, `allOf`, `not`,
//! `default`, `examples`, `const`, `strict`, `patternProperties`,
//! `exclusiveMinimum`, ...) are dropped. Two are rewritten instead:
//! `const: v` -> `enum: [v]`, and a `type` array such as `["string","null"]`
//! -> `type: "string"` plus `nullable: true`.

use serde_json::{Map, Value};

/// Keys of a Gemini `Schema` object kept as they are.
const KEPT_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "propertyOrdering",
];

/// Deeper schemas are cut here (the subtree is dropped), so a hostile schema
/// cannot exhaust the stack.
const MAX_DEPTH: usize = 32;

/// Returns the sanitised schema. Non-object input yields an empty object.
pub(crate) fn sanitize(schema: &Value) -> Value {
    sanitize_at(schema, 0).unwrap_or_else(|| Value::Object(Map::new()))
}

fn sanitize_at(schema: &Value, depth: usize) -> Option<Value> {
    let Value::Object(input) = schema else {
        return None;
    };
    if depth > MAX_DEPTH {
        return None;
    }
    let mut out = Map::new();
    for (key, value) in input {
        match key.as_str() {
            "type" => match value {
                Value::Array(kinds) => {
                    let mut non_null = kinds.iter().filter(|k| k.as_str() != Some("null"));
                    if let Some(first) = non_null.next() {
                        out.insert("type".into(), first.clone());
                    }
                    if kinds.iter().any(|k| k.as_str() == Some("null")) {
                        out.insert("nullable".into(), Value::Bool(true));
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            "const" => {
                out.insert("enum".into(), Value::Array(vec![value.clone()]));
            }
            "properties" => {
                if let Value::Object(props) = value {
                    // Keys here are property names, not schema keywords.
                    let props: Map<String, Value> = props
                        .iter()
                        .filter_map(|(name, sub)| {
                            Some((name.clone(), sanitize_at(sub, depth + 1)?))
                        })
                        .collect();
                    out.insert("properties".into(), Value::Object(props));
                }
            }
            "items" => {
                if let Some(items) = sanitize_at(value, depth + 1) {
                    out.insert("items".into(), items);
                }
            }
            "anyOf" => {
                if let Value::Array(options) = value {
                    let options: Vec<Value> = options
                        .iter()
                        .filter_map(|o| sanitize_at(o, depth + 1))
                        .collect();
                    if !options.is_empty() {
                        out.insert("anyOf".into(), Value::Array(options));
                    }
                }
            }
            "required" => {
                if let Value::Array(names) = value {
                    let names: Vec<Value> =
                        names.iter().filter(|n| n.is_string()).cloned().collect();
                    out.insert("required".into(), Value::Array(names));
                }
            }
            k if KEPT_KEYS.contains(&k) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    // `required` naming a property that is not declared is a 400 on Gemini.
    if let (Some(Value::Array(required)), Some(Value::Object(props))) =
        (out.get("required"), out.get("properties"))
    {
        let kept: Vec<Value> = required
            .iter()
            .filter(|n| n.as_str().is_some_and(|n| props.contains_key(n)))
            .cloned()
            .collect();
        out.insert("required".into(), Value::Array(kept));
    }
    Some(Value::Object(out))
}

/// Whether an object schema declares at least one property. Gemini rejects
/// `parameters` of type OBJECT with empty `properties`, so a function
/// without parameters is sent without `parameters` at all.
pub(crate) fn has_properties(schema: &Value) -> bool {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_unsupported_keys_and_rewrites_nullable_and_const() {
        let input = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "additionalProperties": {"type": ["string", "null"], "default": "x"},
                "unit": {"const": "celsius"},
                "tags": {"type": "array", "items": {"type": "string", "examples": ["a"]}}
            },
            "required": ["unit", "missing", 3]
        });
        assert_eq!(
            sanitize(&input),
            json!({
                "type": "object",
                "properties": {
                    "additionalProperties": {"type": "string", "nullable": true},
                    "unit": {"enum": ["celsius"]},
                    "tags": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["unit"]
            })
        );
    }

    #[test]
    fn deep_and_malformed_schemas_do_not_panic() {
        let deep = (0..200).fold(
            json!({"type": "string"}),
            |s, _| json!({"type": "object", "properties": {"a": s}}),
        );
        let _ = sanitize(&deep);
        assert_eq!(sanitize(&json!(42)), json!({}));
        assert_eq!(sanitize(&json!({"properties": 1, "items": "x"})), json!({}));
    }
}
