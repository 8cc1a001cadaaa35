//! `failover` (route, around the attempts): which failed attempts move the request to the
//! route's next backend, and how a failing backend rests — a cooldown after a 429 (as long as
//! its `retry-after` says), a circuit that opens after consecutive failures and lets one
//! request probe it once it has been open long enough.
//!
//! A backend's health is shared by every request of the snapshot; it is kept in atomics, so
//! reading it costs no lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use config::FailoverCause;
use http::{HeaderMap, StatusCode};

const DEFAULT_COOLDOWN: Duration = Duration::from_secs(10);
const DEFAULT_CIRCUIT_FAILURES: u32 = 5;
const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);
/// Longest cooldown a `retry-after` may impose (a provider asking for an hour is not waited
/// for; the circuit handles backends that stay down).
const MAX_COOLDOWN: Duration = Duration::from_secs(300);

/// Why an attempt did not answer the request, or why a backend was not tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Connect,
    Timeout,
    RateLimited,
    ServerError,
    ContextLength,
    /// Skipped: resting after a 429.
    Cooldown,
    /// Skipped: its circuit is open.
    CircuitOpen,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Connect => "connect",
            Cause::Timeout => "timeout",
            Cause::RateLimited => "rate_limited",
            Cause::ServerError => "server_error",
            Cause::ContextLength => "context_length",
            Cause::Cooldown => "cooldown",
            Cause::CircuitOpen => "circuit_open",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

#[derive(Debug)]
pub struct Failover {
    on: u8,
    /// Most tries, the first included (`None`: each available backend once).
    pub attempts: Option<u32>,
    cooldown: Duration,
    circuit_failures: u32,
    open_for: Duration,
    /// How long a 2xx answer's body may take to start before it counts as a timeout.
    pub first_byte_timeout: Option<Duration>,
}

impl Failover {
    pub fn compile(c: &config::Failover) -> Failover {
        let causes: Vec<Cause> = match c.on.is_empty() {
            true => vec![
                Cause::Connect,
                Cause::Timeout,
                Cause::RateLimited,
                Cause::ServerError,
            ],
            false => {
                c.on.iter()
                    .map(|o| match o {
                        FailoverCause::Connect => Cause::Connect,
                        FailoverCause::Timeout => Cause::Timeout,
                        FailoverCause::RateLimited => Cause::RateLimited,
                        FailoverCause::ServerError => Cause::ServerError,
                        FailoverCause::ContextLength => Cause::ContextLength,
                    })
                    .collect()
            }
        };
        let circuit = c.circuit.as_ref();
        Failover {
            on: causes.iter().fold(0, |acc, c| acc | c.bit()),
            attempts: c.attempts,
            cooldown: c.cooldown.map_or(DEFAULT_COOLDOWN, |d| d.0),
            circuit_failures: circuit
                .and_then(|c| c.failures)
                .unwrap_or(DEFAULT_CIRCUIT_FAILURES)
                .max(1),
            open_for: circuit
                .and_then(|c| c.open_for)
                .map_or(DEFAULT_OPEN_FOR, |d| d.0),
            first_byte_timeout: c.first_byte_timeout.map(|d| d.0),
        }
    }

    /// Whether `cause` moves the request on.
    pub fn moves_on(&self, cause: Cause) -> bool {
        self.on & cause.bit() != 0
    }

    pub fn reads_context_errors(&self) -> bool {
        self.moves_on(Cause::ContextLength)
    }

    /// Whether `health` admits a request now (see [`Health::admit`]).
    pub fn admit(&self, health: &Health) -> Result<(), (Cause, Duration)> {
        health.admit(self.open_for)
    }

    /// Records an attempt's outcome in the backend's health (`None`: it answered).
    pub fn record(&self, health: &Health, outcome: Option<Cause>, headers: Option<&HeaderMap>) {
        match outcome {
            None | Some(Cause::ContextLength) => health.success(),
            Some(Cause::RateLimited) => {
                let rest = headers
                    .and_then(retry_after)
                    .unwrap_or(self.cooldown)
                    .min(MAX_COOLDOWN);
                health.cool(rest);
            }
            Some(_) => health.failure(self.circuit_failures, self.open_for),
        }
    }
}

/// The cause an answer's status shows (the body is read only for a possible context error).
pub fn cause_of_status(status: StatusCode) -> Option<Cause> {
    match status.as_u16() {
        429 => Some(Cause::RateLimited),
        500..=599 => Some(Cause::ServerError),
        _ => None,
    }
}

/// Whether an error body says the prompt did not fit the model's context (OpenAI's
/// `context_length_exceeded`, Anthropic's "prompt is too long", vLLM's "maximum context
/// length", Gemini's "exceeds the maximum number of tokens").
pub fn is_context_error(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "prompt is too long",
        "exceeds the maximum number of tokens",
        "context window",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// `retry-after` in seconds or as an HTTP date; also `retry-after-ms` (OpenAI, Azure).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return Some(Duration::from_secs_f64(secs.max(0.0)));
    }
    let when = httpdate_seconds(v)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(when.saturating_sub(now)))
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_seconds(v: &str) -> Option<u64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from civil (H. Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()
}

/// Milliseconds since the first call, for deadlines kept in atomics.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One backend's health, as its answers showed it, and its load (for `balance`).
#[derive(Debug, Default)]
pub struct Health {
    /// Requests sent to it whose response has not ended.
    in_flight: AtomicU32,
    /// Moving average of its time to response headers, in µs (0: not measured yet).
    latency_us: AtomicU64,
    cooldown_until: AtomicU64,
    failures: AtomicU32,
    open_until: AtomicU64,
    /// When the request probing the half-open circuit started (0: none). A probe older than
    /// the open period is presumed lost (its client went away) and another may start.
    probe_since: AtomicU64,
}

