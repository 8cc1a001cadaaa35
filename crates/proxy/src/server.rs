//! Binds and connections: one accept task per bind, one task per connection (the seeds'
//! `run` -> `run_bind` -> `handle_tunnel` shape), TLS, HTTP/1.1 + HTTP/2, graceful drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::context::ConnCtx;
use crate::pipeline;
use crate::snapshot::BindKey;
use crate::Shared;

/// hyper refuses buffers below this; smaller `maxHeaderBytes` values are raised to it.
const MIN_HTTP1_BUFFER: usize = 8192;
/// HTTP/2 streams a client may reset before the gateway accepted them (h2's default).
const H2_MAX_PENDING_RESETS: usize = 20;
/// HTTP/2 streams the gateway may reset for a client's protocol errors (h2's default).
const H2_MAX_LOCAL_RESETS: usize = 1024;

pub struct BindTask {
    pub local_addr: SocketAddr,
    pub stop: watch::Sender<bool>,
    pub done: tokio::task::JoinHandle<()>,
}

pub async fn bind_socket(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

pub fn spawn_bind(shared: Arc<Shared>, key: BindKey, listener: TcpListener) -> BindTask {
    let local_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::new(key.address, key.port));
    let (stop, stop_rx) = watch::channel(false);
    let done = tokio::spawn(run_bind(shared, key, listener, stop_rx));
    BindTask {
        local_addr,
        stop,
        done,
    }
}

