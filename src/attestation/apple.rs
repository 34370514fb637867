//! Apple App Attest: verifying an attestation object (CBOR, x5c chain to the App Attest root, nonce, key id, app id, counter, environment).
//!
//! An iOS app that generated a key with `DCAppAttestService` asks Apple to
//! attest it and sends the server three things: the key identifier, the
//! attestation object, and (implicitly) the client data it hashed. [`verify`]
//! runs the checks Apple lists under "Validating apps that connect to your
//! server", in Apple's order:
//!
//! 1. the object is a CBOR map with `fmt` = `apple-appattest`, an `attStmt`
//!    holding `x5c` (credential certificate, then intermediate) and a
//!    `receipt`, and `authData`; the certificate chain leads to one of the
//!    configured roots (ECDSA P-256/P-384 signatures, validity at `now`,
//!    CA constraints: rustls-webpki does the path validation);
//! 2. to 4. the credential certificate's extension 1.2.840.113635.100.8.2
//!    holds SHA-256(authData ‖ clientDataHash);
//! 5. SHA-256 of the certificate's public key (uncompressed P-256 point) is
//!    the key identifier;
//! 6. the authenticator data's RP ID hash is SHA-256 of the App ID
//!    (`TEAMID.bundle.id`);
//! 7. its counter is 0;
//! 8. its AAGUID names the configured environment;
//! 9. its credential id is the key identifier;
//!
//! and finally that the COSE key in the authenticator data is the
//! certificate's key. Input is bounded ([`MAX_ATTESTATION_OBJECT_BYTES`])
//! before any parsing, and no input makes this module panic.

use chrono::{DateTime, Utc};
use ciborium::value::{Integer, Value};
use rustls::pki_types::{pem::PemObject, CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The largest attestation object accepted. Apple's are about 5–6 KiB
/// (two certificates and a receipt of a few KiB); anything far larger is
/// refused before it is parsed.
pub const MAX_ATTESTATION_OBJECT_BYTES: usize = 64 * 1024;

/// Apple's App Attest root CA ("Apple App Attestation Root CA", P-384,
/// valid 2020-03-18 to 2045-03-15), as Apple publishes it under
/// certificateauthority/Apple_App_Attestation_Root_CA.pem on its site.
/// This copy was taken from the open-source verifier uebelack/node-app-attest
/// (src/verifyAttestation.js) and matches the SHA-256 fingerprint pinned
/// independently by Oire/app-attest (src/TrustAnchor.php):
/// `1cb9823ba28ba6ad2d33a006941de2ae4f513ef1d4e831b9f7e0fa7b6242c932`
/// (SHA-256 of the DER). Apple's own sample attestation (tests) chains to it.
const APPLE_ROOT_PEM: &[u8] = include_bytes!("Apple_App_Attestation_Root_CA.pem");

/// SHA-256 of the bundled root's DER, checked when it is loaded.
const APPLE_ROOT_SHA256: [u8; 32] = [
    0x1c, 0xb9, 0x82, 0x3b, 0xa2, 0x8b, 0xa6, 0xad, 0x2d, 0x33, 0xa0, 0x06, 0x94, 0x1d, 0xe2, 0xae,
    0x4f, 0x51, 0x3e, 0xf1, 0xd4, 0xe8, 0x31, 0xb9, 0xf7, 0xe0, 0xfa, 0x7b, 0x62, 0x42, 0xc9, 0x32,
];

/// The credential certificate extension holding the nonce.
const NONCE_OID: &str = "1.2.840.113635.100.8.2";
/// id-ecPublicKey and the P-256 curve (prime256v1).
const EC_PUBLIC_KEY_OID: &str = "1.2.840.10045.2.1";
const P256_OID: &str = "1.2.840.10045.3.1.7";

/// AAGUID of an attestation made in the development (sandbox) environment.
const AAGUID_DEVELOPMENT: &[u8; 16] = b"appattestdevelop";
/// AAGUID of an attestation made in production: "appattest" and 7 zero bytes.
const AAGUID_PRODUCTION: &[u8; 16] = b"appattest\0\0\0\0\0\0\0";

/// authData layout: rpIdHash (32) | flags (1) | counter (4) | aaguid (16) |
/// credentialId length (2) | credentialId | COSE public key.
const RP_ID_HASH_LEN: usize = 32;
const FLAGS_AT: usize = RP_ID_HASH_LEN;
const COUNTER_AT: usize = FLAGS_AT + 1;
const AAGUID_AT: usize = COUNTER_AT + 4;
const CRED_ID_LEN_AT: usize = AAGUID_AT + 16;
const CRED_ID_AT: usize = CRED_ID_LEN_AT + 2;
/// The "attested credential data included" flag.
const FLAG_ATTESTED_CREDENTIAL_DATA: u8 = 0x40;
/// The "extension data included" flag: App Attest never sets it.
const FLAG_EXTENSION_DATA: u8 = 0x80;

/// The App Attest environment the app was built for (its
/// `com.apple.developer.devicecheck.appattest-environment` entitlement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Production,
    Development,
}

