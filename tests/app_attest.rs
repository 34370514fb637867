//! The App Attest verifier against real attestation objects made by a test
//! CA standing in for Apple's root: one valid attestation, then one refusal
//! per check, then malformed input that must be refused without a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/app_attest.rs"]
mod app_attest;

use std::sync::OnceLock;

use app_attest::{Spec, TestAttestation, TestCa};
use chrono::{DateTime, TimeZone, Utc};
use mobile_backend::attestation::apple::{
    verify, AppleAttestConfig, AppleAttestError, AppleAttested, Environment,
    MAX_ATTESTATION_OBJECT_BYTES,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const APP_ID: &str = "ABCDE12345.com.example.app";

fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(TestCa::new)
}

fn client_data_hash(challenge: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(challenge.as_bytes())
        .chain_update(b"dpop-thumbprint")
        .finalize()
        .into()
}

fn spec() -> Spec {
    Spec::new(APP_ID, client_data_hash("challenge-1"))
}

fn config(environment: Environment) -> AppleAttestConfig {
    AppleAttestConfig {
        roots: vec![ca().root_der.clone()],
        app_id: APP_ID.to_owned(),
        environment,
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

/// Verifies `att` as the app would send it with `spec`'s client data.
fn check(
    cfg: &AppleAttestConfig,
    spec: &Spec,
    att: &TestAttestation,
) -> Result<AppleAttested, AppleAttestError> {
    verify(cfg, &att.key_id, &att.object, &spec.client_data_hash, now())
}

fn refused(spec: Spec, expected: AppleAttestError) {
    let att = ca().attest(&spec);
    assert_eq!(
        check(&config(Environment::Production), &spec, &att),
        Err(expected)
    );
}

#[test]
fn a_valid_production_attestation_is_accepted() {
    let spec = spec();
    let att = ca().attest(&spec);
    let attested = check(&config(Environment::Production), &spec, &att).unwrap();
    assert_eq!(attested.public_key_sec1, att.public_key_sec1);
    assert_eq!(attested.environment, Environment::Production);
    assert_eq!(attested.receipt, spec.receipt.unwrap());
    // At the real clock too (the server passes Utc::now()).
    let spec = self::spec();
    let att = ca().attest(&spec);
    assert!(verify(
        &config(Environment::Production),
        &att.key_id,
        &att.object,
        &spec.client_data_hash,
        Utc::now()
    )
    .is_ok());
}

#[test]
fn a_valid_development_attestation_is_accepted() {
    let spec = spec().development();
    let att = ca().attest(&spec);
    let attested = check(&config(Environment::Development), &spec, &att).unwrap();
    assert_eq!(attested.environment, Environment::Development);
}

#[test]
fn the_root_can_come_from_a_pem_file() {
    let root = AppleAttestConfig::root_from_pem(ca().root_pem.as_bytes()).unwrap();
    assert_eq!(root, ca().root_der);
    let spec = spec();
    let att = ca().attest(&spec);
    let cfg = AppleAttestConfig {
        roots: vec![root],
        ..config(Environment::Production)
    };
    assert!(check(&cfg, &spec, &att).is_ok());
}

#[test]
fn one_of_several_roots_is_enough() {
    let other = TestCa::named("Another Root");
    let spec = spec();
    let att = ca().attest(&spec);
    let cfg = AppleAttestConfig {
        roots: vec![other.root_der.clone(), ca().root_der.clone()],
        ..config(Environment::Production)
    };
    assert!(check(&cfg, &spec, &att).is_ok());
}

#[test]
fn apples_real_root_does_not_trust_the_test_ca() {
    let spec = spec();
    let att = ca().attest(&spec);
    let cfg = AppleAttestConfig {
        roots: vec![AppleAttestConfig::apple_root().unwrap()],
        ..config(Environment::Production)
    };
    assert_eq!(
        check(&cfg, &spec, &att),
        Err(AppleAttestError::UntrustedChain)
    );
}

// --- 1. the certificate chain ---

#[test]
fn a_forged_signature_in_the_chain_is_refused() {
    refused(
        Spec {
            forge_signature: true,
            ..spec()
        },
        AppleAttestError::BadChainSignature,
    );
}

#[test]
fn a_tampered_credential_certificate_is_refused() {
    // Change one byte of the signed part (the certificate's validity year)
    // of a valid leaf and rebuild the object around it.
    let spec = spec();
    let att = ca().attest(&spec);
    let mut leaf = att.leaf_der.clone();
    let at = leaf.windows(4).position(|w| w == b"2100").unwrap();
    leaf[at + 3] = b'1';
    let auth_data = auth_data_of(&att.object);
    let object = app_attest::encode_object(
        app_attest::FMT,
        Some(vec![leaf, ca().intermediate_der.clone()]),
        spec.receipt.clone(),
        auth_data,
    );
    assert_eq!(
        verify(
            &config(Environment::Production),
            &att.key_id,
            &object,
            &spec.client_data_hash,
            now()
        ),
        Err(AppleAttestError::BadChainSignature)
    );
}

#[test]
fn a_chain_to_another_root_is_refused() {
    let other = TestCa::named("Impostor App Attestation Root CA");
    let spec = spec();
    let att = other.attest(&spec);
    assert_eq!(
        check(&config(Environment::Production), &spec, &att),
        Err(AppleAttestError::UntrustedChain)
    );
}

#[test]
fn an_intermediate_from_another_ca_is_refused() {
    // The leaf signed by our intermediate, but x5c carries another CA's.
    let other = TestCa::named("Other Root");
    let spec = spec();
    let att = ca().attest(&spec);
    let object = app_attest::encode_object(
        app_attest::FMT,
        Some(vec![att.leaf_der.clone(), other.intermediate_der.clone()]),
        spec.receipt.clone(),
        auth_data_of(&att.object),
    );
    let result = verify(
        &config(Environment::Production),
        &att.key_id,
        &object,
        &spec.client_data_hash,
        now(),
    );
    assert!(
        matches!(
            result,
            Err(AppleAttestError::UntrustedChain | AppleAttestError::BadChainSignature)
        ),
        "{result:?}"
    );
}

#[test]
fn an_expired_credential_certificate_is_refused() {
    refused(
        Spec {
            leaf_validity: ((2020, 1, 1), (2026, 1, 1)),
            ..spec()
        },
        AppleAttestError::CertificateExpired,
    );
}

#[test]
fn a_credential_certificate_not_yet_valid_is_refused() {
    refused(
        Spec {
            leaf_validity: ((2027, 1, 1), (2030, 1, 1)),
            ..spec()
        },
        AppleAttestError::CertificateExpired,
    );
}

#[test]
fn an_expired_root_is_not_a_trust_anchor() {
    // The root expired in 2025; the intermediate and leaf say 2100.
    let expired = TestCa::with_root_validity("Expired Root", (2000, 1, 1), (2025, 1, 1));
    let spec = spec();
    let att = expired.attest(&spec);
    let cfg = AppleAttestConfig {
        roots: vec![expired.root_der.clone()],
        ..config(Environment::Production)
    };
    assert_eq!(
        check(&cfg, &spec, &att),
        Err(AppleAttestError::UntrustedChain)
    );
    // The same chain while the root was valid.
    let in_2024 = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
    assert!(verify(
        &cfg,
        &att.key_id,
        &att.object,
        &spec.client_data_hash,
        in_2024
    )
    .is_ok());
}

#[test]
fn a_chain_through_a_non_ca_intermediate_is_refused() {
    let broken = TestCa::with_non_ca_intermediate();
    let spec = spec();
    let att = broken.attest(&spec);
    let cfg = AppleAttestConfig {
        roots: vec![broken.root_der.clone()],
        ..config(Environment::Production)
    };
    assert_eq!(
        check(&cfg, &spec, &att),
        Err(AppleAttestError::InvalidChain)
    );
}

#[test]
fn a_ca_certificate_as_credential_certificate_is_refused() {
    refused(
        Spec {
            leaf_is_ca: true,
            ..spec()
        },
        AppleAttestError::InvalidChain,
    );
}

#[test]
fn a_garbage_root_is_reported() {
    let spec = spec();
    let att = ca().attest(&spec);
    let cfg = AppleAttestConfig {
        roots: vec![b"not a certificate".to_vec()],
        ..config(Environment::Production)
    };
    assert_eq!(check(&cfg, &spec, &att), Err(AppleAttestError::InvalidRoot));
}

// --- 2.-4. the nonce ---

#[test]
fn a_wrong_nonce_in_the_certificate_is_refused() {
    refused(
        Spec {
            nonce: Some([0x42; 32]),
            ..spec()
        },
        AppleAttestError::NonceMismatch,
    );
}

#[test]
fn an_attestation_for_another_challenge_is_refused() {
    // Made for challenge-1, presented with challenge-2's client data hash.
    let spec = spec();
    let att = ca().attest(&spec);
    let other = client_data_hash("challenge-2");
    assert_eq!(
        verify(
            &config(Environment::Production),
            &att.key_id,
            &att.object,
            &other,
            now()
        ),
        Err(AppleAttestError::NonceMismatch)
    );
}

#[test]
fn an_attestation_bound_to_another_dpop_key_is_refused() {
    let spec = spec();
    let att = ca().attest(&spec);
    let other_key: [u8; 32] = Sha256::new()
        .chain_update(b"challenge-1")
        .chain_update(b"another-thumbprint")
        .finalize()
        .into();
    assert_eq!(
        verify(
            &config(Environment::Production),
            &att.key_id,
            &att.object,
            &other_key,
            now()
        ),
        Err(AppleAttestError::NonceMismatch)
    );
}

// --- 5. the key identifier ---

#[test]
fn a_wrong_key_id_is_refused() {
    let spec = spec();
    let att = ca().attest(&spec);
    let mut key_id = att.key_id.clone();
    key_id[0] ^= 1;
    let cfg = config(Environment::Production);
    assert_eq!(
        verify(&cfg, &key_id, &att.object, &spec.client_data_hash, now()),
        Err(AppleAttestError::KeyIdMismatch)
    );
    assert_eq!(
        verify(&cfg, &[], &att.object, &spec.client_data_hash, now()),
        Err(AppleAttestError::KeyIdMismatch)
    );
    // Another attestation's key id.
    let other = ca().attest(&spec);
    assert_eq!(
        verify(
            &cfg,
            &other.key_id,
            &att.object,
            &spec.client_data_hash,
            now()
        ),
        Err(AppleAttestError::KeyIdMismatch)
    );
}

// --- 6.-9. the authenticator data ---

#[test]
fn another_app_id_is_refused() {
    refused(
        Spec {
            app_id: "ABCDE12345.com.example.other".into(),
            ..spec()
        },
        AppleAttestError::AppIdMismatch,
    );
    refused(
        Spec {
            app_id: "ZZZZZ99999.com.example.app".into(),
            ..spec()
        },
        AppleAttestError::AppIdMismatch,
    );
}

#[test]
fn a_counter_other_than_zero_is_refused() {
    refused(
        Spec {
            counter: 1,
            ..spec()
        },
        AppleAttestError::NonZeroCounter,
    );
    refused(
        Spec {
            counter: u32::MAX,
            ..spec()
        },
        AppleAttestError::NonZeroCounter,
    );
}

#[test]
fn a_development_attestation_is_refused_in_production() {
    refused(spec().development(), AppleAttestError::WrongEnvironment);
}

#[test]
fn a_production_attestation_is_refused_in_development() {
    let spec = spec();
    let att = ca().attest(&spec);
    assert_eq!(
        check(&config(Environment::Development), &spec, &att),
        Err(AppleAttestError::WrongEnvironment)
    );
}

#[test]
fn an_unknown_aaguid_is_refused() {
    refused(
        Spec {
            aaguid: [0; 16],
            ..spec()
        },
        AppleAttestError::WrongEnvironment,
    );
    refused(
        Spec {
            aaguid: *b"appattest\0\0\0\0\0\0\x01",
            ..spec()
        },
        AppleAttestError::WrongEnvironment,
    );
}

#[test]
fn a_credential_id_other_than_the_key_id_is_refused() {
    refused(
        Spec {
            credential_id: Some(vec![7; 32]),
            ..spec()
        },
        AppleAttestError::CredentialIdMismatch,
    );
    refused(
        Spec {
            credential_id: Some(vec![]),
            ..spec()
        },
        AppleAttestError::CredentialIdMismatch,
    );
}

#[test]
fn a_cose_key_other_than_the_certificate_key_is_refused() {
    let other = ca().attest(&spec());
    refused(
        Spec {
            cose_point: Some(other.public_key_sec1),
            ..spec()
        },
        AppleAttestError::CoseKeyMismatch,
    );
}

#[test]
fn authenticator_data_without_attested_credential_data_is_refused() {
    refused(
        Spec {
            flags: 0x01,
            ..spec()
        },
        AppleAttestError::MalformedAuthData,
    );
    refused(
        Spec {
            flags: 0xc1,
            ..spec()
        },
        AppleAttestError::MalformedAuthData,
    );
}

// --- the object's shape ---

#[test]
fn another_format_is_refused() {
    refused(
        Spec {
            fmt: "packed".into(),
            ..spec()
        },
        AppleAttestError::WrongFormat,
    );
    refused(
        Spec {
            fmt: "apple".into(),
            ..spec()
        },
        AppleAttestError::WrongFormat,
    );
}

#[test]
fn a_missing_receipt_is_refused() {
    refused(
        Spec {
            receipt: None,
            ..spec()
        },
        AppleAttestError::MissingReceipt,
    );
    refused(
        Spec {
            receipt: Some(vec![]),
            ..spec()
        },
        AppleAttestError::MissingReceipt,
    );
}

#[test]
fn a_missing_x5c_is_refused() {
    refused(
        Spec {
            x5c: false,
            ..spec()
        },
        AppleAttestError::MissingCertificates,
    );
}

#[test]
fn an_x5c_without_the_intermediate_is_refused() {
    let spec = spec();
    let att = ca().attest(&spec);
    let object = app_attest::encode_object(
        app_attest::FMT,
        Some(vec![att.leaf_der.clone()]),
        spec.receipt.clone(),
        auth_data_of(&att.object),
    );
    assert_eq!(
        verify(
            &config(Environment::Production),
            &att.key_id,
            &object,
            &spec.client_data_hash,
            now()
        ),
        Err(AppleAttestError::MissingCertificates)
    );
}

#[test]
fn missing_auth_data_is_refused() {
    let spec = spec();
    let att = ca().attest(&spec);
    let object = ciborium_map(vec![
        ("fmt", ciborium::value::Value::from(app_attest::FMT)),
        (
            "attStmt",
            ciborium::value::Value::Map(vec![
                (
                    "x5c".into(),
                    ciborium::value::Value::Array(vec![
                        ciborium::value::Value::Bytes(att.leaf_der.clone()),
                        ciborium::value::Value::Bytes(ca().intermediate_der.clone()),
                    ]),
                ),
                ("receipt".into(), ciborium::value::Value::Bytes(vec![1])),
            ]),
        ),
    ]);
    assert_eq!(
        verify(
            &config(Environment::Production),
            &att.key_id,
            &object,
            &spec.client_data_hash,
            now()
        ),
        Err(AppleAttestError::MissingAuthData)
    );
}

#[test]
fn garbage_and_truncated_cbor_is_refused() {
    let cfg = config(Environment::Production);
    let hash = [0u8; 32];
    for garbage in [
        &b""[..],
        b"\x00",
        b"not cbor at all",
        b"\xa1",
        b"\xff\xff",
        b"\x9f\x9f\x9f",
    ] {
        assert_eq!(
            verify(&cfg, &[0; 32], garbage, &hash, now()),
            Err(AppleAttestError::MalformedCbor)
        );
    }
    // A CBOR array, not a map.
    assert_eq!(
        verify(&cfg, &[0; 32], b"\x80", &hash, now()),
        Err(AppleAttestError::MalformedCbor)
    );
    // A map without fmt.
    assert_eq!(
        verify(&cfg, &[0; 32], b"\xa0", &hash, now()),
        Err(AppleAttestError::WrongFormat)
    );

    let spec = spec();
    let att = ca().attest(&spec);
    for len in 0..att.object.len() {
        assert!(
            verify(
                &cfg,
                &att.key_id,
                &att.object[..len],
                &spec.client_data_hash,
                now()
            )
            .is_err(),
            "a {len}-byte prefix verified"
        );
    }
    let mut trailing = att.object.clone();
    trailing.push(0);
    assert_eq!(
        verify(&cfg, &att.key_id, &trailing, &spec.client_data_hash, now()),
        Err(AppleAttestError::MalformedCbor)
    );
}

#[test]
fn a_duplicated_key_is_refused() {
    let spec = spec();
    let att = ca().attest(&spec);
    let object = ciborium_map(vec![
        ("fmt", ciborium::value::Value::from(app_attest::FMT)),
        ("fmt", ciborium::value::Value::from(app_attest::FMT)),
    ]);
    assert_eq!(
        verify(
            &config(Environment::Production),
            &att.key_id,
            &object,
            &spec.client_data_hash,
            now()
        ),
        Err(AppleAttestError::MalformedCbor)
    );
}

#[test]
fn an_oversized_object_is_refused_before_parsing() {
    let spec = spec();
    let att = ca().attest(&spec);
    let mut big = att.object.clone();
    big.resize(MAX_ATTESTATION_OBJECT_BYTES + 1, 0);
    assert_eq!(
        verify(
            &config(Environment::Production),
            &att.key_id,
            &big,
            &spec.client_data_hash,
            now()
        ),
        Err(AppleAttestError::TooLarge)
    );
    // A valid object padded inside its receipt up to the limit still parses.
    let padded = Spec {
        receipt: Some(vec![1; MAX_ATTESTATION_OBJECT_BYTES - 4096]),
        ..spec.clone()
    };
    let att = ca().attest(&padded);
    assert!(att.object.len() <= MAX_ATTESTATION_OBJECT_BYTES);
    assert!(check(&config(Environment::Production), &padded, &att).is_ok());
}

fn valid() -> &'static (Spec, TestAttestation) {
    static VALID: OnceLock<(Spec, TestAttestation)> = OnceLock::new();
    VALID.get_or_init(|| {
        let spec = spec();
        let att = ca().attest(&spec);
        (spec, att)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(verify(&config(Environment::Production), &[0; 32], &bytes, &[0; 32], now()).is_err());
    }

    #[test]
    fn a_mutated_attestation_never_panics(edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        let (spec, att) = valid();
        let mut object = att.object.clone();
        for (at, xor) in edits {
            let i = at.index(object.len());
            object[i] ^= xor;
        }
        // A flip inside the receipt leaves a valid attestation; anything
        // else is refused. Either way: no panic.
        let _ = verify(&config(Environment::Production), &att.key_id, &object, &spec.client_data_hash, now());
    }
}

/// The authData byte string of an attestation object.
fn auth_data_of(object: &[u8]) -> Vec<u8> {
    let value: ciborium::value::Value = ciborium::de::from_reader(object).unwrap();
    let map = value.into_map().unwrap();
    map.into_iter()
        .find_map(|(k, v)| (k.as_text() == Some("authData")).then(|| v.into_bytes().unwrap()))
        .unwrap()
}

fn ciborium_map(entries: Vec<(&str, ciborium::value::Value)>) -> Vec<u8> {
    let map =
        ciborium::value::Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect());
    let mut out = Vec::new();
    ciborium::ser::into_writer(&map, &mut out).unwrap();
    out
}
