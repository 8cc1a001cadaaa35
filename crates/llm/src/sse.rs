//! Incremental Server-Sent Events parser and writer.
//!
//! Follows the WHATWG `text/event-stream` rules we need: lines end in `\n`
//! or `\r\n`, `:` starts a comment, `data:` lines of one event are joined
//! with `\n`, a blank line dispatches the event, one space after the colon
//! is stripped. Only partial lines are buffered, never the whole stream.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// One dispatched event, borrowed from the parser (or straight from the fed chunk when the
/// whole event was in it, the usual case), valid for the callback only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SseEventRef<'a> {
    pub event: Option<&'a str>,
    pub data: &'a str,
}

impl SseEventRef<'_> {
    pub fn into_owned(self) -> SseEvent {
        SseEvent {
            event: self.event.map(str::to_owned),
            data: self.data.to_owned(),
        }
    }
}

/// Lines or events larger than this are dropped rather than buffered, so a
/// broken provider cannot make the gateway grow without bound.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Buffers grown past this by one large event are given back after it, not kept for the
/// rest of the stream.
const KEEP_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Default)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The current line overflowed: ignore it up to its end.
    skipping_line: bool,
    /// The current event overflowed: drop it at dispatch.
    skipping_event: bool,
    /// The last `event:` value of the current event, if `has_event`.
    event: Vec<u8>,
    has_event: bool,
    data: Vec<u8>,
    has_data: bool,
}

/// Where the current event's `data` (or `event` name) is: nowhere yet, only in the chunk being
/// fed (not copied), or in the parser's buffer.
#[derive(Clone, Copy)]
enum Field<'c> {
    None,
    InChunk(&'c [u8]),
    Buffered,
}

impl SseParser {
    /// Feeds bytes, calling `on_event` for each complete event.
    pub fn feed(&mut self, chunk: &[u8], on_event: &mut dyn FnMut(SseEvent)) {
        self.feed_ref(chunk, &mut |e| on_event(e.into_owned()));
    }

    /// Feeds bytes, lending each complete event to `on_event`. An event whose lines all
    /// arrived in this chunk is handed out without being copied.
    pub fn feed_ref(&mut self, chunk: &[u8], on_event: &mut dyn FnMut(SseEventRef<'_>)) {
        // The state carried between chunks lives in the buffers; within this call, fields are
        // first kept as slices of `chunk` and copied only if the event is still open at its end.
        let (mut data, mut event) = self.open_fields();
        let mut rest = chunk;
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            let (head, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if std::mem::take(&mut self.skipping_line) {
                self.line.clear();
            } else if self.line.is_empty() {
                self.on_line(head, Some(head), &mut data, &mut event, on_event);
            } else {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                self.on_line(&line, None, &mut data, &mut event, on_event);
                self.line = line;
                self.line.clear();
                if self.line.capacity() > KEEP_BUFFER_BYTES {
                    self.line = Vec::new();
                }
            }
        }
        // The event is not complete: what it has so far must outlive the chunk.
        self.buffer(&mut data, &mut event);
        if !self.skipping_line {
            self.line.extend_from_slice(rest);
            if self.line.len() > MAX_EVENT_BYTES {
                self.line = Vec::new();
                self.skipping_line = true;
                self.skipping_event = true;
            }
        }
    }

    /// End of stream: a final event without its terminating blank line is
    /// still dispatched (lenient towards providers that close early).
    pub fn finish(&mut self, on_event: &mut dyn FnMut(SseEvent)) {
        self.finish_ref(&mut |e| on_event(e.into_owned()));
    }

    /// [`finish`](Self::finish), lending the last event.
    pub fn finish_ref(&mut self, on_event: &mut dyn FnMut(SseEventRef<'_>)) {
        let (mut data, mut event) = self.open_fields();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, None, &mut data, &mut event, on_event);
        }
        self.dispatch(data, event, on_event);
    }

