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

// ---- Bound sessions over HTTP ----

/// A request with an optional proof by `key` for its own method and path.
async fn post_with(
    app: &TestApp,
    path: &str,
    body: &Value,
    key: Option<&DeviceKey>,
) -> reqwest::Response {
    let mut req = app.client.post(app.url(path)).json(body);
    if let Some(key) = key {
        req = req.header("DPoP", key.proof(app, "POST", path, None));
    }
    req.send().await.unwrap()
}

async fn login_with(app: &TestApp, email: &str, key: Option<&DeviceKey>) -> reqwest::Response {
    post_with(
        app,
        "/v1/auth/login",
        &json!({"email": email, "password": STRONG_PASSWORD}),
        key,
    )
    .await
}

async fn refresh_with(app: &TestApp, token: &str, key: Option<&DeviceKey>) -> reqwest::Response {
    post_with(
        app,
        "/v1/auth/refresh",
        &json!({"refresh_token": token}),
        key,
    )
    .await
}

/// `GET path` with `Authorization: <scheme> <token>` and, with a key, a proof bound to the token.
async fn get_as(
    app: &TestApp,
    path: &str,
    scheme: &str,
    token: &str,
    key: Option<&DeviceKey>,
) -> reqwest::Response {
    let mut req = app
        .client
        .get(app.url(path))
        .header("Authorization", format!("{scheme} {token}"));
    if let Some(key) = key {
        req = req.header("DPoP", key.proof(app, "GET", path, Some(token)));
    }
    req.send().await.unwrap()
}

async fn tokens(r: reqwest::Response) -> Value {
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn code_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    (
        status,
        problem(r).await["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_bound_sign_in_gives_dpop_tokens_usable_only_with_the_key() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("bound@example.com").await;
    assert_eq!(user.tokens["token_type"], "Bearer", "no proof, no binding");
    let key = DeviceKey::generate();
    let pair = tokens(login_with(&app, &user.email, Some(&key)).await).await;
    assert_eq!(pair["token_type"], "DPoP");
    let access = pair["access_token"].as_str().unwrap();
    assert_eq!(decode_claims(access)["cnf"]["jkt"], key.jkt());
    assert!(decode_claims(user.access()).get("cnf").is_none());

    assert_eq!(
        get_as(&app, "/v1/me", "DPoP", access, Some(&key))
            .await
            .status(),
        200
    );
    // The same proof again (a replay), on this process or another one.
    let proof = key.proof(&app, "GET", "/v1/me", Some(access));
    let send = |app: &TestApp| {
        app.client
            .get(app.url("/v1/me"))
            .header("Authorization", format!("DPoP {access}"))
            .header("DPoP", proof.clone())
            .send()
    };
    assert_eq!(send(&app).await.unwrap().status(), 200);
    assert_eq!(
        code_of(send(&app).await.unwrap()).await,
        (401, "dpop_proof_invalid".into())
    );
    let other_process = builder().same_database_as(&app).spawn().await;
    assert_eq!(
        code_of(send(&other_process).await.unwrap()).await,
        (401, "dpop_proof_invalid".into())
    );

    // A bound token as a bearer token, without a proof, with another key's.
    let r = get_as(&app, "/v1/me", "Bearer", access, None).await;
    assert_eq!(code_of(r).await, (401, "invalid_token".into()));
    let r = get_as(&app, "/v1/me", "DPoP", access, None).await;
    assert_eq!(
        r.headers()["www-authenticate"],
        "DPoP algs=\"ES256\", error=\"invalid_dpop_proof\""
    );
    assert_eq!(code_of(r).await, (401, "dpop_proof_invalid".into()));
    let r = get_as(&app, "/v1/me", "DPoP", access, Some(&DeviceKey::generate())).await;
    assert_eq!(code_of(r).await, (401, "dpop_key_mismatch".into()));
    // An unbound token under the DPoP scheme, even with a proof.
    let r = get_as(&app, "/v1/me", "DPoP", user.access(), Some(&key)).await;
    assert_eq!(code_of(r).await, (401, "invalid_token".into()));
    assert_eq!(
        get_as(&app, "/v1/me", "Bearer", user.access(), None)
            .await
            .status(),
        200
    );

    // The session list says which sessions are bound.
    let list: Value = get_as(&app, "/v1/sessions", "DPoP", access, Some(&key))
        .await
        .json()
        .await
        .unwrap();
    let mut bound: Vec<(bool, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["current"].as_bool().unwrap(),
                s["dpop_bound"].as_bool().unwrap(),
            )
        })
        .collect();
    bound.sort();
    assert_eq!(
        bound,
        [(false, false), (true, true)],
        "(current, dpop_bound)"
    );
}

