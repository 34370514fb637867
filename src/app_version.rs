//! An app's version as phones actually report it (`X-Client-Version`,
//! `MIN_CLIENT_VERSION_*`, the run-time minimums of `PUT
//! /v1/admin/client-policy`): one grammar for all of them.
//!
//! * iOS sends `CFBundleShortVersionString`: one to three numbers
//!   (`2`, `2.3`, `2.3.1`).
//! * Android sends `versionName`, free text that in practice is numbers
//!   with a suffix: `2.3.0-beta.1`, `2.3.0-debug`, `2.3.0+45`, or a date
//!   (`2024.01.15`).
//!
//! The grammar, at most [`MAX_LEN`] characters:
//!
//! ```text
//! version  = number *3("." number) [ "-" tag ] [ "+" tag ]
//! number   = 1*9DIGIT                      ; leading zeros allowed, read as numbers
//! tag      = 1*( ALPHA / DIGIT / "." / "-" )
//! ```
//!
//! Comparison is numeric, part by part, missing parts being 0 (`2.3` ==
//! `2.3.0` == `2.3.0.0`, `2.10` > `2.9`, `2024.01.15` == `2024.1.15`). The
//! pre-release and build tags are **ignored** for the gate: `2.3.0-beta.1`
//! passes a minimum of `2.3.0` (a beta of a release carries that release's
//! fixes; an operator who must shut out a beta raises the minimum past it).
//! Leading zeros are accepted because date-style Android version names use
//! them. Refused: an empty value or an empty part (`2..3`, `2.`), anything
//! but a digit first (`v2.3`), more than four numbers, a number of more
//! than nine digits, an empty or non-alphanumeric tag, whitespace or
//! control characters, more than [`MAX_LEN`] characters.

use std::{cmp::Ordering, fmt};

/// The longest version accepted: the length `sessions.app_version` keeps.
pub const MAX_LEN: usize = 32;

/// The most numeric parts (`1.2.3.4`).
pub const MAX_PARTS: usize = 4;

/// The pattern `openapi.yaml` gives `X-Client-Version` and `min_version`
/// (with `maxLength` [`MAX_LEN`]).
pub const PATTERN: &str = r"^[0-9]{1,9}(\.[0-9]{1,9}){0,3}(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$";

/// A parsed app version: its numbers (padded with zeros) and the text it
/// was given as (shown back unchanged, e.g. in a 426's `min_version`).
/// Equality and order are those of the numbers alone.
#[derive(Clone, Debug)]
pub struct AppVersion {
    parts: [u64; MAX_PARTS],
    text: String,
}

/// Why a version was refused; its `Display` is the problem detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionError {
    Empty,
    TooLong,
    NotANumber,
    TooManyParts,
    NumberTooLong,
    BadTag,
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHAPE: &str = "Use 1 to 4 numbers separated by dots, optionally followed by -tag or +build (for example 2, 2.3, 2.3.0 or 2.3.0-beta.1).";
        let why = match self {
            Self::Empty => "The version is empty.",
            Self::TooLong => "The version is longer than 32 characters.",
            Self::NotANumber => "Each dot-separated part of the version must be a number.",
            Self::TooManyParts => "The version has more than 4 numbers.",
            Self::NumberTooLong => "A number of the version has more than 9 digits.",
            Self::BadTag => "A -tag or +build may hold only letters, digits, dots and hyphens, and may not be empty.",
        };
        write!(f, "{why} {SHAPE}")
    }
}

impl std::error::Error for VersionError {}

