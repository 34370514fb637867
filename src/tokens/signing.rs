//! The Ed25519 signing-key ring: the current key signs, every key verifies,
//! and each key's `kid` is derived from the key itself.
//!
//! The threat is a key being misused or leaked through the ring itself: a
//! configured `kid` that drifts from the key it names (tokens then verify
//! under the wrong key, or rotation silently breaks), or private key bytes
//! ending up in a log line. So a `kid` is the RFC 7638 JWK thumbprint of the
//! public key (stable, derived, never configured), `Debug` prints kids only,
//! and the private parts live in types that zeroize on drop.
//!
//! Rotation: put the new key first and keep the old one after it for at least
//! one access-token lifetime; tokens signed by the old key keep verifying and
//! the JWKS document lists both, then the old key is removed.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rand::rngs::OsRng;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::TokenError;

/// One Ed25519 key of the ring.
#[derive(Clone)]
pub struct SigningKey {
    /// RFC 7638 thumbprint of the public JWK.
    pub(super) kid: String,
    /// PKCS#8 DER of the private key, as jsonwebtoken signs with it.
    pub(super) encoding: EncodingKey,
    /// The raw 32-byte public key, as jsonwebtoken verifies with it.
    pub(super) decoding: DecodingKey,
    pub(super) public: [u8; 32],
    /// Canonical PKCS#8 PEM, kept so [`SigningKeys::to_pem`] cannot fail.
    pem: Zeroizing<String>,
}

impl SigningKey {
    /// Builds a ring entry from a decoded private key. The PKCS#8 encodings
    /// are made once here so that signing and persisting never fail later.
    pub(super) fn from_dalek(key: &ed25519_dalek::SigningKey) -> Result<Self, TokenError> {
        let invalid = |what: &str| TokenError::InvalidKey(format!("cannot encode key: {what}"));
        let public = key.verifying_key().to_bytes();
        let der = key.to_pkcs8_der().map_err(|_| invalid("PKCS#8 DER"))?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| invalid("PKCS#8 PEM"))?;
        let this = Self {
            kid: jwk_thumbprint(&public),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            decoding: DecodingKey::from_ed_der(&public),
            public,
            pem,
        };
        this.self_test()?;
        Ok(this)
    }

    /// Signs and verifies a probe through jsonwebtoken, so a key it would not
    /// accept fails at start-up rather than on the first login.
    fn self_test(&self) -> Result<(), TokenError> {
        let probe = b"mobile-backend/signing-key/self-test";
        let failed = || TokenError::InvalidKey(format!("key {} failed its self-test", self.kid));
        let sig = jsonwebtoken::crypto::sign(probe, &self.encoding, Algorithm::EdDSA)
            .map_err(|_| failed())?;
        match jsonwebtoken::crypto::verify(&sig, probe, &self.decoding, Algorithm::EdDSA) {
            Ok(true) => Ok(()),
            _ => Err(failed()),
        }
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// The public JWK (RFC 8037 §2), with `kid`, `alg` and `use`.
    fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

/// The ring: `current` signs; `current` and every `previous` key verify.
/// Holding the current key apart makes "the ring is never empty" a fact of
/// the type rather than a check that could be forgotten.
#[derive(Clone)]
pub struct SigningKeys {
    current: SigningKey,
    previous: Vec<SigningKey>,
    /// Tokens this ring has verified (shared by clones; see `verified`).
    pub(super) verified: std::sync::Arc<super::verified::VerifiedTokens>,
}

impl SigningKeys {
    /// Parses the value of `SIGNING_KEYS`: PKCS#8 PEM Ed25519 private keys
    /// inline, or a comma-separated list of files holding them. The first key
    /// is the current one. The format is described in `tokens/spec.rs`.
    pub fn parse(spec: &str) -> Result<Self, TokenError> {
        let keys = super::spec::parse_spec(spec)?;
        let mut ring = keys.iter().map(SigningKey::from_dalek);
        let current = ring
            .next()
            .ok_or_else(|| TokenError::InvalidKey("no keys".into()))??;
        let previous = ring.collect::<Result<Vec<_>, _>>()?;
        let this = Self {
            current,
            previous,
            verified: Default::default(),
        };
        // The same key twice is a configuration slip (say, a rotation half
        // done); refuse it rather than publish a JWKS with duplicate kids.
        for (i, key) in this.iter().enumerate() {
            if this.iter().take(i).any(|k| k.kid == key.kid) {
                return Err(TokenError::InvalidKey(format!(
                    "key {} appears more than once (kid {})",
                    i + 1,
                    key.kid
                )));
            }
        }
        Ok(this)
    }

    /// A fresh Ed25519 private key as PKCS#8 PEM, for development and
    /// `keys generate-signing`. The seed comes straight from the OS RNG (an
    /// Ed25519 private key is 32 uniformly random bytes, RFC 8032 §5.1.5).
    pub fn generate_pem() -> Result<String, TokenError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng
            .try_fill_bytes(seed.as_mut())
            .map_err(|_| TokenError::Internal("the OS random number generator failed".into()))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| TokenError::Internal("cannot encode a generated key".into()))?;
        Ok(pem.as_str().to_owned())
    }

    /// All keys as concatenated PKCS#8 PEM, current first: [`Self::parse`]
    /// reads it back into the same ring. This is private key material.
    pub fn to_pem(&self) -> String {
        self.iter().map(|k| k.pem.as_str()).collect()
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// Every key, current first.
    pub fn iter(&self) -> impl Iterator<Item = &SigningKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }

    /// The ring key with this `kid`, if any.
    pub(super) fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.iter().find(|k| k.kid == kid)
    }

    /// The JWKS document (RFC 7517 §5) for `/.well-known/jwks.json`: every
    /// key of the ring, public parts only, so resource servers keep verifying
    /// tokens signed by the previous key during a rotation.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self.iter().map(SigningKey::public_jwk).collect();
        serde_json::json!({ "keys": keys })
    }
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous: Vec<&str> = self.previous.iter().map(SigningKey::kid).collect();
        f.debug_struct("SigningKeys")
            .field("current", &self.current.kid)
            .field("previous", &previous)
            .finish_non_exhaustive()
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key: base64url(SHA-256) of the
/// JWK's required members (`crv`, `kty`, `x`, RFC 8037 §2) in lexicographic
/// order with no whitespace. `x` is base64url, so nothing needs escaping and
/// the canonical JSON can be written directly.
pub(super) fn jwk_thumbprint(public: &[u8; 32]) -> String {
    let x = URL_SAFE_NO_PAD.encode(public);
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}
