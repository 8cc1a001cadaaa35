//! The default fields of a log line and attributes of a span, built from a record without
//! copying its strings: this runs for every request.

use serde::ser::{Serialize, Serializer};
use serde_json::Value as Json;

use std::borrow::Cow;

use crate::record::{A2aRecord, LlmRecord, McpRecord, RequestRecord};
use crate::Computed;

/// A field value, borrowed from the record or from text made for it.
#[derive(Clone, Copy)]
pub(crate) enum Field<'a> {
    /// Text from the request or the config: escaped where a format needs it.
    Str(&'a str),
    /// ASCII the gateway made (a time, an id, an address, a number): never needs escaping,
    /// nor a UTF-8 check.
    Ascii(&'a [u8]),
    U64(u64),
    /// Written in milliseconds with three decimals.
    DurationMs(std::time::Duration),
    Bool(bool),
    Json(&'a Json),
}

impl Field<'_> {
    /// A duration in milliseconds, rounded to the microsecond.
    pub(crate) fn duration_ms_f64(d: std::time::Duration) -> f64 {
        d.as_micros() as f64 / 1e3
    }
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Str(v) => s.serialize_str(v),
            Field::Ascii(v) => s.serialize_str(std::str::from_utf8(v).unwrap_or_default()),
            Field::U64(v) => s.serialize_u64(*v),
            Field::DurationMs(d) => s.serialize_f64(Field::duration_ms_f64(*d)),
            Field::Bool(v) => s.serialize_bool(*v),
            Field::Json(v) => v.serialize(s),
        }
    }
}

/// A `fields.add` value: a string borrowed from the record (a plain field selection), or
/// what the expression gave.
#[derive(Debug)]
pub(crate) enum AddedValue<'a> {
    Str(&'a str),
    Cel(cel::FieldValue),
}

impl AddedValue<'_> {
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, AddedValue::Cel(v) if v.is_null())
    }

    /// As a [`Field`]: strings borrowed as they are, the rest as JSON.
    pub(crate) fn field(&self) -> Field<'_> {
        match self {
            AddedValue::Str(s) => Field::Str(s),
            AddedValue::Cel(cel::FieldValue::Str(s)) => Field::Str(s),
            AddedValue::Cel(cel::FieldValue::Json(j)) => Field::Json(j),
        }
    }
}

/// The `fields.add` results of one log line or span, by name. Kept inline: a config adds a
/// few fields, and this is built at every request.
pub(crate) type Added<'a> = smallvec::SmallVec<[(Cow<'a, str>, AddedValue<'a>); 4]>;

