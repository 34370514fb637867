//! A password field of a request body, wiped from memory when dropped.
//!
//! Request DTOs hold passwords as [`SecretText`] instead of `String`, so the
//! one heap copy the request owns is zeroized when the request is done
//! with it, `Debug`, `Serialize` (and so a validation error) never show it, and the `validator` length rules still
//! apply (counted in characters, as for `String`). The copies this cannot
//! reach (the raw request body in hyper's buffers, serde_json's scratch
//! buffer for strings with escapes) are listed in SECURITY.md.

use serde::{Deserialize, Serialize};
use std::{fmt, ops::Deref};
use validator::ValidateLength;
use zeroize::Zeroizing;

/// A secret string from a request body. Derefs to `str`.
#[derive(Deserialize, Default)]
#[serde(transparent)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    pub fn new(text: impl Into<String>) -> Self {
        Self(Zeroizing::new(text.into()))
    }
}

impl Deref for SecretText {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// Serializes as `"[redacted]"`: `validator` puts a failing field's value
/// into its error, and this keeps the password out of it.
impl Serialize for SecretText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

impl ValidateLength<u64> for SecretText {
    fn length(&self) -> Option<u64> {
        Some(self.0.chars().count() as u64)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use validator::Validate;

    #[derive(Deserialize, Validate)]
    struct Body {
        #[validate(length(max = 5))]
        password: SecretText,
    }

    #[test]
    fn deserializes_validates_by_characters_and_redacts() {
        let ok: Body = serde_json::from_str(r#"{"password":"ééééé"}"#).unwrap();
        assert!(ok.validate().is_ok());
        assert_eq!(&*ok.password, "ééééé");
        assert!(!format!("{:?}", ok.password).contains('é'));
        let long: Body = serde_json::from_str(r#"{"password":"abcdef"}"#).unwrap();
        let error = long.validate().unwrap_err();
        assert!(!format!("{error:?}").contains("abcdef"), "{error:?}");
        assert!(!serde_json::to_string(&error).unwrap().contains("abcdef"));
    }
}
