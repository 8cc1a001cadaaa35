//! Counting windows: fixed windows for rate limits (aligned to multiples of their length
//! since the Unix epoch, so every replica agrees on them) and calendar windows (UTC hour,
//! day, month) for budgets and usage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use config::BudgetWindow;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The current fixed window of `length`: its index and the time left in it.
pub fn fixed(length: Duration) -> (u64, Duration) {
    fixed_at(now_ms(), length)
}

fn fixed_at(now_ms: u64, length: Duration) -> (u64, Duration) {
    let len = (length.as_millis() as u64).max(1);
    let index = now_ms / len;
    (index, Duration::from_millis((index + 1) * len - now_ms))
}

/// The current calendar period (`2026-12-07T04`, `2026-12-07`, `2026-12`) and the time left
/// in it.
pub fn calendar(window: BudgetWindow) -> (String, Duration) {
    calendar_at(now_ms(), window)
}

fn calendar_at(now_ms: u64, window: BudgetWindow) -> (String, Duration) {
    let secs = now_ms / 1000;
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let hour = (secs % 86_400) / 3600;
    let (label, end_secs) = match window {
        BudgetWindow::Hour => (
            format!("{y:04}-{m:02}-{d:02}T{hour:02}"),
            (secs / 3600 + 1) * 3600,
        ),
        BudgetWindow::Day => (format!("{y:04}-{m:02}-{d:02}"), (days + 1) * 86_400),
        BudgetWindow::Month => {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let next = days_from_civil(ny, nm, 1) as u64;
            (format!("{y:04}-{m:02}"), next * 86_400)
        }
    };
    let left = Duration::from_millis((end_secs * 1000).saturating_sub(now_ms).max(1));
    (label, left)
}

/// Whether `label` is a period of `window` (`2026-12-07` for a day): usage is queried by
/// label, and a label is part of a store key.
pub fn label_is_valid(window: BudgetWindow, label: &str) -> bool {
    let b = label.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    match window {
        BudgetWindow::Month => b.len() == 7 && digits(0..4) && b[4] == b'-' && digits(5..7),
        BudgetWindow::Day => {
            b.len() == 10
                && digits(0..4)
                && b[4] == b'-'
                && digits(5..7)
                && b[7] == b'-'
                && digits(8..10)
        }
        BudgetWindow::Hour => {
            b.len() == 13
                && label_is_valid(BudgetWindow::Day, &label[..10])
                && b[10] == b'T'
                && digits(11..13)
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration as OpenAI writes `x-ratelimit-reset-*`: `20ms`, `1s`, `6m0s`, `1h2m3s`.
pub fn reset_text(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms.div_ceil(1000);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-07T04:16:38.500Z
    const T: u64 = 1_796_616_998_500;

    #[test]
    fn calendar_windows_are_utc_periods_with_the_time_left() {
        let (l, left) = calendar_at(T, BudgetWindow::Hour);
        assert_eq!(l, "2026-12-07T04");
        assert_eq!(left, Duration::from_millis(43 * 60_000 + 21_500));
        let (l, left) = calendar_at(T, BudgetWindow::Day);
        assert_eq!(l, "2026-12-07");
        assert_eq!(left.as_secs(), 19 * 3600 + 43 * 60 + 21);
        let (l, left) = calendar_at(T, BudgetWindow::Month);
        assert_eq!(l, "2026-12");
        // Up to 2027-01-01T00:00Z: 24 days and the rest of the 7th.
        assert_eq!(left.as_secs(), 24 * 86_400 + 19 * 3600 + 43 * 60 + 21);
        // Leap day and year end.
        let feb29 = days_from_civil(2028, 2, 29) as u64 * 86_400_000;
        assert_eq!(calendar_at(feb29, BudgetWindow::Day).0, "2028-02-29");
        assert_eq!(
            civil_from_days(days_from_civil(2026, 12, 31)),
            (2026, 12, 31)
        );
    }

    #[test]
    fn fixed_windows_align_to_their_length() {
        let (i, left) = fixed_at(T, Duration::from_secs(60));
        assert_eq!(i, T / 60_000);
        assert_eq!(left, Duration::from_millis(60_000 - T % 60_000));
    }

    #[test]
    fn reset_text_is_openai_style() {
        assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
        assert_eq!(reset_text(Duration::from_millis(1000)), "1s");
        assert_eq!(reset_text(Duration::from_millis(1001)), "2s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_text(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn period_labels_are_checked() {
        assert!(label_is_valid(BudgetWindow::Day, "2026-12-07"));
        assert!(label_is_valid(BudgetWindow::Hour, "2026-12-07T04"));
        assert!(label_is_valid(BudgetWindow::Month, "2026-12"));
        assert!(!label_is_valid(BudgetWindow::Day, "2026-12"));
        assert!(!label_is_valid(BudgetWindow::Month, "../etc"));
    }
}
