//! Master keys for field encryption, and the key ring that lets them rotate.
//!
//! Each sealed value records the id of the key that sealed it, so a ring holds
//! several keys: exactly one primary that seals, and any number of older keys
//! that still open. Rotation is then "add a new primary, re-encrypt rows found
//! by [`crate::crypto::aead::key_id_of`], drop the old key" with no downtime.
//!
//! The threat here is key material escaping through the side doors: logs,
//! error messages, panics and freed memory. Keys redact themselves in `Debug`,
//! zeroize on drop, and parse errors name the entry's position, never its
//! content (a mistyped key is still most of a key).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::CryptoError;

/// Length in bytes of every symmetric key in this module (256 bits).
pub const KEY_LEN: usize = 32;

/// A 256-bit secret key. Deliberately not `PartialEq`: comparing keys with `==`
/// would be variable-time, and nothing needs it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(bytes.as_mut());
        Self(*bytes)
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Decodes standard, padded base64 that must yield exactly 32 bytes.
    /// Surrounding whitespace is ignored because keys usually arrive through
    /// environment variables and files that end in a newline.
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        // Decode into a fixed stack buffer rather than a growable Vec so no
        // reallocation can leave a stray copy of the key on the heap. The
        // spare room lets us report "too long" instead of a generic failure.
        let mut buf = Zeroizing::new([0u8; 2 * KEY_LEN]);
        let len = STANDARD
            .decode_slice(encoded.trim().as_bytes(), buf.as_mut())
            .map_err(|err| match err {
                base64::DecodeSliceError::OutputSliceTooSmall => {
                    CryptoError::InvalidKey(format!("key must decode to exactly {KEY_LEN} bytes"))
                }
                // The base64 error would quote the offending character and
                // its offset, i.e. part of the key: keep only the category.
                base64::DecodeSliceError::DecodeError(_) => {
                    CryptoError::InvalidKey("key is not valid standard base64".to_owned())
                }
            })?;
        match (len, buf.first_chunk::<KEY_LEN>()) {
            (KEY_LEN, Some(bytes)) => Ok(Self(*bytes)),
            _ => Err(CryptoError::InvalidKey(format!(
                "key must decode to exactly {KEY_LEN} bytes, got {len}"
            ))),
        }
    }

    /// Standard padded base64, for printing a newly generated key once. The
    /// returned `String` is a copy of the secret: do not log it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Several keys, each under a `u32` id. The primary seals; every key opens.
///
/// The primary is stored apart from the rest so that "there is always a
/// primary" is a fact of the type rather than a runtime check.
#[derive(Clone)]
pub struct KeyRing {
    primary: (u32, Key),
    others: Vec<(u32, Key)>,
}

impl KeyRing {
    /// Fails if an id appears twice or `primary_id` is not among `keys`.
    pub fn new(primary_id: u32, keys: Vec<(u32, Key)>) -> Result<Self, CryptoError> {
        for (i, (id, _)) in keys.iter().enumerate() {
            if keys.iter().skip(i + 1).any(|(other, _)| other == id) {
                return Err(CryptoError::InvalidKey(format!("duplicate key id {id}")));
            }
        }
        // Clone out of `keys` rather than move: moving would leave each key's
        // bytes behind in `keys`' buffer, freed unwiped. Dropping `keys` at
        // the end wipes every entry in place (`Key` zeroizes on drop), and
        // `others` is allocated once at its final size, so it never moves.
        let mut primary = None;
        let mut others = Vec::with_capacity(keys.len().saturating_sub(1));
        for (id, key) in &keys {
            if *id == primary_id {
                primary = Some((*id, key.clone()));
            } else {
                others.push((*id, key.clone()));
            }
        }
        drop(keys);
        let primary = primary.ok_or_else(|| {
            CryptoError::InvalidKey(format!(
                "primary key id {primary_id} is not in the key ring"
            ))
        })?;
        Ok(Self { primary, others })
    }

    /// A ring of one key, built without any intermediate allocation (so no
    /// stray copy of the key is left in freed memory): a per-user data key.
    pub fn single(id: u32, key: Key) -> Self {
        Self {
            primary: (id, key),
            others: Vec::new(),
        }
    }