impl Environment {
    fn aaguid(self) -> &'static [u8; 16] {
        match self {
            Environment::Production => AAGUID_PRODUCTION,
            Environment::Development => AAGUID_DEVELOPMENT,
        }
    }
}

/// What an attestation is checked against.
#[derive(Debug, Clone)]
pub struct AppleAttestConfig {
    /// DER certificates trusted as roots of the x5c chain: Apple's root in
    /// production ([`AppleAttestConfig::apple_root`]), a test CA in tests.
    pub roots: Vec<Vec<u8>>,
    /// The App ID: team id, a dot, the bundle id (`ABCDE12345.com.example.app`).
    pub app_id: String,
    /// The only environment accepted.
    pub environment: Environment,
}

impl AppleAttestConfig {
    /// Apple's App Attest root CA (DER), bundled with the server and checked
    /// against its pinned SHA-256 fingerprint.
    pub fn apple_root() -> Result<Vec<u8>, AppleAttestError> {
        let der = Self::root_from_pem(APPLE_ROOT_PEM)?;
        let digest: [u8; 32] = Sha256::digest(&der).into();
        if digest != APPLE_ROOT_SHA256 {
            return Err(AppleAttestError::InvalidRoot);
        }
        Ok(der)
    }

    /// A root certificate (DER) from a PEM file holding exactly one
    /// `CERTIFICATE` block (the file named by `APP_ATTEST_ROOT_CA_FILE`,
    /// which replaces Apple's root, e.g. for tests).
    pub fn root_from_pem(pem: &[u8]) -> Result<Vec<u8>, AppleAttestError> {
        let mut certs = CertificateDer::pem_slice_iter(pem);
        let der = match (certs.next(), certs.next()) {
            (Some(Ok(der)), None) => der,
            _ => return Err(AppleAttestError::InvalidRoot),
        };
        webpki::anchor_from_trusted_cert(&der).map_err(|_| AppleAttestError::InvalidRoot)?;
        match X509Certificate::from_der(der.as_ref()) {
            Ok(([], _)) => Ok(der.as_ref().to_vec()),
            _ => Err(AppleAttestError::InvalidRoot),
        }
    }
}

/// A verified attestation: the device key to remember for this app
/// instance, and Apple's receipt (for later fraud-metric requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppleAttested {
    /// The credential's P-256 public key as an uncompressed SEC1 point
    /// (0x04 ‖ x ‖ y, 65 bytes).
    pub public_key_sec1: Vec<u8>,
    /// The receipt from `attStmt` (opaque PKCS#7).
    pub receipt: Vec<u8>,
    /// The environment the attestation was made in (the configured one).
    pub environment: Environment,
}

