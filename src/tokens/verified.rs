//! Tokens already verified by this process, so a token presented again is
//! not verified again.
//!
//! An app sends the same access token with every request for its lifetime
//! (minutes), and the Ed25519 signature check is the largest CPU cost of an
//! authenticated read. This remembers, per process, the claims of tokens
//! whose signature and header checks passed, keyed by the SHA-256 of the
//! whole compact token: only the exact bytes that verified can hit, and a
//! token that failed is never remembered. What can change between two
//! presentations is still checked on every hit: the time claims against the
//! caller's clock (an expired token stops exactly at its expiry), and the
//! issuer and audience against the settings. Session liveness is not a
//! property of the token and is read from the database on every request,
//! as before (`http::auth`).
//!
//! The signing keys only change with a restart (`SIGNING_KEYS`), which
//! starts with an empty memory; a key removed from the ring therefore stops
//! its tokens at once. The memory is bounded ([`CAPACITY`] entries, a few
//! MiB): when full, expired entries go, and if none has expired it starts
//! over empty (an attacker cannot fill it without tokens we signed).

use super::AccessClaims;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::{collections::HashMap, sync::Mutex};

/// Tokens remembered at most, per process.
pub const CAPACITY: usize = 16_384;

#[derive(Clone)]
pub(super) struct Verified {
    pub claims: AccessClaims,
    /// The token's `nbf`, if it had one (ours never do).
    pub nbf: Option<Value>,
}

#[derive(Default)]
pub(super) struct VerifiedTokens {
    map: Mutex<HashMap<[u8; 32], Verified>>,
}

pub(super) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl VerifiedTokens {
    pub fn get(&self, digest: &[u8; 32]) -> Option<Verified> {
        let map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(digest).cloned()
    }

    /// Remembers a verified token; `now` (seconds) decides which entries
    /// have expired when room is needed.
    pub fn insert(&self, digest: [u8; 32], verified: Verified, now: i64) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CAPACITY && !map.contains_key(&digest) {
            map.retain(|_, v| v.claims.exp.saturating_add(super::EXP_LEEWAY_SECS) >= now);
            if map.len() >= CAPACITY {
                map.clear();
            }
        }
        map.insert(digest, verified);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}
