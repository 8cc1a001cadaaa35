//! Agent cards, rewritten so that every interface a client will call is the gateway's:
//!
//! - v1.0: `supportedInterfaces[].url`, per `protocolBinding`;
//! - v0.3: `url` (its binding is `preferredTransport`, JSONRPC when absent) and
//!   `additionalInterfaces[].url` (binding `transport`). The official SDK serves both sets in
//!   one card, so both are handled in every card.
//!
//! An interface of a binding the route does not proxy is dropped: left in, it would send the
//! client around the gateway. Other URLs in a card (documentation, icon, provider, OAuth
//! endpoints) are not the agent's endpoints and stay.
//!
//! A card whose content changed no longer matches its `signatures` (JWS over the RFC 8785
//! canonical card): they are removed, never forwarded stale, and the outcome says so for the
//! caller's log line. Re-signing with a gateway key is the alternative the issue asks for
//! (not here yet).

use serde_json::{Map, Value};

use crate::classify::{Binding, BindingSet};

/// How an agent's paths appear to clients, from the backend's `urlRewrite`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMap {
    /// No path rewrite: the client calls the agent's own path.
    Same,
    /// `urlRewrite.path.prefix`: the route's matched prefix `client` is sent as `upstream`,
    /// so an agent path `upstream/rest` is reached at `client/rest`.
    Prefix { upstream: String, client: String },
    /// `urlRewrite.path.full`: every request goes to one agent path, reached at `client`.
    Fixed { client: String },
}

impl PathMap {
    /// The path a client uses for the agent's `path`.
    pub fn client_path(&self, path: &str) -> String {
        match self {
            PathMap::Same => path.to_string(),
            PathMap::Fixed { client } => client.clone(),
            PathMap::Prefix { upstream, client } => {
                let base = upstream.trim_end_matches('/');
                let rest = match path.strip_prefix(base) {
                    Some(r) if r.is_empty() || r.starts_with('/') || base.is_empty() => r,
                    // Outside the rewritten prefix: the route cannot reach it by prefix, so
                    // keep it under the client prefix as it is.
                    _ => path,
                };
                // The agent's root is the route's prefix itself (clients append paths to it).
                let rest = if rest == "/" { "" } else { rest };
                let client = client.trim_end_matches('/');
                let mut out = String::with_capacity(client.len() + rest.len() + 1);
                out.push_str(client);
                if !rest.is_empty() && !rest.starts_with('/') {
                    out.push('/');
                }
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                }
                out
            }
        }
    }
}

/// Where the card's interfaces should point.
#[derive(Clone, Debug)]
pub struct CardRewrite<'a> {
    /// `scheme://authority` the client reached the gateway at.
    pub origin: &'a str,
    pub paths: &'a PathMap,
    /// The bindings this route proxies; interfaces of others are dropped.
    pub bindings: BindingSet,
}

/// What a rewrite did (for the log line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CardRewriteOutcome {
    /// Interface URLs now pointing at the gateway.
    pub rewritten: u32,
    /// `binding url` of each interface dropped.
    pub dropped: Vec<String>,
    /// Signatures removed because the content they covered changed.
    pub signatures_removed: usize,
    /// Anything in the card changed.
    pub changed: bool,
}

/// Rewrites `card` in place. Not an object: left alone.
pub fn rewrite_card(card: &mut Value, rw: &CardRewrite<'_>) -> CardRewriteOutcome {
    let mut out = CardRewriteOutcome::default();
    let Some(obj) = card.as_object_mut() else {
        return out;
    };
    if let Some(Value::Array(ifaces)) = obj.get_mut("supportedInterfaces") {
        ifaces.retain_mut(|iface| rewrite_interface(iface, "protocolBinding", rw, &mut out));
    }
    rewrite_v0_3(obj, rw, &mut out);
    if out.changed {
        if let Some(Value::Array(sigs)) = obj.remove("signatures") {
            out.signatures_removed = sigs.len();
        }
    }
    out
}

/// One interface: kept (URL rewritten) or dropped (`false`).
fn rewrite_interface(
    iface: &mut Value,
    binding_key: &str,
    rw: &CardRewrite<'_>,
    out: &mut CardRewriteOutcome,
) -> bool {
    let binding_name = iface
        .get(binding_key)
        .and_then(Value::as_str)
        .unwrap_or("JSONRPC")
        .to_string();
    let url = iface.get("url").and_then(Value::as_str).unwrap_or("");
    let new_url = Binding::parse(&binding_name)
        .filter(|b| rw.bindings.contains(*b))
        .and_then(|b| gateway_url(url, b, rw));
    match new_url {
        Some(new) => {
            if new != url {
                out.changed = true;
                out.rewritten += 1;
                iface["url"] = Value::String(new);
            }
            true
        }
        None => {
            out.changed = true;
            out.dropped.push(format!("{binding_name} {url}"));
            false
        }
    }
}

