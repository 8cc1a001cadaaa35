//! `guardrails.prompt`: messages the gateway adds to every prompt of a route, so central
//! prompt policy lives in one place. Applied in the caller's dialect, after the guards (the
//! gateway's own text is not scanned):
//!
//! - OpenAI Chat: messages inserted before and after `messages`;
//! - Anthropic Messages: `system` texts joined into the `system` field (a string or text
//!   blocks), other roles inserted into `messages`;
//! - OpenAI Responses: `system` texts joined into `instructions`, others into `input` (a
//!   string input becomes one user message first).
//!
//! Bodies without a prompt (embeddings, token counts, model lists) are left alone.

use llm::Format;
use serde_json::{json, Value};

/// Adds the policy's messages to `v`; whether it changed.
pub fn enrich(v: &mut Value, format: Format, p: &config::PromptPolicy) -> bool {
    if p.prepend.is_empty() && p.append.is_empty() {
        return false;
    }
    match format {
        Format::OpenAiChat => {
            let Some(messages) = v.get_mut("messages").and_then(Value::as_array_mut) else {
                return false;
            };
            insert(
                messages,
                p,
                |m| json!({"role": m.role, "content": m.content}),
            );
            true
        }
        Format::AnthropicMessages => {
            if !v.get("messages").is_some_and(Value::is_array) {
                return false;
            }
            join_system(v, "system", p, true);
            let others = without_system(p);
            if let Some(messages) = v.get_mut("messages").and_then(Value::as_array_mut) {
                insert(
                    messages,
                    &others,
                    |m| json!({"role": m.role, "content": m.content}),
                );
            }
            true
        }
        Format::OpenAiResponses => {
            let Some(input) = v.get_mut("input") else {
                return false;
            };
            if let Value::String(s) = input {
                *input = json!([{"role": "user", "content": s.clone()}]);
            }
            let others = without_system(p);
            if let Some(items) = input.as_array_mut() {
                insert(
                    items,
                    &others,
                    |m| json!({"role": m.role, "content": m.content}),
                );
            }
            join_system(v, "instructions", p, false);
            true
        }
        _ => false,
    }
}

fn insert(
    list: &mut Vec<Value>,
    p: &config::PromptPolicy,
    make: impl Fn(&config::PromptMessage) -> Value,
) {
    let before: Vec<Value> = p.prepend.iter().map(&make).collect();
    list.splice(0..0, before);
    list.extend(p.append.iter().map(&make));
}

fn without_system(p: &config::PromptPolicy) -> config::PromptPolicy {
    let keep = |ms: &[config::PromptMessage]| {
        ms.iter()
            .filter(|m| m.role != "system")
            .cloned()
            .collect::<Vec<_>>()
    };
    config::PromptPolicy {
        prepend: keep(&p.prepend),
        append: keep(&p.append),
    }
}

/// Joins the policy's `system` texts around the body's own in `field` (a string, or with
/// `blocks`, Anthropic's text blocks).
fn join_system(v: &mut Value, field: &str, p: &config::PromptPolicy, blocks: bool) {
    let texts = |ms: &[config::PromptMessage]| {
        ms.iter()
            .filter(|m| m.role == "system")
            .map(|m| m.content.clone())
            .collect::<Vec<_>>()
    };
    let (before, after) = (texts(&p.prepend), texts(&p.append));
    if before.is_empty() && after.is_empty() {
        return;
    }
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    match obj.get_mut(field) {
        Some(Value::Array(items)) if blocks => {
            let block = |t: &String| json!({"type": "text", "text": t});
            let head: Vec<Value> = before.iter().map(block).collect();
            items.splice(0..0, head);
            items.extend(after.iter().map(block));
        }
        Some(Value::String(s)) => {
            let mut parts = before;
            parts.push(std::mem::take(s));
            parts.extend(after);
            *s = parts.join("\n\n");
        }
        _ => {
            let mut parts = before;
            parts.extend(after);
            obj.insert(field.to_string(), Value::String(parts.join("\n\n")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> config::PromptPolicy {
        let m = |role: &str, content: &str| config::PromptMessage {
            role: role.into(),
            content: content.into(),
        };
        config::PromptPolicy {
            prepend: vec![m("system", "Company policy: be polite.")],
            append: vec![m("user", "Answer in English.")],
        }
    }

    #[test]
    fn each_dialect_gets_the_policy_where_it_belongs() {
        let mut chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        assert!(enrich(&mut chat, Format::OpenAiChat, &policy()));
        let roles: Vec<&str> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "user"]);

        let mut anthropic = json!({"model": "m", "system": "Be brief.", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]});
        assert!(enrich(&mut anthropic, Format::AnthropicMessages, &policy()));
        assert_eq!(
            anthropic["system"],
            "Company policy: be polite.\n\nBe brief."
        );
        assert_eq!(anthropic["messages"][1]["content"], "Answer in English.");
        let mut blocks = json!({"system": [{"type": "text", "text": "Be brief."}], "messages": []});
        enrich(&mut blocks, Format::AnthropicMessages, &policy());
        assert_eq!(blocks["system"][0]["text"], "Company policy: be polite.");

        let mut responses = json!({"model": "m", "input": "hi"});
        assert!(enrich(&mut responses, Format::OpenAiResponses, &policy()));
        assert_eq!(responses["instructions"], "Company policy: be polite.");
        assert_eq!(responses["input"][0]["content"], "hi");
        assert_eq!(responses["input"][1]["content"], "Answer in English.");

        let mut embeddings = json!({"model": "e", "input": ["x"]});
        assert!(!enrich(&mut embeddings, Format::OpenAiChat, &policy()));
    }
}
