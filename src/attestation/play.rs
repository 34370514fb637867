//! Google Play Integrity: decrypting and verifying an integrity token locally (A256KW + A256GCM JWE around an ES256 JWS) and checking its verdicts.
//!
//! An Android app asks the Play Integrity API for a token, passing a
//! *request hash* that binds the token to one server challenge and to the
//! app's device key. Google answers with a token the app forwards to us.
//! The token is a compact JWE (RFC 7516) whose plaintext is a compact JWS
//! (RFC 7515) whose payload is the JSON "integrity verdict".
//!
//! Two steps, kept apart so that another decoding mode can replace the
//! first one:
//!
//! 1. [`IntegrityTokenDecoder::decode`] turns the token into the verdict
//!    payload. [`LocalDecoder`] does it with the two keys from the Play
//!    Console (Play Integrity → response encryption → "manage and download
//!    my response encryption keys"):
//!    - the JWE must have exactly five parts, a protected header with
//!      `alg: A256KW` and `enc: A256GCM` and nothing that changes its
//!      meaning (`zip` and `crit` are refused), a 40-byte wrapped content
//!      key (RFC 3394 unwrap with the decryption key), a 96-bit IV and a
//!      128-bit tag; the additional authenticated data is the ASCII of the
//!      encoded protected header, as RFC 7516 §5.2 says;
//!    - the JWS must have exactly three parts, `alg: ES256` (no `crit`),
//!      and a 64-byte `r ‖ s` signature that verifies with the P-256
//!      verification key;
//!    - its payload must be a JSON object.
//!
//!    A token longer than [`MAX_TOKEN_LEN`] is refused before any parsing.
//! 2. [`check_verdict`] reads the payload and requires: `requestDetails.
//!    requestPackageName` and `appIntegrity.packageName` equal to the
//!    configured package, `requestDetails.requestHash` equal to the hash the
//!    caller expects (compared in constant time), `requestDetails.
//!    timestampMillis` no older than [`PlayIntegrityConfig::max_age`] and no
//!    more than [`MAX_FUTURE_SKEW`] ahead of the service clock,
//!    `appIntegrity.appRecognitionVerdict == PLAY_RECOGNIZED` and
//!    `deviceIntegrity.deviceRecognitionVerdict` containing
//!    `MEETS_DEVICE_INTEGRITY`. The licensing verdict, certificate digests
//!    and version code are returned, not judged.
//!
//! Cost to an attacker: a token is at most [`MAX_TOKEN_LEN`] bytes, and the
//! ECDSA verification runs only after the AES-GCM tag has verified, which
//! takes the decryption key; a forged token costs one key unwrap and at
//! most one GCM pass over 16 KiB.
//!
//! Use from a handler (the caller computes the expected request hash from
//! the single-use challenge and the DPoP key's thumbprint):
//!
//! ```text
//! let cfg = PlayIntegrityConfig::from_base64(&dec_b64, &ver_b64, &package)?;   // at startup
//! let decoder: Arc<dyn IntegrityTokenDecoder> = Arc::new(LocalDecoder::new(&cfg)?);
//! let payload = decoder.decode(&body.integrity_token).await?;
//! let expected = request_hash(challenge.as_bytes(), thumbprint.as_bytes());
//! let verdict = check_verdict(&cfg, &payload, &expected, clock.now())?;
//! ```
//!
//! Tests make real tokens with `tests/support/play_integrity.rs` (a random
//! AES-256 key and P-256 key stand in for the Play Console's); an API test
//! includes it with `#[path = "../support/play_integrity.rs"] mod
//! play_integrity;`.
//!
//! Classic requests: the older "classic" Play Integrity request carries a
//! caller-chosen `nonce` in `requestDetails` instead of `requestHash`. Only
//! standard requests are accepted here: a verdict with a `nonce` and no
//! `requestHash` is refused with [`PlayIntegrityError::ClassicRequest`]
//! (the API contract has the app make a standard request with
//! `requestHash = base64url(SHA-256(challenge ‖ thumbprint))`).
//!
//! Google-side decoding: instead of decrypting locally, [`google::GoogleDecoder`]
//! sends the token to Google's `decodeIntegrityToken` endpoint, authenticated
//! as a Google Cloud service account linked to the app in the Play Console,
//! and hands the answer's `tokenPayloadExternal` to the same
//! [`check_verdict`]. The Play Console keys are then not needed; the
//! configuration is built with [`PlayIntegrityConfig::verdict_only`]. That
//! mode is tested against a fake Google only (see its module docs).

