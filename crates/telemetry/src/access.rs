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
use crate::Evaluations;

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
    pub(crate) fn emit<'a>(&'a self, rec: &RequestRecord, evals: &mut Evaluations<'a>) {
        if let (Some(filter), Some(scope)) = (&self.filter, evals.scope()) {
            if !filter.matches(scope) {
                return;
            }
        }
        let mut added: Vec<(String, Json)> = Vec::new();
        for (name, expr) in &self.add {
            // A field whose expression fails (a missing key on this request) is left out;
            // the failure is not worth a line of its own at every request.
            if let Some(v) = evals.get(expr) {
                cel::expand_field(name, &v, &mut added);
            }
        }
        // Defaults first, unless removed or replaced by an added field of the same name.
        let defaults = crate::fields::default_fields(rec);
        // (Most configs remove and add nothing, or little: skip the lookups then.)
        let kept = defaults.into_iter().filter(|(k, _)| {
            (self.remove.is_empty() || !self.remove.contains(*k))
                && (added.is_empty() || !added.iter().any(|(a, _)| a == k))
        });
        let fields = kept.chain(added.iter().map(|(k, v)| (k.as_str(), Field::Json(v))));
        // Written straight into the shared buffer: no line buffer to allocate and copy.
        let sink = sink();
        let mut pending = sink.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() > MAX_BUFFERED {
            drop(pending);
            Metrics::global().log_lines_dropped.inc();
            return;
        }
        if self.json {
            json_line(fields, &mut pending);
        } else {
            text_line(fields, &mut pending);
        }
        let wake = pending.len() >= WAKE_AT;
        drop(pending);
        if wake {
            sink.wake.notify_one();
        }
    }
}

/// One JSON object, written straight into `out` (no intermediate map).
fn json_line<'a>(fields: impl Iterator<Item = (&'a str, Field<'a>)>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(k, out);
        out.push(b':');
        match &v {
            Field::Str(s) => json_str(s, out),
            Field::Inline(s) => json_str(s.as_str(), out),
            // Writing into a Vec cannot fail.
            _ => {
                let _ = serde_json::to_writer(&mut *out, &v);
            }
        }
    }
    out.extend_from_slice(b"}\n");
}

/// A JSON string: copied as is when nothing in it needs escaping (field names, methods, paths,
/// ids, addresses nearly always), else escaped by serde_json.
fn json_str(s: &str, out: &mut Vec<u8>) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
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

/// Writes every line logged so far (for a clean shutdown).
pub fn flush() {
    let sink = sink();
    let _order = sink.writing.lock().unwrap_or_else(|p| p.into_inner());
    let taken = std::mem::take(&mut *sink.pending.lock().unwrap_or_else(|p| p.into_inner()));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&taken);
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_what_needs_it_and_copy_the_rest() {
        let odd = "a\"b\\c\nd\u{1}é";
        let json = serde_json::json!({"k": [1, "x"]});
        let fields = vec![
            ("path", Field::Str("/v1/chat/completions")),
            ("odd", Field::Str(odd)),
            (
                "tab\tkey",
                Field::Inline(crate::fields::Inline::display("10.0.0.1:5")),
            ),
            ("n", Field::U64(7)),
            ("j", Field::Json(&json)),
        ];
        let mut out = Vec::new();
        json_line(fields.into_iter(), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "path": "/v1/chat/completions",
                "odd": odd,
                "tab\tkey": "10.0.0.1:5",
                "n": 7,
                "j": {"k": [1, "x"]},
            })
        );
    }
}
