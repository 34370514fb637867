//! Password policy for new and changed passwords, after NIST SP 800-63B §5.1.1.2.
//!
//! Threat: online and offline guessing with the passwords people actually
//! pick. Length and a block-list of breached passwords stop that; composition
//! rules ("one digit, one symbol") do not, they only push people towards
//! `Password1!`, so there are none. Every check runs on the NFKC-normalised
//! password so what is checked is exactly what gets hashed, and the length
//! limits are checked first so no attacker-sized input reaches zxcvbn (slow on
//! long inputs) or argon2. zxcvbn is CPU work measured in milliseconds, so
//! request handlers run [`check`] on a password-hashing thread
//! (`PasswordHasher::on_hashing_thread`): never on an async worker serving
//! other requests, and never on more cores than hashing may use.

use std::collections::HashSet;
use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization;
use zxcvbn::Score;

/// NIST asks for at least 8; 12 keeps even a lowercase-only passphrase out of
/// reach of offline cracking at our argon2 cost.
pub const MIN_CHARS: usize = 12;
/// NIST asks to allow at least 64. The cap bounds zxcvbn and argon2 work.
pub const MAX_CHARS: usize = 128;

/// zxcvbn score 3 is "safely unguessable: moderate protection from an offline
/// slow-hash scenario" (< 10^10 guesses are not enough).
const MIN_SCORE: Score = Score::Three;

/// The local part of an email must be at least this long before we refuse
/// passwords containing it: "al" inside a passphrase is a coincidence.
const MIN_LOCAL_PART_CHARS: usize = 3;

/// 30,000 most common passwords, lower-cased, one per line; provenance and
/// licence in `data/README.md`. Compiled in so nothing is fetched at run time,
/// built into a set on first use.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

/// Why a password was refused: `code` is stable for clients to switch on,
/// `message` is a sentence an app can show as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PolicyViolation {
    pub code: &'static str,
    pub message: String,
}

impl PolicyViolation {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Unicode NFKC, so a password typed as fullwidth, composed or decomposed
/// characters on one keyboard matches the same password typed on another.
/// Idempotent, so normalising twice is harmless.
pub fn normalize(password: &str) -> String {
    // Allocated once at NFKC's largest expansion in UTF-8 (×11, UAX #15):
    // a `collect` that grows the string would leave copies of the password
    // behind in the freed smaller buffers, which no caller could wipe.
    let mut out = String::with_capacity(password.len().saturating_mul(11));
    out.extend(password.nfkc());
    out
}

/// Checks a new password for the account with this `email`. `password` may be
/// raw or already normalised: the checks run on `normalize(password)`, which is
/// also what [`super::password::PasswordHasher`] hashes.
pub fn check(password: &str, email: &str) -> Result<(), PolicyViolation> {
    let password = zeroize::Zeroizing::new(normalize(password));
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(PolicyViolation::new(
            "password_too_short",
            format!("Use at least {MIN_CHARS} characters."),
        ));
    }
    if chars > MAX_CHARS {
        return Err(PolicyViolation::new(
            "password_too_long",
            format!("Use at most {MAX_CHARS} characters."),
        ));
    }

    // The list is lower-case, so "PassWord123456" is caught like "password123456".
    let lowered = zeroize::Zeroizing::new(password.to_lowercase());
    if COMMON_PASSWORDS.contains(lowered.as_str()) {
        return Err(PolicyViolation::new(
            "password_common",
            "This password is on a list of passwords leaked in data breaches. Choose a different one.",
        ));
    }

    // The email is the first thing an attacker targeting this account tries.
    let email = normalize(email).to_lowercase();
    let local_part = email
        .rsplit_once('@')
        .map_or(email.as_str(), |(local, _)| local);
    if local_part.chars().count() >= MIN_LOCAL_PART_CHARS && lowered.contains(local_part) {
        return Err(PolicyViolation::new(
            "password_contains_email",
            "Don't use your email address in your password.",
        ));
    }

    // Catches what the list misses: keyboard walks, repeats, dates, l33t
    // variants of dictionary words and of the user's own email.
    let user_inputs: Vec<&str> = [email.as_str(), local_part]
        .into_iter()
        .filter(|input| !input.is_empty())
        .collect();
    let estimate = zxcvbn::zxcvbn(&password, &user_inputs);
    if estimate.score() < MIN_SCORE {
        let mut message = String::from("This password is too easy to guess.");
        if let Some(feedback) = estimate.feedback() {
            if let Some(warning) = feedback.warning() {
                message.push_str(&format!(" {warning}"));
            }
            for suggestion in feedback.suggestions() {
                message.push_str(&format!(" {suggestion}"));
            }
        }
        return Err(PolicyViolation::new("password_too_weak", message));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn normalising_never_outgrows_its_first_buffer() {
        // U+FDFA is NFKC's largest expansion: 3 bytes to 33.
        for password in [
            "\u{FDFA}".repeat(40),
            "ｐａｓｓｗｏｒｄ".into(),
            String::new(),
        ] {
            let out = normalize(&password);
            assert_eq!(out.capacity(), password.len() * 11, "{password}");
        }
        assert_eq!(normalize("\u{FDFA}").len(), 33);
    }

    const EMAIL: &str = "marguerite.dupont@example.com";

    fn code(password: &str) -> Option<&'static str> {
        check(password, EMAIL).err().map(|violation| violation.code)
    }

