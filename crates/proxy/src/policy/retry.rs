//! `retry` (route phase, around the attempts): resend on the listed statuses with backoff.
//! A route's retries span its backends, so the policy is the route's, never a backend's.

use std::time::Duration;

#[derive(Debug)]
pub struct Retry {
    pub attempts: u32,
    pub backoff: Duration,
    pub codes: Vec<u16>,
}

impl Retry {
    /// Exponential backoff with +-25% jitter, so retries from many clients spread out.
    pub fn delay(&self, retry_number: u32) -> Duration {
        let base = self.backoff.saturating_mul(1 << retry_number.min(10));
        let jitter = 0.75 + fastrand::f64() * 0.5;
        base.mul_f64(jitter)
    }
}

impl Retry {
    pub(crate) fn compile(r: &config::Retry) -> Retry {
        Retry {
            attempts: r.attempts,
            backoff: r.backoff.map_or(Duration::from_millis(25), |d| d.0),
            codes: if r.codes.is_empty() {
                vec![503]
            } else {
                r.codes.iter().map(|s| s.0).collect()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_with_jitter() {
        let r = Retry {
            attempts: 3,
            backoff: Duration::from_millis(100),
            codes: vec![503],
        };
        let d0 = r.delay(0);
        let d2 = r.delay(2);
        assert!(d0 >= Duration::from_millis(75) && d0 <= Duration::from_millis(125));
        assert!(d2 >= Duration::from_millis(300) && d2 <= Duration::from_millis(500));
    }
}
