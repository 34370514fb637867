//! Every answer that signs in or refreshes names its shape in `result`
//! (the `discriminator` of `LoginResponse` in openapi.yaml): `tokens` for a
//! `TokenPair`, `mfa_required` for the second step's challenge. Generated
//! mobile clients pick the model by that member alone, so it must be on
//! every endpoint that can answer either shape or a pair, and a challenge
//! must never carry a token.

use crate::helpers::{next_step, TestApp};
use chrono::Duration;
use serde_json::{json, Value};

/// The members of a `TokenPair`, `result` first.
const PAIR: &[&str] = &[
    "result",
    "token_type",
    "access_token",
    "expires_in",
    "refresh_token",
    "refresh_expires_in",
    "session_id",
];

async fn body(r: reqwest::Response, what: &str) -> Value {
    assert_eq!(r.status(), 200, "{what}");
    r.json().await.unwrap()
}

/// A `TokenPair`: `result: tokens`, exactly the pair's members, and no
/// member of the challenge.
fn assert_tokens(answer: &Value, what: &str) {
    assert_eq!(answer["result"], "tokens", "{what}: {answer}");
    let keys: Vec<&str> = answer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = PAIR.to_vec();
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want, "{what}: the members of a TokenPair");
    assert!(answer.get("mfa_required").is_none(), "{what}");
}

#[tokio::test]
async fn every_answer_that_signs_in_or_refreshes_says_tokens() {
    let app = TestApp::spawn().await;
    // verify-email signs in.
    let user = app.signed_up_user("ada@example.com").await;
    assert_tokens(&user.tokens, "verify_email");
    // login without a second factor.
    let login = body(app.login(&user.email, &user.password).await, "login").await;
    assert_tokens(&login, "login");
    // refresh, and its retry after a lost response (the same successor).
    let first = login["refresh_token"].as_str().unwrap();
    let refreshed = body(app.refresh(first).await, "refresh").await;
    assert_tokens(&refreshed, "refresh_tokens");
    app.clock.advance(Duration::seconds(5));
    let retried = body(app.refresh(first).await, "refresh retry").await;
    assert_tokens(&retried, "refresh_tokens (retry within the grace window)");
    assert_eq!(retried["refresh_token"], refreshed["refresh_token"]);
}

#[tokio::test]
async fn the_second_step_says_mfa_required_without_a_token_and_its_completion_says_tokens() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let secret = app.enable_totp(&user).await;

    // A password alone: the challenge, and nothing that works as a token.
    let challenge = body(app.login(&user.email, &user.password).await, "login").await;
    assert_eq!(challenge["result"], "mfa_required", "{challenge}");
    // Kept for apps that branch on its presence.
    assert_eq!(challenge["mfa_required"], true);
    let mut keys: Vec<&str> = challenge
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "expires_in",
            "methods",
            "mfa_required",
            "mfa_token",
            "result"
        ],
        "no token member in a challenge"
    );
    // The mfa_token is not a refresh token, whatever the client decodes it as.
    let r = app.refresh(challenge["mfa_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 401);

    // The second factor: a pair, tagged as one.
    next_step(&app);
    let done = body(
        app.post_json(
            "/v1/auth/mfa",
            &json!({"mfa_token": challenge["mfa_token"], "code": app.totp_code(&secret)}),
        )
        .await,
        "complete_mfa",
    )
    .await;
    assert_tokens(&done, "complete_mfa");
    let refreshed = body(
        app.refresh(done["refresh_token"].as_str().unwrap()).await,
        "refresh of the aal2 session",
    )
    .await;
    assert_tokens(&refreshed, "refresh_tokens (aal2)");
}

/// `result` is the server's word: a client cannot send one to choose the
/// shape of the answer (the bodies refuse unknown members).
#[tokio::test]
async fn a_result_sent_by_the_client_is_refused_not_echoed() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    app.enable_totp(&user).await;
    for (path, body) in [
        (
            "/v1/auth/login",
            json!({"email": user.email, "password": user.password, "result": "tokens"}),
        ),
        (
            "/v1/auth/refresh",
            json!({"refresh_token": user.refresh_token(), "result": "tokens"}),
        ),
        (
            "/v1/auth/mfa",
            json!({"mfa_token": "x".repeat(43), "code": "123456", "result": "tokens"}),
        ),
    ] {
        let r = app.post_json(path, &body).await;
        assert_eq!(r.status(), 422, "{path}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["code"], "validation_failed", "{path}");
        assert!(
            p["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == "result" && e["code"] == "unknown_field"),
            "{path}: {p}"
        );
    }
    // And the password alone still gets only the challenge.
    let challenge = body(app.login(&user.email, &user.password).await, "login").await;
    assert_eq!(challenge["result"], "mfa_required");
    assert!(challenge.get("access_token").is_none());
}
