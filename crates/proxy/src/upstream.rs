//! Connections to upstreams: pooled keep-alive connections per backend, with a connector
//! that always dials the backend's address (the request URI carries the Host to send, which
//! may differ), applies the connect timeout, and wraps TLS when the backend asks for it.
//!
//! HTTP/1.1 requests go through [`H1Pool`], a pool of hyper's own connection handles; HTTP/2,
//! upgrades (WebSocket) and CONNECT go through hyper-util's general client. The general client
//! costs more per request (pool keyed by scheme and authority, a lazily raced connect, and a
//! task spawned per response to return the connection when it is idle again): profiled at
//! about 7% of the gateway's CPU on the plain path.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::body::{Body, BoxError};

/// Settings that identify one upstream client; equal settings share a pool across reloads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamKey {
    pub host: Arc<str>,
    pub port: u16,
    pub http2: bool,
    /// Identity of the TLS settings, including file contents, or None for cleartext.
    pub tls_fingerprint: Option<u64>,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
}

#[derive(Clone)]
pub struct Upstream {
    /// The general client: HTTP/2, upgrades, and the gateway's own calls (token endpoints,
    /// JWKS, ext_authz); traffic goes through [`Upstream::request`].
    pub client: Client<Connector, Body>,
    /// HTTP/1.1 connections, when the upstream is not HTTP/2.
    h1: Option<Arc<H1Pool>>,
    pub tls: bool,
    pub http2: bool,
    /// `host:port`, for errors and logs.
    pub address: Arc<str>,
}

impl Upstream {
    pub fn new(key: &UpstreamKey, tls: Option<crate::tls::ClientTls>) -> Self {
        let address: Arc<str> = if key.host.contains(':') {
            format!("[{}]:{}", key.host, key.port).into()
        } else {
            format!("{}:{}", key.host, key.port).into()
        };
        let connector = Connector(Arc::new(ConnectorInner {
            address: address.clone(),
            host: key.host.clone(),
            port: key.port,
            connect_timeout: key.connect_timeout,
            tls: tls.map(|t| (TlsConnector::from(t.config), t.server_name)),
        }));
        let h1 = (!key.http2).then(|| {
            Arc::new(H1Pool {
                connector: connector.clone(),
                idle: std::sync::Mutex::new(IdleSet::default()),
                max_idle: key.pool_max_idle,
                idle_timeout: key.pool_idle_timeout,
            })
        });
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(key.pool_idle_timeout)
            .pool_max_idle_per_host(key.pool_max_idle)
            .http2_only(key.http2)
            .build(connector);
        Upstream {
            client,
            h1,
            tls: key.tls_fingerprint.is_some(),
            http2: key.http2,
            address,
        }
    }

    /// Sends `req` (an absolute-form URI) and returns the answer's head; its body returns the
    /// connection to the pool when it has been read to the end.
    pub async fn request(&self, req: Request<Body>) -> Result<Response<UpstreamBody>, BoxError> {
        match &self.h1 {
            Some(pool) if is_plain_http1(&req) => pool.send(req).await,
            _ => Ok(self.client.request(req).await?.map(|inner| UpstreamBody {
                inner,
                give_back: None,
            })),
        }
    }
}

/// An HTTP/1.1 request that is not an upgrade or CONNECT (those need the general client).
fn is_plain_http1(req: &Request<Body>) -> bool {
    matches!(req.version(), Version::HTTP_11 | Version::HTTP_10)
        && req.method() != http::Method::CONNECT
        && !req.headers().contains_key(header::UPGRADE)
}

/// Idle HTTP/1.1 connections to one upstream, most recently used first out.
struct H1Pool {
    connector: Connector,
    idle: std::sync::Mutex<IdleSet>,
    max_idle: usize,
    idle_timeout: Duration,
}

#[derive(Default)]
struct IdleSet {
    conns: Vec<IdleConnection>,
    /// Whether a task is closing expired idle connections: it runs while any are idle.
    sweeping: bool,
}