    /// Where the open event's fields are when a call starts: in the buffers, or nowhere yet.
    fn open_fields<'c>(&self) -> (Field<'c>, Field<'c>) {
        let at = |has| if has { Field::Buffered } else { Field::None };
        (at(self.has_data), at(self.has_event))
    }

    /// One line. `kept`: the same line in the chunk being fed, when it is there (not in the
    /// parser's line buffer), so its value may be kept as a slice until the chunk ends.
    fn on_line<'c>(
        &mut self,
        line: &[u8],
        kept: Option<&'c [u8]>,
        data: &mut Field<'c>,
        event: &mut Field<'c>,
        on_event: &mut dyn FnMut(SseEventRef<'_>),
    ) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch(
                std::mem::replace(data, Field::None),
                std::mem::replace(event, Field::None),
                on_event,
            );
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value_at) = match memchr::memchr(b':', line) {
            Some(i) if line.get(i + 1) == Some(&b' ') => (&line[..i], i + 2..line.len()),
            Some(i) => (&line[..i], i + 1..line.len()),
            None => (line, line.len()..line.len()),
        };
        let value = &line[value_at.clone()];
        let kept = kept.map(|k| &k[value_at]);
        match name {
            b"data" => {
                match (*data, kept) {
                    (Field::None, Some(kept)) => *data = Field::InChunk(kept),
                    (Field::None, None) => {
                        self.data.clear();
                        self.data.extend_from_slice(value);
                        *data = Field::Buffered;
                    }
                    (Field::InChunk(first), _) => {
                        self.data.clear();
                        self.data.extend_from_slice(first);
                        self.data.push(b'\n');
                        self.data.extend_from_slice(value);
                        *data = Field::Buffered;
                    }
                    (Field::Buffered, _) => {
                        self.data.push(b'\n');
                        self.data.extend_from_slice(value);
                    }
                }
                if self.data.len() > MAX_EVENT_BYTES {
                    self.data = Vec::new();
                    self.skipping_event = true;
                }
            }
            b"event" => match kept {
                Some(kept) => *event = Field::InChunk(kept),
                None => {
                    self.event.clear();
                    self.event.extend_from_slice(value);
                    *event = Field::Buffered;
                }
            },
            _ => {} // id, retry and unknown fields do not matter here
        }
    }

    /// Copies fields still borrowed from the chunk into the parser's buffers.
    fn buffer(&mut self, data: &mut Field<'_>, event: &mut Field<'_>) {
        if let Field::InChunk(d) = *data {
            self.data.clear();
            if d.len() > MAX_EVENT_BYTES {
                self.skipping_event = true;
            } else {
                self.data.extend_from_slice(d);
            }
            *data = Field::Buffered;
        }
        if let Field::InChunk(e) = *event {
            self.event.clear();
            self.event.extend_from_slice(e);
            *event = Field::Buffered;
        }
        self.has_data = matches!(data, Field::Buffered);
        self.has_event = matches!(event, Field::Buffered);
    }

    fn dispatch(
        &mut self,
        data: Field<'_>,
        event: Field<'_>,
        on_event: &mut dyn FnMut(SseEventRef<'_>),
    ) {
        self.has_data = false;
        self.has_event = false;
        let skip = std::mem::take(&mut self.skipping_event);
        let data_bytes: &[u8] = match data {
            Field::None => &[],
            Field::InChunk(d) => d,
            Field::Buffered => &self.data,
        };
        if !matches!(data, Field::None) && !skip {
            let event_bytes = match event {
                Field::None => None,
                Field::InChunk(e) => Some(e),
                Field::Buffered => Some(&self.event[..]),
            };
            let data = utf8_lossy(data_bytes);
            let event = event_bytes.map(utf8_lossy);
            on_event(SseEventRef {
                event: event.as_deref(),
                data: &data,
            });
        }
        self.data.clear();
        if self.data.capacity() > KEEP_BUFFER_BYTES {
            self.data = Vec::new();
        }
    }
}

