//! Real App Attest attestation objects for tests: a test CA standing in for
//! Apple's App Attest root (P-384 root, P-384 intermediate), and for each
//! attestation a fresh P-256 credential key whose certificate carries the
//! nonce extension (OID 1.2.840.113635.100.8.2), authenticator data with
//! the COSE key, and the CBOR object an iOS app would send.
//!
//! This file depends on no crate module, so any test crate can include it:
//! `#[path = "support/app_attest.rs"] mod app_attest;` from tests/, or
//! `#[path = "../support/app_attest.rs"]` from tests/api. Each [`Spec`]
//! field can break exactly one check, for the negative tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ciborium::value::Value;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
};
use sha2::{Digest, Sha256};

pub const NONCE_OID: &[u64] = &[1, 2, 840, 113635, 100, 8, 2];
pub const AAGUID_PRODUCTION: [u8; 16] = *b"appattest\0\0\0\0\0\0\0";
pub const AAGUID_DEVELOPMENT: [u8; 16] = *b"appattestdevelop";
pub const FMT: &str = "apple-appattest";

/// A root and an intermediate CA, as Apple's App Attest CAs are laid out.
pub struct TestCa {
    /// The root certificate (DER): the verifier's trust anchor.
    pub root_der: Vec<u8>,
    /// The same root as PEM (what `APP_ATTEST_ROOT_CA_FILE` would hold).
    pub root_pem: String,
    /// The intermediate certificate (DER), sent second in `x5c`.
    pub intermediate_der: Vec<u8>,
    intermediate_params: CertificateParams,
    intermediate: Issuer<'static, KeyPair>,
}