#[tokio::test]
async fn a_bound_session_refreshes_only_with_its_key_and_survives_a_wrong_one() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("refresh@example.com").await;
    let key = DeviceKey::generate();
    let pair = tokens(login_with(&app, &user.email, Some(&key)).await).await;
    let refresh = pair["refresh_token"].as_str().unwrap();

    let r = refresh_with(&app, refresh, None).await;
    assert_eq!(code_of(r).await, (401, "dpop_proof_invalid".into()));
    let r = refresh_with(&app, refresh, Some(&DeviceKey::generate())).await;
    assert_eq!(code_of(r).await, (401, "dpop_key_mismatch".into()));
    // Neither refusal rotated the token, counted as reuse or ended the session.
    let next = tokens(refresh_with(&app, refresh, Some(&key)).await).await;
    assert_eq!(next["token_type"], "DPoP");
    assert_eq!(
        decode_claims(next["access_token"].as_str().unwrap())["cnf"]["jkt"],
        key.jkt()
    );
    let newer =
        tokens(refresh_with(&app, next["refresh_token"].as_str().unwrap(), Some(&key)).await).await;
    assert_eq!(
        get_as(
            &app,
            "/v1/me",
            "DPoP",
            newer["access_token"].as_str().unwrap(),
            Some(&key)
        )
        .await
        .status(),
        200
    );
}

#[tokio::test]
async fn a_lost_answer_retry_still_needs_the_proof() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("retry@example.com").await;
    let key = DeviceKey::generate();
    let pair = tokens(login_with(&app, &user.email, Some(&key)).await).await;
    let first = pair["refresh_token"].as_str().unwrap();
    // The answer to this refresh is "lost".
    let lost = tokens(refresh_with(&app, first, Some(&key)).await).await;
    let r = refresh_with(&app, first, None).await;
    assert_eq!(code_of(r).await, (401, "dpop_proof_invalid".into()));
    let r = refresh_with(&app, first, Some(&DeviceKey::generate())).await;
    assert_eq!(code_of(r).await, (401, "dpop_key_mismatch".into()));
    let retried = tokens(refresh_with(&app, first, Some(&key)).await).await;
    assert_eq!(
        retried["refresh_token"], lost["refresh_token"],
        "the same successor"
    );
    assert_eq!(retried["token_type"], "DPoP");
}

#[tokio::test]
async fn an_unbound_session_refreshed_with_a_proof_stays_unbound() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("stays@example.com").await;
    let key = DeviceKey::generate();
    let next = tokens(refresh_with(&app, user.refresh_token(), Some(&key)).await).await;
    assert_eq!(next["token_type"], "Bearer");
    assert!(decode_claims(next["access_token"].as_str().unwrap())
        .get("cnf")
        .is_none());
    // A proof that does not verify is refused even for an unbound session.
    let mut req = app.client.post(app.url("/v1/auth/refresh"));
    req = req
        .header("DPoP", "not-a-proof")
        .json(&json!({"refresh_token": next["refresh_token"]}));
    assert_eq!(
        code_of(req.send().await.unwrap()).await,
        (401, "dpop_proof_invalid".into())
    );
}