/// `String::from_utf8_lossy`, with the standard library's faster validation for the usual
/// valid text first.
fn utf8_lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Appends one complete SSE event (`event:` line optional).
pub(crate) fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    // Serialised JSON never contains raw newlines, but guard anyway so the
    // framing cannot break.
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut |e| out.push(e));
        }
        p.finish(&mut |e| out.push(e));
        out
    }

    #[test]
    fn crlf_comments_multiline_and_splits() {
        let raw = b": keepalive\r\nevent: a\r\ndata: one\r\ndata:two\r\n\r\ndata: {\"x\":1}\n\n";
        let whole = parse_all(&[raw]);
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    event: Some("a".into()),
                    data: "one\ntwo".into()
                },
                SseEvent {
                    event: None,
                    data: "{\"x\":1}".into()
                },
            ]
        );
        let bytes: Vec<&[u8]> = raw.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_trailing_event_is() {
        let out = parse_all(&[b"event: ping\n\ndata: tail"]);
        assert_eq!(
            out,
            vec![SseEvent {
                event: None,
                data: "tail".into()
            }]
        );
    }

    #[test]
    fn oversized_event_is_dropped_and_parsing_recovers() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        p.feed(b"data: ", &mut |e| out.push(e));
        let big = vec![b'x'; 1024 * 1024];
        for _ in 0..17 {
            p.feed(&big, &mut |e| out.push(e));
        }
        assert!(
            p.line.capacity() <= MAX_EVENT_BYTES * 2,
            "buffer stays bounded"
        );
        p.feed(b"\n\ndata: ok\n\n", &mut |e| out.push(e));
        assert_eq!(
            out,
            vec![SseEvent {
                event: None,
                data: "ok".into()
            }]
        );
    }

    #[test]
    fn multibyte_utf8_split_across_chunks() {
        let raw = "data: héllo\n\n".as_bytes();
        let bytes: Vec<&[u8]> = raw.chunks(1).collect();
        assert_eq!(parse_all(&bytes)[0].data, "héllo");
    }

    /// Every way of cutting a stream in two, and byte by byte, gives the events of the whole.
    #[test]
    fn events_do_not_depend_on_where_chunks_end() {
        let raw: &[u8] = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: ping\n\
            data: one\ndata: two\n\nevent: lone\n\ndata: \xff\xfe bad\n\n\
            event: x\nevent: y\ndata:z\n\ndata: tail";
        let whole = parse_all(&[raw]);
        assert_eq!(whole.len(), 5, "{whole:?}");
        assert_eq!(whole[0].event.as_deref(), Some("message_start"));
        assert_eq!(whole[1].data, "one\ntwo");
        assert_eq!(whole[2].data, "\u{fffd}\u{fffd} bad");
        assert_eq!(
            (whole[3].event.as_deref(), &*whole[3].data),
            (Some("y"), "z")
        );
        assert_eq!((whole[4].event.as_deref(), &*whole[4].data), (None, "tail"));
        for cut in 0..=raw.len() {
            let (a, b) = raw.split_at(cut);
            assert_eq!(parse_all(&[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = raw.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
    }

    /// An event that arrived whole is lent straight out of the chunk: no copy per event.
    #[test]
    fn whole_events_are_lent_from_the_chunk() {
        let chunk = b"event: delta\ndata: {\"x\":1}\n\ndata: half";
        let range = chunk.as_ptr_range();
        let mut p = SseParser::default();
        let mut seen = Vec::new();
        p.feed_ref(chunk, &mut |e| {
            assert!(range.contains(&e.data.as_ptr()), "data was copied");
            assert!(
                range.contains(&e.event.unwrap().as_ptr()),
                "event was copied"
            );
            seen.push(e.into_owned());
        });
        assert_eq!(seen.len(), 1);
        // The unfinished event outlives its chunk.
        p.feed_ref(b"\n\n", &mut |e| seen.push(e.into_owned()));
        assert_eq!(seen[1].data, "half");
        assert_eq!(seen[1].event, None);
    }
}
