//! Simulated model providers for tests, benchmarks and `switchyard demo`.
//!
//! Each simulator is a real HTTP server on a real socket speaking a provider's documented wire
//! format: [`openai`] (Chat Completions, Embeddings, Responses, Models), [`anthropic`]
//! (Messages, token counting, Models), [`gemini`] (Gemini API and Vertex AI `generateContent`,
//! with its own OAuth token endpoint) and [`bedrock`] (Bedrock Runtime `Converse` /
//! `ConverseStream`, SigV4-verified). Content is deterministic (derived from the prompt) so
//! tests can assert on it, and faults can be injected per request with the [`FAULT_HEADER`]
//! header or per server with `Options::fault` (see [`Fault`]).
//!
//! [`a2a`] is a small A2A agent (JSON-RPC, v1.0 and v0.3 method names) that echoes.
//!
//! [`vllm`] is different in kind: a fleet of simulated vLLM pods whose engine models continuous
//! batching and a prefix-cached paged KV cache in time, for benchmarking routing strategies.
//!
//! Both simulators share one accept loop (`serve_service`) for plain TCP and TLS, so a test can
//! put either behind TLS with its own CA and ALPN (`h2`, `http/1.1`).

pub mod a2a;
pub mod anthropic;
pub mod bedrock;
mod body;
mod fault;
pub mod gemini;
pub mod mcp;
pub mod mcp_modern;
pub mod openai;
mod tools;
pub mod vllm;

pub use fault::{Fault, FAULT_HEADER};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// The error a simulated body can end with. Only fault injection produces one: a body that ends
/// in an error makes hyper abort the connection (HTTP/1) or reset the stream (HTTP/2), which is
/// how a client observes a truncated response rather than a clean end.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body every simulator serves.
pub type SimBody = UnsyncBoxBody<Bytes, BoxError>;

/// A running simulator. Dropping it stops accepting new connections.
pub struct SimServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Background tasks that live as long as the server (e.g. a simulated engine loop).
    companions: Vec<tokio::task::JoinHandle<()>>,
}

impl SimServer {
    pub fn abort(&self) {
        self.task.abort();
        for t in &self.companions {
            t.abort();
        }
    }

    /// Ties `task` to this server: aborted with it.
    pub(crate) fn with_companion(mut self, task: tokio::task::JoinHandle<()>) -> Self {
        self.companions.push(task);
        self
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The future a simulator's request handler returns.
pub(crate) type ResponseFuture = Pin<Box<dyn Future<Output = http::Response<SimBody>> + Send>>;

/// A simulator's request handler, shared by every connection.
pub(crate) type Service = Arc<dyn Fn(http::Request<Incoming>) -> ResponseFuture + Send + Sync>;

/// Serves `service` on `listener`, HTTP/1.1 and HTTP/2 (detected per connection), one task per
/// connection; with `tls`, each connection is a TLS handshake first. This is the one accept loop
/// for plain and TLS serving.
pub(crate) fn serve_service(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: Service,
) -> SimServer {
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let acceptor = tls.map(|config| tokio_rustls::TlsAcceptor::from(with_default_alpn(config)));
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Typically EMFILE: back off instead of spinning on the error.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => serve_connection(stream, service).await,
                    Some(acceptor) => {
                        if let Ok(tls_stream) = acceptor.accept(stream).await {
                            serve_connection(tls_stream, service).await;
                        }
                    }
                }
            });
        }
    });
    SimServer {
        addr,
        task,
        companions: Vec::new(),
    }
}

