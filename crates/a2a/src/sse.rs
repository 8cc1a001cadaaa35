//! Reads an SSE stream as it passes, event by event, without holding it: the bytes go to the
//! client as they come; the reader keeps only the event being assembled (bounded) and hands
//! each complete event's data to an [`Observation`].
//!
//! Framing per the HTML living standard's event-stream grammar: lines end in CRLF, LF or CR;
//! `data:` lines join with `\n`; a blank line dispatches; lines starting with `:` are comments
//! (keepalives); a single space after the colon is dropped.

use crate::observe::Observation;

/// The largest event whose data is inspected; bigger events pass uninspected (an artifact
/// carrying a file), and the reader holds no more than this while one streams by.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

#[derive(Default)]
pub struct EventReader {
    /// The current line, up to the limit.
    line: Vec<u8>,
    /// The current event's data, up to the limit.
    data: Vec<u8>,
    has_data: bool,
    /// The current event went past the limit: skip it.
    oversized: bool,
    /// The current line went past the limit (its end is not a blank line).
    line_dropped: bool,
    /// The last byte was a CR (a following LF belongs to the same line end).
    after_cr: bool,
    /// The event's name (`event:`), when one was given and is short.
    event_name: Vec<u8>,
    pub observation: Observation,
    /// Events whose `event:` name was `error` (the HTTP+JSON binding's stream errors).
    pub error_events: u32,
}

impl EventReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    self.push_line_bytes(&chunk[..i]);
                    self.after_cr = chunk[i] == b'\r';
                    self.end_line();
                    chunk = &chunk[i + 1..];
                }
                None => {
                    self.push_line_bytes(chunk);
                    return;
                }
            }
        }
    }

    /// The stream ended: an event without its final blank line is not dispatched (as the
    /// standard says).
    pub fn finish(self) -> (Observation, u32) {
        (self.observation, self.error_events)
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if self.line_dropped || self.line.len() + bytes.len() > MAX_EVENT_BYTES {
            self.line_dropped = true;
            self.oversized = true;
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self) {
        if std::mem::take(&mut self.line_dropped) {
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch();
            self.line = line;
            return;
        }
        if self.oversized {
            self.line = clear(line);
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => {
                // A comment: a keepalive.
                self.line = clear(line);
                return;
            }
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                    self.oversized = true;
                    self.data.clear();
                } else {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
            }
            b"event" if value.len() <= 64 => {
                self.event_name.clear();
                self.event_name.extend_from_slice(value);
            }
            _ => {}
        }
        self.line = clear(line);
    }

    fn dispatch(&mut self) {
        if self.has_data && !self.oversized {
            if self.event_name == b"error" {
                self.error_events = self.error_events.saturating_add(1);
                self.observation.error = true;
            }
            self.observation.read(&self.data);
        }
        self.data.clear();
        self.event_name.clear();
        self.has_data = false;
        self.oversized = false;
    }
}