use std::{future::Future, pin::Pin, time::Duration};

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm, Nonce,
};
use aes_kw::KekAes256;
use base64::{
    alphabet,
    engine::{
        general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD},
        DecodePaddingMode,
    },
    Engine as _,
};
use p256::{
    ecdsa::{signature::Verifier, Signature, VerifyingKey},
    pkcs8::DecodePublicKey,
};
use serde::Deserialize;
use serde_json::Value;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// The longest integrity token read. Real tokens are a few KiB.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// How far ahead of the service clock a verdict's timestamp may be.
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(60);
/// The default for [`PlayIntegrityConfig::max_age`].
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// The app verdict this module accepts.
pub const PLAY_RECOGNIZED: &str = "PLAY_RECOGNIZED";
/// The device label this module requires.
pub const MEETS_DEVICE_INTEGRITY: &str = "MEETS_DEVICE_INTEGRITY";

/// Why a configuration, a token or a verdict was refused. Each failed
/// check has its own variant (for logs and tests); a client should be told
/// no more than "attestation invalid". Messages never include token
/// content.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PlayIntegrityError {
    // Configuration.
    #[error("the Play Integrity decryption key is not base64 of 32 bytes")]
    InvalidDecryptionKey,
    #[error("the Play Integrity verification key is not base64 DER of a P-256 public key")]
    InvalidVerificationKey,
    #[error("the Play Integrity package name is empty")]
    InvalidPackageName,
    #[error("the service-account key is not JSON with client_email, token_uri and an RSA private_key (PEM)")]
    InvalidServiceAccount,

    // Google's decoding mode.
    #[error("Google's token endpoint refused the service account (HTTP {0})")]
    GoogleAuthFailed(u16),
    #[error("Google refused to decode the integrity token (HTTP {0})")]
    GoogleRefused(u16),
    #[error("Google's Play Integrity API is unavailable: {0}")]
    GoogleUnavailable(&'static str),

    // The JWE.
    #[error("integrity token longer than {MAX_TOKEN_LEN} bytes")]
    TokenTooLarge,
    #[error("integrity token is not a compact JWE of five base64url parts")]
    MalformedJwe,
    #[error("integrity token JWE header is not alg A256KW, enc A256GCM without zip or crit")]
    UnsupportedJweHeader,
    #[error("integrity token content key does not unwrap with the decryption key")]
    KeyUnwrapFailed,
    #[error("integrity token does not decrypt (wrong key or tampered)")]
    DecryptionFailed,

    // The JWS inside.
    #[error("integrity token plaintext is not a compact JWS of three base64url parts")]
    MalformedJws,
    #[error("integrity token JWS header is not alg ES256 without crit")]
    UnsupportedJwsAlgorithm,
    #[error("integrity token signature does not verify with the verification key")]
    BadSignature,
    #[error("integrity token payload is not a JSON object")]
    MalformedPayload,

    // The verdict.
    #[error("integrity verdict lacks {0} or it has the wrong type")]
    MissingField(&'static str),
    #[error("integrity verdict requestPackageName is not the configured package")]
    RequestPackageMismatch,
    #[error("integrity verdict appIntegrity.packageName is not the configured package")]
    AppPackageMismatch,
    #[error("integrity verdict comes from a classic request (nonce), only standard requests (requestHash) are accepted")]
    ClassicRequest,
    #[error("integrity verdict requestHash is not the expected hash")]
    RequestHashMismatch,
    #[error("integrity verdict is older than the allowed age")]
    Stale,
    #[error("integrity verdict timestamp is in the future")]
    FromTheFuture,
    #[error("integrity verdict app recognition is not PLAY_RECOGNIZED")]
    AppNotRecognized,
    #[error("integrity verdict device recognition lacks MEETS_DEVICE_INTEGRITY")]
    DeviceIntegrityNotMet,
}

/// The Play Console keys and the app they are for.
pub struct PlayIntegrityConfig {
    /// `PLAY_INTEGRITY_DECRYPTION_KEY`: the AES-256 key that unwraps each
    /// token's content key. Wiped on drop.
    pub decryption_key: [u8; 32],
    /// `PLAY_INTEGRITY_VERIFICATION_KEY`: DER SubjectPublicKeyInfo of the
    /// P-256 key that signs the verdicts.
    pub verification_key_spki_der: Vec<u8>,
    /// `PLAY_INTEGRITY_PACKAGE_NAME`: the Android application id.
    pub package_name: String,
    /// How old a verdict may be ([`DEFAULT_MAX_AGE`]).
    pub max_age: Duration,
}

impl PlayIntegrityConfig {
    /// Reads the two keys as the Play Console shows them (standard base64;
    /// URL-safe base64, missing padding and embedded whitespace are
    /// tolerated), checks that the decryption key is 32 bytes and that the
    /// verification key is a P-256 public key, and sets `max_age` to
    /// [`DEFAULT_MAX_AGE`].
    pub fn from_base64(
        decryption_key_b64: &str,
        verification_key_b64: &str,
        package: &str,
    ) -> Result<Self, PlayIntegrityError> {
        let raw = Zeroizing::new(
            decode_key_base64(decryption_key_b64)
                .ok_or(PlayIntegrityError::InvalidDecryptionKey)?,
        );
        let decryption_key: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| PlayIntegrityError::InvalidDecryptionKey)?;
        let verification_key_spki_der = decode_key_base64(verification_key_b64)
            .ok_or(PlayIntegrityError::InvalidVerificationKey)?;
        VerifyingKey::from_public_key_der(&verification_key_spki_der)
            .map_err(|_| PlayIntegrityError::InvalidVerificationKey)?;
        let package_name = package.trim();
        if package_name.is_empty() {
            return Err(PlayIntegrityError::InvalidPackageName);
        }
        Ok(Self {
            decryption_key,
            verification_key_spki_der,
            package_name: package_name.to_owned(),
            max_age: DEFAULT_MAX_AGE,
        })
    }
}

