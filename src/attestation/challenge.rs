//! The two hashes of the attestation flow, in one place for both
//! platforms (a leaf: the verifiers use it without the rest of the
//! feature).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use sha2::{Digest, Sha256};

/// The hash an attestation is made over: SHA-256 of the challenge (the
/// base64url text the server sent) followed by the DPoP key's RFC 7638
/// thumbprint (base64url text). Apple's `clientDataHash`; Play Integrity's
/// `requestHash` is its base64url form.
pub fn client_data_hash(challenge: impl AsRef<[u8]>, jkt: impl AsRef<[u8]>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(challenge);
    h.update(jkt);
    h.finalize().into()
}

/// The SHA-256 a challenge is stored under, or `None` when the text is not
/// a challenge this server could have made (32 bytes, base64url).
pub fn challenge_hash(challenge: &str) -> Option<[u8; 32]> {
    let raw = URL_SAFE_NO_PAD.decode(challenge).ok()?;
    (raw.len() == 32).then(|| Sha256::digest(&raw).into())
}
