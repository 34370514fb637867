//! Rate-limit requests: a user asks for a higher tier with a reason, staff
//! decide (issue #18). The user's side is `routes.rs` (create, list,
//! withdraw); the staff side is `admin/rate_limit_requests.rs` (list with
//! the evidence, decide); the tier change itself is
//! `rate_limit::tiers::set`, the same code as the admin set-tier endpoint.
//!
//! - **Owner-scoped SQL** (`db.rs`): every query of the user's side takes
//!   the owner, so another user's request answers like a missing one (404).
//!   The staff queries take no owner: they are reached only through
//!   `RequireRole`.
//! - **Sealing** ([`request_aad`]): the reason and the staff note are
//!   sealed under the requester's data key, bound to
//!   `(rate_limit_requests, reason | note, request_id)`; deleting the
//!   account shreds them and its rows cascade away.
//! - **Limits**: one pending request per account (a per-user lock and a
//!   check, with a partial unique index as the backstop), and at most
//!   [`MAX_REQUESTS_PER_WINDOW`] requests per account in any
//!   [`WINDOW_DAYS`] days, withdrawn and decided ones included, so
//!   withdrawing and asking again cannot flood staff.
//! - **The projection** ([`RateLimitRequest`]): what the owner sees; the
//!   export lists every request the same way ([`export`]).

pub mod db;
pub mod routes;

use crate::{
    crypto::{Aad, BlindIndexKeys, CryptoError},
    error::ApiError,
    http::cursor,
    rate_limit::policy::Tier,
    user_keys::UserKey,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest reason, in characters.
pub const MAX_REASON_CHARS: u64 = 500;
/// The longest staff note, in characters.
pub const MAX_NOTE_CHARS: u64 = 500;
/// Requests one account may make in any [`WINDOW_DAYS`] days, whatever
/// became of them.
pub const MAX_REQUESTS_PER_WINDOW: i64 = 5;
pub const WINDOW_DAYS: i64 = 30;
/// The most requests one export lists.
const EXPORT_LIMIT: i64 = 1000;

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Withdrawn,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Withdrawn => "withdrawn",
        }
    }

    /// The stored value (the table's check constraint allows only these).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "pending" => Ok(Self::Pending),
            "approved" => Ok(Self::Approved),
            "denied" => Ok(Self::Denied),
            "withdrawn" => Ok(Self::Withdrawn),
            other => Err(ApiError::internal(anyhow::anyhow!(
                "unknown rate-limit request status {other:?}"
            ))),
        }
    }
}

/// The encryption binding of a request's sealed `column` (`reason`,
/// `note`): its own row.
pub fn request_aad(column: &'static str, request_id: Uuid) -> Aad<'static> {
    Aad::new("rate_limit_requests", column, request_id)
}

/// The owner's view of a request, decrypted.
#[derive(Debug, Serialize)]
pub struct RateLimitRequest {
    pub id: Uuid,
    pub status: Status,
    pub requested_tier: Tier,
    pub reason: String,
    /// The deciding administrator's note to the user, if any.
    pub note: Option<String>,
    #[serde(serialize_with = "crate::clock::millis")]
    pub created_at: DateTime<Utc>,
    /// When it was approved, denied or withdrawn.
    #[serde(serialize_with = "crate::clock::millis_opt")]
    pub decided_at: Option<DateTime<Utc>>,
    /// For an approval with a time limit: when the tier returns to
    /// `standard`.
    #[serde(serialize_with = "crate::clock::millis_opt")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The reason and note of a row, opened with the owner's key. A value that
/// does not open (tampered, or moved from another row) is an error.
pub struct Opened {
    pub reason: String,
    pub note: Option<String>,
}

impl Opened {
    pub fn open(key: &UserKey, row: &db::RequestRow) -> Result<Self, CryptoError> {
        let reason = key.open_string(
            &request_aad("reason", row.request_id),
            &row.reason_ciphertext,
        )?;
        let note = row
            .note_ciphertext
            .as_deref()
            .map(|n| key.open_string(&request_aad("note", row.request_id), n))
            .transpose()?;
        Ok(Self {
            reason: reason.as_str().to_owned(),
            note: note.map(|n| n.as_str().to_owned()),
        })
    }
}

impl RateLimitRequest {
    pub fn open(key: &UserKey, row: db::RequestRow) -> Result<Self, ApiError> {
        let opened = Opened::open(key, &row)?;
        Ok(Self {
            id: row.request_id,
            status: Status::parse(&row.status)?,
            requested_tier: Tier::parse(&row.requested_tier),
            reason: opened.reason,
            note: opened.note,
            created_at: row.created_at,
            decided_at: row.decided_at,
            expires_at: row.tier_expires_at,
        })
    }
}

/// The caller's requests, newest first, for `GET /v1/me/export`.
pub async fn export(
    conn: &mut sqlx::PgConnection,
    key: &UserKey,
) -> Result<Vec<RateLimitRequest>, ApiError> {
    db::page(conn, key.user_id(), None, EXPORT_LIMIT)
        .await?
        .into_iter()
        .map(|r| RateLimitRequest::open(key, r))
        .collect()
}

/// The tag context of this list's cursors (`http::cursor`), the user's
/// list and the staff queue alike.
const CURSOR_CONTEXT: &str = "rate_limit_requests.cursor";

/// The opaque cursor after `request_id`.
pub fn encode_cursor(keys: &BlindIndexKeys, request_id: Uuid) -> String {
    cursor::encode(keys, CURSOR_CONTEXT, request_id)
}

/// The request id inside a cursor; a malformed or altered one is 422
/// `invalid_cursor`.
pub fn decode_cursor(keys: &BlindIndexKeys, cursor: &str) -> Result<Uuid, ApiError> {
    cursor::decode(keys, CURSOR_CONTEXT, cursor)
}

/// The next page's cursor: after the last item of a full page, else none.
pub fn next_cursor(keys: &BlindIndexKeys, ids: &[Uuid], limit: i64) -> Option<String> {
    (ids.len() as i64 == limit)
        .then(|| ids.last().map(|id| encode_cursor(keys, *id)))
        .flatten()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_any_change_is_refused() {
        let key = BlindIndexKeys::generate();
        let id = Uuid::now_v7();
        let cursor = encode_cursor(&key, id);
        assert_eq!(decode_cursor(&key, &cursor).unwrap(), id);
        let other = encode_cursor(&BlindIndexKeys::generate(), id);
        let mut flipped = cursor.clone().into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        for bad in [
            other,
            String::from_utf8(flipped).unwrap(),
            cursor[..cursor.len() - 1].to_owned(),
            "not a cursor!".to_owned(),
            id.to_string(),
            String::new(),
        ] {
            assert!(decode_cursor(&key, &bad).is_err(), "{bad}");
        }
    }
}
