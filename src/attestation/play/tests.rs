//! Tests of Play Integrity token decoding and verdict checks, with test
//! keys standing in for the Play Console's.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

#[path = "../../../tests/support/play_integrity.rs"]
mod support;

use support::{PlayKeys, TEST_PACKAGE};

const HASH: &str = "dGhpcyBpcyB0aGUgcmVxdWVzdCBoYXNoIG9mIHRoZSB0ZXN0";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 22, 0, 0).unwrap()
}

fn now_ms() -> i64 {
    now().timestamp_millis()
}

fn config(keys: &PlayKeys) -> PlayIntegrityConfig {
    PlayIntegrityConfig::from_base64(
        &keys.decryption_key_b64(),
        &keys.verification_key_b64(),
        TEST_PACKAGE,
    )
    .unwrap()
}

fn good_payload() -> Value {
    support::verdict(TEST_PACKAGE, HASH, now_ms() - 2_000)
}

/// Decodes `token` with the keys of `keys`.
fn decode(keys: &PlayKeys, token: &str) -> Result<Value, PlayIntegrityError> {
    LocalDecoder::new(&config(keys)).unwrap().decode_now(token)
}

/// Decodes and checks, the whole path a handler takes.
fn verify(keys: &PlayKeys, token: &str) -> Result<PlayVerdict, PlayIntegrityError> {
    let cfg = config(keys);
    let payload = LocalDecoder::new(&cfg).unwrap().decode_now(token)?;
    check_verdict(&cfg, &payload, HASH, now())
}

fn check(payload: &Value) -> Result<PlayVerdict, PlayIntegrityError> {
    let keys = PlayKeys::generate();
    check_verdict(&config(&keys), payload, HASH, now())
}

/// A token whose JWE is well formed and encrypted under the right key, but
/// whose inner JWS is `jws`.
fn token_around(keys: &PlayKeys, jws: &str) -> String {
    support::encrypt_a256kw(&keys.decryption_key, &support::jwe_header(), jws.as_bytes())
}

fn flip_first_byte(bytes: &mut [u8]) {
    bytes[0] ^= 0x01;
}

// ---------------------------------------------------------------- config

#[test]
fn config_reads_console_keys_and_defaults_to_five_minutes() {
    let keys = PlayKeys::generate();
    let cfg = config(&keys);
    assert_eq!(cfg.decryption_key, keys.decryption_key);
    assert_eq!(cfg.verification_key_spki_der, keys.verification_key_der());
    assert_eq!(cfg.package_name, TEST_PACKAGE);
    assert_eq!(cfg.max_age, Duration::from_secs(300));
    assert!(!format!("{cfg:?}").contains(&keys.decryption_key_b64()));
}

#[test]
fn config_tolerates_whitespace_url_safe_and_missing_padding() {
    let keys = PlayKeys::generate();
    let wrapped = keys
        .verification_key_b64()
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let url_safe = support::b64url(&keys.decryption_key);
    let cfg =
        PlayIntegrityConfig::from_base64(&url_safe, &wrapped, " com.example.secureapp\n").unwrap();
    assert_eq!(cfg.decryption_key, keys.decryption_key);
    assert_eq!(cfg.package_name, TEST_PACKAGE);
}

#[test]
fn config_refuses_bad_keys_and_empty_package() {
    let keys = PlayKeys::generate();
    let ver = keys.verification_key_b64();
    let dec = keys.decryption_key_b64();
    for bad in [
        "",
        "   ",
        "not base64!",
        support::b64url(&[7u8; 16]).as_str(),
        support::b64url(&[7u8; 33]).as_str(),
    ] {
        assert_eq!(
            PlayIntegrityConfig::from_base64(bad, &ver, TEST_PACKAGE).unwrap_err(),
            PlayIntegrityError::InvalidDecryptionKey,
            "{bad:?}"
        );
    }
    let truncated = support::b64url(&keys.verification_key_der()[..40]);
    for bad in [
        "",
        "%%%",
        support::b64url(&[4u8; 65]).as_str(),
        truncated.as_str(),
    ] {
        assert_eq!(
            PlayIntegrityConfig::from_base64(&dec, bad, TEST_PACKAGE).unwrap_err(),
            PlayIntegrityError::InvalidVerificationKey,
            "{bad:?}"
        );
    }
    assert_eq!(
        PlayIntegrityConfig::from_base64(&dec, &ver, "  ").unwrap_err(),
        PlayIntegrityError::InvalidPackageName
    );
}

