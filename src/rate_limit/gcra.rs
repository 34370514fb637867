//! GCRA (the generic cell rate algorithm) and progressive penalties, as
//! pure functions of `(state, now, quota)`.
//!
//! One definition serves both stores: the in-process store applies it
//! under a mutex, and the Redis store runs the same arithmetic in a Lua
//! script (`redis_store.rs`), so a limit means the same thing whichever
//! store enforces it. Time is the service clock in milliseconds, passed in,
//! so tests move it instead of sleeping and every process sharing Redis
//! agrees on it to within clock skew.
//!
//! GCRA keeps one number per key, the theoretical arrival time (TAT): a
//! request is allowed when admitting it keeps TAT within one window of
//! now. It allows bursts up to the quota and refills smoothly, with none of
//! a fixed window's double-burst at the boundary.

/// `limit` requests per `window_ms`, bursts up to `limit`: a configuration
/// value (`config::Quota`).
pub use crate::config::Quota;

/// The emission interval: one request's share of the window.
fn interval_ms(quota: Quota) -> i64 {
    (quota.window_ms / i64::from(quota.limit)).max(1)
}

/// Everything a store keeps for one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Theoretical arrival time; 0 when unknown.
    pub tat_ms: i64,
    /// Consecutive refusals not yet forgiven by a quiet period.
    pub violations: u32,
    pub last_violation_ms: i64,
    /// While in the future, every request is refused (the penalty).
    pub blocked_until_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests left in the current window.
    pub remaining: u32,
    /// Seconds until the quota is fully available again.
    pub reset_secs: u64,
    /// Seconds to wait before retrying (0 when allowed).
    pub retry_after_secs: u64,
}

/// A quiet period this long forgives past violations.
pub const QUIET_MS: i64 = 15 * 60 * 1000;
/// The longest penalty block.
pub const MAX_BLOCK_MS: i64 = 60 * 60 * 1000;

fn ceil_secs(ms: i64) -> u64 {
    (ms.max(0) as u64).div_ceil(1000)
}

/// Applies one request at `now_ms`; returns the new state and the decision.
pub fn check(state: KeyState, now_ms: i64, quota: Quota) -> (KeyState, Decision) {
    let mut s = state;
    let t = interval_ms(quota);
    if s.blocked_until_ms > now_ms {
        let wait = s.blocked_until_ms - now_ms;
        return (s, refused(wait, wait));
    }
    let tat = s.tat_ms.max(now_ms);
    let new_tat = tat + t;
    if new_tat - now_ms > quota.window_ms {
        // Refused: the penalty grows with each violation not forgiven.
        if now_ms - s.last_violation_ms > QUIET_MS {
            s.violations = 0;
        }
        s.violations = s.violations.saturating_add(1);
        s.last_violation_ms = now_ms;
        let natural = new_tat - now_ms - quota.window_ms;
        let block = penalty_ms(s.violations, natural, quota);
        s.blocked_until_ms = now_ms + block;
        return (s, refused(block, tat - now_ms));
    }
    s.tat_ms = new_tat;
    let used = new_tat - now_ms;
    let remaining = ((quota.window_ms - used) / t).clamp(0, i64::from(u32::MAX)) as u32;
    (
        s,
        Decision {
            allowed: true,
            remaining,
            reset_secs: ceil_secs(used),
            retry_after_secs: 0,
        },
    )
}

/// Whether a request now would be refused, without recording anything.
pub fn peek(state: KeyState, now_ms: i64, quota: Quota) -> Option<u64> {
    if state.blocked_until_ms > now_ms {
        return Some(ceil_secs(state.blocked_until_ms - now_ms));
    }
    let tat = state.tat_ms.max(now_ms);
    let over = tat + interval_ms(quota) - now_ms - quota.window_ms;
    (over > 0).then(|| ceil_secs(over).max(1))
}

/// The first refusal waits only for the next free slot; each further one
/// (without a quiet period between) doubles a window-long block, capped.
pub fn penalty_ms(violations: u32, natural_ms: i64, quota: Quota) -> i64 {
    if violations <= 1 {
        return natural_ms.max(1);
    }
    let doublings = (violations - 2).min(20);
    quota
        .window_ms
        .saturating_mul(1i64 << doublings)
        .clamp(natural_ms.max(1), MAX_BLOCK_MS)
}