fn rewrite_v0_3(obj: &mut Map<String, Value>, rw: &CardRewrite<'_>, out: &mut CardRewriteOutcome) {
    let mut additional_kept: Vec<Value> = Vec::new();
    if let Some(Value::Array(ifaces)) = obj.get_mut("additionalInterfaces") {
        ifaces.retain_mut(|iface| rewrite_interface(iface, "transport", rw, out));
        additional_kept.clone_from(ifaces);
    }
    let Some(url) = obj.get("url").and_then(Value::as_str).map(str::to_string) else {
        return;
    };
    let transport = obj
        .get("preferredTransport")
        .and_then(Value::as_str)
        .unwrap_or("JSONRPC")
        .to_string();
    let mut main = serde_json::json!({"url": url, "transport": transport});
    if rewrite_interface(&mut main, "transport", rw, out) {
        obj.insert("url".into(), main["url"].clone());
        return;
    }
    // The preferred binding is not proxied: another proxied interface becomes the main one,
    // else the card has no `url` left that would bypass the gateway.
    match additional_kept.first() {
        Some(first) => {
            obj.insert("url".into(), first["url"].clone());
            obj.insert(
                "preferredTransport".into(),
                first
                    .get("transport")
                    .cloned()
                    .unwrap_or_else(|| "JSONRPC".into()),
            );
        }
        None => {
            obj.remove("url");
            obj.remove("preferredTransport");
        }
    }
}

