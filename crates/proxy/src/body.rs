//! The body type that flows through the proxy in both directions, and bounded buffering.

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every request and response body the proxy handles: streamed, boxed once.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body as hyper hands it over: a client's request body or an upstream's answer (see
/// [`crate::upstream::UpstreamBody`]).
pub trait HyperBody:
    http_body::Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static
{
}

impl<B> HyperBody for B where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static
{
}

pub fn from_incoming(body: impl HyperBody) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

/// A client's request body whose reader waits at most `idle` for each next frame
/// (`config.limits.bodyReadTimeout`): a client trickling its body or stopping half-way fails
/// with [`BodyReadTimeout`] (408), instead of holding its request open forever. Only time
/// spent waiting on the client counts: the clock starts when a read finds nothing to take.
pub fn from_client(body: hyper::body::Incoming, idle: std::time::Duration) -> Body {
    if body.is_end_stream() {
        return from_incoming(body);
    }
    ReadTimeout {
        inner: body,
        idle,
        sleep: None,
        error: || Box::new(BodyReadTimeout),
    }
    .boxed_unsync()
}

/// An upstream's response body that may go at most `idle` without a frame
/// (`timeout.idleTimeout`); past it the body fails with [`UpstreamIdleTimeout`].
pub fn from_upstream(body: impl HyperBody, idle: std::time::Duration) -> Body {
    if body.is_end_stream() {
        return from_incoming(body);
    }
    ReadTimeout {
        inner: body,
        idle,
        sleep: None,
        error: || Box::new(UpstreamIdleTimeout),
    }
    .boxed_unsync()
}

/// The error of an upstream response body that went quiet past `timeout.idleTimeout`.
#[derive(Debug)]
pub struct UpstreamIdleTimeout;

impl std::fmt::Display for UpstreamIdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream stopped sending its answer (timeout.idleTimeout)")
    }
}

impl std::error::Error for UpstreamIdleTimeout {}

/// The error of a request body whose client went quiet for longer than `bodyReadTimeout`.
#[derive(Debug)]
pub struct BodyReadTimeout;

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client stopped sending the request body (bodyReadTimeout)")
    }
}

impl std::error::Error for BodyReadTimeout {}

/// Whether an error (or one of its sources) is a [`BodyReadTimeout`].
pub fn is_read_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<BodyReadTimeout>() {
            return true;
        }
        cur = e.source();
    }
    false
}

struct ReadTimeout<B> {
    inner: B,
    idle: std::time::Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    error: fn() -> BoxError,
}

