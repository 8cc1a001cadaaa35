//! CEL (Common Expression Language) for Switchyard's policies and telemetry fields.
//!
//! Every expression is compiled once, when the config loads ([`Expression::compile`]); a
//! request evaluates the compiled program against the variables it binds ([`Bindings`]):
//!
//! | variable | what it holds |
//! |---|---|
//! | `request` | `method`, `path`, `host`, `scheme`, `version`, `headers` (lower-case names), `body` (when some expression reads it) |
//! | `response` | `code`, `headers`, `body` (when read) |
//! | `source` | `address`, `port` of the client |
//! | `backend` | `name`, `type` (`host`, `ai`, `mcp`), `protocol` |
//! | `llm` | `provider`, `requestModel`, `responseModel`, `inputTokens`, `outputTokens`, `cachedInputTokens`, `reasoningTokens`, `totalTokens`, `streaming`, `prompt` (list of `{role, content}`), `completion` (list of strings), `params` |
//! | `mcp` | `method`, `tool` (`name`, `target`), `session` (`id`) |
//! | `a2a` | `method`, `binding`, `version`, `task` (`id`, `state`), `contextId`, `artifacts` |
//! | `jwt` | the verified token's claims |
//! | `apiKey` | the caller's API key (`apiKeyAuth`): `name`, `team`, `org`, `models`, `metadata`, `virtual` |
//! | `basicAuth` | the caller's `user` (`basicAuth`) |
//!
//! A variable the request does not have is an empty map, so `has(llm.inputTokens)` and
//! `default(llm.inputTokens, 0)` work on every request. Credential headers are redacted in
//! `request.headers` and `response.headers`.
//!
//! Functions beyond the standard library: `json`, `toJson`, `flatten`, `flattenRecursive`,
//! `default` (a macro: its first argument may be a missing field), `coalesce`,
//! `regexReplace`, `uuid`, `base64.encode` / `base64.decode` (the `cel` crate's encoders
//! extension) and its strings extension (`lowerAscii`, `replace`, `split`, ...).

mod functions;
mod values;

use std::sync::{Arc, OnceLock};

pub use ::cel::Value;
pub use values::{
    expand_field, headers_value, json_to_value, value_to_json, FieldValue, Flattened, MapBuilder,
};

/// A top-level variable an expression may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    Request,
    Response,
    Source,
    Backend,
    Llm,
    Mcp,
    A2a,
    Jwt,
    ApiKey,
    BasicAuth,
}

impl Var {
    pub const ALL: [Var; 10] = [
        Var::Request,
        Var::Response,
        Var::Source,
        Var::Backend,
        Var::Llm,
        Var::Mcp,
        Var::A2a,
        Var::Jwt,
        Var::ApiKey,
        Var::BasicAuth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Var::Request => "request",
            Var::Response => "response",
            Var::Source => "source",
            Var::Backend => "backend",
            Var::Llm => "llm",
            Var::Mcp => "mcp",
            Var::A2a => "a2a",
            Var::Jwt => "jwt",
            Var::ApiKey => "apiKey",
            Var::BasicAuth => "basicAuth",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

/// What a set of expressions reads, so a request computes (and buffers) only that.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uses {
    vars: u16,
    request_body: bool,
    response_body: bool,
    request_headers: bool,
    response_headers: bool,
    /// `llm.prompt`, `llm.completion`, `llm.params` (or the whole `llm`): the costly parts.
    llm_text: bool,
}

impl Uses {
    pub fn var(&self, v: Var) -> bool {
        self.vars & v.bit() != 0
    }

    /// Some expression reads `request.body` (or the whole `request`).
    pub fn request_body(&self) -> bool {
        self.request_body
    }

    /// Some expression reads `response.body` (or the whole `response`).
    pub fn response_body(&self) -> bool {
        self.response_body
    }

    /// Some expression reads `request.headers` (or the whole `request`).
    pub fn request_headers(&self) -> bool {
        self.request_headers
    }

    /// Some expression reads `response.headers` (or the whole `response`).
    pub fn response_headers(&self) -> bool {
        self.response_headers
    }

    /// Some expression reads the prompt, the completion or the parameters of an LLM call.
    pub fn llm_text(&self) -> bool {
        self.llm_text
    }

    pub fn union(self, other: Uses) -> Uses {
        Uses {
            vars: self.vars | other.vars,
            request_body: self.request_body || other.request_body,
            response_body: self.response_body || other.response_body,
            request_headers: self.request_headers || other.request_headers,
            response_headers: self.response_headers || other.response_headers,
            llm_text: self.llm_text || other.llm_text,
        }
    }

    pub fn any(&self) -> bool {
        self.vars != 0
    }