fn refused(wait_ms: i64, reset_ms: i64) -> Decision {
    Decision {
        allowed: false,
        remaining: 0,
        reset_secs: ceil_secs(reset_ms.max(wait_ms)),
        retry_after_secs: ceil_secs(wait_ms).max(1),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(quota: Quota, times: &[i64]) -> Vec<bool> {
        let mut s = KeyState::default();
        times
            .iter()
            .map(|t| {
                let (next, d) = check(s, *t, quota);
                s = next;
                d.allowed
            })
            .collect()
    }

    #[test]
    fn a_burst_up_to_the_limit_passes_then_the_next_is_refused() {
        let q = Quota::per_seconds(5, 60);
        assert_eq!(
            run(q, &[0, 0, 0, 0, 0, 0]),
            [true, true, true, true, true, false]
        );
    }

    #[test]
    fn capacity_refills_one_interval_at_a_time() {
        let q = Quota::per_seconds(5, 60); // one every 12 s
        let mut s = KeyState::default();
        for _ in 0..5 {
            s = check(s, 0, q).0;
        }
        let (_, d) = check(s, 11_000, q);
        assert!(!d.allowed);
        let mut s2 = KeyState::default();
        for _ in 0..5 {
            s2 = check(s2, 0, q).0;
        }
        let (_, d) = check(s2, 12_000, q);
        assert!(d.allowed, "one slot back after one interval");
    }

    #[test]
    fn remaining_counts_down_and_refusals_say_when_to_retry() {
        let q = Quota::per_seconds(3, 30);
        let (s, d) = check(KeyState::default(), 0, q);
        assert_eq!(d.remaining, 2);
        let (s, d) = check(s, 0, q);
        assert_eq!(d.remaining, 1);
        let (s, _) = check(s, 0, q);
        let (_, d) = check(s, 0, q);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 10);
    }

    #[test]
    fn repeated_violations_lengthen_the_block_and_quiet_resets_it() {
        let q = Quota::per_seconds(1, 10);
        let mut s = check(KeyState::default(), 0, q).0;
        let (next, d1) = check(s, 0, q);
        s = next;
        assert_eq!(d1.retry_after_secs, 10, "first refusal: the natural wait");
        let (next, d2) = check(s, 10_000, q); // allowed again
        assert!(d2.allowed);
        s = next;
        let (next, d3) = check(s, 10_000, q);
        s = next;
        assert_eq!(d3.retry_after_secs, 10, "second violation: one window");
        let (next, d4) = check(s, 20_000, q);
        s = next;
        assert!(d4.allowed);
        let (next, d5) = check(s, 20_000, q);
        s = next;
        assert_eq!(d5.retry_after_secs, 20, "third: doubled");
        // A quiet quarter of an hour forgives.
        let later = 20_000 + QUIET_MS + 60_000;
        let (next, d6) = check(s, later, q);
        s = next;
        assert!(d6.allowed);
        let (_, d7) = check(s, later, q);
        assert_eq!(d7.retry_after_secs, 10, "back to the natural wait");
    }

    #[test]
    fn the_block_is_capped() {
        let q = Quota::per_seconds(1, 600);
        assert_eq!(penalty_ms(30, 1, q), MAX_BLOCK_MS);
    }

    #[test]
    fn peek_reports_without_consuming() {
        let q = Quota::per_seconds(2, 60);
        let s = check(KeyState::default(), 0, q).0;
        assert_eq!(peek(s, 0, q), None);
        let s = check(s, 0, q).0;
        assert_eq!(peek(s, 0, q), Some(30));
        assert!(!check(s, 0, q).1.allowed);
    }

    proptest::proptest! {
        /// GCRA's conformance bound: by time t (from the first request) at
        /// most `limit` (the burst) plus one per emission interval elapsed
        /// are admitted, whatever the arrival pattern.
        #[test]
        fn never_more_than_the_burst_plus_the_refill(
            limit in 1u32..20, window in 1i64..120,
            gaps in proptest::collection::vec(0i64..5_000, 1..200),
        ) {
            let q = Quota::per_seconds(limit, window);
            let t_ms = q.window_ms / i64::from(limit);
            let mut s = KeyState::default();
            let mut now = 0;
            let mut admitted = 0i64;
            for g in gaps {
                now += g;
                let (next, d) = check(s, now, q);
                s = next;
                if d.allowed {
                    admitted += 1;
                    proptest::prop_assert!(admitted <= i64::from(limit) + now / t_ms);
                }
            }
        }
    }
}
