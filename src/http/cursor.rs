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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::crypto::{mac_ring::MacKeyRing, Key};
    use proptest::prelude::*;

    const CONTEXT: &str = "notes";

    /// A ring of two keys, `current` first.
    fn ring(current: &Key, old: &Key) -> BlindIndexKeys {
        let spec = format!("2:{},1:{}", current.to_base64(), old.to_base64());
        BlindIndexKeys::new(MacKeyRing::parse(&spec).unwrap())
    }

    fn raw(cursor: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(cursor).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn decode_never_panics(cursor in any::<String>()) {
            let keys = BlindIndexKeys::generate();
            prop_assert!(decode(&keys, CONTEXT, &cursor).is_err());
        }

        #[test]
        fn decode_never_panics_on_base64url(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let keys = BlindIndexKeys::generate();
            // Right length or not, a tag the server did not make is refused.
            prop_assert!(decode(&keys, CONTEXT, &URL_SAFE_NO_PAD.encode(bytes)).is_err());
        }

        #[test]
        fn encode_then_decode_round_trips(id in any::<u128>()) {
            let keys = BlindIndexKeys::generate();
            let id = Uuid::from_u128(id);
            prop_assert_eq!(decode(&keys, CONTEXT, &encode(&keys, CONTEXT, id)).unwrap(), id);
        }

        #[test]
        fn any_altered_byte_is_refused(id in any::<u128>(), at in 0usize..32, flip in 1u8..=255) {
            let keys = BlindIndexKeys::generate();
            let mut bytes = raw(&encode(&keys, CONTEXT, Uuid::from_u128(id)));
            bytes[at] ^= flip;
            prop_assert!(decode(&keys, CONTEXT, &URL_SAFE_NO_PAD.encode(bytes)).is_err());
        }

        #[test]
        fn truncated_or_extended_cursors_are_refused(id in any::<u128>(), cut in 0usize..32, extra in 1usize..8) {
            let keys = BlindIndexKeys::generate();
            let bytes = raw(&encode(&keys, CONTEXT, Uuid::from_u128(id)));
            prop_assert!(decode(&keys, CONTEXT, &URL_SAFE_NO_PAD.encode(&bytes[..cut])).is_err());
            let mut longer = bytes.clone();
            longer.extend(std::iter::repeat_n(0u8, extra));
            prop_assert!(decode(&keys, CONTEXT, &URL_SAFE_NO_PAD.encode(longer)).is_err());
        }

        #[test]
        fn a_cursor_of_another_list_or_key_is_refused(id in any::<u128>()) {
            let keys = BlindIndexKeys::generate();
            let cursor = encode(&keys, CONTEXT, Uuid::from_u128(id));
            prop_assert!(decode(&keys, "rate_limit_requests", &cursor).is_err());
            prop_assert!(decode(&BlindIndexKeys::generate(), CONTEXT, &cursor).is_err());
        }

        #[test]
        fn a_cursor_made_before_a_key_rotation_still_decodes(id in any::<u128>()) {
            let (old, new) = (Key::generate(), Key::generate());
            let before = BlindIndexKeys::new(MacKeyRing::parse(&format!("1:{}", old.to_base64())).unwrap());
            let id = Uuid::from_u128(id);
            let cursor = encode(&before, CONTEXT, id);
            prop_assert_eq!(decode(&ring(&new, &old), CONTEXT, &cursor).unwrap(), id);
        }
    }
}
