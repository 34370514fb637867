//! Attacks on the header and the signature: each forged token must be
//! refused, before any key is used where the header is at fault.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use super::*;
use crate::tokens::{TokenError, MAX_TOKEN_LEN};

#[test]
fn alg_none_is_refused() {
    let keys = ring(1);
    let header = json!({ "alg": "none", "typ": "at+jwt", "kid": keys.current().kid() });
    let token = format!("{}.{}.", b64(&header), b64(&claims_json()));
    assert_eq!(
        keys.verify(&settings(), t0(), &token),
        Err(TokenError::UnsupportedAlgorithm)
    );
    // A missing `alg` is no better.
    let header = json!({ "typ": "at+jwt", "kid": keys.current().kid() });
    let token = format!("{}.{}.", b64(&header), b64(&claims_json()));
    assert_eq!(
        keys.verify(&settings(), t0(), &token),
        Err(TokenError::UnsupportedAlgorithm)
    );
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let keys = ring(1);
    let key = keys.current();
    let header = json!({ "alg": "HS256", "typ": "at+jwt", "kid": key.kid() });
    // The classic confusion: the public key (raw, and as its JWK `x`) used
    // as an HMAC secret, hoping the verifier feeds it to HMAC.
    let x = URL_SAFE_NO_PAD.encode(key.public_key());
    for secret in [key.public_key().as_slice(), x.as_bytes()] {
        let hmac = EncodingKey::from_secret(secret).unwrap();
        let token = sign_with(&hmac, Algorithm::HS256, &header, &claims_json());
        assert_eq!(
            keys.verify(&settings(), t0(), &token),
            Err(TokenError::UnsupportedAlgorithm)
        );
    }
}

#[test]
fn a_tampered_payload_fails_the_signature() {
    let keys = ring(1);
    let token = issue(&keys);
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!(Uuid::now_v7());
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_eq!(
        keys.verify(&settings(), t0(), &forged),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn unknown_missing_or_malformed_kid_is_refused() {
    let keys = ring(1);
    let stranger = ring(1);
    let token = issue(&stranger);
    assert_eq!(
        keys.verify(&settings(), t0(), &token),
        Err(TokenError::UnknownKey)
    );

    let k = keys.current();
    for header in [
        json!({ "alg": "EdDSA", "typ": "at+jwt" }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": 7 }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": null }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "../../etc/passwd" }),
    ] {
        let token = sign_raw(k, &header, &claims_json());
        assert_eq!(
            keys.verify(&settings(), t0(), &token),
            Err(TokenError::UnknownKey)
        );
    }
}

#[test]
fn a_stranger_claiming_our_kid_fails_the_signature() {
    let keys = ring(1);
    let stranger = ring(1);
    let token = sign_raw(
        stranger.current(),
        &header_json(keys.current()),
        &claims_json(),
    );
    assert_eq!(
        keys.verify(&settings(), t0(), &token),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn typ_must_be_at_jwt() {
    let keys = ring(1);
    let k = keys.current();
    let with_typ = |typ: Value| {
        let header = json!({ "alg": "EdDSA", "typ": typ, "kid": k.kid() });
        keys.verify(&settings(), t0(), &sign_raw(k, &header, &claims_json()))
    };
    for bad in [
        json!("JWT"),
        json!("jwt"),
        json!("at+jwt "),
        json!(null),
        json!(1),
    ] {
        assert_eq!(with_typ(bad), Err(TokenError::WrongType));
    }
    let header = json!({ "alg": "EdDSA", "kid": k.kid() });
    let token = sign_raw(k, &header, &claims_json());
    assert_eq!(
        keys.verify(&settings(), t0(), &token),
        Err(TokenError::WrongType)
    );
    for good in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        assert!(with_typ(json!(good)).is_ok(), "{good}");
    }
}

#[test]
fn rotation_keeps_the_previous_key_and_drops_a_removed_one() {
    let old = ring(1);
    let old_token = issue(&old);
    let new = SigningKeys::generate_pem().unwrap();

    // During the rotation: new key first, old key kept.
    let rotating = SigningKeys::parse(&format!("{new}{}", old.to_pem())).unwrap();
    assert_ne!(rotating.current().kid(), old.current().kid());
    assert!(rotating.verify(&settings(), t0(), &old_token).is_ok());
    let new_token = issue(&rotating);
    let header = jsonwebtoken::decode_header(&new_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(rotating.current().kid()));

    // After it: the old key is gone, and so is every token it signed.
    let rotated = SigningKeys::parse(&new).unwrap();
    assert_eq!(
        rotated.verify(&settings(), t0(), &old_token),
        Err(TokenError::UnknownKey)
    );
    assert!(rotated.verify(&settings(), t0(), &new_token).is_ok());
}

#[test]
fn key_carrying_headers_are_ignored() {
    let keys = ring(1);
    let k = keys.current();
    let stranger = ring(1);
    let s = stranger.current();
    let evil_jwk =
        json!({ "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(s.public_key()) });
    let header = json!({
        "alg": "EdDSA", "typ": "at+jwt", "kid": k.kid(),
        "jku": "https://evil.example/jwks.json", "x5u": "https://evil.example/cert.pem",
        "jwk": evil_jwk, "x5c": ["MIIB"],
    });
    // Signed by our key: the extra headers change nothing.
    let token = sign_raw(k, &header, &claims_json());
    assert!(keys.verify(&settings(), t0(), &token).is_ok());
    // Signed by the key the headers point at: still refused.
    let token = sign_raw(s, &header, &claims_json());
    assert_eq!(
        keys.verify(&settings(), t0(), &token),
        Err(TokenError::BadSignature)
    );
    let mut header = header;
    header["kid"] = json!(s.kid());
    let token = sign_raw(s, &header, &claims_json());
    assert_eq!(
        keys.verify(&settings(), t0(), &token),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn oversized_and_misshapen_tokens_are_malformed() {
    let keys = ring(1);
    let mut claims = claims_json();
    claims["pad"] = json!("a".repeat(9 * 1024));
    let big = sign_raw(keys.current(), &header_json(keys.current()), &claims);
    assert!(big.len() > MAX_TOKEN_LEN);
    assert_eq!(
        keys.verify(&settings(), t0(), &big),
        Err(TokenError::Malformed)
    );

    let token = issue(&keys);
    let jwe_like = format!("{token}.x.y");
    let dup_alg = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","alg":"none"}"#),
        b64(&claims_json())
    );
    for bad in [
        "", ".", "..", "a.b", "a.b.c", "%%%.e30.", &jwe_like, &dup_alg,
    ] {
        assert_eq!(
            keys.verify(&settings(), t0(), bad),
            Err(TokenError::Malformed),
            "{bad}"
        );
    }
    let mut header = header_json(keys.current());
    header["crit"] = json!(["exp"]);
    let token = sign_raw(keys.current(), &header, &claims_json());
    assert_eq!(
        keys.verify(&settings(), t0(), &token),
        Err(TokenError::Malformed)
    );
}
