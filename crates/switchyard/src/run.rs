//! Process wiring: logging, gateway + admin start, config file watching, signals and drain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use admin::AdminState;
use proxy::Gateway;

const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:15000";
const DEFAULT_STATS_ADDR: &str = "127.0.0.1:15020";
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// Worker threads: `SWITCHYARD_WORKER_THREADS`, else the CPUs this process may use (affinity
/// and cgroup quota). With one, a current-thread runtime serves everything on the calling
/// thread: the benchmark measured ~20% less CPU per request than a one-worker multi-thread
/// runtime, which pays for cross-thread wakeups it cannot use.
fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::env::var("SWITCHYARD_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .on_thread_park(release_when_idle)
            .build()
    }
}

/// A worker going idle hands back what its heap freed (at most once a second per thread: a
/// busy worker parks thousands of times a second).
fn release_when_idle() {
    thread_local!(static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) });
    let now = Instant::now();
    if LAST
        .get()
        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
    {
        LAST.set(Some(now));
        crate::release_freed_memory();
    }
}

pub fn block_on(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match build_runtime() {
        Ok(rt) => rt.block_on(async {
            // Once a second, also on a quiet gateway (an idle worker does not park again).
            tokio::spawn(async {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    crate::release_freed_memory();
                }
            });
            fut.await
        }),
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a future that needs a runtime (building upstream clients does) to completion.
pub fn block_on_result<T>(
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?
        .block_on(fut)
}

pub fn init_logging(level: Option<config::LogLevel>) {
    let default = match level {
        Some(config::LogLevel::Trace) => "trace",
        Some(config::LogLevel::Debug) => "debug",
        Some(config::LogLevel::Warn) => "warn",
        Some(config::LogLevel::Error) => "error",
        Some(config::LogLevel::Info) | None => "info",
    };
    // RUST_LOG wins over the config, so an operator can turn detail up without editing it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},hyper=info,h2=info,rustls=info"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub async fn run_file(file: PathBuf) -> ExitCode {
    let loaded = match config::load_file(&file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(loaded.config.config.logging.as_ref().and_then(|l| l.level));
    let started = Instant::now();
    let running = match Running::start(&loaded, &file.display().to_string()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");
    let on_change = {
        let (file, gateway, admin) = (file.clone(), running.gateway.clone(), running.admin.clone());
        move || {
            let (file, gateway, admin) = (file.clone(), gateway.clone(), admin.clone());
            Box::pin(async move { reload(&file, &gateway, &admin).await }) as ChangeFuture
        }
    };
    let _watcher = match watch_config(file.clone(), on_change) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, file = %file.display(), "cannot watch the config file; hot reload is off");
            None
        }
    };
    running.wait_for_signal_and_drain().await
}

/// The admin server's keys and usage endpoints, answered by the gateway's governance state.
struct GovernanceApi(Arc<proxy::governance::Governance>);

impl admin::AdminApi for GovernanceApi {
    fn handle(
        &self,
        method: http::Method,
        path: String,
        query: Option<String>,
        body: bytes::Bytes,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Option<(http::StatusCode, serde_json::Value)>> + Send>,
    > {
        let gov = self.0.clone();
        Box::pin(async move {
            proxy::governance::admin::handle(&gov, &method, &path, query.as_deref(), body).await
        })
    }
}

/// A started gateway with its admin server.
pub struct Running {
    pub gateway: Arc<Gateway>,
    pub admin: Arc<AdminState>,
    drain: Duration,
    _admin_task: tokio::task::JoinHandle<()>,
    _stats_task: Option<tokio::task::JoinHandle<()>>,
    _extproc_task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn start(loaded: &config::Loaded, source: &str) -> Result<Running, String> {
        let admin = AdminState::new(source);
        let admin_addr = loaded
            .config
            .config
            .admin_addr
            .as_deref()
            .unwrap_or(DEFAULT_ADMIN_ADDR);
        let admin_addr: std::net::SocketAddr = admin_addr
            .parse()
            .map_err(|_| format!("invalid adminAddr {admin_addr:?}"))?;
        let admin_listener = admin::bind(admin_addr)
            .await
            .map_err(|e| format!("cannot start the admin server on {admin_addr}: {e}"))?;
        let admin_task = admin::serve(admin_listener, admin.clone());
        let stats_task = start_stats(loaded.config.config.stats_addr.as_deref()).await?;
        let gateway = Gateway::start(loaded).await?;
        let extproc_task = match &loaded.config.config.ext_proc {
            Some(x) => {
                let listener = extproc::bind(parse_addr(&x.addr, "extProc.addr")?).await?;
                tracing::info!(addr = %x.addr, pool = %x.pool, "ext_proc server listening");
                // The pool the gateway's current config names, so both share in-flight counts
                // and prefix tables, across reloads too.
                let g = gateway.clone();
                let source: extproc::PoolSource = Arc::new(move || {
                    let snap = g.snapshot();
                    let name = &snap.config.config.ext_proc.as_ref()?.pool;
                    snap.pools.get(name).cloned()
                });
                Some(extproc::serve(listener, source))
            }
            None => None,
        };
        admin.set_api(Arc::new(GovernanceApi(gateway.governance())));
        let g = Arc::downgrade(&gateway);
        admin.set_overload_probe(Arc::new(move || g.upgrade()?.overload_pressure()));
        admin.config_loaded(config::redacted_dump(&loaded.config));
        // Ready only now: every bind is listening.
        admin.set_ready(true);
        tracing::info!(admin = %admin_addr, "admin server listening");
        Ok(Running {
            gateway,
            admin,
            drain: loaded
                .config
                .config
                .drain_timeout
                .map_or(DEFAULT_DRAIN, |d| d.0),
            _admin_task: admin_task,
            _stats_task: stats_task,
            _extproc_task: extproc_task,
        })
    }

