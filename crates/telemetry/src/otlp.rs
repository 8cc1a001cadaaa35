//! OTLP protobuf written straight from a request record. A span is encoded once, when its
//! request ends, into bytes that wait in the export queue; building `opentelemetry-proto`'s
//! message structs instead costs a heap string per attribute key and value, a pass to size
//! them at export and another to drop them, at every request.
//!
//! Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto` and
//! `common/v1/common.proto`; the tests decode what is written here with `opentelemetry-proto`'s
//! own types. Lengths are sized with prost's helpers; varints and keys are written by the
//! `Vec`-only [`encode_varint`] below.

use opentelemetry_proto::tonic::common::v1::AnyValue;
use prost::encoding::{encoded_len_varint, key_len, WireType};
use prost::Message;

/// LEB128, as `prost::encoding::encode_varint` writes it, but for a `Vec` alone: prost's is
/// generic over `BufMut` and was not inlined, and a span writes some sixty varints (keys and
/// lengths, nearly all one byte).
#[inline(always)]
fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[inline(always)]
fn encode_key(tag: u32, wire_type: WireType, out: &mut Vec<u8>) {
    encode_varint(u64::from(tag << 3 | wire_type as u32), out);
}

// Span.
const TRACE_ID: u32 = 1;
const SPAN_ID: u32 = 2;
const PARENT_SPAN_ID: u32 = 4;
const NAME: u32 = 5;
const KIND: u32 = 6;
const START_TIME: u32 = 7;
const END_TIME: u32 = 8;
const ATTRIBUTES: u32 = 9;
const EVENTS: u32 = 11;
const STATUS: u32 = 15;
const FLAGS: u32 = 16;
// Status.
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;
// Span.Event.
const EVENT_TIME: u32 = 1;
const EVENT_NAME: u32 = 2;
const EVENT_ATTRIBUTES: u32 = 3;
// KeyValue.
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;
// AnyValue.
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;
const ANY_DOUBLE: u32 = 4;
// ExportTraceServiceRequest.resource_spans, ResourceSpans.resource / .scope_spans,
// ScopeSpans.scope / .spans.
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE: u32 = 1;
const SCOPE_SPANS: u32 = 2;
const SCOPE: u32 = 1;
const SPANS: u32 = 2;

/// `SpanKind.SPAN_KIND_SERVER`.
pub(crate) const KIND_SERVER: u64 = 2;
/// `Status.StatusCode.STATUS_CODE_ERROR` (unset is 0).
pub(crate) const STATUS_ERROR: u64 = 2;
/// `SpanFlags`: the low byte is the W3C trace flags; bit 8 says bit 9 is known, bit 9 that the
/// parent is remote.
pub(crate) const FLAG_SAMPLED: u32 = 0x01;
pub(crate) const FLAG_HAS_IS_REMOTE: u32 = 0x100;
pub(crate) const FLAG_IS_REMOTE: u32 = 0x200;

fn len_delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn write_bytes(tag: u32, data: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn write_fixed64(tag: u32, v: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::SixtyFourBit, out);
    out.extend_from_slice(&v.to_le_bytes());
}

fn write_varint(tag: u32, v: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(v, out);
}

