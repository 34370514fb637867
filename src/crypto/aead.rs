//! AES-256-GCM encryption of individual database fields.
//!
//! Stored format: `version (0x01) ‖ key_id (u32 BE) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.
//!
//! The threat beyond "read the dump" is "write the database": an attacker
//! (or a buggy query) who can move bytes around must not be able to make a
//! sealed value decrypt somewhere it was not sealed, e.g. copy their own
//! encrypted phone number onto a victim's row, or relabel a value as sealed
//! under another key. So the associated data binds the domain label, the
//! header (version and key id), the table, the column and the row id, each
//! length-prefixed so no two different bindings encode alike. A value moved
//! to another row, column or table, or with its header edited, fails to open.
//!
//! Nonces are 96 random bits from the OS per seal. With random nonces one key
//! should seal well under 2^32 values; rotate the primary key (see
//! [`crate::crypto::keyring`]) long before that.

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::Aes256Gcm;
use rand::rngs::OsRng;
use rand::RngCore as _;
use zeroize::{Zeroize as _, Zeroizing};

use super::keyring::{Key, KeyRing};
use super::CryptoError;

/// The only format version this build writes and reads.
pub const VERSION: u8 = 0x01;

const HEADER_LEN: usize = 1 + 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Shortest valid sealed value: an empty plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
const DOMAIN: &[u8] = b"mobile-backend/field/v1";

/// Where a sealed value lives. It is authenticated, not stored: pass the
/// same values to [`open`] as to [`seal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aad<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row_id: uuid::Uuid,
}

impl<'a> Aad<'a> {
    pub fn new(table: &'a str, column: &'a str, row_id: uuid::Uuid) -> Self {
        Self {
            table,
            column,
            row_id,
        }
    }
}

/// Seals `plaintext` under the ring's primary key with a fresh random nonce.
pub fn seal(ring: &KeyRing, aad: &Aad, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (key_id, key) = ring.primary();
    let header = header(key_id);
    let mut nonce = [0u8; NONCE_LEN];
    // The fallible call: an RNG failure becomes an error, not a panic.
    OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|_| CryptoError::Encrypt)?;
    let associated = associated_data(&header, aad);
    let body = cipher(key)
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: plaintext,
                aad: &associated,
            },
        )
        .map_err(|_| CryptoError::Encrypt)?;
    let mut sealed = Vec::with_capacity(HEADER_LEN + NONCE_LEN + body.len());
    sealed.extend_from_slice(&header);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&body);
    Ok(sealed)
}

/// Opens a value produced by [`seal`] with any key in the ring. The plaintext
/// is wiped when the returned buffer is dropped.
pub fn open(ring: &KeyRing, aad: &Aad, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let parsed = parse(sealed)?;
    let key = ring
        .get(parsed.key_id)
        .ok_or(CryptoError::UnknownKey(parsed.key_id))?;
    let associated = associated_data(parsed.header, aad);
    // aes-gcm checks the tag before decrypting, so a forgery never yields
    // plaintext, and its error deliberately does not say what was wrong.
    cipher(key)
        .decrypt(
            parsed.nonce.into(),
            Payload {
                msg: parsed.body,
                aad: &associated,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Decrypt)
}

pub fn seal_str(ring: &KeyRing, aad: &Aad, plaintext: &str) -> Result<Vec<u8>, CryptoError> {
    seal(ring, aad, plaintext.as_bytes())
}

/// [`open`] for text. Returns `Zeroizing<String>` so decrypted personal data
/// is wiped when dropped; a caller that needs a plain `String` (e.g. for a
/// response body) can clone out of it knowingly. An authentic plaintext that
/// is not UTF-8 is reported as [`CryptoError::Malformed`].
pub fn open_string(
    ring: &KeyRing,
    aad: &Aad,
    sealed: &[u8],
) -> Result<Zeroizing<String>, CryptoError> {
    let mut bytes = open(ring, aad, sealed)?;
    // Move the buffer out rather than copying it, so exactly one allocation
    // ever holds the plaintext and it is wiped on every path.
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(err) => {
            err.into_bytes().zeroize();
            Err(CryptoError::Malformed)
        }
    }
}

/// The id of the key that sealed `sealed`, without decrypting it; lets a
/// re-encryption job find rows still under a retiring key.
pub fn key_id_of(sealed: &[u8]) -> Result<u32, CryptoError> {
    parse(sealed).map(|parsed| parsed.key_id)
}

/// The first bytes of every value [`seal`] writes under `key_id`: a
/// re-encryption job compares a stored value's prefix with this to find
/// values not yet under the current key (by the authenticated header, not
/// by any plain column beside it).
pub fn header_for(key_id: u32) -> [u8; HEADER_LEN] {
    header(key_id)
}

