//! Request preparation: parse the client's body, apply gateway options,
//! pick the upstream model, extract prompt/params, translate. The client's
//! dialect runs the pipeline (`Dialect::prepare`), the provider's
//! translates (`Dialect::request_from`).

use serde_json::Value;

pub use crate::dialect::apply_request_options;
use crate::dialect::table;
use crate::{Format, LlmError, PreparedRequest, RequestOptions};

/// Parse the client's body (ingress format), apply overrides/defaults/aliases/model_override,
/// translate to egress format.
///
/// Order: overrides (always set) then defaults (set when absent) are applied
/// to the ingress-format object; then the model is resolved
/// (`model_override`, else first matching alias, else as requested); then the
/// object is translated. When ingress == egress the object is re-serialised
/// with key order preserved and unknown fields kept.
pub fn prepare_request(
    ingress: Format,
    egress: Format,
    body: &[u8],
    opts: &RequestOptions,
) -> Result<PreparedRequest, LlmError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        LlmError::bad_request(format!(
            "request body is not valid JSON: {} at line {} column {}",
            describe_json_error(&e),
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(req) = value else {
        return Err(LlmError::bad_request("request body must be a JSON object"));
    };
    let route = table::route(ingress, egress);
    route.client.check_client()?;
    route.provider.check_provider(ingress)?;
    route.client.prepare(route, req, opts)
}

fn describe_json_error(e: &serde_json::Error) -> String {
    // serde_json's Display already appends " at line L column C"; keep the
    // cause only so the position is stated once.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}
