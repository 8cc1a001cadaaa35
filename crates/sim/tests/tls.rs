//! Serving a simulator behind TLS with a test CA, over both ALPN protocols.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

struct TestPki {
    server: Arc<rustls::ServerConfig>,
    ca: CertificateDer<'static>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and a `localhost` leaf it signed; the server config does not set ALPN, so the
/// simulator's default (`h2`, `http/1.1`) is what gets negotiated.
fn test_pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    TestPki {
        server: Arc::new(server),
        ca: ca.der().clone(),
    }
}

async fn connect(
    addr: std::net::SocketAddr,
    ca: &CertificateDer<'static>,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("handshake against the test CA");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(alpn),
        "negotiated ALPN"
    );
    tls
}

fn chat_request(uri: &str) -> http::Request<Full<Bytes>> {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "over tls"}]});
    http::Request::post(uri)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

#[tokio::test]
async fn openai_over_tls_with_http2() {
    let pki = test_pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = sim::openai::serve_tls(listener, pki.server.clone(), Default::default());
    let tls = connect(sim.addr, &pki.ca, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(chat_request("https://localhost/v1/chat/completions"))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let reply = common::read_reply(resp).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "Hello! You said: over tls"
    );
}

#[tokio::test]
async fn anthropic_over_tls_with_http1() {
    let pki = test_pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = sim::anthropic::serve_tls(listener, pki.server.clone(), Default::default());
    let tls = connect(sim.addr, &pki.ca, b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/v1/models")
        .header("host", "localhost")
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let reply = common::read_reply(resp).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["first_id"], "claude-sim-1");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let pki = test_pki();
    let other = test_pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = sim::openai::serve_tls(listener, pki.server.clone(), Default::default());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(other.ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(sim.addr).await.unwrap();
    let result = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(result.is_err(), "an untrusted CA must fail the handshake");
}