/// Appends `name` = `value` to `out`; a flattened value becomes one field per key.
pub(crate) fn add_field<'a>(name: &'a str, value: Computed<'a>, out: &mut Added<'a>) {
    let value = match value {
        Computed::Str(s) => AddedValue::Str(s),
        Computed::Int(n) => AddedValue::Cel(cel::FieldValue::Json(n.into())),
        Computed::Bool(b) => AddedValue::Cel(cel::FieldValue::Json(b.into())),
        Computed::Cel(v) => {
            let mut expanded = smallvec::SmallVec::<[_; 1]>::new();
            cel::expand_field(name, v, &mut expanded);
            out.extend(expanded.into_iter().map(|(n, v)| (n, AddedValue::Cel(v))));
            return;
        }
    };
    out.push((Cow::Borrowed(name), value));
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

    /// A socket address as `Display` writes it; IPv4 without the formatting machinery.
    pub(crate) fn socket_addr(addr: std::net::SocketAddr) -> Inline {
        match addr {
            std::net::SocketAddr::V4(v4) => {
                let mut out = Inline::ipv4(*v4.ip());
                out.push_ascii(b":");
                out.push_u64(v4.port().into());
                out
            }
            v6 => Inline::display(v6),
        }
    }

    /// An IP address as `Display` writes it; IPv4 without the formatting machinery.
    pub(crate) fn ip(ip: std::net::IpAddr) -> Inline {
        match ip {
            std::net::IpAddr::V4(v4) => Inline::ipv4(v4),
            v6 => Inline::display(v6),
        }
    }

    fn ipv4(ip: std::net::Ipv4Addr) -> Inline {
        let mut out = Inline::new();
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                out.push_ascii(b".");
            }
            out.push_u64(octet.into());
        }
        out
    }

    /// RFC 3339 in UTC with milliseconds (`2026-12-06T02:53:17.177Z`), as
    /// `humantime::format_rfc3339_millis` writes it. Every log line has one: the date and time
    /// of day are formatted once per second per thread, the milliseconds each time.
    pub(crate) fn rfc3339_millis(t: std::time::SystemTime) -> Inline {
        thread_local! {
            /// The last second formatted, up to and including the `.`.
            static SECOND: std::cell::Cell<Option<(u64, Inline)>> =
                const { std::cell::Cell::new(None) };
        }
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let mut out = match SECOND.get() {
            Some((s, prefix)) if s == secs => prefix,
            _ => {
                let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
                let mut prefix = Inline::display(humantime::format_rfc3339_millis(whole));
                // "...:17.000Z": keep "...:17."
                prefix.len = prefix.len.saturating_sub(4);
                SECOND.set(Some((secs, prefix)));
                prefix
            }
        };
        let ms = since.subsec_millis();
        out.push_ascii(&[
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
        out
    }

    /// ASCII bytes, cut at the capacity.
    fn push_ascii(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.is_ascii());
        let at = self.len as usize;
        let n = bytes.len().min(Inline::CAPACITY - at);
        self.buf[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n as u8;
    }

    fn push_u64(&mut self, n: u64) {
        self.push_ascii(itoa::Buffer::new().format(n).as_bytes());
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

/// Where default fields go, one at a time in order: the log line and the span encoder take
/// them as they come, so no list of fields is built per request. Names are `'static` and need
/// no escaping.
pub(crate) trait FieldSink {
    fn field(&mut self, name: &'static str, value: Field<'_>);
}

impl<F: FnMut(&'static str, Field<'_>)> FieldSink for F {
    fn field(&mut self, name: &'static str, value: Field<'_>) {
        self(name, value)
    }
}

/// The access log's default fields, in order. Absent values are left out. `elapsed`: the
/// request's duration (read once per request by the caller).
pub(crate) fn default_fields(
    rec: &RequestRecord,
    elapsed: std::time::Duration,
    f: &mut impl FieldSink,
) {
    f.field(
        "time",
        Field::Ascii(Inline::rfc3339_millis(rec.start_time).as_bytes()),
    );
    f.field("method", Field::Str(rec.method.as_str()));
    f.field("path", Field::Str(rec.uri.path()));
    f.field("status", Field::U64(rec.status.into()));
    f.field("duration_ms", Field::DurationMs(elapsed));
    f.field("bytes_in", Field::U64(rec.bytes_in));
    f.field("bytes_out", Field::U64(rec.bytes_out));
    f.field("bind", Field::Str(&rec.bind));
    for (k, v) in [
        ("listener", &rec.listener),
        ("route", &rec.route),
        ("backend", &rec.backend),
        ("upstream", &rec.upstream),
    ] {
        if let Some(v) = v {
            f.field(k, Field::Str(v));
        }
    }
    f.field(
        "src",
        Field::Ascii(Inline::socket_addr(rec.peer).as_bytes()),
    );
    if let Some(id) = rec.request_id() {
        f.field("request_id", Field::Str(id));
    }
    if let Some(t) = rec.trace {
        f.field(
            "trace_id",
            Field::Ascii(Inline::hex(&t.trace_id).as_bytes()),
        );
        f.field("span_id", Field::Ascii(Inline::hex(&t.span_id).as_bytes()));
    }
    if let Some(e) = rec.error {
        f.field("error", Field::Str(e));
    }
    if rec.aborted {
        f.field("aborted", Field::Bool(true));
    }
    if let Some(llm) = &rec.llm {
        gen_ai_fields(llm, f);
    }
    if let Some(mcp) = &rec.mcp {
        mcp_fields(mcp, f);
    }
    if let Some(a2a) = &rec.a2a {
        a2a_fields(a2a, f);
    }
    caller_fields(rec, f);
}

/// Who called: the API key's name, team and org, or the basic-auth user (never a secret); and
/// the backends failover left or skipped (`a:rate_limited,b:circuit_open`).
fn caller_fields(rec: &RequestRecord, f: &mut impl FieldSink) {
    if !rec.failover.is_empty() {
        let mut s = String::new();
        for (i, step) in rec.failover.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&step.backend);
            s.push(':');
            s.push_str(step.cause);
        }
        f.field("switchyard.failover", Field::Str(&s));
    }
    if let Some(k) = &rec.api_key {
        f.field("apikey.name", Field::Str(&k.name));
        if let Some(t) = &k.team {
            f.field("apikey.team", Field::Str(t));
        }
        if let Some(o) = &k.org {
            f.field("apikey.org", Field::Str(o));
        }
    }
    if let Some(u) = &rec.basic_user {
        f.field("user.name", Field::Str(u));
    }
}

fn gen_ai_fields(llm: &LlmRecord, f: &mut impl FieldSink) {
    f.field("gen_ai.operation.name", Field::Str(llm.operation));
    f.field("gen_ai.provider.name", Field::Str(llm.provider));
    if let Some(m) = &llm.request_model {
        f.field("gen_ai.request.model", Field::Str(m));
    }
    if let Some(m) = &llm.response_model {
        f.field("gen_ai.response.model", Field::Str(m));
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
            f.field(k, Field::U64(n));
        }
    }
    if llm.streaming {
        f.field("gen_ai.response.streaming", Field::Bool(true));
    }
}

