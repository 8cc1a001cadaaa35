//! Metrics scraping: each pod's Prometheus `/metrics`, parsed into [`PodMetrics`] on an
//! interval; a pod that refuses the connection is ejected.

use std::sync::Weak;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use super::{Pod, Pool};
use crate::spec::MetricsSpec;
use crate::{PodId, PodMetrics};

type ScrapeClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

pub(super) async fn scrape_loop(pool: Weak<Pool>, spec: MetricsSpec) {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(spec.timeout));
    connector.set_nodelay(true);
    let client: ScrapeClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(spec.interval * 4)
            .build(connector);
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        let Some(p) = pool.upgrade() else { return };
        let pods = p.pods();
        drop(p);
        // The served models change rarely (a LoRA adapter loaded): read them on every
        // MODELS_EVERY-th scrape, and while a pod's list is still unknown.
        let read_models = ticks % MODELS_EVERY == 0;
        ticks += 1;
        let scrapes = pods.iter().map(|pod| {
            let client = &client;
            let spec = &spec;
            let pool = &pool;
            async move {
                let result = scrape(client, &pod.id, spec).await;
                let scraped = result.is_ok();
                let Some(p) = pool.upgrade() else { return };
                apply_scrape(&p, pod, result);
                drop(p);
                if scraped && (read_models || pod.models().is_none()) {
                    if let Some(models) = served_models(client, &pod.id, spec).await {
                        pod.set_models(models);
                    }
                }
            }
        });
        futures_util::future::join_all(scrapes).await;
    }
}

/// Scrapes between two readings of a pod's `/v1/models`.
const MODELS_EVERY: u64 = 10;

/// The ids a pod's OpenAI-compatible `/v1/models` lists (vLLM: the served model and its loaded
/// LoRA adapters); `None` when it has no such endpoint or answers something else.
async fn served_models(
    client: &ScrapeClient,
    pod: &PodId,
    spec: &MetricsSpec,
) -> Option<Vec<String>> {
    let uri: http::Uri = format!("http://{pod}/v1/models").parse().ok()?;
    let fetch = async {
        let resp = client.get(uri).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let ids: Vec<String> = v["data"]
            .as_array()?
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect();
        (!ids.is_empty()).then_some(ids)
    };
    tokio::time::timeout(spec.timeout, fetch)
        .await
        .ok()
        .flatten()
}

enum ScrapeError {
    /// Nothing listens there: the pod is down.
    Refused(String),
    Other(String),
}

async fn scrape(
    client: &ScrapeClient,
    pod: &PodId,
    spec: &MetricsSpec,
) -> Result<PodMetrics, ScrapeError> {
    let uri: http::Uri = format!("http://{}{}", pod, spec.path)
        .parse()
        .map_err(|e| ScrapeError::Other(format!("bad metrics URL: {e}")))?;
    let fetch = async {
        let resp = client.get(uri).await.map_err(|e| {
            if e.is_connect() {
                ScrapeError::Refused(format!("{e:?}"))
            } else {
                ScrapeError::Other(e.to_string())
            }
        })?;
        if !resp.status().is_success() {
            return Err(ScrapeError::Other(format!("status {}", resp.status())));
        }
        let body = http_body_util::Limited::new(resp.into_body(), 4 << 20)
            .collect()
            .await
            .map_err(|e| ScrapeError::Other(e.to_string()))?
            .to_bytes();
        let text =
            std::str::from_utf8(&body).map_err(|_| ScrapeError::Other("not UTF-8".into()))?;
        crate::metrics::parse_vllm_metrics(text, Instant::now()).map_err(ScrapeError::Other)
    };
    match tokio::time::timeout(spec.timeout, fetch).await {
        Ok(r) => r,
        Err(_) => Err(ScrapeError::Other(format!(
            "timed out after {:?}",
            spec.timeout
        ))),
    }
}

fn apply_scrape(pool: &Pool, pod: &Pod, result: Result<PodMetrics, ScrapeError>) {
    match result {
        Ok(m) => {
            pod.set_metrics(m);
            pool.succeeded(pod);
        }
        Err(ScrapeError::Refused(e)) => {
            tracing::debug!(pool = %pool.name(), pod = %pod.id, error = %e, "metrics scrape refused");
            pod.lock().metrics = None;
            let ejected = pod.lock().ejected_until.is_some_and(|t| t > Instant::now());
            if !ejected {
                pool.connect_failed(pod);
            }
        }
        Err(ScrapeError::Other(e)) => {
            // Stale metrics age out on their own (`stale_after`); keep the last ones.
            tracing::debug!(pool = %pool.name(), pod = %pod.id, error = %e, "metrics scrape failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::spec;
    use crate::PickRequest;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    /// A pod that answers every request with this vLLM metrics page while `answer` is set,
    /// and accepts but never answers when it is not (a hung pod).
    async fn metrics_pod(page: &'static str) -> (String, Arc<std::sync::atomic::AtomicBool>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let answer = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = answer.clone();
        tokio::spawn(async move {
            let mut hung = Vec::new();
            while let Ok((mut s, _)) = l.accept().await {
                if !flag.load(Ordering::Relaxed) {
                    hung.push(s);
                    continue;
                }
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (addr, answer)
    }

    #[tokio::test]
    async fn scraped_metrics_steer_picks_and_go_stale() {
        let (busy, busy_answers) = metrics_pod(
            "vllm:num_requests_running{model_name=\"m\"} 9\nvllm:num_requests_waiting{model_name=\"m\"} 4\nvllm:kv_cache_usage_perc{model_name=\"m\"} 0.9\n",
        )
        .await;
        let (idle, _) = metrics_pod(
            "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc 0.1\n",
        )
        .await;
        let mut s = spec(&[&busy, &idle]);
        s.strategy = "least-kv-cache".into();
        s.metrics = Some(MetricsSpec {
            path: "/metrics".into(),
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(200),
            stale_after: Duration::from_millis(300),
        });
        let pool = Pool::new(s).unwrap();
        pool.start();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.pods().iter().any(|p| p.metrics().is_none()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let busy_pod = pool
            .pods()
            .iter()
            .find(|p| p.id.as_str() == busy)
            .unwrap()
            .clone();
        let m = busy_pod.metrics().expect("scraped");
        assert_eq!((m.running, m.waiting, m.kv_cache_usage), (9.0, 4.0, 0.9));
        let req = PickRequest::default();
        for _ in 0..10 {
            let pick = pool.pick(None, &req).unwrap();
            assert_eq!(pick.pods[0].id.as_str(), idle, "the emptier KV cache wins");
        }
        // The busy pod hangs (scrapes time out): after staleAfter its metrics are unknown —
        // not idle — so least-kv-cache, which has fresh metrics for another pod, leaves it out.
        busy_answers.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            busy_pod.healthy(Instant::now()),
            "a slow pod is not ejected"
        );
        let pick = pool.pick(None, &req).unwrap();
        assert_eq!(pick.pods.len(), 1);
        assert_eq!(pick.pods[0].id.as_str(), idle);
    }
}