/// Keeps a line buffer's allocation for the next line.
fn clear(mut v: Vec<u8>) -> Vec<u8> {
    v.clear();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::TaskState;

    /// A v0.3 `message/stream` as the specification shows it: a task, a working status,
    /// two artifact chunks, the final status.
    const V0_3_STREAM: &str = concat!(
        "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"id\":\"225d6247-06ba-4cda-a08b-33ae35c8dcfa\",\"contextId\":\"05217e44-7e9f-473e-ab4f-2c2dde50a2b1\",\"status\":{\"state\":\"submitted\",\"timestamp\":\"2025-04-02T16:59:25.331844\"},\"history\":[],\"kind\":\"task\",\"metadata\":{}}}\n\n",
        ": keepalive\n\n",
        "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"taskId\":\"225d6247-06ba-4cda-a08b-33ae35c8dcfa\",\"contextId\":\"05217e44-7e9f-473e-ab4f-2c2dde50a2b1\",\"kind\":\"status-update\",\"status\":{\"state\":\"working\"},\"final\":false}}\n\n",
        "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"taskId\":\"225d6247-06ba-4cda-a08b-33ae35c8dcfa\",\"contextId\":\"05217e44-7e9f-473e-ab4f-2c2dde50a2b1\",\"artifact\":{\"artifactId\":\"9b6934dd-37e3-4eb1-8766-962efaab63a1\",\"parts\":[{\"kind\":\"text\",\"text\":\"<section 1...>\"}]},\"append\":false,\"lastChunk\":false,\"kind\":\"artifact-update\"}}\n\n",
        "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"taskId\":\"225d6247-06ba-4cda-a08b-33ae35c8dcfa\",\"contextId\":\"05217e44-7e9f-473e-ab4f-2c2dde50a2b1\",\"artifact\":{\"artifactId\":\"9b6934dd-37e3-4eb1-8766-962efaab63a1\",\"parts\":[{\"kind\":\"text\",\"text\":\"<section 2...>\"}]},\"append\":true,\"lastChunk\":true,\"kind\":\"artifact-update\"}}\n\n",
        "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"taskId\":\"225d6247-06ba-4cda-a08b-33ae35c8dcfa\",\"contextId\":\"05217e44-7e9f-473e-ab4f-2c2dde50a2b1\",\"status\":{\"state\":\"completed\"},\"final\":true,\"kind\":\"status-update\"}}\n\n",
    );

    fn check_v0_3(o: &Observation) {
        assert_eq!(
            o.task_id.as_deref(),
            Some("225d6247-06ba-4cda-a08b-33ae35c8dcfa")
        );
        assert_eq!(
            o.context_id.as_deref(),
            Some("05217e44-7e9f-473e-ab4f-2c2dde50a2b1")
        );
        assert_eq!(o.state, Some(TaskState::Completed));
        assert_eq!(o.transitions, 3, "submitted, working, completed");
        assert!(o.final_event);
        assert_eq!(o.events, 5);
        assert_eq!(o.artifacts, 1, "two chunks of one artifact");
    }

    #[test]
    fn a_v0_3_stream_in_one_piece() {
        let mut r = EventReader::new();
        r.feed(V0_3_STREAM.as_bytes());
        check_v0_3(&r.finish().0);
    }

    #[test]
    fn the_same_stream_cut_at_every_byte_and_with_crlf() {
        let mut r = EventReader::new();
        for b in V0_3_STREAM.as_bytes() {
            r.feed(std::slice::from_ref(b));
        }
        check_v0_3(&r.finish().0);
        let crlf = V0_3_STREAM.replace('\n', "\r\n");
        let mut r = EventReader::new();
        for piece in crlf.as_bytes().chunks(7) {
            r.feed(piece);
        }
        check_v0_3(&r.finish().0);
    }

    #[test]
    fn a_v1_0_http_json_stream() {
        // HTTP+JSON streams carry StreamResponse objects without the JSON-RPC envelope; v1.0
        // has no `final`: the stream ends.
        let stream = concat!(
            "data: {\"task\":{\"id\":\"t1\",\"contextId\":\"c1\",\"status\":{\"state\":\"TASK_STATE_SUBMITTED\"}}}\n\n",
            "data: {\"statusUpdate\":{\"taskId\":\"t1\",\"contextId\":\"c1\",\"status\":{\"state\":\"TASK_STATE_WORKING\"}}}\n\n",
            "data: {\"artifactUpdate\":{\"taskId\":\"t1\",\"contextId\":\"c1\",\"artifact\":{\"artifactId\":\"a1\",\"parts\":[{\"text\":\"x\"}]}}}\n\n",
            "data: {\"artifactUpdate\":{\"taskId\":\"t1\",\"contextId\":\"c1\",\"artifact\":{\"artifactId\":\"a2\",\"parts\":[{\"text\":\"y\"}]}}}\n\n",
            "data: {\"statusUpdate\":{\"taskId\":\"t1\",\"contextId\":\"c1\",\"status\":{\"state\":\"TASK_STATE_COMPLETED\"}}}\n\n",
        );
        let mut r = EventReader::new();
        r.feed(stream.as_bytes());
        let (o, errors) = r.finish();
        assert_eq!(o.task_id.as_deref(), Some("t1"));
        assert_eq!(o.state, Some(TaskState::Completed));
        assert!(!o.final_event);
        assert_eq!((o.artifacts, o.events, errors), (2, 5, 0));
    }

    #[test]
    fn multi_line_data_error_events_and_oversized_events() {
        let mut r = EventReader::new();
        r.feed(b"event: message\ndata: {\"statusUpdate\":\ndata: {\"taskId\":\"t\",\"status\":{\"state\":\"working\"}}}\n\n");
        r.feed(b"event: error\ndata: {\"type\":\"about:blank\",\"status\":500}\n\n");
        let big = format!(
            "data: {{\"task\":{{\"id\":\"big\",\"status\":{{\"state\":\"failed\"}},\"pad\":\"{}\"}}}}\n\n",
            "x".repeat(MAX_EVENT_BYTES)
        );
        for piece in big.as_bytes().chunks(64 * 1024) {
            r.feed(piece);
        }
        r.feed(
            b"data: {\"statusUpdate\":{\"taskId\":\"t\",\"status\":{\"state\":\"completed\"}}}\n\n",
        );
        let (o, errors) = r.finish();
        assert_eq!(errors, 1);
        assert!(o.error);
        assert_eq!(
            o.task_id.as_deref(),
            Some("t"),
            "the oversized event was skipped"
        );
        assert_eq!(o.state, Some(TaskState::Completed));
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        let mut r = EventReader::new();
        r.feed(b"data: {\"task\":{\"id\":\"t\",\"status\":{\"state\":\"working\"}}}");
        assert_eq!(r.finish().0.events, 0);
    }
}