#[tokio::test]
async fn with_dpop_policy_required_copied_tokens_are_useless_without_the_key() {
    let app = builder().env("DPOP_POLICY", "required").spawn().await;
    let email = "phone@example.com";
    assert_eq!(app.register(email, STRONG_PASSWORD).await.status(), 202);
    let code = app.code_for(email).await;
    let verify = json!({"email": email, "code": code, "password": STRONG_PASSWORD});
    let r = post_with(&app, "/v1/auth/verify-email", &verify, None).await;
    assert_eq!(code_of(r).await, (401, "dpop_required".into()));
    // The address was verified all the same: signing in is what needs the key.
    let r = login_with(&app, email, None).await;
    assert_eq!(code_of(r).await, (401, "dpop_required".into()));
    let key = DeviceKey::generate();
    let install = uuid::Uuid::new_v4().to_string();
    let r = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("DPoP", key.proof(&app, "POST", "/v1/auth/login", None))
        .header("X-App-Install-Id", &install)
        .json(&json!({"email": email, "password": STRONG_PASSWORD}))
        .send()
        .await
        .unwrap();
    let pair = tokens(r).await;
    let (access, refresh) = (
        pair["access_token"].as_str().unwrap(),
        pair["refresh_token"].as_str().unwrap(),
    );

    // Another client with the tokens and the install id, but not the key.
    let thief = reqwest::Client::new();
    let r = thief
        .get(app.url("/v1/me"))
        .bearer_auth(access)
        .header("X-App-Install-Id", &install)
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(r).await, (401, "invalid_token".into()));
    let own = DeviceKey::generate();
    let r = thief
        .get(app.url("/v1/me"))
        .header("Authorization", format!("DPoP {access}"))
        .header("DPoP", own.proof(&app, "GET", "/v1/me", Some(access)))
        .header("X-App-Install-Id", &install)
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(r).await, (401, "dpop_key_mismatch".into()));
    for proof in [
        None,
        Some(own.proof(&app, "POST", "/v1/auth/refresh", None)),
    ] {
        let mut req = thief
            .post(app.url("/v1/auth/refresh"))
            .header("X-App-Install-Id", &install)
            .json(&json!({"refresh_token": refresh}));
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        let (status, code) = code_of(req.send().await.unwrap()).await;
        assert_eq!(status, 401);
        assert!(
            code == "dpop_proof_invalid" || code == "dpop_key_mismatch",
            "{code}"
        );
    }
    // The owner is unaffected.
    let r = app
        .client
        .post(app.url("/v1/auth/refresh"))
        .header("DPoP", key.proof(&app, "POST", "/v1/auth/refresh", None))
        .header("X-App-Install-Id", &install)
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(tokens(r).await["token_type"], "DPoP");
}

#[tokio::test]
async fn with_dpop_policy_staff_only_staff_must_bind_and_only_after_the_password() {
    let app = builder().env("DPOP_POLICY", "staff").spawn().await;
    let user = app.signed_up_user("user@example.com").await;
    assert_eq!(
        tokens(login_with(&app, &user.email, None).await).await["token_type"],
        "Bearer"
    );
    let staff = app.signed_up_user("staff@example.com").await;
    let secret = app.enable_totp(&staff).await;
    sqlx::query("UPDATE users SET role = 'support' WHERE user_id = $1")
        .bind(staff.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    let r = post_with(
        &app,
        "/v1/auth/login",
        &json!({"email": staff.email, "password": "a-wrong-password-entirely"}),
        None,
    )
    .await;
    assert_eq!(code_of(r).await, (401, "invalid_credentials".into()));
    let r = login_with(&app, &staff.email, None).await;
    assert_eq!(code_of(r).await, (401, "dpop_required".into()));
    // With a proof: the second factor's challenge, whose completion needs a
    // proof of its own (the policy is checked before the code is).
    let key = DeviceKey::generate();
    let challenge: Value = login_with(&app, &staff.email, Some(&key))
        .await
        .json()
        .await
        .unwrap();
    let mfa_token = challenge["mfa_token"].as_str().unwrap();
    next_step(&app);
    let body = json!({"mfa_token": mfa_token, "code": code(&app, &secret)});
    let r = post_with(&app, "/v1/auth/mfa", &body, None).await;
    assert_eq!(code_of(r).await, (401, "dpop_required".into()));
    let pair = tokens(post_with(&app, "/v1/auth/mfa", &body, Some(&key)).await).await;
    assert_eq!(pair["token_type"], "DPoP");
    assert_eq!(
        decode_claims(pair["access_token"].as_str().unwrap())["cnf"]["jkt"],
        key.jkt()
    );
}