/// Why an attestation was refused: one variant per check. The messages name
/// the failed check only, never the submitted data.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AppleAttestError {
    #[error("the attestation object is larger than {MAX_ATTESTATION_OBJECT_BYTES} bytes")]
    TooLarge,
    #[error("the attestation object is not a well-formed CBOR map")]
    MalformedCbor,
    #[error("the attestation format is not apple-appattest")]
    WrongFormat,
    #[error(
        "the attestation statement has no x5c chain of credential and intermediate certificate"
    )]
    MissingCertificates,
    #[error("the attestation statement has no receipt")]
    MissingReceipt,
    #[error("the attestation object has no authenticator data")]
    MissingAuthData,
    #[error("a trusted root certificate is not a valid X.509 certificate")]
    InvalidRoot,
    #[error("a certificate in the x5c chain is not valid X.509")]
    MalformedCertificate,
    #[error("the certificate chain does not lead to a trusted root")]
    UntrustedChain,
    #[error("a signature in the certificate chain is invalid")]
    BadChainSignature,
    #[error("a certificate in the chain is expired or not yet valid")]
    CertificateExpired,
    #[error("the certificate chain is invalid")]
    InvalidChain,
    #[error("the credential certificate has no valid nonce extension")]
    MissingNonce,
    #[error("the nonce does not match the authenticator data and client data hash")]
    NonceMismatch,
    #[error("the credential certificate's key is not an uncompressed P-256 point")]
    BadCredentialKey,
    #[error("the key identifier is not the hash of the credential public key")]
    KeyIdMismatch,
    #[error("the authenticator data is malformed")]
    MalformedAuthData,
    #[error("the authenticator data's RP ID hash is not the hash of the App ID")]
    AppIdMismatch,
    #[error("the authenticator data's counter is not 0")]
    NonZeroCounter,
    #[error("the authenticator data's AAGUID is not the configured environment's")]
    WrongEnvironment,
    #[error("the authenticator data's credential id is not the key identifier")]
    CredentialIdMismatch,
    #[error("the COSE key in the authenticator data is not the credential certificate's key")]
    CoseKeyMismatch,
}

