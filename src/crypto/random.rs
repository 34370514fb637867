//! Randomness for tokens, codes, nonces and ids.
//!
//! Everything draws from the OS CSPRNG (`OsRng`) directly, never from a
//! user-space generator seeded once: there is no state to fork, snapshot or
//! forget to reseed, and the cost (one syscall) is negligible at API rates.
//! Codes are drawn with `gen_range`, which rejects out-of-range samples
//! instead of reducing modulo 10, so every code is equally likely.
//!
//! These functions return plain values, so they cannot report an OS RNG
//! failure; `OsRng` then panics. On Linux `getrandom(2)` only blocks (until
//! the pool is seeded at boot) and does not fail, so that path is
//! theoretical. Sealing, which can return an error, uses the fallible API.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::{Rng as _, RngCore as _};
use zeroize::Zeroizing;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// `bytes` random bytes as base64url without padding, safe in URLs, headers
/// and JSON. 32 bytes = 256 bits, the right size for session and refresh
/// tokens (43 characters).
pub fn token(bytes: usize) -> String {
    let mut raw = Zeroizing::new(vec![0u8; bytes]);
    OsRng.fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(&*raw)
}

/// A uniformly random code of `digits` decimal digits, leading zeros kept
/// (6 digits: "000000" to "999999", e.g. "004271").
///
/// Each digit is an independent uniform draw from 0..10, which is the same
/// distribution as one draw from 0..10^digits zero-padded, but works for any
/// length without overflow and without a padding step to get wrong.
pub fn numeric_code(digits: u32) -> String {
    (0..digits)
        .map(|_| char::from(b'0' + OsRng.gen_range(0..10u8)))
        .collect()
}

/// A time-ordered UUID (version 7) for primary keys: sequential inserts keep
/// B-tree indexes compact, unlike random v4 ids. Its random bits come from
/// the `uuid` crate's OS-backed generator (getrandom), and ids from this
/// process are strictly increasing even within one millisecond. The
/// timestamp makes creation time public, which is acceptable for row ids
/// but means a v7 id must never double as a secret.
pub fn uuid_v7() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn random_bytes_has_requested_length_and_varies() {
        let a: [u8; 32] = random_bytes();
        let b: [u8; 32] = random_bytes();
        assert_ne!(a, b);
        assert_eq!(random_bytes::<0>(), [0u8; 0]);
    }

    #[test]
    fn token_length_and_alphabet() {
        for (bytes, chars) in [(0, 0), (1, 2), (16, 22), (32, 43), (33, 44)] {
            let t = token(bytes);
            assert_eq!(t.len(), chars, "{bytes} bytes");
            assert!(t
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            assert_eq!(URL_SAFE_NO_PAD.decode(&t).unwrap().len(), bytes);
        }
    }

    #[test]
    fn tokens_differ() {
        let tokens: HashSet<String> = (0..100).map(|_| token(32)).collect();
        assert_eq!(tokens.len(), 100);
    }

    #[test]
    fn codes_are_digits_of_the_requested_length() {
        for digits in [0, 1, 6, 8, 25] {
            let code = numeric_code(digits);
            assert_eq!(code.len(), digits as usize);
            assert!(code.bytes().all(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn codes_keep_leading_zeros() {
        // 1 in 10 six-digit codes starts with 0; in 2000 draws missing one is
        // a (0.9^2000) event, i.e. never.
        assert!((0..2000).any(|_| numeric_code(6).starts_with('0')));
        assert!((0..2000).all(|_| numeric_code(6).len() == 6));
    }

    #[test]
    fn every_digit_appears_in_every_position() {
        let mut seen = [[0u32; 10]; 6];
        for _ in 0..2000 {
            for (pos, c) in numeric_code(6).bytes().enumerate() {
                seen[pos][usize::from(c - b'0')] += 1;
            }
        }
        // Expected 200 per cell; a fair generator lands well inside 100..300
        // (about 7 standard deviations each way), a biased one would not.
        for row in seen {
            for count in row {
                assert!((100..300).contains(&count), "{seen:?}");
            }
        }
    }

    #[test]
    fn uuid_v7_is_version_7_and_ordered() {
        let ids: Vec<uuid::Uuid> = (0..100).map(|_| uuid_v7()).collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
