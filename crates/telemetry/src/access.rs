//! The access log (`config.logging`): one line per request when its response body ends, in
//! JSON or `key=value` text, on standard output. Lines gather in a bounded buffer that a
//! writer thread empties every 50 ms (sooner when 64 KiB wait), so a slow terminal or pipe
//! never stalls a request: past 8 MiB, lines are dropped and counted
//! (`switchyard_access_log_lines_dropped_total`).

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock};

use cel::{Expression, Uses};
use serde_json::Value as Json;

use crate::fields::Field;
use crate::metrics::Metrics;
use crate::record::RequestRecord;

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
        let mut added: Vec<(String, Json)> = Vec::new();
        if let Some(scope) = scope {
            for (name, expr) in &self.add {
                match expr.eval_in(scope) {
                    Ok(v) => cel::expand_field(name, &v, &mut added),
                    // A field whose expression fails (a missing key on this request) is left
                    // out; the failure is not worth a line of its own at every request.
                    Err(e) => tracing::trace!(field = %name, error = %e, "log field not evaluated"),
                }
            }
        }
        // Defaults first, unless removed or replaced by an added field of the same name.
        let defaults = crate::fields::default_fields(rec);
        let kept = defaults
            .into_iter()
            .filter(|(k, _)| !self.remove.contains(*k) && !added.iter().any(|(a, _)| a == k));
        let fields = kept.chain(added.iter().map(|(k, v)| (k.as_str(), Field::Json(v))));
        let mut line = Vec::with_capacity(512);
        if self.json {
            json_line(fields, &mut line);
        } else {
            text_line(fields, &mut line);
        }
        write_line(&line);
    }
}

/// One JSON object, written straight into `out` (no intermediate map).
fn json_line<'a>(fields: impl Iterator<Item = (&'a str, Field<'a>)>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, &v);
    }
    out.extend_from_slice(b"}\n");
}

/// `key=value` pairs; values with spaces, quotes or `=` are quoted, structured values are
/// written as JSON.
fn text_line<'a>(fields: impl Iterator<Item = (&'a str, Field<'a>)>, out: &mut Vec<u8>) {
    for (i, (k, v)) in fields.enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        let raw = v.text();
        let plain = !raw.is_empty()
            && !raw
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
        if plain {
            out.extend_from_slice(raw.as_bytes());
        } else {
            let _ = serde_json::to_writer(&mut *out, &*raw);
        }
    }
    out.push(b'\n');
}

/// Past this many buffered bytes (the writer fell behind), lines are dropped.
const MAX_BUFFERED: usize = 8 << 20;
/// The writer is woken early once this much is waiting.
const WAKE_AT: usize = 64 << 10;
/// Otherwise it writes what has gathered this often.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Lines are appended to a shared buffer; a writer thread takes the whole buffer at once.
/// A request never waits on the terminal or pipe, and the writer is not woken per line.
struct Sink {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    /// Held while a taken buffer is written, so a flush keeps lines in order.
    writing: Mutex<()>,
}

fn sink() -> &'static Sink {
    static SINK: OnceLock<&'static Sink> = OnceLock::new();
    SINK.get_or_init(|| {
        let sink: &'static Sink = Box::leak(Box::new(Sink {
            pending: Mutex::new(Vec::with_capacity(WAKE_AT * 2)),
            wake: Condvar::new(),
            writing: Mutex::new(()),
        }));
        let _ = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || loop {
                let taken = {
                    let guard = sink.pending.lock().unwrap_or_else(|p| p.into_inner());
                    let (mut guard, _) = sink
                        .wake
                        .wait_timeout_while(guard, WRITE_EVERY, |p| p.len() < WAKE_AT)
                        .unwrap_or_else(|p| p.into_inner());
                    std::mem::take(&mut *guard)
                };
                write_out(sink, &taken);
            });
        sink
    })
}

fn write_out(sink: &Sink, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let _order = sink.writing.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

fn write_line(line: &[u8]) {
    let sink = sink();
    let mut pending = sink.pending.lock().unwrap_or_else(|p| p.into_inner());
    if pending.len() + line.len() > MAX_BUFFERED {
        drop(pending);
        Metrics::global().log_lines_dropped.inc();
        return;
    }
    pending.extend_from_slice(line);
    if pending.len() >= WAKE_AT {
        sink.wake.notify_one();
    }
}

/// Writes every line logged so far (for a clean shutdown).
pub fn flush() {
    let sink = sink();
    let _order = sink.writing.lock().unwrap_or_else(|p| p.into_inner());
    let taken = std::mem::take(&mut *sink.pending.lock().unwrap_or_else(|p| p.into_inner()));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&taken);
    let _ = out.flush();
}