/// Verifies an App Attest attestation object.
///
/// `key_id` is the raw key identifier (the app sends it base64-encoded);
/// `client_data_hash` is what the app passed to `attestKey` (the caller
/// computes it, e.g. SHA-256 of the challenge and the DPoP key thumbprint);
/// `now` is the time at which the certificates must be valid.
pub fn verify(
    cfg: &AppleAttestConfig,
    key_id: &[u8],
    attestation_object: &[u8],
    client_data_hash: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<AppleAttested, AppleAttestError> {
    verify_client_data(cfg, key_id, attestation_object, client_data_hash, now)
}

/// [`verify`] with client data of any length: Apple's published sample
/// attestation appends the raw challenge rather than a 32-byte hash.
fn verify_client_data(
    cfg: &AppleAttestConfig,
    key_id: &[u8],
    attestation_object: &[u8],
    client_data: &[u8],
    now: DateTime<Utc>,
) -> Result<AppleAttested, AppleAttestError> {
    if attestation_object.len() > MAX_ATTESTATION_OBJECT_BYTES {
        return Err(AppleAttestError::TooLarge);
    }
    let parts = decode_object(attestation_object)?;

    // 1. The chain: credential certificate, intermediate, a trusted root.
    verify_chain(cfg, &parts.cred_cert, &parts.intermediate, now)?;
    let cred_cert = match X509Certificate::from_der(&parts.cred_cert) {
        Ok(([], cert)) => cert,
        _ => return Err(AppleAttestError::MalformedCertificate),
    };

    // 2.–4. nonce = SHA-256(authData ‖ clientDataHash) is in the certificate.
    let expected_nonce: [u8; 32] = Sha256::new()
        .chain_update(&parts.auth_data)
        .chain_update(client_data)
        .finalize()
        .into();
    let nonce = cert_nonce(&cred_cert)?;
    if !bool::from(nonce.ct_eq(&expected_nonce)) {
        return Err(AppleAttestError::NonceMismatch);
    }

    // 5. The key identifier is SHA-256 of the credential public key.
    let public_key = cred_public_key(&cred_cert)?;
    let key_hash: [u8; 32] = Sha256::digest(public_key).into();
    if !bool::from(key_hash.as_slice().ct_eq(key_id)) {
        return Err(AppleAttestError::KeyIdMismatch);
    }

    // 6.–9. and the COSE key: the authenticator data.
    check_auth_data(cfg, &parts.auth_data, key_id, public_key)?;

    Ok(AppleAttested {
        public_key_sec1: public_key.to_vec(),
        receipt: parts.receipt,
        environment: cfg.environment,
    })
}

/// The parts of the attestation object that the checks use.
struct Parts {
    cred_cert: Vec<u8>,
    intermediate: Vec<u8>,
    receipt: Vec<u8>,
    auth_data: Vec<u8>,
}

fn decode_object(bytes: &[u8]) -> Result<Parts, AppleAttestError> {
    let mut reader = bytes;
    let value: Value =
        ciborium::de::from_reader(&mut reader).map_err(|_| AppleAttestError::MalformedCbor)?;
    if !reader.is_empty() {
        return Err(AppleAttestError::MalformedCbor);
    }
    let Value::Map(map) = value else {
        return Err(AppleAttestError::MalformedCbor);
    };

    match text_key(&map, "fmt")? {
        Some(Value::Text(fmt)) if fmt == "apple-appattest" => {}
        _ => return Err(AppleAttestError::WrongFormat),
    }
    let statement = match text_key(&map, "attStmt")? {
        Some(Value::Map(statement)) => statement,
        _ => return Err(AppleAttestError::MissingCertificates),
    };
    let (cred_cert, intermediate) = match text_key(statement, "x5c")? {
        Some(Value::Array(chain)) => match chain.as_slice() {
            [Value::Bytes(leaf), Value::Bytes(intermediate)] => {
                (leaf.clone(), intermediate.clone())
            }
            _ => return Err(AppleAttestError::MissingCertificates),
        },
        _ => return Err(AppleAttestError::MissingCertificates),
    };
    let receipt = match text_key(statement, "receipt")? {
        Some(Value::Bytes(receipt)) if !receipt.is_empty() => receipt.clone(),
        _ => return Err(AppleAttestError::MissingReceipt),
    };
    let auth_data = match text_key(&map, "authData")? {
        Some(Value::Bytes(auth_data)) => auth_data.clone(),
        _ => return Err(AppleAttestError::MissingAuthData),
    };
    Ok(Parts {
        cred_cert,
        intermediate,
        receipt,
        auth_data,
    })
}

/// The value under a text key; a key present twice makes the map ambiguous.
fn text_key<'a>(
    map: &'a [(Value, Value)],
    key: &str,
) -> Result<Option<&'a Value>, AppleAttestError> {
    let mut found = None;
    for (k, v) in map {
        if matches!(k, Value::Text(k) if k == key) {
            if found.is_some() {
                return Err(AppleAttestError::MalformedCbor);
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Any extended key usage is accepted: Apple's credential certificates carry
/// none, and the chain is pinned to a root that only issues App Attest.
struct AnyExtendedKeyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyExtendedKeyUsage {
    fn validate(&self, _iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

fn verify_chain(
    cfg: &AppleAttestConfig,
    cred_cert: &[u8],
    intermediate: &[u8],
    now: DateTime<Utc>,
) -> Result<(), AppleAttestError> {
    let seconds =
        u64::try_from(now.timestamp()).map_err(|_| AppleAttestError::CertificateExpired)?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));

    // A trust anchor has no validity period of its own in webpki: a root
    // that is expired (or not yet valid) at `now` is left out here.
    let root_ders: Vec<CertificateDer<'_>> = cfg
        .roots
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let mut anchors: Vec<TrustAnchor<'_>> = Vec::with_capacity(root_ders.len());
    for der in &root_ders {
        let anchor =
            webpki::anchor_from_trusted_cert(der).map_err(|_| AppleAttestError::InvalidRoot)?;
        let valid_now = match X509Certificate::from_der(der.as_ref()) {
            Ok((_, root)) => root.validity().is_valid_at(to_asn1_time(now)?),
            Err(_) => return Err(AppleAttestError::InvalidRoot),
        };
        if valid_now {
            anchors.push(anchor);
        }
    }

    let leaf_der = CertificateDer::from(cred_cert);
    let leaf = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|_| AppleAttestError::MalformedCertificate)?;
    let intermediates = [CertificateDer::from(intermediate)];
    let algorithms = [
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P256_SHA384,
        webpki::ring::ECDSA_P384_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
    ];
    leaf.verify_for_usage(
        &algorithms,
        &anchors,
        &intermediates,
        time,
        AnyExtendedKeyUsage,
        None,
        None,
    )
    .map(|_| ())
    .map_err(chain_error)
}

fn to_asn1_time(now: DateTime<Utc>) -> Result<x509_parser::time::ASN1Time, AppleAttestError> {
    x509_parser::time::ASN1Time::from_timestamp(now.timestamp())
        .map_err(|_| AppleAttestError::CertificateExpired)
}

#[allow(deprecated)]
fn chain_error(e: webpki::Error) -> AppleAttestError {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => AppleAttestError::UntrustedChain,
        E::InvalidSignatureForPublicKey
        | E::SignatureAlgorithmMismatch
        | E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            AppleAttestError::BadChainSignature
        }
        E::CertExpired { .. } | E::CertNotValidYet { .. } => AppleAttestError::CertificateExpired,
        E::BadDer | E::BadDerTime | E::TrailingData(_) => AppleAttestError::MalformedCertificate,
        _ => AppleAttestError::InvalidChain,
    }
}

