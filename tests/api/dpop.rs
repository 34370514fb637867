//! Device-bound sessions (RFC 9449 DPoP): the proof verifier against a
//! running application's state (replay across processes, with and without
//! Redis; the header rules; server nonces), and the binding of sessions.

use crate::helpers::*;
use axum::http::{HeaderMap, HeaderValue, Method};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{crypto, Algorithm, EncodingKey};
use mobile_backend::dpop::{self, VerifiedProof};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The public base URL the tests' apps run under (a proof names it in `htu`).
pub const BASE: &str = "https://api.example.test";

/// A device key (P-256) that signs proofs, as an app's would.
pub struct DeviceKey {
    der: Vec<u8>,
    x: Vec<u8>,
    y: Vec<u8>,
}

impl DeviceKey {
    pub fn generate() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw().to_vec();
        Self {
            der: pair.serialize_der(),
            x: point[1..33].to_vec(),
            y: point[33..].to_vec(),
        }
    }

    pub fn jwk(&self) -> Value {
        json!({"kty": "EC", "crv": "P-256",
               "x": URL_SAFE_NO_PAD.encode(&self.x), "y": URL_SAFE_NO_PAD.encode(&self.y)})
    }

    /// RFC 7638 thumbprint, computed independently of the server's code.
    pub fn jkt(&self) -> String {
        let jwk = self.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> String {
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

    /// The claims of a proof for `method` on `path` at the app's time.
    pub fn claims(&self, app: &TestApp, method: &str, path: &str) -> Value {
        json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "htm": method,
            "htu": format!("{BASE}{path}"),
            "iat": app.clock.now().timestamp(),
        })
    }

    /// A fresh proof for `method` `path`, bound to `access_token` if given.
    pub fn proof(
        &self,
        app: &TestApp,
        method: &str,
        path: &str,
        access_token: Option<&str>,
    ) -> String {
        let mut claims = self.claims(app, method, path);
        if let Some(token) = access_token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())));
        }
        self.sign(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()}),
            &claims,
        )
    }
}

pub fn builder() -> TestAppBuilder {
    TestApp::builder().env("PUBLIC_BASE_URL", BASE)
}

fn headers_with(proofs: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for p in proofs {
        h.append("dpop", HeaderValue::from_str(p).unwrap());
    }
    h
}

async fn verify(
    app: &TestApp,
    proofs: &[&str],
    path: &str,
    token: Option<&str>,
) -> Result<Option<VerifiedProof>, mobile_backend::error::ApiError> {
    dpop::verify(
        &app.state,
        &headers_with(proofs),
        &Method::POST,
        path,
        token,
    )
    .await
}

const PATH: &str = "/v1/auth/refresh";

#[tokio::test]
async fn a_proof_verifies_once_and_names_its_key() {
    let app = builder().spawn().await;
    let key = DeviceKey::generate();
    assert!(
        verify(&app, &[], PATH, None).await.unwrap().is_none(),
        "no header, no proof"
    );
    let proof = key.proof(&app, "POST", PATH, None);
    let ok = verify(&app, &[&proof], PATH, None).await.unwrap().unwrap();
    assert_eq!(ok.jkt, key.jkt());
    assert_eq!(ok.iat, app.clock.now().timestamp());
    let again = verify(&app, &[&proof], PATH, None).await.unwrap_err();
    assert_eq!(again.code(), "dpop_proof_invalid", "a replay is refused");
    // The same answer for every refusal: nothing says which check failed.
    let wrong_path = key.proof(&app, "POST", "/v1/auth/login", None);
    let e = verify(&app, &[&wrong_path], PATH, None).await.unwrap_err();
    assert_eq!((e.code(), e.to_string()), (again.code(), again.to_string()));
}

