//! Connections to upstreams: a pooled keep-alive hyper client per backend, with a connector
//! that always dials the backend's address (the request URI carries the Host to send, which
//! may differ), applies the connect timeout, and wraps TLS when the backend asks for it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
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
    pub client: Client<Connector, Body>,
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
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(key.pool_idle_timeout)
            .pool_max_idle_per_host(key.pool_max_idle)
            .http2_only(key.http2)
            .build(connector);
        Upstream {
            client,
            tls: key.tls_fingerprint.is_some(),
            http2: key.http2,
            address,
        }
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
        let inner = self.0.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let result = open(&inner).await;
            telemetry::Metrics::global().observe_connect(
                &inner.address,
                started.elapsed(),
                result.is_ok(),
            );
            result
        })
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
