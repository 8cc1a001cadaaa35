//! AWS event-stream framing (`application/vnd.amazon.eventstream`), the
//! binary framing of Bedrock `ConverseStream` responses: an incremental
//! decoder for the gateway and an encoder for simulators and tests.
//!
//! Each message is (all integers big-endian):
//!
//! ```text
//! total length u32 | headers length u32 | prelude CRC32 u32 | headers | payload | message CRC32 u32
//! ```
//!
//! The prelude CRC covers the first 8 bytes, the message CRC everything
//! before it; both are CRC-32/ISO-HDLC (the zlib / IEEE polynomial). A
//! header is `name length u8 | name | value type u8 | value`, where the
//! value is: 0/1 boolean true/false (no bytes), 2 byte, 3 i16, 4 i32, 5 i64,
//! 6 bytes (u16 length + bytes), 7 string (u16 length + UTF-8), 8 timestamp
//! (i64 milliseconds), 9 UUID (16 bytes).
//!
//! References: "Event stream encoding" in the Amazon Transcribe / S3 Select
//! developer guides (docs.aws.amazon.com/transcribe/latest/dg/streaming-setting-up.html#streaming-event-stream,
//! docs.aws.amazon.com/AmazonS3/latest/API/RESTSelectObjectAppendix.html), and the
//! `aws-smithy-eventstream` crate's frame codec.

/// Prelude (two lengths + CRC) plus the trailing message CRC.
const FRAMING_BYTES: usize = 16;
const PRELUDE_BYTES: usize = 12;

/// Frames larger than this are refused rather than buffered, so a broken or
/// hostile upstream cannot make the gateway grow without bound. AWS's own
/// limit is 16 MiB per message.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// A typed header value.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Bytes(Vec<u8>),
    String(String),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

/// One decoded event-stream message.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

impl Message {
    /// A message with string headers only (all Bedrock uses).
    pub fn new(headers: &[(&str, &str)], payload: impl Into<Vec<u8>>) -> Self {
        Message {
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), HeaderValue::String((*v).to_owned())))
                .collect(),
            payload: payload.into(),
        }
    }

    /// The value of a string header (first occurrence).
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(k, v)| match v {
            HeaderValue::String(s) if k == name => Some(s.as_str()),
            _ => None,
        })
    }

    /// This message as frame bytes. Header names longer than 255 bytes and
    /// string/bytes values longer than 65535 bytes are truncated: they
    /// cannot be represented, and encoding is only used for our own
    /// (short) headers.
    pub fn encode(&self) -> Vec<u8> {
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            let name = &name.as_bytes()[..name.len().min(u8::MAX as usize)];
            headers.push(name.len() as u8);
            headers.extend_from_slice(name);
            encode_value(value, &mut headers);
        }
        let total = FRAMING_BYTES + headers.len() + self.payload.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let prelude_crc = crc32fast::hash(&out);
        out.extend_from_slice(&prelude_crc.to_be_bytes());
        out.extend_from_slice(&headers);
        out.extend_from_slice(&self.payload);
        let message_crc = crc32fast::hash(&out);
        out.extend_from_slice(&message_crc.to_be_bytes());
        out
    }
}