async fn run_bind(
    shared: Arc<Shared>,
    key: BindKey,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    // The bind as metrics and logs name it: its port (the real one for `port: 0`).
    let label: Arc<str> = listener
        .local_addr()
        .map_or(key.port, |a| a.port())
        .to_string()
        .into();
    let gauge = telemetry::Metrics::global()
        .open_connections
        .get_or_create(&telemetry::metrics::BindLabels {
            bind: label.to_string(),
        })
        .clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (max, process) = {
                        let snap = shared.snapshot.load();
                        (snap.limits.max_connections, shared.overload.connection(&snap.limits))
                    };
                    if open.load(Ordering::Relaxed) >= max {
                        tracing::warn!(%peer, max, "connection refused: maxConnections reached");
                        drop(stream);
                        continue;
                    }
                    let Some(process) = process else {
                        tracing::warn!(%peer, "connection refused: overload.maxConnections reached");
                        drop(stream);
                        continue;
                    };
                    open.fetch_add(1, Ordering::Relaxed);
                    gauge.inc();
                    let guard = (OpenGuard(open.clone(), gauge.clone()), process);
                    let (shared, key, label) = (shared.clone(), key.clone(), label.clone());
                    let drain = stop.clone();
                    tokio::spawn(async move {
                        handle_tunnel(shared, key, label, peer, stream, drain).await;
                        drop(guard);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    // Every connection was told (it watches `stop`) to finish its request in flight and
    // close; the drain ends when the last one has.
    while open.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct OpenGuard(Arc<AtomicUsize>, telemetry::metrics::OpenGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.dec();
    }
}

async fn handle_tunnel(
    shared: Arc<Shared>,
    bind: BindKey,
    bind_label: Arc<str>,
    peer: SocketAddr,
    stream: TcpStream,
    drain: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (tls, limits) = {
        let snap = shared.snapshot.load();
        let tls = snap.bind(&bind).and_then(|b| b.tls.clone());
        (tls, snap.limits.clone())
    };
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.0)
        .max_buf_size(limits.max_header_bytes.max(MIN_HTTP1_BUFFER));
    // HTTP/2 floods: streams open at once are capped; streams the client resets before the
    // gateway took them (rapid reset, CVE-2023-44487) and streams the gateway had to reset
    // are capped per connection, past which the connection ends with GOAWAY.
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS);
    let write_timeout = limits.write_timeout.0;
    let ctx = |tls| {
        Arc::new(ConnCtx {
            shared,
            bind,
            bind_label,
            peer,
            tls,
        })
    };
    let builders = Builders { h1, h2 };
    match tls {
        None => {
            let proto =
                match tokio::time::timeout(limits.header_read_timeout.0, sniff(&stream)).await {
                    Ok(Ok(Some(proto))) => proto,
                    Ok(Ok(None)) => return,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "connection failed"),
                    Err(_) => return tracing::debug!(%peer, "no request before the header timeout"),
                };
            let io = WriteTimeout::new(stream, write_timeout);
            // Each protocol's and transport's connection future is boxed on its own: inline,
            // every connection's task would be as large as the largest of them (a TLS HTTP/2
            // one), about 10 KiB more for each plain HTTP/1.1 keep-alive connection.
            Box::pin(serve(&builders, proto, ctx(false), TokioIo::new(io), drain)).await
        }
        Some(cfg) => {
            let accept = Box::pin(TlsAcceptor::from(cfg).accept(stream));
            match tokio::time::timeout(limits.header_read_timeout.0, accept).await {
                Ok(Ok(tls_stream)) => {
                    let proto = match tls_stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Proto::H2,
                        _ => Proto::H1,
                    };
                    let io = WriteTimeout::new(tls_stream, write_timeout);
                    Box::pin(serve(&builders, proto, ctx(true), TokioIo::new(io), drain)).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// HTTP/1.1 and HTTP/2 each served by hyper's own connection type, not hyper-util's `auto`
/// one: the auto connection costs about 7 KiB more per connection (measured: 17.7 against
/// 10.9 KiB per idle keep-alive connection in a bare hyper server), which 10,000 idle clients
/// turn into 70 MiB. The protocol is known before serving: ALPN on TLS, and on plain TCP the
/// HTTP/2 connection preface (prior knowledge, h2c), peeked without consuming it.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

/// The client connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a plain-TCP client speaks, from its first bytes (left in the socket);
/// `None` when it closed before sending any.
async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Proto>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(Proto::H1));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(Proto::H2));
        }
        // Part of the preface so far (`PR...`): peek again once more may have arrived.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn serve<I>(
    builders: &Builders,
    proto: Proto,
    ctx: Arc<ConnCtx>,
    io: TokioIo<I>,
    mut drain: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = ctx.peer;
    // Boxed: hyper keeps the service's future in a box it allocates once per connection and
    // holds while the connection lives, so an unboxed request future (several KiB) would stay
    // resident for every idle keep-alive connection. Boxed, it is freed when the request ends.
    let svc = hyper::service::service_fn(move |req| {
        crate::boxed_in_place(|| pipeline::handle(ctx.clone(), req))
    });
    let ended = match proto {
        Proto::H1 => {
            let conn = builders.h1.serve_connection(io, svc).with_upgrades();
            Box::pin(until_drained(conn, |c| c.graceful_shutdown(), &mut drain)).await
        }
        Proto::H2 => {
            let conn = builders.h2.serve_connection(io, svc);
            Box::pin(until_drained(conn, |c| c.graceful_shutdown(), &mut drain)).await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

/// Serves `conn` to its end; when the bind drains first, asks it to finish what is in flight
/// and close (`graceful`), then waits for that.
async fn until_drained<C>(
    conn: C,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
    drain: &mut watch::Receiver<bool>,
) -> C::Output
where
    C: std::future::Future,
{
    let mut conn = std::pin::pin!(conn);
    if !*drain.borrow() {
        tokio::select! {
            ended = conn.as_mut() => return ended,
            // A value of true, or the bind gone: drain either way.
            _ = drain.wait_for(|stop| *stop) => {}
        }
    }
    graceful(conn.as_mut());
    conn.await
}

/// A client connection whose writes may stay blocked at most `limit` (`config.limits.writeTimeout`):
/// a client that stops reading gets its connection dropped, and the buffers held for it freed,
/// instead of holding them (and the upstream call behind them) forever.
struct WriteTimeout<I> {
    io: I,
    limit: Duration,
    /// Armed when a write finds the socket full; disarmed by any write that goes through.
    blocked: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteTimeout<I> {
    fn new(io: I, limit: Duration) -> Self {
        WriteTimeout {
            io,
            limit,
            blocked: None,
        }
    }

    /// The outcome of a write attempt, with the blocked-writer clock applied.
    fn check<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        r: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        match r {
            Poll::Ready(r) => {
                self.blocked = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self
                    .blocked
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match std::future::Future::poll(sleep.as_mut(), cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client stopped reading (writeTimeout)",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteTimeout<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteTimeout<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.io).poll_shutdown(cx);
        self.check(cx, r)
    }
}