impl PlayIntegrityConfig {
    /// The configuration of Google's decoding mode: only the package and
    /// the verdict age matter there. The key fields hold no key (all-zero
    /// decryption key, empty verification key); [`LocalDecoder::new`]
    /// refuses such a configuration.
    pub fn verdict_only(package: &str) -> Result<Self, PlayIntegrityError> {
        let package_name = package.trim();
        if package_name.is_empty() {
            return Err(PlayIntegrityError::InvalidPackageName);
        }
        Ok(Self {
            decryption_key: [0; 32],
            verification_key_spki_der: Vec::new(),
            package_name: package_name.to_owned(),
            max_age: DEFAULT_MAX_AGE,
        })
    }
}

impl std::fmt::Debug for PlayIntegrityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayIntegrityConfig")
            .field("decryption_key", &"[redacted]")
            .field(
                "verification_key_spki_der",
                &format_args!("{} bytes", self.verification_key_spki_der.len()),
            )
            .field("package_name", &self.package_name)
            .field("max_age", &self.max_age)
            .finish()
    }
}

impl Drop for PlayIntegrityConfig {
    fn drop(&mut self) {
        self.decryption_key.zeroize();
    }
}

/// Base64 with either alphabet, padding optional, whitespace ignored.
fn decode_key_base64(text: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
    let compact: Zeroizing<String> =
        Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
    if compact.is_empty() {
        return None;
    }
    STANDARD
        .decode(compact.as_bytes())
        .or_else(|_| URL_SAFE.decode(compact.as_bytes()))
        .ok()
}

/// The checked verdict of one integrity token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayVerdict {
    /// The app's package (equal to the configured one).
    pub package_name: String,
    /// `appIntegrity.appRecognitionVerdict` (always `PLAY_RECOGNIZED` here).
    pub app_recognition: String,
    /// `deviceIntegrity.deviceRecognitionVerdict` (contains
    /// `MEETS_DEVICE_INTEGRITY`, maybe also `MEETS_STRONG_INTEGRITY`, …).
    pub device_recognition: Vec<String>,
    /// `accountDetails.appLicensingVerdict` (`LICENSED`, `UNLICENSED`,
    /// `UNEVALUATED`), when present. Not judged.
    pub licensing: Option<String>,
    /// `appIntegrity.certificateSha256Digest`: the signing certificates'
    /// SHA-256 (base64url, as Google gives them). Empty when absent.
    pub certificate_sha256: Vec<String>,
    /// `appIntegrity.versionCode`, when present.
    pub version_code: Option<String>,
    /// `requestDetails.timestampMillis`: when Google made the verdict.
    pub timestamp_millis: i64,
}