    /// These uses plus variable `v`, for a caller that always binds it.
    pub fn with_var(mut self, v: Var) -> Uses {
        self.vars |= v.bit();
        self
    }
}

/// A compiled CEL expression.
#[derive(Clone)]
pub struct Expression {
    source: Arc<str>,
    program: Arc<::cel::Program>,
    uses: Uses,
    /// `var.field...` when that is the whole expression.
    path: Option<(Var, Arc<[String]>)>,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

impl Expression {
    /// Parses and compiles `source`. The error is the parser's, with the position and a caret
    /// under the offending token.
    pub fn compile(source: &str) -> Result<Expression, String> {
        let program = env().compile(source).map_err(|e| e.to_string())?;
        let mut uses = Uses::default();
        let references = program.references();
        for v in Var::ALL {
            if references.has_variable(v.name()) {
                uses.vars |= v.bit();
            }
        }
        uses.request_body = uses.var(Var::Request) && reads_field(source, "request", "body");
        uses.response_body = uses.var(Var::Response) && reads_field(source, "response", "body");
        uses.llm_text = uses.var(Var::Llm)
            && ["prompt", "completion", "params"]
                .iter()
                .any(|f| reads_field(source, "llm", f));
        uses.request_headers = uses.var(Var::Request) && reads_field(source, "request", "headers");
        uses.response_headers =
            uses.var(Var::Response) && reads_field(source, "response", "headers");
        let path = member_path(program.expression());
        Ok(Expression {
            source: source.into(),
            program: Arc::new(program),
            uses,
            path,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn uses(&self) -> Uses {
        self.uses
    }

    /// The variable and field names when the whole expression is a plain field selection
    /// (`llm.provider`, `request.path`): a caller may read such a field straight from its
    /// data instead of binding the variable, which builds a map per request.
    pub fn member_path(&self) -> Option<(Var, &[String])> {
        self.path.as_ref().map(|(v, p)| (*v, &p[..]))
    }

    /// Evaluates against `bindings`. Errors (a missing key, a type mismatch, a failing
    /// function) are returned as text.
    pub fn eval(&self, bindings: &Bindings) -> Result<Value, String> {
        self.eval_in(&bindings.scope(self.uses))
            .map_err(|e| e.to_string())
    }

    /// Evaluates in a scope built once for several expressions ([`Bindings::scope`]). The
    /// error is formatted only if shown: telemetry fields that do not apply to a request (an
    /// `llm.*` field on a plain HTTP route) fail at every request and are skipped.
    pub fn eval_in(&self, scope: &Scope) -> Result<Value, EvalError> {
        self.program.execute(&scope.0).map_err(EvalError)
    }

    /// For conditions: true only when the expression evaluates to `true`.
    pub fn matches(&self, scope: &Scope) -> bool {
        matches!(self.eval_in(scope), Ok(Value::Bool(true)))
    }
}

/// `var.a.b` as (var, [a, b]); `None` for anything else (calls, indexing, `has()`, literals).
fn member_path(expr: &::cel::common::ast::IdedExpr) -> Option<(Var, Arc<[String]>)> {
    use ::cel::common::ast::Expr;
    let mut fields = Vec::new();
    let mut at = expr;
    loop {
        match &at.expr {
            Expr::Select(sel) if !sel.test => {
                fields.push(sel.field.clone());
                at = &sel.operand;
            }
            Expr::Ident(name) if !fields.is_empty() => {
                let var = Var::ALL.into_iter().find(|v| v.name() == name)?;
                fields.reverse();
                return Some((var, fields.into()));
            }
            _ => return None,
        }
    }
}

/// Why an expression did not evaluate (a missing key, a type mismatch, a failing function).
#[derive(Debug)]
pub struct EvalError(::cel::ExecutionError);

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The variables of one request.
#[derive(Default, Clone)]
pub struct Bindings {
    values: [Option<Value>; 9],
}

impl Bindings {
    pub fn set(&mut self, var: Var, value: Value) {
        self.values[var as usize] = Some(value);
    }

    pub fn get(&self, var: Var) -> Option<&Value> {
        self.values[var as usize].as_ref()
    }

    pub fn has(&self, var: Var) -> bool {
        self.values[var as usize].is_some()
    }

    /// An evaluation scope holding the variables `uses` names (a missing one as an empty
    /// map), to evaluate several expressions without binding them again.
    pub fn scope(&self, uses: Uses) -> Scope {
        let mut ctx = root().new_inner_scope();
        for v in Var::ALL {
            if uses.var(v) {
                let value = self.values[v as usize]
                    .clone()
                    .unwrap_or_else(values::empty_map);
                ctx.add_variable_from_value(v.name(), value);
            }
        }
        Scope(ctx)
    }
}

/// Variables bound for evaluation; see [`Bindings::scope`].
pub struct Scope(::cel::Context<'static, 'static>);

fn env() -> &'static Arc<::cel::Env> {
    static ENV: OnceLock<Arc<::cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = ::cel::Env::stdlib();
        // Both register fresh names on a fresh environment; they cannot collide.
        let _ = env.add_extension(::cel::extensions::encoders);
        let _ = env.add_extension(::cel::extensions::strings);
        let _ = env.add_macro(functions::default_macro());
        Arc::new(env)
    })
}

/// The root context: the environment and the gateway's functions, shared by every scope.
fn root() -> &'static ::cel::Context<'static, 'static> {
    static ROOT: OnceLock<::cel::Context<'static, 'static>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mut ctx = ::cel::Context::with_env(env().clone());
        functions::register(&mut ctx);
        ctx
    })
}

/// Whether `source` reads `<var>.<field>`, `<var>["<field>"]`, or `<var>` whole (which
/// includes the field). Conservative: a mention inside a string literal counts too, which at
/// worst keeps a body or headers nobody reads.
fn reads_field(source: &str, var: &str, name: &str) -> bool {
    let bytes = source.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut from = 0;
    while let Some(i) = source[from..].find(var).map(|i| i + from) {
        from = i + var.len();
        let before = i.checked_sub(1).map(|j| bytes[j]);
        if before.is_some_and(|b| is_ident(b) || b == b'.') {
            continue;
        }
        if bytes.get(from).is_some_and(|&b| is_ident(b)) {
            continue;
        }
        let rest = source[from..].trim_start();
        let field = if let Some(r) = rest.strip_prefix('.') {
            r.trim_start()
        } else if let Some(r) = rest.strip_prefix('[') {
            r.trim_start().trim_start_matches(['"', '\''])
        } else {
            return true; // the whole variable
        };
        if field.starts_with(name)
            && !field
                .as_bytes()
                .get(name.len())
                .is_some_and(|&b| is_ident(b))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests;
