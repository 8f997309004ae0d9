//! A token bucket, without IO: how often one device may report (docs/device-status.md, "Rate
//! limits and bad input"). The caller keeps one per device and gives it the time.

use std::time::{Duration, Instant};

/// A bucket of `burst` tokens, one coming back every `every`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    burst: u32,
    every: Duration,
    /// Tokens at `at`.
    tokens: u32,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(now: Instant, burst: u32, every: Duration) -> Self {
        Self {
            burst: burst.max(1),
            every: every.max(Duration::from_millis(1)),
            tokens: burst.max(1),
            at: now,
        }
    }

    /// Takes a token at `now`, or says how long until one comes back.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            return Ok(());
        }
        Err((self.at + self.every).saturating_duration_since(now))
    }

    fn refill(&mut self, now: Instant) {
        if self.tokens >= self.burst {
            self.at = now.max(self.at);
            return;
        }
        let elapsed = now.saturating_duration_since(self.at);
        let came = elapsed.as_nanos() / self.every.as_nanos();
        if came == 0 {
            return;
        }
        let came32 = u32::try_from(came).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(came32).min(self.burst);
        self.at = if self.tokens >= self.burst {
            now
        } else {
            self.at + self.every.saturating_mul(came32)
        };
    }

    /// Whether the bucket is full at `now` (a device quiet long enough: its entry may go).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Says when to try again, in words, for a `rate_limited` error's reason.
pub fn retry_in(what: &str, wait: Duration) -> String {
    let ms = wait.as_millis().max(1);
    format!("too many {what} from this device: try again in {ms} ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let t = t0();
        let s = Duration::from_secs(2);
        let mut b = TokenBucket::new(t, 3, s);
        for _ in 0..3 {
            assert_eq!(b.take(t), Ok(()));
        }
        assert_eq!(b.take(t), Err(s));
        assert_eq!(
            b.take(t + Duration::from_millis(500)),
            Err(Duration::from_millis(1500))
        );
        assert_eq!(b.take(t + s), Ok(()));
        assert_eq!(b.take(t + s), Err(s));
        assert!(!b.is_full(t + s), "emptied");
        assert!(!b.is_full(t + 3 * s), "two of three back");
        // Quiet for long: full again, never more than the burst.
        let later = t + 100 * s;
        assert!(b.is_full(later));
        for _ in 0..3 {
            assert_eq!(b.take(later), Ok(()));
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    fn tokens_come_back_on_their_grid_not_from_the_last_attempt() {
        let t = t0();
        let s = Duration::from_secs(1);
        let mut b = TokenBucket::new(t, 1, s);
        assert_eq!(b.take(t), Ok(()));
        // Failed attempts do not push the next token away.
        for ms in [100, 400, 900] {
            assert!(b.take(t + Duration::from_millis(ms)).is_err());
        }
        assert_eq!(b.take(t + s), Ok(()));
        // 2.5 s later: two tokens came, the burst holds one; a full bucket's clock starts
        // again when its token is taken.
        assert_eq!(b.take(t + s * 3 + s / 2), Ok(()));
        assert!(b.take(t + s * 3 + s / 2).is_err());
        assert_eq!(b.take(t + s * 4), Err(s / 2));
        assert_eq!(b.take(t + s * 4 + s / 2), Ok(()));
    }

    #[test]
    fn the_reason_says_when() {
        let r = retry_in("status reports", Duration::from_millis(1500));
        assert_eq!(
            r,
            "too many status reports from this device: try again in 1500 ms"
        );
        assert!(retry_in("x", Duration::ZERO).ends_with("1 ms"));
    }
}
