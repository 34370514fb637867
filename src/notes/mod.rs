//! Notes: the example user-owned resource, the template a fork copies
//! (docs/architecture.md, "Adding a user-owned resource").
//!
//! Everything a user-owned resource needs, each in one place:
//! - **owner-scoped SQL** (`db.rs`): every query takes the owner, so another
//!   user's note answers exactly like a missing one (404);
//! - **sealing** ([`note_aad`]): the title and body are sealed under the
//!   owner's data key, bound to `(notes, column, note_id)`;
//! - **the projection** ([`Note`]): what the owner sees, decrypted;
//! - **the registry entry**: `notes` in [`crate::accounts::owned::OWNED`],
//!   which the tests in `tests/api/owned.rs` walk (schema, sealing at rest,
//!   export, erasure, cross-user access);
//! - **the export** ([`export`]), called by `export_me`;
//! - **handlers** (`routes.rs`), named after their operationIds.

pub mod db;
pub mod routes;

use crate::{
    crypto::{Aad, BlindIndexKeys, CryptoError},
    error::ApiError,
    http::cursor,
    user_keys::UserKey,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The most notes one user may hold (409 `too_many_notes` beyond it).
pub const MAX_NOTES_PER_USER: i64 = 1000;

/// The encryption binding of a note's sealed `column` (`title`, `body`):
/// its own row, as the registry entry says (`row_id: "note_id"`).
pub fn note_aad(column: &'static str, note_id: Uuid) -> Aad<'static> {
    Aad::new("notes", column, note_id)
}

/// The owner's view of a note, decrypted.
#[derive(Serialize)]
pub struct Note {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    #[serde(serialize_with = "crate::clock::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::clock::millis")]
    pub updated_at: DateTime<Utc>,
}

impl Note {
    /// Opens a row with its owner's key. A value that does not open
    /// (tampered, or moved from another row) is an error, never a blank.
    pub fn open(key: &UserKey, row: db::NoteRow) -> Result<Self, CryptoError> {
        let title = key.open_string(&note_aad("title", row.note_id), &row.title_ciphertext)?;
        let body = key.open_string(&note_aad("body", row.note_id), &row.body_ciphertext)?;
        Ok(Self {
            id: row.note_id,
            title: title.as_str().to_owned(),
            body: body.as_str().to_owned(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Every note of the caller, newest first, for `GET /v1/me/export`.
pub async fn export(conn: &mut sqlx::PgConnection, key: &UserKey) -> Result<Vec<Note>, ApiError> {
    let rows = db::page(conn, key.user_id(), None, MAX_NOTES_PER_USER).await?;
    Ok(rows
        .into_iter()
        .map(|r| Note::open(key, r))
        .collect::<Result<_, _>>()?)
}

/// The tag context of this list's cursors (`http::cursor`).
const CURSOR_CONTEXT: &str = "notes.cursor";

/// The opaque cursor after `note_id`.
pub fn encode_cursor(keys: &BlindIndexKeys, note_id: Uuid) -> String {
    cursor::encode(keys, CURSOR_CONTEXT, note_id)
}

/// The note id inside a cursor; a malformed or altered one is 422.
pub fn decode_cursor(keys: &BlindIndexKeys, cursor: &str) -> Result<Uuid, ApiError> {
    cursor::decode(keys, CURSOR_CONTEXT, cursor)
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
        // Another key's cursor, a flipped character, a truncation, garbage.
        let other = encode_cursor(&BlindIndexKeys::generate(), id);
        let mut flipped = cursor.clone().into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        for bad in [
            other,
            String::from_utf8(flipped).unwrap(),
            cursor[..cursor.len() - 1].to_owned(),
            "not a cursor!".to_owned(),
            String::new(),
        ] {
            assert!(decode_cursor(&key, &bad).is_err(), "{bad}");
        }
    }
}
