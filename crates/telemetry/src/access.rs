//! The access log (`config.logging`): one line per request when its response body ends, in
//! JSON or `key=value` text, on standard output. Lines gather in a bounded buffer that a
//! writer thread empties every 50 ms (sooner when 256 KiB wait), so a slow terminal or pipe
//! never stalls a request: past 8 MiB, lines are dropped and counted
//! (`switchyard_access_log_lines_dropped_total`).

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use cel::{Expression, Uses};
use serde_json::Value as Json;

use crate::fields::{Added, Field};
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
    pub(crate) fn emit<'a>(
        &'a self,
        rec: &'a RequestRecord,
        elapsed: Duration,
        evals: &mut Evaluations<'a>,
    ) {
        if let Some(filter) = &self.filter {
            if !evals.matches(filter) {
                return;
            }
        }
        let mut added = Added::new();
        for (name, expr) in &self.add {
            // A field whose expression fails (a missing key on this request) is left out;
            // the failure is not worth a line of its own at every request.
            if let Some(v) = evals.get(expr) {
                crate::fields::add_field(name, v, &mut added);
            }
        }
        // Written straight into the shared buffer: no line buffer to allocate and copy.
        let sink = sink();
        let mut pending = sink.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() > MAX_BUFFERED {
            drop(pending);
            Metrics::global().log_lines_dropped.inc();
            return;
        }
        let before = pending.len();
        let mut line = Line::begin(&mut pending, self.json);
        // Defaults first, unless removed or replaced by an added field of the same name.
        // (Most configs remove and add nothing, or little: skip the lookups then.)
        crate::fields::default_fields(rec, elapsed, &mut |name: &'static str, v: Field<'_>| {
            if (self.remove.is_empty() || !self.remove.contains(name))
                && (added.is_empty() || !added.iter().any(|(a, _)| a == name))
            {
                line.field(Key::Static(name), &v);
            }
        });
        for (name, v) in &added {
            line.field(Key::Config(name), &v.field());
        }
        line.end();
        // Only the line that fills the buffer wakes the writer: it may not run for a while
        // (it can share the core), and a wake-up per line meanwhile is a futex call each. A
        // writer that is busy finds the buffer full when it next looks, without a wake-up.
        let wake = before < WAKE_AT && pending.len() >= WAKE_AT;
        drop(pending);
        if wake {
            sink.wake.notify_one();
        }
    }
}

/// A field name: the gateway's own (plain ASCII, written as it is) or one from the config.
#[derive(Clone, Copy)]
enum Key<'a> {
    Static(&'static str),
    Config(&'a str),
}

/// One log line being written into the shared buffer.
struct Line<'o> {
    out: &'o mut Vec<u8>,
    json: bool,
    first: bool,
}

