//! Binds and connections: one accept task per bind, one task per connection (the seeds'
//! `run` -> `run_bind` -> `handle_tunnel` shape), TLS, HTTP/1.1 + HTTP/2, graceful drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::context::ConnCtx;
use crate::pipeline;
use crate::snapshot::BindKey;
use crate::Shared;

/// hyper refuses buffers below this; smaller `maxHeaderBytes` values are raised to it.
const MIN_HTTP1_BUFFER: usize = 8192;

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
    let graceful = GracefulShutdown::new();
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
                    let max = shared.snapshot.load().limits.max_connections;
                    if open.load(Ordering::Relaxed) >= max {
                        tracing::warn!(%peer, max, "connection refused: maxConnections reached");
                        drop(stream);
                        continue;
                    }
                    open.fetch_add(1, Ordering::Relaxed);
                    gauge.inc();
                    let guard = OpenGuard(open.clone(), gauge.clone());
                    let (shared, key, label) = (shared.clone(), key.clone(), label.clone());
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        handle_tunnel(shared, key, label, peer, stream, watcher).await;
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
    graceful.shutdown().await;
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
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let (tls, limits) = {
        let snap = shared.snapshot.load();
        let tls = snap.bind(&bind).and_then(|b| b.tls.clone());
        (tls, snap.limits.clone())
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.0)
        .max_buf_size(limits.max_header_bytes.max(MIN_HTTP1_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32);
    let ctx = |tls| {
        Arc::new(ConnCtx {
            shared,
            bind,
            bind_label,
            peer,
            tls,
        })
    };
    match tls {
        None => serve(&builder, ctx(false), TokioIo::new(stream), watcher).await,
        Some(cfg) => {
            let accept = TlsAcceptor::from(cfg).accept(stream);
            match tokio::time::timeout(limits.header_read_timeout.0, accept).await {
                Ok(Ok(tls_stream)) => {
                    serve(&builder, ctx(true), TokioIo::new(tls_stream), watcher).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve<I>(
    builder: &auto::Builder<TokioExecutor>,
    ctx: Arc<ConnCtx>,
    io: TokioIo<I>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = ctx.peer;
    let svc = hyper::service::service_fn(move |req| pipeline::handle(ctx.clone(), req));
    let conn = builder.serve_connection_with_upgrades(io, svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}
