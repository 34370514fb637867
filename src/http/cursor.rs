//! Opaque list cursors: the id of the last item of a page, with a keyed
//! tag so a client can only hand back a cursor the server made.
//!
//! A cursor is base64url of the 16 id bytes and the first 16 bytes of an
//! HMAC of the id under the blind-index ring's current key, in a context of
//! the list's own (so a tag indexes nothing). A tag under any key of the
//! ring is accepted, so rotating the key does not break a listing in
//! progress. A cursor is not bound to a user: one from elsewhere only
//! positions the caller's own list, because the page query still takes the
//! owner.

use crate::{
    crypto::{hash::constant_time_eq, BlindIndexKeys},
    error::ApiError,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use uuid::Uuid;

const TAG_LEN: usize = 16;

/// The cursor after `id` in the list whose tags use `context`.
pub fn encode(keys: &BlindIndexKeys, context: &str, id: Uuid) -> String {
    let tag = keys.compute(context, &id.to_string()).value;
    let mut raw = id.as_bytes().to_vec();
    raw.extend_from_slice(&tag[..TAG_LEN]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The id inside a cursor of the list `context`; a malformed or altered
/// one is 422 `invalid_cursor` on the `cursor` field.
pub fn decode(keys: &BlindIndexKeys, context: &str, cursor: &str) -> Result<Uuid, ApiError> {
    let invalid = || {
        ApiError::invalid_field(
            "cursor",
            "invalid_cursor",
            "The cursor is not one this list returned. Start again without it.",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    if raw.len() != 16 + TAG_LEN {
        return Err(invalid());
    }
    let (id, tag) = raw.split_at(16);
    let id = Uuid::from_slice(id).map_err(|_| invalid())?;
    // Every key is compared, found or not, so the time does not say which.
    let known = keys
        .lookup(context, &id.to_string())
        .iter()
        .fold(false, |found, expected| {
            found | constant_time_eq(tag, &expected[..TAG_LEN])
        });
    if !known {
        return Err(invalid());
    }
    Ok(id)
}
