//! Simulated model providers for tests, benchmarks and `switchyard demo`.
//!
//! Each simulator is a real HTTP server on a real socket speaking a provider's documented wire
//! format. Content is deterministic (derived from the prompt) so tests can assert on it.

pub mod openai;

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A running simulator.
pub struct SimServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `service` on `listener`, HTTP/1.1 and HTTP/2, one task per connection.
pub(crate) fn spawn_http<S>(listener: TcpListener, service: S) -> SimServer
where
    S: Fn(
            http::Request<hyper::body::Incoming>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = Result<http::Response<openai::SimBody>, std::convert::Infallible>,
                    > + Send,
            >,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let svc = service.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let _ = builder
                    .serve_connection(io, hyper::service::service_fn(svc))
                    .await;
            });
        }
    });
    SimServer { addr, task }
}
