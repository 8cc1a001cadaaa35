//! `backendTLS` and `backendHTTP` (backend phase, settled at config compile time): how the
//! upstream connection is made. They select the upstream client (its TLS config and HTTP
//! version are part of the pooled client's key), so they cost nothing per request.

use config::{BackendTls, HttpVersion, Policies};

/// Connection settings of one backend, from its layered policies.
#[derive(Clone, Copy, Default)]
pub struct Connection<'a> {
    pub tls: Option<&'a BackendTls>,
    pub http2: bool,
}

impl<'a> Connection<'a> {
    /// `default_tls`: the backend kind's own default (a hosted provider is HTTPS) when the
    /// policies name no `backendTLS`.
    pub fn of(policies: &'a Policies, default_tls: Option<&'a BackendTls>) -> Self {
        Connection {
            tls: policies.backend_tls.as_ref().or(default_tls),
            http2: policies
                .backend_http
                .as_ref()
                .is_some_and(|h| h.version == HttpVersion::Http2),
        }
    }
}
