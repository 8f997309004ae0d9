//! The server's bound on flows in progress (issue 6, "Bounded resources"): each session runs at
//! most [`ServerConfig::max_flows`](super::ServerConfig) flows, and all sessions of one server
//! together at most the capacity of one shared [`FlowBudget`]. A request beyond either is
//! answered `busy`.
//!
//! The budget is a counter shared by the sessions of one server process (an `Arc<AtomicUsize>`,
//! no I/O): a session takes one unit when a flow starts and gives units back as its flows end,
//! and gives back everything it holds when it is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Flows in progress across every session of one server.
#[derive(Clone, Debug)]
pub struct FlowBudget {
    used: Arc<AtomicUsize>,
    capacity: usize,
}

impl FlowBudget {
    /// A budget of `capacity` flows.
    pub fn new(capacity: usize) -> Self {
        Self {
            used: Arc::new(AtomicUsize::new(0)),
            capacity,
        }
    }

    /// Flows in progress now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes one unit; false when the budget is spent.
    pub(super) fn try_acquire(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives `n` units back.
    pub(super) fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

impl Default for FlowBudget {
    fn default() -> Self {
        Self::new(10_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_stops_at_capacity_and_release_frees() {
        let b = FlowBudget::new(2);
        let shared = b.clone();
        assert!(b.try_acquire() && shared.try_acquire());
        assert!(!b.try_acquire());
        assert_eq!(shared.in_use(), 2);
        b.release(1);
        assert_eq!(b.in_use(), 1);
        assert!(shared.try_acquire());
        b.release(0);
        assert_eq!(b.in_use(), 2);
        b.release(2);
        assert_eq!(shared.in_use(), 0);
    }
}