struct IdleConnection {
    sender: http1::SendRequest<Body>,
    since: std::time::Instant,
}

impl IdleConnection {
    /// Still open, and idle for less than `timeout` at `now`.
    fn usable(&self, now: std::time::Instant, timeout: Duration) -> bool {
        !self.sender.is_closed() && now.duration_since(self.since) < timeout
    }
}

impl H1Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, IdleSet> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently returned idle connection still open and not expired.
    fn checkout(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle();
        let now = std::time::Instant::now();
        while let Some(c) = idle.conns.pop() {
            if c.usable(now, self.idle_timeout) {
                return Some(c.sender);
            }
        }
        None
    }

    /// A connection whose answer has been read: idle again, or closing.
    fn give_back(self: &Arc<Self>, sender: http1::SendRequest<Body>) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle();
        if idle.conns.len() >= self.max_idle {
            return;
        }
        idle.conns.push(IdleConnection {
            sender,
            since: std::time::Instant::now(),
        });
        if !idle.sweeping {
            idle.sweeping = self.start_sweeping();
        }
    }

    /// Closes idle connections as they expire, until none is idle (as the general client's
    /// pool does). False when there is no runtime to run on (expiry is then checked at
    /// checkout only).
    fn start_sweeping(self: &Arc<Self>) -> bool {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let pool = Arc::downgrade(self);
        let every = self.idle_timeout.max(Duration::from_millis(90));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                let now = std::time::Instant::now();
                let mut idle = pool.idle();
                idle.conns.retain(|c| c.usable(now, pool.idle_timeout));
                if idle.conns.is_empty() {
                    idle.sweeping = false;
                    return;
                }
            }
        });
        true
    }

    async fn connect(&self) -> Result<http1::SendRequest<Body>, BoxError> {
        let io = self.connector.connect().await?;
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        to_origin_form(&mut req);
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            // A connection returned as its answer ended may not have seen that end yet.
            if !sender.is_ready() && sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err("the upstream closed a new connection".into());
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let give_back = GiveBack {
                        sender,
                        pool: self.clone(),
                    };
                    // A bodiless answer (HEAD, 204, 304, length 0) may never be polled.
                    let give_back = if resp.body().is_end_stream() {
                        give_back.now();
                        None
                    } else {
                        Some(give_back)
                    };
                    return Ok(resp.map(|inner| UpstreamBody { inner, give_back }));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: the pooled connection was closing. Another one (or a new one)
                    // gets it, as the general client does.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }
}

/// What the general client does to an HTTP/1 request: a `Host` header from the URI when the
/// request has none, and the request target in origin form (`/path?query`).
fn to_origin_form(req: &mut Request<Body>) {
    if !req.headers().contains_key(header::HOST) {
        if let Some(host) = req.uri().host() {
            let default_port = match req.uri().scheme_str() {
                Some("https") => 443,
                _ => 80,
            };
            let value = match req.uri().port_u16() {
                Some(p) if p != default_port => HeaderValue::try_from(format!("{host}:{p}")),
                _ => HeaderValue::try_from(host),
            };
            if let Ok(v) = value {
                req.headers_mut().insert(header::HOST, v);
            }
        }
    }
    let origin = match req.uri().path_and_query() {
        Some(pq) if pq.as_str() != "/" => Uri::from(pq.clone()),
        _ => Uri::default(),
    };
    *req.uri_mut() = origin;
}

/// A connection to hand back to its pool.
struct GiveBack {
    sender: http1::SendRequest<Body>,
    pool: Arc<H1Pool>,
}

impl GiveBack {
    fn now(self) {
        self.pool.give_back(self.sender);
    }
}

/// An upstream's answer body. Read to its end, it returns its HTTP/1.1 connection to the pool;
/// dropped before, the connection closes (hyper cannot reuse it mid-answer).
pub struct UpstreamBody {
    inner: Incoming,
    give_back: Option<GiveBack>,
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                this.give_back = None;
                false
            }
            Poll::Pending => false,
        };
        if ended {
            if let Some(g) = this.give_back.take() {
                g.now();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Clone)]
