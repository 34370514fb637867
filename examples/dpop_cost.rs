//! What a DPoP proof costs the server: signs `N` proofs (default 200) for
//! `GET /v1/me` with a fresh P-256 key, then checks each once with the
//! server's own verifier (`dpop::proof::check`: the header, the key, the
//! ES256 signature and every claim; the replay-cache write is a database
//! or Redis round trip and not counted here).
//!
//! Counted with callgrind (instructions in `verify_all` only):
//!
//! ```text
//! cargo build --example dpop_cost
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*verify_all*' \
//!     target/debug/examples/dpop_cost 200
//! ```
//!
//! Dependencies (ring, sha2, serde_json, base64) are built at opt-level 2
//! even in the dev profile, so the count is close to a release build's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use mobile_backend::dpop::proof::{access_token_hash, check, Expected};
use serde_json::json;

const HTU: &str = "https://api.example.com/v1/me";
const TOKEN: &str = "an-access-token";
const NOW: i64 = 1_800_000_000;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(200);
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw().to_vec();
    let key = jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der());
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}});
    let proofs: Vec<String> = (0..n)
        .map(|i| {
            let claims = json!({"jti": format!("proof-{i}"), "htm": "GET", "htu": HTU,
                "iat": NOW, "ath": access_token_hash(TOKEN)});
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig =
                jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::ES256)
                    .unwrap();
            format!("{input}.{sig}")
        })
        .collect();
    let ok = verify_all(&proofs);
    assert_eq!(ok, n);
    println!("{ok} proofs verified");
}

#[inline(never)]
fn verify_all(proofs: &[String]) -> usize {
    let htu = url::Url::parse(HTU).unwrap();
    let expected = Expected {
        method: "GET",
        htu: &htu,
        access_token: Some(TOKEN),
        now: NOW,
        max_age_secs: 60,
    };
    // A plain loop: a closure here would be named `verify_all::{{closure}}`
    // and toggle callgrind's collection off again.
    let mut ok = 0;
    for p in proofs {
        if check(p, &expected).is_ok() {
            ok += 1;
        }
    }
    ok
}
