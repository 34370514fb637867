//! Cryptography for the account API: field encryption, blind indexes, secret
//! hashing and randomness, all behind one small API so the rest of the crate
//! never touches a primitive directly.
//!
//! The threat this module answers is a leaked database (dump, backup, replica
//! or SQL injection read). Personal fields are sealed with AES-256-GCM under
//! keys that live outside the database ([`aead`], [`keyring`]); lookups on
//! those fields go through keyed blind indexes ([`blind_index`]); bearer
//! secrets are stored only as hashes, keyed where the secret is low-entropy
//! ([`hash`]). Every key is in a ring, so every key can rotate: sealed
//! values name their key in their header, and keyed MACs are stored with
//! their key's id ([`mac_ring`]). Every MAC and AEAD input is
//! domain-separated and length-prefixed, so a value computed for one
//! purpose, table, column or row is useless for another. All randomness comes from the OS CSPRNG
//! ([`random`]).
//!
//! Secret-bearing types redact themselves in `Debug` and zeroize on drop, so
//! a stray `{:?}` in a log line or a freed allocation does not leak a key.

pub mod aead;
pub mod blind_index;
pub mod hash;
pub mod keyring;
pub mod mac_ring;
pub mod pepper;
pub mod random;

pub use aead::Aad;
pub use blind_index::{BlindIndex, BlindIndexKeys};
pub use hash::{CodeHasher, CodeMac};
pub use keyring::{Key, KeyRing};
pub use mac_ring::{MacKeyId, MacKeyRing};
pub use pepper::PepperKeys;

/// Errors from this module. Messages are safe to log: none of them ever
/// contains key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The sealed value is too short or otherwise not in the stored format,
    /// or an opened value that should be text is not UTF-8.
    #[error("malformed sealed value")]
    Malformed,
    /// The sealed value starts with a format version this build cannot read.
    #[error("unsupported sealed value version {0}")]
    UnsupportedVersion(u8),
    /// The sealed value names a key id that is not in the key ring (a key was
    /// retired too early, or the value was never ours).
    #[error("no key with id {0} in the key ring")]
    UnknownKey(u32),
    /// Authentication failed: the value was tampered with, sealed under a
    /// different key, or moved to another table, column or row.
    #[error("decryption failed: tampered value, wrong key or wrong associated data")]
    Decrypt,
    /// Sealing failed: the OS random source failed or the plaintext exceeds
    /// AES-GCM's length limit. Returned instead of panicking.
    #[error("encryption failed")]
    Encrypt,
    /// A key or key ring specification was rejected. The message names the
    /// problem (and at most an entry's position), never the key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
}