pub struct Connector(Arc<ConnectorInner>);

struct ConnectorInner {
    /// `host:port`, the metrics label.
    address: Arc<str>,
    host: Arc<str>,
    port: u16,
    connect_timeout: Duration,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// A failure to open a connection: the request never reached the upstream, so it is safe to
/// try another backend or retry.
#[derive(Debug)]
pub struct ConnectError(pub String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.connect().await })
    }
}

impl Connector {
    /// A new connection, timed into the connect metrics.
    async fn connect(&self) -> Result<TokioIo<UpstreamStream>, BoxError> {
        let started = std::time::Instant::now();
        let result = open(&self.0).await;
        telemetry::Metrics::global().observe_connect(
            &self.0.address,
            started.elapsed(),
            result.is_ok(),
        );
        result
    }
}

/// TCP (and TLS) to the backend's address, each step under the connect timeout.
async fn open(inner: &ConnectorInner) -> Result<TokioIo<UpstreamStream>, BoxError> {
    let addr = format!("{}:{}", inner.host, inner.port);
    let connect = async {
        let addrs = tokio::net::lookup_host((&*inner.host, inner.port))
            .await
            .map_err(|e| ConnectError(format!("cannot resolve {addr}: {e}")))?;
        let mut last = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(ConnectError(match last {
            Some(e) => format!("cannot connect to {addr}: {e}"),
            None => format!("{addr} resolved to no addresses"),
        }))
    };
    let tcp = tokio::time::timeout(inner.connect_timeout, connect)
        .await
        .map_err(|_| ConnectError(format!("connecting to {addr} timed out")))??;
    let _ = tcp.set_nodelay(true);
    let stream = match &inner.tls {
        None => UpstreamStream::Plain(tcp),
        Some((connector, name)) => {
            let tls =
                tokio::time::timeout(inner.connect_timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| ConnectError(format!("TLS handshake with {addr} timed out")))?
                    .map_err(|e| ConnectError(format!("TLS handshake with {addr} failed: {e}")))?;
            UpstreamStream::Tls(Box::new(tls))
        }
    };
    Ok(TokioIo::new(stream))
}

pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(_) => Connected::new(),
            UpstreamStream::Tls(t) => {
                if t.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Walks an error's sources looking for a connect failure.
pub fn is_connect_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<ConnectError>() {
            return true;
        }
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// The most specific message in an error chain.
pub fn root_message(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// What the test upstream saw: connections accepted, and each request's target and Host.
    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        requests: Mutex<Vec<(String, String)>>,
    }

    /// An HTTP/1.1 upstream: `/slow` answers in two chunks 200 ms apart, `/empty` is 204,
    /// `/close` answers with `Connection: close`, anything else `ok`.
    async fn upstream() -> (u16, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move {
                            let host = req
                                .headers()
                                .get(header::HOST)
                                .map_or(String::new(), |h| h.to_str().unwrap().to_string());
                            s.requests
                                .lock()
                                .unwrap()
                                .push((req.uri().to_string(), host));
                            let resp = match req.uri().path() {
                                "/slow" => {
                                    let chunks = futures_util::stream::unfold(0, |i| async move {
                                        if i == 2 {
                                            return None;
                                        }
                                        if i == 1 {
                                            tokio::time::sleep(Duration::from_millis(200)).await;
                                        }
                                        let frame = http_body::Frame::data(Bytes::from("part "));
                                        Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
                                    });
                                    Response::new(http_body_util::StreamBody::new(chunks).boxed())
                                }
                                "/empty" => {
                                    let mut r = Response::new(http_body_util::Empty::new().boxed());
                                    *r.status_mut() = http::StatusCode::NO_CONTENT;
                                    r
                                }
                                "/close" => {
                                    let mut r =
                                        Response::new(http_body_util::Full::from("bye").boxed());
                                    r.headers_mut().insert(
                                        header::CONNECTION,
                                        HeaderValue::from_static("close"),
                                    );
                                    r
                                }
                                _ => Response::new(http_body_util::Full::from("ok").boxed()),
                            };
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (port, seen)
    }

    fn client(port: u16, idle_timeout: Duration) -> Upstream {
        Upstream::new(
            &UpstreamKey {
                host: "127.0.0.1".into(),
                port,
                http2: false,
                tls_fingerprint: None,
                connect_timeout: Duration::from_secs(2),
                pool_idle_timeout: idle_timeout,
                pool_max_idle: 8,
            },
            None,
        )
    }

    fn get(port: u16, path: &str) -> Request<Body> {
        Request::get(format!("http://upstream.example:{port}{path}"))
            .body(crate::body::empty())
            .unwrap()
    }

    async fn read(up: &Upstream, req: Request<Body>) -> String {
        let resp = up.request(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn answers_read_to_the_end_return_their_connection() {
        let (port, seen) = upstream().await;
        let up = client(port, Duration::from_secs(30));
        for _ in 0..5 {
            assert_eq!(read(&up, get(port, "/a?x=1")).await, "ok");
        }
        // A bodiless answer (never polled) returns its connection too.
        let resp = up.request(get(port, "/empty")).await.unwrap();
        assert_eq!(resp.status(), 204);
        drop(resp);
        assert_eq!(read(&up, get(port, "/a")).await, "ok");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
        // Origin form on the wire, Host from the URI (with its non-default port).
        let requests = seen.requests.lock().unwrap().clone();
        assert_eq!(
            requests[0],
            ("/a?x=1".to_string(), format!("upstream.example:{port}"))
        );
        // A Host the request already has is kept.
        let mut req = get(port, "/h");
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("api.example"));
        read(&up, req).await;
        assert_eq!(
            seen.requests.lock().unwrap().last().unwrap().1,
            "api.example"
        );
    }

    #[tokio::test]
    async fn a_connection_is_not_shared_while_its_answer_streams() {
        let (port, seen) = upstream().await;
        let up = client(port, Duration::from_secs(30));
        let slow = up.request(get(port, "/slow")).await.unwrap();
        // The first answer's body is still streaming: a second request needs a second
        // connection.
        assert_eq!(read(&up, get(port, "/a")).await, "ok");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
        // Dropped half-way, the slow answer's connection closes (hyper cannot reuse it
        // mid-answer): only the idle one is reused, and it is all the pool holds.
        drop(slow);
        for _ in 0..3 {
            assert_eq!(read(&up, get(port, "/a")).await, "ok");
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
        assert_eq!(up.h1.as_ref().unwrap().idle().conns.len(), 1);
        // Read to the end, it is reused.
        assert_eq!(read(&up, get(port, "/slow")).await, "part part ");
        assert_eq!(read(&up, get(port, "/a")).await, "ok");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn closed_and_expired_connections_are_replaced() {
        let (port, seen) = upstream().await;
        let up = client(port, Duration::from_millis(150));
        // The upstream closes after this answer: the next request opens a new connection
        // (whether the close is seen before it is sent or the request is resent).
        assert_eq!(read(&up, get(port, "/close")).await, "bye");
        assert_eq!(read(&up, get(port, "/a")).await, "ok");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
        // Idle past the timeout: closed by the sweep, not reused.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(up.h1.as_ref().unwrap().idle().conns.is_empty(), "swept");
        assert_eq!(read(&up, get(port, "/a")).await, "ok");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
        // A refused connection is a connect error (safe to try elsewhere).
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let Err(err) = client(closed, Duration::from_secs(1))
            .request(get(closed, "/a"))
            .await
        else {
            panic!("a closed port answered");
        };
        assert!(is_connect_error(&*err), "{err}");
    }
}
