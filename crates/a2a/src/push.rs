//! Push-notification callback URLs, checked against an allow-list before a config reaches the
//! agent: the agent will call whatever URL a client registers, so an unchecked URL lets any
//! client make the agent (inside the network) send requests to internal addresses (SSRF).
//!
//! Where the URL travels:
//! - v0.3 `message/send`/`message/stream`: `params.configuration.pushNotificationConfig.url`;
//!   `tasks/pushNotificationConfig/set`: `params.pushNotificationConfig.url`; HTTP+JSON
//!   `POST /v1/tasks/{id}/pushNotificationConfigs`: `config.pushNotificationConfig.url`.
//! - v1.0 `SendMessage`/`SendStreamingMessage`: `configuration.taskPushNotificationConfig.url`;
//!   `CreateTaskPushNotificationConfig`: the config itself, `url` at its top.

use serde::Deserialize;

use crate::classify::Operation;

/// Hosts push-notification callbacks may go to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// Lowercase host; for `*.example.com`, `.example.com`.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl AllowList {
    /// Entries: `host`, `host:port`, `*.domain` (any subdomain, not the domain itself),
    /// `[v6]` / `[v6]:port`.
    pub fn new<S: AsRef<str>>(hosts: &[S]) -> Result<AllowList, String> {
        let mut entries = Vec::with_capacity(hosts.len());
        for h in hosts {
            let h = h.as_ref().trim().to_ascii_lowercase();
            let (host, port) =
                split_host_port(&h).ok_or_else(|| format!("{h:?} is not a host or host:port"))?;
            let (host, wildcard) = match host.strip_prefix("*.") {
                Some(rest) if !rest.is_empty() => (format!(".{rest}"), true),
                _ if host.contains('*') => {
                    return Err(format!("{h:?}: only a leading `*.` wildcard is allowed"))
                }
                _ => (host.to_string(), false),
            };
            if host.is_empty() {
                return Err(format!("{h:?} names no host"));
            }
            entries.push(Entry {
                host,
                wildcard,
                port,
            });
        }
        Ok(AllowList { entries })
    }

    /// Whether the gateway may let an agent call `url`; the reason when not.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| format!("push-notification URL {url:?} is not a valid URL"))?;
        let scheme = uri.scheme_str().unwrap_or("");
        if scheme != "https" && scheme != "http" {
            return Err(format!(
                "push-notification URL {url:?} must be http or https"
            ));
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("push-notification URL {url:?} names no host"));
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let allowed = self.entries.iter().any(|e| {
            let host_ok = match e.wildcard {
                true => host.ends_with(&e.host),
                false => host == e.host,
            };
            host_ok && e.port.is_none_or(|p| p == port)
        });
        match allowed {
            true => Ok(()),
            false => Err(format!(
                "push-notification URL host {host:?} is not in this route's allow-list"
            )),
        }
    }
}

fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((s, None)),
    }
}

/// The members that lead to a push config; every other member is skipped unparsed.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Carrier {
    url: Option<String>,
    configuration: Option<Box<Carrier>>,
    push_notification_config: Option<Box<Carrier>>,
    task_push_notification_config: Option<Box<Carrier>>,
    config: Option<Box<Carrier>>,
}

/// The callback URLs a request registers: `json` is the JSON-RPC `params`, or the HTTP+JSON
/// body. `Err` when the JSON cannot be read (the caller refuses: an unread URL is unchecked).
pub fn callback_urls(op: Operation, json: &[u8]) -> Result<Vec<String>, String> {
    if !op.may_carry_push_config() {
        return Ok(Vec::new());
    }
    let top: Carrier = serde_json::from_slice(json)
        .map_err(|e| format!("the push-notification config cannot be read: {e}"))?;
    let mut out = Vec::new();
    // v1.0's CreateTaskPushNotificationConfig is the config itself.
    collect(&top, op == Operation::CreatePushConfig, 0, &mut out);
    Ok(out)
}

fn collect(c: &Carrier, is_config: bool, depth: u8, out: &mut Vec<String>) {
    if depth > 4 {
        return;
    }
    if is_config {
        if let Some(u) = &c.url {
            out.push(u.clone());
        }
    }
    for (inner, config) in [
        (&c.configuration, false),
        (&c.config, true),
        (&c.push_notification_config, true),
        (&c.task_push_notification_config, true),
    ] {
        if let Some(inner) = inner {
            collect(inner, config, depth + 1, out);
        }
    }
}