fn ca_params(common_name: &str, constraints: BasicConstraints) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Test Inc.");
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl TestCa {
    /// A new root ("Test App Attestation Root CA") and intermediate ("Test
    /// App Attestation CA 1"), both P-384, valid from 2000 to 2100.
    pub fn new() -> Self {
        Self::named("Test App Attestation Root CA")
    }

    /// A CA whose root has another name and key (for "chain to another root").
    pub fn named(root_name: &str) -> Self {
        Self::with_root_validity(root_name, (2000, 1, 1), (2100, 1, 1))
    }

    /// A CA whose root is valid only from `from` to `to` (year, month, day);
    /// the intermediate is valid from 2000 to 2100 whatever the root says.
    pub fn with_root_validity(root_name: &str, from: (i32, u8, u8), to: (i32, u8, u8)) -> Self {
        Self::build(root_name, from, to, true)
    }

    /// A CA whose "intermediate" is not a CA (basicConstraints cA false).
    pub fn with_non_ca_intermediate() -> Self {
        Self::build(
            "Test App Attestation Root CA",
            (2000, 1, 1),
            (2100, 1, 1),
            false,
        )
    }

    fn build(
        root_name: &str,
        from: (i32, u8, u8),
        to: (i32, u8, u8),
        intermediate_is_ca: bool,
    ) -> Self {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut root_params = ca_params(root_name, BasicConstraints::Unconstrained);
        root_params.not_before = date_time_ymd(from.0, from.1, from.2);
        root_params.not_after = date_time_ymd(to.0, to.1, to.2);
        let root_cert = root_params.self_signed(&root_key).unwrap();
        let root = Issuer::new(root_params, root_key);

        let intermediate_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut intermediate_params = ca_params(
            "Test App Attestation CA 1",
            BasicConstraints::Constrained(0),
        );
        intermediate_params.not_before = date_time_ymd(2000, 1, 1);
        intermediate_params.not_after = date_time_ymd(2100, 1, 1);
        if !intermediate_is_ca {
            intermediate_params.is_ca = IsCa::ExplicitNoCa;
            intermediate_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        let intermediate_cert = intermediate_params
            .signed_by(&intermediate_key, &root)
            .unwrap();
        TestCa {
            root_der: root_cert.der().to_vec(),
            root_pem: root_cert.pem(),
            intermediate_der: intermediate_cert.der().to_vec(),
            intermediate: Issuer::new(intermediate_params.clone(), intermediate_key),
            intermediate_params,
        }
    }

    /// An attestation as `spec` describes it.
    pub fn attest(&self, spec: &Spec) -> TestAttestation {
        let credential_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let public_key_sec1 = credential_key.public_key_raw().to_vec();
        assert_eq!(public_key_sec1.len(), 65);
        let key_id = Sha256::digest(&public_key_sec1).to_vec();

        let cose_point = spec
            .cose_point
            .clone()
            .unwrap_or_else(|| public_key_sec1.clone());
        let auth_data = auth_data(
            &Sha256::digest(spec.app_id.as_bytes()).into(),
            spec.flags,
            spec.counter,
            &spec.aaguid,
            spec.credential_id.as_deref().unwrap_or(&key_id),
            &cose_key(&cose_point),
        );
        let nonce: [u8; 32] = spec.nonce.unwrap_or_else(|| {
            Sha256::new()
                .chain_update(&auth_data)
                .chain_update(spec.client_data_hash)
                .finalize()
                .into()
        });

        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.distinguished_name = rcgen::DistinguishedName::new();
        leaf.distinguished_name
            .push(DnType::CommonName, hex(&key_id));
        leaf.distinguished_name
            .push(DnType::OrganizationalUnitName, "AAA Certification");
        leaf.is_ca = if spec.leaf_is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let (from, to) = spec.leaf_validity;
        leaf.not_before = date_time_ymd(from.0, from.1, from.2);
        leaf.not_after = date_time_ymd(to.0, to.1, to.2);
        leaf.custom_extensions
            .push(CustomExtension::from_oid_content(
                NONCE_OID,
                nonce_extension(&nonce),
            ));
        let leaf_der = if spec.forge_signature {
            // An impostor with the intermediate's name but its own key: the
            // chain's names match, the signature does not.
            let impostor = Issuer::new(
                self.intermediate_params.clone(),
                KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap(),
            );
            leaf.signed_by(&credential_key, &impostor).unwrap()
        } else {
            leaf.signed_by(&credential_key, &self.intermediate).unwrap()
        }
        .der()
        .to_vec();

        let x5c = spec
            .x5c
            .then(|| vec![leaf_der.clone(), self.intermediate_der.clone()]);
        let object = encode_object(&spec.fmt, x5c, spec.receipt.clone(), auth_data);
        TestAttestation {
            object,
            key_id,
            public_key_sec1,
            credential_key,
            leaf_der,
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// What one attestation holds. [`Spec::new`] describes a valid production
/// attestation; change one field to break one check.
#[derive(Clone, Debug)]
pub struct Spec {
    pub app_id: String,
    /// What the app passed to `attestKey` (SHA-256 of challenge ‖ thumbprint).
    pub client_data_hash: [u8; 32],
    pub aaguid: [u8; 16],
    pub counter: u32,
    /// authData flags (0x41: user present + attested credential data).
    pub flags: u8,
    pub fmt: String,
    /// A credential id other than the key id.
    pub credential_id: Option<Vec<u8>>,
    /// A nonce other than SHA-256(authData ‖ clientDataHash).
    pub nonce: Option<[u8; 32]>,
    /// A COSE key point other than the certificate's key.
    pub cose_point: Option<Vec<u8>>,
    /// `None` leaves the receipt out.
    pub receipt: Option<Vec<u8>>,
    /// `false` leaves `x5c` out.
    pub x5c: bool,
    /// Sign the credential certificate with an impostor intermediate key.
    pub forge_signature: bool,
    /// Make the credential certificate a CA certificate.
    pub leaf_is_ca: bool,
    /// The credential certificate's validity (year, month, day) from, to.
    pub leaf_validity: ((i32, u8, u8), (i32, u8, u8)),
}

impl Spec {
    pub fn new(app_id: &str, client_data_hash: [u8; 32]) -> Self {
        Spec {
            app_id: app_id.to_owned(),
            client_data_hash,
            aaguid: AAGUID_PRODUCTION,
            counter: 0,
            flags: 0x41,
            fmt: FMT.to_owned(),
            credential_id: None,
            nonce: None,
            cose_point: None,
            receipt: Some(b"test receipt (opaque PKCS#7 in real attestations)".to_vec()),
            x5c: true,
            forge_signature: false,
            leaf_is_ca: false,
            leaf_validity: ((2000, 1, 1), (2100, 1, 1)),
        }
    }

    pub fn development(mut self) -> Self {
        self.aaguid = AAGUID_DEVELOPMENT;
        self
    }
}

/// An attestation object and what the app knows alongside it.
pub struct TestAttestation {
    /// The CBOR attestation object.
    pub object: Vec<u8>,
    /// The key identifier: SHA-256 of the public key.
    pub key_id: Vec<u8>,
    /// The credential public key, uncompressed SEC1.
    pub public_key_sec1: Vec<u8>,
    /// The credential private key (for assertions).
    pub credential_key: KeyPair,
    /// The credential certificate (DER).
    pub leaf_der: Vec<u8>,
}

/// `SEQUENCE { [1] EXPLICIT OCTET STRING nonce }` in DER.
pub fn nonce_extension(nonce: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![0x30, 0x24, 0xa1, 0x22, 0x04, 0x20];
    der.extend_from_slice(nonce);
    der
}

/// A COSE EC2 key (kty 2, alg ES256, crv P-256) for an uncompressed point.
pub fn cose_key(point: &[u8]) -> Vec<u8> {
    let (x, y) = point[1..].split_at(32);
    let key = Value::Map(vec![
        (Value::from(1), Value::from(2)),
        (Value::from(3), Value::from(-7)),
        (Value::from(-1), Value::from(1)),
        (Value::from(-2), Value::Bytes(x.to_vec())),
        (Value::from(-3), Value::Bytes(y.to_vec())),
    ]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&key, &mut out).unwrap();
    out
}

/// Authenticator data: rpIdHash, flags, counter, aaguid, credential id, COSE key.
pub fn auth_data(
    rp_id_hash: &[u8; 32],
    flags: u8,
    counter: u32,
    aaguid: &[u8; 16],
    credential_id: &[u8],
    cose_key: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(rp_id_hash);
    out.push(flags);
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(aaguid);
    out.extend_from_slice(&u16::try_from(credential_id.len()).unwrap().to_be_bytes());
    out.extend_from_slice(credential_id);
    out.extend_from_slice(cose_key);
    out
}

/// The CBOR attestation object `{fmt, attStmt: {x5c, receipt}, authData}`.
pub fn encode_object(
    fmt: &str,
    x5c: Option<Vec<Vec<u8>>>,
    receipt: Option<Vec<u8>>,
    auth_data: Vec<u8>,
) -> Vec<u8> {
    let mut statement = Vec::new();
    if let Some(x5c) = x5c {
        statement.push((
            Value::from("x5c"),
            Value::Array(x5c.into_iter().map(Value::Bytes).collect()),
        ));
    }
    if let Some(receipt) = receipt {
        statement.push((Value::from("receipt"), Value::Bytes(receipt)));
    }
    let object = Value::Map(vec![
        (Value::from("fmt"), Value::from(fmt)),
        (Value::from("attStmt"), Value::Map(statement)),
        (Value::from("authData"), Value::Bytes(auth_data)),
    ]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&object, &mut out).unwrap();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