impl<B: HyperBody> http_body::Body for ReadTimeout<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.sleep = None;
                Poll::Ready(r.map(|f| f.map_err(|e| Box::new(e) as BoxError)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match std::future::Future::poll(sleep.as_mut(), cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err((this.error)()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body read for replay (retries), or a stream that was too large to keep.
pub enum Buffered {
    /// The whole body, small enough to send again.
    Complete(Bytes),
    /// The body exceeded the replay limit: what was read so far is chained back in front of
    /// the rest, so nothing is lost, but it can be sent only once.
    Streaming(Body),
}

/// Reads up to `limit` bytes. A body that declares a larger size up front is not read at all.
pub async fn buffer_for_replay(mut body: Body, limit: usize) -> Result<Buffered, BoxError> {
    if body.is_end_stream() {
        return Ok(Buffered::Complete(Bytes::new()));
    }
    if body.size_hint().lower() as usize > limit {
        return Ok(Buffered::Streaming(body));
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            // Sized by the declared length once the body starts: grown by doubling, a large
            // body's buffer would end up to twice its size, held for the whole request.
            if buf.capacity() == 0 {
                buf.reserve((body.size_hint().lower() as usize + data.len()).min(limit + 1));
            }
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                let head = futures_util::stream::once(async move {
                    Ok::<_, BoxError>(http_body::Frame::data(buf.freeze()))
                });
                let rest = futures_util::StreamExt::map(body.into_data_stream(), |r| {
                    r.map(http_body::Frame::data)
                });
                let chained = futures_util::StreamExt::chain(head, rest);
                return Ok(Buffered::Streaming(
                    http_body_util::StreamBody::new(chained).boxed_unsync(),
                ));
            }
        }
        // Request trailers are rare and not replayable; they are dropped when buffering.
    }
    Ok(Buffered::Complete(buf.freeze()))
}

/// Waits up to `wait` for the body's first frame and hands the body back whole, that frame
/// chained in front; `None` when none came in time (the body is dropped then).
pub async fn with_first_frame(mut body: Body, wait: std::time::Duration) -> Option<Body> {
    if body.is_end_stream() {
        return Some(body);
    }
    match tokio::time::timeout(wait, body.frame()).await {
        Err(_) => None,
        Ok(None) => Some(empty()),
        Ok(Some(first)) => {
            let head = futures_util::stream::once(async move { first });
            let rest = futures_util::stream::unfold(body, |mut b| async move {
                b.frame().await.map(|f| (f, b))
            });
            let chained = futures_util::StreamExt::chain(head, rest);
            Some(http_body_util::StreamBody::new(chained).boxed_unsync())
        }
    }
}

/// Why a bounded read stopped.
#[derive(Debug)]
pub enum ReadError {
    TooLarge,
    Body(BoxError),
}

/// Reads a whole body, failing once it passes `limit` bytes. (A frame loop rather than
/// `Limited::collect`, whose future trips the compiler's `Send` inference inside handlers.)
pub async fn read_limited(mut body: Body, limit: usize) -> Result<Bytes, ReadError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(ReadError::Body)?.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ReadError::TooLarge);
            }
            // Sized by the declared length once the body starts (see `buffer_for_replay`).
            if buf.capacity() == 0 {
                buf.reserve((body.size_hint().lower() as usize + data.len()).min(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A response body passed through the route's chunk filters (the response-body phase), in
/// order; what a filter holds back is flushed when the body ends.
pub struct Filtered {
    inner: Body,
    filters: Vec<Box<dyn crate::pipeline::ChunkFilter>>,
    /// The trailers frame seen at the end, sent after the flushed tail.
    trailers: Option<http::HeaderMap>,
    done: bool,
}

impl Filtered {
    pub fn new(inner: Body, filters: Vec<Box<dyn crate::pipeline::ChunkFilter>>) -> Self {
        Filtered {
            inner,
            filters,
            trailers: None,
            done: false,
        }
    }

    /// What the filters held back, each filter's tail passed through the ones after it.
    fn flush(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        for i in 0..self.filters.len() {
            let mut tail = self.filters[i].finish();
            for later in &mut self.filters[i + 1..] {
                tail = later.chunk(tail);
            }
            out.extend_from_slice(&tail);
        }
        out.freeze()
    }
}

impl http_body::Body for Filtered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(
                    this.trailers
                        .take()
                        .map(|t| Ok(http_body::Frame::trailers(t))),
                );
            }
            match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        for f in &mut this.filters {
                            data = f.chunk(data);
                        }
                        if this.filters.iter().any(|f| f.ended()) {
                            this.done = true;
                            let tail = this.flush();
                            if !tail.is_empty() {
                                let mut all = BytesMut::from(&data[..]);
                                all.extend_from_slice(&tail);
                                data = all.freeze();
                            }
                        }
                        if !data.is_empty() {
                            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            this.trailers = Some(t);
                        }
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    let tail = this.flush();
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(http_body::Frame::data(tail))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&'static str]) -> Body {
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    #[tokio::test]
    async fn small_body_is_kept_whole() {
        match buffer_for_replay(chunked(&["ab", "cd"]), 10).await.unwrap() {
            Buffered::Complete(b) => assert_eq!(&b[..], b"abcd"),
            Buffered::Streaming(_) => panic!("should be complete"),
        }
    }

    #[tokio::test]
    async fn large_body_streams_without_losing_bytes() {
        let body = chunked(&["abc", "def", "ghi"]);
        let Buffered::Streaming(rest) = buffer_for_replay(body, 4).await.unwrap() else {
            panic!("should stream")
        };
        let all = rest.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdefghi");
    }

    /// Masks "secret" even when it is split across chunks: holds back a tail that could
    /// still be the start of the word.
    struct Mask {
        held: Vec<u8>,
    }

    impl crate::pipeline::ChunkFilter for Mask {
        fn chunk(&mut self, data: Bytes) -> Bytes {
            self.held.extend_from_slice(&data);
            let text = String::from_utf8_lossy(&self.held).replace("secret", "******");
            let word = b"secret";
            let keep = (1..word.len())
                .rev()
                .find(|&n| text.len() >= n && text.as_bytes().ends_with(&word[..n]))
                .unwrap_or(0);
            let (now, later) = text.split_at(text.len() - keep);
            self.held = later.as_bytes().to_vec();
            Bytes::from(now.to_string())
        }
        fn finish(&mut self) -> Bytes {
            Bytes::from(std::mem::take(&mut self.held))
        }
    }

    struct Upper;

    impl crate::pipeline::ChunkFilter for Upper {
        fn chunk(&mut self, data: Bytes) -> Bytes {
            Bytes::from(data.to_ascii_uppercase())
        }
    }

    #[tokio::test]
    async fn filters_run_in_order_on_every_chunk_and_flush_their_tails() {
        for parts in [
            &["a sec", "ret and a se", "cr"][..],
            &["a secret and a secr"][..],
            &["a s", "e", "c", "r", "e", "t and a secr"][..],
        ] {
            let filters: Vec<Box<dyn crate::pipeline::ChunkFilter>> =
                vec![Box::new(Mask { held: Vec::new() }), Box::new(Upper)];
            let out = Filtered::new(chunked(parts), filters)
                .collect()
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(&out[..], b"A ****** AND A SECR", "chunks {parts:?}");
        }
    }
}
