//! Hashing of bearer secrets before they are stored, and constant-time
//! comparison of the results.
//!
//! The threat is a database dump turning into working credentials. High-entropy
//! tokens (refresh tokens, 256 random bits) are safe under plain SHA-256:
//! nobody can enumerate 2^256 preimages. Short codes are not: a 6-digit email
//! code has a million values and a plain hash of it falls to a loop in
//! milliseconds. Those go through [`CodeHasher`], an HMAC under a server key
//! that is not in the database, so a dump alone is useless. The purpose and
//! subject are bound into the MAC so a code issued for one user or one flow
//! cannot be replayed against another. The server keys form a ring
//! (`CODE_HMAC_KEYS`), and each MAC is stored with its key's id so that a
//! rotation leaves every code already handed out working.

use std::fmt;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::keyring::{Key, KEY_LEN};
use super::mac_ring::{MacKeyId, MacKeyRing};
use super::CryptoError;

const CODE_DOMAIN: &[u8] = b"mobile-backend/code/v1";

/// SHA-256 block size: HMAC zero-pads shorter keys to this length.
const HMAC_BLOCK_LEN: usize = 64;

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of a high-entropy token, for storing refresh tokens and the like.
/// Do not use for anything a human types: see [`CodeHasher`].
pub fn hash_token(token: &str) -> Vec<u8> {
    sha256(token.as_bytes()).to_vec()
}

/// Compares in time that depends only on the lengths, so a byte-by-byte
/// timing probe learns nothing. Different lengths are simply unequal (all our
/// digests have a public, fixed length, so leaking it costs nothing).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A code's MAC and the id of the key that made it; store both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeMac {
    pub key_id: MacKeyId,
    pub mac: Vec<u8>,
}

/// Keyed hashing for short, low-entropy codes (email codes, recovery
/// codes), under a ring of keys (`CODE_HMAC_KEYS`): new MACs use the
/// current key, and a stored MAC is checked with the key it names, so
/// rotating the key invalidates no code already handed out.
#[derive(Clone)]
pub struct CodeHasher(MacKeyRing);

impl CodeHasher {
    pub fn new(ring: MacKeyRing) -> Self {
        Self(ring)
    }

    /// One fresh key (id 1).
    pub fn generate() -> Self {
        Self(MacKeyRing::generate())
    }

    /// `CODE_HMAC_KEYS`: `id:base64[,id:base64…]`, current first.
    pub fn parse(spec: &str) -> Result<Self, CryptoError> {
        MacKeyRing::parse(spec).map(Self)
    }

    /// `CODE_HMAC_KEY`, the single-key form: a ring of one key, id 1.
    pub fn single_from_base64(encoded: &str) -> Result<Self, CryptoError> {
        MacKeyRing::single_from_base64(encoded).map(Self)
    }

    pub fn ring(&self) -> &MacKeyRing {
        &self.0
    }

    pub fn current_id(&self) -> MacKeyId {
        self.0.current_id()
    }

    /// HMAC-SHA-256 under the current key over `purpose`, `subject` and
    /// `code`, each length-prefixed so that no two different triples produce
    /// the same MAC input. The code is hashed as given: normalise it (trim,
    /// strip dashes, case) first.
    pub fn hash(&self, purpose: &str, subject: &str, code: &str) -> CodeMac {
        let (key_id, key) = self.0.current();
        CodeMac {
            key_id,
            mac: mac_under(key, purpose, subject, code),
        }
    }

    /// The MAC under every key of the ring, current first: what a lookup by
    /// MAC matches (each paired with its key id, so a MAC only ever matches
    /// a row stored under the same key).
    pub fn candidates(&self, purpose: &str, subject: &str, code: &str) -> Vec<CodeMac> {
        self.0
            .entries()
            .map(|(key_id, key)| CodeMac {
                key_id,
                mac: mac_under(key, purpose, subject, code),
            })
            .collect()
    }

    /// Whether `code` matches `stored`, a MAC made under key `key_id`,
    /// compared in constant time. False when that key has left the ring.
    pub fn verify(&self, stored: &CodeMac, purpose: &str, subject: &str, code: &str) -> bool {
        self.0.get(stored.key_id).is_some_and(|key| {
            constant_time_eq(&stored.mac, &mac_under(key, purpose, subject, code))
        })
    }
}

