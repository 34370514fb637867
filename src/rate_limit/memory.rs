//! The in-process store: GCRA state per key in a mutex-guarded map.
//!
//! Used alone when `REDIS_URL` is unset (one process), and as the fallback
//! for non-credential classes when Redis is unreachable. Entries whose
//! state has fully decayed are pruned as the map grows, so memory stays
//! bounded by the number of recently active keys.

use super::gcra::{self, Decision, KeyState, Quota};
use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

const PRUNE_ABOVE: usize = 100_000;

#[derive(Debug, Default)]
pub struct MemoryStore {
    keys: Mutex<HashMap<String, KeyState>>,
}

impl MemoryStore {
    pub fn check(&self, key: &str, now_ms: i64, quota: Quota) -> Decision {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.len() > PRUNE_ABOVE {
            keys.retain(|_, s| {
                s.tat_ms > now_ms
                    || s.blocked_until_ms > now_ms
                    || now_ms - s.last_violation_ms < gcra::QUIET_MS
            });
        }
        let state = keys.get(key).copied().unwrap_or_default();
        let (next, decision) = gcra::check(state, now_ms, quota);
        keys.insert(key.to_owned(), next);
        decision
    }

    pub fn peek(&self, key: &str, now_ms: i64, quota: Quota) -> Option<u64> {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        gcra::peek(keys.get(key).copied().unwrap_or_default(), now_ms, quota)
    }
}
