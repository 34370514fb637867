//! The caller's own account and profile: `/v1/me` (read, update, email
//! change, deletion, export) and the projections of a user for each
//! audience.
//!
//! Every personal field is sealed under the user's own data key
//! (`user_keys`) and bound to table, column and row; this module is the one
//! place that opens them. Each audience gets its own type: [`MeResponse`]
//! (the owner, everything decrypted), `PublicUser` (`admin/users.rs`: id and
//! display name) and `AdminUserView` (`admin/accounts.rs`: no secrets, PII
//! masked for support). No handler serialises a row.

pub mod db;
pub mod routes;

use crate::{
    accounts::Role,
    crypto::{Aad, CryptoError},
    user_keys::UserKey,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use validator::Validate;

/// A postal address; stored as one sealed JSON object.
#[derive(Clone, Debug, Deserialize, Serialize, Validate, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[validate(
        length(min = 1, max = 128),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub line1: String,
    #[validate(
        length(max = 128),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub line2: Option<String>,
    #[validate(
        length(min = 1, max = 64),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub city: String,
    #[validate(
        length(max = 64),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub region: Option<String>,
    #[validate(
        length(min = 1, max = 16),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    #[validate(custom(function = "crate::http::validate::country_code"))]
    pub country: String,
}

/// `address` in a `PATCH /v1/me` body: every member may be left out. Under
/// `application/merge-patch+json` it is merged member by member into the
/// stored address (RFC 7396: a member left out is kept, `null` removes
/// one); under `application/json` it replaces the address, so the members
/// `Address` requires must all be there. Either way the result is checked
/// by [`AddressPatch::apply`] before anything is written. The member rules
/// are `Address`'s, so a bad value is named the same way in both modes.
#[derive(Clone, Debug, Default, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AddressPatch {
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    #[validate(
        length(min = 1, max = 128),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub line1: Option<String>,
    #[serde(default, deserialize_with = "crate::http::validate::present")]
    #[validate(
        length(max = 128),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub line2: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    #[validate(
        length(min = 1, max = 64),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub city: Option<String>,
    #[serde(default, deserialize_with = "crate::http::validate::present")]
    #[validate(
        length(max = 64),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub region: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    #[validate(
        length(min = 1, max = 16),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub postal_code: Option<String>,
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    #[validate(custom(function = "crate::http::validate::country_code"))]
    pub country: Option<String>,
}

impl AddressPatch {
    /// The address this patch makes of `base` (the stored address for a
    /// merge patch, `None` for a replacement), or the members it still
    /// lacks, as `address.<member>` names.
    pub fn apply(self, base: Option<Address>) -> Result<Address, Vec<&'static str>> {
        let (line1, line2, city, region, postal_code, country) = match base {
            Some(a) => (
                Some(a.line1),
                a.line2,
                Some(a.city),
                a.region,
                Some(a.postal_code),
                Some(a.country),
            ),
            None => (None, None, None, None, None, None),
        };
        let line1 = self.line1.or(line1);
        let city = self.city.or(city);
        let postal_code = self.postal_code.or(postal_code);
        let country = self.country.or(country);
        let missing: Vec<&'static str> = [
            ("address.line1", line1.is_none()),
            ("address.city", city.is_none()),
            ("address.postal_code", postal_code.is_none()),
            ("address.country", country.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, gone)| gone.then_some(name))
        .collect();
        match (line1, city, postal_code, country) {
            (Some(line1), Some(city), Some(postal_code), Some(country)) => Ok(Address {
                line1,
                line2: self.line2.unwrap_or(line2),
                city,
                region: self.region.unwrap_or(region),
                postal_code,
                country,
            }),
            _ => Err(missing),
        }
    }
}

/// The profile as its owner sees it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Profile {
    pub display_name: Option<String>,
    pub phone: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub address: Option<Address>,
}

/// `GET /v1/me`: the owner's view, every field decrypted.
#[derive(Debug, Serialize)]
pub struct MeResponse {
    pub id: Uuid,
    pub email: String,
    pub email_verified: bool,
    pub role: Role,
    pub mfa_enabled: bool,
    #[serde(serialize_with = "crate::clock::millis")]
    pub created_at: DateTime<Utc>,
    pub profile: Profile,
}

/// The binding of a `users` column to its row.
pub fn users_aad(column: &'static str, user_id: Uuid) -> Aad<'static> {
    Aad::new("users", column, user_id)
}

/// Opens an optional sealed text column of `users`.
pub fn open_text(
    key: &UserKey,
    column: &'static str,
    sealed: Option<&[u8]>,
) -> Result<Option<String>, CryptoError> {
    sealed
        .map(|s| {
            key.open_string(&users_aad(column, key.user_id()), s)
                .map(|t| t.as_str().to_owned())
        })
        .transpose()
}

/// Opens a user's sealed email. Its binding is `accounts::email_aad`, the
/// one every reader and writer of `users.email` uses.
pub fn open_email(key: &UserKey, sealed: &[u8]) -> Result<String, CryptoError> {
    key.open_string(&crate::accounts::email_aad(key.user_id()), sealed)
        .map(|t| t.as_str().to_owned())
}

/// Decrypts a user's row into their profile. A value that fails to open
/// (tampered, or moved from another row) is an error, never a blank.
pub fn decrypt_profile(key: &UserKey, row: &db::UserRow) -> Result<Profile, CryptoError> {
    let date_of_birth = open_text(
        key,
        "date_of_birth",
        row.date_of_birth_ciphertext.as_deref(),
    )?
    .map(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").map_err(|_| CryptoError::Malformed))
    .transpose()?;
    let address = open_text(key, "address", row.address_ciphertext.as_deref())?
        .map(|a| serde_json::from_str(&a).map_err(|_| CryptoError::Malformed))
        .transpose()?;
    Ok(Profile {
        display_name: open_text(key, "display_name", row.display_name_ciphertext.as_deref())?,
        phone: open_text(key, "phone", row.phone_ciphertext.as_deref())?,
        date_of_birth,
        address,
    })
}

/// The owner's full view of their row.
pub fn me_response(key: &UserKey, row: &db::UserRow) -> Result<MeResponse, CryptoError> {
    Ok(MeResponse {
        id: row.user_id,
        email: open_email(key, &row.email_ciphertext)?,
        email_verified: row.email_verified_at.is_some(),
        role: row.role,
        mfa_enabled: row.mfa_enabled,
        created_at: row.created_at,
        profile: decrypt_profile(key, row)?,
    })
}

/// Masks all but the first `keep_start` and last `keep_end` characters:
/// `+447700900123` → `+44********23`.
pub fn mask(value: &str, keep_start: usize, keep_end: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= keep_start + keep_end {
        return "*".repeat(chars.len().max(1));
    }
    let mut out: String = chars[..keep_start].iter().collect();
    out.push_str(&"*".repeat(chars.len() - keep_start - keep_end));
    out.extend(&chars[chars.len() - keep_end..]);
    out
}

/// `jane.doe@example.com` → `j*******@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => format!("{}@{domain}", mask(local, 1, 0)),
        None => mask(email, 1, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_the_edges() {
        assert_eq!(mask("+447700900189", 3, 2), "+44********89");
        assert_eq!(mask("ab", 3, 2), "**");
        assert_eq!(mask_email("jane@example.com"), "j***@example.com");
        assert_eq!(mask_email("j@example.com"), "*@example.com");
    }
}