/// Where, under a route, the gateway takes the notifications it relays
/// (`.../a2a-push/{token}`).
pub const RELAY_PATH: &str = "/.well-known/switchyard/a2a-push/";

/// What is sealed into relay tokens in place of a backend name.
const RELAY_MARK: &str = "\u{1}push";

/// The relay token for notifications to `url` from the agent behind `backend`: sealed, so
/// only the gateway can read (or make) one.
pub fn relay_token(sealer: &crate::TaskSealer, backend: &str, url: &str) -> String {
    sealer.seal(RELAY_MARK, &format!("{backend}\n{url}"))
}

/// The backend and client URL a relay token holds.
pub fn open_relay_token(sealer: &crate::TaskSealer, token: &str) -> Option<(String, String)> {
    let opened = sealer.open(token)?;
    if opened.backend != RELAY_MARK {
        return None;
    }
    let (backend, url) = opened.task_id.split_once('\n')?;
    Some((backend.to_string(), url.to_string()))
}

/// Replaces every callback URL a request registers (where [`callback_urls`] finds them) with
/// `f(url)`. How many were replaced.
pub fn replace_callback_urls(
    op: Operation,
    v: &mut serde_json::Value,
    f: &mut impl FnMut(&str) -> String,
) -> usize {
    if !op.may_carry_push_config() {
        return 0;
    }
    let mut n = 0;
    replace(v, op == Operation::CreatePushConfig, 0, f, &mut n);
    n
}

fn replace(
    v: &mut serde_json::Value,
    is_config: bool,
    depth: u8,
    f: &mut impl FnMut(&str) -> String,
    n: &mut usize,
) {
    if depth > 4 {
        return;
    }
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    if is_config {
        if let Some(serde_json::Value::String(u)) = obj.get_mut("url") {
            *u = f(u);
            *n += 1;
        }
    }
    for (key, config) in [
        ("configuration", false),
        ("config", true),
        ("pushNotificationConfig", true),
        ("taskPushNotificationConfig", true),
    ] {
        if let Some(inner) = obj.get_mut(key) {
            replace(inner, config, depth + 1, f, n);
        }
    }
}