fn mcp_fields(mcp: &McpRecord, f: &mut impl FieldSink) {
    for (k, v) in [
        ("mcp.method.name", &mcp.method),
        ("gen_ai.tool.name", &mcp.tool),
        ("mcp.target", &mcp.target),
        ("mcp.session.id", &mcp.session_id),
    ] {
        if let Some(v) = v {
            f.field(k, Field::Str(v));
        }
    }
}

fn a2a_fields(a2a: &A2aRecord, f: &mut impl FieldSink) {
    f.field("a2a.method", Field::Str(a2a.method));
    f.field("a2a.binding", Field::Str(a2a.binding));
    f.field("a2a.version", Field::Str(a2a.version));
    if let Some(id) = &a2a.task_id {
        f.field("a2a.task.id", Field::Str(id));
    }
    if let Some(id) = &a2a.context_id {
        f.field("a2a.context.id", Field::Str(id));
    }
    if let Some(s) = a2a.task_state {
        f.field("a2a.task.state", Field::Str(s));
    }
    if a2a.events > 0 {
        f.field("a2a.events", Field::U64(a2a.events.into()));
    }
    if a2a.artifacts > 0 {
        f.field("a2a.artifacts", Field::U64(a2a.artifacts.into()));
    }
    if let Some(s) = &a2a.skill {
        f.field("a2a.skill", Field::Str(s));
    }
    if let Some(a) = &a2a.agent {
        f.field("a2a.agent", Field::Str(a));
    }
}

/// A span's attributes: the OpenTelemetry HTTP server names, then GenAI and MCP ones.
pub(crate) fn span_attributes(rec: &RequestRecord, f: &mut impl FieldSink) {
    f.field("http.request.method", Field::Str(rec.method.as_str()));
    f.field("url.path", Field::Str(rec.uri.path()));
    if let Some(q) = rec.uri.query() {
        f.field("url.query", Field::Str(q));
    }
    f.field(
        "url.scheme",
        Field::Str(if rec.tls { "https" } else { "http" }),
    );
    f.field("http.response.status_code", Field::U64(rec.status.into()));
    f.field(
        "client.address",
        Field::Ascii(Inline::ip(rec.peer.ip()).as_bytes()),
    );
    f.field("client.port", Field::U64(rec.peer.port().into()));
    if let Some(h) = &rec.host {
        f.field("server.address", Field::Str(h));
    }
    if let Some(r) = &rec.route {
        f.field("http.route", Field::Str(r));
    }
    if let Some(b) = &rec.backend {
        f.field("switchyard.backend", Field::Str(b));
    }
    if let Some(u) = &rec.upstream {
        f.field("switchyard.upstream", Field::Str(u));
    }
    f.field("switchyard.bind", Field::Str(&rec.bind));
    if let Some(id) = rec.request_id() {
        f.field("switchyard.request_id", Field::Str(id));
    }
    if let Some(e) = rec.error {
        f.field("error.type", Field::Str(e));
    } else if rec.status >= 500 {
        f.field(
            "error.type",
            Field::Ascii(itoa::Buffer::new().format(rec.status).as_bytes()),
        );
    }
    if let Some(llm) = &rec.llm {
        gen_ai_fields(llm, f);
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
            f.field(name, Field::Json(v));
        }
    }
    if let Some(mcp) = &rec.mcp {
        mcp_fields(mcp, f);
    }
    if let Some(a2a) = &rec.a2a {
        a2a_fields(a2a, f);
    }
    caller_fields(rec, f);
}
