//! Helpers shared by the binary's integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A free loopback port for a server the test starts later, never one this test process
/// was handed before.
///
/// The port is released before the server binds it, so it is taken from below the kernel's
/// ephemeral range (`ip_local_port_range`): ports there are never handed out by another
/// socket's `bind(…:0)` or outbound `connect` in the meantime (which made a gateway lose its
/// port to a parallel test's upstream), and polling one before its server is up cannot
/// self-connect. Each test process starts at its own offset, so parallel test binaries
/// rarely probe the same ports.
pub fn free_port() -> u16 {
    static NEXT: std::sync::Mutex<Option<u32>> = std::sync::Mutex::new(None);
    let (low, high) = fixed_port_range();
    let span = high - low;
    let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
    let mut at = next.unwrap_or_else(|| std::process::id().wrapping_mul(7919) % span);
    for _ in 0..span {
        let port = (low + at % span) as u16;
        at = (at + 1) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            *next = Some(at);
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// The ports below the ephemeral range (10000 up to its start), or 20000..30000 when the
/// range cannot be read or leaves too little room below it.
fn fixed_port_range() -> (u32, u32) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok());
    match ephemeral_low {
        Some(low) if low >= 12000 => (10000, low),
        _ => (20000, 30000),
    }
}

/// `n` distinct free ports (see [`free_port`]).
pub fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| free_port()).collect()
}

/// A minimal HTTP/1.1 request; returns (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    http_with(addr, method, path, &[], body)
}

/// A minimal HTTP/1.1 request with extra headers; returns (status, body).
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// Python for the end-to-end client tests: `$SWITCHYARD_PYTHON`, else the workspace's `.venv`
/// (`.ci/run` creates it from `tests/sdk/requirements.txt`).
pub fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_PYTHON") {
        return p.into();
    }
    let venv = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "the end-to-end tests need Python with the packages in crates/switchyard/tests/sdk/requirements.txt: \
         python3 -m venv .venv && .venv/bin/pip install -r crates/switchyard/tests/sdk/requirements.txt \
         (or set SWITCHYARD_PYTHON)"
    );
    venv
}

pub struct Proc(pub Child);

/// Runs the binary with `args` (output discarded) and waits until its admin server on
/// `admin_port` reports ready.
pub fn spawn_ready(args: &[&std::ffi::OsStr], admin_port: u16) -> Proc {
    spawn_ready_with_stdout(args, admin_port, std::process::Stdio::null())
}

/// [`spawn_ready`], with standard output (the access log) sent to `stdout`.
pub fn spawn_ready_with_stdout(
    args: &[&std::ffi::OsStr],
    admin_port: u16,
    stdout: std::process::Stdio,
) -> Proc {
    let child = std::process::Command::new(BIN)
        .args(args)
        .stdout(stdout)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    wait_until("readiness", Duration::from_secs(20), || {
        proc.assert_running();
        http(admin, "GET", "/healthz/ready", "").is_some_and(|(s, _)| s == 200)
    });
    proc
}

impl Proc {
    /// Panics when the process has exited (say, it could not bind its port): whatever
    /// answers on that port is then not the process under test.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.0.try_wait() {
            panic!("the process under test exited early: {status}");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test CA and a server certificate for `names`, as (CA PEM, rustls server config).
pub fn test_pki(names: &[&str]) -> (String, std::sync::Arc<rustls::ServerConfig>) {
    use rustls::pki_types::pem::PemObject;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
    let certs = vec![leaf.der().clone()];
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca.pem(), std::sync::Arc::new(cfg))
}
