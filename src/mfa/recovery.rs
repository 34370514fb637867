//! Recovery codes: ten single-use codes of 60 random bits each, shown once.
//!
//! Twelve characters from Crockford's base32 alphabet (no I, L, O, U, so
//! nothing is misread), grouped `XXXX-XXXX-XXXX`. Input is forgiving
//! (case, dashes, spaces and look-alikes fold), storage is strict: an HMAC
//! under the current key of `CODE_HMAC_KEYS` bound to the user, stored with
//! that key's id, consumed with `UPDATE … WHERE used_at IS NULL`. A typed
//! code is matched against each stored MAC under that MAC's own key
//! ([`candidates`]), so codes printed before a key rotation keep working
//! until they are used or regenerated.

use crate::{
    crypto::{random, CodeMac},
    keys::Keys,
};
use uuid::Uuid;

pub const COUNT: usize = 10;
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CHARS: usize = 12;

/// Ten fresh codes, formatted for display.
pub fn generate() -> Vec<String> {
    (0..COUNT)
        .map(|_| {
            let bytes = random::random_bytes::<CHARS>();
            let chars: String = bytes
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
                .collect();
            format!("{}-{}-{}", &chars[0..4], &chars[4..8], &chars[8..12])
        })
        .collect()
}

/// Canonical form of typed input; `None` when it cannot be a code.
pub fn normalize(input: &str) -> Option<String> {
    let folded: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    (folded.len() == CHARS && folded.bytes().all(|b| ALPHABET.contains(&b))).then_some(folded)
}

const PURPOSE: &str = "recovery_code";

/// The MAC to store for a new code, under the current key.
pub fn hash(keys: &Keys, user_id: Uuid, normalized: &str) -> CodeMac {
    keys.codes.hash(PURPOSE, &user_id.to_string(), normalized)
}

/// The typed code's MAC under every key of the ring, each with its key id:
/// a stored code matches when both its key id and its MAC are among these.
pub fn candidates(keys: &Keys, user_id: Uuid, normalized: &str) -> Vec<CodeMac> {
    keys.codes
        .candidates(PURPOSE, &user_id.to_string(), normalized)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_ten_distinct_readable_groups_of_sixty_bits() {
        let codes = generate();
        assert_eq!(codes.len(), COUNT);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), COUNT);
        for c in &codes {
            assert_eq!(c.len(), 14);
            assert_eq!(normalize(c).unwrap().len(), 12); // 12 × 5 bits = 60 bits
        }
    }

    #[test]
    fn typed_input_folds_case_dashes_and_look_alikes() {
        assert_eq!(normalize("abcd-efgh-jkmn").as_deref(), Some("ABCDEFGHJKMN"));
        assert_eq!(normalize("o1l0 abcd efgh").as_deref(), Some("0110ABCDEFGH"));
        assert_eq!(normalize("short"), None);
        assert_eq!(normalize("UUUU-UUUU-UUUU"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn normalize_never_panics_and_is_idempotent(input in proptest::prelude::any::<String>()) {
            if let Some(once) = normalize(&input) {
                proptest::prop_assert_eq!(once.len(), CHARS);
                proptest::prop_assert_eq!(normalize(&once), Some(once));
            }
        }

        #[test]
        fn a_code_typed_sloppily_is_the_same_code(
            index in 0usize..COUNT,
            lower in proptest::collection::vec(proptest::prelude::any::<bool>(), 14),
            sep in proptest::sample::select(vec!["", " ", "-", "  ", " - "]),
        ) {
            let code = generate().swap_remove(index);
            let canonical = normalize(&code).unwrap();
            proptest::prop_assert_eq!(&canonical, &code.replace('-', ""));
            // Lower case, other separators, O for 0 and I/L for 1 fold back.
            let typed: String = code
                .split('-')
                .collect::<Vec<_>>()
                .join(sep)
                .chars()
                .zip(lower.iter().cycle())
                .map(|(c, low)| match c {
                    '0' if *low => 'o',
                    '1' if *low => 'l',
                    c if *low => c.to_ascii_lowercase(),
                    c => c,
                })
                .collect();
            proptest::prop_assert_eq!(normalize(&typed), Some(canonical));
        }

        #[test]
        fn a_truncated_or_extended_code_is_not_a_code(index in 0usize..COUNT, cut in 0usize..CHARS, extra in "[0-9A-Z]{1,3}") {
            let canonical = normalize(&generate().swap_remove(index)).unwrap();
            proptest::prop_assert_eq!(normalize(&canonical[..cut]), None);
            let extended = format!("{canonical}{extra}");
            proptest::prop_assert_eq!(normalize(&extended), None);
        }
    }
}
