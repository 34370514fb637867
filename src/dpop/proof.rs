//! The checks of one DPoP proof that need no storage: its shape, header,
//! key, signature and claims. Pure functions of the proof, the request and
//! "now", so every rule is unit-tested here; [`super::verify`] adds the
//! server nonce and the replay cache.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

/// Largest `DPoP` header value read (bytes); longer ones are refused
/// before any parsing. A P-256 proof is about 600 bytes.
pub const MAX_PROOF_BYTES: usize = 4096;

/// How far in the future a proof's `iat` may be (the phone's clock ahead
/// of ours), seconds.
pub const FUTURE_SKEW_SECS: i64 = 5;

/// Longest accepted `jti`, characters (RFC 9449 asks for at least 96 bits
/// of randomness; a UUID is 36).
pub const MAX_JTI_CHARS: usize = 128;

/// Members of a JWK that only a private key has: a proof carrying one is
/// refused (the app has leaked its device key into the request).
const PRIVATE_JWK_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a proof was refused: logged at debug level, never sent.
pub type Reason = &'static str;

/// What the request expects of a proof.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// `htm`: the request method, e.g. `GET`.
    pub method: &'a str,
    /// `htu`: the public URL of the request, without query or fragment.
    pub htu: &'a Url,
    /// The access token the proof must be bound to by `ath`, if any.
    pub access_token: Option<&'a str>,
    /// Unix seconds, from the service clock.
    pub now: i64,
    /// `DPOP_MAX_AGE_SECS`.
    pub max_age_secs: i64,
}

/// A proof whose signature and claims check out (not yet checked against
/// the replay cache or a server nonce).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    /// The `nonce` claim, when present.
    pub nonce: Option<String>,
}

fn b64(part: &str) -> Result<Vec<u8>, Reason> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| "not base64url")
}

fn object(bytes: &[u8], what: Reason) -> Result<Map<String, Value>, Reason> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(what),
    }
}

fn str_member<'m>(
    map: &'m Map<String, Value>,
    name: &str,
    what: Reason,
) -> Result<&'m str, Reason> {
    map.get(name).and_then(Value::as_str).ok_or(what)
}

/// The RFC 7638 SHA-256 thumbprint of a JWK given by its required members,
/// already in lexicographic order: base64url (no padding) of SHA-256 over
/// `{"name":"value",...}` with no whitespace.
fn thumbprint(required: &[(&str, &str)]) -> String {
    let mut canonical = String::from("{");
    for (i, (name, value)) in required.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        canonical.push_str(&Value::from(*name).to_string());
        canonical.push(':');
        canonical.push_str(&Value::from(*value).to_string());
    }
    canonical.push('}');
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The RFC 7638 SHA-256 thumbprint of a P-256 public key given by its
/// coordinates (members `crv`, `kty`, `x`, `y`).
pub fn thumbprint_p256(x: &[u8], y: &[u8]) -> String {
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    thumbprint(&[("crv", "P-256"), ("kty", "EC"), ("x", &x), ("y", &y)])
}

/// `ath`: base64url(SHA-256(access token)).
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// The public P-256 key of a proof's `jwk` header: its coordinates.
fn p256_key(jwk: &Map<String, Value>) -> Result<(Vec<u8>, Vec<u8>), Reason> {
    if PRIVATE_JWK_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err("jwk carries private key material");
    }
    if str_member(jwk, "kty", "jwk without kty")? != "EC" {
        return Err("jwk kty is not EC");
    }
    if str_member(jwk, "crv", "jwk without crv")? != "P-256" {
        return Err("jwk crv is not P-256");
    }
    let x = b64(str_member(jwk, "x", "jwk without x")?)?;
    let y = b64(str_member(jwk, "y", "jwk without y")?)?;
    if x.len() != 32 || y.len() != 32 {
        return Err("jwk coordinates are not 32 bytes");
    }
    Ok((x, y))
}