/// The future [`IntegrityTokenDecoder::decode`] returns.
pub type DecodeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Value, PlayIntegrityError>> + Send + 'a>>;

/// Turns an integrity token into its verdict payload (the JSON object that
/// [`check_verdict`] reads). Behind a trait so that Google's server-side
/// `decodeIntegrityToken` call can stand in for local decryption; the
/// future is boxed so that such an implementation can do I/O.
pub trait IntegrityTokenDecoder: Send + Sync {
    fn decode<'a>(&'a self, token: &'a str) -> DecodeFuture<'a>;
}

/// Decrypts and verifies tokens with the Play Console keys, in process.
pub struct LocalDecoder {
    kek: KekAes256,
    verifying_key: VerifyingKey,
}

impl std::fmt::Debug for LocalDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDecoder").finish_non_exhaustive()
    }
}

/// The protected header of the outer JWE. A repeated member is a
/// deserialisation error (serde refuses duplicate struct fields).
#[derive(Deserialize)]
struct JweHeader {
    alg: String,
    enc: String,
    #[serde(default)]
    zip: Present,
    #[serde(default)]
    crit: Present,
}

/// The protected header of the inner JWS.
#[derive(Deserialize)]
struct JwsHeader {
    alg: String,
    #[serde(default)]
    crit: Present,
}

/// Whether a header member is there at all, whatever its value (`null`
/// included: an `Option` would read `"zip": null` as absent).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(Present(true))
    }
}

impl LocalDecoder {
    /// Builds a decoder from the configuration's keys.
    pub fn new(cfg: &PlayIntegrityConfig) -> Result<Self, PlayIntegrityError> {
        let verifying_key = VerifyingKey::from_public_key_der(&cfg.verification_key_spki_der)
            .map_err(|_| PlayIntegrityError::InvalidVerificationKey)?;
        Ok(Self {
            kek: KekAes256::from(cfg.decryption_key),
            verifying_key,
        })
    }

