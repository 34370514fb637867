//! Test stand-ins for the Play Console keys and a maker of real Play
//! Integrity tokens (A256KW + A256GCM JWE around an ES256 JWS), for the
//! unit tests of `attestation::play` and for API tests.
//!
//! Include it with `#[path = "…/tests/support/play_integrity.rs"] mod
//! play_integrity;`. It names no item of the crate (only dependencies), so
//! it can be included from anywhere without tying modules together.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm, Nonce,
};
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine as _,
};
use hmac::{Hmac, Mac};
use p256::{
    ecdsa::{signature::Signer, Signature, SigningKey},
    pkcs8::EncodePublicKey,
};
use rand::{rngs::OsRng, RngCore};
use serde_json::{json, Value};
use sha2::Sha256;

/// The test package name the helpers default to.
pub const TEST_PACKAGE: &str = "com.example.secureapp";

/// A random AES-256 decryption key and a random P-256 signing key, as the
/// Play Console would hold them.
pub struct PlayKeys {
    pub decryption_key: [u8; 32],
    pub signing_key: SigningKey,
}

impl PlayKeys {
    pub fn generate() -> Self {
        let mut decryption_key = [0u8; 32];
        OsRng.fill_bytes(&mut decryption_key);
        Self {
            decryption_key,
            signing_key: random_signing_key(),
        }
    }

    /// `PLAY_INTEGRITY_DECRYPTION_KEY` (standard base64).
    pub fn decryption_key_b64(&self) -> String {
        STANDARD.encode(self.decryption_key)
    }

    /// The verification key as DER SubjectPublicKeyInfo.
    pub fn verification_key_der(&self) -> Vec<u8> {
        self.signing_key
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    /// `PLAY_INTEGRITY_VERIFICATION_KEY` (standard base64 of the DER).
    pub fn verification_key_b64(&self) -> String {
        STANDARD.encode(self.verification_key_der())
    }

    /// A well-formed token for `payload`, as Google would make it.
    pub fn token(&self, payload: &Value) -> String {
        let jws = sign_es256(&self.signing_key, &json!({"alg": "ES256"}), payload);
        encrypt_a256kw(&self.decryption_key, &jwe_header(), jws.as_bytes())
    }
}

/// A P-256 signing key from the OS random source.
pub fn random_signing_key() -> SigningKey {
    loop {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        if let Ok(key) = SigningKey::from_slice(&bytes) {
            return key;
        }
    }
}

/// The protected header Google's tokens carry.
pub fn jwe_header() -> Value {
    json!({"alg": "A256KW", "enc": "A256GCM"})
}

/// `base64url(SHA-256(challenge ‖ thumbprint))` without padding.
pub fn request_hash(challenge: &[u8], thumbprint: &[u8]) -> String {
    use sha2::Digest;
    let mut hasher = Sha256::new();
    hasher.update(challenge);
    hasher.update(thumbprint);
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// A passing verdict payload (standard request) for `package`, made at
/// `timestamp_millis`.
pub fn verdict(package: &str, request_hash: &str, timestamp_millis: i64) -> Value {
    json!({
        "requestDetails": {
            "requestPackageName": package,
            "requestHash": request_hash,
            "timestampMillis": timestamp_millis.to_string(),
        },
        "appIntegrity": {
            "appRecognitionVerdict": "PLAY_RECOGNIZED",
            "packageName": package,
            "certificateSha256Digest": ["6a6a1474b5cbbb2b1aa57e0bc3"],
            "versionCode": "42",
        },
        "deviceIntegrity": {
            "deviceRecognitionVerdict": ["MEETS_BASIC_INTEGRITY", "MEETS_DEVICE_INTEGRITY"],
        },
        "accountDetails": {
            "appLicensingVerdict": "LICENSED",
        },
        "environmentDetails": {
            "appAccessRiskVerdict": {"appsDetected": ["KNOWN_INSTALLED"]},
        },
    })
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64url_json(value: &Value) -> String {
    b64url(&serde_json::to_vec(value).unwrap())
}

/// A compact JWS of `payload` with `header`, signed ES256 (raw `r ‖ s`)
/// by `key` whatever the header says.
pub fn sign_es256(key: &SigningKey, header: &Value, payload: &Value) -> String {
    let signing_input = format!("{}.{}", b64url_json(header), b64url_json(payload));
    let signature: Signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&signature.to_bytes()))
}

/// A compact JWS of `payload` with `header`, MACed HS256 with `secret`.
pub fn sign_hs256(secret: &[u8], header: &Value, payload: &Value) -> String {
    let signing_input = format!("{}.{}", b64url_json(header), b64url_json(payload));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&mac.finalize().into_bytes()))
}

/// An unsigned JWS (`alg: none`, empty signature part).
pub fn unsigned_jws(payload: &Value) -> String {
    format!(
        "{}.{}.",
        b64url_json(&json!({"alg": "none"})),
        b64url_json(payload)
    )
}

/// The five parts of a compact JWE, before encoding, for tampering.
pub struct JweParts {
    pub header: String,
    pub encrypted_key: Vec<u8>,
    pub iv: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub tag: Vec<u8>,
}

impl JweParts {
    pub fn compact(&self) -> String {
        format!(
            "{}.{}.{}.{}.{}",
            self.header,
            b64url(&self.encrypted_key),
            b64url(&self.iv),
            b64url(&self.ciphertext),
            b64url(&self.tag)
        )
    }
}

/// Encrypts `plaintext` under a random content key wrapped (RFC 3394) with
/// `kek` (16 bytes: AES-128 KW, 32 bytes: AES-256 KW), AES-256-GCM with the
/// encoded `header` as AAD. The header is taken as given, so tests can
/// make tokens whose header lies about the algorithms.
pub fn encrypt_parts(kek: &[u8], header: &Value, plaintext: &[u8]) -> JweParts {
    let mut cek = [0u8; 32];
    OsRng.fill_bytes(&mut cek);
    let mut encrypted_key = vec![0u8; 40];
    match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek)
            .unwrap()
            .wrap(&cek, &mut encrypted_key)
            .unwrap(),
        32 => aes_kw::KekAes256::try_from(kek)
            .unwrap()
            .wrap(&cek, &mut encrypted_key)
            .unwrap(),
        other => panic!("no AES key wrap with a {other}-byte key"),
    }
    let mut iv = [0u8; 12];
    OsRng.fill_bytes(&mut iv);
    let header = b64url_json(header);
    let mut sealed = Aes256Gcm::new_from_slice(&cek)
        .unwrap()
        .encrypt(
            Nonce::from_slice(&iv),
            Payload {
                msg: plaintext,
                aad: header.as_bytes(),
            },
        )
        .unwrap();
    let tag = sealed.split_off(sealed.len() - 16);
    JweParts {
        header,
        encrypted_key,
        iv: iv.to_vec(),
        ciphertext: sealed,
        tag,
    }
}

/// [`encrypt_parts`], compact.
pub fn encrypt_a256kw(kek: &[u8], header: &Value, plaintext: &[u8]) -> String {
    encrypt_parts(kek, header, plaintext).compact()
}