/// Counts a request in flight on a backend until dropped (when its response ends).
pub struct InFlight(std::sync::Arc<Health>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Health {
    /// Counts a request in flight until the returned guard is dropped.
    pub fn start(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Folds one time-to-headers into the moving average (weight 1/5 for the new one).
    pub fn observe_latency(&self, took: Duration) {
        let new = took.as_micros().min(u64::MAX as u128) as u64;
        let old = self.latency_us.load(Ordering::Relaxed);
        let avg = match old {
            0 => new.max(1),
            _ => (old * 4 + new) / 5,
        };
        self.latency_us.store(avg.max(1), Ordering::Relaxed);
    }

    /// The moving average of its time to headers (`None`: never measured).
    pub fn latency(&self) -> Option<Duration> {
        match self.latency_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Whether a request may be sent now; if not, why and for how long. A circuit open long
    /// enough admits one probe at a time.
    pub fn admit(&self, open_for: Duration) -> Result<(), (Cause, Duration)> {
        let now = now_ms();
        let cooldown = self.cooldown_until.load(Ordering::Relaxed);
        if cooldown > now {
            return Err((Cause::Cooldown, Duration::from_millis(cooldown - now)));
        }
        let open = self.open_until.load(Ordering::Relaxed);
        if open == 0 {
            return Ok(());
        }
        if open > now {
            return Err((Cause::CircuitOpen, Duration::from_millis(open - now)));
        }
        // Half open: one probe at a time.
        let since = self.probe_since.load(Ordering::Acquire);
        let stale = since != 0 && now.saturating_sub(since) > open_for.as_millis() as u64;
        if (since == 0 || stale)
            && self
                .probe_since
                .compare_exchange(since, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Ok(());
        }
        Err((Cause::CircuitOpen, Duration::from_secs(1)))
    }

    fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.open_until.store(0, Ordering::Relaxed);
            self.probe_since.store(0, Ordering::Release);
        }
    }

    fn failure(&self, threshold: u32, open_for: Duration) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let probing = self.probe_since.load(Ordering::Acquire) != 0;
        if n >= threshold || probing {
            self.open_until
                .store(now_ms() + open_for.as_millis() as u64, Ordering::Relaxed);
            self.probe_since.store(0, Ordering::Release);
        }
    }

    fn cool(&self, rest: Duration) {
        self.cooldown_until
            .store(now_ms() + rest.as_millis() as u64, Ordering::Relaxed);
        self.probe_since.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Failover {
        Failover::compile(&config::Failover {
            circuit: Some(config::Circuit {
                failures: Some(2),
                open_for: Some(config::Dur(Duration::from_millis(30))),
            }),
            ..Default::default()
        })
    }

    #[test]
    fn a_circuit_opens_after_consecutive_failures_and_one_probe_closes_it() {
        let f = policy();
        let h = Health::default();
        f.record(&h, Some(Cause::ServerError), None);
        assert!(f.admit(&h).is_ok(), "one failure is not enough");
        f.record(&h, Some(Cause::Connect), None);
        assert_eq!(f.admit(&h).unwrap_err().0, Cause::CircuitOpen);
        std::thread::sleep(Duration::from_millis(40));
        assert!(f.admit(&h).is_ok(), "half open: one probe");
        assert!(f.admit(&h).is_err(), "only one at a time");
        // The probe fails: open again.
        f.record(&h, Some(Cause::ServerError), None);
        assert_eq!(f.admit(&h).unwrap_err().0, Cause::CircuitOpen);
        std::thread::sleep(Duration::from_millis(40));
        assert!(f.admit(&h).is_ok());
        f.record(&h, None, None);
        assert!(f.admit(&h).is_ok() && f.admit(&h).is_ok(), "closed again");
    }

    #[test]
    fn a_429_rests_the_backend_for_its_retry_after() {
        let f = policy();
        let h = Health::default();
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        f.record(&h, Some(Cause::RateLimited), Some(&headers));
        let (cause, left) = f.admit(&h).unwrap_err();
        assert_eq!(cause, Cause::Cooldown);
        assert!(left > Duration::from_millis(1900) && left <= Duration::from_secs(2));
        // retry-after-ms wins; an HTTP date works too.
        headers.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        let mut dated = HeaderMap::new();
        dated.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&dated), Some(Duration::ZERO), "in the past");
        assert_eq!(
            httpdate_seconds("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
    }

    #[test]
    fn causes_and_context_errors() {
        let f = Failover::compile(&config::Failover::default());
        assert!(f.moves_on(Cause::RateLimited) && f.moves_on(Cause::Connect));
        assert!(!f.moves_on(Cause::ContextLength), "not by default");
        assert_eq!(
            cause_of_status(StatusCode::TOO_MANY_REQUESTS),
            Some(Cause::RateLimited)
        );
        assert_eq!(
            cause_of_status(StatusCode::BAD_GATEWAY),
            Some(Cause::ServerError)
        );
        assert_eq!(cause_of_status(StatusCode::BAD_REQUEST), None);
        assert!(is_context_error(
            br#"{"error":{"code":"context_length_exceeded","message":"This model's maximum context length is 8192 tokens"}}"#
        ));
        assert!(is_context_error(
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#
        ));
        assert!(!is_context_error(
            br#"{"error":{"message":"invalid model"}}"#
        ));
    }
}
