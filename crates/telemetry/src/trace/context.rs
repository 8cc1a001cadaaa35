//! W3C Trace Context: `traceparent` in and out, and new trace and span ids.

use http::HeaderValue;

use crate::fields::Inline;

/// The trace a request belongs to and the span the gateway opens for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span, from an incoming `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    pub sampled: bool,
}

impl TraceContext {
    /// A valid incoming `traceparent` (version 00, or a later one read as 00), else `None`.
    pub fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
        let s = std::str::from_utf8(value).ok()?.trim();
        let mut parts = s.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let parent = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = hex_decode(trace)?;
        let span_id: [u8; 8] = hex_decode(parent)?;
        let flags: [u8; 1] = hex_decode(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some((trace_id, span_id, flags[0] & 1 == 1))
    }

    pub fn trace_id_hex(&self) -> String {
        Inline::hex(&self.trace_id).as_str().to_string()
    }

    pub fn span_id_hex(&self) -> String {
        Inline::hex(&self.span_id).as_str().to_string()
    }

    /// `traceparent` for the upstream: this trace, the gateway's span as the parent.
    pub fn traceparent(&self) -> HeaderValue {
        use std::fmt::Write;
        let mut s = Inline::new();
        let _ = s.write_str("00-");
        s.push_hex(&self.trace_id);
        let _ = s.write_str("-");
        s.push_hex(&self.span_id);
        let _ = s.write_str(if self.sampled { "-01" } else { "-00" });
        // Hex digits and dashes only.
        HeaderValue::from_bytes(s.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn hex_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub(super) fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let r = fastrand::u64(..).to_be_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        if out != [0u8; N] {
            return out;
        }
    }
}
