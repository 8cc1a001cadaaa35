//! `Mcp-Param-{Name}` headers (2026-07-28, custom headers from tool parameters): a tool's
//! `inputSchema` may mark a property with `x-mcp-header: "Name"`; a client calling the tool
//! over streamable HTTP mirrors that argument's value into `Mcp-Param-Name`, so that
//! intermediaries can route on it without reading the body, and a server checks the two agree
//! (400 and -32020 otherwise).
//!
//! The rules kept here: an annotation counts on a property reached through `properties` keys
//! only, of type string, integer, boolean (or number), with a header-token name unique without
//! regard to case; a tool with an invalid annotation has none enforced. A null or absent
//! argument expects no header; a present one needs its header, equal to it after the Base64
//! sentinel (`=?base64?...?=`) is decoded, numbers compared as numbers.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

pub(crate) const PREFIX: &str = "mcp-param-";

/// One annotated property: its header name (after `Mcp-Param-`) and where it sits in the
/// arguments.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Binding {
    pub name: String,
    pub path: Vec<String>,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The bindings a tool's `inputSchema` declares; none when any annotation is invalid.
pub(crate) fn bindings(schema: &Value) -> Vec<Binding> {
    fn walk(schema: &Value, path: &mut Vec<String>, out: &mut Vec<Binding>) -> bool {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return true;
        };
        for (key, prop) in props {
            path.push(key.clone());
            if let Some(h) = prop.get("x-mcp-header") {
                let typed = matches!(
                    prop.get("type").and_then(Value::as_str),
                    Some("string" | "integer" | "boolean" | "number")
                );
                match h.as_str() {
                    Some(name) if is_token(name) && typed => out.push(Binding {
                        name: name.to_string(),
                        path: path.clone(),
                    }),
                    _ => return false,
                }
            }
            if !walk(prop, path, out) {
                return false;
            }
            path.pop();
        }
        true
    }
    let mut out = Vec::new();
    if !walk(schema, &mut Vec::new(), &mut out) {
        return Vec::new();
    }
    let mut names: Vec<String> = out.iter().map(|b| b.name.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    if names.len() != out.len() {
        return Vec::new();
    }
    out
}

fn argument<'a>(args: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = args;
    for k in path {
        v = v.get(k)?;
    }
    (!v.is_null()).then_some(v)
}

/// A value as its header carries it (the Base64 sentinel form where it is not header-safe).
fn encoded(v: &Value) -> Option<HeaderValue> {
    match v {
        Value::String(s) => crate::upstream::modern::header_value(s),
        Value::Number(_) | Value::Bool(_) => HeaderValue::from_str(&v.to_string()).ok(),
        _ => None,
    }
}

/// The `Mcp-Param-*` headers a call with `args` carries.
pub(crate) fn mirror(bindings: &[Binding], args: &Value) -> Vec<(HeaderName, HeaderValue)> {
    bindings
        .iter()
        .filter_map(|b| {
            let v = encoded(argument(args, &b.path)?)?;
            let name = HeaderName::from_bytes(format!("{PREFIX}{}", b.name).as_bytes()).ok()?;
            Some((name, v))
        })
        .collect()
}

/// Whether a request carries any `Mcp-Param-*` header.
pub(crate) fn any(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| k.as_str().starts_with(PREFIX))
}

/// Checks a call's `Mcp-Param-*` headers against its arguments.
pub(crate) fn check(headers: &HeaderMap, bindings: &[Binding], args: &Value) -> Result<(), String> {
    for b in bindings {
        let Some(v) = argument(args, &b.path) else {
            continue;
        };
        let shown = format!("Mcp-Param-{}", b.name);
        let mut values = headers
            .get_all(format!("{PREFIX}{}", b.name).as_str())
            .iter();
        let Some(h) = values.next() else {
            return Err(format!("required {shown} header is missing"));
        };
        if values.next().is_some() {
            return Err(format!("{shown} header given more than once"));
        }
        let h = h
            .to_str()
            .map_err(|_| format!("{shown} header is not text"))?;
        let h = match h
            .strip_prefix("=?base64?")
            .and_then(|r| r.strip_suffix("?="))
        {
            Some(b64) => STANDARD
                .decode(b64)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| format!("{shown} header is not valid Base64 UTF-8"))?,
            None => h.to_string(),
        };
        let same = match v {
            Value::String(s) => *s == h,
            Value::Bool(x) => h == x.to_string(),
            Value::Number(n) => h
                .parse::<f64>()
                .ok()
                .zip(n.as_f64())
                .is_some_and(|(a, b)| a == b),
            _ => true,
        };
        if !same {
            return Err(format!(
                "Header mismatch: {shown} header value '{h}' does not match body value '{}'",
                match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn annotations_are_read_from_properties_only() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "opts": {"type": "object", "properties": {"n": {"type": "integer", "x-mcp-header": "N"}}},
            "plain": {"type": "string"},
        }});
        let b = bindings(&schema);
        assert_eq!(b.len(), 2);
        assert!(b.contains(&Binding {
            name: "N".into(),
            path: vec!["opts".into(), "n".into()]
        }));
        let bad_type = json!({"properties": {"o": {"type": "object", "x-mcp-header": "O"}, "r": {"type": "string", "x-mcp-header": "R"}}});
        assert!(
            bindings(&bad_type).is_empty(),
            "an invalid one voids them all"
        );
        let dup = json!({"properties": {"a": {"type": "string", "x-mcp-header": "X"}, "b": {"type": "string", "x-mcp-header": "x"}}});
        assert!(bindings(&dup).is_empty());
        let bad_name = json!({"properties": {"a": {"type": "string", "x-mcp-header": "a b"}}});
        assert!(bindings(&bad_name).is_empty());
    }

    #[test]
    fn headers_are_mirrored_and_checked() {
        let schema = json!({"properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "n": {"type": "integer", "x-mcp-header": "N"},
            "on": {"type": "boolean", "x-mcp-header": "On"},
        }});
        let b = bindings(&schema);
        let args = json!({"region": "zürich", "n": 42, "on": true});
        let mirrored = mirror(&b, &args);
        let mut h = HeaderMap::new();
        for (k, v) in mirrored {
            h.insert(k, v);
        }
        assert_eq!(h.get("mcp-param-n").unwrap(), "42");
        assert_eq!(h.get("mcp-param-on").unwrap(), "true");
        assert!(h
            .get("mcp-param-region")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("=?base64?"));
        assert_eq!(check(&h, &b, &args), Ok(()));
        // Numbers compare as numbers; absent and null arguments expect nothing.
        let h2 = headers(&[("mcp-param-n", "42.0")]);
        assert_eq!(check(&h2, &b, &json!({"n": 42, "region": null})), Ok(()));
        assert!(check(&h2, &b, &json!({"n": 43})).is_err());
        assert!(check(&HeaderMap::new(), &b, &json!({"on": false}))
            .unwrap_err()
            .contains("missing"));
        let wrong = headers(&[("mcp-param-region", "eu")]);
        assert!(check(&wrong, &b, &json!({"region": "us"}))
            .unwrap_err()
            .contains("does not match"));
        let broken = headers(&[("mcp-param-region", "=?base64?%%?=")]);
        assert!(check(&broken, &b, &json!({"region": "us"})).is_err());
        assert!(any(&wrong) && !any(&HeaderMap::new()));
    }
}