    /// Parses `id:base64,id:base64,…`; the first entry is the primary.
    /// Whitespace around entries, ids and keys is ignored; empty entries are
    /// rejected so that a stray comma cannot silently drop a key.
    pub fn parse(spec: &str) -> Result<Self, CryptoError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(CryptoError::InvalidKey(
                "key ring is empty; expected id:base64[,id:base64...]".to_owned(),
            ));
        }
        // Exact capacity up front: growing the Vec would move keys and leave
        // unzeroized copies in the freed allocation.
        let mut keys = Vec::with_capacity(spec.split(',').count());
        for (index, entry) in spec.split(',').enumerate() {
            let pos = index + 1;
            let (id, encoded) = entry.trim().split_once(':').ok_or_else(|| {
                CryptoError::InvalidKey(format!("entry {pos}: expected id:base64"))
            })?;
            let id: u32 = id.trim().parse().map_err(|_| {
                CryptoError::InvalidKey(format!(
                    "entry {pos}: key id must be an unsigned 32-bit integer"
                ))
            })?;
            // Id 0 marks values sealed under a per-user data key
            // (`user_keys`), so a master key must never carry it.
            if id == 0 {
                return Err(CryptoError::InvalidKey(format!(
                    "entry {pos}: key id 0 is reserved; number master keys from 1"
                )));
            }
            let key = Key::from_base64(encoded).map_err(|err| match err {
                CryptoError::InvalidKey(msg) => {
                    CryptoError::InvalidKey(format!("entry {pos} (id {id}): {msg}"))
                }
                other => other,
            })?;
            keys.push((id, key));
        }
        let primary_id = keys.first().map_or(0, |(id, _)| *id);
        Self::new(primary_id, keys)
    }

    /// A ring holding one fresh key; for development and first-run setup.
    pub fn generate_single(id: u32) -> Self {
        Self {
            primary: (id, Key::generate()),
            others: Vec::new(),
        }
    }

    /// This ring with a fresh key, numbered one above the highest id, as
    /// its primary; every old key stays (what `keys rotate` prints).
    pub fn with_new_primary(&self) -> Result<Self, CryptoError> {
        let next = self
            .ids()
            .into_iter()
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| CryptoError::InvalidKey("no key id left".to_owned()))?;
        let mut keys = Vec::with_capacity(self.others.len() + 2);
        keys.push((next, Key::generate()));
        keys.extend(self.entries().map(|(id, key)| (id, key.clone())));
        Self::new(next, keys)
    }

    pub fn primary_id(&self) -> u32 {
        self.primary.0
    }

    pub fn primary(&self) -> (u32, &Key) {
        (self.primary.0, &self.primary.1)
    }

    pub fn get(&self, id: u32) -> Option<&Key> {
        self.entries()
            .find(|(candidate, _)| *candidate == id)
            .map(|(_, key)| key)
    }

    /// All key ids, primary first.
    pub fn ids(&self) -> Vec<u32> {
        self.entries().map(|(id, _)| id).collect()
    }

    /// The ring in the format [`KeyRing::parse`] reads, primary first. The
    /// result contains every key: write it only to a protected file.
    pub fn to_spec(&self) -> String {
        self.entries()
            .map(|(id, key)| format!("{id}:{}", key.to_base64()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn entries(&self) -> impl Iterator<Item = (u32, &Key)> {
        std::iter::once((self.primary.0, &self.primary.1))
            .chain(self.others.iter().map(|(id, key)| (*id, key)))
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("primary_id", &self.primary.0)
            .field("key_ids", &self.ids())
            .field("keys", &format_args!("<redacted>"))
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn b64(byte: u8) -> String {
        Key::from_bytes([byte; KEY_LEN]).to_base64()
    }

    fn invalid_key_message(result: Result<KeyRing, CryptoError>) -> String {
        match result.err() {
            Some(CryptoError::InvalidKey(msg)) => Some(msg),
            _ => None,
        }
        .expect("expected CryptoError::InvalidKey")
    }

    #[test]
    fn key_base64_round_trips() {
        let key = Key::generate();
        let again = Key::from_base64(&key.to_base64()).unwrap();
        assert_eq!(key.expose(), again.expose());
        assert_eq!(key.to_base64().len(), 44);
    }

    #[test]
    fn key_from_base64_tolerates_surrounding_whitespace() {
        let key = Key::from_base64(&format!("  {}\n", b64(7))).unwrap();
        assert_eq!(key.expose(), &[7u8; KEY_LEN]);
    }

    #[test]
    fn key_from_base64_rejects_wrong_lengths_and_bad_input() {
        let short = STANDARD.encode([1u8; 31]);
        let long = STANDARD.encode([1u8; 33]);
        let huge = STANDARD.encode([1u8; 200]);
        let url_safe = format!("{}-", &b64(0xfb)[..42]);
        for bad in [short.as_str(), &long, &huge, "", "not base64!", &url_safe] {
            assert!(
                matches!(Key::from_base64(bad), Err(CryptoError::InvalidKey(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(Key::generate().expose(), Key::generate().expose());
    }

    #[test]
    fn debug_redacts_keys() {
        let key = Key::from_bytes([0x41; KEY_LEN]);
        assert_eq!(format!("{key:?}"), "Key(<redacted>)");
        let ring = KeyRing::new(2, vec![(1, key.clone()), (2, Key::generate())]).unwrap();
        let debug = format!("{ring:?}");
        assert!(debug.contains("primary_id: 2"), "{debug}");
        assert!(debug.contains("[2, 1]"), "{debug}");
        assert!(!debug.contains(&key.to_base64()), "{debug}");
    }

    #[test]
    fn zeroize_clears_key() {
        let mut key = Key::from_bytes([0xaa; KEY_LEN]);
        key.zeroize();
        assert_eq!(key.expose(), &[0u8; KEY_LEN]);
    }

    #[test]
    fn new_rejects_duplicates_and_missing_primary() {
        let dup = KeyRing::new(1, vec![(1, Key::generate()), (1, Key::generate())]);
        assert!(invalid_key_message(dup).contains("duplicate key id 1"));
        let missing = KeyRing::new(3, vec![(1, Key::generate())]);
        assert!(invalid_key_message(missing).contains("primary key id 3"));
        assert!(KeyRing::new(0, Vec::new()).is_err());
    }

    #[test]
    fn parse_takes_first_entry_as_primary_and_tolerates_whitespace() {
        let spec = format!(" 7 : {} ,\n 3:{}\n", b64(7), b64(3));
        let ring = KeyRing::parse(&spec).unwrap();
        assert_eq!(ring.primary_id(), 7);
        assert_eq!(ring.primary().1.expose(), &[7u8; KEY_LEN]);
        assert_eq!(ring.get(3).unwrap().expose(), &[3u8; KEY_LEN]);
        assert!(ring.get(4).is_none());
        assert_eq!(ring.ids(), vec![7, 3]);
    }

    #[test]
    fn to_spec_round_trips_with_primary_first() {
        let ring = KeyRing::new(2, vec![(1, Key::generate()), (2, Key::generate())]).unwrap();
        let spec = ring.to_spec();
        assert!(spec.starts_with("2:"));
        let again = KeyRing::parse(&spec).unwrap();
        assert_eq!(again.primary_id(), 2);
        assert_eq!(again.ids(), vec![2, 1]);
        assert_eq!(again.to_spec(), spec);
    }

    #[test]
    fn key_id_zero_is_reserved_for_user_keys() {
        let message = invalid_key_message(KeyRing::parse(&format!("0:{}", b64(1))));
        assert!(message.contains("reserved"), "{message}");
    }

    #[test]
    fn parse_errors_never_echo_key_material() {
        let key = b64(9);
        let truncated = &key[..40];
        let cases = [
            format!("1:{key},2:{truncated}"),
            format!("1:{key},x:{key}"),
            format!("1:{key},{key}"),
            format!("1:{key},1:{key}"),
            format!("1:{key},"),
            format!("1:{}!{}", &key[..20], &key[21..]),
        ];
        for spec in cases {
            let msg = invalid_key_message(KeyRing::parse(&spec));
            assert!(!msg.contains(&key[..8]), "{msg}");
            assert!(msg.contains("entry") || msg.contains("duplicate"), "{msg}");
        }
        assert!(invalid_key_message(KeyRing::parse("  ")).contains("empty"));
    }

    #[test]
    fn a_single_key_ring_holds_its_key_as_primary() {
        let ring = KeyRing::single(0, Key::from_bytes([4; KEY_LEN]));
        assert_eq!(ring.ids(), vec![0]);
        assert_eq!(ring.primary().1.expose(), &[4u8; KEY_LEN]);
        // `new` clones out of its argument; the ring is the same.
        let built = KeyRing::new(
            2,
            vec![
                (1, Key::from_bytes([1; KEY_LEN])),
                (2, Key::from_bytes([2; KEY_LEN])),
            ],
        )
        .unwrap();
        assert_eq!(built.primary().1.expose(), &[2u8; KEY_LEN]);
        assert_eq!(built.get(1).unwrap().expose(), &[1u8; KEY_LEN]);
    }

    #[test]
    fn generate_single_has_one_primary_key() {
        let ring = KeyRing::generate_single(5);
        assert_eq!(ring.ids(), vec![5]);
        assert_eq!(ring.primary().0, 5);
    }
}
