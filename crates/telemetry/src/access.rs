//! The access log (`config.logging`): one line per request when its response body ends, in
//! JSON or `key=value` text, on standard output. Lines go through a bounded queue to a writer
//! thread, so a slow terminal or pipe never stalls a request: past the queue, lines are
//! dropped and counted (`switchyard_access_log_lines_dropped_total`).

use std::collections::HashSet;
use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;

use cel::{Expression, Uses};
use serde_json::Value as Json;

use crate::metrics::Metrics;
use crate::record::RequestRecord;

/// Lines queued for the writer before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;

pub struct AccessLog {
    json: bool,
    filter: Option<Expression>,
    add: Vec<(String, Expression)>,
    remove: HashSet<String>,
    uses: Uses,
}

impl AccessLog {
    /// `None` when the config has no `logging` block: the access log is off.
    pub fn compile(cfg: Option<&config::Logging>) -> Result<Option<AccessLog>, String> {
        let Some(cfg) = cfg else { return Ok(None) };
        let filter = cfg
            .filter
            .as_deref()
            .map(|f| Expression::compile(f).map_err(|e| format!("logging.filter: {e}")))
            .transpose()?;
        let (add, remove) = crate::compile_fields(cfg.fields.as_ref(), "logging")?;
        let mut uses = filter.as_ref().map(|f| f.uses()).unwrap_or_default();
        for (_, e) in &add {
            uses = uses.union(e.uses());
        }
        Ok(Some(AccessLog {
            json: cfg.format == config::LogFormat::Json,
            filter,
            add,
            remove,
            uses,
        }))
    }

    pub fn uses(&self) -> Uses {
        self.uses
    }

    /// Writes the line for `rec` (unless the filter says no).
    pub fn emit(&self, rec: &RequestRecord, scope: Option<&cel::Scope>) {
        if let (Some(filter), Some(scope)) = (&self.filter, scope) {
            if !filter.matches(scope) {
                return;
            }
        }
        let mut fields: Vec<(String, Json)> = crate::default_fields(rec)
            .into_iter()
            .filter(|(k, _)| !self.remove.contains(*k))
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if let Some(scope) = scope {
            for (name, expr) in &self.add {
                match expr.eval_in(scope) {
                    Ok(v) => {
                        fields.retain(|(k, _)| k != name);
                        cel::expand_field(name, &v, &mut fields);
                    }
                    // A field whose expression fails (a missing key on this request) is left
                    // out; the failure is not worth a line of its own at every request.
                    Err(e) => tracing::trace!(field = %name, error = %e, "log field not evaluated"),
                }
            }
        }
        let line = if self.json {
            json_line(&fields)
        } else {
            text_line(&fields)
        };
        write_line(line);
    }
}

fn json_line(fields: &[(String, Json)]) -> String {
    let mut obj = serde_json::Map::with_capacity(fields.len());
    for (k, v) in fields {
        obj.insert(k.clone(), v.clone());
    }
    let mut s = Json::Object(obj).to_string();
    s.push('\n');
    s
}

/// `key=value` pairs; values with spaces, quotes or `=` are quoted, structured values are
/// written as JSON.
fn text_line(fields: &[(String, Json)]) -> String {
    let mut s = String::with_capacity(256);
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(k);
        s.push('=');
        let raw = match v {
            Json::String(t) => t.clone(),
            Json::Null => "null".to_string(),
            other => other.to_string(),
        };
        let plain = !raw.is_empty()
            && !raw
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
        if plain {
            s.push_str(&raw);
        } else {
            s.push_str(&Json::String(raw).to_string());
        }
    }
    s.push('\n');
    s
}

enum Msg {
    Line(String),
    /// Write out everything before this, then answer.
    Flush(SyncSender<()>),
}

fn writer() -> &'static Option<SyncSender<Msg>> {
    static WRITER: OnceLock<Option<SyncSender<Msg>>> = OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) = sync_channel::<Msg>(QUEUE_LINES);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx))
            .ok()
            .map(|_| tx)
    })
}

fn write_line(line: String) {
    let Some(tx) = writer() else { return };
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(Msg::Line(line))
    {
        Metrics::global().log_lines_dropped.inc();
    }
}

/// Writes lines as they come, flushing whenever the queue runs dry.
fn write_loop(rx: Receiver<Msg>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let handle = |msg: Msg, out: &mut std::io::BufWriter<std::io::StdoutLock<'_>>| match msg {
        Msg::Line(line) => {
            let _ = out.write_all(line.as_bytes());
        }
        Msg::Flush(done) => {
            let _ = out.flush();
            let _ = done.try_send(());
        }
    };
    while let Ok(msg) = rx.recv() {
        handle(msg, &mut out);
        while let Ok(more) = rx.try_recv() {
            handle(more, &mut out);
        }
        let _ = out.flush();
    }
}

/// Waits, up to `timeout`, until every line queued so far is written (for a clean shutdown).
pub fn flush(timeout: std::time::Duration) {
    let Some(tx) = writer() else { return };
    let deadline = std::time::Instant::now() + timeout;
    let (done_tx, done_rx) = sync_channel::<()>(1);
    let mut msg = Msg::Flush(done_tx);
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let _ = done_rx.recv_timeout(left);
}
