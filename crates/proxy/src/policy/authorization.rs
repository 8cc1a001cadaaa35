//! `authorization` (route phase): CEL `allow` / `deny` rules over `request`, `source`, `jwt`,
//! `apiKey`, `basicAuth` and, on LLM routes, `llm.requestModel`. A request is refused (403)
//! when a `deny` rule is true, or when there are `allow` rules and none is true. A rule that
//! cannot be evaluated (most often: it reads a header or field this request does not have) is
//! not true, as in `mcpAuthorization`; so an allow-list fails closed, and a deny rule applies
//! only to requests it can judge. Rules run on the request head, unless one reads `llm` on an
//! LLM route or `a2a` on an A2A route: then they run once the body is read (the model; the
//! A2A operation, task and context of a JSON-RPC call).

use bytes::Bytes;
use cel::{Expression, Uses, Var};
use http::request::Parts;
use http::StatusCode;

use super::api_key::refusal;
use super::request_cel;
use super::PolicyError;
use crate::context::RequestCtx;
use crate::governance::PhaseEnv;
use crate::pipeline::{Flow, Phase};

pub struct Authorization {
    allow: Vec<Expression>,
    deny: Vec<Expression>,
    uses: Uses,
    /// The rules wait for the body (they read the model on an LLM route, the A2A call on an
    /// A2A route).
    on_body: bool,
    llm_route: bool,
}

impl Authorization {
    pub fn compile(c: &config::Authorization, env: &PhaseEnv) -> Result<Self, PolicyError> {
        let (mut allow, mut deny) = (Vec::new(), Vec::new());
        let mut uses = Uses::default();
        for (i, rule) in c.rules.iter().enumerate() {
            let (list, source) = match (&rule.allow, &rule.deny) {
                (Some(e), None) => (&mut allow, e),
                (None, Some(e)) => (&mut deny, e),
                _ => {
                    return Err(PolicyError::new(format!(
                        "authorization.rules[{i}]: exactly one of `allow` and `deny`"
                    )))
                }
            };
            let e = Expression::compile(source)
                .map_err(|e| PolicyError::new(format!("authorization.rules[{i}]: {e}")))?;
            uses = uses.union(e.uses());
            list.push(e);
        }
        Ok(Authorization {
            on_body: (env.llm_route && uses.var(Var::Llm)) || (env.a2a_route && uses.var(Var::A2a)),
            llm_route: env.llm_route,
            allow,
            deny,
            uses,
        })
    }

    fn decide(&self, ctx: &RequestCtx<'_>, req: &Parts) -> Flow {
        let scope = request_cel::bindings(ctx, req, self.uses).scope(self.uses);
        let refused = self.deny.iter().any(|r| r.matches(&scope))
            || (!self.allow.is_empty() && !self.allow.iter().any(|r| r.matches(&scope)));
        if !refused {
            return Flow::Continue;
        }
        Flow::Respond(refusal(
            ctx,
            StatusCode::FORBIDDEN,
            "forbidden",
            "the authorization policy does not allow this request".into(),
        ))
    }
}

impl Phase for Authorization {
    fn request_headers(&self, ctx: &mut RequestCtx<'_>, req: &Parts) -> Flow {
        match self.on_body {
            true => Flow::Continue,
            false => self.decide(ctx, req),
        }
    }

    fn reads_request_body(&self) -> bool {
        self.on_body
    }

    fn request_body(&self, ctx: &mut RequestCtx<'_>, req: &Parts, body: &mut Bytes) -> Flow {
        if self.llm_route {
            super::read_model(ctx, req, body);
        }
        self.decide(ctx, req)
    }
}