    pub async fn wait_for_signal_and_drain(self) -> ExitCode {
        wait_for_signal().await;
        tracing::info!(deadline_s = self.drain.as_secs(), "draining");
        self.admin.set_ready(false);
        if self.gateway.shutdown(self.drain).await {
            tracing::info!("drained, exiting");
        } else {
            tracing::warn!("drain deadline passed with requests still open, exiting");
        }
        telemetry::access::flush();
        // stdio MCP servers die with the gateway, never orphaned.
        proxy::backend::mcp::kill_stdio_children();
        ExitCode::SUCCESS
    }
}

/// The Prometheus endpoint. A `statsAddr` in the config must be served (else the start
/// fails, as for `adminAddr`); the default address is best effort, so a second gateway on
/// one machine still starts without it.
async fn start_stats(
    configured: Option<&str>,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let text = configured.unwrap_or(DEFAULT_STATS_ADDR);
    let addr: std::net::SocketAddr = text
        .parse()
        .map_err(|_| format!("invalid statsAddr {text:?}"))?;
    match telemetry::serve_metrics(addr).await {
        Ok((local, task)) => {
            tracing::info!(stats = %local, "metrics at /metrics");
            Ok(Some(task))
        }
        Err(e) if configured.is_none() => {
            tracing::warn!(addr = %addr, error = %e, "metrics endpoint not started (set config.statsAddr)");
            Ok(None)
        }
        Err(e) => Err(format!("cannot start the stats server on {addr}: {e}")),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn parse_addr(text: &str, key: &str) -> Result<std::net::SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("invalid {key} {text:?}: expected ip:port"))
}

/// `switchyard extproc -f CONFIG`: the ext_proc picker alone, on `config.extProc`, with the
/// admin server (readiness) and metrics; the pool follows config reloads.
pub async fn run_extproc(file: PathBuf) -> ExitCode {
    match extproc_main(&file).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The pool `config.extProc` names, built (and started) from `loaded`.
fn extproc_pool(loaded: &config::Loaded) -> Result<Arc<picker::pool::Pool>, String> {
    let x = loaded
        .config
        .config
        .ext_proc
        .as_ref()
        .ok_or("the config has no `config.extProc: {addr, pool}`")?;
    let cfg = loaded
        .config
        .pools
        .iter()
        .find(|p| p.name == x.pool)
        .ok_or_else(|| format!("config.extProc.pool: unknown pool {:?}", x.pool))?;
    let pool =
        picker::pool::Pool::new(cfg.spec()).map_err(|e| format!("pool {}: {e}", cfg.name))?;
    pool.start();
    Ok(pool)
}

async fn extproc_main(file: &Path) -> Result<ExitCode, String> {
    let loaded = config::load_file(file).map_err(|e| e.to_string())?;
    init_logging(loaded.config.config.logging.as_ref().and_then(|l| l.level));
    let pool = Arc::new(arc_swap::ArcSwap::from(extproc_pool(&loaded)?));
    let x = loaded.config.config.ext_proc.clone().ok_or("no extProc")?;
    let admin = AdminState::new(file.display().to_string());
    let admin_addr = parse_addr(
        loaded
            .config
            .config
            .admin_addr
            .as_deref()
            .unwrap_or(DEFAULT_ADMIN_ADDR),
        "adminAddr",
    )?;
    let admin_listener = admin::bind(admin_addr)
        .await
        .map_err(|e| format!("cannot start the admin server on {admin_addr}: {e}"))?;
    let _admin_task = admin::serve(admin_listener, admin.clone());
    let _stats_task = start_stats(loaded.config.config.stats_addr.as_deref()).await?;
    let listener = extproc::bind(parse_addr(&x.addr, "extProc.addr")?).await?;
    let source: extproc::PoolSource = {
        let pool = pool.clone();
        Arc::new(move || Some(pool.load_full()))
    };
    let _server = extproc::serve(listener, source);
    admin.config_loaded(config::redacted_dump(&loaded.config));
    admin.set_ready(true);
    tracing::info!(addr = %x.addr, pool = %x.pool, admin = %admin_addr, "ext_proc server ready");
    let on_change = {
        let (file, pool, admin) = (file.to_path_buf(), pool.clone(), admin.clone());
        move || {
            let (file, pool, admin) = (file.clone(), pool.clone(), admin.clone());
            Box::pin(async move {
                let result = config::load_file(&file)
                    .map_err(|e| e.to_string())
                    .and_then(|l| Ok((extproc_pool_reusing(&l, &pool.load_full())?, l)));
                telemetry::Metrics::global().reload(result.is_ok());
                match result {
                    Ok((p, l)) => {
                        pool.store(p);
                        admin.config_loaded(config::redacted_dump(&l.config));
                        tracing::info!(file = %file.display(), "config reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "config refused; the previous config keeps serving");
                        admin.config_refused(e);
                    }
                }
            }) as ChangeFuture
        }
    };
    let _watcher = watch_config(file.to_path_buf(), on_change)
        .map_err(|e| tracing::warn!(error = %e, "cannot watch the config file; hot reload is off"))
        .ok();
    wait_for_signal().await;
    admin.set_ready(false);
    Ok(ExitCode::SUCCESS)
}

/// The reloaded pool: the running one when its settings did not change (its state stays).
fn extproc_pool_reusing(
    loaded: &config::Loaded,
    current: &Arc<picker::pool::Pool>,
) -> Result<Arc<picker::pool::Pool>, String> {
    let same = loaded.config.config.ext_proc.as_ref().and_then(|x| {
        let cfg = loaded.config.pools.iter().find(|p| p.name == x.pool)?;
        (cfg.spec() == *current.spec()).then(|| current.clone())
    });
    match same {
        Some(p) => Ok(p),
        None => extproc_pool(loaded),
    }
}

type ChangeFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Watches the config file's directory (editors and Kubernetes replace files rather than
/// write them in place) and runs `on_change` when the file's content changes.
fn watch_config(
    file: PathBuf,
    on_change: impl Fn() -> ChangeFuture + Send + 'static,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = file.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            // Reading the file ourselves produces access events; only changes count.
            let changed = matches!(
                ev.kind,
                notify::EventKind::Create(_)
                    | notify::EventKind::Modify(_)
                    | notify::EventKind::Remove(_)
            );
            if changed
                && ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
            {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        let mut last = std::fs::read(&file).unwrap_or_default();
        while rx.recv().await.is_some() {
            // Let a burst of events (truncate + write + rename) settle.
            tokio::time::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            let Ok(now) = std::fs::read(&file) else {
                continue;
            };
            if now == last {
                continue;
            }
            last = now;
            on_change().await;
        }
    });
    Ok(watcher)
}

pub async fn reload(file: &Path, gateway: &Gateway, admin: &AdminState) {
    let result = match config::load_file(file) {
        Ok(loaded) => gateway
            .reload(&loaded)
            .await
            .map(|_| config::redacted_dump(&loaded.config))
            .map_err(String::from),
        Err(e) => Err(e.to_string()),
    };
    telemetry::Metrics::global().reload(result.is_ok());
    match result {
        Ok(dump) => {
            admin.config_loaded(dump);
            tracing::info!(file = %file.display(), "config reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "config refused; the previous config keeps serving");
            admin.config_refused(e);
        }
    }
}
