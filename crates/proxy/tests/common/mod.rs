//! Real servers and clients on 127.0.0.1:0 for the proxy's integration tests.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type TestBody = UnsyncBoxBody<Bytes, Infallible>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).boxed_unsync()
}

/// Starts a gateway from YAML text; relative paths resolve against `base`.
pub async fn gateway_in(yaml: &str, base: &Path) -> (Arc<proxy::Gateway>, Vec<SocketAddr>) {
    let loaded = config::load_str(yaml, Path::new("test.yaml"), base, |_| None)
        .unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let gw = proxy::Gateway::start(&loaded)
        .await
        .expect("gateway starts");
    let addrs = gw.local_addrs().await;
    (gw, addrs)
}

pub async fn gateway(yaml: &str) -> (Arc<proxy::Gateway>, SocketAddr) {
    let (gw, addrs) = gateway_in(yaml, Path::new(".")).await;
    (gw, addrs[0])
}

pub async fn reload(gw: &proxy::Gateway, yaml: &str) -> Result<(), String> {
    let loaded = config::load_str(yaml, Path::new("test.yaml"), Path::new("."), |_| None)
        .map_err(|e| e.to_string())?;
    gw.reload(&loaded).await.map_err(|e| e.to_string())
}

/// One bind on 127.0.0.1:0 with a single route; `route` is the YAML of the route's body
/// (policies, backends, matches), indented by 6 spaces.
pub fn one_route(route: &str) -> String {
    format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - name: r\n{route}"
    )
}

/// A config with `config.limits` set from `limits` (YAML lines, indented by 4) and one route
/// to `upstream`.
pub fn limited_route(limits: &str, upstream: SocketAddr) -> String {
    format!(
        "config:\n  limits:\n{limits}{}",
        one_route(&format!("      backends:\n      - host: {upstream}\n"))
    )
}

/// An echo upstream behind a gateway with one plain route to it.
pub async fn proxied_echo() -> (Upstream, Arc<proxy::Gateway>, SocketAddr) {
    let up = echo("up").await;
    let (gw, addr) = gateway(&one_route(&format!(
        "      backends:\n      - host: {}\n",
        up.addr
    )))
    .await;
    (up, gw, addr)
}

// ---------- upstreams ----------

pub struct Upstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An echo server. Paths:
/// - `/status/N` answers status N;
/// - `/slow/MS` waits MS before answering;
/// - `/stream/N/MS` streams N chunks MS apart;
/// - `/upgrade` switches protocols and echoes bytes;
/// - anything else answers 200 with JSON describing the request (method, path, query,
///   version, headers, body) and `x-upstream-name: NAME`.
pub async fn echo(name: &str) -> Upstream {
    echo_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), name, None).await
}

pub async fn echo_on(
    listener: TcpListener,
    name: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Upstream {
    let addr = listener.local_addr().unwrap();
    let name: Arc<str> = name.into();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| echo_handle(name.clone(), req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                            .await;
                    }
                    Some(cfg) => {
                        if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(s), svc)
                                .await;
                        }
                    }
                }
            });
        }
    });
    Upstream { addr, task }
}

async fn echo_handle(
    name: Arc<str>,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut resp = match segs.as_slice() {
        ["status", code] => {
            let mut r = Response::new(full(format!("status {code}")));
            *r.status_mut() = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
            r
        }
        ["slow", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            Response::new(full("slow done"))
        }
        ["stream", n, ms] => {
            let n: usize = n.parse().unwrap_or(1);
            let gap = Duration::from_millis(ms.parse().unwrap_or(0));
            let stream = futures_util::stream::unfold(0usize, move |i| async move {
                if i >= n {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: {i}\n\n")))),
                    i + 1,
                ))
            });
            let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        ["upgrade"] => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            r.headers_mut().insert("upgrade", "echo".parse().unwrap());
            r
        }
        _ => {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let mut headers = serde_json::Map::new();
            for (k, v) in &parts.headers {
                let v = String::from_utf8_lossy(v.as_bytes()).to_string();
                match headers.get_mut(k.as_str()) {
                    Some(Value::Array(a)) => a.push(json!(v)),
                    _ => {
                        headers.insert(k.as_str().to_string(), json!([v]));
                    }
                }
            }
            let authority = parts.uri.authority().map(|a| a.to_string()).or_else(|| {
                parts
                    .headers
                    .get("host")
                    .map(|h| h.to_str().unwrap_or("").to_string())
            });
            let v = json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "authority": authority,
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            let mut r = Response::new(full(v.to_string()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r.headers_mut()
                .insert("x-hop", "should-not-leak".parse().unwrap());
            r.headers_mut()
                .insert("connection", "x-hop".parse().unwrap());
            r
        }
    };
    resp.headers_mut()
        .insert("x-upstream-name", name.parse().unwrap());
    Ok(resp)
}

// ---------- clients ----------

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Header values the echo upstream saw.
    pub fn seen(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

pub async fn send(addr: SocketAddr, req: Request<TestBody>) -> Reply {
    send_with(h1_client(), addr, req).await
}

pub fn h1_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub async fn send_with(
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        TestBody,
    >,
    addr: SocketAddr,
    mut req: Request<TestBody>,
) -> Reply {
    let uri = format!(
        "http://{addr}{}",
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    *req.uri_mut() = uri.parse().unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("response within 20s")
        .expect("request succeeds");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
        version: parts.version,
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, Request::get(path).body(full("")).unwrap()).await
}

/// Writes raw bytes and reads until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

// ---------- TLS ----------

pub struct Pki {
    pub ca_pem: String,
    pub ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchyard test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca,
            ca_key,
        }
    }

    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }
}

pub fn server_tls(
    leaf: &Leaf,
    client_ca: Option<&Pki>,
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                provider,
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).unwrap();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// One request over TLS to `addr`, with SNI `server_name` and the given ALPN list.
pub async fn tls_request(
    addr: SocketAddr,
    pki: &Pki,
    server_name: &str,
    alpn: &[&[u8]],
    req: Request<TestBody>,
) -> Reply {
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(pki.roots())
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the gateway");
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = format!("https://{server_name}{}", req.uri().path())
            .parse()
            .unwrap();
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut()
            .insert("host", server_name.parse().unwrap());
        sender.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
        version: parts.version,
    }
}
