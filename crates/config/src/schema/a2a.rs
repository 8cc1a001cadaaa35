//! `backends[].a2a`: an A2A agent proxied by the gateway (cards rewritten, calls classified
//! and observed).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::HostPort;

/// An A2A agent at `host:port`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct A2aBackend {
    /// The agent's address, e.g. `127.0.0.1:9999`.
    pub host: HostPort,
    /// The bindings proxied through this route. Interfaces of other bindings are dropped
    /// from the agent's card. Default `[JSONRPC, HTTP+JSON]`; `GRPC` needs an HTTP/2
    /// upstream (`backendTLS` with h2, or `http2`) and a route for `/lf.a2a.v1.A2AService/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindings: Option<Vec<A2aBinding>>,
    /// Hosts push-notification callback URLs may name (`host`, `host:port`, `*.domain`). A
    /// push config for any other host is refused before it reaches the agent (no SSRF through
    /// the gateway). Unset: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_notification_allow_list: Option<Vec<String>>,
}

/// An A2A protocol binding, as agent cards name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum A2aBinding {
    #[serde(rename = "JSONRPC")]
    JsonRpc,
    #[serde(rename = "HTTP+JSON")]
    HttpJson,
    #[serde(rename = "GRPC")]
    Grpc,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{load_str, BackendKind, ConfigError, Loaded};

    fn parse(backend: &str) -> Result<Loaded, ConfigError> {
        let text = format!(
            "binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - a2a:\n{backend}"
        );
        load_str(&text, Path::new("a2a.yaml"), Path::new("."), |_| None)
    }

    #[test]
    fn an_a2a_backend_loads() {
        let loaded = parse(
            "          host: 127.0.0.1:9999\n          bindings: [JSONRPC, HTTP+JSON, GRPC]\n          pushNotificationAllowList: [hooks.example.com, '*.corp.example']\n",
        )
        .unwrap();
        let route = &loaded.config.binds[0].listeners[0].routes[0];
        let BackendKind::A2a(a) = &route.backends[0].kind else {
            panic!("not an a2a backend");
        };
        assert_eq!((a.host.host(), a.host.port()), ("127.0.0.1", 9999));
        assert_eq!(a.bindings.as_ref().unwrap().len(), 3);
        assert_eq!(a.push_notification_allow_list.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn a2a_mistakes_name_file_line_and_key() {
        let e = parse("          host: 127.0.0.1:9999\n          cardPaths: [/x]\n").unwrap_err();
        assert_eq!(e.line, 8, "{e}");
        assert!(e.key.ends_with("backends[0].a2a.cardPaths"), "{e}");
        assert!(e.message.contains("unknown field `cardPaths`"), "{e}");
        let e = parse("          host: 127.0.0.1:9999\n          bindings: [SOAP]\n").unwrap_err();
        assert_eq!(e.line, 8, "{e}");
        assert!(e.message.contains("JSONRPC"), "the choices are listed: {e}");
        let e = parse(
            "          host: 127.0.0.1:9999\n          pushNotificationAllowList: ['hooks.*.com']\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 8, "{e}");
        assert!(
            e.key.ends_with("backends[0].a2a.pushNotificationAllowList"),
            "{e}"
        );
        assert!(e.message.contains("wildcard"), "{e}");
        assert!(e.to_string().starts_with("a2a.yaml:8:"), "{e}");
        let e = parse("          host: nope\n").unwrap_err();
        assert!(e.key.ends_with("a2a.host"), "{e}");
    }
}
