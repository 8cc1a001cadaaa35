//! Tool authorization: CEL rules, compiled at load. A tool is allowed when any rule is true;
//! a rule that fails to evaluate (a missing field, a type error) counts as false. Listing a
//! tool is asking "may I call it", so list filtering and calls use the same question.

use cel::{Bindings, Expression, MapBuilder, Uses, Var};
use http::HeaderMap;
use std::net::SocketAddr;

pub struct Authz {
    rules: Vec<Expression>,
    uses: Uses,
}

/// Who is asking: what rules may read besides the tool.
pub struct Caller<'a> {
    pub headers: &'a HeaderMap,
    pub source: SocketAddr,
    /// Verified JWT claims, when an authentication policy produced them.
    pub jwt: Option<&'a serde_json::Value>,
    /// The `apiKey` CEL variable, when `apiKeyAuth` identified the caller.
    pub api_key: Option<&'a cel::Value>,
    /// The route's guards on tool traffic.
    pub tool_guard: Option<&'a std::sync::Arc<dyn ToolGuard>>,
}

/// Guards on tool traffic (a route's `guardrails`): they see a call's arguments before it is
/// sent and its result before it is returned, and may mask (rewrite) or refuse them.
pub trait ToolGuard: Send + Sync {
    /// `Err(guard)`: the call is refused, naming the guard (never the matched text).
    fn arguments(&self, args: &mut serde_json::Value) -> Result<(), String>;
    /// `Err(guard)`: the result is replaced by an error naming the guard.
    fn result(&self, result: &mut serde_json::Value) -> Result<(), String>;
}

impl Authz {
    pub fn compile(cfg: &config::McpAuthorization) -> Result<Authz, String> {
        let mut rules = Vec::with_capacity(cfg.rules.len());
        // `mcp` is always bound, whether or not a rule names it.
        let mut uses = Uses::default().with_var(Var::Mcp);
        for (i, r) in cfg.rules.iter().enumerate() {
            let e =
                Expression::compile(r).map_err(|e| format!("mcpAuthorization.rules[{i}]: {e}"))?;
            uses = uses.union(e.uses());
            rules.push(e);
        }
        Ok(Authz { rules, uses })
    }

    pub fn allows(&self, caller: &Caller<'_>, method: &str, target: &str, tool: &str) -> bool {
        let mut b = Bindings::default();
        let mut t = MapBuilder::with_capacity(2);
        t.insert("name", tool).insert("target", target);
        let mut m = MapBuilder::with_capacity(2);
        m.insert("method", method).insert("tool", t.build());
        b.set(Var::Mcp, m.build());
        if self.uses.var(Var::Request) {
            let mut r = MapBuilder::with_capacity(1);
            r.insert("headers", cel::headers_value(caller.headers));
            b.set(Var::Request, r.build());
        }
        if self.uses.var(Var::Source) {
            let mut s = MapBuilder::with_capacity(2);
            s.insert("address", caller.source.ip().to_string())
                .insert("port", caller.source.port() as i64);
            b.set(Var::Source, s.build());
        }
        if let Some(claims) = caller.jwt {
            b.set(Var::Jwt, cel::json_to_value(claims));
        }
        if let (Some(k), true) = (caller.api_key, self.uses.var(Var::ApiKey)) {
            b.set(Var::ApiKey, k.clone());
        }
        let scope = b.scope(self.uses);
        self.rules.iter().any(|r| r.matches(&scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authz(rules: &[&str]) -> Authz {
        Authz::compile(&config::McpAuthorization {
            rules: rules.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn caller(h: &HeaderMap) -> Caller<'_> {
        Caller {
            headers: h,
            source: "127.0.0.1:5000".parse().unwrap(),
            jwt: None,
            api_key: None,
            tool_guard: None,
        }
    }

    #[test]
    fn rules_see_tool_target_method_and_headers() {
        let h = HeaderMap::new();
        let a = authz(&[
            r#"mcp.tool.name == "echo""#,
            r#"mcp.tool.target == "admin" && mcp.method == "tools/call""#,
        ]);
        assert!(a.allows(&caller(&h), "tools/call", "everything", "echo"));
        assert!(!a.allows(&caller(&h), "tools/call", "everything", "add"));
        assert!(a.allows(&caller(&h), "tools/call", "admin", "anything"));

        let a = authz(&[r#"request.headers["x-team"] == "ops""#]);
        assert!(
            !a.allows(&caller(&h), "tools/call", "t", "echo"),
            "a missing header denies"
        );
        let mut h = HeaderMap::new();
        h.insert("x-team", "ops".parse().unwrap());
        assert!(a.allows(&caller(&h), "tools/call", "t", "echo"));
    }

    #[test]
    fn jwt_claims_are_bound() {
        let h = HeaderMap::new();
        let a = authz(&[r#"jwt.sub == "alice""#]);
        let claims = serde_json::json!({"sub": "alice"});
        let c = Caller {
            headers: &h,
            source: "127.0.0.1:1".parse().unwrap(),
            jwt: Some(&claims),
            api_key: None,
            tool_guard: None,
        };
        assert!(a.allows(&c, "tools/call", "t", "x"));
        assert!(!a.allows(&caller(&h), "tools/call", "t", "x"));
    }

    #[test]
    fn rules_see_the_api_key() {
        let h = HeaderMap::new();
        let a = authz(&[r#"apiKey.team == "math" && mcp.tool.name == "add""#]);
        let mut k = cel::MapBuilder::with_capacity(1);
        k.insert("team", "math");
        let key = k.build();
        let c = Caller {
            headers: &h,
            source: "127.0.0.1:1".parse().unwrap(),
            jwt: None,
            api_key: Some(&key),
            tool_guard: None,
        };
        assert!(a.allows(&c, "tools/call", "t", "add"));
        assert!(!a.allows(&c, "tools/call", "t", "sub"));
        assert!(!a.allows(&caller(&h), "tools/call", "t", "add"));
    }
}
