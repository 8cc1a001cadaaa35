//! `subscriptions/listen` for modern clients of legacy targets: the revision's one channel for
//! notifications outside a request, in place of the legacy GET stream and
//! `resources/subscribe`. The stream is served from the caller's pooled upstream sessions
//! ([`crate::pool`]): their server streams are read once however many listeners there are
//! ([`crate::pool::Pooled::feed`]), each listener gets what its filter opted in to, and the
//! URIs in `resourceSubscriptions` are subscribed to on the target each belongs to. The first
//! message is `notifications/subscriptions/acknowledged` with what the targets can honour;
//! every message carries the listen request's id as `io.modelcontextprotocol/subscriptionId`.
//! Subscriptions last as long as the pooled sessions (a URI one listener subscribed to is
//! filtered out of the others' streams).

use crate::downstream::json_response;
use crate::federate::from_upstream;
use crate::jsonrpc::{self, Code};
use crate::pool::Pooled;
use crate::stream::{sse_response, Event, Opts};
use crate::upstream::{answer, CallCtx};
use crate::{names, Body, Gateway};
use http::{Response, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// What one listener opted in to (and the targets can honour).
#[derive(Default)]
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    /// Resource URIs, as the client knows them.
    uris: HashSet<String>,
}

impl Filter {
    fn wants(&self, m: &Value) -> bool {
        match jsonrpc::method(m) {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            "notifications/resources/updated" => m
                .pointer("/params/uri")
                .and_then(Value::as_str)
                .is_some_and(|u| self.uris.contains(u)),
            _ => false,
        }
    }

    fn acknowledged(&self) -> Value {
        let mut n = Map::new();
        for (k, on) in [
            ("toolsListChanged", self.tools),
            ("promptsListChanged", self.prompts),
            ("resourcesListChanged", self.resources),
        ] {
            if on {
                n.insert(k.into(), json!(true));
            }
        }
        if !self.uris.is_empty() {
            let mut uris: Vec<&String> = self.uris.iter().collect();
            uris.sort();
            n.insert("resourceSubscriptions".into(), json!(uris));
        }
        Value::Object(n)
    }
}

fn with_subscription(mut m: Value, id: &Value) -> Value {
    let params = jsonrpc::params_mut(&mut m);
    let meta = params.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(SUBSCRIPTION_ID.into(), id.clone());
    }
    m
}

impl Gateway {
    /// Serves a modern client's `subscriptions/listen` from its pooled sessions.
    pub(crate) async fn listen(
        &self,
        pooled: &Arc<Pooled>,
        id: Value,
        params: &Map<String, Value>,
        sse: bool,
    ) -> Response<Body> {
        let bad = |code: rmcp::model::ErrorCode, why: &str| {
            json_response(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(id.clone(), code, why.to_string()),
            )
        };
        let Some(asked) = params.get("notifications").and_then(Value::as_object) else {
            return bad(
                Code::INVALID_PARAMS,
                "subscriptions/listen needs params.notifications",
            );
        };
        if !sse {
            return bad(
                Code::INVALID_REQUEST,
                "subscriptions/listen answers with an event stream: accept text/event-stream",
            );
        }
        let wants = |k: &str| asked.get(k).and_then(Value::as_bool) == Some(true);
        let caps = &pooled.caps;
        let mut filter = Filter {
            tools: wants("toolsListChanged")
                && caps.tools.as_ref().and_then(|t| t.list_changed) == Some(true),
            prompts: wants("promptsListChanged")
                && caps.prompts.as_ref().and_then(|p| p.list_changed) == Some(true),
            resources: wants("resourcesListChanged")
                && caps.resources.as_ref().and_then(|r| r.list_changed) == Some(true),
            uris: HashSet::new(),
        };
        let feed = pooled.feed();
        let uris: Vec<&str> = asked
            .get("resourceSubscriptions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .take(256)
            .collect();
        for uri in uris {
            if self.subscribe(pooled, uri).await {
                filter.uris.insert(uri.to_string());
            }
        }
        let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": filter.acknowledged()}});
        let (tx, out) = mpsc::channel::<Event>(64);
        let _ = tx.try_send(Event::plain(with_subscription(ack, &id)));
        let prefixed = self.prefixed;
        let task = tokio::spawn(relay(feed, filter, id, prefixed, tx));
        sse_response(out, Opts::server_stream(vec![task]))
    }

    /// `resources/subscribe` on the pooled session of the target `uri` belongs to; whether a
    /// target took it.
    async fn subscribe(&self, pooled: &Pooled, uri: &str) -> bool {
        let (target, original) = if self.prefixed {
            match names::split_uri(uri) {
                Some((t, u)) => (Some(t), u),
                None => return false,
            }
        } else {
            (None, uri)
        };
        let ctx = CallCtx {
            headers: pooled.headers(),
            local: &pooled.local,
            init: &pooled.state.init,
        };
        let mut took = false;
        for (t, ts) in pooled.targets() {
            if target.is_some_and(|name| *t.name != *name) {
                continue;
            }
            let msg = json!({"jsonrpc": "2.0", "id": jsonrpc::gateway_id(),
                "method": "resources/subscribe", "params": {"uri": original}});
            let Ok(rx) = t.request(&ctx, ts, msg).await else {
                continue;
            };
            if let Ok(a) = answer(rx, |_| {}).await {
                took |= a.get("result").is_some();
            }
        }
        took
    }
}

/// Copies what a listener opted in to from the pooled sessions' feed to its stream; when the
/// feed ends (the pooled sessions closed), the listen request is answered and the stream ends.
async fn relay(
    mut feed: broadcast::Receiver<(Arc<str>, Value)>,
    filter: Filter,
    id: Value,
    prefixed: bool,
    tx: mpsc::Sender<Event>,
) {
    loop {
        let (target, m) = match feed.recv().await {
            Ok(x) => x,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(missed = n, "a subscriptions/listen stream fell behind");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let m = from_upstream(m, &target, prefixed);
        if !filter.wants(&m) {
            continue;
        }
        if tx
            .send(Event::plain(with_subscription(m, &id)))
            .await
            .is_err()
        {
            return;
        }
    }
    let done = jsonrpc::result(
        id.clone(),
        json!({"resultType": "complete", "_meta": {SUBSCRIPTION_ID: id}}),
    );
    let _ = tx.send(Event::plain(done)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_get_only_what_they_opted_in_to() {
        let f = Filter {
            tools: true,
            uris: ["a+x://1".to_string()].into_iter().collect(),
            ..Default::default()
        };
        let n = |method: &str, uri: Option<&str>| {
            let mut m = json!({"jsonrpc": "2.0", "method": method});
            if let Some(u) = uri {
                m["params"] = json!({"uri": u});
            }
            m
        };
        assert!(f.wants(&n("notifications/tools/list_changed", None)));
        assert!(!f.wants(&n("notifications/prompts/list_changed", None)));
        assert!(f.wants(&n("notifications/resources/updated", Some("a+x://1"))));
        assert!(!f.wants(&n("notifications/resources/updated", Some("a+x://2"))));
        assert!(!f.wants(&n("notifications/message", None)));
        assert_eq!(
            f.acknowledged(),
            json!({"toolsListChanged": true, "resourceSubscriptions": ["a+x://1"]})
        );
        let m = with_subscription(n("notifications/tools/list_changed", None), &json!(7));
        assert_eq!(m["params"]["_meta"][SUBSCRIPTION_ID], 7);
    }
}