    #[test]
    fn strong_passphrase_is_accepted() {
        let password = "tulip-orbit-9-canyon";
        assert!(password.chars().count() >= MIN_CHARS);
        assert_eq!(check(password, EMAIL), Ok(()));
    }

    #[test]
    fn exactly_min_chars_strong_is_accepted() {
        let password = "vq7-lamp-ux3";
        assert_eq!(password.chars().count(), MIN_CHARS);
        assert_eq!(check(password, EMAIL), Ok(()));
    }

    #[test]
    fn too_short() {
        let violation = check("tulip-orbit", EMAIL).unwrap_err();
        assert_eq!(violation.code, "password_too_short");
        assert_eq!(violation.message, "Use at least 12 characters.");
    }

    #[test]
    fn length_counts_chars_not_bytes() {
        // 12 chars but 24 bytes: long enough. 11 chars of 2 bytes: too short.
        assert_ne!(code("éléphantélan"), Some("password_too_short"));
        assert_eq!(code("ééééééééééé"), Some("password_too_short"));
    }

    #[test]
    fn too_long_is_refused_before_zxcvbn() {
        let long = "tulip-orbit-9-canyon-".repeat(7);
        assert_eq!(long.chars().count(), 147);
        assert_eq!(code(&long[..129]), Some("password_too_long"));
        assert_eq!(code(&long[..MAX_CHARS]), None);
        // A megabyte is refused at once rather than handed to zxcvbn.
        let started = std::time::Instant::now();
        assert_eq!(code(&"x".repeat(1 << 20)), Some("password_too_long"));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn common_password_is_refused_in_any_case() {
        assert!(COMMON_PASSWORDS.contains("qazwsxedcrfv"));
        assert_eq!(code("qazwsxedcrfv"), Some("password_common"));
        assert_eq!(code("QazWsxEdcRfv"), Some("password_common"));
        // Fullwidth letters normalise to the listed password too.
        assert_eq!(code("ｑａｚｗｓｘｅｄｃｒｆｖ"), Some("password_common"));
    }

    #[test]
    fn password_containing_email_local_part_is_refused() {
        assert_eq!(
            code("Marguerite.Dupont-likes-kites"),
            Some("password_contains_email")
        );
    }

    #[test]
    fn short_local_part_is_not_matched() {
        // "al" appears in the passphrase, but two characters prove nothing.
        assert_eq!(check("tulip-orbit-9-canyon-al", "al@example.com"), Ok(()));
    }

    #[test]
    fn weak_password_is_refused_with_feedback() {
        let violation = check("aaaaaaaaaaaaaaaa", EMAIL).unwrap_err();
        assert_eq!(violation.code, "password_too_weak");
        assert!(violation
            .message
            .starts_with("This password is too easy to guess. "));
        assert!(violation.message.contains("Repeats like"), "{violation}");
    }

    #[test]
    fn email_variants_count_as_weak() {
        // The local part reversed: no literal match, but zxcvbn knows the user inputs.
        assert_eq!(
            code("tnopud.etireugram"),
            Some("password_too_weak"),
            "reversed user input"
        );
    }

    #[test]
    fn nfkc_normalises_fullwidth_and_composition() {
        let fullwidth = "ｔｕｌｉｐ－ｏｒｂｉｔ－９－ｃａｎｙｏｎ";
        assert_eq!(normalize(fullwidth), "tulip-orbit-9-canyon");
        assert_eq!(check(fullwidth, EMAIL), Ok(()));
        // Precomposed é and e + combining acute become the same string.
        assert_eq!(normalize("caf\u{e9}"), normalize("cafe\u{301}"));
        assert_eq!(normalize(&normalize(fullwidth)), normalize(fullwidth));
    }

    #[test]
    fn bundled_list_is_large_lowercase_and_deduplicated() {
        let lines: Vec<&str> = include_str!("data/common-passwords.txt").lines().collect();
        assert!(COMMON_PASSWORDS.len() >= 20_000);
        assert_eq!(COMMON_PASSWORDS.len(), lines.len());
        assert!(lines.iter().all(|line| *line == line.to_lowercase()));
    }
}