fn mac_under(key: &Key, purpose: &str, subject: &str, code: &str) -> Vec<u8> {
    let mut mac = hmac_sha256(key);
    update_prefixed(&mut mac, CODE_DOMAIN);
    update_prefixed(&mut mac, purpose.as_bytes());
    update_prefixed(&mut mac, subject.as_bytes());
    update_prefixed(&mut mac, code.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

impl fmt::Debug for CodeHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodeHasher({:?})", self.0)
    }
}

/// An HMAC-SHA-256 instance keyed with `key`.
///
/// `Hmac::new_from_slice` returns a `Result` even though HMAC accepts any key
/// length; padding the key to the block size ourselves (exactly what HMAC does
/// internally) lets us use the infallible constructor and keep `unwrap` out.
pub(crate) fn hmac_sha256(key: &Key) -> Hmac<Sha256> {
    let mut block = Zeroizing::new([0u8; HMAC_BLOCK_LEN]);
    if let Some(head) = block.first_chunk_mut::<KEY_LEN>() {
        head.copy_from_slice(key.expose());
    }
    <Hmac<Sha256> as KeyInit>::new((&*block).into())
}

/// Feeds `bytes` preceded by its length as a big-endian u64, so that
/// consecutive fields cannot run into each other ("ab"+"c" vs "a"+"bc").
pub(crate) fn update_prefixed(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(bytes);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash_token("abc"), sha256(b"abc").to_vec());
    }

    #[test]
    fn hash_token_differs_per_token() {
        assert_ne!(hash_token("token-a"), hash_token("token-b"));
        assert_eq!(hash_token("token-a").len(), 32);
    }

    #[test]
    fn hmac_helper_matches_the_reference_constructor() {
        let key = Key::generate();
        let mut ours = hmac_sha256(&key);
        let mut reference = <Hmac<Sha256> as hmac::Mac>::new_from_slice(key.expose()).unwrap();
        ours.update(b"message");
        reference.update(b"message");
        assert_eq!(
            ours.finalize().into_bytes(),
            reference.finalize().into_bytes()
        );
    }

    #[test]
    fn hmac_helper_matches_rfc4231_case_2() {
        // RFC 4231 test case 2 uses a 4-byte key; we only take 32-byte keys, so
        // check the padding rule against the reference with a zero-padded key.
        let mut padded = [0u8; KEY_LEN];
        padded[..4].copy_from_slice(b"Jefe");
        let mut mac = hmac_sha256(&Key::from_bytes(padded));
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn one(byte: u8) -> CodeHasher {
        CodeHasher::single_from_base64(&Key::from_bytes([byte; KEY_LEN]).to_base64()).unwrap()
    }

    #[test]
    fn code_hash_is_deterministic_and_keyed() {
        let hasher = CodeHasher::generate();
        let a = hasher.hash("email_verification", "user-1", "004271");
        assert_eq!(a, hasher.hash("email_verification", "user-1", "004271"));
        assert_eq!(a.mac.len(), 32);
        assert_eq!(a.key_id, 1);
        let other = CodeHasher::generate();
        assert_ne!(a, other.hash("email_verification", "user-1", "004271"));
        assert_ne!(a.mac, sha256(b"004271").to_vec());
    }

    #[test]
    fn code_hash_binds_purpose_subject_and_code() {
        let hasher = CodeHasher::generate();
        let mac = |p: &str, s: &str, c: &str| hasher.hash(p, s, c).mac;
        let base = mac("email_verification", "user-1", "004271");
        assert_ne!(base, mac("password_reset", "user-1", "004271"));
        assert_ne!(base, mac("email_verification", "user-2", "004271"));
        assert_ne!(base, mac("email_verification", "user-1", "004272"));
        // Shifting bytes between fields must not collide.
        assert_ne!(mac("ab", "c", "d"), mac("a", "bc", "d"));
        assert_ne!(mac("a", "bc", "d"), mac("a", "b", "cd"));
        assert_ne!(mac("", "ab", ""), mac("ab", "", ""));
    }

    #[test]
    fn a_mac_verifies_under_its_own_key_while_that_key_is_in_the_ring() {
        let old = one(1);
        let issued = old.hash("recovery_code", "user-1", "ABCD");
        let b64 = |byte: u8| Key::from_bytes([byte; KEY_LEN]).to_base64();
        let rotated = CodeHasher::parse(&format!("2:{},1:{}", b64(2), b64(1))).unwrap();
        assert_eq!(rotated.current_id(), 2);
        assert!(rotated.verify(&issued, "recovery_code", "user-1", "ABCD"));
        assert!(!rotated.verify(&issued, "recovery_code", "user-1", "ABCE"));
        assert!(!rotated.verify(&issued, "recovery_code", "user-2", "ABCD"));
        // The id is part of the check: the same bytes claimed by another key fail.
        let relabelled = CodeMac {
            key_id: 2,
            mac: issued.mac.clone(),
        };
        assert!(!rotated.verify(&relabelled, "recovery_code", "user-1", "ABCD"));
        let candidates = rotated.candidates("recovery_code", "user-1", "ABCD");
        assert_eq!(candidates.len(), 2);
        assert_eq!(candidates[0].key_id, 2);
        assert_eq!(candidates[1], issued);
        // Without the old key the old MAC no longer verifies.
        let new_only = CodeHasher::parse(&format!("2:{}", b64(2))).unwrap();
        assert!(!new_only.verify(&issued, "recovery_code", "user-1", "ABCD"));
    }

    #[test]
    fn code_hasher_spec_round_trips_and_redacts() {
        let hasher = CodeHasher::generate();
        let again = CodeHasher::parse(&hasher.ring().to_spec()).unwrap();
        assert_eq!(hasher.hash("p", "s", "c"), again.hash("p", "s", "c"));
        let debug = format!("{hasher:?}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!debug.contains(&hasher.ring().to_spec()[2..]), "{debug}");
        assert!(matches!(
            CodeHasher::single_from_base64("AAAA"),
            Err(CryptoError::InvalidKey(_))
        ));
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"same", b"same"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"same", b"sane"));
        assert!(!constant_time_eq(b"same", b"same-but-longer"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    // Refresh and MFA tokens are opaque: the server looks up the SHA-256
    // of what the client sends (`hash_token`), and email and recovery
    // codes are checked by `CodeHasher::verify`. Whatever a client sends,
    // these answer without panicking, and only the exact value matches.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn an_issued_token_matches_only_itself(
            bytes in 16usize..64,
            index in proptest::prelude::any::<proptest::sample::Index>(),
            replacement in proptest::prelude::any::<char>(),
        ) {
            let token = crate::crypto::random::token(bytes);
            let stored = hash_token(&token);
            proptest::prop_assert!(constant_time_eq(&stored, &hash_token(&token)));
            // One character changed, one dropped, one added: another row.
            let at = index.index(token.len());
            let mut altered = token.clone();
            altered.replace_range(at..=at, &replacement.to_string());
            proptest::prop_assume!(altered != token);
            proptest::prop_assert!(!constant_time_eq(&stored, &hash_token(&altered)));
            proptest::prop_assert!(!constant_time_eq(&stored, &hash_token(&token[..at])));
            let extended = format!("{token}{replacement}");
            proptest::prop_assert!(!constant_time_eq(&stored, &hash_token(&extended)));
        }

        #[test]
        fn hash_token_takes_any_text(text in proptest::prelude::any::<String>()) {
            proptest::prop_assert_eq!(hash_token(&text).len(), 32);
        }

        #[test]
        fn a_code_verifies_only_for_its_purpose_subject_and_value(
            code in "[0-9]{6}",
            other in proptest::prelude::any::<String>(),
            subject in proptest::prelude::any::<u128>(),
        ) {
            let hasher = CodeHasher::generate();
            let subject = uuid::Uuid::from_u128(subject).to_string();
            let stored = hasher.hash("email_verification", &subject, &code);
            proptest::prop_assert!(hasher.verify(&stored, "email_verification", &subject, &code));
            proptest::prop_assert_eq!(
                hasher.verify(&stored, "email_verification", &subject, &other),
                other == code
            );
            proptest::prop_assert!(!hasher.verify(&stored, "password_reset", &subject, &code));
            let other_subject = format!("{subject}x");
            proptest::prop_assert!(!hasher.verify(&stored, "email_verification", &other_subject, &code));
            // Truncated or extended input never matches.
            proptest::prop_assert!(!hasher.verify(&stored, "email_verification", &subject, &code[..5]));
            let longer = format!("{code}0");
            proptest::prop_assert!(!hasher.verify(&stored, "email_verification", &subject, &longer));
            // A key that left the ring matches nothing.
            proptest::prop_assert!(!CodeHasher::generate().verify(&stored, "email_verification", &subject, &code));
        }
    }
}