/// A TLS config that offers `h2` and `http/1.1` unless the caller chose its own ALPN list.
fn with_default_alpn(config: Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    if !config.alpn_protocols.is_empty() {
        return config;
    }
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn serve_connection<I>(io: I, service: Service)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let svc = hyper::service::service_fn(move |req| {
        let fut = service(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let _ = builder.serve_connection(TokioIo::new(io), svc).await;
}

/// Why a request body could not be used as JSON.
pub(crate) enum JsonBodyError {
    /// The body could not be read (client went away, or it exceeded the size limit).
    Unreadable,
    /// The body is not JSON; the parser's message.
    Malformed(String),
}

/// Requests larger than this are refused rather than buffered (Anthropic documents 32 MB).
const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// Reads and parses a JSON request body.
pub(crate) async fn read_json(body: Incoming) -> Result<serde_json::Value, JsonBodyError> {
    let bytes = Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|_| JsonBodyError::Unreadable)?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| JsonBodyError::Malformed(e.to_string()))
}

/// A rough, deterministic token count: words and punctuation-separated pieces. Both simulators
/// use it so usage numbers are stable across runs and comparable between providers.
pub fn count_tokens(text: &str) -> u64 {
    token_spans(text).count() as u64
}

/// The byte ranges of the tokens [`count_tokens`] counts.
fn token_spans(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let is_sep = |c: char| c.is_whitespace() || c.is_ascii_punctuation();
    let mut start: Option<usize> = None;
    let mut chars = text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')));
    std::iter::from_fn(move || {
        for (i, c) in chars.by_ref() {
            match (start, is_sep(c)) {
                (None, false) => start = Some(i),
                (Some(s), true) => {
                    start = None;
                    return Some((s, i));
                }
                _ => {}
            }
        }
        None
    })
}

/// `text` cut after its first `max_tokens` tokens (as [`count_tokens`] counts them), or `None`
/// when it already fits. Used to honour `max_tokens`-style limits.
pub(crate) fn truncate_to_tokens(text: &str, max_tokens: u64) -> Option<String> {
    if count_tokens(text) <= max_tokens {
        return None;
    }
    if max_tokens == 0 {
        return Some(String::new());
    }
    let end = token_spans(text)
        .nth(max_tokens as usize - 1)
        .map_or(text.len(), |(_, end)| end);
    Some(text[..end].to_string())
}

/// `text` cut before the earliest of `stops`, with the stop sequence that matched.
pub(crate) fn cut_at_stop<'a>(text: &str, stops: &'a [String]) -> Option<(String, &'a str)> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s.as_str())))
        .min_by_key(|(at, _)| *at)
        .map(|(at, stop)| (text[..at].to_string(), stop))
}

/// The deterministic reply to a user's text, shared by both simulators.
pub(crate) fn echo_reply(user_text: &str) -> String {
    format!("Hello! You said: {user_text}")
}

/// Splits `s` into about `parts` pieces on char boundaries, so streamed fragments of a JSON
/// string still concatenate to the original (and individually are usually not valid JSON, as
/// with real providers).
pub(crate) fn split_fragments(s: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let size = chars.len().div_ceil(parts.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// Words with their trailing whitespace, the unit simulators stream text in.
pub(crate) fn stream_pieces(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_string).collect()
}

/// A stable 64-bit FNV-1a hash, for deterministic ids, signatures and vectors.
pub(crate) fn stable_hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Standard base64 with padding (embeddings' `encoding_format: "base64"`, thinking signatures).
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words_and_punctuation_separated_pieces() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("Hello, world!"), 2);
        assert_eq!(count_tokens("it's a  test"), 4);
    }

    #[test]
    fn truncation_keeps_exactly_the_first_tokens() {
        assert_eq!(truncate_to_tokens("one two three", 5), None);
        assert_eq!(
            truncate_to_tokens("one two three", 2).as_deref(),
            Some("one two")
        );
        assert_eq!(truncate_to_tokens("a, b, c", 1).as_deref(), Some("a"));
        assert_eq!(truncate_to_tokens("a b", 0).as_deref(), Some(""));
    }

    #[test]
    fn stop_sequences_cut_at_the_earliest_match() {
        let stops = vec!["world".to_string(), "lo".to_string(), String::new()];
        assert_eq!(
            cut_at_stop("hello world", &stops),
            Some(("hel".into(), "lo"))
        );
        assert_eq!(cut_at_stop("abc", &stops), None);
    }

    #[test]
    fn fragments_reassemble_across_multibyte_chars() {
        let s = r#"{"city":"Zürich ☀"}"#;
        let parts = split_fragments(s, 4);
        assert!(parts.len() > 1);
        assert_eq!(parts.concat(), s);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
