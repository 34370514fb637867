//! The in-process store: GCRA state per key in a mutex-guarded map.
//!
//! Used alone when `REDIS_URL` is unset (one process), and as the fallback
//! for non-credential classes when Redis is unreachable.
//!
//! Key decision: **no request ever scans the whole map.** Entries live in
//! insertion order (an `IndexMap`), and every check also inspects the next
//! [`SWEEP_PER_CHECK`] entries under a rotating cursor, removing those whose
//! state has fully decayed. Each request adds at most one entry and looks
//! at two or more, so the cursor laps the map faster than dead entries can
//! pile up: the map holds the recently active keys plus a bounded fraction
//! of expired ones, at O(1) cost per request. As a last resort the map is
//! capped at [`MAX_KEYS`]: at the cap the entry under the cursor is evicted
//! even if still live (logged and counted), so memory cannot grow without
//! bound however many distinct keys arrive.

use super::gcra::{self, Decision, KeyState, Quota};
use indexmap::IndexMap;
use std::sync::{Mutex, PoisonError};

/// Entries inspected (and removed when expired) per check.
pub const SWEEP_PER_CHECK: usize = 4;
/// The most keys kept at once.
pub const MAX_KEYS: usize = 1_000_000;

#[derive(Debug, Default)]
struct Inner {
    keys: IndexMap<String, KeyState>,
    cursor: usize,
}

#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_keys: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_capacity_limit(MAX_KEYS)
    }
}

/// Whether a state still matters: it refuses, or remembers violations.
fn live(s: &KeyState, now_us: i64) -> bool {
    gcra::live(s, now_us)
}

impl Inner {
    /// Looks at the next `n` entries under the cursor, removing expired ones.
    fn sweep(&mut self, now_us: i64, n: usize) {
        for _ in 0..n {
            if self.keys.is_empty() {
                self.cursor = 0;
                return;
            }
            if self.cursor >= self.keys.len() {
                self.cursor = 0;
            }
            let expired = self
                .keys
                .get_index(self.cursor)
                .is_some_and(|(_, s)| !live(s, now_us));
            if expired {
                // The last entry moves into this slot; look at it next.
                self.keys.swap_remove_index(self.cursor);
            } else {
                self.cursor += 1;
            }
        }
    }

    /// Makes room for one more key at the cap by evicting the entry under
    /// the cursor, live or not.
    fn evict_one(&mut self) {
        if self.cursor >= self.keys.len() {
            self.cursor = 0;
        }
        if self.keys.swap_remove_index(self.cursor).is_some() {
            tracing::warn!("in-memory rate-limit store full; evicting a live key");
            metrics::counter!("rate_limit_memory_evictions_total").increment(1);
        }
    }
}

impl MemoryStore {
    /// A store holding at most `max_keys` keys (tests use small caps).
    pub fn with_capacity_limit(max_keys: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_keys: max_keys.max(1),
        }
    }

    pub fn check(&self, key: &str, now_us: i64, quota: Quota) -> Decision {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.sweep(now_us, SWEEP_PER_CHECK);
        let state = inner.keys.get(key).copied();
        let (next, decision) = gcra::check(state.unwrap_or_default(), now_us, quota);
        match inner.keys.get_mut(key) {
            Some(slot) => *slot = next,
            None => {
                if inner.keys.len() >= self.max_keys {
                    inner.evict_one();
                }
                inner.keys.insert(key.to_owned(), next);
            }
        }
        decision
    }

    pub fn peek(&self, key: &str, now_us: i64, quota: Quota) -> Option<u64> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        gcra::peek(
            inner.keys.get(key).copied().unwrap_or_default(),
            now_us,
            quota,
        )
    }

    /// Keys currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const Q: Quota = Quota {
        limit: 5,
        window_ms: 1_000,
    };
    /// A realistic clock (µs since the epoch).
    const T0: i64 = 1_772_000_000_000_000;
    /// Milliseconds in the store's unit.
    const MS: i64 = 1_000;

    #[test]
    fn many_distinct_short_lived_keys_stay_bounded_without_a_full_scan() {
        let store = MemoryStore::default();
        // 200,000 one-off keys, one per millisecond: each decays after the
        // window (1 s), so about 1,000 are live at any moment.
        let mut peak = 0;
        for i in 0..200_000i64 {
            store.check(&format!("ip:{i}"), T0 + i * MS, Q);
            peak = peak.max(store.len());
        }
        // Live keys plus what the cursor has not reached yet: a small
        // multiple of the live set, nowhere near the 200,000 inserted.
        assert!(peak < 3_000, "peak {peak}");
    }

    #[test]
    fn one_check_inspects_a_bounded_number_of_entries() {
        let store = MemoryStore::default();
        for i in 0..10_000i64 {
            store.check(&format!("k{i}"), T0, Q);
        }
        assert_eq!(store.len(), 10_000);
        // Everything has expired; a single check removes at most
        // SWEEP_PER_CHECK of them (no full scan on the request path)...
        let later = T0 + 10_000 * MS;
        store.check("fresh", later, Q);
        assert_eq!(store.len(), 10_000 - SWEEP_PER_CHECK + 1);
        // ...and a lap of the cursor clears the rest.
        for i in 0..10_000 / SWEEP_PER_CHECK as i64 {
            store.check("fresh", later + i * MS, Q);
        }
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn live_state_survives_the_sweep() {
        let store = MemoryStore::default();
        let q = Quota {
            limit: 1,
            window_ms: 60_000,
        };
        assert!(store.check("attacker", T0, q).allowed);
        assert!(!store.check("attacker", T0 + MS, q).allowed);
        // Plenty of other traffic laps the cursor many times.
        for i in 0..50_000i64 {
            store.check(&format!("other{i}"), T0 + (2 + i / 1000) * MS, Q);
        }
        assert!(
            store.peek("attacker", T0 + 100 * MS, q).is_some(),
            "still refused"
        );
    }

    #[test]
    fn the_cap_bounds_memory_even_when_every_key_is_live() {
        let store = MemoryStore::with_capacity_limit(1_000);
        let q = Quota {
            limit: 1,
            window_ms: 3_600_000,
        };
        for i in 0..5_000i64 {
            store.check(&format!("k{i}"), T0, q);
            assert!(store.len() <= 1_000);
        }
        assert_eq!(store.len(), 1_000);
    }
}
