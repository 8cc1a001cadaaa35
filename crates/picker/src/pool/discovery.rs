//! Pod discovery: a static list, an endpoints file (polled for changes) or a DNS name.

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;

use super::Pool;

/// Parses an endpoints file: `host:port` per line (or separated by commas/spaces), `#`
/// starts a comment.
pub fn parse_endpoints(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for item in line.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
            let ok = item
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(format!(
                    "line {}: {item:?} is not host:port (e.g. 10.0.0.7:8000)",
                    i + 1
                ));
            }
            out.push(item.to_string());
        }
    }
    Ok(out)
}

pub(super) fn read_endpoints_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("endpoints file {}: {e}", path.display()))?;
    parse_endpoints(&text).map_err(|e| format!("endpoints file {}: {e}", path.display()))
}

/// Re-reads the endpoints file when its contents change (polled: works on every
/// filesystem, including Kubernetes ConfigMap symlink swaps). A broken file keeps the
/// last good list.
pub(super) async fn watch_file(
    pool: Weak<Pool>,
    path: std::path::PathBuf,
    mut last: Option<Vec<u8>>,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = std::fs::read(&path).ok();
        if now == last {
            continue;
        }
        last = now;
        match read_endpoints_file(&path) {
            Ok(list) => pool.set_endpoints(list),
            Err(e) => tracing::warn!(pool = %pool.name(), error = %e, "keeping the last endpoints"),
        }
    }
}

pub(super) async fn watch_dns(pool: Weak<Pool>, target: String, refresh: Duration) {
    loop {
        match tokio::net::lookup_host(target.as_str()).await {
            Ok(addrs) => {
                let list: Vec<String> = addrs.map(|a: SocketAddr| a.to_string()).collect();
                let Some(pool) = pool.upgrade() else { return };
                pool.set_endpoints(list);
            }
            Err(e) => {
                let Some(pool) = pool.upgrade() else { return };
                tracing::warn!(pool = %pool.name(), name = %target, error = %e, "DNS lookup failed; keeping the last endpoints");
            }
        }
        tokio::time::sleep(refresh).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::spec;
    use crate::spec::Endpoints;
    use std::time::Instant;

    #[test]
    fn endpoints_file_syntax() {
        let list = parse_endpoints("# pods\n10.0.0.1:8000\n10.0.0.2:8000, pod-3.svc:9000 # x\n\n")
            .unwrap();
        assert_eq!(list, ["10.0.0.1:8000", "10.0.0.2:8000", "pod-3.svc:9000"]);
        let e = parse_endpoints("10.0.0.1:8000\n10.0.0.2\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[tokio::test]
    async fn dns_discovery_resolves_every_address() {
        let mut s = spec(&[]);
        s.endpoints = Endpoints::Dns {
            name: "localhost".into(),
            port: 8123,
            refresh: Duration::from_millis(100),
        };
        let pool = Pool::new(s).unwrap();
        assert!(pool.pods().is_empty(), "nothing until the name resolves");
        pool.start();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.pods().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ids: Vec<String> = pool.pods().iter().map(|p| p.id.to_string()).collect();
        assert!(ids.contains(&"127.0.0.1:8123".to_string()), "{ids:?}");
    }

    #[tokio::test]
    async fn file_discovery_follows_changes() {
        let dir = std::env::temp_dir().join(format!("picker-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pods.txt");
        std::fs::write(&path, "a:1\n").unwrap();
        let mut s = spec(&[]);
        s.endpoints = Endpoints::File(path.clone());
        let pool = Pool::new(s).unwrap();
        pool.start();
        assert_eq!(pool.pods().len(), 1);
        std::fs::write(&path, "a:1\nb:2\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.pods().len() != 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pool.pods().len(), 2);
        std::fs::write(&path, "garbage\n").unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(pool.pods().len(), 2, "a broken file keeps the last list");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
