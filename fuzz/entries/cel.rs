// Fuzz entry points for crates/cel. Included with `#[path]` by fuzz/fuzz_targets/*.rs and by
// crates/cel/tests/fuzz_replay.rs (where `cel` is the `switchyard_cel` crate).

use cel::{Bindings, Expression, Var};
use serde_json::{json, Value};

fn default_context() -> Value {
    json!({
        "request": {"method": "POST", "path": "/v1/chat/completions", "host": "gw",
            "scheme": "http", "version": "HTTP/1.1",
            "headers": {"content-type": "application/json", "x-team": "a"},
            "body": "{\"model\":\"gpt\"}"},
        "response": {"code": 200, "headers": {}, "body": ""},
        "source": {"address": "127.0.0.1", "port": 5000},
        "backend": {"name": "openai", "type": "ai", "protocol": "http"},
        "llm": {"provider": "openai", "requestModel": "gpt-4o", "inputTokens": 12,
            "outputTokens": 3, "streaming": false,
            "prompt": [{"role": "user", "content": "hi"}], "completion": ["hello"],
            "params": {"temperature": 0.2}},
        "mcp": {"method": "tools/call", "tool": {"name": "echo", "target": "a"},
            "session": {"id": "s1"}},
        "jwt": {"sub": "alice", "groups": ["dev"]}
    })
}

/// `expression` or `expression NUL context-json`: the expression is compiled and, when it
/// compiles, evaluated against the variables of the JSON context (each top-level key named
/// like a CEL variable binds it; a missing one is an empty map), or a realistic request.
pub fn cel(data: &[u8]) {
    let (src, ctx) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(src) = std::str::from_utf8(src) else {
        return;
    };
    // Expressions are config text; longer ones only slow the fuzzer down.
    if src.len() > 4096 {
        return;
    }
    let Ok(expr) = Expression::compile(src) else {
        return;
    };
    let _ = expr.member_path();
    let context = match ctx.map(serde_json::from_slice::<Value>) {
        Some(Ok(v)) => v,
        Some(Err(_)) => return,
        None => default_context(),
    };
    let mut bindings = Bindings::default();
    for v in Var::ALL {
        if let Some(value) = context.get(v.name()) {
            bindings.set(v, cel::json_to_value(value));
        }
    }
    if let Ok(value) = expr.eval(&bindings) {
        let _ = cel::value_to_json(&value);
    }
}
