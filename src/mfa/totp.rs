//! RFC 6238 TOTP through `totp-rs`: SHA-1, 6 digits, 30-second steps,
//! accepting the previous and next step for clock drift.
//!
//! Time comes from the service clock, never from `SystemTime`, so tests
//! move through steps exactly. This module only answers "which step does
//! this code match?"; accepting a step at most once is the database's job
//! (`last_used_step` only moves forward).

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Secret, Totp};

pub const DIGITS: usize = 6;
pub const STEP_SECONDS: u64 = 30;
/// Secrets are 160 bits, the size RFC 4226 recommends for HMAC-SHA-1.
pub const SECRET_BYTES: usize = 20;

fn totp(secret: &[u8], digits: usize, label: Option<(&str, &str)>) -> Option<Totp> {
    let mut builder = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(u8::try_from(digits).ok()?)
        .with_skew(1)
        .with_step_duration(STEP_SECONDS)
        .with_secret(Secret::from(secret.to_vec()));
    if let Some((issuer, account)) = label {
        builder = builder
            .with_issuer(Some(issuer.replace(':', " ")))
            .with_account_name(account.replace(':', " "));
    }
    // `build` enforces RFC 4226's 128-bit minimum; our secrets are 160 bits
    // (the RFC 6238 test seed too).
    builder.build().ok()
}

/// The code for the step containing `unix_time`.
pub fn code_at(secret: &[u8], unix_time: u64, digits: usize) -> Option<String> {
    totp(secret, digits, None).map(|t| t.generate(unix_time).to_string())
}

/// The time step of `unix_time`.
pub fn step_of(unix_time: u64) -> u64 {
    unix_time / STEP_SECONDS
}

/// The step (current, previous or next) whose code equals `code`, compared
/// in constant time; `None` when none does.
pub fn matching_step(secret: &[u8], unix_time: u64, code: &str) -> Option<u64> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = step_of(unix_time);
    let mut found = None;
    // Check all three steps every time: timing does not reveal which matched.
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = code_at(secret, step * STEP_SECONDS, DIGITS)?;
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// `otpauth://totp/…` for authenticator apps.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> Option<String> {
    totp(secret, DIGITS, Some((issuer, account)))?.to_url().ok()
}

/// The secret as RFC 4648 base32 without padding (what people type in).
pub fn secret_base32(secret: &[u8]) -> String {
    Secret::from(secret.to_vec()).to_base32()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Compiles only while totp-rs wipes its copies of the secret on drop
    /// (its `zeroize` feature).
    #[test]
    fn totp_rs_wipes_its_copies_of_the_secret() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<Totp>();
        wiped_on_drop::<Secret>();
    }

    /// RFC 6238 Appendix B, SHA-1 rows (8 digits, seed "12345678901234567890").
    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        let seed = b"12345678901234567890";
        for (time, expected) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at(seed, time, 8).unwrap(), expected, "T={time}");
        }
    }

    #[test]
    fn a_code_matches_its_own_and_neighbouring_steps_only() {
        let secret = [7u8; SECRET_BYTES];
        let t = 1_700_000_000;
        let code = code_at(&secret, t, DIGITS).unwrap();
        assert_eq!(matching_step(&secret, t, &code), Some(step_of(t)));
        assert_eq!(
            matching_step(&secret, t + 30, &code),
            Some(step_of(t)),
            "one step late"
        );
        assert_eq!(
            matching_step(&secret, t - 30, &code),
            Some(step_of(t)),
            "one step early"
        );
        assert_eq!(
            matching_step(&secret, t + 60, &code),
            None,
            "two steps away"
        );
        assert_eq!(matching_step(&secret, t, "12345"), None);
        assert_eq!(matching_step(&secret, t, "abcdef"), None);
    }

    #[test]
    fn the_uri_names_issuer_account_and_parameters() {
        let uri = otpauth_uri(&[1u8; SECRET_BYTES], "Mobile Backend", "ada@example.com").unwrap();
        assert!(uri.starts_with("otpauth://totp/"));
        assert!(uri.contains("issuer=Mobile%20Backend") || uri.contains("issuer=Mobile+Backend"));
        assert!(uri.contains(&secret_base32(&[1u8; SECRET_BYTES])));
    }
}
