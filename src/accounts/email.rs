//! Email addresses: normalised once, here, and looked up only through the
//! blind index.
//!
//! Trim, Unicode NFKC, lower-case and (for the domain) IDNA happen in
//! exactly one function, so the address that is indexed, compared,
//! encrypted and mailed is always the same string: two spellings of one
//! address can never become two accounts (or bypass a lock-out on one of
//! them).
//!
//! The domain is canonicalised with UTS 46 (the `idna` crate) to its ASCII
//! form: `bücher.example` and `xn--bcher-kva.example` are one address, and
//! the punycode form is what is indexed, stored and mailed (any mail
//! server accepts it, no SMTPUTF8 needed). The local part must be ASCII
//! after NFKC (the `validator` rule; fullwidth letters fold to ASCII). An
//! address holding an invisible or direction
//! changing code point (zero-width space, joiners, soft hyphen, RLO, the
//! bidi isolates, any default-ignorable code point) is refused rather than
//! silently cleaned: it is a look-alike by construction.

use crate::{crypto::BlindIndex, error::ApiError, keys::Keys};
use unicode_normalization::UnicodeNormalization;
use validator::ValidateEmail;

/// Blind-index context of `users.email` (and of a pending new address),
/// so this index is unrelated to any other HMAC of the same address.
pub const BLIND_INDEX_CONTEXT: &str = "users.email";

/// A syntactically valid, normalised address.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

