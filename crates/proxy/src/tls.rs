//! rustls configuration for downstream listeners (SNI-selected certificates, ALPN h2 and
//! http/1.1) and upstream connections (public roots, custom CA, client certs, opt-out).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::routes::HostPattern;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificates found in {}", path.display()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

/// Certificates of the listeners of one bind, chosen by the client's SNI.
#[derive(Debug)]
struct SniResolver {
    /// Most specific first.
    by_name: Vec<(HostPattern, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            let sni = sni.to_ascii_lowercase();
            if let Some((_, key)) = self.by_name.iter().find(|(p, _)| p.matches(&sni)) {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}

/// `listeners`: (hostname, cert path, key path) for each HTTPS listener of a bind.
pub fn server_config(
    listeners: &[(Option<String>, &Path, &Path)],
) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let mut by_name = Vec::new();
    let mut default = None;
    for (hostname, cert, key) in listeners {
        let chain = load_certs(cert)?;
        let key = load_key(key)?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("unsupported private key in {}: {e}", cert.display()))?;
        let ck = Arc::new(CertifiedKey::new(chain, signing));
        match hostname {
            Some(h) => by_name.push((HostPattern::parse(h), ck.clone())),
            None => default = Some(ck.clone()),
        }
        default.get_or_insert(ck);
    }
    by_name.sort_by_key(|(p, _)| std::cmp::Reverse(p.specificity()));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { by_name, default }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// `SSL_CERT_FILE`: a PEM bundle trusted in addition to the public roots.
pub fn extra_roots_file() -> Option<std::path::PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// `host` is the upstream host, used for SNI and verification unless `tls.hostname` is set.
pub fn client_config(
    tls: &config::BackendTls,
    host: &str,
    http2: bool,
) -> Result<ClientTls, String> {
    let name = tls.hostname.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| format!("{name:?} is not a valid TLS server name"))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        match &tls.root {
            Some(path) => {
                for cert in load_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
                }
            }
            None => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                // The conventional way to add a private CA without touching the config.
                if let Some(path) = extra_roots_file() {
                    for cert in load_certs(&path)? {
                        roots.add(cert).map_err(|e| {
                            format!(
                                "bad CA certificate in {} (SSL_CERT_FILE): {e}",
                                path.display()
                            )
                        })?;
                    }
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| format!("client certificate {}: {e}", cert.display()))?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(ClientTls {
        config: Arc::new(config),
        server_name,
    })
}

/// `insecureSkipVerify: true`: accepts any certificate, still checks handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
