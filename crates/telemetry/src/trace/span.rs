//! A request's span encoded as OTLP protobuf: its default name and its attributes.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue};
use serde_json::Value as Json;

use crate::otlp;
use crate::record::RequestRecord;

/// A span name from `fields.add` (`span.name`).
pub(super) enum SpanName<'a> {
    Borrowed(&'a str),
    Owned(std::sync::Arc<String>),
}

thread_local! {
    /// Where a span is encoded before it is copied into the export queue.
    pub(super) static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(2048));
}

/// `{gen_ai.operation.name} {model}` for LLM calls, `{mcp.method.name} {tool}` for MCP, else
/// `{method} {route}` (the HTTP server span convention, the route standing for `http.route`);
/// in pieces, joined as the span is encoded.
pub(super) fn default_span_name(rec: &RequestRecord) -> [&str; 3] {
    let (first, second) = match (&rec.llm, &rec.mcp) {
        (Some(llm), _) => (llm.operation, llm.request_model.as_deref()),
        (None, Some(mcp)) if mcp.method.is_some() => {
            (mcp.method.as_deref().unwrap_or(""), mcp.tool.as_deref())
        }
        _ => (rec.method.as_str(), rec.route.as_deref()),
    };
    match second {
        Some(s) => [first, " ", s],
        None => [first, "", ""],
    }
}

pub(super) fn write_field(
    span: &mut otlp::SpanWriter<'_>,
    key: &str,
    v: &crate::fields::Field<'_>,
) {
    use crate::fields::Field;
    use otlp::Scalar;
    let scalar = match v {
        Field::Str(s) => Scalar::Str(s.as_bytes()),
        Field::Ascii(s) => Scalar::Str(s),
        Field::U64(n) => Scalar::Int((*n).min(i64::MAX as u64) as i64),
        Field::DurationMs(d) => Scalar::Double(Field::duration_ms_f64(*d)),
        Field::Bool(b) => Scalar::Bool(*b),
        Field::Json(j) => return write_json(span, key, j),
    };
    span.attribute(key, scalar);
}

fn write_json(span: &mut otlp::SpanWriter<'_>, key: &str, v: &Json) {
    use otlp::Scalar;
    match v {
        Json::Bool(b) => span.attribute(key, Scalar::Bool(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => span.attribute(key, Scalar::Int(i)),
            None => span.attribute(key, Scalar::Double(n.as_f64().unwrap_or(0.0))),
        },
        Json::String(s) => span.attribute(key, Scalar::Str(s.as_bytes())),
        other => span.attribute_any(key, &any_value_of(other.clone())),
    }
}

fn any_value_of(v: Json) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        Json::Bool(b) => V::BoolValue(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => V::StringValue(s),
        Json::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            V::ArrayValue(ArrayValue {
                values: items.into_iter().map(any_value_of).collect(),
            })
        }
        other => V::StringValue(other.to_string()),
    };
    AnyValue { value: Some(value) }
}
