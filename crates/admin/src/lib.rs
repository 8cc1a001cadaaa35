//! The admin server: effective config (secrets redacted), readiness, last reload outcome,
//! and the endpoints an [`AdminApi`] adds (the gateway's keys and usage).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// Config file the gateway was started with.
    pub file: String,
    /// Successful loads, the first one included.
    pub loads: u64,
    pub failures: u64,
    /// Unix seconds of the last successful load.
    pub last_success: Option<u64>,
    /// Why the most recent attempt failed; cleared by the next success.
    pub last_error: Option<String>,
}

/// An [`AdminApi`] answer: `None` when the path is not one of its endpoints.
pub type ApiAnswer = std::pin::Pin<
    Box<dyn std::future::Future<Output = Option<(StatusCode, serde_json::Value)>> + Send>,
>;

/// Endpoints served beside the built-in ones (keys, usage).
pub trait AdminApi: Send + Sync {
    fn handle(&self, method: Method, path: String, query: Option<String>, body: Bytes)
        -> ApiAnswer;
}

/// Largest request body the admin API reads.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// What the admin server shows. Updated by the process wiring; read per admin request.
pub struct AdminState {
    api: std::sync::OnceLock<Arc<dyn AdminApi>>,
    ready: AtomicBool,
    config_dump: ArcSwap<serde_json::Value>,
    reload: ArcSwap<ReloadStatus>,
    generation: AtomicU64,
    overload: std::sync::OnceLock<OverloadProbe>,
}

/// Why the gateway is shedding new work (`config.limits.overload`), or `None`.
pub type OverloadProbe = Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl AdminState {
    pub fn new(file: impl Into<String>) -> Arc<Self> {
        Arc::new(AdminState {
            api: std::sync::OnceLock::new(),
            ready: AtomicBool::new(false),
            config_dump: ArcSwap::from_pointee(serde_json::Value::Null),
            reload: ArcSwap::from_pointee(ReloadStatus {
                file: file.into(),
                ..Default::default()
            }),
            generation: AtomicU64::new(0),
            overload: std::sync::OnceLock::new(),
        })
    }

    /// Lets `/healthz/ready` report overload (once; a second call is ignored).
    pub fn set_overload_probe(&self, probe: OverloadProbe) {
        let _ = self.overload.set(probe);
    }

    /// Adds endpoints (once; a second call is ignored).
    pub fn set_api(&self, api: Arc<dyn AdminApi>) {
        let _ = self.api.set(api);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Records a config now serving. `dump` must already be redacted.
    pub fn config_loaded(&self, dump: serde_json::Value) {
        self.config_dump.store(Arc::new(dump));
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut s = (**self.reload.load()).clone();
        s.loads += 1;
        s.last_success = Some(now());
        s.last_error = None;
        self.reload.store(Arc::new(s));
    }

    /// Records a refused config; the previous one keeps serving.
    pub fn config_refused(&self, error: String) {
        let mut s = (**self.reload.load()).clone();
        s.failures += 1;
        s.last_error = Some(error);
        self.reload.store(Arc::new(s));
    }

    pub fn reload_status(&self) -> ReloadStatus {
        (**self.reload.load()).clone()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves the admin API on `listener` until the task is dropped.
pub fn serve(listener: TcpListener, state: Arc<AdminState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    })
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn handle(state: &AdminState, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let Some(api) = state.api.get() else {
        return route(state, req);
    };
    let (parts, body) = req.into_parts();
    let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(
        body,
        MAX_ADMIN_BODY,
    ))
    .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": {"code": "body_too_large", "message": "admin request bodies are at most 64 KiB"}}),
            )
        }
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    match api.handle(parts.method.clone(), path, query, body).await {
        Some((status, v)) => json_response(status, &v),
        None => route(state, Request::from_parts(parts, ())),
    }
}

fn route<B>(state: &AdminState, req: Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": {"code": "method_not_allowed", "message": "the admin API is read-only: use GET"}}),
        );
    }
    match req.uri().path() {
        "/" => json_response(
            StatusCode::OK,
            &json!({"endpoints": ["/config_dump", "/healthz/ready", "/reload_status", "/keys", "/usage"]}),
        ),
        "/config_dump" => json_response(
            StatusCode::OK,
            &json!({
                "config": **state.config_dump.load(),
                "generation": state.generation.load(Ordering::SeqCst),
                "reload": state.reload_status(),
            }),
        ),
        "/reload_status" => json_response(StatusCode::OK, &json!(state.reload_status())),
        "/healthz/ready" => {
            // Shedding new work: not ready, so that load balancers send it elsewhere.
            if let Some(why) = state.overload.get().and_then(|p| p()) {
                text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("overloaded: {why}\n"),
                )
            } else if state.is_ready() {
                text_response(StatusCode::OK, "ready\n")
            } else {
                text_response(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"code": "not_found", "message": "unknown admin endpoint"}}),
        ),
    }
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn text_response(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_status_tracks_outcomes() {
        let s = AdminState::new("gw.yaml");
        s.config_loaded(json!({"binds": []}));
        s.config_refused("gw.yaml:3:1: bad".into());
        let st = s.reload_status();
        assert_eq!((st.loads, st.failures), (1, 1));
        assert_eq!(st.last_error.as_deref(), Some("gw.yaml:3:1: bad"));
        s.config_loaded(json!({}));
        assert!(s.reload_status().last_error.is_none());
    }

    #[test]
    fn readiness_and_unknown_paths() {
        let s = AdminState::new("x");
        let get = |p: &str| Request::get(p).body(()).unwrap();
        assert_eq!(route(&s, get("/healthz/ready")).status(), 503);
        s.set_ready(true);
        assert_eq!(route(&s, get("/healthz/ready")).status(), 200);
        assert_eq!(route(&s, get("/nope")).status(), 404);
        let post = Request::post("/config_dump").body(()).unwrap();
        assert_eq!(route(&s, post).status(), 405);
    }
}
