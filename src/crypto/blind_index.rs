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
//! Rotating this key means recomputing every index, so it has no key ring.

use std::fmt;

use hmac::Mac as _;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::hash::{hmac_sha256, update_prefixed};
use super::keyring::{Key, KEY_LEN};
use super::CryptoError;

const DOMAIN: &[u8] = b"mobile-backend/blind-index/v1";

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct BlindIndexKey(Key);

impl BlindIndexKey {
    pub fn generate() -> Self {
        Self(Key::generate())
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Key::from_bytes(bytes))
    }

    /// Standard padded base64 of exactly 32 bytes, as for [`Key::from_base64`].
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        Key::from_base64(encoded).map(Self)
    }

    /// The key as base64, for printing a newly generated one. Do not log it.
    pub fn to_base64(&self) -> String {
        self.0.to_base64()
    }

    /// The index of `normalised_value` within `context` (e.g. "users.email").
    ///
    /// Normalisation is the caller's job and must be identical at write and
    /// lookup time (e.g. trim and lowercase an email), or lookups will miss.
    pub fn compute(&self, context: &str, normalised_value: &str) -> [u8; 32] {
        let mut mac = hmac_sha256(&self.0);
        update_prefixed(&mut mac, DOMAIN);
        update_prefixed(&mut mac, context.as_bytes());
        update_prefixed(&mut mac, normalised_value.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for BlindIndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindIndexKey(<redacted>)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let key = BlindIndexKey::generate();
        assert_eq!(
            key.compute("users.email", "alice@example.com"),
            key.compute("users.email", "alice@example.com")
        );
    }

    #[test]
    fn differs_by_value() {
        let key = BlindIndexKey::generate();
        assert_ne!(
            key.compute("users.email", "alice@example.com"),
            key.compute("users.email", "bob@example.com")
        );
    }

    #[test]
    fn differs_by_key() {
        let a = BlindIndexKey::from_bytes([1; KEY_LEN]);
        let b = BlindIndexKey::from_bytes([2; KEY_LEN]);
        assert_ne!(a.compute("users.email", "x"), b.compute("users.email", "x"));
    }

    #[test]
    fn differs_by_context() {
        let key = BlindIndexKey::generate();
        assert_ne!(
            key.compute("users.email", "+15550100"),
            key.compute("users.phone", "+15550100")
        );
    }

    #[test]
    fn no_concatenation_ambiguity() {
        let key = BlindIndexKey::generate();
        assert_ne!(key.compute("ab", "c"), key.compute("a", "bc"));
        assert_ne!(key.compute("", "abc"), key.compute("abc", ""));
    }

    #[test]
    fn is_not_a_plain_hash_of_the_value() {
        let key = BlindIndexKey::generate();
        let index = key.compute("users.email", "alice@example.com");
        assert_ne!(index, crate::crypto::hash::sha256(b"alice@example.com"));
    }

    #[test]
    fn base64_round_trips_and_debug_redacts() {
        let key = BlindIndexKey::generate();
        let again = BlindIndexKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(key.compute("c", "v"), again.compute("c", "v"));
        assert_eq!(format!("{key:?}"), "BlindIndexKey(<redacted>)");
        assert!(BlindIndexKey::from_base64("short").is_err());
    }
}
