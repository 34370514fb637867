//! Blind indexes: deterministic, keyed fingerprints of encrypted fields, so
//! that "find the user with this email" works without decrypting every row.
//!
//! Field encryption is randomised (fresh nonce per seal), so equal values do
//! not produce equal ciphertexts and cannot be looked up. A blind index is an
//! HMAC-SHA-256 of the normalised value under its own key, separate from the
//! encryption keys: a dump of the table then reveals which rows share a value,
//! but not the value, and a plain hash would have let anyone test guesses
//! (emails and phone numbers are very guessable). The context ("users.email")
//! is length-prefixed into the MAC input so the same value in two columns
//! yields unrelated indexes, and rows cannot be correlated across columns.
//!
//! The keys form a ring (`BLIND_INDEX_KEYS`, [`super::mac_ring`]): an index
//! is written under the current key and stored with that key's id, and a
//! lookup computes one index per key of the ring and matches any of them
//! (`= ANY(…)`), so rows written under an older key are still found, and
//! still count for uniqueness, until `keys reindex` has recomputed them under
//! the current key. Only then may the old key leave the ring.

use std::fmt;

use hmac::Mac as _;

use super::hash::{hmac_sha256, update_prefixed};
use super::keyring::Key;
use super::mac_ring::{MacKeyId, MacKeyRing};
use super::CryptoError;

const DOMAIN: &[u8] = b"mobile-backend/blind-index/v1";

/// An index and the id of the key that computed it; store both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlindIndex {
    pub key_id: MacKeyId,
    pub value: [u8; 32],
}

/// The blind-index key ring; the first key is current.
#[derive(Clone)]
pub struct BlindIndexKeys(MacKeyRing);

impl BlindIndexKeys {
    pub fn new(ring: MacKeyRing) -> Self {
        Self(ring)
    }

    /// One fresh key (id 1).
    pub fn generate() -> Self {
        Self(MacKeyRing::generate())
    }

    /// `BLIND_INDEX_KEYS`: `id:base64[,id:base64…]`, current first.
    pub fn parse(spec: &str) -> Result<Self, CryptoError> {
        MacKeyRing::parse(spec).map(Self)
    }

    /// `BLIND_INDEX_KEY`, the single-key form: a ring of one key, id 1.
    pub fn single_from_base64(encoded: &str) -> Result<Self, CryptoError> {
        MacKeyRing::single_from_base64(encoded).map(Self)
    }

    pub fn ring(&self) -> &MacKeyRing {
        &self.0
    }

    pub fn current_id(&self) -> MacKeyId {
        self.0.current_id()
    }

    /// The index of `normalised_value` within `context` (e.g.
    /// "users.email") under the current key: what a write stores.
    ///
    /// Normalisation is the caller's job and must be identical at write and
    /// lookup time (e.g. trim and lowercase an email), or lookups will miss.
    pub fn compute(&self, context: &str, normalised_value: &str) -> BlindIndex {
        let (key_id, key) = self.0.current();
        BlindIndex {
            key_id,
            value: index_under(key, context, normalised_value),
        }
    }

    /// The index under the key `key_id`; `None` when that key is no longer
    /// in the ring (a value indexed under it can then no longer be compared).
    pub fn compute_with(
        &self,
        key_id: MacKeyId,
        context: &str,
        normalised_value: &str,
    ) -> Option<[u8; 32]> {
        self.0
            .get(key_id)
            .map(|key| index_under(key, context, normalised_value))
    }

    /// One index per key of the ring, current first: what a lookup
    /// matches (`column = ANY($1)`), so rows not yet reindexed are found.
    pub fn lookup(&self, context: &str, normalised_value: &str) -> Vec<Vec<u8>> {
        self.0
            .entries()
            .map(|(_, key)| index_under(key, context, normalised_value).to_vec())
            .collect()
    }
}