impl Email {
    /// Normalises and validates; `field` names the request field in errors
    /// (422 with the field code `invalid_email`).
    pub fn parse(raw: &str, field: &str) -> Result<Self, ApiError> {
        let invalid =
            || ApiError::invalid_field(field, "invalid_email", "Enter a valid email address.");
        let trimmed = raw.trim();
        if trimmed.chars().any(is_invisible_or_bidi) {
            return Err(invalid());
        }
        let folded: String = trimmed.nfkc().collect::<String>().to_lowercase();
        let Some((local, domain)) = folded.rsplit_once('@') else {
            return Err(invalid());
        };
        // UTS 46: maps the domain (case, width, compatibility forms) and
        // encodes it as punycode; fails on what IDNA forbids.
        let domain = idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::URL)
            .map_err(|_| invalid())?;
        let normalised = format!("{local}@{domain}");
        let local_ok = !local.is_empty() && local.len() <= 64 && domain.contains('.');
        if normalised.len() > 254
            || !local_ok
            || normalised.chars().any(char::is_control)
            || normalised.chars().any(is_invisible_or_bidi)
            || !normalised.validate_email()
        {
            return Err(invalid());
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

    /// The index to store: HMAC-SHA-256 under the current blind-index key,
    /// with that key's id.
    pub fn blind_index(&self, keys: &Keys) -> BlindIndex {
        stored_blind_index(keys, &self.0)
    }

    /// What a lookup matches (`email_blind_index = ANY(…)`): the index
    /// under every key of the ring, so an account indexed under an older
    /// key is still found, and still taken, until `keys reindex` has moved
    /// it to the current key.
    pub fn lookup(&self, keys: &Keys) -> Vec<Vec<u8>> {
        keys.blind_index.lookup(BLIND_INDEX_CONTEXT, &self.0)
    }
}

/// The index of an address as stored (already normalised: it was an
/// [`Email`] when it was sealed), under the current key; for `keys
/// reindex`, which reads addresses back from their ciphertext.
pub fn stored_blind_index(keys: &Keys, normalised: &str) -> BlindIndex {
    keys.blind_index.compute(BLIND_INDEX_CONTEXT, normalised)
}

/// Default-ignorable code points (Unicode's `Default_Ignorable_Code_Point`,
/// which includes the zero-width characters, joiners, the soft hyphen and
/// variation selectors) and the bidirectional controls (embeddings,
/// overrides such as U+202E RLO, isolates U+2066..U+2069, the marks).
pub fn is_invisible_or_bidi(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
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
                Err(ApiError::Validation(e)) => {
                    assert_eq!(e[0].field, "email", "{bad:?}");
                    assert_eq!(e[0].code, "invalid_email", "{bad:?}");
                }
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long, "email").is_err());
    }

    #[test]
    fn a_unicode_domain_and_its_punycode_are_one_address() {
        let keys = Keys::generate().unwrap();
        let unicode = Email::parse("Ada@Bücher.Example", "email").unwrap();
        let puny = Email::parse("ada@xn--bcher-kva.example", "email").unwrap();
        let decomposed = Email::parse("ada@bu\u{0308}cher.example", "email").unwrap();
        assert_eq!(unicode.as_str(), "ada@xn--bcher-kva.example");
        assert_eq!(unicode, puny);
        assert_eq!(unicode, decomposed, "NFKC composes before IDNA");
        assert_eq!(unicode.blind_index(&keys), puny.blind_index(&keys));
        // The local part must be ASCII (after NFKC), as before.
        assert!(Email::parse("jürgen@example.com", "email").is_err());
    }

    #[test]
    fn invisible_and_bidi_code_points_are_refused() {
        for c in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202E}',
            '\u{2060}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{00AD}',
            '\u{FEFF}',
            '\u{061C}',
            '\u{034F}',
            '\u{FE0F}',
            '\u{E0041}',
        ] {
            for bad in [
                format!("ad{c}a@example.com"),
                format!("ada@exa{c}mple.com"),
                format!("ada@b{c}ücher.example"),
            ] {
                match Email::parse(&bad, "email") {
                    Err(ApiError::Validation(e)) => assert_eq!(e[0].code, "invalid_email"),
                    other => panic!("U+{:04X} accepted: {other:?}", c as u32),
                }
            }
        }
        assert!(is_invisible_or_bidi('\u{2069}'));
        assert!(!is_invisible_or_bidi('ü'));
        assert!(Email::parse("ada@xn--zz-.example", "email").is_err());
    }

    #[test]
    fn the_blind_index_is_stable_and_keyed() {
        let keys = Keys::generate().unwrap();
        let other = Keys::generate().unwrap();
        let e = Email::parse("ada@example.com", "email").unwrap();
        assert_eq!(e.blind_index(&keys), e.blind_index(&keys));
        assert_ne!(e.blind_index(&keys), e.blind_index(&other));
        assert_eq!(e.lookup(&keys), vec![e.blind_index(&keys).value.to_vec()]);
        assert_eq!(stored_blind_index(&keys, e.as_str()), e.blind_index(&keys));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn parse_never_panics(raw in proptest::prelude::any::<String>()) {
            let _ = Email::parse(&raw, "email");
        }

        #[test]
        fn normalisation_is_idempotent(raw in proptest::prelude::any::<String>()) {
            // Whatever is accepted is already in normal form: parsing it
            // again gives the same address, so one account has one index.
            if let Ok(once) = Email::parse(&raw, "email") {
                let twice = Email::parse(once.as_str(), "email").unwrap();
                proptest::prop_assert_eq!(once.as_str(), twice.as_str());
            }
        }

        #[test]
        fn idempotent_on_address_shaped_input(
            raw in "[ \t]{0,2}[A-Za-z0-9.+_\u{FF21}-\u{FF3A}-]{1,20}@[A-Za-z0-9\u{00E0}-\u{00FC}-]{1,20}\\.[A-Za-z]{2,6}[ \t]{0,2}",
        ) {
            if let Ok(once) = Email::parse(&raw, "email") {
                let twice = Email::parse(once.as_str(), "email").unwrap();
                proptest::prop_assert_eq!(once.as_str(), twice.as_str());
                proptest::prop_assert!(once.as_str().is_ascii());
                proptest::prop_assert_eq!(once.as_str(), once.as_str().to_lowercase());
            }
        }

        #[test]
        fn spellings_of_one_address_are_one_address(
            local in "[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]",
            domain in "[a-z0-9]{1,12}\\.[a-z]{2,6}",
            upper in proptest::collection::vec(proptest::prelude::any::<bool>(), 64),
            pad in "[ \t\n]{0,3}",
        ) {
            let plain = format!("{local}@{domain}");
            proptest::prop_assume!(Email::parse(&plain, "email").is_ok());
            // Random case and surrounding whitespace change nothing.
            let shouted: String = plain
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect();
            let spelled = format!("{pad}{shouted}{pad}");
            let a = Email::parse(&plain, "email").unwrap();
            let b = Email::parse(&spelled, "email").unwrap();
            proptest::prop_assert_eq!(a.as_str(), plain.as_str());
            proptest::prop_assert_eq!(a, b);
        }

        #[test]
        fn an_invisible_code_point_is_refused_wherever_it_sits(
            local in "[a-z]{1,10}",
            domain in "[a-z]{1,10}\\.[a-z]{2,4}",
            at in 0usize..32,
            invisible in proptest::sample::select(vec!['\u{200B}', '\u{200D}', '\u{00AD}', '\u{202E}', '\u{2066}', '\u{FEFF}']),
        ) {
            let mut raw: Vec<char> = format!("{local}@{domain}").chars().collect();
            let at = at.min(raw.len());
            raw.insert(at, invisible);
            let raw: String = raw.into_iter().collect();
            proptest::prop_assert!(Email::parse(&raw, "email").is_err());
        }
    }
}