/// Checks a compact-serialized proof against what the request expects.
pub fn check(proof: &str, expected: &Expected<'_>) -> Result<Checked, Reason> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err("proof too large");
    }
    let mut parts = proof.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS");
    };

    let header = object(&b64(header_b64)?, "header is not a JSON object")?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err("typ is not dpop+jwt");
    }
    // Only ES256: never `none`, never an HMAC (whose "key" would be the
    // public jwk), never an algorithm the key does not fix.
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err("alg is not ES256");
    }
    if header.contains_key("crit") {
        return Err("crit header not understood");
    }
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err("no jwk header");
    };
    let (x, y) = p256_key(jwk)?;

    let signature = b64(signature_b64)?;
    if signature.len() != 64 {
        return Err("signature is not 64 bytes");
    }
    // ring's P-256 verification (assembly field arithmetic, already in the
    // tree through rustls): about a tenth of the instructions of the pure
    // Rust p256 crate, on the path of every bound request. It refuses a
    // point that is not on the curve like a bad signature.
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let signing_input = &proof[..header_b64.len() + 1 + claims_b64.len()];
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| "bad signature, or the jwk is not a P-256 point")?;

    let claims = object(&b64(claims_b64)?, "claims are not a JSON object")?;
    let jti = str_member(&claims, "jti", "no jti")?;
    if jti.is_empty() || jti.chars().count() > MAX_JTI_CHARS {
        return Err("jti empty or too long");
    }
    if str_member(&claims, "htm", "no htm")? != expected.method {
        return Err("htm does not match the method");
    }
    let mut htu =
        Url::parse(str_member(&claims, "htu", "no htu")?).map_err(|_| "htu is not a URL")?;
    htu.set_query(None);
    htu.set_fragment(None);
    if &htu != expected.htu {
        return Err("htu does not match the request URL");
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or("no integer iat")?;
    if iat > expected.now.saturating_add(FUTURE_SKEW_SECS) {
        return Err("iat in the future");
    }
    if expected.now.saturating_sub(iat) > expected.max_age_secs {
        return Err("iat too old");
    }
    if let Some(token) = expected.access_token {
        let ath = str_member(&claims, "ath", "no ath")?;
        let want = access_token_hash(token);
        if !crate::crypto::hash::constant_time_eq(ath.as_bytes(), want.as_bytes()) {
            return Err("ath does not match the access token");
        }
    }
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err("nonce is not a string"),
    };
    Ok(Checked {
        jkt: thumbprint_p256(&x, &y),
        jti: jti.to_owned(),
        iat,
        nonce,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use jsonwebtoken::{crypto, Algorithm, EncodingKey};
    use serde_json::json;

    /// A P-256 device key for tests: signs proofs with any header and claims.
    pub(crate) struct TestKey {
        der: Vec<u8>,
        pub x: Vec<u8>,
        pub y: Vec<u8>,
    }

    impl TestKey {
        pub(crate) fn generate() -> Self {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let point = pair.public_key_raw().to_vec();
            assert_eq!(point.len(), 65);
            Self {
                der: pair.serialize_der(),
                x: point[1..33].to_vec(),
                y: point[33..].to_vec(),
            }
        }

        pub(crate) fn jwk(&self) -> Value {
            json!({"kty": "EC", "crv": "P-256",
                   "x": URL_SAFE_NO_PAD.encode(&self.x), "y": URL_SAFE_NO_PAD.encode(&self.y)})
        }

        pub(crate) fn jkt(&self) -> String {
            thumbprint_p256(&self.x, &self.y)
        }

        /// Signs `header` and `claims` as given (ES256).
        pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = crypto::sign(
                input.as_bytes(),
                &EncodingKey::from_ec_der(&self.der),
                Algorithm::ES256,
            )
            .unwrap();
            format!("{input}.{sig}")
        }

        pub(crate) fn header(&self) -> Value {
            json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()})
        }
    }

    const NOW: i64 = 1_800_000_000;
    const HTU: &str = "https://api.example.com/v1/auth/refresh";

    fn url() -> Url {
        Url::parse(HTU).unwrap()
    }

    fn run(proof: &str, access_token: Option<&str>) -> Result<Checked, Reason> {
        let htu = url();
        check(
            proof,
            &Expected {
                method: "POST",
                htu: &htu,
                access_token,
                now: NOW,
                max_age_secs: 60,
            },
        )
    }

    fn claims() -> Value {
        json!({"jti": "a-unique-id", "htm": "POST", "htu": HTU, "iat": NOW})
    }

    #[test]
    fn a_good_proof_passes_with_its_thumbprint() {
        let key = TestKey::generate();
        let ok = run(&key.sign(&key.header(), &claims()), None).unwrap();
        assert_eq!(ok.jkt, key.jkt());
        assert_eq!(ok.jti, "a-unique-id");
        assert_eq!(ok.iat, NOW);
        assert_eq!(ok.nonce, None);
    }

    #[test]
    fn thumbprint_matches_rfc_7638_section_3_1() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            thumbprint(&[("e", "AQAB"), ("kty", "RSA"), ("n", n)]),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        // The P-256 form: the same rule over crv, kty, x, y.
        let x = URL_SAFE_NO_PAD
            .decode("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU")
            .unwrap();
        let y = URL_SAFE_NO_PAD
            .decode("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0")
            .unwrap();
        let canonical = r#"{"crv":"P-256","kty":"EC","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        assert_eq!(
            thumbprint_p256(&x, &y),
            URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
        );
    }

    #[test]
    fn ath_matches_rfc_9449_section_4_2() {
        assert_eq!(
            access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    #[test]
    fn every_missing_or_forged_claim_is_refused() {
        let key = TestKey::generate();
        for member in ["jti", "htm", "htu", "iat"] {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(member);
            assert!(
                run(&key.sign(&key.header(), &c), None).is_err(),
                "{member} missing"
            );
        }
        for (member, value) in [
            ("jti", json!("")),
            ("jti", json!("x".repeat(MAX_JTI_CHARS + 1))),
            ("jti", json!(7)),
            ("htm", json!("GET")),
            ("htm", json!("post")),
            ("htu", json!("https://api.example.com/v1/auth/login")),
            ("htu", json!("https://evil.example.com/v1/auth/refresh")),
            ("htu", json!("http://api.example.com/v1/auth/refresh")),
            ("htu", json!("not a url")),
            ("iat", json!(NOW - 61)),
            ("iat", json!(NOW + FUTURE_SKEW_SECS + 1)),
            ("iat", json!("1800000000")),
            ("iat", json!(1.5)),
            ("nonce", json!(5)),
        ] {
            let mut c = claims();
            c[member] = value.clone();
            assert!(
                run(&key.sign(&key.header(), &c), None).is_err(),
                "{member} = {value}"
            );
        }
        let mut c = claims();
        c["jti"] = json!("x".repeat(MAX_JTI_CHARS));
        assert!(run(&key.sign(&key.header(), &c), None).is_ok());
    }

    #[test]
    fn iat_within_the_window_and_skew_passes() {
        let key = TestKey::generate();
        for iat in [NOW - 60, NOW + FUTURE_SKEW_SECS] {
            let mut c = claims();
            c["iat"] = json!(iat);
            assert!(run(&key.sign(&key.header(), &c), None).is_ok(), "{iat}");
        }
    }

    #[test]
    fn query_and_fragment_of_htu_are_ignored() {
        let key = TestKey::generate();
        let mut c = claims();
        c["htu"] = json!(format!("{HTU}?a=1#frag"));
        assert!(run(&key.sign(&key.header(), &c), None).is_ok());
    }

    #[test]
    fn header_rules() {
        let key = TestKey::generate();
        let mut cases = Vec::new();
        for (member, value) in [
            ("typ", json!("JWT")),
            ("typ", Value::Null),
            ("alg", json!("none")),
            ("alg", json!("HS256")),
            ("alg", json!("ES384")),
            ("alg", json!("RS256")),
            ("crit", json!(["exp"])),
        ] {
            let mut h = key.header();
            h[member] = value;
            cases.push((member.to_string(), h));
        }
        let mut h = key.header();
        h.as_object_mut().unwrap().remove("jwk");
        cases.push(("no jwk".into(), h));
        let mut h = key.header();
        h["jwk"]["d"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]));
        cases.push(("private d".into(), h));
        let mut h = key.header();
        h["jwk"]["crv"] = json!("P-384");
        cases.push(("P-384".into(), h));
        let mut h = key.header();
        h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"});
        cases.push(("oct".into(), h));
        let mut h = key.header();
        h["jwk"]["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]));
        cases.push(("not the signing key / off-curve".into(), h));
        for (what, h) in cases {
            assert!(run(&key.sign(&h, &claims()), None).is_err(), "{what}");
        }
    }

    #[test]
    fn unsigned_and_hmac_proofs_are_refused() {
        let key = TestKey::generate();
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let mut h = key.header();
        h["alg"] = json!("none");
        let none = format!("{}.{}.", enc(&h), enc(&claims()));
        assert!(run(&none, None).is_err());
        // HS256 "keyed" with the public jwk's bytes: the classic confusion.
        h["alg"] = json!("HS256");
        let input = format!("{}.{}", enc(&h), enc(&claims()));
        let sig = crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(key.jwk().to_string().as_bytes()).unwrap(),
            Algorithm::HS256,
        )
        .unwrap();
        assert!(run(&format!("{input}.{sig}"), None).is_err());
    }

    #[test]
    fn a_forged_signature_or_payload_is_refused() {
        let key = TestKey::generate();
        let good = key.sign(&key.header(), &claims());
        let (input, _) = good.rsplit_once('.').unwrap();
        let other = TestKey::generate().sign(&key.header(), &claims());
        let (_, other_sig) = other.rsplit_once('.').unwrap();
        assert!(run(&format!("{input}.{other_sig}"), None).is_err());
        let mut c = claims();
        c["jti"] = json!("another");
        let (h, _) = input.split_once('.').unwrap();
        let (_, sig) = good.rsplit_once('.').unwrap();
        let swapped = format!("{h}.{}.{sig}", URL_SAFE_NO_PAD.encode(c.to_string()));
        assert!(run(&swapped, None).is_err());
        assert!(run(&format!("{good}.x"), None).is_err());
        assert!(run("a.b", None).is_err());
        assert!(run("", None).is_err());
    }

    #[test]
    fn oversized_proofs_are_refused_unread() {
        let key = TestKey::generate();
        let mut c = claims();
        c["pad"] = json!("x".repeat(MAX_PROOF_BYTES));
        assert_eq!(
            run(&key.sign(&key.header(), &c), None),
            Err("proof too large")
        );
    }

    #[test]
    fn ath_binds_the_proof_to_the_access_token() {
        let key = TestKey::generate();
        let mut c = claims();
        assert!(
            run(&key.sign(&key.header(), &c), Some("token")).is_err(),
            "missing"
        );
        c["ath"] = json!(access_token_hash("another token"));
        assert!(
            run(&key.sign(&key.header(), &c), Some("token")).is_err(),
            "wrong"
        );
        c["ath"] = json!(access_token_hash("token"));
        assert!(run(&key.sign(&key.header(), &c), Some("token")).is_ok());
    }
}
