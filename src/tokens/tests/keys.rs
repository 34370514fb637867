//! The key ring: parsing `SIGNING_KEYS`, derived kids, JWKS, persistence,
//! and errors that never leak key material.

use std::io::Write as _;

use super::*;
use crate::tokens::TokenError;

/// RFC 8037 Appendix A.1: the example Ed25519 key, and A.3: its thumbprint.
const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

/// A throwaway P-256 key from `openssl genpkey -algorithm EC`.
const P256_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgN2TSUMUUY4T0RFsp
YuNX7Rh6Y2PwCrPeHiTzBvkfY3KhRANCAATr2ZtcIV6I/my/8nbPy4FzherRfOzm
mVWP8a2D4HYtO1bYQJ67Ybp91xXJiCZAHr0r+ihJj79iOiw/4MREbxH5
-----END PRIVATE KEY-----
";

/// PKCS#8 v1 PEM of a raw Ed25519 seed, built by hand the way OpenSSL writes
/// it (RFC 8410 §7), so parsing is not only tested against our own encoder.
fn pem_from_seed(seed: &[u8]) -> String {
    use base64::engine::general_purpose::STANDARD;
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(der)
    )
}

fn kids(keys: &SigningKeys) -> Vec<String> {
    keys.iter().map(|k| k.kid().to_owned()).collect()
}

fn invalid_key_message(spec: &str) -> String {
    match SigningKeys::parse(spec) {
        Err(TokenError::InvalidKey(msg)) => msg,
        other => panic!("expected InvalidKey, got {other:?}"),
    }
}

#[test]
fn kid_is_the_rfc8037_thumbprint() {
    let seed = URL_SAFE_NO_PAD.decode(RFC8037_D).unwrap();
    let keys = SigningKeys::parse(&pem_from_seed(&seed)).unwrap();
    let key = keys.current();
    assert_eq!(URL_SAFE_NO_PAD.encode(key.public_key()), RFC8037_X);
    assert_eq!(key.kid(), RFC8037_THUMBPRINT);
    assert_eq!(independent_thumbprint(RFC8037_X), RFC8037_THUMBPRINT);
}

#[test]
fn jwks_lists_every_key_with_thumbprint_kids_during_rotation() {
    let keys = ring(2);
    let jwks = keys.jwks();
    let listed = jwks["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for (jwk, key) in listed.iter().zip(keys.iter()) {
        let x = jwk["x"].as_str().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(x).unwrap(), key.public_key());
        assert_eq!(jwk["kid"], json!(independent_thumbprint(x)));
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        // Public parts only.
        assert_eq!(jwk.as_object().unwrap().len(), 6);
        assert!(jwk.get("d").is_none());
    }
    assert_eq!(listed[0]["kid"], json!(keys.current().kid()));
}

#[test]
fn parses_inline_multi_pem_in_order() {
    let a = SigningKeys::generate_pem().unwrap();
    let b = pem_from_seed(&[7u8; 32]);
    let one = |pem: &str| SigningKeys::parse(pem).unwrap().current().kid().to_owned();
    let (ka, kb) = (one(&a), one(&b));
    let both = SigningKeys::parse(&format!("# rotated 2030-01-01\n{a}\n\n{b}")).unwrap();
    assert_eq!(kids(&both), [ka.clone(), kb.clone()]);
    let crlf = SigningKeys::parse(&format!("{b}{a}").replace('\n', "\r\n")).unwrap();
    assert_eq!(kids(&crlf), [kb, ka]);
}

#[test]
fn parses_a_list_of_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        SigningKeys::generate_pem().unwrap(),
        SigningKeys::generate_pem().unwrap(),
        SigningKeys::generate_pem().unwrap(),
    );
    let first = dir.path().join("current.pem");
    std::fs::File::create(&first)
        .unwrap()
        .write_all(a.as_bytes())
        .unwrap();
    let second = dir.path().join("previous.pem");
    std::fs::write(&second, format!("{b}{c}")).unwrap();
    let spec = format!("{}, {}", first.display(), second.display());
    let keys = SigningKeys::parse(&spec).unwrap();
    let expected = kids(&SigningKeys::parse(&format!("{a}{b}{c}")).unwrap());
    assert_eq!(kids(&keys), expected);
}

#[test]
fn to_pem_round_trips_the_ring() {
    let keys = ring(3);
    let again = SigningKeys::parse(&keys.to_pem()).unwrap();
    assert_eq!(kids(&again), kids(&keys));
    let token = issue(&keys);
    assert!(again.verify(&settings(), t0(), &token).is_ok());
}

#[test]
fn generated_keys_differ() {
    let a = SigningKeys::generate_pem().unwrap();
    let b = SigningKeys::generate_pem().unwrap();
    assert_ne!(a, b);
    assert!(a.starts_with("-----BEGIN PRIVATE KEY-----\n"));
}

#[test]
fn garbage_is_refused_without_echoing_it() {
    for spec in [
        "",
        "  ,  ",
        "not-a-key-SECRETVALUE",
        "/nonexistent/SECRETVALUE.pem",
        "MC4CAQAwBQYDK2VwBCIEISECRETVALUE",
        "-----BEGIN PRIVATE KEY-----\nSECRETVALUE\n-----END PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEISECRETVALUE",
        "-----BEGIN PRIVATE KEY SECRETVALUE",
        "-----BEGIN SECRETVALUE-----\nAAAA\n-----END SECRETVALUE-----",
    ] {
        let msg = invalid_key_message(spec);
        assert!(!msg.contains("SECRETVALUE"), "{msg}");
        assert!(!msg.contains("nonexistent"), "{msg}");
    }
}

#[test]
fn non_ed25519_keys_are_refused_clearly() {
    let msg = invalid_key_message(P256_PKCS8);
    assert!(msg.contains("EC") && msg.contains("Ed25519"), "{msg}");
    assert!(!msg.contains("MIGHAgEA"), "{msg}");
    let rsa = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n";
    let msg = invalid_key_message(rsa);
    assert!(msg.contains("RSA") && msg.contains("Ed25519"), "{msg}");
    let ed = SigningKeys::generate_pem().unwrap();
    let msg = invalid_key_message(&format!("{ed}{P256_PKCS8}"));
    assert!(msg.contains("block 2"), "{msg}");
}

#[test]
fn a_key_listed_twice_is_refused() {
    let a = SigningKeys::generate_pem().unwrap();
    let msg = invalid_key_message(&format!("{a}{a}"));
    assert!(msg.contains("more than once"), "{msg}");
}

#[test]
fn debug_never_shows_private_keys() {
    let keys = ring(2);
    let pem = keys.to_pem();
    let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for shown in [format!("{keys:?}"), format!("{:?}", keys.current())] {
        assert!(shown.contains(keys.current().kid()), "{shown}");
        for line in &body {
            assert!(!shown.contains(line), "{shown}");
        }
    }
}
