//! The numbers of the server's secure notices (docs/security.md §4.8, "Notices"): a PNE takes a
//! notice only if its number is greater than the last one's, and the notices to one PNE may
//! come from any session of the server (a publish on one PN GW's session tells a watcher behind
//! another). So the sessions of one server draw from one counter, shared like the
//! [`super::FlowBudget`] (an `Arc<AtomicU64>`, no I/O), that follows the wall clock the machine
//! is given: Unix milliseconds × 1024, or one more than the last number if that is greater. A
//! restarted server numbers past what it gave before, as long as its clock did not go back and
//! it gave fewer than 1024 a millisecond.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shared counter of notice numbers.
#[derive(Clone, Debug, Default)]
pub struct NoticeClock {
    last: Arc<AtomicU64>,
}

impl NoticeClock {
    /// The next number at `now_ms` (Unix milliseconds): greater than every one given before.
    pub fn next(&self, now_ms: i64) -> u64 {
        let floor = u64::try_from(now_ms).unwrap_or(0).saturating_mul(1024);
        let mut prev = self.last.load(Ordering::Acquire);
        loop {
            let next = floor.max(prev.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(seen) => prev = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_clock_and_always_grow() {
        let c = NoticeClock::default();
        let shared = c.clone();
        assert_eq!(c.next(1_000), 1_024_000);
        assert_eq!(
            shared.next(1_000),
            1_024_001,
            "one counter for every session"
        );
        assert_eq!(
            c.next(999),
            1_024_002,
            "a clock that went back does not go back"
        );
        assert_eq!(c.next(2_000), 2_048_000);
        assert_eq!(c.next(-5), 2_048_001);
    }
}
