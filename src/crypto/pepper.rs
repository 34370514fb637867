//! The password pepper ring (`PASSWORD_PEPPER_KEYS`): argon2's secret input
//! for password hashes (see `accounts::password`).
//!
//! Like every ring it is `id:base64` entries, the first one current. One
//! addition: a first entry `-` means "no key is current yet", so every
//! process can learn a new key before any process hashes with it (a
//! process that met a hash under a key it does not hold could not check
//! that password). That is the first step of introducing a pepper,
//! `-,1:…`; the second makes it current, `1:…`. Rotating is the same two
//! steps with the old key first and then the new key first.

use std::fmt;

use super::keyring::{Key, KeyRing};
use super::CryptoError;

/// Pepper keys, and which of them (if any) new hashes use.
#[derive(Clone)]
pub struct PepperKeys {
    ring: KeyRing,
    current: Option<u32>,
}

impl PepperKeys {
    /// `id:base64[,id:base64…]`, current first, or `-,id:base64[,…]` for
    /// keys that only verify.
    pub fn parse(spec: &str) -> Result<Self, CryptoError> {
        let trimmed = spec.trim();
        match trimmed.split_once(',') {
            Some((first, rest)) if first.trim() == "-" => Ok(Self {
                ring: KeyRing::parse(rest)?,
                current: None,
            }),
            _ if trimmed == "-" => Err(CryptoError::InvalidKey(
                "`-` must be followed by at least one id:base64 key".to_owned(),
            )),
            _ => {
                let ring = KeyRing::parse(trimmed)?;
                Ok(Self {
                    current: Some(ring.primary_id()),
                    ring,
                })
            }
        }
    }

    /// The key new hashes use, if any.
    pub fn current_id(&self) -> Option<u32> {
        self.current
    }

    /// Every key id, in the ring's order.
    pub fn ids(&self) -> Vec<u32> {
        self.ring.ids()
    }

    pub(crate) fn get(&self, id: u32) -> Option<&Key> {
        self.ring.get(id)
    }

    pub fn contains(&self, id: u32) -> bool {
        self.get(id).is_some()
    }

    /// The value [`PepperKeys::parse`] reads back. Contains every key.
    pub fn to_spec(&self) -> String {
        match self.current {
            Some(_) => self.ring.to_spec(),
            None => format!("-,{}", self.ring.to_spec()),
        }
    }

    /// The two values of a rotation (`keys rotate --ring pepper`): a new
    /// key, numbered one above the highest, first known to every process
    /// while the current one stays current, then current itself. From no
    /// pepper at all (`None`), the new key is key 1.
    pub fn rotation(from: Option<&Self>) -> Result<(Self, Self), CryptoError> {
        let Some(from) = from else {
            let ring = KeyRing::generate_single(1);
            let staged = Self {
                ring: ring.clone(),
                current: None,
            };
            return Ok((staged, Self::with_current(ring)));
        };
        let rotated = from.ring.with_new_primary()?;
        // The same keys, the new one last and the current one unchanged.
        let mut keys = Vec::with_capacity(rotated.ids().len());
        for id in from.ids().into_iter().chain([rotated.primary_id()]) {
            if let Some(key) = rotated.get(id) {
                keys.push((id, key.clone()));
            }
        }
        let staged = Self {
            ring: KeyRing::new(from.ring.primary_id(), keys)?,
            current: from.current,
        };
        Ok((staged, Self::with_current(rotated)))
    }

    fn with_current(ring: KeyRing) -> Self {
        Self {
            current: Some(ring.primary_id()),
            ring,
        }
    }
}

impl fmt::Debug for PepperKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PepperKeys")
            .field("current_id", &self.current)
            .field("key_ids", &self.ids())
            .field("keys", &format_args!("<redacted>"))
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::keyring::KEY_LEN;

    fn b64(byte: u8) -> String {
        Key::from_bytes([byte; KEY_LEN]).to_base64()
    }

    #[test]
    fn the_first_key_is_current_unless_a_dash_leads() {
        let p = PepperKeys::parse(&format!("2:{},1:{}", b64(2), b64(1))).unwrap();
        assert_eq!((p.current_id(), p.ids()), (Some(2), vec![2, 1]));
        let staged = PepperKeys::parse(&format!(" - , 1:{}", b64(1))).unwrap();
        assert_eq!((staged.current_id(), staged.ids()), (None, vec![1]));
        assert_eq!(
            PepperKeys::parse(&staged.to_spec()).unwrap().current_id(),
            None
        );
        assert!(PepperKeys::parse("-").is_err());
        assert!(PepperKeys::parse("-,").is_err());
        assert!(PepperKeys::parse("0:abc").is_err());
        assert!(!format!("{p:?}").contains(&b64(2)));
    }

    #[test]
    fn a_rotation_stages_the_new_key_before_making_it_current() {
        let (staged, current) = PepperKeys::rotation(None).unwrap();
        assert_eq!((staged.current_id(), staged.ids()), (None, vec![1]));
        assert_eq!((current.current_id(), current.ids()), (Some(1), vec![1]));
        let (staged, current) = PepperKeys::rotation(Some(&current)).unwrap();
        assert_eq!((staged.current_id(), staged.ids()), (Some(1), vec![1, 2]));
        assert_eq!((current.current_id(), current.ids()), (Some(2), vec![2, 1]));
        // Staging keeps "no key current" when there was none.
        let none = PepperKeys::parse(&format!("-,1:{}", b64(1))).unwrap();
        let (staged, _) = PepperKeys::rotation(Some(&none)).unwrap();
        assert_eq!((staged.current_id(), staged.ids()), (None, vec![1, 2]));
    }
}
