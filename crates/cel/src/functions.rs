//! The gateway's CEL functions, beyond the standard library.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ::cel::common::ast::{operators, CallExpr, Expr, IdedExpr, LiteralValue, SelectExpr};
use ::cel::extractors::Arguments;
use ::cel::objects::Key;
use ::cel::parser::{Macro, MacroExprHelper, ParseError};
use ::cel::{Context, ExecutionError, Value};

use crate::values::{json_to_value, key_string, value_to_json, Flattened};

/// Compiled `regexReplace` patterns, kept so a pattern written in the config is compiled
/// once, not per request. Bounded: past this many, the cache starts over.
const MAX_CACHED_REGEXES: usize = 256;

pub(crate) fn register(ctx: &mut Context<'static, 'static>) {
    // The names are not the standard library's, so registration cannot conflict.
    let _ = ctx.add_function("json", json);
    let _ = ctx.add_function("toJson", |v: Value| -> Value {
        Value::from(value_to_json(&v).to_string())
    });
    let _ = ctx.add_function("flatten", |v: Value| flatten(&v, false));
    let _ = ctx.add_function("flattenRecursive", |v: Value| flatten(&v, true));
    let _ = ctx.add_function("coalesce", |Arguments(args): Arguments| -> Value {
        args.iter()
            .find(|v| !matches!(v, Value::Null))
            .cloned()
            .unwrap_or(Value::Null)
    });
    let _ = ctx.add_function("regexReplace", regex_replace);
    let _ = ctx.add_function("uuid", || -> Value { Value::from(uuid_v4()) });
}

/// `json(string_or_bytes)`: parses JSON text into a value.
fn json(v: Value) -> Result<Value, ExecutionError> {
    let parsed: Result<serde_json::Value, _> = match &v {
        Value::String(s) => serde_json::from_str(s),
        Value::Bytes(b) => serde_json::from_slice(b),
        other => {
            return Err(ExecutionError::function_error(
                "json",
                format!("expected a string or bytes, got {:?}", other.type_of()),
            ))
        }
    };
    parsed
        .map(|j| json_to_value(&j))
        .map_err(|e| ExecutionError::function_error("json", e))
}

/// `flatten(x)` expands one level of maps and lists into dotted keys; `flattenRecursive(x)`
/// every level. `{"a": {"b": 1}, "c": [2]}` -> `a.b: 1, c.0: 2`.
fn flatten(v: &Value, recursive: bool) -> Value {
    let mut out = Vec::new();
    match v {
        Value::Map(_) | Value::List(_) => walk("", v, recursive, true, &mut out),
        other => out.push((String::new(), value_to_json(other))),
    }
    Value::Opaque(Arc::new(Flattened(out)))
}

fn walk(
    prefix: &str,
    v: &Value,
    recursive: bool,
    top: bool,
    out: &mut Vec<(String, serde_json::Value)>,
) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    let descend = top || recursive;
    match v {
        Value::Map(m) if descend => {
            let mut entries: Vec<(&Key, &Value)> = m.map.iter().collect();
            entries.sort_by_key(|(k, _)| key_string(k));
            for (k, v) in entries {
                walk(&join(&key_string(k)), v, recursive, false, out);
            }
        }
        Value::List(items) if descend => {
            for (i, v) in items.iter().enumerate() {
                walk(&join(&i.to_string()), v, recursive, false, out);
            }
        }
        Value::Opaque(o) if descend && o.downcast_ref::<Flattened>().is_some() => {
            if let Some(f) = o.downcast_ref::<Flattened>() {
                for (k, v) in &f.0 {
                    out.push((join(k), v.clone()));
                }
            }
        }
        leaf => out.push((prefix.to_string(), value_to_json(leaf))),
    }
}

/// `regexReplace(text, pattern, replacement)`: every match replaced; `$1` / `${name}` refer
/// to groups.
fn regex_replace(
    text: Arc<String>,
    pattern: Arc<String>,
    replacement: Arc<String>,
) -> Result<Value, ExecutionError> {
    static CACHE: OnceLock<Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let re = {
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(pattern.as_str()) {
            Some(re) => re.clone(),
            None => {
                let re = regex::Regex::new(&pattern)
                    .map_err(|e| ExecutionError::function_error("regexReplace", e))?;
                if cache.len() >= MAX_CACHED_REGEXES {
                    cache.clear();
                }
                cache.insert(pattern.to_string(), re.clone());
                re
            }
        }
    };
    Ok(Value::from(
        re.replace_all(&text, replacement.as_str()).into_owned(),
    ))
}

/// A random (version 4) UUID in its usual text form.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `default(value, fallback)`: `fallback` when `value` is null or a field on its way is
/// missing. A macro, because a function's arguments are evaluated (and a missing field
/// fails) before it runs: `default(a.b["k"], x)` becomes
/// `has(a.b) && "k" in a.b ? (a.b["k"] == null ? x : a.b["k"]) : x`. An index into a list
/// is guarded the same way, so it must be a map key; other failures still fail.
pub(crate) fn default_macro() -> Macro {
    Macro::global("default", 2, default_expander)
}

fn default_expander(
    helper: &mut MacroExprHelper<'_>,
    _target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Result<Option<IdedExpr>, ParseError> {
    let (Some(fallback), Some(value)) = (args.pop(), args.pop()) else {
        return Ok(None);
    };
    let call = |helper: &mut MacroExprHelper<'_>, name: &str, args: Vec<IdedExpr>| {
        helper.next_expr(Expr::Call(CallExpr {
            func_name: name.to_string(),
            target: None,
            args,
        }))
    };
    // One guard per step of the path: `has(a.b)` for a field, `k in a` for a map index.
    let mut guards = Vec::new();
    let mut cur = &value;
    loop {
        match &cur.expr {
            Expr::Select(sel) => {
                guards.push(helper.next_expr(Expr::Select(SelectExpr {
                    operand: sel.operand.clone(),
                    field: sel.field.clone(),
                    test: true,
                })));
                cur = &sel.operand;
            }
            Expr::Call(c) if c.func_name == operators::INDEX && c.args.len() == 2 => {
                let (operand, key) = (&c.args[0], &c.args[1]);
                guards.push(call(
                    helper,
                    operators::IN,
                    vec![key.clone(), operand.clone()],
                ));
                cur = operand;
            }
            _ => break,
        }
    }
    guards.reverse();
    let null = helper.next_expr(Expr::Literal(LiteralValue::Null));
    let is_null = call(helper, operators::EQUALS, vec![value.clone(), null]);
    let inner = call(
        helper,
        operators::CONDITIONAL,
        vec![is_null, fallback.clone(), value],
    );
    let mut cond: Option<IdedExpr> = None;
    for g in guards {
        cond = Some(match cond {
            None => g,
            Some(c) => call(helper, operators::LOGICAL_AND, vec![c, g]),
        });
    }
    Ok(Some(match cond {
        Some(c) => call(helper, operators::CONDITIONAL, vec![c, inner, fallback]),
        None => inner,
    }))
}
