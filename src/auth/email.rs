//! Email addresses: normalised once, here, and looked up only through the
//! blind index.
//!
//! Trim, Unicode NFKC and lower-case happen in exactly one function, so the
//! address that is indexed, compared, encrypted and mailed is always the
//! same string: two spellings of one address can never become two
//! accounts (or bypass a lock-out on one of them).

use crate::{error::ApiError, keys::Keys};
use unicode_normalization::UnicodeNormalization;
use validator::ValidateEmail;

/// Blind-index context of `users.email`, so this index is unrelated to any
/// other HMAC of the same address.
const BLIND_INDEX_CONTEXT: &str = "users.email";

/// A syntactically valid, normalised address.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

impl Email {
    /// Normalises and validates; `field` names the request field in errors.
    pub fn parse(raw: &str, field: &str) -> Result<Self, ApiError> {
        let normalised: String = raw.trim().nfkc().collect::<String>().to_lowercase();
        let local_ok = normalised.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && local.len() <= 64 && domain.contains('.')
        });
        if normalised.len() > 254
            || !local_ok
            || normalised.chars().any(char::is_control)
            || !normalised.validate_email()
        {
            return Err(ApiError::invalid_field(
                field,
                "email",
                "Enter a valid email address.",
            ));
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@`, for the password policy.
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or("")
    }

    /// The lookup key: HMAC-SHA-256 under the blind-index key.
    pub fn blind_index(&self, keys: &Keys) -> Vec<u8> {
        keys.blind_index
            .compute(BLIND_INDEX_CONTEXT, &self.0)
            .to_vec()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_address_normalise_to_one_string() {
        let a = Email::parse("  Ada.Lovelace@Example.COM ", "email").unwrap();
        let b = Email::parse("ａｄａ.lovelace@example.com", "email").unwrap();
        assert_eq!(a.as_str(), "ada.lovelace@example.com");
        assert_eq!(a, b, "fullwidth letters fold under NFKC");
        assert_eq!(a.local_part(), "ada.lovelace");
    }

    #[test]
    fn invalid_addresses_are_refused_with_the_field_named() {
        for bad in [
            "",
            "no-at-sign",
            "a@b",
            "@example.com",
            "a b@example.com",
            "a\u{0}@example.com",
        ] {
            match Email::parse(bad, "email") {
                Err(ApiError::Validation(e)) => assert_eq!(e[0].field, "email", "{bad:?}"),
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long, "email").is_err());
    }

    #[test]
    fn the_blind_index_is_stable_and_keyed() {
        let keys = Keys::generate().unwrap();
        let other = Keys::generate().unwrap();
        let e = Email::parse("ada@example.com", "email").unwrap();
        assert_eq!(e.blind_index(&keys), e.blind_index(&keys));
        assert_ne!(e.blind_index(&keys), e.blind_index(&other));
    }
}
