//! Building CEL values from the gateway's data, and turning results into JSON for logs and
//! span attributes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use ::cel::objects::{Key, Map, Opaque, OpaqueEq};
use ::cel::Value;
use http::HeaderMap;

/// Header values that carry credentials; shown as `<redacted>` to expressions.
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-amz-security-token",
];

pub(crate) fn empty_map() -> Value {
    static EMPTY: OnceLock<Value> = OnceLock::new();
    EMPTY
        .get_or_init(|| Value::Map(Map::from(HashMap::<Key, Value>::new())))
        .clone()
}

/// A map with string keys, built field by field.
#[derive(Default)]
pub struct MapBuilder(HashMap<Key, Value>);

impl MapBuilder {
    pub fn new() -> Self {
        MapBuilder(HashMap::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        MapBuilder(HashMap::with_capacity(n))
    }

    pub fn insert(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.0
            .insert(Key::String(Arc::new(key.to_string())), value.into());
        self
    }

    /// Inserts only when there is a value (an absent field stays absent, for `has()`).
    pub fn insert_opt(&mut self, key: &str, value: Option<impl Into<Value>>) -> &mut Self {
        if let Some(v) = value {
            self.insert(key, v);
        }
        self
    }

    pub fn build(self) -> Value {
        Value::Map(Map::from(self.0))
    }
}

/// Headers as a map of lower-case name -> value (repeated headers joined with ", ", as HTTP
/// allows), credentials redacted, non-UTF-8 values lossily decoded.
pub fn headers_value(headers: &HeaderMap) -> Value {
    let mut map: HashMap<Key, Value> = HashMap::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let key = name.as_str();
        let value = if SENSITIVE_HEADERS.contains(&key) {
            "<redacted>".to_string()
        } else {
            let mut joined = String::new();
            for (i, v) in headers.get_all(name).iter().enumerate() {
                if i > 0 {
                    joined.push_str(", ");
                }
                joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
            joined
        };
        map.insert(Key::String(Arc::new(key.to_string())), Value::from(value));
    }
    Value::Map(Map::from(map))
}

/// JSON -> CEL: numbers that fit `int` are ints, other whole numbers `uint`, the rest
/// `double`; objects are string-keyed maps.
pub fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_to_value).collect()))
        }
        serde_json::Value::Object(obj) => {
            let map: HashMap<Key, Value> = obj
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_value(v)))
                .collect();
            Value::Map(Map::from(map))
        }
    }
}

/// CEL -> JSON, for log lines and span attributes. Map keys become strings; bytes that are
/// UTF-8 become strings, others base64; map entries are sorted by key so output is stable.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.to_string()),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => J::String(s.to_string()),
            Err(_) => J::String(base64(b)),
        },
        Value::List(items) => J::Array(items.iter().map(value_to_json).collect()),
        Value::Map(m) => {
            let mut entries: Vec<(String, J)> = m
                .map
                .iter()
                .map(|(k, v)| (key_string(k), value_to_json(v)))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            J::Object(entries.into_iter().collect())
        }
        Value::Opaque(o) => match o.downcast_ref::<Flattened>() {
            Some(f) => J::Object(f.0.iter().cloned().collect()),
            None => o
                .json()
                .unwrap_or_else(|| J::String(o.runtime_type_name().to_string())),
        },
        other => J::String(format!("{other:?}")),
    }
}

pub(crate) fn key_string(k: &Key) -> String {
    match k {
        Key::String(s) => s.to_string(),
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The result of `flatten` / `flattenRecursive`: dotted keys and leaf values. A log or span
/// field whose value is one becomes one field per key (`name.key`).
#[derive(Debug, Clone)]
pub struct Flattened(pub Vec<(String, serde_json::Value)>);

impl Opaque for Flattened {
    fn runtime_type_name(&self) -> &str {
        "switchyard.Flattened"
    }

    fn json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::Object(self.0.iter().cloned().collect()))
    }
}

impl OpaqueEq for Flattened {
    fn opaque_eq(&self, other: &dyn Opaque) -> bool {
        other
            .downcast_ref::<Flattened>()
            .is_some_and(|o| o.0 == self.0)
    }
}

/// A log or span field's value: a string as the expression gave it (written without a copy
/// through JSON), or JSON for everything else (numbers and bools cost no allocation there).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Str(Arc<String>),
    Json(serde_json::Value),
}

impl FieldValue {
    pub fn is_null(&self) -> bool {
        matches!(self, FieldValue::Json(serde_json::Value::Null))
    }

    /// As JSON (for the tests that compare fields with JSON).
    #[cfg(test)]
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Str(s) => serde_json::Value::String(s.to_string()),
            FieldValue::Json(j) => j.clone(),
        }
    }
}

/// Appends the field `name` = `value` to `out`: one field per key of a flattened value
/// (`name.key`), else the value under `name` itself (borrowed: a plain field costs no name
/// allocation at every request).
pub fn expand_field<'n>(
    name: &'n str,
    value: Value,
    out: &mut impl Extend<(std::borrow::Cow<'n, str>, FieldValue)>,
) {
    let value = match value {
        Value::Opaque(o) => match o.downcast_ref::<Flattened>() {
            Some(f) => {
                out.extend(
                    f.0.iter()
                        .map(|(k, v)| (format!("{name}.{k}").into(), FieldValue::Json(v.clone()))),
                );
                return;
            }
            None => FieldValue::Json(value_to_json(&Value::Opaque(o))),
        },
        Value::String(s) => FieldValue::Str(s),
        other => FieldValue::Json(value_to_json(&other)),
    };
    out.extend([(name.into(), value)]);
}
