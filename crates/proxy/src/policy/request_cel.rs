//! The CEL variables of a request still in the route phase, for policies that decide on it
//! (authorization rules, rate-limit keys, rate-limit descriptors). Only what the expressions
//! read is built.

use cel::{Bindings, MapBuilder, Uses, Var};
use http::request::Parts;

use crate::context::RequestCtx;

/// `request` (`method`, `path`, `host`, `scheme`, `headers`), `source`, `jwt`, `apiKey`,
/// `basicAuth` and `llm.requestModel` (when the model is known), as `uses` asks.
pub fn bindings(ctx: &RequestCtx<'_>, req: &Parts, uses: Uses) -> Bindings {
    let mut b = Bindings::default();
    if uses.var(Var::Request) {
        let mut m = MapBuilder::with_capacity(6);
        m.insert("method", req.method.as_str())
            .insert("path", req.uri.path())
            .insert("scheme", if ctx.conn.tls { "https" } else { "http" });
        if let Some(h) = crate::routes::request_host(req) {
            m.insert("host", &*h);
        }
        if let Some(q) = req.uri.query() {
            m.insert("query", q);
        }
        if uses.request_headers() {
            m.insert("headers", cel::headers_value(&req.headers));
        }
        b.set(Var::Request, m.build());
    }
    if uses.var(Var::Source) {
        let mut m = MapBuilder::with_capacity(2);
        m.insert("address", ctx.conn.peer.ip().to_string())
            .insert("port", ctx.conn.peer.port() as i64);
        b.set(Var::Source, m.build());
    }
    if uses.var(Var::Jwt) {
        if let Some(claims) = &ctx.identity.jwt {
            b.set(Var::Jwt, cel::json_to_value(claims));
        }
    }
    if uses.var(Var::ApiKey) {
        if let Some(k) = &ctx.identity.api_key {
            b.set(Var::ApiKey, k.value());
        }
    }
    if uses.var(Var::BasicAuth) {
        if let Some(u) = &ctx.identity.basic_user {
            let mut m = MapBuilder::with_capacity(1);
            m.insert("user", &**u);
            b.set(Var::BasicAuth, m.build());
        }
    }
    if uses.var(Var::Llm) {
        if let Some(model) = &ctx.model {
            let mut m = MapBuilder::with_capacity(1);
            m.insert("requestModel", model.as_str());
            b.set(Var::Llm, m.build());
        }
    }
    b
}

/// A CEL key's value as text (`apiKey.name` → `alice`); `None` when it has none for this
/// request (a missing field, `null`, an empty string), so the limit does not apply to it.
pub fn key_text(value: &cel::Value) -> Option<String> {
    match value {
        cel::Value::String(s) if !s.is_empty() => Some(s.to_string()),
        cel::Value::Int(n) => Some(n.to_string()),
        cel::Value::UInt(n) => Some(n.to_string()),
        cel::Value::Bool(b) => Some(b.to_string()),
        cel::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}