/// The single octet string of the nonce extension:
/// `SEQUENCE { [1] EXPLICIT OCTET STRING (32 bytes) }`, strict DER.
fn cert_nonce(cert: &X509Certificate<'_>) -> Result<[u8; 32], AppleAttestError> {
    let mut found = None;
    for ext in cert.extensions() {
        if ext.oid.to_id_string() == NONCE_OID {
            if found.is_some() {
                return Err(AppleAttestError::MissingNonce);
            }
            found = Some(ext.value);
        }
    }
    let value = found.ok_or(AppleAttestError::MissingNonce)?;
    parse_nonce_extension(value).ok_or(AppleAttestError::MissingNonce)
}

fn parse_nonce_extension(value: &[u8]) -> Option<[u8; 32]> {
    let (sequence, rest) = der_element(value, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (explicit, rest) = der_element(sequence, 0xa1)?;
    if !rest.is_empty() {
        return None;
    }
    let (octets, rest) = der_element(explicit, 0x04)?;
    if !rest.is_empty() {
        return None;
    }
    octets.try_into().ok()
}

/// One DER element with the expected tag: (contents, what follows it).
/// Definite lengths only, in their shortest form.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, input) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len_byte, input) = input.split_first()?;
    let (len, input) = match len_byte {
        0..=0x7f => (usize::from(len_byte), input),
        0x81 => {
            let (&len, input) = input.split_first()?;
            if len < 0x80 {
                return None;
            }
            (usize::from(len), input)
        }
        0x82 => {
            let (len, input) = input.split_at_checked(2)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if len < 0x100 {
                return None;
            }
            (len, input)
        }
        _ => return None,
    };
    input.split_at_checked(len)
}

/// The credential certificate's public key: an uncompressed P-256 point.
fn cred_public_key<'a>(cert: &'a X509Certificate<'_>) -> Result<&'a [u8], AppleAttestError> {
    let spki = cert.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    let point: &[u8] = &spki.subject_public_key.data;
    if spki.algorithm.algorithm.to_id_string() != EC_PUBLIC_KEY_OID
        || curve.as_deref() != Some(P256_OID)
        || spki.subject_public_key.unused_bits != 0
        || point.len() != 65
        || point.first() != Some(&0x04)
    {
        return Err(AppleAttestError::BadCredentialKey);
    }
    Ok(point)
}

