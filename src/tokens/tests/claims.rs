//! Claims and time: the round trip, and tokens whose signature is good but
//! whose claims must not be accepted (expired, wrong issuer or audience,
//! missing claims, issued in the future).

use chrono::TimeDelta;
use jsonwebtoken::Algorithm;
use serde_json::json;

use super::*;
use crate::tokens::{TokenError, EXP_LEEWAY_SECS};

#[test]
fn round_trip_carries_every_claim() {
    let keys = ring(1);
    let (sub, sid) = (Uuid::now_v7(), Uuid::now_v7());
    let auth_time = t0() - TimeDelta::minutes(3);
    let issue = || {
        let amr = ["pwd", "otp"];
        keys.issue(&settings(), t0(), sub, sid, "user", "aal2", &amr, auth_time)
    };
    let (token, issued) = issue().unwrap();
    let claims = keys.verify(&settings(), t0(), &token).unwrap();
    assert_eq!(claims, issued);
    assert_eq!(claims.iss, settings().issuer);
    assert_eq!(claims.aud, settings().audience);
    assert_eq!((claims.sub, claims.sid), (sub, sid));
    assert_eq!(claims.iat, t0().timestamp());
    assert_eq!(claims.exp, t0().timestamp() + 600);
    assert_eq!(
        (claims.role.as_str(), claims.aal.as_str()),
        ("user", "aal2")
    );
    assert_eq!(claims.amr, ["pwd", "otp"]);
    assert_eq!(claims.auth_time, auth_time.timestamp());
    assert_eq!(claims.jti.get_version_num(), 7);

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref(), Some(keys.current().kid()));

    let (_, again) = issue().unwrap();
    assert_ne!(
        again.jti, issued.jti,
        "jti is unique even at the same instant"
    );
}

#[test]
fn expiry_uses_the_callers_clock_with_leeway() {
    let keys = ring(1);
    let token = issue(&keys);
    let exp = t0() + settings().ttl;
    let at = |secs| exp + TimeDelta::seconds(secs);
    assert!(keys.verify(&settings(), at(0), &token).is_ok());
    assert!(keys
        .verify(&settings(), at(EXP_LEEWAY_SECS), &token)
        .is_ok());
    assert_eq!(
        keys.verify(&settings(), at(EXP_LEEWAY_SECS + 1), &token),
        Err(TokenError::Expired)
    );
    // Years past the system clock's idea of "now" (t0 is in 2030) still
    // verifies: jsonwebtoken never consults the system clock.
    assert!(keys.verify(&settings(), t0(), &token).is_ok());
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let keys = ring(1);
    let token = issue(&keys);
    let mut other = settings();
    other.issuer = "https://evil.example".into();
    assert_eq!(
        keys.verify(&other, t0(), &token),
        Err(TokenError::InvalidClaims)
    );
    let mut other = settings();
    other.audience = "another-api".into();
    assert_eq!(
        keys.verify(&other, t0(), &token),
        Err(TokenError::InvalidClaims)
    );
    // An audience array that merely contains ours is not our token either.
    let mut claims = claims_json();
    claims["aud"] = json!([settings().audience, "another-api"]);
    let token = sign_raw(keys.current(), &header_json(keys.current()), &claims);
    assert_eq!(
        keys.verify(&settings(), t0(), &token),
        Err(TokenError::InvalidClaims)
    );
}

#[test]
fn missing_or_mistyped_claims_are_refused() {
    let keys = ring(1);
    let k = keys.current();
    for claim in [
        "iss",
        "aud",
        "sub",
        "sid",
        "exp",
        "iat",
        "jti",
        "role",
        "aal",
        "amr",
        "auth_time",
    ] {
        let mut claims = claims_json();
        claims.as_object_mut().unwrap().remove(claim);
        let token = sign_raw(k, &header_json(k), &claims);
        assert_eq!(
            keys.verify(&settings(), t0(), &token),
            Err(TokenError::InvalidClaims),
            "{claim}"
        );
    }
    for (claim, value) in [
        ("sub", json!("admin")),
        ("exp", json!("never")),
        ("exp", json!(1.5e300)),
    ] {
        let mut claims = claims_json();
        claims[claim] = value;
        let token = sign_raw(k, &header_json(k), &claims);
        assert_eq!(
            keys.verify(&settings(), t0(), &token),
            Err(TokenError::InvalidClaims),
            "{claim}"
        );
    }
}

#[test]
fn iat_far_in_the_future_or_nbf_ahead_is_refused() {
    let keys = ring(1);
    let k = keys.current();
    let now = t0().timestamp();
    let with = |claim: &str, value: i64| {
        let mut claims = claims_json();
        claims[claim] = json!(value);
        claims["exp"] = json!(now + 3600);
        keys.verify(&settings(), t0(), &sign_raw(k, &header_json(k), &claims))
    };
    assert!(with("iat", now + 60).is_ok());
    assert_eq!(with("iat", now + 61), Err(TokenError::InvalidClaims));
    assert!(with("nbf", now + EXP_LEEWAY_SECS).is_ok());
    assert_eq!(with("nbf", now + 120), Err(TokenError::InvalidClaims));
}
