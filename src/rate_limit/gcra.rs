//! GCRA (the generic cell rate algorithm) and progressive penalties, as
//! pure functions of `(state, now, quota)`.
//!
//! One definition serves both stores: the in-process store applies it
//! under a mutex, and the Redis store runs the same arithmetic in a Lua
//! script (`redis_store.rs`) and derives its decision with the functions
//! here, so a limit means the same thing whichever store enforces it. Time
//! is the service clock in microseconds, passed in, so tests move it
//! instead of sleeping and every process sharing Redis agrees on it to
//! within clock skew.
//!
//! GCRA keeps one number per key, the theoretical arrival time (TAT): a
//! request is allowed when admitting it keeps TAT within one window of
//! now. It allows bursts up to the quota and refills smoothly, with none of
//! a fixed window's double-burst at the boundary.
//!
//! Exactness: the emission interval is `window / limit`, a fraction of a
//! microsecond in general (1,001 per second is 999 + 1/1,001 µs). TAT is
//! kept as whole microseconds plus a remainder in units of `1 / limit` µs,
//! so every quota is represented exactly: no rounding of the interval, no
//! silent cap. Every number stays below 2^53, so the Lua script (whose
//! numbers are doubles) computes the same integers.

/// `limit` requests per `window_ms`, bursts up to `limit`: a configuration
/// value (`config::Quota`).
pub use crate::config::Quota;

/// Microseconds per second.
const US: i64 = 1_000_000;

/// The window in microseconds.
pub fn window_us(quota: Quota) -> i64 {
    quota.window_ms.saturating_mul(1000)
}

/// The emission interval `window / limit` as whole microseconds and a
/// remainder in units of `1 / limit` µs.
fn interval(quota: Quota) -> (i64, i64) {
    let limit = i64::from(quota.limit.max(1));
    let w = window_us(quota);
    (w / limit, w % limit)
}

/// Everything a store keeps for one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Theoretical arrival time, whole microseconds; 0 when unknown.
    pub tat_us: i64,
    /// The rest of TAT, in units of `1 / limit` µs (below `limit`).
    pub tat_frac: i64,
    /// Consecutive refusals not yet forgiven by a quiet period.
    pub violations: u32,
    pub last_violation_us: i64,
    /// While in the future, every request is refused (the penalty).
    pub blocked_until_us: i64,
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
pub const QUIET_US: i64 = 15 * 60 * US;
/// The longest penalty block.
pub const MAX_BLOCK_US: i64 = 60 * 60 * US;

/// Whole seconds, rounded up, in `us` microseconds.
pub fn ceil_secs(us: i64) -> u64 {
    (us.max(0) as u64).div_ceil(US as u64)
}

/// TAT no earlier than `now_us`, remainder normalised.
fn base(state: &KeyState, now_us: i64, quota: Quota) -> (i64, i64) {
    let limit = i64::from(quota.limit.max(1));
    let (mut tat, mut frac) = (state.tat_us, state.tat_frac.max(0));
    if frac >= limit {
        tat = tat.saturating_add(frac / limit);
        frac %= limit;
    }
    if tat < now_us {
        (now_us, 0)
    } else {
        (tat, frac)
    }
}

/// `(tat, frac)` plus one emission interval.
fn advance((tat, frac): (i64, i64), quota: Quota) -> (i64, i64) {
    let limit = i64::from(quota.limit.max(1));
    let (q, r) = interval(quota);
    let (mut t, mut f) = (tat.saturating_add(q), frac + r);
    if f >= limit {
        t += 1;
        f -= limit;
    }
    (t, f)
}

/// How far `(tat, frac)` lies beyond `now_us + window`, rounded up to a
/// whole microsecond; `<= 0` when within the window.
fn overshoot_us((tat, frac): (i64, i64), now_us: i64, quota: Quota) -> i64 {
    tat - now_us - window_us(quota) + i64::from(frac > 0)
}

/// The decision for an admitted request that left TAT `used_us` µs and
/// `used_frac / limit` µs after now. The Redis store calls this with the
/// script's numbers.
pub fn admitted(quota: Quota, used_us: i64, used_frac: i64) -> Decision {
    let limit = i128::from(quota.limit.max(1));
    let w = i128::from(window_us(quota).max(1));
    // (window - used) / interval = ((window - used_us) * limit - frac) / window
    let left = (w - i128::from(used_us)) * limit - i128::from(used_frac);
    let remaining = (left.max(0) / w).clamp(0, i128::from(u32::MAX)) as u32;
    Decision {
        allowed: true,
        remaining,
        reset_secs: ceil_secs(used_us + i64::from(used_frac > 0)),
        retry_after_secs: 0,
    }
}

/// The decision for a refused request: wait `wait_us`, full again after
/// `reset_us` (or the wait, if longer).
pub fn refused(wait_us: i64, reset_us: i64) -> Decision {
    Decision {
        allowed: false,
        remaining: 0,
        reset_secs: ceil_secs(reset_us.max(wait_us)),
        retry_after_secs: ceil_secs(wait_us).max(1),
    }
}

/// Applies one request at `now_us`; returns the new state and the decision.
pub fn check(state: KeyState, now_us: i64, quota: Quota) -> (KeyState, Decision) {
    let mut s = state;
    if s.blocked_until_us > now_us {
        let wait = s.blocked_until_us - now_us;
        return (s, refused(wait, wait));
    }
    let (tat, frac) = base(&s, now_us, quota);
    let next = advance((tat, frac), quota);
    let over = overshoot_us(next, now_us, quota);
    if over > 0 {
        // Refused: the penalty grows with each violation not forgiven.
        if now_us - s.last_violation_us > QUIET_US {
            s.violations = 0;
        }
        s.violations = s.violations.saturating_add(1);
        s.last_violation_us = now_us;
        let block = penalty_us(s.violations, over, quota);
        s.blocked_until_us = now_us + block;
        return (s, refused(block, tat - now_us + i64::from(frac > 0)));
    }
    (s.tat_us, s.tat_frac) = next;
    (s, admitted(quota, next.0 - now_us, next.1))
}

