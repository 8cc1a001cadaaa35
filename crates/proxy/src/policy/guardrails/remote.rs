//! Guards that ask a service: a `webhook` (the gateway's own JSON contract) or a `moderation`
//! endpoint (the OpenAI `/v1/moderations` shape). They run after the regex guards, one after
//! the other, each within its timeout: on the prompt (`request`), and on the answer
//! (`response`): a whole answer at once, a streamed one per window ([`super::window`]).
//!
//! Webhook contract. The gateway POSTs
//! `{"guard": NAME, "side": "request"|"response", "route": ROUTE, "model": MODEL|null,
//!   "texts": [{"role": "system"|"user"|"assistant"|"tool"|..., "text": "..."}]}`
//! and reads one of `{"action": "allow"}`, `{"action": "reject", "reason": "..."}` (the reason
//! is logged, never sent to the caller) or `{"action": "mask", "texts": [...]}` (one
//! replacement per text, same order). Any other status or shape is a failure of the service.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Uri};
use serde::Deserialize;
use serde_json::{json, Value};

use super::SKIP;
use crate::body;
use crate::upstream::Upstream;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_ANSWER: usize = 4 << 20;

/// One remote guard, ready to call.
pub struct RemoteGuard {
    pub name: String,
    pub action: config::GuardAction,
    kind: Kind,
    client: Upstream,
    uri: Uri,
    auth: Option<HeaderValue>,
    timeout: Duration,
    pub fail_open: bool,
    /// On streams: characters between two checks.
    pub window: usize,
}

/// The default `streamWindow`.
pub const DEFAULT_WINDOW: usize = 500;

enum Kind {
    Webhook,
    Moderation {
        model: String,
        thresholds: Vec<(String, f64)>,
    },
}

/// What a guard decided about the texts.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Allow,
    /// Refused (the reason is for the log).
    Reject(String),
    /// Replacement texts, one per text.
    Mask(Vec<String>),
}

impl RemoteGuard {
    pub fn compile(g: &config::Guard) -> Result<Option<RemoteGuard>, String> {
        let limits = config::Limits::default();
        let (kind, url, key, timeout, fail_open, window) = match (&g.webhook, &g.moderation) {
            (Some(w), _) => (
                Kind::Webhook,
                w.url.clone(),
                &w.key,
                w.timeout,
                w.fail_open,
                w.stream_window,
            ),
            (_, Some(m)) => (
                Kind::Moderation {
                    model: m
                        .model
                        .clone()
                        .unwrap_or_else(|| "omni-moderation-latest".into()),
                    thresholds: m.thresholds.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                },
                format!("{}/v1/moderations", m.url.trim_end_matches('/')),
                &m.key,
                m.timeout,
                m.fail_open,
                m.stream_window,
            ),
            _ => return Ok(None),
        };
        let (client, uri) = crate::ai::token::endpoint_client(&url, &limits)
            .map_err(|e| format!("guard {:?}: {e}", g.name))?;
        let auth = key
            .as_ref()
            .map(|k| HeaderValue::from_str(&format!("Bearer {}", k.expose())))
            .transpose()
            .map_err(|_| format!("guard {:?}: the key is not a header value", g.name))?
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Ok(Some(RemoteGuard {
            name: g.name.clone(),
            action: g.action,
            kind,
            client,
            uri,
            auth,
            timeout: timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
            fail_open,
            window: window.map_or(DEFAULT_WINDOW, |n| n.max(1) as usize),
        }))
    }

    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Webhook => "webhook",
            Kind::Moderation { .. } => "moderation",
        }
    }

    /// Asks the service about `texts` (role, text); `Err` when it could not be asked or its
    /// answer is not the contract's.
    pub async fn check(
        &self,
        texts: &[(String, String)],
        route: &str,
        model: Option<&str>,
        side: &str,
    ) -> Result<Verdict, String> {
        let payload = match &self.kind {
            Kind::Webhook => json!({
                "guard": self.name,
                "side": side,
                "route": route,
                "model": model,
                "texts": texts.iter().map(|(r, t)| json!({"role": r, "text": t})).collect::<Vec<_>>(),
            }),
            Kind::Moderation { model, .. } => json!({
                "model": model,
                "input": texts.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
            }),
        };
        let mut req = Request::new(body::full(Bytes::from(payload.to_string())));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(host) = self.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(host.as_str()) {
                h.insert(header::HOST, v);
            }
        }
        if let Some(a) = &self.auth {
            h.insert(header::AUTHORIZATION, a.clone());
        }
        let call = async {
            let resp = self
                .client
                .client
                .request(req)
                .await
                .map_err(|e| format!("{e}"))?;
            let status = resp.status();
            let bytes = body::read_limited(body::from_incoming(resp.into_body()), MAX_ANSWER)
                .await
                .map_err(|e| format!("reading the answer: {e:?}"))?;
            if !status.is_success() {
                return Err(format!("answered {status}"));
            }
            Ok(bytes)
        };
        let bytes = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))??;
        match &self.kind {
            Kind::Webhook => webhook_verdict(&bytes, texts.len()),
            Kind::Moderation { thresholds, .. } => moderation_verdict(&bytes, thresholds),
        }
    }
}

