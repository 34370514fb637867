//! Tests of the token module: each attack test builds the forged token by
//! hand and checks it is refused with the expected error.
//!
//! The threat these guard against is a refactor that quietly reopens a hole
//! (a dropped `alg` pin, a `kid` fallback, a system-clock check), so the
//! helpers below can sign arbitrary headers and claims with ring keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacks;
mod claims;
mod keys;
mod props;
mod remembered;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{SigningKey, SigningKeys, TokenSettings};

pub(super) fn settings() -> TokenSettings {
    TokenSettings {
        issuer: "https://api.example.test".into(),
        audience: "mobile-backend".into(),
        ttl: TimeDelta::minutes(10),
    }
}

pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap()
}

/// A ring of `n` fresh keys.
pub(super) fn ring(n: usize) -> SigningKeys {
    let pem: String = (0..n)
        .map(|_| SigningKeys::generate_pem().unwrap())
        .collect();
    SigningKeys::parse(&pem).unwrap()
}

/// A valid token issued at `t0()` by the ring's current key, for a fresh
/// subject and session; the user authenticated three minutes earlier.
pub(super) fn issue(keys: &SigningKeys) -> String {
    let auth_time = t0() - TimeDelta::minutes(3);
    let (sub, sid) = (Uuid::now_v7(), Uuid::now_v7());
    let amr = ["pwd", "otp"];
    keys.issue(&settings(), t0(), sub, sid, "user", "aal2", &amr, auth_time)
        .unwrap()
        .0
}

/// Valid claims as JSON, for hand-built tokens.
pub(super) fn claims_json() -> Value {
    let now = t0().timestamp();
    json!({
        "iss": settings().issuer, "aud": settings().audience,
        "sub": Uuid::now_v7(), "sid": Uuid::now_v7(),
        "iat": now, "exp": now + 600, "jti": Uuid::now_v7(),
        "role": "user", "aal": "aal1", "amr": ["pwd"], "auth_time": now,
    })
}

/// The header our issuer writes, for `key`.
pub(super) fn header_json(key: &SigningKey) -> Value {
    json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": key.kid() })
}

pub(super) fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// `header.payload.signature` with an Ed25519 signature by `key` over
/// whatever header and claims the test wants.
pub(super) fn sign_raw(key: &SigningKey, header: &Value, claims: &Value) -> String {
    sign_with(&key.encoding, Algorithm::EdDSA, header, claims)
}

pub(super) fn sign_with(
    key: &EncodingKey,
    alg: Algorithm,
    header: &Value,
    claims: &Value,
) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{sig}")
}

/// RFC 7638 thumbprint computed independently of the module: a `BTreeMap`
/// serialises its members sorted and `to_string` is compact, which is the
/// canonical form RFC 7638 §3.3 asks for.
pub(super) fn independent_thumbprint(x: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let members = std::collections::BTreeMap::from([("kty", "OKP"), ("x", x), ("crv", "Ed25519")]);
    let canonical = serde_json::to_string(&members).unwrap();
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}
