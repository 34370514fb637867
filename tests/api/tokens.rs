//! Access-token attacks: each forged, altered, expired or misdirected
//! token is refused with 401, and a revoked session's token stops at once.

use crate::helpers::{decode_claims, problem, TestApp, TestUser};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use mobile_backend::tokens::{SigningKeys, TokenSettings};
use serde_json::{json, Value};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn header_of(jwt: &str) -> Value {
    let h = jwt.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

async fn assert_refused(app: &TestApp, token: &str, what: &str) {
    let r = app.get_auth("/v1/sessions", token).await;
    assert_eq!(r.status(), 401, "{what} was accepted");
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(problem(r).await["code"], "invalid_token", "{what}");
}

async fn setup() -> (TestApp, TestUser) {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    (app, user)
}

/// A token for the user's live session, signed by `keys` with `settings`.
fn forge_with(
    app: &TestApp,
    user: &TestUser,
    keys: &SigningKeys,
    settings: &TokenSettings,
) -> String {
    let claims = decode_claims(user.access());
    let now = app.clock.now();
    keys.issue(
        settings,
        now,
        user.user_id,
        claims["sid"].as_str().unwrap().parse().unwrap(),
        "user",
        "aal1",
        &["pwd"],
        now,
    )
    .unwrap()
    .0
}

#[tokio::test]
async fn a_genuine_token_is_accepted_and_carries_the_contract_claims() {
    let (app, user) = setup().await;
    assert_eq!(
        app.get_auth("/v1/sessions", user.access()).await.status(),
        200
    );
    let h = header_of(user.access());
    assert_eq!(h["alg"], "EdDSA");
    assert_eq!(h["typ"], "at+jwt");
    assert!(h["kid"].is_string());
    let c = decode_claims(user.access());
    for claim in [
        "iss",
        "aud",
        "sub",
        "sid",
        "iat",
        "exp",
        "jti",
        "role",
        "aal",
        "amr",
        "auth_time",
    ] {
        assert!(!c[claim].is_null(), "{claim}");
    }
    assert_eq!(c["aal"], "aal1");
    assert_eq!(c["amr"], json!(["pwd"]));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (app, user) = setup().await;
    let mut h = header_of(user.access());
    h["alg"] = json!("none");
    let payload = user.access().split('.').nth(1).unwrap();
    assert_refused(&app, &format!("{}.{payload}.", b64(&h)), "alg none").await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let (app, user) = setup().await;
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let public = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
    let token = jsonwebtoken::encode(
        &header,
        &decode_claims(user.access()),
        &jsonwebtoken::EncodingKey::from_secret(&public).unwrap(),
    )
    .unwrap();
    assert_refused(&app, &token, "HS256 with the public key").await;
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let (app, user) = setup().await;
    let mut parts: Vec<String> = user.access().split('.').map(str::to_owned).collect();
    let mut claims = decode_claims(user.access());
    claims["role"] = json!("admin");
    parts[1] = b64(&claims);
    assert_refused(&app, &parts.join("."), "tampered payload").await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let (app, user) = setup().await;
    app.clock.advance(chrono::Duration::seconds(600 + 31));
    assert_refused(&app, user.access(), "expired").await;
}

#[tokio::test]
async fn wrong_issuer_and_wrong_audience_are_refused() {
    let (app, user) = setup().await;
    let good = (*app.state.token_settings).clone();
    let keys = &app.state.keys.signing;
    let wrong_iss = TokenSettings {
        issuer: "https://evil.example".into(),
        ..good.clone()
    };
    let wrong_aud = TokenSettings {
        audience: "another-api".into(),
        ..good.clone()
    };
    assert_eq!(
        app.get_auth("/v1/sessions", &forge_with(&app, &user, keys, &good))
            .await
            .status(),
        200,
        "control"
    );
    assert_refused(
        &app,
        &forge_with(&app, &user, keys, &wrong_iss),
        "wrong iss",
    )
    .await;
    assert_refused(
        &app,
        &forge_with(&app, &user, keys, &wrong_aud),
        "wrong aud",
    )
    .await;
}

#[tokio::test]
async fn a_token_from_a_key_outside_the_ring_is_refused() {
    let (app, user) = setup().await;
    let stranger = SigningKeys::parse(&SigningKeys::generate_pem().unwrap()).unwrap();
    assert_refused(
        &app,
        &forge_with(&app, &user, &stranger, &app.state.token_settings),
        "unknown kid",
    )
    .await;
}

#[tokio::test]
async fn a_retired_key_stops_verifying_while_a_key_still_in_the_ring_verifies() {
    let old_pem = SigningKeys::generate_pem().unwrap();
    let new_pem = SigningKeys::generate_pem().unwrap();
    let old = SigningKeys::parse(&old_pem).unwrap();
    // During a rotation: the new key signs, the old one still verifies.
    let app = TestApp::builder()
        .env("SIGNING_KEYS", &format!("{new_pem}{old_pem}"))
        .spawn()
        .await;
    let user = app.signed_up_user("ada@example.com").await;
    let by_old = forge_with(&app, &user, &old, &app.state.token_settings);
    assert_eq!(app.get_auth("/v1/sessions", &by_old).await.status(), 200);
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    // After the rotation the old key is gone from the ring.
    let after = TestApp::builder()
        .env("SIGNING_KEYS", &new_pem)
        .spawn()
        .await;
    let user = after.signed_up_user("ada@example.com").await;
    let by_old = forge_with(&after, &user, &old, &after.state.token_settings);
    assert_refused(&after, &by_old, "retired key").await;
}

#[tokio::test]
async fn a_refresh_token_is_not_an_access_token() {
    let (app, user) = setup().await;
    assert_refused(&app, user.refresh_token(), "refresh token as bearer").await;
}

#[tokio::test]
async fn a_revoked_sessions_access_token_stops_working_at_once() {
    let (app, user) = setup().await;
    let other = app
        .login(&user.email, &user.password)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let sid = decode_claims(user.access())["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .delete_auth(
            &format!("/v1/sessions/{sid}"),
            other["access_token"].as_str().unwrap(),
        )
        .await;
    assert_eq!(r.status(), 204);
    assert_refused(&app, user.access(), "revoked session").await;
}

#[tokio::test]
async fn garbage_and_missing_authorization_are_401_never_500() {
    let (app, _) = setup().await;
    for token in [
        "",
        "abc",
        "a.b.c",
        "eyJhbGciOiJFZERTQSIsImtpZCI6IiJ9.e30.AAAA",
        &"x".repeat(10_000),
    ] {
        let r = app.get_auth("/v1/sessions", token).await;
        assert_eq!(r.status(), 401, "{token:.20}");
    }
    let r = app.get("/v1/sessions").await;
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(app.url("/v1/sessions"))
        .header("authorization", "Basic YWRhOnB3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_jwks_lists_public_parts_only() {
    let app = TestApp::spawn().await;
    let r = app.get("/.well-known/jwks.json").await;
    assert_eq!(r.status(), 200);
    let jwks: Value = r.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert!(key.get("d").is_none(), "no private key material");
}