/// What the remote guards of one side decided about some texts.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Passed; masks (if any) are already in the texts.
    Pass,
    /// This guard refused.
    Reject(String),
    /// This guard could not be asked and fails closed.
    Unavailable(String),
}

/// Asks each guard in turn about `texts` (role, text); a mask answer replaces the texts the
/// next guard sees. Every hit is logged and counted (guard, kind, action, side; never the
/// text); `changed` says whether a mask replaced anything.
pub async fn ask_all(
    guards: &[RemoteGuard],
    texts: &mut [(String, String)],
    route: &str,
    model: Option<&str>,
    side: &'static str,
    changed: &mut bool,
) -> Decision {
    for guard in guards {
        if texts.is_empty() {
            break;
        }
        let verdict = guard.check(texts, route, model, side).await;
        let hit = |action: &'static str| {
            telemetry::Metrics::global()
                .guardrail_hits
                .get_or_create(&telemetry::metrics::GuardrailLabels {
                    guard: guard.name.clone(),
                    detector: guard.kind(),
                    action,
                    side,
                })
                .inc();
        };
        let audit = guard.action == config::GuardAction::Audit;
        match verdict {
            Err(e) if guard.fail_open => {
                tracing::warn!(guard = %guard.name, side, error = %e, "guard unavailable; passed (failOpen)");
            }
            Err(e) => {
                tracing::warn!(guard = %guard.name, side, error = %e, "guard unavailable; refused");
                return Decision::Unavailable(guard.name.clone());
            }
            Ok(Verdict::Allow) => {}
            Ok(Verdict::Reject(reason)) => {
                tracing::info!(guard = %guard.name, detector = guard.kind(), side, reason = %reason, audit, "guardrail matched");
                if audit {
                    hit("audit");
                    continue;
                }
                hit("reject");
                return Decision::Reject(guard.name.clone());
            }
            Ok(Verdict::Mask(replacements)) => {
                tracing::info!(guard = %guard.name, detector = guard.kind(), side, audit, "guardrail matched");
                if audit {
                    hit("audit");
                    continue;
                }
                hit("mask");
                for ((_, t), r) in texts.iter_mut().zip(replacements) {
                    if *t != r {
                        *t = r;
                        *changed = true;
                    }
                }
            }
        }
    }
    Decision::Pass
}

#[derive(Deserialize)]
struct WebhookAnswer {
    action: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    texts: Option<Vec<String>>,
}

fn webhook_verdict(bytes: &[u8], n: usize) -> Result<Verdict, String> {
    let a: WebhookAnswer = serde_json::from_slice(bytes)
        .map_err(|e| format!("the answer is not the contract: {e}"))?;
    match a.action.as_str() {
        "allow" => Ok(Verdict::Allow),
        "reject" => Ok(Verdict::Reject(a.reason.unwrap_or_default())),
        "mask" => match a.texts {
            Some(t) if t.len() == n => Ok(Verdict::Mask(t)),
            _ => Err(format!("a mask answer needs {n} texts")),
        },
        other => Err(format!("unknown action {other:?}")),
    }
}