/// The key id in a stored value's first [`HEADER_LEN`] bytes (as
/// `substring(value FROM 1 FOR 5)` returns them), if they are a header of
/// this format.
pub fn key_id_of_header(header: &[u8]) -> Option<u32> {
    match header {
        [VERSION, a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

struct Parsed<'a> {
    key_id: u32,
    header: &'a [u8; HEADER_LEN],
    nonce: &'a [u8; NONCE_LEN],
    body: &'a [u8],
}

/// Splits without indexing, so no input length can cause a panic.
fn parse(sealed: &[u8]) -> Result<Parsed<'_>, CryptoError> {
    // Version first: a future format may have a different minimum length.
    match sealed.first() {
        None => return Err(CryptoError::Malformed),
        Some(&VERSION) => {}
        Some(&other) => return Err(CryptoError::UnsupportedVersion(other)),
    }
    if sealed.len() < OVERHEAD {
        return Err(CryptoError::Malformed);
    }
    let (header, rest) = sealed
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(CryptoError::Malformed)?;
    let (nonce, body) = rest
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(CryptoError::Malformed)?;
    let [_, a, b, c, d] = *header;
    Ok(Parsed {
        key_id: u32::from_be_bytes([a, b, c, d]),
        header,
        nonce,
        body,
    })
}

fn header(key_id: u32) -> [u8; HEADER_LEN] {
    let [a, b, c, d] = key_id.to_be_bytes();
    [VERSION, a, b, c, d]
}

fn cipher(key: &Key) -> Aes256Gcm {
    Aes256Gcm::new(key.expose().into())
}

fn associated_data(header: &[u8; HEADER_LEN], aad: &Aad) -> Vec<u8> {
    let fields: [&[u8]; 5] = [
        DOMAIN,
        header,
        aad.table.as_bytes(),
        aad.column.as_bytes(),
        aad.row_id.as_bytes(),
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| 8 + f.len()).sum());
    for field in fields {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;
    use CryptoError::*;

    const ROW: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

    fn ring(primary: u32, ids: &[(u32, u8)]) -> KeyRing {
        let keys = ids
            .iter()
            .map(|&(id, byte)| (id, Key::from_bytes([byte; 32])))
            .collect();
        KeyRing::new(primary, keys).unwrap()
    }

    fn aad() -> Aad<'static> {
        Aad::new("users", "email", ROW)
    }

    fn failure(ring: &KeyRing, aad: &Aad, sealed: &[u8]) -> CryptoError {
        open(ring, aad, sealed).expect_err("open should have failed")
    }

    #[test]
    fn round_trip_and_layout() {
        let ring = ring(1, &[(1, 1)]);
        let sealed = seal(&ring, &aad(), b"alice@example.com").unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 17);
        assert_eq!(sealed[..5], [VERSION, 0, 0, 0, 1]);
        assert_eq!(
            &*open(&ring, &aad(), &sealed).unwrap(),
            b"alice@example.com"
        );
        let empty = seal(&ring, &aad(), b"").unwrap();
        assert!(open(&ring, &aad(), &empty).unwrap().is_empty());
        let text = seal_str(&ring, &aad(), "Zoë").unwrap();
        assert_eq!(&**open_string(&ring, &aad(), &text).unwrap(), "Zoë");
        let binary = seal(&ring, &aad(), &[0xff, 0xfe]).unwrap();
        assert_eq!(open_string(&ring, &aad(), &binary).err(), Some(Malformed));
        // A fresh nonce per seal: equal plaintexts must not be linkable.
        assert_ne!(sealed, seal(&ring, &aad(), b"alice@example.com").unwrap());
    }

    #[test]
    fn any_flipped_bit_fails() {
        let ring = ring(1, &[(1, 1)]);
        let sealed = seal(&ring, &aad(), b"secret").unwrap();
        for bit in 0..sealed.len() * 8 {
            let mut tampered = sealed.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            assert!(open(&ring, &aad(), &tampered).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn key_id_is_authenticated() {
        // Ids 1 and 2 hold the same key, so only the header binding can
        // catch a value relabelled from one to the other.
        let ring = ring(1, &[(1, 7), (2, 7)]);
        let mut sealed = seal(&ring, &aad(), b"secret").unwrap();
        sealed[4] = 2;
        assert_eq!(failure(&ring, &aad(), &sealed), Decrypt);
    }

    #[test]
    fn moved_value_fails() {
        let ring = ring(1, &[(1, 1)]);
        let sealed = seal(&ring, &Aad::new("ab", "c", ROW), b"secret").unwrap();
        let elsewhere = [
            Aad::new("ab", "c", Uuid::from_u128(2)),
            Aad::new("ab", "d", ROW),
            Aad::new("ac", "c", ROW),
            Aad::new("a", "bc", ROW),
            Aad::new("abc", "", ROW),
        ];
        for other in elsewhere {
            assert_eq!(failure(&ring, &other, &sealed), Decrypt, "{other:?}");
        }
        assert!(open(&ring, &Aad::new("ab", "c", ROW), &sealed).is_ok());
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let old = ring(1, &[(1, 1)]);
        let sealed_old = seal(&old, &aad(), b"v1").unwrap();
        let new = ring(2, &[(2, 2), (1, 1)]);
        assert_eq!(&*open(&new, &aad(), &sealed_old).unwrap(), b"v1");
        let sealed_new = seal(&new, &aad(), b"v2").unwrap();
        assert_eq!(key_id_of(&sealed_old), Ok(1));
        assert_eq!(key_id_of(&sealed_new), Ok(2));
        assert_eq!(&*open(&new, &aad(), &sealed_new).unwrap(), b"v2");
        assert_eq!(failure(&old, &aad(), &sealed_new), UnknownKey(2));
    }

    #[test]
    fn unknown_key_is_an_error() {
        let sealed = seal(&ring(1, &[(1, 1)]), &aad(), b"x").unwrap();
        let other = ring(3, &[(3, 1)]);
        assert_eq!(failure(&other, &aad(), &sealed), UnknownKey(1));
    }

    #[test]
    fn truncated_and_unknown_version_fail_cleanly() {
        let ring = ring(1, &[(1, 1)]);
        let sealed = seal(&ring, &aad(), b"secret").unwrap();
        for len in 0..sealed.len() {
            let expected = if len < OVERHEAD { Malformed } else { Decrypt };
            assert_eq!(failure(&ring, &aad(), &sealed[..len]), expected, "{len}");
        }
        assert_eq!(key_id_of(&sealed[..OVERHEAD - 1]), Err(Malformed));
        let mut future = sealed.clone();
        future[0] = 2;
        assert_eq!(failure(&ring, &aad(), &future), UnsupportedVersion(2));
        assert_eq!(key_id_of(&future), Err(UnsupportedVersion(2)));
        assert_eq!(key_id_of(&[0]), Err(UnsupportedVersion(0)));
    }

    #[test]
    fn the_header_prefix_names_the_key() {
        let ring = ring(7, &[(7, 1)]);
        let sealed = seal(&ring, &aad(), b"x").unwrap();
        assert_eq!(sealed[..HEADER_LEN], header_for(7));
        assert_eq!(key_id_of_header(&sealed[..HEADER_LEN]), Some(7));
        assert_eq!(key_id_of_header(&[2, 0, 0, 0, 7]), None);
        assert_eq!(key_id_of_header(&[VERSION, 0, 0]), None);
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let ring = ring(1, &[(1, 1)]);
            let _ = open(&ring, &aad(), &bytes);
            let _ = key_id_of(&bytes);
            // Same again behind a valid header, to reach the decryption path.
            let mut framed = vec![VERSION, 0, 0, 0, 1];
            framed.extend_from_slice(&bytes);
            prop_assert!(open(&ring, &aad(), &framed).is_err());
        }

        #[test]
        fn seal_open_round_trips(
            plaintext in proptest::collection::vec(any::<u8>(), 0..512),
            table in any::<String>(),
            column in any::<String>(),
            row in any::<u128>(),
        ) {
            let ring = ring(9, &[(9, 9)]);
            let aad = Aad::new(&table, &column, Uuid::from_u128(row));
            let sealed = seal(&ring, &aad, &plaintext).unwrap();
            prop_assert_eq!(&**open(&ring, &aad, &sealed).unwrap(), &plaintext[..]);
            prop_assert_eq!(key_id_of(&sealed), Ok(9));
        }

        #[test]
        fn any_altered_byte_or_truncation_fails(
            plaintext in proptest::collection::vec(any::<u8>(), 0..256),
            index in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let ring = ring(1, &[(1, 1), (2, 2)]);
            let sealed = seal(&ring, &aad(), &plaintext).unwrap();
            let at = index.index(sealed.len());
            let mut altered = sealed.clone();
            altered[at] ^= flip;
            prop_assert!(open(&ring, &aad(), &altered).is_err());
            prop_assert!(open(&ring, &aad(), &sealed[..at]).is_err());
            let mut extended = sealed.clone();
            extended.push(flip);
            prop_assert!(open(&ring, &aad(), &extended).is_err());
        }

        #[test]
        fn a_value_opens_only_where_it_was_sealed(
            plaintext in proptest::collection::vec(any::<u8>(), 0..64),
            column in "[a-z_]{1,16}",
            row in any::<u128>(),
        ) {
            // The table, column and row id are authenticated: a ciphertext
            // copied to another cell does not open there.
            let ring = ring(1, &[(1, 1)]);
            let here = Aad::new("users", "email", Uuid::from_u128(row));
            let sealed = seal(&ring, &here, &plaintext).unwrap();
            let other_column = format!("{column}x");
            prop_assert!(open(&ring, &Aad::new("users", &other_column, Uuid::from_u128(row)), &sealed).is_err());
            prop_assert!(open(&ring, &Aad::new("users", "email", Uuid::from_u128(row ^ 1)), &sealed).is_err());
            prop_assert!(open(&ring, &Aad::new("notes", "email", Uuid::from_u128(row)), &sealed).is_err());
        }
    }
}
