//! `requestHeaderModifier` (backend phase: the upstream request) and
//! `responseHeaderModifier` (response phase): add, then set, then remove.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::PolicyError;

#[derive(Debug, Default)]
pub struct HeaderModifier {
    add: Vec<(HeaderName, HeaderValue)>,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderModifier {
    pub(crate) fn compile(m: &config::HeaderModifier) -> Result<Self, PolicyError> {
        fn pairs(
            map: &std::collections::BTreeMap<config::HeaderName, config::HeaderValue>,
        ) -> Result<Vec<(HeaderName, HeaderValue)>, PolicyError> {
            map.iter()
                .map(|(k, v)| {
                    let name = HeaderName::from_bytes(k.as_str().as_bytes()).map_err(|_| {
                        PolicyError::new(format!("invalid header name {:?}", k.as_str()))
                    })?;
                    let mut value = HeaderValue::from_str(&v.0).map_err(|_| {
                        PolicyError::new(format!("invalid value for header {:?}", k.as_str()))
                    })?;
                    value.set_sensitive(k.is_sensitive());
                    Ok((name, value))
                })
                .collect()
        }
        Ok(HeaderModifier {
            add: pairs(&m.add)?,
            set: pairs(&m.set)?,
            remove: m
                .remove
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_str().as_bytes()).ok())
                .collect(),
        })
    }

    /// `add`, then `set`, then `remove`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (k, v) in &self.add {
            headers.append(k.clone(), v.clone());
        }
        for (k, v) in &self.set {
            headers.insert(k.clone(), v.clone());
        }
        for k in &self.remove {
            headers.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_modifier_order_add_set_remove() {
        let cfg: config::HeaderModifier = serde_json::from_str(
            r#"{"add": {"x-a": "2", "x-gone": "1"}, "set": {"x-b": "new"}, "remove": ["x-gone"]}"#,
        )
        .unwrap();
        let m = HeaderModifier::compile(&cfg).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.append("x-b", HeaderValue::from_static("old1"));
        h.append("x-b", HeaderValue::from_static("old2"));
        m.apply(&mut h);
        let a: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        let b: Vec<_> = h.get_all("x-b").iter().collect();
        assert_eq!(b, ["new"]);
        assert!(!h.contains_key("x-gone"));
    }
}