impl AppVersion {
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        if text.len() > MAX_LEN {
            return Err(VersionError::TooLong);
        }
        let (core, tags) = match text.find(['-', '+']) {
            Some(i) => text.split_at(i),
            None => (text, ""),
        };
        check_tags(tags)?;
        let mut parts = [0u64; MAX_PARTS];
        for (i, part) in core.split('.').enumerate() {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(VersionError::NotANumber);
            }
            if part.len() > 9 {
                return Err(VersionError::NumberTooLong);
            }
            let slot = parts.get_mut(i).ok_or(VersionError::TooManyParts)?;
            *slot = part.parse().map_err(|_| VersionError::NotANumber)?;
        }
        Ok(Self {
            parts,
            text: text.to_owned(),
        })
    }

    /// The numbers, missing ones as 0.
    pub fn parts(&self) -> [u64; MAX_PARTS] {
        self.parts
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// `tags` is empty, `-tag`, `+build` or `-tag+build`.
fn check_tags(tags: &str) -> Result<(), VersionError> {
    if tags.is_empty() {
        return Ok(());
    }
    let (pre, build) = match tags.strip_prefix('-') {
        Some(rest) => match rest.split_once('+') {
            Some((pre, build)) => (Some(pre), Some(build)),
            None => (Some(rest), None),
        },
        None => (None, tags.strip_prefix('+')),
    };
    let ok = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if pre.is_some_and(|p| !ok(p)) || build.is_some_and(|b| !ok(b)) {
        return Err(VersionError::BadTag);
    }
    Ok(())
}

impl std::str::FromStr for AppVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for AppVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for AppVersion {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

impl Eq for AppVersion {}

impl PartialOrd for AppVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AppVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts.cmp(&other.parts)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v(s: &str) -> AppVersion {
        AppVersion::parse(s).unwrap()
    }

    #[test]
    fn what_phones_send_is_accepted() {
        for ok in [
            "2",
            "2.3",
            "2.3.1",
            "2.3.1.4",
            "0",
            "2.3.0-beta.1",
            "2.3.0-debug",
            "2.3.0+45",
            "2.3.0-rc.1+build.7",
            "2.3.0-beta-2",
            "2024.01.15",
            "999999999.999999999.999999999",
        ] {
            assert_eq!(v(ok).as_str(), ok);
        }
    }

    #[test]
    fn missing_parts_are_zero_and_numbers_compare_as_numbers() {
        assert_eq!(v("2.3"), v("2.3.0"));
        assert_eq!(v("2"), v("2.0.0.0"));
        assert!(v("2.10") > v("2.9.9"));
        assert!(v("10") > v("9.99"));
        assert!(v("2.3.0.1") > v("2.3"));
        assert_eq!(v("2024.01.15"), v("2024.1.15"));
        assert_eq!(v("2.3"), v("2.3.0-beta.1"), "tags are ignored");
        assert_eq!(v("2.3.0+45"), v("2.3.0"));
        assert!(v("2.3.0-beta.1") >= v("2.3.0"));
        assert!(v("2.2.9-rc.9") < v("2.3"));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        use VersionError as E;
        for (bad, why) in [
            ("", E::Empty),
            ("v2.3", E::NotANumber),
            ("two", E::NotANumber),
            ("2..3", E::NotANumber),
            ("2.", E::NotANumber),
            (".2", E::NotANumber),
            ("2.3.x", E::NotANumber),
            (" 2.3", E::NotANumber),
            ("2.3\t", E::NotANumber),
            ("2.3\u{0}", E::NotANumber),
            ("+2.3", E::NotANumber),
            ("-2.3", E::NotANumber),
            ("1.2.3.4.5", E::TooManyParts),
            ("1234567890.0", E::NumberTooLong),
            ("2.3.0-", E::BadTag),
            ("2.3.0+", E::BadTag),
            ("2.3.0-beta+", E::BadTag),
            ("2.3.0-be ta", E::BadTag),
            ("2.3.0-beta_1", E::BadTag),
            ("2.3.0+45+46", E::BadTag),
            ("2.3.0-é", E::BadTag),
            ("1.2.3-aaaaaaaaaaaaaaaaaaaaaaaaaaa", E::TooLong),
        ] {
            assert_eq!(AppVersion::parse(bad).unwrap_err(), why, "{bad:?}");
        }
        assert_eq!(
            v("1.2.3-aaaaaaaaaaaaaaaaaaaaaaaaaa").as_str().len(),
            MAX_LEN
        );
    }

    #[test]
    fn the_spec_states_this_grammar_for_the_header_and_the_minimums() {
        let spec =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
        let stated = format!("pattern: '{PATTERN}'");
        assert!(
            spec.matches(&stated).count() >= 2,
            "X-Client-Version and min_version must carry {stated}"
        );
        assert!(!spec.contains("(0|[1-9][0-9]{0,8})"), "the old pattern");
    }
}
