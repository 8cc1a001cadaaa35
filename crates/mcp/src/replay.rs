//! Resumable event streams. Every SSE event the gateway sends in a session gets an id
//! `<stream>-<seq>`, unique in the session, and is remembered (boundedly). A client whose
//! stream broke sends `GET` with `Last-Event-ID`; it gets what it missed on that stream, and
//! then the rest of it: a POST's stream keeps being read from the target after the client
//! left, so a long tool call's answer is not lost.

use crate::stream::Event;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::{mpsc, Notify};

/// Events kept per stream, and streams kept per session.
pub(crate) const MAX_EVENTS_PER_STREAM: usize = 256;
const MAX_STREAMS: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// The answer to one POST: it ends with the response.
    Post,
    /// The session's server stream (GET).
    Server,
}

struct StreamLog {
    id: u32,
    kind: StreamKind,
    events: VecDeque<(u64, Value)>,
    next: u64,
    done: bool,
}

#[derive(Default)]
pub struct EventLog {
    inner: Mutex<(u32, VecDeque<StreamLog>)>,
    changed: Notify,
}

pub fn parse_id(id: &str) -> Option<(u32, u64)> {
    let (s, n) = id.trim().split_once('-')?;
    Some((s.parse().ok()?, n.parse().ok()?))
}

impl EventLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u32, VecDeque<StreamLog>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(&self, kind: StreamKind) -> u32 {
        let mut g = self.lock();
        g.0 += 1;
        let id = g.0;
        if g.1.len() >= MAX_STREAMS {
            // Forget the oldest finished stream, else the oldest.
            let pos = g.1.iter().position(|s| s.done).unwrap_or(0);
            g.1.remove(pos);
        }
        g.1.push_back(StreamLog {
            id,
            kind,
            events: VecDeque::new(),
            next: 1,
            done: false,
        });
        id
    }

    pub fn kind(&self, stream: u32) -> Option<StreamKind> {
        self.lock()
            .1
            .iter()
            .find(|s| s.id == stream)
            .map(|s| s.kind)
    }

    /// Remembers a message sent on `stream`; returns its event id.
    pub fn record(&self, stream: u32, msg: &Value) -> String {
        let seq = {
            let mut g = self.lock();
            match g.1.iter_mut().find(|s| s.id == stream) {
                Some(s) => {
                    let seq = s.next;
                    s.next += 1;
                    if s.events.len() >= MAX_EVENTS_PER_STREAM {
                        s.events.pop_front();
                    }
                    s.events.push_back((seq, msg.clone()));
                    seq
                }
                None => 0,
            }
        };
        self.changed.notify_waiters();
        format!("{stream}-{seq}")
    }

    pub fn finish(&self, stream: u32) {
        if let Some(s) = self.lock().1.iter_mut().find(|s| s.id == stream) {
            s.done = true;
        }
        self.changed.notify_waiters();
    }

    /// Events of `stream` after `after`, and whether the stream has ended (or is forgotten).
    pub(crate) fn since(&self, stream: u32, after: u64) -> (Vec<Event>, bool) {
        let g = self.lock();
        let Some(s) = g.1.iter().find(|s| s.id == stream) else {
            return (Vec::new(), true);
        };
        let events = s
            .events
            .iter()
            .filter(|(seq, _)| *seq > after)
            .map(|(seq, m)| Event {
                id: Some(format!("{stream}-{seq}")),
                msg: m.clone(),
            })
            .collect();
        (events, s.done)
    }

    /// Replays `stream` after `after` into `tx`; a POST stream is then followed to its end.
    pub(crate) async fn follow(&self, stream: u32, mut after: u64, tx: mpsc::Sender<Event>) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (events, done) = self.since(stream, after);
            for e in events {
                if let Some((_, seq)) = e.id.as_deref().and_then(parse_id) {
                    after = seq;
                }
                if tx.send(e).await.is_err() {
                    return;
                }
            }
            if done || self.kind(stream) != Some(StreamKind::Post) {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_post_stream_is_replayed_then_followed_to_its_end() {
        let log = std::sync::Arc::new(EventLog::default());
        let s = log.open(StreamKind::Post);
        let first = log.record(s, &json!({"n": 1}));
        log.record(s, &json!({"n": 2}));
        let (after_stream, after_seq) = parse_id(&first).unwrap();
        assert_eq!(after_stream, s);
        let (tx, mut rx) = mpsc::channel(8);
        let l = log.clone();
        let follower = tokio::spawn(async move { l.follow(s, after_seq, tx).await });
        assert_eq!(
            rx.recv().await.unwrap().msg["n"],
            2,
            "missed events come first"
        );
        log.record(s, &json!({"n": 3}));
        assert_eq!(rx.recv().await.unwrap().msg["n"], 3, "then live ones");
        log.finish(s);
        assert!(
            rx.recv().await.is_none(),
            "and the stream ends with the call"
        );
        follower.await.unwrap();
    }

    #[test]
    fn ids_and_bounds() {
        assert_eq!(parse_id("3-17"), Some((3, 17)));
        assert_eq!(parse_id("x"), None);
        let log = EventLog::default();
        let s = log.open(StreamKind::Server);
        for i in 0..(MAX_EVENTS_PER_STREAM + 10) {
            log.record(s, &json!(i));
        }
        let (events, _) = log.since(s, 0);
        assert_eq!(events.len(), MAX_EVENTS_PER_STREAM);
        for _ in 0..MAX_STREAMS + 5 {
            log.open(StreamKind::Post);
        }
        assert!(log.lock().1.len() <= MAX_STREAMS);
    }
}
