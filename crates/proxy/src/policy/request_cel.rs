//! The CEL variables of a request still in the route phase, for policies that decide on it
//! (authorization rules, rate-limit keys, rate-limit descriptors). Only what the expressions
//! read is built.

use cel::{Bindings, MapBuilder, Uses, Var};
use http::request::Parts;

use crate::context::RequestCtx;

/// `request` (`method`, `path`, `host`, `scheme`, `headers`), `source`, `jwt`, `apiKey`,
/// `basicAuth`, `llm.requestModel` (when the model is known) and `a2a` (when the `a2a`
/// adapter classified the call), as `uses` asks.
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
    if uses.var(Var::A2a) {
        if let Some(slot) = &ctx.trail.a2a {
            if let Some(rec) = slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                b.set(Var::A2a, rec.value());
            }
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

/// A limit's key expression. A plain field (`apiKey.name`, `request.path`,
/// `llm.requestModel`, `jwt.sub`...) is read straight from the request, without binding CEL
/// variables (a map per variable per request); anything else is evaluated.
pub struct KeyExpr {
    pub expr: cel::Expression,
    fast: Option<Field>,
}

enum Field {
    ApiKey(&'static str),
    BasicUser,
    Method,
    Path,
    Host,
    Model,
    SourceAddress,
    Jwt(String),
}

impl KeyExpr {
    pub fn compile(source: &str) -> Result<KeyExpr, String> {
        let expr = cel::Expression::compile(source)?;
        let fast = match expr.member_path() {
            Some((Var::ApiKey, [f])) => match f.as_str() {
                "name" => Some(Field::ApiKey("name")),
                "team" => Some(Field::ApiKey("team")),
                "org" => Some(Field::ApiKey("org")),
                "id" => Some(Field::ApiKey("id")),
                _ => None,
            },
            Some((Var::BasicAuth, [f])) if f == "user" => Some(Field::BasicUser),
            Some((Var::Request, [f])) => match f.as_str() {
                "method" => Some(Field::Method),
                "path" => Some(Field::Path),
                "host" => Some(Field::Host),
                _ => None,
            },
            Some((Var::Llm, [f])) if f == "requestModel" => Some(Field::Model),
            Some((Var::Source, [f])) if f == "address" => Some(Field::SourceAddress),
            Some((Var::Jwt, [f])) => Some(Field::Jwt(f.clone())),
            _ => None,
        };
        Ok(KeyExpr { expr, fast })
    }

    /// Whether the value needs CEL variables bound (see [`bindings`]).
    pub fn needs_scope(&self) -> bool {
        self.fast.is_none()
    }

    /// The key's text for this request (`None`: it has none, the limit does not apply).
    /// `scope` is used only for expressions that are not a plain field.
    pub fn value(
        &self,
        ctx: &RequestCtx<'_>,
        req: &Parts,
        scope: Option<&cel::Scope>,
    ) -> Option<String> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let Some(field) = &self.fast else {
            let v = self.expr.eval_in(scope?).ok()?;
            return key_text(&v);
        };
        match field {
            Field::ApiKey(f) => {
                let k = ctx.identity.api_key.as_ref()?;
                match *f {
                    "name" => non_empty(&k.name),
                    "team" => k.team.as_deref().and_then(non_empty),
                    "org" => k.org.as_deref().and_then(non_empty),
                    _ => k.id.as_deref().and_then(non_empty),
                }
            }
            Field::BasicUser => ctx.identity.basic_user.as_deref().and_then(non_empty),
            Field::Method => Some(req.method.as_str().to_string()),
            Field::Path => Some(req.uri.path().to_string()),
            Field::Host => crate::routes::request_host(req).and_then(|h| non_empty(&h)),
            Field::Model => ctx.model.as_deref().and_then(non_empty),
            Field::SourceAddress => Some(ctx.conn.peer.ip().to_string()),
            Field::Jwt(claim) => ctx
                .identity
                .jwt
                .as_ref()
                .and_then(|c| c.get(claim))
                .and_then(|v| key_text(&cel::json_to_value(v))),
        }
    }
}