    /// The work of [`IntegrityTokenDecoder::decode`], without a future.
    pub fn decode_now(&self, token: &str) -> Result<Value, PlayIntegrityError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(PlayIntegrityError::TokenTooLarge);
        }
        let jws = self.decrypt(token)?;
        self.verify(&jws)
    }

    /// JWE (A256KW, A256GCM) → the plaintext, which must be UTF-8.
    fn decrypt(&self, token: &str) -> Result<Zeroizing<String>, PlayIntegrityError> {
        let [header_b64, wrapped_b64, iv_b64, ciphertext_b64, tag_b64] =
            split_exact::<5>(token).ok_or(PlayIntegrityError::MalformedJwe)?;
        let header_json = b64url(header_b64).ok_or(PlayIntegrityError::MalformedJwe)?;
        let header: JweHeader =
            parse_header(&header_json).ok_or(PlayIntegrityError::MalformedJwe)?;
        if header.alg != "A256KW" || header.enc != "A256GCM" || header.zip.0 || header.crit.0 {
            return Err(PlayIntegrityError::UnsupportedJweHeader);
        }

        let wrapped = b64url(wrapped_b64).ok_or(PlayIntegrityError::MalformedJwe)?;
        let iv = b64url(iv_b64).ok_or(PlayIntegrityError::MalformedJwe)?;
        let ciphertext = b64url(ciphertext_b64).ok_or(PlayIntegrityError::MalformedJwe)?;
        let tag = b64url(tag_b64).ok_or(PlayIntegrityError::MalformedJwe)?;
        // A 256-bit content key wrapped is 40 bytes; GCM here uses a 96-bit
        // IV and a 128-bit tag, nothing else.
        if wrapped.len() != 40 || iv.len() != 12 || tag.len() != 16 {
            return Err(PlayIntegrityError::MalformedJwe);
        }

        let mut cek = Zeroizing::new([0u8; 32]);
        self.kek
            .unwrap(&wrapped, cek.as_mut_slice())
            .map_err(|_| PlayIntegrityError::KeyUnwrapFailed)?;
        let cipher = Aes256Gcm::new_from_slice(cek.as_slice())
            .map_err(|_| PlayIntegrityError::KeyUnwrapFailed)?;

        let mut sealed = ciphertext;
        sealed.extend_from_slice(&tag);
        let plaintext = cipher
            .decrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: &sealed,
                    aad: header_b64.as_bytes(),
                },
            )
            .map_err(|_| PlayIntegrityError::DecryptionFailed)?;
        String::from_utf8(plaintext)
            .map(Zeroizing::new)
            .map_err(|_| PlayIntegrityError::MalformedJws)
    }

    /// JWS (ES256) → its payload as a JSON object.
    fn verify(&self, jws: &str) -> Result<Value, PlayIntegrityError> {
        let [header_b64, payload_b64, signature_b64] =
            split_exact::<3>(jws).ok_or(PlayIntegrityError::MalformedJws)?;
        let header_json = b64url(header_b64).ok_or(PlayIntegrityError::MalformedJws)?;
        let header: JwsHeader =
            parse_header(&header_json).ok_or(PlayIntegrityError::MalformedJws)?;
        if header.alg != "ES256" || header.crit.0 {
            return Err(PlayIntegrityError::UnsupportedJwsAlgorithm);
        }
        let signature_bytes = b64url(signature_b64).ok_or(PlayIntegrityError::MalformedJws)?;
        if signature_bytes.len() != 64 {
            return Err(PlayIntegrityError::BadSignature);
        }
        let signature = Signature::from_slice(&signature_bytes)
            .map_err(|_| PlayIntegrityError::BadSignature)?;
        // The signing input is the ASCII of `header.payload`, a prefix of
        // the JWS.
        let signing_input = jws
            .get(..header_b64.len() + 1 + payload_b64.len())
            .ok_or(PlayIntegrityError::MalformedJws)?;
        self.verifying_key
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| PlayIntegrityError::BadSignature)?;

        let payload = b64url(payload_b64).ok_or(PlayIntegrityError::MalformedPayload)?;
        match serde_json::from_slice::<Value>(&payload) {
            Ok(value @ Value::Object(_)) => Ok(value),
            _ => Err(PlayIntegrityError::MalformedPayload),
        }
    }
}

impl IntegrityTokenDecoder for LocalDecoder {
    fn decode<'a>(&'a self, token: &'a str) -> DecodeFuture<'a> {
        let result = self.decode_now(token);
        Box::pin(std::future::ready(result))
    }
}

/// Splits a compact serialisation into exactly `N` dot-separated parts;
/// `None` for any other count.
fn split_exact<const N: usize>(text: &str) -> Option<[&str; N]> {
    let mut parts = [""; N];
    let mut pieces = text.split('.');
    for slot in parts.iter_mut() {
        *slot = pieces.next()?;
    }
    if pieces.next().is_some() {
        return None;
    }
    Some(parts)
}

/// A JOSE header: a JSON object (serde would also read a struct from a
/// JSON array, by position), no member twice.
fn parse_header<T: serde::de::DeserializeOwned>(json: &[u8]) -> Option<T> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Unpadded base64url (RFC 7515 §2); an empty part is refused.
fn b64url(part: &str) -> Option<Vec<u8>> {
    if part.is_empty() {
        return None;
    }
    URL_SAFE_NO_PAD.decode(part).ok()
}

/// `base64url(SHA-256(challenge ‖ thumbprint))`, unpadded: the request hash
/// an app passes to a standard Play Integrity request. The two byte strings
/// are concatenated as given; the caller decides their encoding (the API
/// contract's challenge string and the RFC 7638 thumbprint, both as ASCII).
pub fn request_hash(challenge: &[u8], thumbprint: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(super::challenge::client_data_hash(challenge, thumbprint))
}