/// Puts the client's URL back wherever an answer shows a relay URL (a push config the agent
/// stored): every `url` member holding [`RELAY_PATH`] and a token that `open` reads.
pub fn restore_callback_urls(
    v: &mut serde_json::Value,
    open: &impl Fn(&str) -> Option<String>,
    depth: u8,
) -> bool {
    if depth > 16 {
        return false;
    }
    let mut changed = false;
    match v {
        serde_json::Value::Array(items) => {
            for i in items {
                changed |= restore_callback_urls(i, open, depth + 1);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match child {
                    serde_json::Value::String(u) if k == "url" => {
                        let token = u.split_once(RELAY_PATH).map(|(_, t)| t);
                        if let Some(client) = token.and_then(open) {
                            *u = client;
                            changed = true;
                        }
                    }
                    _ => changed |= restore_callback_urls(child, open, depth + 1),
                }
            }
        }
        _ => {}
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_replace_the_clients_and_come_back() {
        let sealer = crate::TaskSealer::new(Some("k")).unwrap();
        let mut v10: serde_json::Value = serde_json::from_str(
            r#"{"message":{"parts":[{"url":"https://files.example.com/x.pdf"}]},
                "configuration":{"taskPushNotificationConfig":{"url":"https://hooks.example.com/a","token":"t"}}}"#,
        )
        .unwrap();
        let base = "http://gw:8080/agents/a";
        let mut relay = |u: &str| format!("{base}{RELAY_PATH}{}", relay_token(&sealer, "b1", u));
        assert_eq!(
            replace_callback_urls(Operation::SendMessage, &mut v10, &mut relay),
            1
        );
        let relayed = v10["configuration"]["taskPushNotificationConfig"]["url"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(relayed.starts_with("http://gw:8080/agents/a/.well-known/switchyard/a2a-push/"));
        assert_eq!(
            v10["message"]["parts"][0]["url"],
            "https://files.example.com/x.pdf"
        );
        let token = relayed.rsplit('/').next().unwrap();
        assert_eq!(
            open_relay_token(&sealer, token),
            Some(("b1".into(), "https://hooks.example.com/a".into()))
        );
        assert_eq!(open_relay_token(&sealer, &sealer.seal("b1", "x")), None);
        let mut create: serde_json::Value =
            serde_json::from_str(r#"{"taskId":"t1","url":"https://hooks.example.com/b"}"#).unwrap();
        assert_eq!(
            replace_callback_urls(Operation::CreatePushConfig, &mut create, &mut relay),
            1
        );
        // The agent's answer shows the relay URL; the client sees its own.
        let mut answer = serde_json::json!({"result": {"configs": [{"taskId": "t1", "url": create["url"].clone()}]}});
        let open = |t: &str| open_relay_token(&sealer, t).map(|(_, u)| u);
        assert!(restore_callback_urls(&mut answer, &open, 0));
        assert_eq!(
            answer["result"]["configs"][0]["url"],
            "https://hooks.example.com/b"
        );
    }

    #[test]
    fn urls_in_every_version_and_binding() {
        // v0.3 message/send with a push config (spec example fields).
        let v03_send =
            br#"{"message":{"role":"user","parts":[{"kind":"text","text":"hi"}],"messageId":"m"},
            "configuration":{"acceptedOutputModes":["text/plain"],"blocking":false,
              "pushNotificationConfig":{"url":"https://client.example.com/webhook","token":"tok",
                "authentication":{"schemes":["Bearer"]}}}}"#;
        assert_eq!(
            callback_urls(Operation::SendMessage, v03_send).unwrap(),
            vec!["https://client.example.com/webhook"]
        );
        let v03_set = br#"{"taskId":"t1","pushNotificationConfig":{"url":"http://10.0.0.8/hook"}}"#;
        assert_eq!(
            callback_urls(Operation::CreatePushConfig, v03_set).unwrap(),
            vec!["http://10.0.0.8/hook"]
        );
        let v03_rest = br#"{"parent":"tasks/t1","configId":"c","config":{"name":"tasks/t1/pushNotificationConfigs/c","pushNotificationConfig":{"url":"http://169.254.169.254/latest"}}}"#;
        assert_eq!(
            callback_urls(Operation::CreatePushConfig, v03_rest).unwrap(),
            vec!["http://169.254.169.254/latest"]
        );
        let v10_send = br#"{"message":{"role":"ROLE_USER","parts":[{"text":"hi"}],"messageId":"m"},
            "configuration":{"taskPushNotificationConfig":{"url":"https://hooks.example.com/a"}}}"#;
        assert_eq!(
            callback_urls(Operation::SendStreamingMessage, v10_send).unwrap(),
            vec!["https://hooks.example.com/a"]
        );
        let v10_create = br#"{"taskId":"t1","id":"cfg","url":"https://hooks.example.com/b","authentication":{"scheme":"Bearer"}}"#;
        assert_eq!(
            callback_urls(Operation::CreatePushConfig, v10_create).unwrap(),
            vec!["https://hooks.example.com/b"]
        );
        // A message's own fields named `url` (a file part) are not callbacks.
        let file = br#"{"message":{"parts":[{"url":"https://files.example.com/x.pdf"}]}}"#;
        assert!(callback_urls(Operation::SendMessage, file)
            .unwrap()
            .is_empty());
        assert!(callback_urls(Operation::GetTask, b"not json")
            .unwrap()
            .is_empty());
        assert!(callback_urls(Operation::CreatePushConfig, b"not json").is_err());
    }

    #[test]
    fn the_allow_list() {
        let list =
            AllowList::new(&["hooks.example.com", "*.corp.example", "127.0.0.1:9000"]).unwrap();
        assert!(list.check("https://hooks.example.com/a").is_ok());
        assert!(list.check("https://HOOKS.example.com./a").is_ok());
        assert!(list.check("https://a.b.corp.example/x").is_ok());
        assert!(
            list.check("https://corp.example/x").is_err(),
            "not the apex"
        );
        assert!(list.check("http://127.0.0.1:9000/cb").is_ok());
        assert!(list.check("http://127.0.0.1:9001/cb").is_err());
        assert!(list
            .check("http://169.254.169.254/latest/meta-data")
            .is_err());
        assert!(list.check("https://hooks.example.com.evil.io/").is_err());
        assert!(list.check("file:///etc/passwd").is_err());
        assert!(list.check("hooks.example.com/a").is_err(), "no scheme");
        assert!(AllowList::new(&["a*b.com"]).is_err());
        assert!(AllowList::new(&["host:notaport"]).is_err());
        let v6 = AllowList::new(&["[::1]:8080"]).unwrap();
        assert!(v6.check("http://[::1]:8080/").is_ok());
        // An empty list allows nothing.
        assert!(AllowList::default().check("https://x.example/").is_err());
    }
}
