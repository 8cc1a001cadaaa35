//! What federation does to messages: targets' own requests and resource URIs renamed for
//! the client, capabilities merged, one pagination cursor over many targets.

use crate::jsonrpc::{self, Kind};
use crate::names;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rmcp::model::ServerCapabilities;
use serde_json::Value;
use std::collections::BTreeMap;

/// A message from a target, as the client must see it: the target's own requests get ids
/// that route the client's answer back, resource URIs get the target's prefix.
pub(crate) fn from_upstream(mut m: Value, target: &str, prefixed: bool) -> Value {
    match jsonrpc::kind(&m) {
        Kind::Request => {
            let id = jsonrpc::id(&m);
            m["id"] = jsonrpc::tag_server_id(target, &id);
        }
        Kind::Notification => match jsonrpc::method(&m) {
            "notifications/resources/updated" if prefixed => {
                let p = jsonrpc::params_mut(&mut m);
                if let Some(Value::String(u)) = p.get_mut("uri") {
                    *u = names::prefix_uri(target, u);
                }
            }
            "notifications/cancelled" => {
                let p = jsonrpc::params_mut(&mut m);
                if let Some(rid) = p.get("requestId").cloned() {
                    p.insert("requestId".into(), jsonrpc::tag_server_id(target, &rid));
                }
            }
            _ => {}
        },
        Kind::Response if prefixed => {
            if let Some(Value::Array(contents)) =
                m.get_mut("result").and_then(|r| r.get_mut("contents"))
            {
                for c in contents {
                    names::prefix_item(c, "uri", target);
                }
            }
        }
        _ => {}
    }
    m
}

pub(crate) fn merge_capabilities(into: &mut ServerCapabilities, caps: Option<&Value>) {
    let Some(c) = caps.and_then(|c| serde_json::from_value::<ServerCapabilities>(c.clone()).ok())
    else {
        return;
    };
    fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
        match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(false) || b.unwrap_or(false)),
        }
    }
    if let Some(t) = c.tools {
        let m = into.tools.get_or_insert_with(Default::default);
        m.list_changed = or(m.list_changed, t.list_changed);
    }
    if let Some(p) = c.prompts {
        let m = into.prompts.get_or_insert_with(Default::default);
        m.list_changed = or(m.list_changed, p.list_changed);
    }
    if let Some(r) = c.resources {
        let m = into.resources.get_or_insert_with(Default::default);
        m.list_changed = or(m.list_changed, r.list_changed);
        m.subscribe = or(m.subscribe, r.subscribe);
    }
    if c.logging.is_some() {
        into.logging.get_or_insert_with(Default::default);
    }
    if c.completions.is_some() {
        into.completions.get_or_insert_with(Default::default);
    }
    if let Some(e) = c.experimental {
        into.experimental
            .get_or_insert_with(Default::default)
            .extend(e);
    }
    if let Some(e) = c.extensions {
        into.extensions
            .get_or_insert_with(Default::default)
            .extend(e);
    }
}

pub(crate) fn encode_cursor(pages: &BTreeMap<String, String>) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(pages).unwrap_or_default())
}

pub(crate) fn decode_cursor(c: &str) -> Option<BTreeMap<String, String>> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstream_requests_and_uris_are_rewritten() {
        let req = json!({"jsonrpc":"2.0","id":4,"method":"sampling/createMessage","params":{}});
        let out = from_upstream(req, "everything", true);
        assert_eq!(
            jsonrpc::untag_server_id(&out["id"]),
            Some(("everything", json!(4)))
        );
        let n = json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"test://1"}});
        assert_eq!(
            from_upstream(n.clone(), "a", true)["params"]["uri"],
            "a+test://1"
        );
        assert_eq!(from_upstream(n, "a", false)["params"]["uri"], "test://1");
        let read =
            json!({"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"test://1","text":"x"}]}});
        assert_eq!(
            from_upstream(read, "a", true)["result"]["contents"][0]["uri"],
            "a+test://1"
        );
    }

    #[test]
    fn capabilities_merge_as_a_union() {
        let mut caps = ServerCapabilities::default();
        merge_capabilities(&mut caps, Some(&json!({"tools": {}})));
        merge_capabilities(
            &mut caps,
            Some(
                &json!({"tools": {"listChanged": true}, "resources": {"subscribe": true}, "logging": {}}),
            ),
        );
        let v = serde_json::to_value(&caps).unwrap();
        assert_eq!(v["tools"]["listChanged"], true);
        assert_eq!(v["resources"]["subscribe"], true);
        assert!(v.get("logging").is_some());
        assert!(v.get("prompts").is_none());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), "page-2".to_string());
        assert_eq!(decode_cursor(&encode_cursor(&m)), Some(m));
        assert_eq!(decode_cursor("%%%"), None);
    }
}