/// Checks a decoded verdict payload against the configuration, the request
/// hash the caller computed (`base64url(SHA-256(challenge ‖ thumbprint))`)
/// and the service clock, and returns what it says.
pub fn check_verdict(
    cfg: &PlayIntegrityConfig,
    payload: &Value,
    expected_request_hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PlayVerdict, PlayIntegrityError> {
    use PlayIntegrityError as E;

    let request = payload
        .get("requestDetails")
        .filter(|v| v.is_object())
        .ok_or(E::MissingField("requestDetails"))?;
    let request_package = str_field(request, "requestPackageName")
        .ok_or(E::MissingField("requestDetails.requestPackageName"))?;
    if request_package != cfg.package_name {
        return Err(E::RequestPackageMismatch);
    }

    match str_field(request, "requestHash") {
        Some(hash) => {
            let expected = expected_request_hash.as_bytes();
            // Equal lengths are not secret (the expected hash has a fixed
            // length); the bytes are compared in constant time.
            if expected.is_empty() || !bool::from(hash.as_bytes().ct_eq(expected)) {
                return Err(E::RequestHashMismatch);
            }
        }
        None if request.get("nonce").is_some() => return Err(E::ClassicRequest),
        None => return Err(E::MissingField("requestDetails.requestHash")),
    }

    let timestamp_millis = request
        .get("timestampMillis")
        .and_then(int64_field)
        .ok_or(E::MissingField("requestDetails.timestampMillis"))?;
    let now_millis = now.timestamp_millis();
    let max_age = i64::try_from(cfg.max_age.as_millis()).unwrap_or(i64::MAX);
    let skew = i64::try_from(MAX_FUTURE_SKEW.as_millis()).unwrap_or(i64::MAX);
    if timestamp_millis.saturating_sub(now_millis) > skew {
        return Err(E::FromTheFuture);
    }
    if now_millis.saturating_sub(timestamp_millis) > max_age {
        return Err(E::Stale);
    }

    let app = payload
        .get("appIntegrity")
        .filter(|v| v.is_object())
        .ok_or(E::MissingField("appIntegrity"))?;
    let app_recognition = str_field(app, "appRecognitionVerdict")
        .ok_or(E::MissingField("appIntegrity.appRecognitionVerdict"))?;
    if app_recognition != PLAY_RECOGNIZED {
        return Err(E::AppNotRecognized);
    }
    let package_name =
        str_field(app, "packageName").ok_or(E::MissingField("appIntegrity.packageName"))?;
    if package_name != cfg.package_name {
        return Err(E::AppPackageMismatch);
    }
    let certificate_sha256 = match app.get("certificateSha256Digest") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => {
            string_array(value).ok_or(E::MissingField("appIntegrity.certificateSha256Digest"))?
        }
    };
    let version_code = match app.get("versionCode") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(E::MissingField("appIntegrity.versionCode")),
    };

    let device = payload
        .get("deviceIntegrity")
        .filter(|v| v.is_object())
        .ok_or(E::MissingField("deviceIntegrity"))?;
    // Google leaves the list out when the device meets no label at all.
    let device_recognition = match device.get("deviceRecognitionVerdict") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => string_array(value)
            .ok_or(E::MissingField("deviceIntegrity.deviceRecognitionVerdict"))?,
    };
    if !device_recognition
        .iter()
        .any(|label| label == MEETS_DEVICE_INTEGRITY)
    {
        return Err(E::DeviceIntegrityNotMet);
    }

    let licensing = match payload.get("accountDetails") {
        None | Some(Value::Null) => None,
        Some(account @ Value::Object(_)) => match account.get("appLicensingVerdict") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(E::MissingField("accountDetails.appLicensingVerdict")),
        },
        Some(_) => return Err(E::MissingField("accountDetails")),
    };

    Ok(PlayVerdict {
        package_name: package_name.to_owned(),
        app_recognition: app_recognition.to_owned(),
        device_recognition,
        licensing,
        certificate_sha256,
        version_code,
        timestamp_millis,
    })
}

fn str_field<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object.get(name).and_then(Value::as_str)
}

/// An int64 as Google's JSON writes it (a decimal string), or a plain
/// JSON integer.
fn int64_field(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn string_array(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|item| item.as_str().map(str::to_owned))
        .collect()
}

pub mod google;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