fn encode_value(value: &HeaderValue, out: &mut Vec<u8>) {
    let variable = |kind: u8, data: &[u8], out: &mut Vec<u8>| {
        let data = &data[..data.len().min(u16::MAX as usize)];
        out.push(kind);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    };
    match value {
        HeaderValue::Bool(true) => out.push(0),
        HeaderValue::Bool(false) => out.push(1),
        HeaderValue::Byte(b) => {
            out.push(2);
            out.extend_from_slice(&b.to_be_bytes());
        }
        HeaderValue::Int16(v) => {
            out.push(3);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Int32(v) => {
            out.push(4);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Int64(v) => {
            out.push(5);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Bytes(b) => variable(6, b, out),
        HeaderValue::String(s) => variable(7, s.as_bytes(), out),
        HeaderValue::Timestamp(v) => {
            out.push(8);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Uuid(u) => {
            out.push(9);
            out.extend_from_slice(u);
        }
    }
}

/// Why a stream could not be decoded. After any of these the framing is
/// lost: the decoder refuses further input.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodeError {
    PreludeCrc,
    MessageCrc,
    /// Declared total length, smaller than the framing or over the limit.
    BadLength(u32),
    /// Declared headers length does not fit in the message.
    BadHeadersLength(u32),
    /// A header is truncated or has an unknown value type.
    BadHeader(String),
    /// Input arrived after an earlier error.
    Poisoned,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::PreludeCrc => write!(f, "event-stream prelude CRC mismatch"),
            DecodeError::MessageCrc => write!(f, "event-stream message CRC mismatch"),
            DecodeError::BadLength(n) => write!(f, "event-stream message length {n} is invalid"),
            DecodeError::BadHeadersLength(n) => {
                write!(f, "event-stream headers length {n} is invalid")
            }
            DecodeError::BadHeader(why) => write!(f, "event-stream header is invalid: {why}"),
            DecodeError::Poisoned => write!(f, "event-stream decoder already failed"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Incremental decoder: feed bytes split anywhere, get whole messages.
/// Holds at most one partial frame (bounded by [`MAX_FRAME_BYTES`]).
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    failed: bool,
}

impl Decoder {
    /// Appends `bytes`, pushing every message completed by them onto `out`.
    /// Messages decoded before an error are still pushed.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Message>) -> Result<(), DecodeError> {
        if self.failed {
            return Err(DecodeError::Poisoned);
        }
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        let result = loop {
            match next_frame(&self.buf[start..]) {
                Ok(Some((message, used))) => {
                    out.push(message);
                    start += used;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..start);
        if result.is_err() {
            self.failed = true;
            self.buf = Vec::new();
        }
        result
    }

    /// Bytes of an incomplete frame held back (non-zero at the end of a
    /// stream means it was truncated).
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One frame from the front of `buf`: `Ok(None)` when more bytes are needed.
fn next_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
    if buf.len() < PRELUDE_BYTES {
        return Ok(None);
    }
    // Verify the prelude before trusting the lengths in it: a corrupt
    // length must not make us wait for (and buffer) megabytes.
    if crc32fast::hash(&buf[..8]) != be_u32(&buf[8..12]) {
        return Err(DecodeError::PreludeCrc);
    }
    let total_declared = be_u32(&buf[0..4]);
    let headers_declared = be_u32(&buf[4..8]);
    let total = total_declared as usize;
    if !(FRAMING_BYTES..=MAX_FRAME_BYTES).contains(&total) {
        return Err(DecodeError::BadLength(total_declared));
    }
    let headers_len = headers_declared as usize;
    if headers_len > total - FRAMING_BYTES {
        return Err(DecodeError::BadHeadersLength(headers_declared));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let frame = &buf[..total];
    if crc32fast::hash(&frame[..total - 4]) != be_u32(&frame[total - 4..]) {
        return Err(DecodeError::MessageCrc);
    }
    let headers = parse_headers(&frame[PRELUDE_BYTES..PRELUDE_BYTES + headers_len])?;
    let payload = frame[PRELUDE_BYTES + headers_len..total - 4].to_vec();
    Ok(Some((Message { headers, payload }, total)))
}

fn parse_headers(mut data: &[u8]) -> Result<Vec<(String, HeaderValue)>, DecodeError> {
    fn take<'a>(data: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if data.len() < n {
            return Err(DecodeError::BadHeader(format!("truncated {what}")));
        }
        let (head, tail) = data.split_at(n);
        *data = tail;
        Ok(head)
    }
    fn fixed<const N: usize>(data: &mut &[u8], what: &str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(take(data, N, what)?);
        Ok(out)
    }
    let mut headers = Vec::new();
    while !data.is_empty() {
        let name_len = take(&mut data, 1, "name length")?[0] as usize;
        let name = String::from_utf8_lossy(take(&mut data, name_len, "name")?).into_owned();
        let kind = take(&mut data, 1, "value type")?[0];
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(fixed(&mut data, "byte")?)),
            3 => HeaderValue::Int16(i16::from_be_bytes(fixed(&mut data, "short")?)),
            4 => HeaderValue::Int32(i32::from_be_bytes(fixed(&mut data, "integer")?)),
            5 => HeaderValue::Int64(i64::from_be_bytes(fixed(&mut data, "long")?)),
            6 | 7 => {
                let len = u16::from_be_bytes(fixed(&mut data, "value length")?) as usize;
                let bytes = take(&mut data, len, "value")?;
                if kind == 6 {
                    HeaderValue::Bytes(bytes.to_vec())
                } else {
                    HeaderValue::String(String::from_utf8_lossy(bytes).into_owned())
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(fixed(&mut data, "timestamp")?)),
            9 => HeaderValue::Uuid(fixed(&mut data, "uuid")?),
            other => {
                return Err(DecodeError::BadHeader(format!(
                    "unknown value type {other} for `{name}`"
                )))
            }
        };
        headers.push((name, value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_frame_from_the_aws_spec_tests() {
        // "empty message" vector of the AWS event-stream test suite
        // (awslabs/aws-c-event-stream): 16 bytes, no headers, no payload.
        let bytes = [
            0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98,
            0xc8, 0xff,
        ];
        assert_eq!(Message::default().encode(), bytes);
        let mut out = Vec::new();
        Decoder::default().feed(&bytes, &mut out).expect("valid");
        assert_eq!(out, vec![Message::default()]);
    }

    #[test]
    fn all_header_types_round_trip() {
        let message = Message {
            headers: vec![
                ("t".into(), HeaderValue::Bool(true)),
                ("f".into(), HeaderValue::Bool(false)),
                ("b".into(), HeaderValue::Byte(-3)),
                ("s".into(), HeaderValue::Int16(-300)),
                ("i".into(), HeaderValue::Int32(70000)),
                ("l".into(), HeaderValue::Int64(-1)),
                ("y".into(), HeaderValue::Bytes(vec![0, 255])),
                ("str".into(), HeaderValue::String("héllo".into())),
                ("ts".into(), HeaderValue::Timestamp(1_700_000_000_000)),
                ("u".into(), HeaderValue::Uuid([7; 16])),
            ],
            payload: b"{}".to_vec(),
        };
        let mut out = Vec::new();
        Decoder::default()
            .feed(&message.encode(), &mut out)
            .expect("valid");
        assert_eq!(out, vec![message]);
    }

    #[test]
    fn corrupt_length_is_caught_by_the_prelude_crc_before_buffering() {
        let mut bytes = Message::new(&[(":event-type", "x")], "{}").encode();
        bytes[1] = 0x7f; // claims ~2 GiB
        let mut d = Decoder::default();
        let mut out = Vec::new();
        assert_eq!(d.feed(&bytes, &mut out), Err(DecodeError::PreludeCrc));
        assert_eq!(d.feed(b"more", &mut out), Err(DecodeError::Poisoned));
        assert_eq!(d.pending_bytes(), 0);
    }

    #[test]
    fn oversized_frame_with_valid_prelude_is_refused() {
        let mut prelude = Vec::new();
        prelude.extend_from_slice(&((MAX_FRAME_BYTES + 1) as u32).to_be_bytes());
        prelude.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&prelude);
        prelude.extend_from_slice(&crc.to_be_bytes());
        let mut out = Vec::new();
        assert!(matches!(
            Decoder::default().feed(&prelude, &mut out),
            Err(DecodeError::BadLength(_))
        ));
    }

    #[test]
    fn unknown_header_type_is_an_error_not_a_panic() {
        let mut m = Message::new(&[("a", "b")], "").encode();
        // Header bytes start at 12: len(1) 'a' type(7) -> make the type 42
        // and fix up the message CRC so only the header is wrong.
        m[14] = 42;
        let n = m.len();
        let crc = crc32fast::hash(&m[..n - 4]);
        m[n - 4..].copy_from_slice(&crc.to_be_bytes());
        let mut out = Vec::new();
        assert!(matches!(
            Decoder::default().feed(&m, &mut out),
            Err(DecodeError::BadHeader(_))
        ));
    }
}
