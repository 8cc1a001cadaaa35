//! `backends[].a2a`: an A2A agent proxied by the gateway (cards rewritten, calls classified
//! and observed).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::{HostPort, Secret};

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
    /// A gateway key that signs the agent's cards after they are rewritten (v1.0
    /// `signatures`: JWS over the RFC 8785 canonical card). Its public JWK set is served on
    /// the route at `.well-known/switchyard/jwks.json` (under the route's path prefix) and
    /// named by each signature's `jku`. Unset: a rewritten card's signatures are removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_signing: Option<CardSigning>,
    /// The one protocol version the agent speaks (`"1.0"` or `"0.3"`), when it does not serve
    /// both: JSON-RPC calls of the other version (send, stream, get, cancel, resubscribe) are
    /// translated both ways, and the card offers the JSON-RPC interface in both versions.
    /// Unset: calls pass in the version the client speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<A2aVersion>,
    /// The gateway stands in as the push-notification callback: the URL a client registers is
    /// replaced, before the agent sees it, by one at the gateway (a sealed token naming the
    /// client's URL), and each notification the agent posts there is relayed to the client's
    /// URL after the allow-list allows it again. Needs `pushNotificationAllowList`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_relay: Option<PushRelay>,
}

/// `a2a.pushRelay`: where the agent reaches the gateway for the notifications it relays.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PushRelay {
    /// The route as the agent reaches it, e.g. `https://gateway.internal/agents/travel`;
    /// notifications go to `<callbackUrl>/.well-known/switchyard/a2a-push/<token>`.
    pub callback_url: String,
}

/// An A2A protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum A2aVersion {
    #[serde(rename = "0.3")]
    V0_3,
    #[serde(rename = "1.0")]
    V1_0,
}

impl A2aVersion {
    pub fn to_a2a(self) -> a2a::ProtocolVersion {
        match self {
            A2aVersion::V0_3 => a2a::ProtocolVersion::V0_3,
            A2aVersion::V1_0 => a2a::ProtocolVersion::V1_0,
        }
    }
}

/// `a2a.cardSigning`: the key the gateway signs agent cards with.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CardSigning {
    /// PEM private key, usually `{file: card-key.pem}`: PKCS#8 (`BEGIN PRIVATE KEY`) P-256
    /// for ES256, Ed25519 for EdDSA, RSA (PKCS#8 or PKCS#1) for RS256.
    pub key: Secret,
    /// The JWS `kid`, published in the JWK set.
    pub key_id: String,
    /// `ES256` (default), `RS256` or `EdDSA`.
    #[serde(default)]
    pub alg: CardSigningAlg,
}

/// JWS algorithms for agent-card signatures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum CardSigningAlg {
    #[default]
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl CardSigningAlg {
    pub fn to_a2a(self) -> a2a::SigningAlg {
        match self {
            CardSigningAlg::Es256 => a2a::SigningAlg::Es256,
            CardSigningAlg::Rs256 => a2a::SigningAlg::Rs256,
            CardSigningAlg::EdDsa => a2a::SigningAlg::EdDsa,
        }
    }
}

/// `listeners[].a2a`: A2A across the listener's routes.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerA2a {
    /// A path (e.g. `/.well-known/agents.json`) where a `GET` lists the rewritten cards of
    /// every A2A route on this listener that the caller may read: each route's card is
    /// fetched through that route, its policies (authentication, authorization, rate limits)
    /// applied to the caller's request; routes that refuse the caller are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_path: Option<String>,
}

/// `policies.a2a` (route only): A2A across the route's backends.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct A2aPolicy {
    /// Key for the task ids of a route with several `a2a` backends: the backend that owns a
    /// task is sealed into the id the client sees (AES-256-GCM), so `GetTask`, `CancelTask`
    /// and resubscribe from any replica reach that backend. Replicas that share the key share
    /// the tasks; unset, each replica makes a random key at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_key: Option<Secret>,
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

    const P256: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSDcD5W8oTA/xt2bB
