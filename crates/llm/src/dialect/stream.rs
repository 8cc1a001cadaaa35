//! What every stream shares: the traits a dialect's stream implements
//! ([`ProviderStream`], or [`SseEvents`] inside the shared [`SseStream`];
//! [`WrappedStream`] for a client dialect around a whole translator) and
//! what has been observed so far ([`Observed`]).

use bytes::Bytes;

use crate::{ResponseInfo, Usage};

/// Choice indexes above this are ignored for info, so a hostile `index`
/// cannot make us allocate.
const MAX_CHOICES: u64 = 128;

/// What has been observed so far, shared by all modes.
#[derive(Default)]
pub(crate) struct Observed {
    pub model: Option<String>,
    pub usage: Usage,
    pub completion: Vec<String>,
    pub first_token: bool,
}

impl Observed {
    pub(crate) fn completion_mut(&mut self, index: u64) -> Option<&mut String> {
        crate::pivot::bounded_slot(&mut self.completion, index, MAX_CHOICES)
    }

    /// Text of choice 0; also the first token.
    pub(crate) fn push_text(&mut self, text: &str) {
        self.first_token = true;
        if let Some(c) = self.completion_mut(0) {
            crate::push_capped(c, text, crate::recorded_text_cap());
        }
    }
}

/// A provider's stream: decodes its framing, records what it sees in
/// `Observed` and writes the client's events.
pub(crate) trait ProviderStream: Send {
    /// False when the client speaks the provider's dialect: the input bytes
    /// are forwarded unchanged and only observed.
    fn translates(&self) -> bool;

    /// A chunk of the upstream body, split anywhere.
    fn feed(&mut self, chunk: &[u8], observed: &mut Observed, out: &mut Vec<u8>);

    /// The upstream ended cleanly: flush and close the client's stream.
    fn finish(&mut self, observed: &mut Observed, out: &mut Vec<u8>);

    /// The model sent upstream, for providers whose stream never names it.
    fn set_upstream_model(&mut self, _model: &str, _observed: &mut Observed) {}
}

/// A client dialect's own translator around an inner one.
pub(crate) trait WrappedStream: Send {
    fn feed(&mut self, chunk: Bytes) -> Bytes;
    fn finish(&mut self) -> Bytes;
    fn fail(&mut self, message: &str) -> Bytes;
    fn info(&self) -> ResponseInfo;
    fn saw_first_token(&self) -> bool;
    fn set_upstream_model(&mut self, model: &str);
}

/// The SSE part of a provider stream: one parsed event at a time.
pub(crate) trait SseEvents: Send {
    fn translates(&self) -> bool;
    fn on_event(&mut self, data: &str, observed: &mut Observed, out: &mut Vec<u8>);
    fn finish(&mut self, _observed: &mut Observed, _out: &mut Vec<u8>) {}
    fn set_upstream_model(&mut self, _model: &str, _observed: &mut Observed) {}
}

/// A provider stream framed as SSE: the shared parser around a dialect's
/// [`SseEvents`].
pub(crate) struct SseStream<E> {
    parser: crate::sse::SseParser,
    events: E,
}

impl<E: SseEvents + 'static> SseStream<E> {
    pub(crate) fn boxed(events: E) -> Box<dyn ProviderStream> {
        Box::new(SseStream {
            parser: crate::sse::SseParser::default(),
            events,
        })
    }
}

impl<E: SseEvents> ProviderStream for SseStream<E> {
    fn translates(&self) -> bool {
        self.events.translates()
    }

    fn feed(&mut self, chunk: &[u8], observed: &mut Observed, out: &mut Vec<u8>) {
        // Each event is handled as the parser completes it: nothing is collected first.
        let events = &mut self.events;
        self.parser
            .feed_ref(chunk, &mut |e| events.on_event(e.data, observed, out));
    }

    fn finish(&mut self, observed: &mut Observed, out: &mut Vec<u8>) {
        let events = &mut self.events;
        self.parser
            .finish_ref(&mut |e| events.on_event(e.data, observed, out));
        self.events.finish(observed, out);
    }

    fn set_upstream_model(&mut self, model: &str, observed: &mut Observed) {
        self.events.set_upstream_model(model, observed);
    }
}