#[test]
fn config_refuses_a_key_that_is_not_p256() {
    // An Ed25519 SubjectPublicKeyInfo (RFC 8410 example key).
    let ed25519 = "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=";
    let keys = PlayKeys::generate();
    assert_eq!(
        PlayIntegrityConfig::from_base64(&keys.decryption_key_b64(), ed25519, TEST_PACKAGE)
            .unwrap_err(),
        PlayIntegrityError::InvalidVerificationKey
    );
}

// ---------------------------------------------------------------- positive

#[test]
fn a_genuine_token_decodes_and_passes() {
    let keys = PlayKeys::generate();
    let token = keys.token(&good_payload());
    let verdict = verify(&keys, &token).unwrap();
    assert_eq!(
        verdict,
        PlayVerdict {
            package_name: TEST_PACKAGE.into(),
            app_recognition: "PLAY_RECOGNIZED".into(),
            device_recognition: vec![
                "MEETS_BASIC_INTEGRITY".into(),
                "MEETS_DEVICE_INTEGRITY".into()
            ],
            licensing: Some("LICENSED".into()),
            certificate_sha256: vec!["6a6a1474b5cbbb2b1aa57e0bc3".into()],
            version_code: Some("42".into()),
            timestamp_millis: now_ms() - 2_000,
        }
    );
}

#[tokio::test]
async fn the_trait_decodes_like_the_direct_call() {
    let keys = PlayKeys::generate();
    let cfg = config(&keys);
    let decoder: Box<dyn IntegrityTokenDecoder> = Box::new(LocalDecoder::new(&cfg).unwrap());
    let payload = decoder.decode(&keys.token(&good_payload())).await.unwrap();
    assert_eq!(payload, good_payload());
    assert_eq!(
        decoder.decode("x.y").await.unwrap_err(),
        PlayIntegrityError::MalformedJwe
    );
}

#[test]
fn request_hash_is_base64url_sha256_of_the_concatenation() {
    let hash = request_hash(b"challenge", b"thumbprint");
    assert_eq!(hash, support::request_hash(b"challenge", b"thumbprint"));
    assert_eq!(hash.len(), 43);
    assert_eq!(hash, request_hash(b"challengethumb", b"print"));
    // SHA-256("abc"), a FIPS 180-2 test vector.
    assert_eq!(
        request_hash(b"ab", b"c"),
        "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
    );
}

#[test]
fn minimal_verdict_passes_without_optional_fields() {
    let payload = json!({
        "requestDetails": {"requestPackageName": TEST_PACKAGE, "requestHash": HASH, "timestampMillis": now_ms()},
        "appIntegrity": {"appRecognitionVerdict": "PLAY_RECOGNIZED", "packageName": TEST_PACKAGE},
        "deviceIntegrity": {"deviceRecognitionVerdict": ["MEETS_DEVICE_INTEGRITY"]},
    });
    let verdict = check(&payload).unwrap();
    assert_eq!(verdict.licensing, None);
    assert_eq!(verdict.version_code, None);
    assert!(verdict.certificate_sha256.is_empty());
    assert_eq!(verdict.timestamp_millis, now_ms());
}

#[test]
fn timestamps_at_the_limits_pass() {
    let max_age = i64::try_from(DEFAULT_MAX_AGE.as_millis()).unwrap();
    let skew = i64::try_from(MAX_FUTURE_SKEW.as_millis()).unwrap();
    for ts in [now_ms() - max_age, now_ms() + skew, now_ms()] {
        check(&support::verdict(TEST_PACKAGE, HASH, ts)).unwrap();
    }
}

// ---------------------------------------------------------------- JWE

#[test]
fn wrong_decryption_key_fails_to_unwrap() {
    let keys = PlayKeys::generate();
    let mut other = PlayKeys::generate();
    other.signing_key = keys.signing_key.clone();
    let token = other.token(&good_payload());
    assert_eq!(
        decode(&keys, &token).unwrap_err(),
        PlayIntegrityError::KeyUnwrapFailed
    );
}

