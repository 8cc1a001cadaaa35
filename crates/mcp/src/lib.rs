//! MCP gateway: many MCP servers behind one streamable-HTTP endpoint.
//!
//! The proxy hands an `mcp` backend's requests to [`Gateway::serve`]. The gateway speaks MCP to
//! the client (sessions, SSE streams) and to each target (streamable HTTP or a stdio child),
//! federating their tools, prompts and resources under prefixed names and routing calls back.
//! Upstream sessions are sealed into the client's session id (see [`session`]), so the
//! gateway keeps no per-session state an HTTP target needs; stdio children are per-replica
//! state ([`local`]), restarted and re-initialized when a session resumes elsewhere.
//!
//! Modern (2026-07-28, stateless) clients are served on the same route by a downgrade shim
//! (`modern`): the gateway pools upstream sessions for them (`pool`) and turns the targets'
//! own requests into multi-round-trip `input_required` results (`mrtr`).

pub mod authz;
mod cache;
mod downstream;
mod federate;
pub mod jsonrpc;
mod legacy;
mod listen;
pub mod local;
mod modern;
mod mrtr;
pub mod names;
mod params;
mod pool;
mod replay;
mod route;
pub mod session;
mod stream;
mod tasks;
pub mod upstream;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use downstream::Downstream;
pub use upstream::stdio::kill_all as kill_stdio_children;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Erases a future's type where it is made. Futures built in closures over borrowed data
/// otherwise meet a rustc limit (higher-ranked `Send` inference) when a caller spawns them.
pub(crate) fn boxed<'a, T>(f: impl Future<Output = T> + Send + 'a) -> BoxFut<'a, T> {
    Box::pin(f)
}

pub(crate) enum ReadError {
    TooLarge,
    Broken(String),
}

/// Reads a whole body of at most `limit` bytes.
pub(crate) async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ReadError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Broken(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Legacy protocol versions (sessions opened with `initialize`) spoken with clients, newest
/// first; upstream sessions are opened at the newest.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Modern protocol versions (stateless: version, capabilities and client info in every
/// request's `_meta`), served on the same route through the downgrade shim ([`modern`]).
pub const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];

/// Every version the route serves, newest first (what `server/discover` and -32022 list).
pub fn served_versions() -> Vec<&'static str> {
    MODERN_VERSIONS
        .iter()
        .chain(SUPPORTED_VERSIONS.iter())
        .copied()
        .collect()
}

/// Sends one request to an HTTP target (absolute URI), with the target's policies (TLS,
/// headers, backend auth) applied by whoever implements it.
pub trait HttpClient: Send + Sync {
    fn send(
        &self,
        req: Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, String>> + Send + 'static>>;
}

/// What the gateway learnt about a request, for logs, spans and metrics.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub method: Option<String>,
    pub tool: Option<String>,
    pub target: Option<String>,
    pub session_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureMode {
    FailOpen,
    FailClosed,
}

pub struct Gateway {
    targets: Vec<Arc<upstream::Target>>,
    prefixed: bool,
    /// `statefulMode` (default true): sessions span requests.
    stateful: bool,
    failure: FailureMode,
    sealer: Arc<session::Sealer>,
    authz: Option<authz::Authz>,
    sessions: Arc<local::LocalSessions>,
    /// Legacy SSE clients connected to this replica.
    legacy: legacy::Registry,
    /// Upstream sessions held for modern (stateless) clients.
    pool: Arc<pool::Pool>,
    /// Upstream exchanges waiting for a modern client's `inputResponses` (MRTR).
    parked: Arc<mrtr::Parked>,
    /// Targets' list pages kept for their `ttlMs` (`listCache: true`).
    list_cache: Option<cache::ListCache>,
}

impl Gateway {
    /// Builds the runtime of one `mcp` backend. `http_client` gives each HTTP target its
    /// client, given the target and its parsed URL.
    pub fn compile(
        cfg: &config::McpBackend,
        authorization: Option<&config::McpAuthorization>,
        mut http_client: impl FnMut(&config::McpTarget, &Uri) -> Result<Arc<dyn HttpClient>, String>,
    ) -> Result<Gateway, String> {
        let mut targets = Vec::with_capacity(cfg.targets.len());
        for (i, t) in cfg.targets.iter().enumerate() {
            let key = format!("targets[{i}] ({})", t.name);
            let transport = if let Some(h) = &t.mcp {
                let url = parse_url(&h.host).map_err(|e| format!("{key}.mcp.host: {e}"))?;
                let client = http_client(t, &url).map_err(|e| format!("{key}: {e}"))?;
                upstream::Transport::Http(upstream::http::HttpTarget {
                    url,
                    client,
                    discovered: Default::default(),
                    tool_headers: Default::default(),
                })
            } else if let Some(s) = &t.stdio {
                upstream::Transport::Stdio(upstream::stdio::StdioSpec {
                    cmd: s.cmd.clone(),
                    args: s.args.clone(),
                    env: s
                        .env
                        .iter()
                        .map(|(k, v)| (k.clone(), v.expose().to_string()))
                        .collect(),
                })
            } else if let Some(h) = &t.sse {
                let url = parse_url(&h.host).map_err(|e| format!("{key}.sse.host: {e}"))?;
                let client = http_client(t, &url).map_err(|e| format!("{key}: {e}"))?;
                upstream::Transport::Sse(upstream::sse::SseTarget { url, client })
            } else if let Some(o) = &t.openapi {
                let host = if o.host.contains("://") {
                    o.host.clone()
                } else {
                    format!("http://{}", o.host)
                };
                let url = parse_url(&host).map_err(|e| format!("{key}.openapi.host: {e}"))?;
                let client = http_client(t, &url).map_err(|e| format!("{key}: {e}"))?;
                upstream::Transport::OpenApi(
                    upstream::openapi::OpenApiTarget::new(&o.schema, url, client)
                        .map_err(|e| format!("{key}.openapi.schema: {e}"))?,
                )
            } else {
                return Err(format!(
                    "{key}: a target needs one of mcp, sse, stdio or openapi"
                ));
            };
            targets.push(Arc::new(upstream::Target {
                name: t.name.as_str().into(),
                transport,
            }));
        }
        let prefixed = match cfg.prefix_mode {
            Some(config::McpPrefixMode::Always) => true,
            Some(config::McpPrefixMode::Never) => false,
            Some(config::McpPrefixMode::Conditional) | None => targets.len() > 1,
        };
        let failure = match cfg.failure_mode {
            Some(config::McpFailureMode::FailOpen) => FailureMode::FailOpen,
            _ => FailureMode::FailClosed,
        };
        let idle = cfg
            .session_idle_timeout
            .map_or(Duration::from_secs(30 * 60), |d| d.0);
        let sealer = session::Sealer::new(cfg.session_key.as_ref().map(|k| k.expose()))
            .map_err(|e| format!("sessionKey: {e}"))?;
        let sessions = local::LocalSessions::new(idle);
        Ok(Gateway {
            targets,
            prefixed,
            stateful: cfg.stateful_mode != Some(false),
            failure,
            sealer: Arc::new(sealer),
            authz: authorization.map(authz::Authz::compile).transpose()?,
            pool: pool::Pool::new(idle, sessions.clone()),
            sessions,
            legacy: Default::default(),
            parked: mrtr::Parked::new(),
            list_cache: (cfg.list_cache == Some(true)).then(Default::default),
        })
    }

    fn target(&self, name: &str) -> Option<&Arc<upstream::Target>> {
        self.targets.iter().find(|t| &*t.name == name)
    }
}

fn parse_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(format!("{s:?} is not an http(s) URL with a host")),
    }
}