fn check_auth_data(
    cfg: &AppleAttestConfig,
    auth_data: &[u8],
    key_id: &[u8],
    public_key: &[u8],
) -> Result<(), AppleAttestError> {
    let malformed = AppleAttestError::MalformedAuthData;
    let rp_id_hash = auth_data.get(..RP_ID_HASH_LEN).ok_or(malformed.clone())?;
    let flags = *auth_data.get(FLAGS_AT).ok_or(malformed.clone())?;
    let counter = auth_data
        .get(COUNTER_AT..AAGUID_AT)
        .ok_or(malformed.clone())?;
    let aaguid = auth_data
        .get(AAGUID_AT..CRED_ID_LEN_AT)
        .ok_or(malformed.clone())?;
    let cred_id_len = auth_data
        .get(CRED_ID_LEN_AT..CRED_ID_AT)
        .ok_or(malformed.clone())?;
    let cred_id_len = usize::from(u16::from_be_bytes([cred_id_len[0], cred_id_len[1]]));
    let cred_id_end = CRED_ID_AT
        .checked_add(cred_id_len)
        .ok_or(malformed.clone())?;
    let cred_id = auth_data
        .get(CRED_ID_AT..cred_id_end)
        .ok_or(malformed.clone())?;
    let cose_key = auth_data.get(cred_id_end..).ok_or(malformed.clone())?;
    if flags & FLAG_ATTESTED_CREDENTIAL_DATA == 0 || flags & FLAG_EXTENSION_DATA != 0 {
        return Err(malformed);
    }

    // 6. RP ID hash = SHA-256(App ID).
    let app_id_hash: [u8; 32] = Sha256::digest(cfg.app_id.as_bytes()).into();
    if rp_id_hash != app_id_hash {
        return Err(AppleAttestError::AppIdMismatch);
    }
    // 7. counter = 0.
    if counter != [0, 0, 0, 0] {
        return Err(AppleAttestError::NonZeroCounter);
    }
    // 8. AAGUID of the configured environment.
    if aaguid != cfg.environment.aaguid() {
        return Err(AppleAttestError::WrongEnvironment);
    }
    // 9. credential id = key identifier.
    if cred_id != key_id {
        return Err(AppleAttestError::CredentialIdMismatch);
    }
    // The COSE key is the certificate's key.
    if cose_key_point(cose_key)? != public_key {
        return Err(AppleAttestError::CoseKeyMismatch);
    }
    Ok(())
}

