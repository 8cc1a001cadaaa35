//! The default fields of a log line and attributes of a span, built from a record without
//! copying its strings: this runs for every request.

use serde::ser::{Serialize, Serializer};
use serde_json::Value as Json;

use crate::record::{LlmRecord, McpRecord, RequestRecord};

/// A field value borrowed from the record where it can be.
pub(crate) enum Field<'a> {
    Str(&'a str),
    /// Short text made for this record (a timestamp, an id, an address), kept off the heap.
    Inline(Inline),
    U64(u64),
    F64(f64),
    Bool(bool),
    Json(&'a Json),
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Str(v) => s.serialize_str(v),
            Field::Inline(v) => s.serialize_str(v.as_str()),
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
            Field::Inline(v) => v.as_str().into(),
            Field::U64(v) => v.to_string().into(),
            Field::F64(v) => v.to_string().into(),
            Field::Bool(v) => v.to_string().into(),
            Field::Json(Json::String(v)) => v.as_str().into(),
            Field::Json(v) => v.to_string().into(),
        }
    }
}

/// Text of at most [`Inline::CAPACITY`] bytes, formatted in place: every request makes a few
/// (its time, trace and span ids, the client address), and a heap string each adds up.
#[derive(Clone, Copy)]
pub(crate) struct Inline {
    buf: [u8; Inline::CAPACITY],
    len: u8,
}

impl Inline {
    /// Enough for an RFC 3339 time, a hex trace id and any socket address (an IPv6 address
    /// with a scope id and a port is 65 bytes at most).
    pub(crate) const CAPACITY: usize = 72;

    pub(crate) fn new() -> Inline {
        Inline {
            buf: [0; Inline::CAPACITY],
            len: 0,
        }
    }

    /// `value` formatted, cut at [`Inline::CAPACITY`] bytes (on a character boundary).
    pub(crate) fn display(value: impl std::fmt::Display) -> Inline {
        use std::fmt::Write;
        let mut out = Inline::new();
        let _ = write!(out, "{value}");
        out
    }

    /// Lowercase hex of `bytes` (up to half the capacity).
    pub(crate) fn hex(bytes: &[u8]) -> Inline {
        let mut out = Inline::new();
        out.push_hex(bytes);
        out
    }

    pub(crate) fn push_hex(&mut self, bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for b in bytes {
            if self.len as usize + 2 > Inline::CAPACITY {
                return;
            }
            let at = self.len as usize;
            self.buf[at] = DIGITS[(b >> 4) as usize];
            self.buf[at + 1] = DIGITS[(b & 0xf) as usize];
            self.len += 2;
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only whole UTF-8 strings are ever appended (`write_str` cuts on a boundary).
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or_default()
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl std::fmt::Write for Inline {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let at = self.len as usize;
        let room = Inline::CAPACITY - at;
        if s.len() <= room {
            self.buf[at..at + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len() as u8;
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.buf[at..at + cut].copy_from_slice(&s.as_bytes()[..cut]);
        self.len += cut as u8;
        Err(std::fmt::Error)
    }
}

pub(crate) type Fields<'a> = Vec<(&'static str, Field<'a>)>;

/// The access log's default fields, in order. Absent values are left out.
pub(crate) fn default_fields(rec: &RequestRecord) -> Fields<'_> {
    let mut f: Fields<'_> = Vec::with_capacity(28);
    f.push((
        "time",
        Field::Inline(Inline::display(humantime::format_rfc3339_millis(
            rec.start_time,
        ))),
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
    f.push(("src", Field::Inline(Inline::display(rec.peer))));
    if !rec.request_id.is_empty() {
        f.push(("request_id", Field::Str(&rec.request_id)));
    }
    if let Some(t) = rec.trace {
        f.push(("trace_id", Field::Inline(Inline::hex(&t.trace_id))));
        f.push(("span_id", Field::Inline(Inline::hex(&t.span_id))));
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
    f.push((
        "client.address",
        Field::Inline(Inline::display(rec.peer.ip())),
    ));
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
        f.push(("error.type", Field::Inline(Inline::display(rec.status))));
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