/// An attribute value that needs no nested message.
#[derive(Clone, Copy)]
pub(crate) enum Scalar<'a> {
    /// UTF-8 (protobuf `string`), as bytes: the caller has it checked or made it ASCII.
    Str(&'a [u8]),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl Scalar<'_> {
    fn encoded_len(&self) -> usize {
        match self {
            Scalar::Str(s) => len_delimited_len(ANY_STRING, s.len()),
            Scalar::Int(i) => key_len(ANY_INT) + encoded_len_varint(*i as u64),
            Scalar::Double(_) => key_len(ANY_DOUBLE) + 8,
            Scalar::Bool(_) => key_len(ANY_BOOL) + 1,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match *self {
            Scalar::Str(s) => write_bytes(ANY_STRING, s, out),
            // int64 is a plain varint of the two's complement.
            Scalar::Int(i) => write_varint(ANY_INT, i as u64, out),
            Scalar::Double(d) => write_fixed64(ANY_DOUBLE, d.to_bits(), out),
            Scalar::Bool(b) => write_varint(ANY_BOOL, b as u64, out),
        }
    }
}

fn key_value_len(key: &str, value: &Scalar<'_>) -> usize {
    len_delimited_len(KV_KEY, key.len()) + len_delimited_len(KV_VALUE, value.encoded_len())
}

/// A `KeyValue` as field `tag` of the enclosing message.
fn write_key_value(tag: u32, key: &str, value: &Scalar<'_>, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(key_value_len(key, value) as u64, out);
    write_bytes(KV_KEY, key.as_bytes(), out);
    encode_key(KV_VALUE, WireType::LengthDelimited, out);
    encode_varint(value.encoded_len() as u64, out);
    value.write(out);
}

/// One span, written field by field into a caller's buffer: [`SpanWriter::begin`], the
/// attributes, then [`SpanWriter::end`].
pub(crate) struct SpanWriter<'a> {
    out: &'a mut Vec<u8>,
}

pub(crate) struct SpanHead<'a> {
    pub trace_id: &'a [u8; 16],
    pub span_id: &'a [u8; 8],
    pub parent_span_id: Option<&'a [u8; 8]>,
    /// The name in pieces, written one after the other (no string joined per span).
    pub name: [&'a str; 3],
    pub kind: u64,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl<'a> SpanWriter<'a> {
    pub(crate) fn begin(out: &'a mut Vec<u8>, head: &SpanHead<'_>) -> SpanWriter<'a> {
        write_bytes(TRACE_ID, head.trace_id, out);
        write_bytes(SPAN_ID, head.span_id, out);
        if let Some(parent) = head.parent_span_id {
            write_bytes(PARENT_SPAN_ID, parent, out);
        }
        encode_key(NAME, WireType::LengthDelimited, out);
        encode_varint(head.name.iter().map(|p| p.len()).sum::<usize>() as u64, out);
        for piece in head.name {
            out.extend_from_slice(piece.as_bytes());
        }
        write_varint(KIND, head.kind, out);
        write_fixed64(START_TIME, head.start_unix_nano, out);
        write_fixed64(END_TIME, head.end_unix_nano, out);
        SpanWriter { out }
    }

    pub(crate) fn attribute(&mut self, key: &str, value: Scalar<'_>) {
        write_key_value(ATTRIBUTES, key, &value, self.out);
    }

    /// A span event (`Span.events`): a moment in the request, with its own attributes.
    pub(crate) fn event(&mut self, time_unix_nano: u64, name: &str, attrs: &[(&str, Scalar<'_>)]) {
        let len = key_len(EVENT_TIME)
            + 8
            + len_delimited_len(EVENT_NAME, name.len())
            + attrs
                .iter()
                .map(|(k, v)| len_delimited_len(EVENT_ATTRIBUTES, key_value_len(k, v)))
                .sum::<usize>();
        encode_key(EVENTS, WireType::LengthDelimited, self.out);
        encode_varint(len as u64, self.out);
        write_fixed64(EVENT_TIME, time_unix_nano, self.out);
        write_bytes(EVENT_NAME, name.as_bytes(), self.out);
        for (k, v) in attrs {
            write_key_value(EVENT_ATTRIBUTES, k, v, self.out);
        }
    }

    /// An attribute whose value is an array or another structured value.
    pub(crate) fn attribute_any(&mut self, key: &str, value: &AnyValue) {
        let value_len = value.encoded_len();
        let kv_len = len_delimited_len(KV_KEY, key.len()) + len_delimited_len(KV_VALUE, value_len);
        encode_key(ATTRIBUTES, WireType::LengthDelimited, self.out);
        encode_varint(kv_len as u64, self.out);
        write_bytes(KV_KEY, key.as_bytes(), self.out);
        encode_key(KV_VALUE, WireType::LengthDelimited, self.out);
        encode_varint(value_len as u64, self.out);
        value.encode_raw(self.out);
    }

    /// The status (`code` 0 is unset) and the span flags.
    pub(crate) fn end(self, code: u64, message: &str, flags: u32) {
        let mut status_len = 0;
        if !message.is_empty() {
            status_len += len_delimited_len(STATUS_MESSAGE, message.len());
        }
        if code != 0 {
            status_len += key_len(STATUS_CODE) + encoded_len_varint(code);
        }
        encode_key(STATUS, WireType::LengthDelimited, self.out);
        encode_varint(status_len as u64, self.out);
        if !message.is_empty() {
            write_bytes(STATUS_MESSAGE, message.as_bytes(), self.out);
        }
        if code != 0 {
            write_varint(STATUS_CODE, code, self.out);
        }
        encode_key(FLAGS, WireType::ThirtyTwoBit, self.out);
        self.out.extend_from_slice(&flags.to_le_bytes());
    }
}

/// The bytes [`append_span`] adds to a batch for `span`.
pub(crate) fn framed_span_len(span: &[u8]) -> usize {
    len_delimited_len(SPANS, span.len())
}

/// Appends an encoded span to a batch: the batch is the body of `ScopeSpans.spans`.
pub(crate) fn append_span(batch: &mut Vec<u8>, span: &[u8]) {
    write_bytes(SPANS, span, batch);
}

/// Room to keep free at the front of a batch so that [`write_request_head`] can turn it into
/// an `ExportTraceServiceRequest` in place: the head is two length-delimited keys (their
/// lengths as varints of at most 10 bytes), `resource` and `scope`.
pub(crate) fn request_head_room(resource: &[u8], scope: &[u8]) -> usize {
    key_len(REQUEST_RESOURCE_SPANS)
        + 10
        + len_delimited_len(RESOURCE, resource.len())
        + key_len(SCOPE_SPANS)
        + 10
        + len_delimited_len(SCOPE, scope.len())
}

/// `batch` is [`request_head_room`] bytes of room followed by spans (see [`append_span`]):
/// writes the head of an `ExportTraceServiceRequest` of one resource and one scope around
/// them, right before the spans, and returns where the request starts. `resource` and `scope`
/// are encoded `Resource` and `InstrumentationScope` messages. Building the request in the
/// batch's own buffer spares a copy of every batch.
pub(crate) fn write_request_head(
    batch: &mut [u8],
    head_room: usize,
    resource: &[u8],
    scope: &[u8],
) -> usize {
    let spans_len = batch.len() - head_room;
    let scope_spans_len = len_delimited_len(SCOPE, scope.len()) + spans_len;
    let resource_spans_len = len_delimited_len(RESOURCE, resource.len())
        + len_delimited_len(SCOPE_SPANS, scope_spans_len);
    let mut head = Vec::with_capacity(head_room);
    encode_key(REQUEST_RESOURCE_SPANS, WireType::LengthDelimited, &mut head);
    encode_varint(resource_spans_len as u64, &mut head);
    write_bytes(RESOURCE, resource, &mut head);
    encode_key(SCOPE_SPANS, WireType::LengthDelimited, &mut head);
    encode_varint(scope_spans_len as u64, &mut head);
    write_bytes(SCOPE, scope, &mut head);
    let start = head_room - head.len();
    batch[start..head_room].copy_from_slice(&head);
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_keys_match_prost() {
        let mut values = vec![0, 1, u64::MAX, i64::MIN as u64, -1i64 as u64];
        for shift in 0..64 {
            let p = 1u64 << shift;
            values.extend([p - 1, p, p + 1]);
        }
        for v in values {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            encode_varint(v, &mut ours);
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
            assert_eq!(ours.len(), encoded_len_varint(v));
        }
        for tag in [1, 15, 16, 2047, 2048, (1 << 29) - 1] {
            for wt in [
                WireType::Varint,
                WireType::LengthDelimited,
                WireType::SixtyFourBit,
            ] {
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                encode_key(tag, wt, &mut ours);
                prost::encoding::encode_key(tag, wt, &mut theirs);
                assert_eq!(ours, theirs, "{tag}");
            }
        }
    }
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, ArrayValue, InstrumentationScope};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{span, status, Span};

    fn span_bytes(parent: Option<&[u8; 8]>, code: u64, message: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = SpanWriter::begin(
            &mut out,
            &SpanHead {
                trace_id: &[7; 16],
                span_id: &[9; 8],
                parent_span_id: parent,
                name: ["chat", " ", "gpt-4o"],
                kind: KIND_SERVER,
                start_unix_nano: 1_700_000_000_000_000_000,
                end_unix_nano: 1_700_000_000_250_000_000,
            },
        );
        w.attribute("http.request.method", Scalar::Str(b"POST"));
        w.attribute("gen_ai.usage.input_tokens", Scalar::Int(300));
        w.attribute("negative", Scalar::Int(-5));
        w.attribute("gen_ai.request.temperature", Scalar::Double(0.25));
        w.attribute("gen_ai.response.streaming", Scalar::Bool(true));
        w.attribute("empty", Scalar::Str(b""));
        w.attribute("long", Scalar::Str("x".repeat(300).as_bytes()));
        w.attribute_any(
            "gen_ai.request.stop_sequences",
            &AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::StringValue("END".into())),
                    }],
                })),
            },
        );
        w.event(
            1_700_000_000_100_000_000,
            "switchyard.attempt.failed",
            &[
                ("switchyard.backend", Scalar::Str(b"openai-east")),
                ("switchyard.failover.reason", Scalar::Str(b"rate_limited")),
            ],
        );
        w.end(code, message, FLAG_SAMPLED | FLAG_HAS_IS_REMOTE);
        out
    }

    fn value(s: &Span, key: &str) -> any_value::Value {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
            .unwrap_or_else(|| panic!("no attribute {key}"))
    }

    #[test]
    fn spans_decode_with_the_reference_types() {
        let s =
            Span::decode(&span_bytes(Some(&[3; 8]), STATUS_ERROR, "upstream_reset")[..]).unwrap();
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.span_id, vec![9; 8]);
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.name, "chat gpt-4o");
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_250_000_000);
        assert_eq!(s.flags, 0x101);
        let st = s.status.clone().unwrap();
        assert_eq!(st.code, status::StatusCode::Error as i32);
        assert_eq!(st.message, "upstream_reset");
        use any_value::Value as V;
        assert_eq!(
            value(&s, "http.request.method"),
            V::StringValue("POST".into())
        );
        assert_eq!(value(&s, "gen_ai.usage.input_tokens"), V::IntValue(300));
        assert_eq!(value(&s, "negative"), V::IntValue(-5));
        assert_eq!(
            value(&s, "gen_ai.request.temperature"),
            V::DoubleValue(0.25)
        );
        assert_eq!(value(&s, "gen_ai.response.streaming"), V::BoolValue(true));
        assert_eq!(value(&s, "empty"), V::StringValue(String::new()));
        assert_eq!(value(&s, "long"), V::StringValue("x".repeat(300)));
        assert_eq!(s.events.len(), 1);
        let e = &s.events[0];
        assert_eq!(e.name, "switchyard.attempt.failed");
        assert_eq!(e.time_unix_nano, 1_700_000_000_100_000_000);
        let attrs: Vec<(String, Option<V>)> = e
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().and_then(|v| v.value)))
            .collect();
        assert_eq!(
            attrs,
            [
                (
                    "switchyard.backend".to_string(),
                    Some(V::StringValue("openai-east".into()))
                ),
                (
                    "switchyard.failover.reason".to_string(),
                    Some(V::StringValue("rate_limited".into()))
                ),
            ]
        );
        let V::ArrayValue(a) = value(&s, "gen_ai.request.stop_sequences") else {
            panic!("not an array")
        };
        assert_eq!(a.values.len(), 1);
        assert_eq!(s.attributes.len(), 8);
        // Unset status, no parent: both absent on the wire and in the decoded span.
        let s = Span::decode(&span_bytes(None, 0, "")[..]).unwrap();
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.status.unwrap().code, status::StatusCode::Unset as i32);
    }

    #[test]
    fn a_batch_frames_as_one_export_request() {
        let resource = Resource {
            attributes: vec![],
            ..Default::default()
        }
        .encode_to_vec();
        let scope = InstrumentationScope {
            name: "switchyard".into(),
            version: "1.2.3".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let room = request_head_room(&resource, &scope);
        let mut batch = vec![0xff; room];
        append_span(&mut batch, &span_bytes(None, 0, ""));
        append_span(&mut batch, &span_bytes(Some(&[1; 8]), 0, ""));
        let start = write_request_head(&mut batch, room, &resource, &scope);
        assert!(start > 0, "the room is never too small");
        let req = ExportTraceServiceRequest::decode(&batch[start..]).unwrap();
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        assert!(rs.resource.is_some());
        assert_eq!(rs.scope_spans.len(), 1);
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().version, "1.2.3");
        assert_eq!(ss.spans.len(), 2);
        assert_eq!(ss.spans[1].parent_span_id, vec![1; 8]);
        // A batch large enough for multi-byte lengths frames the same way.
        let mut batch = vec![0; room];
        for _ in 0..600 {
            append_span(&mut batch, &span_bytes(None, 0, ""));
        }
        let start = write_request_head(&mut batch, room, &resource, &scope);
        let req = ExportTraceServiceRequest::decode(&batch[start..]).unwrap();
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 600);
    }
}
