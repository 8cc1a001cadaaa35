//! Deciding when a simulated model calls tools, and with what arguments. Shared by both
//! simulators so the same prompt triggers the same calls on either wire format.
//!
//! Rules (deterministic, so tests can aim at them):
//! - no tools, or tool choice "none": never call;
//! - a named tool choice calls that tool (if it is defined);
//! - otherwise tools are *mentioned* when the user text contains their name; with "weather" in
//!   the text and nothing mentioned, the first tool whose name contains "weather" (else the
//!   first tool) counts as mentioned; "both" asks for two calls;
//! - choice "required"/"any" with nothing mentioned calls the first tool; "auto" calls only
//!   what was mentioned.

use serde_json::{json, Map, Value};

/// A tool the request defines, whatever the wire format.
pub(crate) struct ToolDef {
    pub name: String,
    /// JSON Schema of the arguments (`parameters` / `input_schema`).
    pub schema: Value,
}

/// The request's tool choice, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ToolChoice {
    Auto,
    None,
    /// OpenAI "required", Anthropic "any".
    Required,
    Named(String),
}

/// One call the simulated model makes.
pub(crate) struct PlannedCall {
    pub name: String,
    /// The arguments object.
    pub arguments: Value,
}

/// Nested schemas deeper than this get `null` instead of recursion.
const MAX_SCHEMA_DEPTH: usize = 16;

/// The calls to make for the latest user text, or none to answer with text.
pub(crate) fn plan_calls(
    tools: &[ToolDef],
    choice: &ToolChoice,
    user_text: &str,
) -> Vec<PlannedCall> {
    if tools.is_empty() || *choice == ToolChoice::None {
        return Vec::new();
    }
    let call = |t: &ToolDef| PlannedCall {
        name: t.name.clone(),
        // Both providers require an arguments *object*, whatever the schema says.
        arguments: match arguments_for(&t.schema, 0, "") {
            Value::Object(args) => Value::Object(args),
            _ => Value::Object(Map::new()),
        },
    };
    if let ToolChoice::Named(name) = choice {
        return tools
            .iter()
            .filter(|t| &t.name == name)
            .take(1)
            .map(call)
            .collect();
    }
    let text = user_text.to_lowercase();
    let mut chosen: Vec<&ToolDef> = tools
        .iter()
        .filter(|t| !t.name.is_empty() && text.contains(&t.name.to_lowercase()))
        .collect();
    if chosen.is_empty() && (text.contains("weather") || *choice == ToolChoice::Required) {
        let weather_tool = tools
            .iter()
            .find(|t| t.name.to_lowercase().contains("weather"));
        chosen.extend(weather_tool.or_else(|| tools.first()));
    }
    let wants_both = text
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| w == "both");
    if wants_both && chosen.len() == 1 {
        if let Some(other) = tools.iter().find(|t| t.name != chosen[0].name) {
            chosen.push(other);
        }
    }
    chosen.into_iter().map(call).collect()
}

/// A value that satisfies `schema` well enough for a test: every property filled in, strings
/// "Paris" for location-like names and "x" otherwise, the first `enum` value when there is one.
pub(crate) fn arguments_for(schema: &Value, depth: usize, name: &str) -> Value {
    if depth > MAX_SCHEMA_DEPTH {
        return Value::Null;
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    let kind = match &schema["type"] {
        Value::String(s) => s.as_str(),
        // `["string", "null"]`: take the first non-null type.
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema["properties"].is_object() => "object",
        _ => "",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = schema["properties"].as_object() {
                for (key, sub) in props {
                    out.insert(key.clone(), arguments_for(sub, depth + 1, key));
                }
            }
            Value::Object(out)
        }
        "string" => {
            let lower = name.to_lowercase();
            let place = ["location", "city", "place", "address", "where"];
            json!(if place.iter().any(|p| lower.contains(p)) {
                "Paris"
            } else {
                "x"
            })
        }
        "integer" => json!(1),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "array" => json!([arguments_for(&schema["items"], depth + 1, name)]),
        _ => Value::Null,
    }
}

/// Text for a reply to tool results: quotes them so a test can see they arrived.
pub(crate) fn reply_to_tool_results(results: &[String]) -> String {
    format!("The tool returned: {}", results.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> ToolDef {
        ToolDef {
            name: name.into(),
            schema: json!({"type": "object", "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"}
            }}),
        }
    }

    #[test]
    fn auto_calls_only_mentioned_tools() {
        let tools = [tool("get_weather"), tool("get_time")];
        assert!(plan_calls(&tools, &ToolChoice::Auto, "hi there").is_empty());
        let calls = plan_calls(&tools, &ToolChoice::Auto, "What's the weather?");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(
            calls[0].arguments,
            json!({"location": "Paris", "unit": "celsius", "days": 1})
        );
        let both = plan_calls(&tools, &ToolChoice::Auto, "use get_time and get_weather");
        assert_eq!(both.len(), 2);
        assert_eq!(
            plan_calls(&tools, &ToolChoice::Auto, "weather for both").len(),
            2
        );
    }

    #[test]
    fn required_named_and_none_choices() {
        let tools = [tool("lookup"), tool("get_time")];
        assert_eq!(
            plan_calls(&tools, &ToolChoice::Required, "hi")[0].name,
            "lookup"
        );
        let named = plan_calls(&tools, &ToolChoice::Named("get_time".into()), "weather");
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].name, "get_time");
        assert!(plan_calls(&tools, &ToolChoice::Named("nope".into()), "hi").is_empty());
        assert!(plan_calls(&tools, &ToolChoice::None, "lookup").is_empty());
    }

    #[test]
    fn hostile_schemas_do_not_panic() {
        let deep = (0..100).fold(
            json!({"type": "string"}),
            |s, _| json!({"type": "object", "properties": {"a": s}}),
        );
        let _ = arguments_for(&deep, 0, "");
        assert_eq!(arguments_for(&json!(42), 0, ""), Value::Null);
        assert_eq!(
            arguments_for(&json!({"type": ["null", "string"]}), 0, "city"),
            json!("Paris")
        );
    }
}