fn index_under(key: &Key, context: &str, normalised_value: &str) -> [u8; 32] {
    let mut mac = hmac_sha256(key);
    update_prefixed(&mut mac, DOMAIN);
    update_prefixed(&mut mac, context.as_bytes());
    update_prefixed(&mut mac, normalised_value.as_bytes());
    mac.finalize().into_bytes().into()
}

impl fmt::Debug for BlindIndexKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlindIndexKeys({:?})", self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::crypto::keyring::KEY_LEN;

    fn b64(byte: u8) -> String {
        Key::from_bytes([byte; KEY_LEN]).to_base64()
    }

    fn one(byte: u8) -> BlindIndexKeys {
        BlindIndexKeys::single_from_base64(&b64(byte)).unwrap()
    }

    #[test]
    fn deterministic() {
        let keys = BlindIndexKeys::generate();
        assert_eq!(
            keys.compute("users.email", "alice@example.com"),
            keys.compute("users.email", "alice@example.com")
        );
    }

    #[test]
    fn differs_by_value() {
        let keys = BlindIndexKeys::generate();
        assert_ne!(
            keys.compute("users.email", "alice@example.com"),
            keys.compute("users.email", "bob@example.com")
        );
    }

    #[test]
    fn differs_by_key() {
        let (a, b) = (one(1), one(2));
        assert_ne!(
            a.compute("users.email", "x").value,
            b.compute("users.email", "x").value
        );
    }

    #[test]
    fn differs_by_context() {
        let keys = BlindIndexKeys::generate();
        assert_ne!(
            keys.compute("users.email", "+15550100").value,
            keys.compute("users.phone", "+15550100").value
        );
    }

    #[test]
    fn no_concatenation_ambiguity() {
        let keys = BlindIndexKeys::generate();
        assert_ne!(keys.compute("ab", "c"), keys.compute("a", "bc"));
        assert_ne!(keys.compute("", "abc"), keys.compute("abc", ""));
    }

    #[test]
    fn is_not_a_plain_hash_of_the_value() {
        let keys = BlindIndexKeys::generate();
        let index = keys.compute("users.email", "alice@example.com");
        assert_ne!(
            index.value,
            crate::crypto::hash::sha256(b"alice@example.com")
        );
    }

    #[test]
    fn writes_use_the_current_key_and_lookups_try_every_key() {
        let old = one(1);
        let written_before = old.compute("users.email", "ada@example.com");
        assert_eq!(written_before.key_id, 1);
        let ring = BlindIndexKeys::parse(&format!("2:{},1:{}", b64(2), b64(1))).unwrap();
        let written_after = ring.compute("users.email", "ada@example.com");
        assert_eq!(written_after.key_id, 2);
        assert_ne!(written_after.value, written_before.value);
        let lookup = ring.lookup("users.email", "ada@example.com");
        assert_eq!(
            lookup,
            vec![written_after.value.to_vec(), written_before.value.to_vec()]
        );
        assert_eq!(
            ring.compute_with(1, "users.email", "ada@example.com"),
            Some(written_before.value)
        );
        // Once the old key has left, its indexes can no longer be matched.
        let new_only = BlindIndexKeys::parse(&format!("2:{}", b64(2))).unwrap();
        assert_eq!(
            new_only.compute_with(1, "users.email", "ada@example.com"),
            None
        );
        assert!(!new_only
            .lookup("users.email", "ada@example.com")
            .contains(&written_before.value.to_vec()));
    }

    #[test]
    fn the_single_key_form_is_key_1_and_debug_redacts() {
        let keys = one(9);
        assert_eq!(keys.current_id(), 1);
        let as_ring = BlindIndexKeys::parse(&keys.ring().to_spec()).unwrap();
        assert_eq!(keys.compute("c", "v"), as_ring.compute("c", "v"));
        let debug = format!("{keys:?}");
        assert!(
            debug.contains("<redacted>") && !debug.contains(&b64(9)),
            "{debug}"
        );
        assert!(BlindIndexKeys::single_from_base64("short").is_err());
    }
}
