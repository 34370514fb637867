//! Rings of HMAC keys: the blind-index keys (`BLIND_INDEX_KEYS`) and the
//! short-code keys (`CODE_HMAC_KEYS`).
//!
//! A MAC cannot say which key made it (unlike a sealed value, whose header
//! names its key), so every stored MAC keeps the id of its key in a
//! `smallint` column beside it. That is what lets these keys rotate: new
//! values use the current (first) key, a value under an older key is
//! checked with that key while it stays in the ring, and `keys status`
//! counts the rows still under each id, so an operator knows when an old
//! key may leave. Ids are therefore limited to 1..=32767 (`smallint`; id 0
//! is reserved as in every ring).
//!
//! Parsing, redaction and zeroizing are the master [`KeyRing`]'s: errors
//! name an entry's position, never its content, and `Debug` shows ids only.

use std::fmt;

use super::keyring::{Key, KeyRing};
use super::CryptoError;

/// The id of a MAC key, as stored beside each MAC.
pub type MacKeyId = i16;

/// HMAC keys under small ids; the first is current.
#[derive(Clone)]
pub struct MacKeyRing(KeyRing);

impl MacKeyRing {
    /// Fails when an id does not fit a `smallint` column.
    pub fn new(ring: KeyRing) -> Result<Self, CryptoError> {
        if let Some(id) = ring.ids().into_iter().find(|id| to_small(*id).is_none()) {
            return Err(CryptoError::InvalidKey(format!(
                "key id {id} is too large: number these keys from 1 to {}",
                MacKeyId::MAX
            )));
        }
        Ok(Self(ring))
    }

    /// `id:base64[,id:base64…]`, current first, as for [`KeyRing::parse`].
    pub fn parse(spec: &str) -> Result<Self, CryptoError> {
        Self::new(KeyRing::parse(spec)?)
    }

    /// The one-key form (a bare base64 key, as the older single-key
    /// variables hold): a ring whose only key has id 1, which is the id
    /// every row written before rings existed carries.
    pub fn single_from_base64(encoded: &str) -> Result<Self, CryptoError> {
        let key = Key::from_base64(encoded)?;
        Self::new(KeyRing::new(1, vec![(1, key)])?)
    }

    /// One fresh key with id 1.
    pub fn generate() -> Self {
        Self(KeyRing::generate_single(1))
    }

    /// The ring in the format [`MacKeyRing::parse`] reads. Contains every
    /// key: print it only for the operator's secret store.
    pub fn to_spec(&self) -> String {
        self.0.to_spec()
    }

    /// The underlying ring (for `keys rotate`).
    pub fn key_ring(&self) -> &KeyRing {
        &self.0
    }

    pub fn current_id(&self) -> MacKeyId {
        self.current().0
    }

    /// Every id, current first.
    pub fn ids(&self) -> Vec<MacKeyId> {
        self.0.ids().into_iter().filter_map(to_small).collect()
    }

    pub fn contains(&self, id: MacKeyId) -> bool {
        self.get(id).is_some()
    }

    pub(crate) fn current(&self) -> (MacKeyId, &Key) {
        let (id, key) = self.0.primary();
        // `new` checked every id, so the fallback is never taken.
        (to_small(id).unwrap_or(MacKeyId::MAX), key)
    }

    pub(crate) fn get(&self, id: MacKeyId) -> Option<&Key> {
        u32::try_from(id).ok().and_then(|id| self.0.get(id))
    }

    /// Every key with its id, current first.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (MacKeyId, &Key)> {
        self.ids()
            .into_iter()
            .filter_map(|id| self.get(id).map(|key| (id, key)))
    }
}

fn to_small(id: u32) -> Option<MacKeyId> {
    MacKeyId::try_from(id).ok().filter(|id| *id >= 1)
}

impl fmt::Debug for MacKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MacKeyRing")
            .field("current_id", &self.current_id())
            .field("key_ids", &self.ids())
            .field("keys", &format_args!("<redacted>"))
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::crypto::keyring::KEY_LEN;

    fn b64(byte: u8) -> String {
        Key::from_bytes([byte; KEY_LEN]).to_base64()
    }

    #[test]
    fn the_first_key_is_current_and_every_key_is_found_by_id() {
        let ring = MacKeyRing::parse(&format!("2:{},1:{}", b64(2), b64(1))).unwrap();
        assert_eq!(ring.current_id(), 2);
        assert_eq!(ring.ids(), vec![2, 1]);
        assert_eq!(ring.get(1).unwrap().expose(), &[1u8; KEY_LEN]);
        assert!(ring.contains(2) && !ring.contains(3) && !ring.contains(-1));
        let entries: Vec<MacKeyId> = ring.entries().map(|(id, _)| id).collect();
        assert_eq!(entries, vec![2, 1]);
    }

    #[test]
    fn a_single_key_is_a_ring_of_id_1() {
        let ring = MacKeyRing::single_from_base64(&b64(7)).unwrap();
        assert_eq!(ring.ids(), vec![1]);
        assert_eq!(ring.current().1.expose(), &[7u8; KEY_LEN]);
        assert!(MacKeyRing::single_from_base64("short").is_err());
        assert_eq!(MacKeyRing::generate().ids(), vec![1]);
    }

    #[test]
    fn ids_must_fit_a_smallint_and_errors_never_echo_keys() {
        let key = b64(9);
        for spec in [format!("32768:{key}"), format!("1:{key},70000:{key}")] {
            match MacKeyRing::parse(&spec) {
                Err(CryptoError::InvalidKey(msg)) => {
                    assert!(msg.contains("too large"), "{msg}");
                    assert!(!msg.contains(&key[..8]), "{msg}");
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
        assert!(MacKeyRing::parse(&format!("32767:{key}")).is_ok());
        assert!(MacKeyRing::parse(&format!("0:{key}")).is_err());
    }

    #[test]
    fn debug_shows_ids_only_and_spec_round_trips() {
        let ring = MacKeyRing::parse(&format!("3:{},1:{}", b64(3), b64(1))).unwrap();
        let debug = format!("{ring:?}");
        assert!(
            debug.contains("current_id: 3") && debug.contains("[3, 1]"),
            "{debug}"
        );
        assert!(
            !debug.contains(&b64(3)) && !debug.contains(&b64(1)),
            "{debug}"
        );
        let again = MacKeyRing::parse(&ring.to_spec()).unwrap();
        assert_eq!(again.ids(), vec![3, 1]);
    }
}