/// The uncompressed point of a COSE EC2 P-256 ES256 key
/// (`{1: 2, 3: -7, -1: 1, -2: x, -3: y}`), which must end the authenticator data.
fn cose_key_point(bytes: &[u8]) -> Result<Vec<u8>, AppleAttestError> {
    let malformed = AppleAttestError::MalformedAuthData;
    let mut reader = bytes;
    let value: Value = ciborium::de::from_reader(&mut reader).map_err(|_| malformed.clone())?;
    if !reader.is_empty() {
        return Err(malformed);
    }
    let Value::Map(map) = value else {
        return Err(malformed);
    };
    let int_key = |key: i64| -> Result<Option<&Value>, AppleAttestError> {
        let mut found = None;
        for (k, v) in &map {
            if matches!(k, Value::Integer(k) if *k == Integer::from(key)) {
                if found.is_some() {
                    return Err(AppleAttestError::MalformedAuthData);
                }
                found = Some(v);
            }
        }
        Ok(found)
    };
    let is_int = |v: Option<&Value>, want: i64| matches!(v, Some(Value::Integer(i)) if *i == Integer::from(want));
    if !is_int(int_key(1)?, 2) || !is_int(int_key(3)?, -7) || !is_int(int_key(-1)?, 1) {
        return Err(AppleAttestError::CoseKeyMismatch);
    }
    match (int_key(-2)?, int_key(-3)?) {
        (Some(Value::Bytes(x)), Some(Value::Bytes(y))) if x.len() == 32 && y.len() == 32 => {
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            Ok(point)
        }
        _ => Err(AppleAttestError::CoseKeyMismatch),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use base64::Engine;
    use chrono::TimeZone;

    /// Apple's sample attestation from its "attestation object validation
    /// guide" (App ID 0352187391.com.apple.example_app_attest, challenge
    /// "test_server_challenge" appended as is, production AAGUID): a real
    /// Apple-signed chain, valid from 2024-04-17 16:14:53 to 2024-04-20
    /// 16:14:53 UTC. Taken from open-source verifiers' test suites that
    /// quote Apple's guide; 5637 bytes, SHA-256
    /// 5ebd274c27bf9b3a88345e73db13afc2d643bcc6e1bc02648483ff2c45354034
    /// (one quoted copy had lost 21 receipt bytes, which broke its CBOR
    /// lengths; the receipt lengths of this copy are consistent).
    const APPLE_SAMPLE_B64: &str =
        include_str!("../../tests/support/fixtures/apple_sample_attestation.b64");
    const APPLE_SAMPLE_APP_ID: &str = "0352187391.com.apple.example_app_attest";
    const APPLE_SAMPLE_KEY_ID_B64: &str = "bSrEhF8TIzIvWSPwvZ0i2+UOBre4ASH84rK15m6emNY=";
    const APPLE_SAMPLE_CLIENT_DATA: &[u8] = b"test_server_challenge";

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .unwrap()
    }

    fn apple_cfg(environment: Environment) -> AppleAttestConfig {
        AppleAttestConfig {
            roots: vec![AppleAttestConfig::apple_root().unwrap()],
            app_id: APPLE_SAMPLE_APP_ID.to_owned(),
            environment,
        }
    }

    fn sample_time() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 4, 18, 12, 0, 0).unwrap()
    }

    fn verify_sample(
        cfg: &AppleAttestConfig,
        now: DateTime<Utc>,
    ) -> Result<AppleAttested, AppleAttestError> {
        let key_id = b64(APPLE_SAMPLE_KEY_ID_B64);
        verify_client_data(
            cfg,
            &key_id,
            &b64(APPLE_SAMPLE_B64),
            APPLE_SAMPLE_CLIENT_DATA,
            now,
        )
    }

    #[test]
    fn bundled_root_is_apples_app_attest_root() {
        let der = AppleAttestConfig::apple_root().unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(
            cert.subject().to_string(),
            "CN=Apple App Attestation Root CA, O=Apple Inc., ST=California"
        );
        assert_eq!(cert.subject(), cert.issuer());
        assert_eq!(cert.validity().not_before.timestamp(), 1_584_556_373); // 2020-03-18 18:32:53
        assert_eq!(cert.validity().not_after.timestamp(), 2_373_148_800); // 2045-03-15 00:00:00
        assert!(cert
            .validity()
            .is_valid_at(to_asn1_time(Utc::now()).unwrap()));
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            EC_PUBLIC_KEY_OID
        );
        let digest: [u8; 32] = Sha256::digest(&der).into();
        assert_eq!(digest, APPLE_ROOT_SHA256);
    }

    #[test]
    fn root_from_pem_wants_exactly_one_certificate() {
        assert_eq!(
            AppleAttestConfig::root_from_pem(b""),
            Err(AppleAttestError::InvalidRoot)
        );
        assert_eq!(
            AppleAttestConfig::root_from_pem(b"garbage"),
            Err(AppleAttestError::InvalidRoot)
        );
        let twice = [APPLE_ROOT_PEM, APPLE_ROOT_PEM].concat();
        assert_eq!(
            AppleAttestConfig::root_from_pem(&twice),
            Err(AppleAttestError::InvalidRoot)
        );
        let not_a_cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            AppleAttestConfig::root_from_pem(not_a_cert),
            Err(AppleAttestError::InvalidRoot)
        );
    }

    #[test]
    fn apples_sample_attestation_verifies_against_the_bundled_root() {
        let attested = verify_sample(&apple_cfg(Environment::Production), sample_time()).unwrap();
        assert_eq!(attested.environment, Environment::Production);
        assert_eq!(attested.public_key_sec1.len(), 65);
        let key_hash: [u8; 32] = Sha256::digest(&attested.public_key_sec1).into();
        assert_eq!(key_hash.to_vec(), b64(APPLE_SAMPLE_KEY_ID_B64));
        assert!(!attested.receipt.is_empty());
    }

    #[test]
    fn apples_sample_is_refused_when_anything_differs() {
        let cfg = apple_cfg(Environment::Production);
        // Its credential certificate expired on 2024-04-20.
        let later = Utc.with_ymd_and_hms(2024, 4, 21, 0, 0, 0).unwrap();
        assert_eq!(
            verify_sample(&cfg, later),
            Err(AppleAttestError::CertificateExpired)
        );
        // Development build configured: the production AAGUID is refused.
        assert_eq!(
            verify_sample(&apple_cfg(Environment::Development), sample_time()),
            Err(AppleAttestError::WrongEnvironment)
        );
        // Another app.
        let other_app = AppleAttestConfig {
            app_id: "0352187391.com.apple.other".to_owned(),
            ..cfg.clone()
        };
        assert_eq!(
            verify_sample(&other_app, sample_time()),
            Err(AppleAttestError::AppIdMismatch)
        );
        // Another challenge.
        let key_id = b64(APPLE_SAMPLE_KEY_ID_B64);
        assert_eq!(
            verify(
                &cfg,
                &key_id,
                &b64(APPLE_SAMPLE_B64),
                &[0; 32],
                sample_time()
            ),
            Err(AppleAttestError::NonceMismatch)
        );
        // Another trust anchor: Apple's intermediate is not a root here.
        let no_root = AppleAttestConfig {
            roots: vec![],
            ..cfg
        };
        assert_eq!(
            verify_sample(&no_root, sample_time()),
            Err(AppleAttestError::UntrustedChain)
        );
    }

    #[test]
    fn mutated_apple_sample_never_panics() {
        let cfg = apple_cfg(Environment::Production);
        let key_id = b64(APPLE_SAMPLE_KEY_ID_B64);
        let object = b64(APPLE_SAMPLE_B64);
        for len in (0..object.len()).step_by(7) {
            assert!(verify_client_data(
                &cfg,
                &key_id,
                &object[..len],
                APPLE_SAMPLE_CLIENT_DATA,
                sample_time()
            )
            .is_err());
        }
        for i in (0..object.len()).step_by(3) {
            let mut mutated = object.clone();
            mutated[i] ^= 0x5a;
            // Flipping a byte of an unchecked field (a receipt byte, an
            // unsigned CBOR detail) may still verify; it must not panic.
            let _ = verify_client_data(
                &cfg,
                &key_id,
                &mutated,
                APPLE_SAMPLE_CLIENT_DATA,
                sample_time(),
            );
        }
    }

    #[test]
    fn nonce_extension_is_strict_der() {
        let mut good = vec![0x30, 0x24, 0xa1, 0x22, 0x04, 0x20];
        good.extend_from_slice(&[7; 32]);
        assert_eq!(parse_nonce_extension(&good), Some([7; 32]));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(parse_nonce_extension(&trailing), None);
        let mut short = good.clone();
        short.truncate(37);
        assert_eq!(parse_nonce_extension(&short), None);
        let mut wrong_tag = good.clone();
        wrong_tag[2] = 0xa0;
        assert_eq!(parse_nonce_extension(&wrong_tag), None);
        // Non-minimal length encoding.
        let mut long_form = vec![0x30, 0x81, 0x24, 0xa1, 0x22, 0x04, 0x20];
        long_form.extend_from_slice(&[7; 32]);
        assert_eq!(parse_nonce_extension(&long_form), None);
        // A 31-byte nonce.
        let mut nonce31 = vec![0x30, 0x23, 0xa1, 0x21, 0x04, 0x1f];
        nonce31.extend_from_slice(&[7; 31]);
        assert_eq!(parse_nonce_extension(&nonce31), None);
    }

    #[test]
    fn oversized_object_is_refused_before_parsing() {
        let cfg = apple_cfg(Environment::Production);
        let big = vec![0u8; MAX_ATTESTATION_OBJECT_BYTES + 1];
        assert_eq!(
            verify(&cfg, &[0; 32], &big, &[0; 32], Utc::now()),
            Err(AppleAttestError::TooLarge)
        );
    }
}
