//! What an LLM call will cost before it is made: the prompt counted with the gateway's
//! tokenizer (`llm::estimate_input_tokens`) and the completion at its `max_tokens` (or a
//! configured default). Reserved before the call, settled with the provider's usage after.

use http::request::Parts;

use crate::context::RequestCtx;

/// A call's expected tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub input: u64,
    /// The completion's ceiling: `max_tokens` (any spelling) or the default.
    pub output: u64,
    /// The client set a ceiling itself (the reservation then bounds the real usage).
    pub bounded: bool,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// The estimate for a request body in `format`; `None` when it is not an LLM call the
/// gateway can read (it is then not charged tokens before the call).
pub fn estimate(
    format: llm::Format,
    req: &Parts,
    body: &[u8],
    default_max_tokens: u64,
) -> Option<Estimate> {
    if body.is_empty()
        || req.method != http::Method::POST
        || req.uri.path().ends_with("/count_tokens")
    {
        return None;
    }
    let empty = serde_json::Map::new();
    let opts = llm::RequestOptions {
        model_override: None,
        model_aliases: &[],
        defaults: &empty,
        overrides: &empty,
        default_max_tokens,
    };
    let prepared = llm::prepare_request(format, format, body, &opts).ok()?;
    let ceiling = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| prepared.params.get(*k).and_then(|v| v.as_u64()));
    Some(Estimate {
        input: llm::estimate_input_tokens(&prepared.prompt),
        output: ceiling.unwrap_or(default_max_tokens),
        bounded: ceiling.is_some(),
    })
}

/// The request's estimate, computed once per request and shared by every policy that charges
/// tokens (the tokenizer runs once); a request without its own ceiling gets the caller's
/// `default_max_tokens` (each policy's own default, whichever ran first).
pub fn cached(
    ctx: &mut RequestCtx<'_>,
    req: &Parts,
    body: &[u8],
    default_max_tokens: u64,
) -> Option<Estimate> {
    if ctx.token_estimate.is_none() {
        ctx.token_estimate = Some(ctx.dialect.and_then(|f| estimate(f, req, body, 0)));
    }
    ctx.token_estimate.flatten().map(|e| match e.bounded {
        true => e,
        false => Estimate {
            output: default_max_tokens,
            ..e
        },
    })
}
