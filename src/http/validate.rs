//! Custom field rules for `validator`, shared by request DTOs.

use serde::{Deserialize, Deserializer};
use validator::ValidationError;

/// For an optional member that may be left out but is never `null`
/// (`#[serde(default, deserialize_with = "validate::non_null")]`): serde
/// reads `null` into `Option` as "absent", which the spec does not allow,
/// so `null` here is a 422 `invalid_type` like any other wrong type.
pub fn non_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// For an optional member where `null` means "clear it" and leaving it
/// out means "keep it" (`#[serde(default, deserialize_with =
/// "validate::present")]` on an `Option<Option<T>>`): `Some(None)` is a
/// `null` that was sent, `None` a member left out.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// For an optional whole-number member that is never `null`, and that may be
/// written with a zero fraction (`30.0`): JSON Schema's `integer` admits
/// it, so the spec promises it; serde's integer types would refuse it.
pub fn whole_number<'de, D>(d: D) -> Result<Option<i64>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // Exactly representable whole numbers only (|v| < 2^53).
            if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
                #[allow(clippy::cast_possible_truncation)]
                Ok(v as i64)
            } else {
                Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_any(Whole).map(Some)
}

fn error(code: &'static str, message: &'static str) -> ValidationError {
    let mut e = ValidationError::new(code);
    e.message = Some(message.into());
    e
}

/// Free text shown to people (device names, display names): no control
/// characters, which could forge log lines or confuse other clients.
pub fn no_control_chars(value: &str) -> Result<(), ValidationError> {
    if value.chars().any(char::is_control) {
        return Err(error(
            "control_characters",
            "Control characters are not allowed.",
        ));
    }
    Ok(())
}

/// Free text shown to staff (a request's reason, a staff note): no
/// bidirectional controls (U+202E RLO and the other embeddings, overrides,
/// isolates and marks), which could make the text read differently from
/// what it is. Joiners and other invisible characters used by emoji stay.
pub fn no_bidi_controls(value: &str) -> Result<(), ValidationError> {
    let bidi = |c: char| {
        matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
    };
    if value.chars().any(bidi) {
        return Err(error(
            "bidi_characters",
            "Text direction control characters are not allowed.",
        ));
    }
    Ok(())
}

/// Longer free text (a note's body): like [`no_control_chars`], but line
/// feeds and tabs are allowed.
pub fn no_control_chars_but_newline_and_tab(value: &str) -> Result<(), ValidationError> {
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(error(
            "control_characters",
            "Control characters other than newline and tab are not allowed.",
        ));
    }
    Ok(())
}

pub fn platform(value: &str) -> Result<(), ValidationError> {
    match value {
        "ios" | "android" | "web" => Ok(()),
        _ => Err(error("platform", "Must be ios, android or web.")),
    }
}

/// Six ASCII digits.
pub fn six_digits(value: &str) -> Result<(), ValidationError> {
    if value.len() == 6 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(error("code_format", "Enter the 6-digit code."))
    }
}

/// A phone number in E.164: `+`, a country code not starting with 0, and
/// at most 15 digits in all (ITU-T E.164 §6).
pub fn e164(value: &str) -> Result<(), ValidationError> {
    let digits = value.strip_prefix('+').unwrap_or("");
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(error(
            "phone_format",
            "Use the international format, e.g. +447700900123.",
        ))
    }
}

/// An ISO 3166-1 alpha-2 country code in upper case (`GB`, `DE`).
pub fn country_code(value: &str) -> Result<(), ValidationError> {
    if value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(error(
            "country_code",
            "Use the two-letter ISO 3166-1 code, e.g. GB.",
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Days {
        #[serde(default, deserialize_with = "whole_number")]
        days: Option<i64>,
    }

    #[test]
    fn a_whole_number_may_carry_a_zero_fraction_but_nothing_else() {
        let days = |json: &str| serde_json::from_str::<Days>(json).map(|d| d.days);
        assert_eq!(days(r#"{"days": 30}"#).unwrap(), Some(30));
        assert_eq!(days(r#"{"days": 261.0}"#).unwrap(), Some(261));
        assert_eq!(days(r#"{"days": -2.0}"#).unwrap(), Some(-2));
        assert_eq!(days("{}").unwrap(), None);
        for refused in [
            r#"{"days": 30.5}"#,
            r#"{"days": null}"#,
            r#"{"days": "30"}"#,
            r#"{"days": 1e300}"#,
            r#"{"days": 18446744073709551615}"#,
        ] {
            assert!(days(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn rules_accept_and_refuse_what_they_say() {
        assert!(no_control_chars("Ada's iPhone").is_ok());
        assert!(no_control_chars("evil\nline").is_err());
        assert!(no_control_chars("\u{1b}[31mred").is_err());
        assert!(no_bidi_controls("Ada's app 👨‍👩‍👧").is_ok());
        assert!(no_bidi_controls("evil\u{202E}txt.exe").is_err());
        assert!(no_control_chars_but_newline_and_tab("two\nlines\tand a tab").is_ok());
        assert!(no_control_chars_but_newline_and_tab("carriage\rreturn").is_err());
        assert!(no_control_chars_but_newline_and_tab("nul\0").is_err());
        assert!(platform("ios").is_ok());
        assert!(platform("IOS").is_err());
        assert!(six_digits("012345").is_ok());
        assert!(six_digits("12345").is_err());
        assert!(six_digits("１２３４５６").is_err());
    }
}