/// The gateway's URL for an agent URL of `binding`; `None` when the URL cannot be read.
fn gateway_url(url: &str, binding: Binding, rw: &CardRewrite<'_>) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    if binding == Binding::Grpc {
        // gRPC targets are `host:port` (or with a scheme); the service path is fixed, so
        // only the authority changes.
        return Some(match uri.scheme() {
            Some(_) => rw.origin.to_string(),
            None => rw
                .origin
                .split_once("://")
                .map_or(rw.origin, |(_, a)| a)
                .to_string(),
        });
    }
    uri.scheme()?;
    let path = rw.paths.client_path(uri.path());
    let mut new = String::with_capacity(rw.origin.len() + path.len() + 16);
    new.push_str(rw.origin);
    new.push_str(&path);
    if let Some(q) = uri.query() {
        new.push('?');
        new.push_str(q);
    }
    Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HTTP_ONLY: BindingSet = BindingSet {
        json_rpc: true,
        http_json: true,
        grpc: false,
    };

    /// A card as `a2a-sdk` 1.x serves it with v0.3 compatibility on: v1.0 interfaces plus the
    /// v0.3 fields, signed.
    fn sdk_card() -> Value {
        json!({
            "name": "Echo Agent",
            "description": "Echoes what it is told",
            "version": "1.0.0",
            "supportedInterfaces": [
                {"url": "http://127.0.0.1:9999/jsonrpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
                {"url": "http://127.0.0.1:9999/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0", "tenant": "acme"},
                {"url": "127.0.0.1:50051", "protocolBinding": "GRPC", "protocolVersion": "1.0"},
                {"url": "http://127.0.0.1:9999/jsonrpc", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"}
            ],
            "capabilities": {"streaming": true, "pushNotifications": false, "extendedAgentCard": true},
            "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"],
            "skills": [{"id": "echo", "name": "Echo", "description": "echo", "tags": ["echo"]}],
            "documentationUrl": "https://docs.example.com/echo",
            "signatures": [{"protected": "eyJhbGciOiJFUzI1NiJ9", "signature": "c2ln"}],
            "url": "http://127.0.0.1:9999/jsonrpc",
            "preferredTransport": "JSONRPC",
            "protocolVersion": "0.3.0",
            "additionalInterfaces": [
                {"url": "http://127.0.0.1:9999/jsonrpc", "transport": "JSONRPC"},
                {"url": "http://127.0.0.1:9999/rest", "transport": "HTTP+JSON"}
            ]
        })
    }

    #[test]
    fn interfaces_point_at_the_gateway_under_the_route_prefix() {
        let mut card = sdk_card();
        let paths = PathMap::Prefix {
            upstream: "/".into(),
            client: "/agents/echo".into(),
        };
        let out = rewrite_card(
            &mut card,
            &CardRewrite {
                origin: "https://gw.example.com:8443",
                paths: &paths,
                bindings: HTTP_ONLY,
            },
        );
        let ifaces = card["supportedInterfaces"].as_array().unwrap();
        assert_eq!(ifaces.len(), 3, "the gRPC interface is dropped");
        assert_eq!(
            ifaces[0]["url"],
            "https://gw.example.com:8443/agents/echo/jsonrpc"
        );
        assert_eq!(
            ifaces[1]["url"],
            "https://gw.example.com:8443/agents/echo/rest"
        );
        assert_eq!(ifaces[1]["tenant"], "acme", "other members stay");
        assert_eq!(
            card["url"],
            "https://gw.example.com:8443/agents/echo/jsonrpc"
        );
        assert_eq!(
            card["additionalInterfaces"][1]["url"],
            "https://gw.example.com:8443/agents/echo/rest"
        );
        assert_eq!(card["documentationUrl"], "https://docs.example.com/echo");
        assert!(card.get("signatures").is_none());
        assert_eq!(out.signatures_removed, 1);
        assert_eq!(out.dropped, vec!["GRPC 127.0.0.1:50051"]);
        assert_eq!(out.rewritten, 6);
        // No agent address is left anywhere.
        assert!(!card.to_string().contains("127.0.0.1"));
    }

    #[test]
    fn grpc_keeps_its_target_form_when_proxied() {
        let mut card = sdk_card();
        rewrite_card(
            &mut card,
            &CardRewrite {
                origin: "http://gw:8080",
                paths: &PathMap::Same,
                bindings: BindingSet::ALL,
            },
        );
        let ifaces = card["supportedInterfaces"].as_array().unwrap();
        assert_eq!(ifaces[2]["url"], "gw:8080");
        assert_eq!(ifaces[0]["url"], "http://gw:8080/jsonrpc");
    }

    #[test]
    fn a_card_already_pointing_at_the_gateway_keeps_its_signatures() {
        let mut card = json!({
            "name": "x",
            "supportedInterfaces": [{"url": "http://gw:8080/a2a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
            "signatures": [{"protected": "p", "signature": "s"}]
        });
        let out = rewrite_card(
            &mut card,
            &CardRewrite {
                origin: "http://gw:8080",
                paths: &PathMap::Same,
                bindings: HTTP_ONLY,
            },
        );
        assert!(!out.changed);
        assert_eq!(card["signatures"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_v0_3_card_whose_preferred_transport_is_not_proxied() {
        // From the v0.3 specification's sample card: gRPC preferred, JSON-RPC and HTTP+JSON
        // as additional interfaces.
        let mut card = json!({
            "protocolVersion": "0.3.0",
            "name": "GeoSpatial Route Planner Agent",
            "url": "https://georoute-agent.example.com/a2a/v1",
            "preferredTransport": "GRPC",
            "additionalInterfaces": [
                {"url": "https://georoute-agent.example.com/a2a/v1", "transport": "GRPC"},
                {"url": "https://georoute-agent.example.com/a2a/json", "transport": "JSONRPC"},
                {"url": "https://georoute-agent.example.com/a2a/rest", "transport": "HTTP+JSON"}
            ],
            "supportsAuthenticatedExtendedCard": true
        });
        let out = rewrite_card(
            &mut card,
            &CardRewrite {
                origin: "http://127.0.0.1:4000",
                paths: &PathMap::Prefix {
                    upstream: "/a2a".into(),
                    client: "/geo".into(),
                },
                bindings: HTTP_ONLY,
            },
        );
        assert_eq!(card["url"], "http://127.0.0.1:4000/geo/json");
        assert_eq!(card["preferredTransport"], "JSONRPC");
        assert_eq!(card["additionalInterfaces"].as_array().unwrap().len(), 2);
        assert_eq!(
            card["additionalInterfaces"][1]["url"],
            "http://127.0.0.1:4000/geo/rest"
        );
        assert_eq!(
            out.dropped.len(),
            2,
            "the gRPC additional interface and main url"
        );
        // Nothing proxied at all: no url is left to bypass the gateway.
        let mut only_grpc = json!({"url": "https://a/x", "preferredTransport": "GRPC"});
        rewrite_card(
            &mut only_grpc,
            &CardRewrite {
                origin: "http://gw",
                paths: &PathMap::Same,
                bindings: HTTP_ONLY,
            },
        );
        assert!(only_grpc.get("url").is_none());
    }

    #[test]
    fn path_maps() {
        let p = |up: &str, client: &str, path: &str| {
            PathMap::Prefix {
                upstream: up.into(),
                client: client.into(),
            }
            .client_path(path)
        };
        assert_eq!(p("/", "/agents/echo", "/"), "/agents/echo");
        assert_eq!(p("/", "/agents/echo", "/jsonrpc"), "/agents/echo/jsonrpc");
        assert_eq!(p("/a2a", "/geo", "/a2a/json"), "/geo/json");
        assert_eq!(p("/a2a", "/geo", "/a2a"), "/geo");
        assert_eq!(p("/a2a", "/geo", "/a2abc"), "/geo/a2abc");
        assert_eq!(p("/a2a", "", "/a2a/x"), "/x");
        assert_eq!(PathMap::Same.client_path("/x"), "/x");
        assert_eq!(
            PathMap::Fixed {
                client: "/one".into()
            }
            .client_path("/x"),
            "/one"
        );
    }
}
