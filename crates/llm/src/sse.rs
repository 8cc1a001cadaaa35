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

/// Lines or events larger than this are dropped rather than buffered, so a
/// broken provider cannot make the gateway grow without bound.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Default)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The current line overflowed: ignore it up to its end.
    skipping_line: bool,
    /// The current event overflowed: drop it at dispatch.
    skipping_event: bool,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes, calling `on_event` for each complete event.
    pub fn feed(&mut self, chunk: &[u8], on_event: &mut dyn FnMut(SseEvent)) {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if std::mem::take(&mut self.skipping_line) {
                self.line.clear();
            } else if self.line.is_empty() {
                self.process_line(head, on_event);
            } else {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, on_event);
            }
        }
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
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, on_event);
        }
        self.dispatch(on_event);
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut dyn FnMut(SseEvent)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
                if self.data.len() > MAX_EVENT_BYTES {
                    self.data = Vec::new();
                    self.skipping_event = true;
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {} // id, retry and unknown fields do not matter here
        }
    }

    fn dispatch(&mut self, on_event: &mut dyn FnMut(SseEvent)) {
        let event = self.event.take();
        let skip = std::mem::take(&mut self.skipping_event);
        if !std::mem::take(&mut self.has_data) || skip {
            self.data.clear();
            return;
        }
        let data = String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned();
        on_event(SseEvent { event, data });
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
}
