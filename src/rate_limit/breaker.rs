//! The circuit breaker in front of Redis: a small state machine.
//!
//! ```text
//!  closed ──(N consecutive failures or timeouts)──▶ open
//!    ▲                                               │
//!    └──────────(a background probe succeeds)────────┘
//! ```
//!
//! While closed, every call goes to Redis and a success resets the count.
//! While open, no request calls Redis: each takes the degraded path at once
//! (`rate_limit::Limiter`), and one background probe per interval
//! (`redis_store.rs`) decides when to close. Only the probe closes it, so a
//! request never pays for finding out whether Redis is back.
//!
//! The methods return the change they caused, if any, so the caller logs
//! and exports each change exactly once, never once per request.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// A change of state, reported once by the call that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Opened,
    Closed,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open: AtomicBool,
    failures: AtomicU32,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures.
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
        }
    }

    /// Whether calls must not go to Redis now.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// A request's call succeeded: the failure count starts again. (A call
    /// begun before the breaker opened does not close it; the probe does.)
    pub fn on_success(&self) {
        if !self.is_open() {
            self.failures.store(0, Ordering::Release);
        }
    }

    /// A request's call failed or timed out. Opens the breaker at the
    /// threshold; `Some(Opened)` to exactly one caller.
    pub fn on_failure(&self) -> Option<Change> {
        if self.is_open() {
            return None;
        }
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        (n >= self.threshold
            && self
                .open
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok())
        .then_some(Change::Opened)
    }

    /// The probe reached Redis: closes the breaker; `Some(Closed)` to the
    /// caller that closed it.
    pub fn on_probe_success(&self) -> Option<Change> {
        self.failures.store(0, Ordering::Release);
        self.open
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(Change::Closed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_consecutive_failures_and_reports_it_once() {
        let b = Breaker::new(3);
        assert!(!b.is_open());
        assert_eq!(b.on_failure(), None);
        assert_eq!(b.on_failure(), None);
        assert_eq!(b.on_failure(), Some(Change::Opened));
        assert!(b.is_open());
        // Further failures (calls already in flight) change nothing.
        for _ in 0..10 {
            assert_eq!(b.on_failure(), None);
        }
        assert!(b.is_open());
    }

    #[test]
    fn a_success_resets_the_count_so_only_consecutive_failures_open() {
        let b = Breaker::new(3);
        for _ in 0..5 {
            assert_eq!(b.on_failure(), None);
            assert_eq!(b.on_failure(), None);
            b.on_success();
        }
        assert!(!b.is_open());
    }

    #[test]
    fn only_the_probe_closes_it_and_reports_it_once() {
        let b = Breaker::new(1);
        assert_eq!(b.on_failure(), Some(Change::Opened));
        // A late success of a call begun before opening does not close it.
        b.on_success();
        assert!(b.is_open());
        assert_eq!(b.on_probe_success(), Some(Change::Closed));
        assert!(!b.is_open());
        assert_eq!(b.on_probe_success(), None, "already closed");
        // Closed again, it counts afresh.
        assert_eq!(b.on_failure(), Some(Change::Opened));
    }

    #[test]
    fn many_threads_failing_at_once_open_it_exactly_once() {
        let b = std::sync::Arc::new(Breaker::new(5));
        let opened: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let b = b.clone();
                    s.spawn(move || (0..100).filter(|_| b.on_failure().is_some()).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(opened, 1);
        assert!(b.is_open());
    }
}