impl<'o> Line<'o> {
    fn begin(out: &'o mut Vec<u8>, json: bool) -> Line<'o> {
        if json {
            out.push(b'{');
        }
        Line {
            out,
            json,
            first: true,
        }
    }

    fn field(&mut self, key: Key<'_>, v: &Field<'_>) {
        if !std::mem::take(&mut self.first) {
            self.out.push(if self.json { b',' } else { b' ' });
        }
        if self.json {
            match key {
                Key::Static(k) => {
                    debug_assert!(!needs_json_escape(k.as_bytes()));
                    quoted(k.as_bytes(), self.out);
                }
                Key::Config(k) => json_str(k, self.out),
            }
            self.out.push(b':');
            json_value(v, self.out);
        } else {
            let k = match key {
                Key::Static(k) | Key::Config(k) => k,
            };
            self.out.extend_from_slice(k.as_bytes());
            self.out.push(b'=');
            text_value(v, self.out);
        }
    }

    fn end(self) {
        if self.json {
            self.out.push(b'}');
        }
        self.out.push(b'\n');
    }
}

fn json_value(v: &Field<'_>, out: &mut Vec<u8>) {
    match v {
        Field::Str(s) => json_str(s, out),
        Field::Ascii(s) => {
            debug_assert!(!needs_json_escape(s));
            quoted(s, out)
        }
        Field::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Field::U64(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        Field::DurationMs(d) => duration_ms(*d, out),
        // Writing into a Vec cannot fail.
        Field::Json(j) => {
            let _ = serde_json::to_writer(&mut *out, j);
        }
    }
}

/// `1.234` for 1234 µs: milliseconds with three decimals, without float formatting.
fn duration_ms(d: Duration, out: &mut Vec<u8>) {
    let micros = d.as_micros().min(u64::MAX as u128) as u64;
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Whether `s` holds a byte JSON must escape (a control character, `"` or `\`). Eight bytes
/// at a time: every string value of every log line is checked, and nearly all are clean.
fn needs_json_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Per byte, the high bit of `(x - n) & !x` is set where the byte is below `n` (n <= 128):
    // exact as a test for any such byte.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * n as u64) & !x & HIGH;
    let hits = |word: [u8; 8]| {
        let x = u64::from_ne_bytes(word);
        below(x, 0x20) | below(x ^ (ONES * b'"' as u64), 1) | below(x ^ (ONES * b'\\' as u64), 1)
            != 0
    };
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if hits(word) {
            return true;
        }
    }
    // The last few bytes as one more word, padded with a byte that needs nothing.
    let rest = chunks.remainder();
    let mut word = [b'a'; 8];
    word[..rest.len()].copy_from_slice(rest);
    hits(word)
}

fn quoted(s: &[u8], out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
}

/// A JSON string: copied as is when nothing in it needs escaping (methods, paths, ids,
/// addresses nearly always), else escaped by serde_json.
fn json_str(s: &str, out: &mut Vec<u8>) {
    if needs_json_escape(s.as_bytes()) {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        quoted(s.as_bytes(), out);
    }
}

/// A `key=value` value: plain when it has no spaces, quotes, `=` or control characters, else
/// a JSON string; structured values as JSON.
fn text_value(v: &Field<'_>, out: &mut Vec<u8>) {
    let s = match v {
        Field::Str(s) => *s,
        Field::Ascii(s) => std::str::from_utf8(s).unwrap_or_default(),
        Field::Json(Json::String(s)) => s,
        Field::Json(j) => {
            let text = j.to_string();
            return text_str(&text, out);
        }
        _ => return json_value(v, out),
    };
    text_str(s, out)
}

fn text_str(s: &str, out: &mut Vec<u8>) {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
    if plain {
        out.extend_from_slice(s.as_bytes());
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Past this many buffered bytes (the writer fell behind), lines are dropped.
const MAX_BUFFERED: usize = 8 << 20;
/// The writer is woken early once this much is waiting.
/// (Measured side by side against 64 KiB, with the gateway, nginx and the writer on one core:
/// -1.3% gateway CPU with the access log on, in every round; 16 KiB was +0.8%.)
const WAKE_AT: usize = 256 << 10;
/// Otherwise it writes what has gathered this often.
const WRITE_EVERY: Duration = Duration::from_millis(50);

/// Lines are appended to a shared buffer; a writer thread swaps it for its own empty one and
/// writes it out. A request never waits on the terminal or pipe, the writer is not woken per
/// line, and the two buffers keep their capacity (a fresh one would be regrown, and copied, at
/// every write).
struct Sink {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    /// The buffer being written (empty between writes). Locked before `pending` and held
    /// through the write, so what is swapped out is written in order.
    writing: Mutex<Vec<u8>>,
}

fn sink() -> &'static Sink {
    static SINK: OnceLock<&'static Sink> = OnceLock::new();
    SINK.get_or_init(|| {
        let sink: &'static Sink = Box::leak(Box::new(Sink {
            pending: Mutex::new(Vec::with_capacity(WAKE_AT * 2)),
            wake: Condvar::new(),
            writing: Mutex::new(Vec::with_capacity(WAKE_AT * 2)),
        }));
        let _ = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || loop {
                {
                    let guard = sink.pending.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = sink
                        .wake
                        .wait_timeout_while(guard, WRITE_EVERY, |p| p.len() < WAKE_AT)
                        .unwrap_or_else(|p| p.into_inner());
                }
                write_pending(sink);
            });
        sink
    })
}

/// Swaps the pending lines out and writes them.
fn write_pending(sink: &Sink) {
    let mut out = sink.writing.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::swap(
        &mut *out,
        &mut *sink.pending.lock().unwrap_or_else(|p| p.into_inner()),
    );
    if out.is_empty() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&out);
    let _ = stdout.flush();
    out.clear();
    // A burst (up to MAX_BUFFERED) does not pin its memory.
    if out.capacity() > WAKE_AT * 8 {
        out.shrink_to(WAKE_AT * 2);
    }
}

/// Writes every line logged so far (for a clean shutdown).
pub fn flush() {
    write_pending(sink());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(json: bool, fields: &[(Key<'_>, Field<'_>)]) -> String {
        let mut out = Vec::new();
        let mut line = Line::begin(&mut out, json);
        for (k, v) in fields {
            line.field(*k, v);
        }
        line.end();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_escape_what_needs_it_and_copy_the_rest() {
        let odd = "a\"b\\c\nd\u{1}é\u{7f}";
        let json = serde_json::json!({"k": [1, "x"]});
        let fields = [
            (Key::Static("path"), Field::Str("/v1/chat/completions")),
            (Key::Static("odd"), Field::Str(odd)),
            (Key::Config("tab\tkey \"q\""), Field::Ascii(b"10.0.0.1:5")),
            (Key::Static("n"), Field::U64(7)),
            (
                Key::Static("f"),
                Field::DurationMs(Duration::from_micros(250)),
            ),
            (
                Key::Static("g"),
                Field::DurationMs(Duration::from_micros(12_345_678)),
            ),
            (Key::Static("b"), Field::Bool(false)),
            (Key::Config("j"), Field::Json(&json)),
        ];
        let line = write(true, &fields);
        assert!(line.ends_with("}\n"));
        assert!(line.contains(r#""path":"/v1/chat/completions""#), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "path": "/v1/chat/completions",
                "odd": odd,
                "tab\tkey \"q\"": "10.0.0.1:5",
                "n": 7,
                "f": 0.25,
                "g": 12345.678,
                "b": false,
                "j": {"k": [1, "x"]},
            })
        );
        assert!(line.contains(r#""f":0.250,"g":12345.678"#), "{line}");
        // Exactly the bytes JSON must escape are caught, wherever they stand (in the 8-byte
        // words or the rest), next to any other byte.
        for b in 0..=255u8 {
            let must = b < 0x20 || b == b'"' || b == b'\\';
            for at in 0..19 {
                for filler in [b'a', 0x7f, 0xc3, 0xff, b'!', b'#', b'[', b']'] {
                    let mut s = vec![filler; 19];
                    s[at] = b;
                    assert_eq!(
                        needs_json_escape(&s),
                        must,
                        "byte {b:#x} at {at} in {filler:#x}"
                    );
                }
            }
        }
        assert!(!needs_json_escape("é/ok-🙂 \u{7f}".as_bytes()));
    }

    #[test]
    fn text_lines_quote_only_what_would_be_ambiguous() {
        let json = serde_json::json!({"k": 1});
        let text = serde_json::json!("two words");
        let line = write(
            false,
            &[
                (Key::Static("path"), Field::Str("/v1/chat")),
                (Key::Static("empty"), Field::Str("")),
                (Key::Static("eq"), Field::Str("a=b")),
                (Key::Static("n"), Field::U64(7)),
                (Key::Config("j"), Field::Json(&json)),
                (Key::Config("t"), Field::Json(&text)),
            ],
        );
        assert_eq!(
            line,
            "path=/v1/chat empty=\"\" eq=\"a=b\" n=7 j=\"{\\\"k\\\":1}\" t=\"two words\"\n"
        );
    }
}