6NVAbHZjAN17D3XoPMM7qzyYuKShRANCAAQnn73bKQmiPimg3s5NSep/3GHr5vTK
/nvL8FJ0ydx26cK48JN5i/+K0AcYPimYKn8ReQEC/SSK5meY4L8NE8qU
-----END PRIVATE KEY-----
";

    fn load_in(dir: &Path, text: &str) -> Result<Loaded, ConfigError> {
        load_str(text, &dir.join("gw.yaml"), dir, |_| None)
    }

    #[test]
    fn card_signing_task_key_and_catalog_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("card.pem"), P256).unwrap();
        std::fs::write(dir.path().join("tasks.key"), "shared-task-key\n").unwrap();
        let loaded = load_in(
            dir.path(),
            "binds:\n- port: 80\n  listeners:\n  - a2a:\n      catalogPath: /.well-known/agents.json\n    routes:\n    - policies:\n        a2a:\n          taskKey: {file: tasks.key}\n      backends:\n      - a2a:\n          host: 127.0.0.1:9999\n          cardSigning: {key: {file: card.pem}, keyId: gw-1}\n",
        )
        .unwrap();
        let listener = &loaded.config.binds[0].listeners[0];
        assert_eq!(
            listener.a2a.as_ref().unwrap().catalog_path.as_deref(),
            Some("/.well-known/agents.json")
        );
        let route = &listener.routes[0];
        let key = route.policies.as_ref().unwrap().a2a.as_ref().unwrap();
        assert_eq!(key.task_key.as_ref().unwrap().expose(), "shared-task-key");
        let BackendKind::A2a(a) = &route.backends[0].kind else {
            panic!("not an a2a backend");
        };
        let cs = a.card_signing.as_ref().unwrap();
        assert_eq!(
            (cs.key_id.as_str(), cs.alg),
            ("gw-1", super::CardSigningAlg::Es256)
        );
        assert!(cs.key.expose().contains("BEGIN PRIVATE KEY"));
    }

    #[test]
    fn signing_and_task_key_mistakes_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("card.pem"), P256).unwrap();
        let e = parse("          host: 127.0.0.1:9999\n          cardSigning: {key: {file: /nonexistent/k.pem}, keyId: k}\n").unwrap_err();
        assert!(e.key.ends_with("backends[0].a2a.cardSigning.key"), "{e}");
        assert!(e.message.contains("cannot read"), "{e}");
        assert_eq!(e.line, 8, "{e}");
        // A P-256 key named for RS256.
        let e = load_in(
            dir.path(),
            "binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - a2a:\n          host: 127.0.0.1:9999\n          cardSigning:\n            key: {file: card.pem}\n            keyId: k\n            alg: RS256\n",
        )
        .unwrap_err();
        assert!(e.key.ends_with("a2a.cardSigning.key"), "{e}");
        assert!(e.message.contains("RSA"), "{e}");
        assert_eq!(e.line, 8, "{e}");
        let e = parse("          host: 127.0.0.1:9999\n          cardSigning: {key: x, keyId: k, alg: HS256}\n").unwrap_err();
        assert!(e.message.contains("ES256"), "the choices are listed: {e}");
        let e = parse(
            "          host: 127.0.0.1:9999\n          cardSigning: {key: x, keyId: k, extra: 1}\n",
        )
        .unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{e}");
        // The task key is a route policy.
        let e = load_in(
            dir.path(),
            "binds:\n- port: 80\n  listeners:\n  - routes:\n    - backends:\n      - a2a:\n          host: 127.0.0.1:9999\n        policies:\n          a2a: {taskKey: k}\n",
        )
        .unwrap_err();
        assert!(e.key.ends_with("backends[0].policies.a2a"), "{e}");
        assert!(e.message.contains("route policy"), "{e}");
        let e = load_in(
            dir.path(),
            "binds:\n- port: 80\n  listeners:\n  - a2a: {catalogPath: agents.json}\n    routes:\n    - backends:\n      - a2a:\n          host: 127.0.0.1:9999\n",
        )
        .unwrap_err();
        assert!(e.key.ends_with("listeners[0].a2a.catalogPath"), "{e}");
        assert_eq!(e.line, 4, "{e}");
    }
}