/// Whether a request now would be refused, without recording anything.
pub fn peek(state: KeyState, now_us: i64, quota: Quota) -> Option<u64> {
    if state.blocked_until_us > now_us {
        return Some(ceil_secs(state.blocked_until_us - now_us));
    }
    let next = advance(base(&state, now_us, quota), quota);
    let over = overshoot_us(next, now_us, quota);
    (over > 0).then(|| ceil_secs(over).max(1))
}

/// The first refusal waits only for the next free slot; each further one
/// (without a quiet period between) doubles a window-long block, capped
/// (never below the natural wait of the first kind).
pub fn penalty_us(violations: u32, natural_us: i64, quota: Quota) -> i64 {
    let natural = natural_us.max(1);
    if violations <= 1 {
        return natural;
    }
    let doublings = (violations - 2).min(20);
    window_us(quota)
        .saturating_mul(1i64 << doublings)
        .max(natural)
        .min(MAX_BLOCK_US)
}

/// Whether a state still matters at `now_us`: it limits, refuses, or
/// remembers violations. A store may forget the others.
pub fn live(s: &KeyState, now_us: i64) -> bool {
    s.tat_us > now_us
        || (s.tat_us == now_us && s.tat_frac > 0)
        || s.blocked_until_us > now_us
        || now_us - s.last_violation_us < QUIET_US
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
        let (_, d) = check(s, 11_000_000, q);
        assert!(!d.allowed);
        let mut s2 = KeyState::default();
        for _ in 0..5 {
            s2 = check(s2, 0, q).0;
        }
        let (_, d) = check(s2, 12_000_000, q);
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
        let (next, d2) = check(s, 10_000_000, q); // allowed again
        assert!(d2.allowed);
        s = next;
        let (next, d3) = check(s, 10_000_000, q);
        s = next;
        assert_eq!(d3.retry_after_secs, 10, "second violation: one window");
        let (next, d4) = check(s, 20_000_000, q);
        s = next;
        assert!(d4.allowed);
        let (next, d5) = check(s, 20_000_000, q);
        s = next;
        assert_eq!(d5.retry_after_secs, 20, "third: doubled");
        // A quiet quarter of an hour forgives.
        let later = 20_000_000 + QUIET_US + 60_000_000;
        let (next, d6) = check(s, later, q);
        s = next;
        assert!(d6.allowed);
        let (_, d7) = check(s, later, q);
        assert_eq!(d7.retry_after_secs, 10, "back to the natural wait");
    }

    #[test]
    fn the_block_is_capped() {
        let q = Quota::per_seconds(1, 600);
        assert_eq!(penalty_us(30, 1, q), MAX_BLOCK_US);
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

    /// A client that asks only when `peek` says it may, every `step_us`
    /// from `start` for `span_us`: how many requests are admitted.
    fn well_behaved(quota: Quota, start: i64, span_us: i64, step_us: i64) -> i64 {
        let mut s = KeyState::default();
        let mut admitted = 0;
        let mut now = start;
        while now <= start + span_us {
            while peek(s, now, quota).is_none() {
                let (next, d) = check(s, now, quota);
                assert!(d.allowed, "peek and check agree");
                s = next;
                admitted += 1;
            }
            now += step_us;
        }
        admitted
    }

    const T0: i64 = 1_772_000_000_000_000;

    #[test]
    fn a_million_per_second_admits_exactly_a_million_per_second() {
        let q = Quota::per_seconds(1_000_000, 1);
        // The burst: exactly the limit at one instant, then a refusal.
        let mut s = KeyState::default();
        for i in 0..1_000_000 {
            let (next, d) = check(s, T0, q);
            assert!(d.allowed, "request {i} of the burst");
            s = next;
        }
        assert!(!check(s, T0, q).1.allowed, "the 1,000,001st is refused");
        // Then one per microsecond: a million more in the next second.
        assert_eq!(well_behaved(q, T0, 1_000_000, 1), 2_000_000);
    }

    #[test]
    fn a_thousand_and_one_per_second_is_not_capped_to_a_thousand() {
        let q = Quota::per_seconds(1_001, 1);
        // The burst plus exactly 1,001 per second for 10 s.
        assert_eq!(well_behaved(q, T0, 10_000_000, 100), 1_001 + 10_010);
        // A rate that is no whole number of microseconds apart, over a
        // long window: 999,999 per 7 s.
        let q = Quota::per_seconds(999_999, 7);
        assert_eq!(well_behaved(q, T0, 14_000_000, 50), 999_999 * 3);
    }

    #[test]
    fn remaining_is_exact_for_fractional_intervals() {
        let q = Quota::per_seconds(1_001, 1);
        let (s, d) = check(KeyState::default(), T0, q);
        assert_eq!(d.remaining, 1_000);
        let (_, d) = check(s, T0, q);
        assert_eq!(d.remaining, 999);
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
            let mut s = KeyState::default();
            let mut now = 0;
            let mut admitted = 0i64;
            for g in gaps {
                now += g * 1000;
                let (next, d) = check(s, now, q);
                s = next;
                if d.allowed {
                    admitted += 1;
                    let refill = i128::from(now) * i128::from(limit) / i128::from(window_us(q));
                    proptest::prop_assert!(i128::from(admitted) <= i128::from(limit) + refill);
                }
            }
        }
    }
}
