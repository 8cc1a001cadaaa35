//! How federated names are made unique and routed back: tools and prompts become
//! `<target>_<name>`, resource URIs `<target>+<uri>` (still a valid URI: `+` is allowed in a
//! scheme). Target names are letters, digits, `-` and `.`, so the first `_` or `+` ends them.

use serde_json::Value;

pub fn prefix_name(target: &str, name: &str) -> String {
    format!("{target}_{name}")
}

pub fn split_name(name: &str) -> Option<(&str, &str)> {
    name.split_once('_')
        .filter(|(t, n)| !t.is_empty() && !n.is_empty())
}

pub fn prefix_uri(target: &str, uri: &str) -> String {
    format!("{target}+{uri}")
}

pub fn split_uri(uri: &str) -> Option<(&str, &str)> {
    uri.split_once('+')
        .filter(|(t, u)| !t.is_empty() && !u.is_empty())
}

/// The list a `*/list` method returns, and the field of each item that names it.
pub fn list_key(method: &str) -> Option<(&'static str, &'static str)> {
    match method {
        "tools/list" => Some(("tools", "name")),
        "prompts/list" => Some(("prompts", "name")),
        "resources/list" => Some(("resources", "uri")),
        "resources/templates/list" => Some(("resourceTemplates", "uriTemplate")),
        _ => None,
    }
}

/// Rewrites the naming field of a listed item for the federation.
pub fn prefix_item(item: &mut Value, field: &str, target: &str) {
    if let Some(Value::String(s)) = item.get_mut(field) {
        *s = if field == "name" {
            prefix_name(target, s)
        } else {
            prefix_uri(target, s)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = prefix_name("everything", "get_tiny_image");
        assert_eq!(p, "everything_get_tiny_image");
        assert_eq!(split_name(&p), Some(("everything", "get_tiny_image")));
        assert_eq!(split_name("noprefix"), None);
        assert_eq!(split_name("_x"), None);
        let u = prefix_uri("docs", "demo://resource/static/document/a+b.md");
        assert_eq!(
            split_uri(&u),
            Some(("docs", "demo://resource/static/document/a+b.md"))
        );
        let mut item = serde_json::json!({"uri": "file:///a", "name": "a"});
        prefix_item(&mut item, "uri", "fs");
        assert_eq!(item["uri"], "fs+file:///a");
        assert_eq!(item["name"], "a", "only the routing field changes");
    }
}
