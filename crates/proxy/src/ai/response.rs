//! The provider's response, shaped for the caller: translated (and usage read) whole for JSON
//! bodies, event by event for streams.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::Response;
use http_body::Frame;
use http_body_util::BodyExt;
use llm::{ResponseInfo, StreamTranslator};

use std::sync::Arc;

use super::{Shape, MAX_ERROR_BODY};
use crate::body::{self, Body, BoxError};
use crate::error::ProxyError;
use crate::observe::LlmSlot;

/// SSE, or AWS's binary event stream (Bedrock's ConverseStream).
fn is_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim_start)
        .is_some_and(|v| {
            v.starts_with("text/event-stream")
                || v.starts_with("application/vnd.amazon.eventstream")
        })
}

/// Reads (and translates) the provider's response into the caller's dialect. Streams are
/// translated event by event as they arrive; other bodies are read whole (bounded).
pub async fn shape_response(
    resp: Response<Body>,
    shape: Shape,
) -> Result<Response<Body>, ProxyError> {
    let translated = shape.ingress != shape.egress;
    if !shape.inspect && !translated {
        return Ok(resp);
    }
    let (mut parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        if !translated {
            return Ok(Response::from_parts(parts, body));
        }
        let bytes = read_limited(body, MAX_ERROR_BODY).await?;
        let out = llm::translate_error(shape.ingress, shape.egress, parts.status.as_u16(), &bytes)
            .map(Bytes::from)
            .unwrap_or(bytes);
        set_json_length(&mut parts.headers, out.len());
        return Ok(Response::from_parts(parts, body::full(out)));
    }
    if is_stream(&parts.headers) {
        parts.headers.remove(header::CONTENT_LENGTH);
        if translated {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        let translator = StreamTranslator::new(shape.ingress, shape.egress, shape.include_usage)
            .with_upstream_model(shape.upstream_model.as_deref());
        let body = TranslatingBody {
            inner: body,
            translator,
            done: false,
            llm: shape.llm,
            upstream_model: shape.upstream_model,
            first_token: false,
        };
        return Ok(Response::from_parts(parts, body.boxed_unsync()));
    }
    let bytes = read_limited(body, shape.max_buffered).await?;
    match llm::translate_response_with_model(
        shape.ingress,
        shape.egress,
        &bytes,
        shape.upstream_model.as_deref(),
    ) {
        Ok((out, info)) => {
            record(&shape.llm, shape.upstream_model.as_deref(), info);
            let out = out.map(Bytes::from).unwrap_or(bytes);
            if translated {
                set_json_length(&mut parts.headers, out.len());
            }
            Ok(Response::from_parts(parts, body::full(out)))
        }
        // A body we cannot read is forwarded as it came when no translation was needed.
        Err(_) if !translated => Ok(Response::from_parts(parts, body::full(bytes))),
        Err(e) => Err(ProxyError::upstream_error(format!(
            "{} returned a response that cannot be translated: {}",
            shape.provider, e.message
        ))),
    }
}

fn set_json_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONTENT_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
}

async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    body::read_limited(body, limit).await.map_err(|e| match e {
        body::ReadError::TooLarge => ProxyError::upstream_error(format!(
            "the provider's response exceeds the {limit}-byte limit"
        )),
        body::ReadError::Body(e) if e.is::<body::UpstreamIdleTimeout>() => {
            ProxyError::upstream_timeout()
        }
        body::ReadError::Body(e) => {
            ProxyError::upstream_error(format!("reading the provider's response failed: {e}"))
        }
    })
}

/// The response side of the call's telemetry record: model, usage, completion text.
fn record(slot: &LlmSlot, upstream_model: Option<&str>, info: ResponseInfo) {
    slot.update(|r| {
        r.response_model = info.model.or_else(|| upstream_model.map(str::to_string));
        r.input_tokens = info.usage.input_tokens;
        r.output_tokens = info.usage.output_tokens;
        r.cached_input_tokens = info.usage.cached_input_tokens;
        r.reasoning_tokens = info.usage.reasoning_tokens;
        r.completion = info.completion;
        for text in &mut r.completion {
            llm::cap_text(text, llm::recorded_text_cap());
        }
    });
}

/// A provider stream rewritten event by event into the caller's dialect. An upstream failure
/// mid-stream becomes an error event in that dialect and a clean end of the body.
struct TranslatingBody {
    inner: Body,
    translator: StreamTranslator,
    done: bool,
    llm: Arc<LlmSlot>,
    upstream_model: Option<String>,
    first_token: bool,
}

impl TranslatingBody {
    fn end(&mut self) {
        self.done = true;
        record(
            &self.llm,
            self.upstream_model.as_deref(),
            self.translator.info(),
        );
    }

    /// Time to first token: the first content delta the translator let through.
    fn note_first_token(&mut self) {
        if !self.first_token && self.translator.saw_first_token() {
            self.first_token = true;
            let ttft = self.llm.start.elapsed();
            self.llm.update(|r| r.time_to_first_token = Some(ttft));
        }
    }
}

impl http_body::Body for TranslatingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let out = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.translator.feed(data);
                        this.note_first_token();
                        out
                    }
                    // Trailers have no place in an SSE stream.
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "provider stream failed");
                    let out = this
                        .translator
                        .fail(&format!("the provider's stream broke off: {e}"));
                    this.llm.update(|r| r.interrupted = true);
                    this.end();
                    out
                }
                None => {
                    let out = this.translator.finish();
                    this.end();
                    out
                }
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
