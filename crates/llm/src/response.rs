//! Non-streaming response translation: the client's dialect decides the
//! route (`Dialect::translate_response`), the provider's dialect reads the
//! info and translates (`Dialect::response_info`, `Dialect::response_to`).

use crate::dialect::table;
use crate::{Format, LlmError, ResponseInfo};

/// Non-streaming successful (2xx) response body from the provider (egress
/// format) -> body for the client (ingress format). When ingress == egress
/// the returned body is `None` (forward the original bytes) and only the
/// info is extracted, through a small typed view rather than a full `Value`.
pub fn translate_response(
    ingress: Format,
    egress: Format,
    body: &[u8],
) -> Result<(Option<Vec<u8>>, ResponseInfo), LlmError> {
    translate_response_with_model(ingress, egress, body, None)
}

/// [`translate_response`], with the model sent upstream standing in where the
/// provider's body names none (a Bedrock Converse response never does).
pub fn translate_response_with_model(
    ingress: Format,
    egress: Format,
    body: &[u8],
    upstream_model: Option<&str>,
) -> Result<(Option<Vec<u8>>, ResponseInfo), LlmError> {
    let route = table::route(ingress, egress);
    route.client.translate_response(route, body, upstream_model)
}