#[test]
fn tampered_ciphertext_tag_iv_key_or_header_fail() {
    let keys = PlayKeys::generate();
    let jws = support::sign_es256(&keys.signing_key, &json!({"alg": "ES256"}), &good_payload());
    let fresh =
        || support::encrypt_parts(&keys.decryption_key, &support::jwe_header(), jws.as_bytes());

    let mut parts = fresh();
    flip_first_byte(&mut parts.ciphertext);
    assert_eq!(
        decode(&keys, &parts.compact()).unwrap_err(),
        PlayIntegrityError::DecryptionFailed
    );

    let mut parts = fresh();
    flip_first_byte(&mut parts.tag);
    assert_eq!(
        decode(&keys, &parts.compact()).unwrap_err(),
        PlayIntegrityError::DecryptionFailed
    );

    let mut parts = fresh();
    flip_first_byte(&mut parts.iv);
    assert_eq!(
        decode(&keys, &parts.compact()).unwrap_err(),
        PlayIntegrityError::DecryptionFailed
    );

    let mut parts = fresh();
    flip_first_byte(&mut parts.encrypted_key);
    assert_eq!(
        decode(&keys, &parts.compact()).unwrap_err(),
        PlayIntegrityError::KeyUnwrapFailed
    );

    // The same header with extra (allowed) members: the AAD changes, so
    // the tag no longer matches.
    let mut parts = fresh();
    parts.header = support::b64url(br#"{"alg":"A256KW","enc":"A256GCM","kid":"x"}"#);
    assert_eq!(
        decode(&keys, &parts.compact()).unwrap_err(),
        PlayIntegrityError::DecryptionFailed
    );

    // Byte-identical JSON, different base64url spelling is impossible
    // without padding; a re-ordered header is a different AAD.
    let mut parts = fresh();
    parts.header = support::b64url(br#"{"enc":"A256GCM","alg":"A256KW"}"#);
    assert_eq!(
        decode(&keys, &parts.compact()).unwrap_err(),
        PlayIntegrityError::DecryptionFailed
    );

    // Short or long IV and tag are refused before decrypting.
    let mut parts = fresh();
    parts.iv.push(0);
    assert_eq!(
        decode(&keys, &parts.compact()).unwrap_err(),
        PlayIntegrityError::MalformedJwe
    );
    let mut parts = fresh();
    parts.tag.pop();
    assert_eq!(
        decode(&keys, &parts.compact()).unwrap_err(),
        PlayIntegrityError::MalformedJwe
    );
    let mut parts = fresh();
    parts.encrypted_key.truncate(32);
    assert_eq!(
        decode(&keys, &parts.compact()).unwrap_err(),
        PlayIntegrityError::MalformedJwe
    );
}

#[test]
fn other_jwe_algorithms_are_refused() {
    let keys = PlayKeys::generate();
    let jws = support::sign_es256(&keys.signing_key, &json!({"alg": "ES256"}), &good_payload());
    let headers = [
        json!({"alg": "dir", "enc": "A256GCM"}),
        json!({"alg": "A128KW", "enc": "A256GCM"}),
        json!({"alg": "A192KW", "enc": "A256GCM"}),
        json!({"alg": "RSA-OAEP", "enc": "A256GCM"}),
        json!({"alg": "RSA-OAEP-256", "enc": "A256GCM"}),
        json!({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}),
        json!({"alg": "A256GCMKW", "enc": "A256GCM"}),
        json!({"alg": "A256KW", "enc": "A128GCM"}),
        json!({"alg": "A256KW", "enc": "A256CBC-HS512"}),
        json!({"alg": "a256kw", "enc": "A256GCM"}),
        json!({"alg": "A256KW", "enc": "A256GCM", "zip": "DEF"}),
        json!({"alg": "A256KW", "enc": "A256GCM", "zip": null}),
        json!({"alg": "A256KW", "enc": "A256GCM", "crit": ["exp"], "exp": 1}),
    ];
    for header in headers {
        // Encrypted for real under the right key, so only the header can
        // be the reason.
        let token = support::encrypt_a256kw(&keys.decryption_key, &header, jws.as_bytes());
        assert_eq!(
            decode(&keys, &token).unwrap_err(),
            PlayIntegrityError::UnsupportedJweHeader,
            "{header}"
        );
    }

    // A128KW with a 128-bit key, for real.
    let token = support::encrypt_a256kw(
        &keys.decryption_key[..16],
        &json!({"alg": "A128KW", "enc": "A256GCM"}),
        jws.as_bytes(),
    );
    assert_eq!(
        decode(&keys, &token).unwrap_err(),
        PlayIntegrityError::UnsupportedJweHeader
    );

    // `dir` has an empty encrypted-key part.
    let parts = support::encrypt_parts(
        &keys.decryption_key,
        &json!({"alg": "dir", "enc": "A256GCM"}),
        jws.as_bytes(),
    );
    let token = format!(
        "{}..{}.{}.{}",
        parts.header,
        support::b64url(&parts.iv),
        support::b64url(&parts.ciphertext),
        support::b64url(&parts.tag)
    );
    assert_eq!(
        decode(&keys, &token).unwrap_err(),
        PlayIntegrityError::UnsupportedJweHeader
    );
}

#[test]
fn headers_missing_members_or_repeating_them_are_malformed() {
    let keys = PlayKeys::generate();
    let jws = support::sign_es256(&keys.signing_key, &json!({"alg": "ES256"}), &good_payload());
    let good = support::encrypt_parts(&keys.decryption_key, &support::jwe_header(), jws.as_bytes());
    for header in [
        r#"{"alg":"A256KW"}"#,
        r#"{"enc":"A256GCM"}"#,
        r#"{"alg":"A256KW","enc":"A256GCM","alg":"dir"}"#,
        r#"{"alg":1,"enc":"A256GCM"}"#,
        // serde reads a struct from an array by position; a header is
        // an object.
        r#"["A256KW","A256GCM"]"#,
        r#"["A256KW","A256GCM",null,null]"#,
        "null",
        "",
    ] {
        let mut parts =
            support::encrypt_parts(&keys.decryption_key, &support::jwe_header(), jws.as_bytes());
        parts.header = support::b64url(header.as_bytes());
        assert_eq!(
            decode(&keys, &parts.compact()).unwrap_err(),
            PlayIntegrityError::MalformedJwe,
            "{header}"
        );
    }
    // Padding and the standard alphabet are not base64url as JOSE uses it.
    let padded = format!("{}=", good.compact());
    assert_eq!(
        decode(&keys, &padded).unwrap_err(),
        PlayIntegrityError::MalformedJwe
    );
    let token = good.compact();
    let plus = token.replacen(['-', '_'], "+", 1);
    if plus != token {
        assert_eq!(
            decode(&keys, &plus).unwrap_err(),
            PlayIntegrityError::MalformedJwe
        );
    }
}

#[test]
fn garbage_truncated_and_oversized_tokens_are_refused() {
    let keys = PlayKeys::generate();
    let token = keys.token(&good_payload());
    for garbage in [
        "",
        ".",
        "....",
        "......",
        "a.b.c.d.e",
        "a.b.c.d.e.f",
        "eyJhbGciOiJub25lIn0.eyJ9.",
        "\u{0}\u{0}\u{0}",
        "é.é.é.é.é",
    ] {
        assert_eq!(
            decode(&keys, garbage).unwrap_err(),
            PlayIntegrityError::MalformedJwe,
            "{garbage:?}"
        );
    }
    // A JWS where a JWE is expected.
    let jws = support::sign_es256(&keys.signing_key, &json!({"alg": "ES256"}), &good_payload());
    assert_eq!(
        decode(&keys, &jws).unwrap_err(),
        PlayIntegrityError::MalformedJwe
    );

    let last_dot = token.rfind('.').unwrap();
    assert!(decode(&keys, &token[..last_dot]).is_err());
    assert!(decode(&keys, &token[..token.len() - 1]).is_err());

    let oversized = "A".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        decode(&keys, &oversized).unwrap_err(),
        PlayIntegrityError::TokenTooLarge
    );
    let padded_genuine = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(
        decode(&keys, &padded_genuine).unwrap_err(),
        PlayIntegrityError::TokenTooLarge
    );
}

#[test]
fn every_truncation_and_single_character_change_is_refused() {
    let keys = PlayKeys::generate();
    let cfg = config(&keys);
    let decoder = LocalDecoder::new(&cfg).unwrap();
    let token = keys.token(&good_payload());
    decoder.decode_now(&token).unwrap();

    for cut in 0..token.len() {
        assert!(decoder.decode_now(&token[..cut]).is_err(), "cut at {cut}");
    }
    let bytes = token.as_bytes();
    for (i, &original) in bytes.iter().enumerate() {
        for replacement in [b'A', b'.', b'-', b'='] {
            if original == replacement {
                continue;
            }
            let mut mutated = bytes.to_vec();
            mutated[i] = replacement;
            let mutated = String::from_utf8(mutated).unwrap();
            // A change in the last character of a base64url part may only
            // touch padding bits that decode to the same bytes; the token
            // then still is the genuine one.
            if let Ok(payload) = decoder.decode_now(&mutated) {
                assert_eq!(payload, good_payload(), "mutation at {i} accepted");
            }
        }
        let mut removed = bytes.to_vec();
        removed.remove(i);
        let removed = String::from_utf8(removed).unwrap();
        assert!(decoder.decode_now(&removed).is_err(), "removal at {i}");
    }
}

// ---------------------------------------------------------------- JWS

#[test]
fn jws_signed_by_another_key_is_refused() {
    let keys = PlayKeys::generate();
    let other = support::random_signing_key();
    let jws = support::sign_es256(&other, &json!({"alg": "ES256"}), &good_payload());
    assert_eq!(
        decode(&keys, &token_around(&keys, &jws)).unwrap_err(),
        PlayIntegrityError::BadSignature
    );
}

#[test]
fn alg_none_hs256_and_other_jws_algorithms_are_refused() {
    let keys = PlayKeys::generate();
    let payload = good_payload();
    let none = support::unsigned_jws(&payload);
    // HS256 keyed with the verification key's bytes: the classic
    // algorithm-confusion forgery.
    let hs256 = support::sign_hs256(
        &keys.verification_key_der(),
        &json!({"alg": "HS256"}),
        &payload,
    );
    let es384 = support::sign_es256(&keys.signing_key, &json!({"alg": "ES384"}), &payload);
    let lower = support::sign_es256(&keys.signing_key, &json!({"alg": "es256"}), &payload);
    let crit = support::sign_es256(
        &keys.signing_key,
        &json!({"alg": "ES256", "crit": ["b64"], "b64": false}),
        &payload,
    );
    for jws in [none, hs256, es384, lower, crit] {
        assert_eq!(
            decode(&keys, &token_around(&keys, &jws)).unwrap_err(),
            PlayIntegrityError::UnsupportedJwsAlgorithm,
            "{jws}"
        );
    }
}

#[test]
fn malformed_jws_inside_a_genuine_jwe_is_refused() {
    let keys = PlayKeys::generate();
    let genuine = support::sign_es256(&keys.signing_key, &json!({"alg": "ES256"}), &good_payload());
    let (signing_input, signature) = genuine.rsplit_once('.').unwrap();

    let cases: Vec<(String, PlayIntegrityError)> = vec![
        // An empty plaintext leaves an empty ciphertext part.
        (String::new(), PlayIntegrityError::MalformedJwe),
        ("not a jws".into(), PlayIntegrityError::MalformedJws),
        (format!("{genuine}.extra"), PlayIntegrityError::MalformedJws),
        (signing_input.to_string(), PlayIntegrityError::MalformedJws),
        (
            format!("{signing_input}."),
            PlayIntegrityError::MalformedJws,
        ),
        // A DER signature, or r ‖ s cut short or lengthened.
        (
            format!("{signing_input}.{}", &signature[..40]),
            PlayIntegrityError::BadSignature,
        ),
        (
            format!("{signing_input}.{signature}AAAA"),
            PlayIntegrityError::BadSignature,
        ),
        // r = s = 0.
        (
            format!("{signing_input}.{}", support::b64url(&[0u8; 64])),
            PlayIntegrityError::BadSignature,
        ),
    ];
    for (jws, expected) in cases {
        assert_eq!(
            decode(&keys, &token_around(&keys, &jws)).unwrap_err(),
            expected,
            "{jws:?}"
        );
    }

    // A JWS header given as an array, signed for real.
    let array_header = support::sign_es256(&keys.signing_key, &json!(["ES256"]), &good_payload());
    assert_eq!(
        decode(&keys, &token_around(&keys, &array_header)).unwrap_err(),
        PlayIntegrityError::MalformedJws
    );

    // Not UTF-8.
    let token = support::encrypt_a256kw(
        &keys.decryption_key,
        &support::jwe_header(),
        &[0xff, 0xfe, b'.'],
    );
    assert_eq!(
        decode(&keys, &token).unwrap_err(),
        PlayIntegrityError::MalformedJws
    );

    // A payload swapped under a genuine signature.
    let (header, _) = signing_input.split_once('.').unwrap();
    let forged_payload = support::b64url(br#"{"requestDetails":{}}"#);
    let swapped = format!("{header}.{forged_payload}.{signature}");
    assert_eq!(
        decode(&keys, &token_around(&keys, &swapped)).unwrap_err(),
        PlayIntegrityError::BadSignature
    );
}

#[test]
fn signed_payload_that_is_not_a_json_object_is_refused() {
    let keys = PlayKeys::generate();
    for payload in [json!([1, 2]), json!("verdict"), json!(null), json!(7)] {
        let jws = support::sign_es256(&keys.signing_key, &json!({"alg": "ES256"}), &payload);
        assert_eq!(
            decode(&keys, &token_around(&keys, &jws)).unwrap_err(),
            PlayIntegrityError::MalformedPayload
        );
    }
    // Signed bytes that are not JSON at all.
    let header = support::b64url(br#"{"alg":"ES256"}"#);
    let body = support::b64url(b"{not json");
    let input = format!("{header}.{body}");
    let signature: p256::ecdsa::Signature =
        p256::ecdsa::signature::Signer::sign(&keys.signing_key, input.as_bytes());
    let jws = format!("{input}.{}", support::b64url(&signature.to_bytes()));
    assert_eq!(
        decode(&keys, &token_around(&keys, &jws)).unwrap_err(),
        PlayIntegrityError::MalformedPayload
    );
}

// ---------------------------------------------------------------- verdict

fn with(mut payload: Value, pointer: &str, value: Value) -> Value {
    *payload.pointer_mut(pointer).unwrap() = value;
    payload
}

fn without(mut payload: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = if parent.is_empty() {
        &mut payload
    } else {
        payload.pointer_mut(parent).unwrap()
    };
    parent.as_object_mut().unwrap().remove(key).unwrap();
    payload
}

#[test]
fn wrong_package_in_either_field_is_refused() {
    let keys = PlayKeys::generate();
    let request = with(
        good_payload(),
        "/requestDetails/requestPackageName",
        json!("com.evil.app"),
    );
    let token = keys.token(&request);
    assert_eq!(
        verify(&keys, &token).unwrap_err(),
        PlayIntegrityError::RequestPackageMismatch
    );

    let app = with(
        good_payload(),
        "/appIntegrity/packageName",
        json!("com.evil.app"),
    );
    assert_eq!(
        check(&app).unwrap_err(),
        PlayIntegrityError::AppPackageMismatch
    );

    let prefix = with(
        good_payload(),
        "/appIntegrity/packageName",
        json!("com.example.secureapp.evil"),
    );
    assert_eq!(
        check(&prefix).unwrap_err(),
        PlayIntegrityError::AppPackageMismatch
    );
    let case = with(
        good_payload(),
        "/requestDetails/requestPackageName",
        json!("com.example.SecureApp"),
    );
    assert_eq!(
        check(&case).unwrap_err(),
        PlayIntegrityError::RequestPackageMismatch
    );
}

#[test]
fn wrong_request_hash_is_refused() {
    let keys = PlayKeys::generate();
    let token = keys.token(&good_payload());
    let cfg = config(&keys);
    let payload = LocalDecoder::new(&cfg).unwrap().decode_now(&token).unwrap();
    let other = request_hash(b"another challenge", b"thumbprint");
    for expected in [
        other.as_str(),
        "",
        &HASH[..HASH.len() - 1],
        format!("{HASH}A").as_str(),
    ] {
        assert_eq!(
            check_verdict(&cfg, &payload, expected, now()).unwrap_err(),
            PlayIntegrityError::RequestHashMismatch,
            "{expected:?}"
        );
    }
    // An empty requestHash never matches, not even an empty expectation.
    let empty = with(good_payload(), "/requestDetails/requestHash", json!(""));
    assert_eq!(
        check_verdict(&cfg, &empty, "", now()).unwrap_err(),
        PlayIntegrityError::RequestHashMismatch
    );
}

#[test]
fn classic_request_with_nonce_is_refused() {
    let mut payload = without(good_payload(), "/requestDetails/requestHash");
    payload["requestDetails"]["nonce"] = json!(HASH);
    assert_eq!(
        check(&payload).unwrap_err(),
        PlayIntegrityError::ClassicRequest
    );
}

#[test]
fn stale_and_future_timestamps_are_refused() {
    let keys = PlayKeys::generate();
    let max_age = i64::try_from(DEFAULT_MAX_AGE.as_millis()).unwrap();
    let skew = i64::try_from(MAX_FUTURE_SKEW.as_millis()).unwrap();

    let stale = keys.token(&support::verdict(
        TEST_PACKAGE,
        HASH,
        now_ms() - max_age - 1,
    ));
    assert_eq!(
        verify(&keys, &stale).unwrap_err(),
        PlayIntegrityError::Stale
    );
    for ts in [0, 1, i64::MIN] {
        assert_eq!(
            check(&with(
                good_payload(),
                "/requestDetails/timestampMillis",
                json!(ts)
            ))
            .unwrap_err(),
            PlayIntegrityError::Stale
        );
    }

    let future = keys.token(&support::verdict(TEST_PACKAGE, HASH, now_ms() + skew + 1));
    assert_eq!(
        verify(&keys, &future).unwrap_err(),
        PlayIntegrityError::FromTheFuture
    );
    assert_eq!(
        check(&with(
            good_payload(),
            "/requestDetails/timestampMillis",
            json!(i64::MAX.to_string())
        ))
        .unwrap_err(),
        PlayIntegrityError::FromTheFuture
    );

    // A shorter configured max age applies.
    let mut cfg = config(&keys);
    cfg.max_age = Duration::from_secs(1);
    assert_eq!(
        check_verdict(&cfg, &good_payload(), HASH, now()).unwrap_err(),
        PlayIntegrityError::Stale
    );
}

#[test]
fn app_not_recognized_is_refused() {
    for verdict in ["UNRECOGNIZED_VERSION", "UNEVALUATED", "play_recognized", ""] {
        let payload = with(
            good_payload(),
            "/appIntegrity/appRecognitionVerdict",
            json!(verdict),
        );
        assert_eq!(
            check(&payload).unwrap_err(),
            PlayIntegrityError::AppNotRecognized,
            "{verdict}"
        );
    }
    // An unevaluated verdict comes without package or certificates.
    let unevaluated = json!({
        "requestDetails": {"requestPackageName": TEST_PACKAGE, "requestHash": HASH, "timestampMillis": now_ms()},
        "appIntegrity": {"appRecognitionVerdict": "UNEVALUATED"},
        "deviceIntegrity": {},
    });
    assert_eq!(
        check(&unevaluated).unwrap_err(),
        PlayIntegrityError::AppNotRecognized
    );
}

#[test]
fn device_without_meets_device_integrity_is_refused() {
    for labels in [
        json!(["MEETS_BASIC_INTEGRITY"]),
        json!(["MEETS_VIRTUAL_INTEGRITY"]),
        json!([]),
        json!(["meets_device_integrity"]),
    ] {
        let payload = with(
            good_payload(),
            "/deviceIntegrity/deviceRecognitionVerdict",
            labels.clone(),
        );
        assert_eq!(
            check(&payload).unwrap_err(),
            PlayIntegrityError::DeviceIntegrityNotMet,
            "{labels}"
        );
    }
    let empty = without(good_payload(), "/deviceIntegrity/deviceRecognitionVerdict");
    assert_eq!(
        check(&empty).unwrap_err(),
        PlayIntegrityError::DeviceIntegrityNotMet
    );

    let strong = with(
        good_payload(),
        "/deviceIntegrity/deviceRecognitionVerdict",
        json!([
            "MEETS_BASIC_INTEGRITY",
            "MEETS_DEVICE_INTEGRITY",
            "MEETS_STRONG_INTEGRITY"
        ]),
    );
    assert_eq!(check(&strong).unwrap().device_recognition.len(), 3);
}

#[test]
fn missing_or_mistyped_fields_are_refused() {
    use PlayIntegrityError::MissingField;
    let cases: Vec<(Value, PlayIntegrityError)> = vec![
        (
            without(good_payload(), "/requestDetails"),
            MissingField("requestDetails"),
        ),
        (
            with(good_payload(), "/requestDetails", json!("x")),
            MissingField("requestDetails"),
        ),
        (
            without(good_payload(), "/requestDetails/requestPackageName"),
            MissingField("requestDetails.requestPackageName"),
        ),
        (
            with(
                good_payload(),
                "/requestDetails/requestPackageName",
                json!(["com.example.secureapp"]),
            ),
            MissingField("requestDetails.requestPackageName"),
        ),
        (
            without(good_payload(), "/requestDetails/requestHash"),
            MissingField("requestDetails.requestHash"),
        ),
        (
            with(good_payload(), "/requestDetails/requestHash", json!(1)),
            MissingField("requestDetails.requestHash"),
        ),
        (
            without(good_payload(), "/requestDetails/timestampMillis"),
            MissingField("requestDetails.timestampMillis"),
        ),
        (
            with(
                good_payload(),
                "/requestDetails/timestampMillis",
                json!("-5"),
            ),
            MissingField("requestDetails.timestampMillis"),
        ),
        (
            with(
                good_payload(),
                "/requestDetails/timestampMillis",
                json!("1e12"),
            ),
            MissingField("requestDetails.timestampMillis"),
        ),
        (
            with(
                good_payload(),
                "/requestDetails/timestampMillis",
                json!(1.5e12),
            ),
            MissingField("requestDetails.timestampMillis"),
        ),
        (
            with(
                good_payload(),
                "/requestDetails/timestampMillis",
                json!("99999999999999999999"),
            ),
            MissingField("requestDetails.timestampMillis"),
        ),
        (
            without(good_payload(), "/appIntegrity"),
            MissingField("appIntegrity"),
        ),
        (
            without(good_payload(), "/appIntegrity/appRecognitionVerdict"),
            MissingField("appIntegrity.appRecognitionVerdict"),
        ),
        (
            without(good_payload(), "/appIntegrity/packageName"),
            MissingField("appIntegrity.packageName"),
        ),
        (
            with(
                good_payload(),
                "/appIntegrity/certificateSha256Digest",
                json!("abc"),
            ),
            MissingField("appIntegrity.certificateSha256Digest"),
        ),
        (
            with(
                good_payload(),
                "/appIntegrity/certificateSha256Digest",
                json!([1]),
            ),
            MissingField("appIntegrity.certificateSha256Digest"),
        ),
        (
            with(good_payload(), "/appIntegrity/versionCode", json!([42])),
            MissingField("appIntegrity.versionCode"),
        ),
        (
            without(good_payload(), "/deviceIntegrity"),
            MissingField("deviceIntegrity"),
        ),
        (
            with(
                good_payload(),
                "/deviceIntegrity/deviceRecognitionVerdict",
                json!("MEETS_DEVICE_INTEGRITY"),
            ),
            MissingField("deviceIntegrity.deviceRecognitionVerdict"),
        ),
        (
            with(good_payload(), "/accountDetails", json!([])),
            MissingField("accountDetails"),
        ),
        (
            with(
                good_payload(),
                "/accountDetails/appLicensingVerdict",
                json!(true),
            ),
            MissingField("accountDetails.appLicensingVerdict"),
        ),
        (json!({}), MissingField("requestDetails")),
    ];
    for (payload, expected) in cases {
        assert_eq!(check(&payload).unwrap_err(), expected, "{payload}");
    }
}

#[test]
fn numeric_timestamp_and_version_code_are_read() {
    let payload = with(
        with(
            good_payload(),
            "/requestDetails/timestampMillis",
            json!(now_ms()),
        ),
        "/appIntegrity/versionCode",
        json!(7),
    );
    let verdict = check(&payload).unwrap();
    assert_eq!(verdict.timestamp_millis, now_ms());
    assert_eq!(verdict.version_code.as_deref(), Some("7"));
    let no_account = without(good_payload(), "/accountDetails");
    assert_eq!(check(&no_account).unwrap().licensing, None);
    let unlicensed = with(
        good_payload(),
        "/accountDetails/appLicensingVerdict",
        json!("UNLICENSED"),
    );
    assert_eq!(
        check(&unlicensed).unwrap().licensing.as_deref(),
        Some("UNLICENSED")
    );
}

// ---------------------------------------------------------------- fuzz

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_tokens_never_panic(token in ".{0,400}") {
        let keys = PlayKeys::generate();
        prop_assert!(decode(&keys, &token).is_err());
    }

    #[test]
    fn arbitrary_dotted_base64url_never_panics(parts in proptest::collection::vec("[A-Za-z0-9_-]{0,80}", 0..8)) {
        let keys = PlayKeys::generate();
        prop_assert!(decode(&keys, &parts.join(".")).is_err());
    }

    #[test]
    fn arbitrary_field_values_never_panic(
        pointer in proptest::sample::select(FIELD_POINTERS),
        value in arbitrary_json(),
    ) {
        let keys = PlayKeys::generate();
        let mut payload = good_payload();
        *payload.pointer_mut(pointer).unwrap() = value;
        let _ = check_verdict(&config(&keys), &payload, HASH, now());
    }

    #[test]
    fn arbitrary_payloads_never_panic(payload in arbitrary_json()) {
        let keys = PlayKeys::generate();
        prop_assert!(check_verdict(&config(&keys), &payload, HASH, now()).is_err());
    }
}

const FIELD_POINTERS: &[&str] = &[
    "/requestDetails",
    "/requestDetails/requestPackageName",
    "/requestDetails/requestHash",
    "/requestDetails/timestampMillis",
    "/appIntegrity",
    "/appIntegrity/appRecognitionVerdict",
    "/appIntegrity/packageName",
    "/appIntegrity/certificateSha256Digest",
    "/appIntegrity/versionCode",
    "/deviceIntegrity",
    "/deviceIntegrity/deviceRecognitionVerdict",
    "/accountDetails",
    "/accountDetails/appLicensingVerdict",
];

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
        "[0-9]{0,25}".prop_map(Value::from),
        Just(json!("PLAY_RECOGNIZED")),
        Just(json!("MEETS_DEVICE_INTEGRITY")),
        Just(json!(TEST_PACKAGE)),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("requestDetails".to_string()),
                    Just("appIntegrity".to_string()),
                    Just("deviceIntegrity".to_string()),
                    Just("accountDetails".to_string()),
                    Just("requestPackageName".to_string()),
                    Just("timestampMillis".to_string()),
                    Just("nonce".to_string()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
