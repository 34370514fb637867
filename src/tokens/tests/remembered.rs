//! Verified tokens are remembered (`tokens::verified`): a hit skips only
//! the signature, never the checks that time or settings can change, and
//! nothing that failed is remembered.

use super::{issue, ring, settings, t0};
use crate::tokens::{verified::CAPACITY, TokenError, EXP_LEEWAY_SECS};
use chrono::TimeDelta;

#[test]
fn a_verified_token_is_remembered_and_still_expires_on_time() {
    let keys = ring(1);
    let token = issue(&keys);
    let first = keys.verify(&settings(), t0(), &token).unwrap();
    assert_eq!(keys.verified.len(), 1);
    let again = keys.verify(&settings(), t0(), &token).unwrap();
    assert_eq!(first, again);
    assert_eq!(keys.verified.len(), 1);
    // The expiry is checked on the remembered claims too.
    let past = t0() + settings().ttl + TimeDelta::seconds(EXP_LEEWAY_SECS + 1);
    assert_eq!(
        keys.verify(&settings(), past, &token),
        Err(TokenError::Expired)
    );
}

#[test]
fn a_remembered_token_is_checked_against_other_settings_in_full() {
    let keys = ring(1);
    let token = issue(&keys);
    keys.verify(&settings(), t0(), &token).unwrap();
    let mut other = settings();
    other.audience = "another-api".into();
    assert_eq!(
        keys.verify(&other, t0(), &token),
        Err(TokenError::InvalidClaims)
    );
}

#[test]
fn what_fails_is_never_remembered() {
    let keys = ring(1);
    let token = issue(&keys);
    // A flipped bit in the signature: refused, and not remembered.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(keys.verify(&settings(), t0(), &forged).is_err());
    // Verified too late: refused, and not remembered either.
    let past = t0() + settings().ttl + TimeDelta::seconds(EXP_LEEWAY_SECS + 1);
    assert!(keys.verify(&settings(), past, &token).is_err());
    assert_eq!(keys.verified.len(), 0);
    // A token verified by another ring (another process, or this one
    // restarted without its key) is unknown there.
    keys.verify(&settings(), t0(), &token).unwrap();
    let restarted = ring(1);
    assert_eq!(
        restarted.verify(&settings(), t0(), &token),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn the_memory_is_bounded() {
    use crate::tokens::verified::{Verified, VerifiedTokens};
    let keys = ring(1);
    let token = issue(&keys);
    let claims = keys.verify(&settings(), t0(), &token).unwrap();
    let now = t0().timestamp();
    let full = |memory: &VerifiedTokens| {
        for i in 0..CAPACITY as u64 {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&i.to_le_bytes());
            let seen = Verified {
                claims: claims.clone(),
                nbf: None,
            };
            memory.insert(digest, seen, now);
        }
        assert_eq!(memory.len(), CAPACITY);
    };
    let one = || Verified {
        claims: claims.clone(),
        nbf: None,
    };
    // Full of live entries: it starts over rather than grow.
    let memory = VerifiedTokens::default();
    full(&memory);
    memory.insert([0xff; 32], one(), now);
    assert_eq!(memory.len(), 1);
    // Full, and all expired by now: they make room.
    let memory = VerifiedTokens::default();
    full(&memory);
    let later = now + settings().ttl.num_seconds() + EXP_LEEWAY_SECS + 1;
    memory.insert([0xff; 32], one(), later);
    assert_eq!(memory.len(), 1);
}