/// Refused when a category's score reaches its threshold; with no thresholds, when the
/// endpoint flagged any input.
fn moderation_verdict(bytes: &[u8], thresholds: &[(String, f64)]) -> Result<Verdict, String> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let results = v["results"]
        .as_array()
        .ok_or("the answer has no `results`")?;
    for r in results {
        if thresholds.is_empty() {
            if r["flagged"].as_bool() == Some(true) {
                let cats: Vec<&str> = r["categories"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(_, v)| v.as_bool() == Some(true))
                            .map(|(k, _)| k.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                return Ok(Verdict::Reject(format!("flagged: {}", cats.join(", "))));
            }
            continue;
        }
        for (category, limit) in thresholds {
            let score = r["category_scores"][category].as_f64().unwrap_or(0.0);
            if score >= *limit {
                return Ok(Verdict::Reject(format!("{category} {score:.2} >= {limit}")));
            }
        }
    }
    Ok(Verdict::Allow)
}

/// Every text the request guards read, in walk order, with the role of the message it
/// belongs to (Anthropic's `system` and Responses' `instructions` are `system`; a text outside
/// any message is `user`).
pub fn texts(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    collect(v, "user", &mut out);
    out
}

fn collect(v: &Value, role: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((role.to_string(), s.clone())),
        Value::Array(items) => items.iter().for_each(|i| collect(i, role, out)),
        Value::Object(map) => {
            let own = map.get("role").and_then(Value::as_str).unwrap_or(role);
            for (k, child) in map {
                if SKIP.contains(&k.as_str()) {
                    continue;
                }
                let role = match k.as_str() {
                    "system" | "instructions" => "system",
                    _ => own,
                };
                collect(child, role, out);
            }
        }
        _ => {}
    }
}

/// Puts replacement texts back, in the order [`texts`] read them.
pub fn replace(v: &mut Value, with: &mut impl Iterator<Item = String>) {
    match v {
        Value::String(s) => {
            if let Some(t) = with.next() {
                *s = t;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| replace(i, with)),
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if !SKIP.contains(&k.as_str()) {
                    replace(child, with);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_carry_their_roles_and_go_back_in_order() {
        let mut v = json!({
            "model": "m",
            "system": "be kind",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi jane@example.com"}]},
                {"role": "assistant", "content": "hello", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{\"q\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "result"}
            ]
        });
        let t = texts(&v);
        let roles: Vec<&str> = t.iter().map(|(r, _)| r.as_str()).collect();
        let text: Vec<&str> = t.iter().map(|(_, x)| x.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "assistant", "tool"]);
        assert_eq!(
            text,
            [
                "be kind",
                "hi jane@example.com",
                "hello",
                "{\"q\":1}",
                "result"
            ]
        );
        let masked: Vec<String> = text
            .iter()
            .map(|s| s.replace("jane@example.com", "<EMAIL>"))
            .collect();
        replace(&mut v, &mut masked.into_iter());
        assert_eq!(v["messages"][0]["content"][0]["text"], "hi <EMAIL>");
        assert_eq!(
            v["messages"][1]["tool_calls"][0]["id"], "c1",
            "structure untouched"
        );
    }

    #[test]
    fn answers_become_verdicts() {
        assert_eq!(
            webhook_verdict(br#"{"action":"allow"}"#, 2),
            Ok(Verdict::Allow)
        );
        assert_eq!(
            webhook_verdict(br#"{"action":"reject","reason":"pii"}"#, 2),
            Ok(Verdict::Reject("pii".into()))
        );
        assert!(webhook_verdict(br#"{"action":"mask","texts":["a"]}"#, 2).is_err());
        assert!(webhook_verdict(br#"{"action":"maybe"}"#, 2).is_err());
        let m = br#"{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":true,"categories":{"violence":true,"hate":false},"category_scores":{"violence":0.91,"hate":0.02}}]}"#;
        assert!(
            matches!(moderation_verdict(m, &[]), Ok(Verdict::Reject(r)) if r.contains("violence"))
        );
        assert_eq!(
            moderation_verdict(m, &[("hate".into(), 0.5)]),
            Ok(Verdict::Allow)
        );
        assert!(matches!(
            moderation_verdict(m, &[("violence".into(), 0.9)]),
            Ok(Verdict::Reject(_))
        ));
    }
}
