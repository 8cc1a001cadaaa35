//! The default fields of a log line and attributes of a span, built from a record without
//! copying its strings: this runs for every request.

use serde::ser::{Serialize, Serializer};
use serde_json::Value as Json;

use crate::record::{LlmRecord, McpRecord, RequestRecord};

/// A field value borrowed from the record where it can be.
pub(crate) enum Field<'a> {
    Str(&'a str),
    String(String),
    U64(u64),
    F64(f64),
    Bool(bool),
    Json(&'a Json),
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Str(v) => s.serialize_str(v),
            Field::String(v) => s.serialize_str(v),
            Field::U64(v) => s.serialize_u64(*v),
            Field::F64(v) => s.serialize_f64(*v),
            Field::Bool(v) => s.serialize_bool(*v),
            Field::Json(v) => v.serialize(s),
        }
    }
}

impl Field<'_> {
    /// The value as text, for the `key=value` format.
    pub(crate) fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Field::Str(v) => (*v).into(),
            Field::String(v) => v.as_str().into(),
            Field::U64(v) => v.to_string().into(),
            Field::F64(v) => v.to_string().into(),
            Field::Bool(v) => v.to_string().into(),
            Field::Json(Json::String(v)) => v.as_str().into(),
            Field::Json(v) => v.to_string().into(),
        }
    }
}

pub(crate) type Fields<'a> = Vec<(&'static str, Field<'a>)>;

/// The access log's default fields, in order. Absent values are left out.
pub(crate) fn default_fields(rec: &RequestRecord) -> Fields<'_> {
    let mut f: Fields<'_> = Vec::with_capacity(28);
    f.push((
        "time",
        Field::String(humantime::format_rfc3339_millis(rec.start_time).to_string()),
    ));
    f.push(("method", Field::Str(rec.method.as_str())));
    f.push(("path", Field::Str(rec.uri.path())));
    f.push(("status", Field::U64(rec.status.into())));
    f.push((
        "duration_ms",
        Field::F64((rec.start.elapsed().as_secs_f64() * 1e6).round() / 1e3),
    ));
    f.push(("bytes_in", Field::U64(rec.bytes_in)));
    f.push(("bytes_out", Field::U64(rec.bytes_out)));
    f.push(("bind", Field::Str(&rec.bind)));
    for (k, v) in [
        ("listener", &rec.listener),
        ("route", &rec.route),
        ("backend", &rec.backend),
        ("upstream", &rec.upstream),
    ] {
        if let Some(v) = v {
            f.push((k, Field::Str(v)));
        }
    }
    f.push(("src", Field::String(rec.peer.to_string())));
    if !rec.request_id.is_empty() {
        f.push(("request_id", Field::Str(&rec.request_id)));
    }
    if let Some(t) = rec.trace {
        f.push(("trace_id", Field::String(t.trace_id_hex())));
        f.push(("span_id", Field::String(t.span_id_hex())));
    }
    if let Some(e) = rec.error {
        f.push(("error", Field::Str(e)));
    }
    if rec.aborted {
        f.push(("aborted", Field::Bool(true)));
    }
    if let Some(llm) = &rec.llm {
        gen_ai_fields(llm, &mut f);
    }
    if let Some(mcp) = &rec.mcp {
        mcp_fields(mcp, &mut f);
    }
    f
}

fn gen_ai_fields<'a>(llm: &'a LlmRecord, f: &mut Fields<'a>) {
    f.push(("gen_ai.operation.name", Field::Str(llm.operation)));
    f.push(("gen_ai.provider.name", Field::Str(llm.provider)));
    if let Some(m) = &llm.request_model {
        f.push(("gen_ai.request.model", Field::Str(m)));
    }
    if let Some(m) = &llm.response_model {
        f.push(("gen_ai.response.model", Field::Str(m)));
    }
    for (k, v) in [
        ("gen_ai.usage.input_tokens", llm.input_tokens),
        ("gen_ai.usage.output_tokens", llm.output_tokens),
        (
            "gen_ai.usage.cache_read.input_tokens",
            llm.cached_input_tokens,
        ),
        ("gen_ai.usage.reasoning.output_tokens", llm.reasoning_tokens),
    ] {
        if let Some(n) = v {
            f.push((k, Field::U64(n)));
        }
    }
    if llm.streaming {
        f.push(("gen_ai.response.streaming", Field::Bool(true)));
    }
}

fn mcp_fields<'a>(mcp: &'a McpRecord, f: &mut Fields<'a>) {
    for (k, v) in [
        ("mcp.method.name", &mcp.method),
        ("gen_ai.tool.name", &mcp.tool),
        ("mcp.target", &mcp.target),
        ("mcp.session.id", &mcp.session_id),
    ] {
        if let Some(v) = v {
            f.push((k, Field::Str(v)));
        }
    }
}

/// A span's attributes: the OpenTelemetry HTTP server names, then GenAI and MCP ones.
pub(crate) fn span_attributes(rec: &RequestRecord) -> Fields<'_> {
    let mut f: Fields<'_> = Vec::with_capacity(28);
    f.push(("http.request.method", Field::Str(rec.method.as_str())));
    f.push(("url.path", Field::Str(rec.uri.path())));
    if let Some(q) = rec.uri.query() {
        f.push(("url.query", Field::Str(q)));
    }
    f.push((
        "url.scheme",
        Field::Str(if rec.tls { "https" } else { "http" }),
    ));
    f.push(("http.response.status_code", Field::U64(rec.status.into())));
    f.push(("client.address", Field::String(rec.peer.ip().to_string())));
    f.push(("client.port", Field::U64(rec.peer.port().into())));
    if let Some(h) = &rec.host {
        f.push(("server.address", Field::Str(h)));
    }
    if let Some(r) = &rec.route {
        f.push(("http.route", Field::Str(r)));
    }
    if let Some(b) = &rec.backend {
        f.push(("switchyard.backend", Field::Str(b)));
    }
    if let Some(u) = &rec.upstream {
        f.push(("switchyard.upstream", Field::Str(u)));
    }
    f.push(("switchyard.bind", Field::Str(&rec.bind)));
    if !rec.request_id.is_empty() {
        f.push(("switchyard.request_id", Field::Str(&rec.request_id)));
    }
    if let Some(e) = rec.error {
        f.push(("error.type", Field::Str(e)));
    } else if rec.status >= 500 {
        f.push(("error.type", Field::String(rec.status.to_string())));
    }
    if let Some(llm) = &rec.llm {
        gen_ai_fields(llm, &mut f);
        for (k, v) in &llm.params {
            let name = match k.as_str() {
                "temperature" => "gen_ai.request.temperature",
                "top_p" => "gen_ai.request.top_p",
                "top_k" => "gen_ai.request.top_k",
                "max_tokens" | "max_completion_tokens" | "max_output_tokens" => {
                    "gen_ai.request.max_tokens"
                }
                "seed" => "gen_ai.request.seed",
                "frequency_penalty" => "gen_ai.request.frequency_penalty",
                "presence_penalty" => "gen_ai.request.presence_penalty",
                "stop" | "stop_sequences" => "gen_ai.request.stop_sequences",
                _ => continue,
            };
            f.push((name, Field::Json(v)));
        }
    }
    if let Some(mcp) = &rec.mcp {
        mcp_fields(mcp, &mut f);
    }
    f
}