#[tokio::test]
async fn the_header_must_be_single_small_and_bound_to_the_token() {
    let app = builder().spawn().await;
    let key = DeviceKey::generate();
    let (a, b) = (
        key.proof(&app, "POST", PATH, None),
        key.proof(&app, "POST", PATH, None),
    );
    assert_eq!(
        verify(&app, &[&a, &b], PATH, None)
            .await
            .unwrap_err()
            .code(),
        "dpop_proof_invalid"
    );
    let mut claims = key.claims(&app, "POST", PATH);
    claims["pad"] = json!("x".repeat(4096));
    let big = key.sign(
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk()}),
        &claims,
    );
    assert_eq!(
        verify(&app, &[&big], PATH, None).await.unwrap_err().code(),
        "dpop_proof_invalid"
    );
    // `ath`: required when an access token is presented, and must match it.
    let unbound = key.proof(&app, "POST", PATH, None);
    assert!(verify(&app, &[&unbound], PATH, Some("the-token"))
        .await
        .is_err());
    let other = key.proof(&app, "POST", PATH, Some("another-token"));
    assert!(verify(&app, &[&other], PATH, Some("the-token"))
        .await
        .is_err());
    let bound = key.proof(&app, "POST", PATH, Some("the-token"));
    assert!(verify(&app, &[&bound], PATH, Some("the-token"))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn iat_follows_the_service_clock_and_dpop_max_age_secs() {
    let app = builder().env("DPOP_MAX_AGE_SECS", "30").spawn().await;
    let key = DeviceKey::generate();
    let proof = key.proof(&app, "POST", PATH, None);
    app.clock.advance(chrono::Duration::seconds(31));
    assert!(
        verify(&app, &[&proof], PATH, None).await.is_err(),
        "too old"
    );
    let fresh = key.proof(&app, "POST", PATH, None);
    app.clock.advance(chrono::Duration::seconds(30));
    assert!(
        verify(&app, &[&fresh], PATH, None).await.unwrap().is_some(),
        "just in time"
    );
}

#[tokio::test]
async fn a_proof_is_single_use_across_processes_sharing_postgres() {
    let a = builder().spawn().await;
    let b = builder().same_database_as(&a).spawn().await;
    let key = DeviceKey::generate();
    let proof = key.proof(&a, "POST", PATH, None);
    assert!(verify(&a, &[&proof], PATH, None).await.unwrap().is_some());
    assert!(
        verify(&b, &[&proof], PATH, None).await.is_err(),
        "replayed on another process"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM dpop_proofs_seen")
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    // Entries go once the window has passed (the session sweeper's pass).
    a.clock.advance(chrono::Duration::seconds(120));
    let purged = dpop::replay::purge_expired(&a.db, a.clock.now())
        .await
        .unwrap();
    assert_eq!(purged, 1);
}

#[tokio::test]
async fn a_proof_is_single_use_across_processes_sharing_redis() {
    let prefix = format!("dpop-test-{}", uuid::Uuid::new_v4().simple());
    let spawn = || {
        builder()
            .env("REDIS_URL", "redis://127.0.0.1:6379")
            .env("REDIS_KEY_PREFIX", &prefix)
    };
    let a = spawn().spawn().await;
    let b = spawn().spawn().await;
    let key = DeviceKey::generate();
    let proof = key.proof(&a, "POST", PATH, None);
    assert!(verify(&a, &[&proof], PATH, None).await.unwrap().is_some());
    assert!(
        verify(&b, &[&proof], PATH, None).await.is_err(),
        "replayed on another process"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM dpop_proofs_seen")
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "Redis holds the cache, not PostgreSQL");
}

#[tokio::test]
async fn with_dpop_nonce_a_proof_needs_a_recent_server_nonce() {
    let app = builder().env("DPOP_NONCE", "true").spawn().await;
    let key = DeviceKey::generate();
    let r = app.get("/healthz").await;
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let without = key.proof(&app, "POST", PATH, None);
    let e = verify(&app, &[&without], PATH, None).await.unwrap_err();
    assert_eq!(e.code(), "use_dpop_nonce");
    let mut claims = key.claims(&app, "POST", PATH);
    claims["nonce"] = json!(nonce);
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk()});
    assert!(verify(&app, &[&key.sign(&header, &claims)], PATH, None)
        .await
        .unwrap()
        .is_some());
    // Forged and stale nonces are refused the same way.
    let mut forged = key.claims(&app, "POST", PATH);
    forged["nonce"] = json!(format!(
        "{}.AAAAAAAAAAAAAAAAAAAAAA",
        nonce.split('.').next().unwrap()
    ));
    let e = verify(&app, &[&key.sign(&header, &forged)], PATH, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "use_dpop_nonce");
    app.clock.advance(chrono::Duration::seconds(2 * 300));
    let mut stale = key.claims(&app, "POST", PATH);
    stale["nonce"] = json!(nonce);
    let e = verify(&app, &[&key.sign(&header, &stale)], PATH, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "use_dpop_nonce");
    // The refusal says how to recover (RFC 9449 §8).
    let response = axum::response::IntoResponse::into_response(e);
    assert_eq!(
        response.headers()["www-authenticate"],
        "DPoP algs=\"ES256\", error=\"use_dpop_nonce\""
    );
}
