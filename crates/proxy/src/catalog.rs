//! The A2A agent catalog of a listener (`listeners[].a2a.catalogPath`): a `GET` there lists
//! the cards of the listener's A2A routes that the caller may read.
//!
//! Each card is fetched through its own route with the caller's request headers, as if the
//! caller had asked for `{route prefix}/.well-known/agent-card.json` itself: the route's
//! policies (authentication, authorization, rate limits) decide, and the card comes back
//! rewritten to the gateway's URLs (and signed, where the backend has a key). A route that
//! refuses the caller (401, 403, 404) is left out; one whose agent fails is listed under
//! `unavailable`. The agents' own cards are cached briefly by each backend for these fetches
//! ([`CARD_TTL`]), so a busy catalog does not fetch every card every time.
//!
//! ```json
//! {"agents": [{"route": "echo", "cardUrl": "https://gw/agents/echo/.well-known/agent-card.json",
//!              "card": {...}}],
//!  "unavailable": [{"route": "down", "cardUrl": "...", "status": 503}]}
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::context::ConnCtx;
use crate::routes::request_host;
use crate::snapshot::{ListenerRt, Snapshot};

/// How long a backend reuses an agent's card for catalog fetches.
pub const CARD_TTL: Duration = Duration::from_secs(10);
/// Largest card read into the catalog.
const MAX_CARD_BYTES: usize = 1 << 20;

/// Marks the gateway's own card fetches for the catalog (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct CatalogFetch;

/// A listener's catalog, compiled with the snapshot.
#[derive(Debug)]
pub struct Catalog {
    pub path: Arc<str>,
    pub entries: Vec<CatalogEntry>,
}

/// One A2A route, and where its card is read.
#[derive(Debug)]
pub struct CatalogEntry {
    pub route: Arc<str>,
    /// `{prefix}/.well-known/agent-card.json`.
    pub card_path: String,
}

impl Catalog {
    /// The catalog of `routes` (the listener's, in file order): every route with an `a2a`
    /// backend and a path the card can be reached under (its first `pathPrefix`, or no path
    /// match at all).
    pub fn compile(path: &str, routes: &[(Arc<str>, &config::Route)]) -> Catalog {
        let entries = routes
            .iter()
            .filter(|(_, r)| {
                r.backends
                    .iter()
                    .any(|b| matches!(b.kind, config::BackendKind::A2a(_)))
            })
            .filter_map(|(name, r)| {
                let prefix = if r.matches.iter().all(|m| m.path.is_none()) {
                    Some("")
                } else {
                    r.matches.iter().find_map(|m| match &m.path {
                        Some(config::PathMatch::PathPrefix(p)) => Some(p.as_str()),
                        _ => None,
                    })
                }?;
                Some(CatalogEntry {
                    route: name.clone(),
                    card_path: format!("{}{}", prefix.trim_end_matches('/'), ::a2a::CARD_PATHS[0]),
                })
            })
            .collect();
        Catalog {
            path: path.into(),
            entries,
        }
    }
}

/// The listener whose catalog this request asks for, if it does.
pub(crate) fn find<'s>(
    conn: &ConnCtx,
    snapshot: &'s Snapshot,
    parts: &Parts,
) -> Option<(&'s ListenerRt, &'s Catalog)> {
    // The catalog's own fetches never list the catalog again (a catalog path that is also a
    // route's card path must not recurse).
    if parts.method != Method::GET || parts.extensions.get::<CatalogFetch>().is_some() {
        return None;
    }
    let bind = snapshot.bind(&conn.bind)?;
    let listener = bind.listener_for(request_host(parts).as_deref())?;
    let catalog = listener.a2a_catalog.as_deref()?;
    (parts.uri.path() == &*catalog.path).then_some((listener, catalog))
}

/// The catalog for this caller.
pub(crate) async fn serve(
    conn: &Arc<ConnCtx>,
    listener: &ListenerRt,
    catalog: &Catalog,
    parts: &Parts,
) -> Response<Body> {
    let host = request_host(parts).map(|h| h.into_owned());
    type Fetch = std::pin::Pin<
        Box<dyn std::future::Future<Output = (usize, (StatusCode, Option<Value>))> + Send>,
    >;
    let mut fetches: Vec<Fetch> = Vec::with_capacity(catalog.entries.len());
    for (i, entry) in catalog.entries.iter().enumerate() {
        let Some(sub) = sub_request(parts, &entry.card_path) else {
            continue;
        };
        // Only where this caller's request would reach that route (its hostnames, matches).
        let reaches = listener
            .routes
            .find(host.as_deref(), &sub, None)
            .is_some_and(|found| found.route.name == entry.route);
        if !reaches {
            continue;
        }
        let conn = conn.clone();
        fetches.push(Box::pin(async move {
            let resp = crate::pipeline::serve_internal(conn, sub).await;
            (i, read(resp).await)
        }));
    }
    let results = futures_util::future::join_all(fetches).await;
    let origin = origin(conn, parts);
    let mut agents = Vec::new();
    let mut unavailable = Vec::new();
    for (i, (status, card)) in results {
        let entry = &catalog.entries[i];
        let card_url = format!("{origin}{}", entry.card_path);
        match (status, card) {
            (s, Some(card)) if s.is_success() => agents.push(json!({
                "route": &*entry.route,
                "cardUrl": card_url,
                "card": card,
            })),
            // Not this caller's to see.
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND, _) => {}
            (s, _) => unavailable.push(json!({
                "route": &*entry.route,
                "cardUrl": card_url,
                "status": s.as_u16(),
            })),
        }
    }
    let mut doc = json!({ "agents": agents });
    if !unavailable.is_empty() {
        doc["unavailable"] = Value::Array(unavailable);
    }
    let mut resp = Response::new(body::full(doc.to_string().into_bytes()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // What a caller sees depends on its credentials.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=10"),
    );
    resp
}

/// The caller's request, turned into a `GET` of `path` with the caller's headers.
fn sub_request(parts: &Parts, path: &str) -> Option<Parts> {
    let uri = match (parts.uri.scheme(), parts.uri.authority()) {
        (Some(s), Some(a)) => format!("{s}://{a}{path}"),
        _ => path.to_string(),
    };
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .version(parts.version)
        .body(())
        .ok()?;
    let mut headers = parts.headers.clone();
    for h in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
    ] {
        headers.remove(h);
    }
    *req.headers_mut() = headers;
    req.extensions_mut().insert(CatalogFetch);
    Some(req.into_parts().0)
}

/// The status, and the card when the answer is JSON.
async fn read(resp: Response<Body>) -> (StatusCode, Option<Value>) {
    let status = resp.status();
    if !status.is_success() {
        return (status, None);
    }
    let mut body = resp.into_body();
    let mut buf = bytes::BytesMut::new();
    let mut whole = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            whole = false;
            break;
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_CARD_BYTES {
                whole = false;
                break;
            }
            buf.extend_from_slice(&data);
        }
    }
    let card = whole
        .then(|| serde_json::from_slice::<Value>(&buf).ok())
        .flatten();
    match card {
        Some(card) => (status, Some(card)),
        None => (StatusCode::BAD_GATEWAY, None),
    }
}

/// `scheme://authority` as the caller reached the gateway.
fn origin(conn: &ConnCtx, parts: &Parts) -> String {
    let https = conn.tls
        || parts
            .headers
            .get(&crate::headers::X_FORWARDED_PROTO)
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let scheme = if https { "https" } else { "http" };
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| request_host_header(parts))
        .unwrap_or_else(|| "localhost".into());
    format!("{scheme}://{host}")
}

fn request_host_header(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}
