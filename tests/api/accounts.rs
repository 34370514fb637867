//! Accounts: the whole journey, enumeration safety, email codes and the
//! password policy.

use crate::helpers::{problem, TestApp, STRONG_PASSWORD};
use serde_json::json;

#[tokio::test]
async fn the_whole_journey_from_sign_up_to_sign_out_works_and_the_old_token_dies() {
    let app = TestApp::spawn().await;
    let email = "ada@example.com";
    let r = app.register(email, STRONG_PASSWORD).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "verification_required"})
    );

    // Not verified yet: the right password still cannot sign in.
    let r = app.login(email, STRONG_PASSWORD).await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "email_not_verified");

    let code = app.code_for(email).await;
    // Verification signs in at once (with the registration's password).
    let r = app.verify_email(email, &code, STRONG_PASSWORD).await;
    assert_eq!(r.status(), 200);
    let first: serde_json::Value = r.json().await.unwrap();
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(
        app.get_auth("/v1/sessions", first["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );

    let r = app.login(email, STRONG_PASSWORD).await;
    assert_eq!(r.status(), 200);
    let pair: serde_json::Value = r.json().await.unwrap();
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 600);
    assert!(pair["refresh_expires_in"].as_i64().unwrap() > 29 * 24 * 3600);
    let access = pair["access_token"].as_str().unwrap();
    assert_eq!(app.get_auth("/v1/sessions", access).await.status(), 200);

    let r = app.refresh(pair["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    let next: serde_json::Value = r.json().await.unwrap();
    let access2 = next["access_token"].as_str().unwrap();
    assert_eq!(next["session_id"], pair["session_id"]);

    assert_eq!(
        app.post_auth("/v1/auth/logout", access2, None)
            .await
            .status(),
        204
    );
    for token in [access, access2] {
        let r = app.get_auth("/v1/sessions", token).await;
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }
    let r = app.refresh(next["refresh_token"].as_str().unwrap()).await;
    assert_eq!(problem(r).await["code"], "session_revoked");
}

async fn body_of(r: reqwest::Response) -> (u16, String) {
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn register_resend_and_forgot_answer_identically_for_known_and_unknown_emails() {
    let app = TestApp::spawn().await;
    app.signed_up_user("known@example.com").await;
    for (path, extra) in [
        ("/v1/auth/register", Some(STRONG_PASSWORD)),
        ("/v1/auth/verify-email/resend", None),
        ("/v1/auth/password/forgot", None),
    ] {
        let body = |email: &str| match extra {
            Some(p) => json!({"email": email, "password": p}),
            None => json!({"email": email}),
        };
        let known = body_of(app.post_json(path, &body("known@example.com")).await).await;
        let unknown = body_of(app.post_json(path, &body("nobody@example.com")).await).await;
        assert_eq!(known, unknown, "{path}");
        assert_eq!(known.0, 202, "{path}");
    }
    // The owner of the known address hears about the registration attempt.
    let mails = app.drain_outbox().await;
    assert!(mails
        .iter()
        .any(|m| m.to == "known@example.com" && m.subject.contains("tried to register")));
}

#[tokio::test]
async fn login_fails_the_same_way_for_an_unknown_email_and_a_wrong_password() {
    let app = TestApp::spawn().await;
    app.signed_up_user("ada@example.com").await;
    let unknown = app.login("nobody@example.com", STRONG_PASSWORD).await;
    let wrong = app
        .login("ada@example.com", "not-the-password-at-all")
        .await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(wrong.status(), 401);
    let (a, b) = (problem(unknown).await, problem(wrong).await);
    assert_eq!(a["code"], "invalid_credentials");
    assert_eq!(a["detail"], b["detail"]);
    assert_eq!(a["code"], b["code"]);
}

#[tokio::test]
async fn the_same_address_in_another_spelling_is_the_same_account() {
    let app = TestApp::spawn().await;
    app.signed_up_user("ada@example.com").await;
    let r = app.login("  ADA@Example.com ", STRONG_PASSWORD).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_wrong_code_six_times_kills_the_code() {
    let app = TestApp::spawn().await;
    app.register("ada@example.com", STRONG_PASSWORD).await;
    let code = app.code_for("ada@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let r = app
            .post_json(
                "/v1/auth/verify-email",
                &json!({"email": "ada@example.com", "code": wrong, "password": STRONG_PASSWORD}),
            )
            .await;
        assert_eq!(problem(r).await["code"], "invalid_code");
    }
    let r = app
        .post_json(
            "/v1/auth/verify-email",
            &json!({"email": "ada@example.com", "code": code, "password": STRONG_PASSWORD}),
        )
        .await;
    assert_eq!(
        r.status(),
        400,
        "the right code is dead after five wrong ones"
    );
    assert_eq!(problem(r).await["code"], "invalid_code");
}

#[tokio::test]
async fn an_expired_code_fails_and_a_used_code_fails() {
    let app = TestApp::spawn().await;
    app.register("ada@example.com", STRONG_PASSWORD).await;
    let code = app.code_for("ada@example.com").await;
    app.clock.advance(chrono::Duration::minutes(16));
    let r = app
        .post_json(
            "/v1/auth/verify-email",
            &json!({"email": "ada@example.com", "code": code, "password": STRONG_PASSWORD}),
        )
        .await;
    assert_eq!(problem(r).await["code"], "invalid_code");

    app.post_json(
        "/v1/auth/verify-email/resend",
        &json!({"email": "ada@example.com"}),
    )
    .await;
    let fresh = app.code_for("ada@example.com").await;
    let ok = app
        .post_json(
            "/v1/auth/verify-email",
            &json!({"email": "ada@example.com", "code": fresh, "password": STRONG_PASSWORD}),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let again = app
        .post_json(
            "/v1/auth/verify-email",
            &json!({"email": "ada@example.com", "code": fresh, "password": STRONG_PASSWORD}),
        )
        .await;
    assert_eq!(problem(again).await["code"], "invalid_code");
}

#[tokio::test]
async fn a_password_reset_ends_every_session_and_the_new_password_works() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let second = app
        .login(&user.email, &user.password)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();

    assert_eq!(
        app.post_json("/v1/auth/password/forgot", &json!({"email": user.email}))
            .await
            .status(),
        202
    );
    let code = app.code_for(&user.email).await;
    let new_password = "a-brand-new-passphrase-77";
    let r = app
        .post_json(
            "/v1/auth/password/reset",
            &json!({"email": user.email, "code": code, "new_password": new_password}),
        )
        .await;
    assert_eq!(r.status(), 204);

    assert_eq!(
        app.get_auth("/v1/sessions", user.access()).await.status(),
        401
    );
    assert_eq!(
        app.get_auth("/v1/sessions", second["access_token"].as_str().unwrap())
            .await
            .status(),
        401
    );
    assert_eq!(
        problem(app.refresh(user.refresh_token()).await).await["code"],
        "session_revoked"
    );
    assert_eq!(app.login(&user.email, &user.password).await.status(), 401);
    assert_eq!(app.login(&user.email, new_password).await.status(), 200);
}

#[tokio::test]
async fn a_password_change_ends_every_other_session_and_keeps_the_current_one() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let other = app
        .login(&user.email, &user.password)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let new_password = "another-long-passphrase-19";

    let r = app
        .post_auth(
            "/v1/auth/password/change",
            user.access(),
            Some(&json!({"current_password": "wrong-password-here", "new_password": new_password})),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "invalid_credentials");

    let r = app
        .post_auth(
            "/v1/auth/password/change",
            user.access(),
            Some(&json!({"current_password": user.password, "new_password": new_password})),
        )
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.get_auth("/v1/sessions", user.access()).await.status(),
        200,
        "current session kept"
    );
    assert_eq!(
        app.get_auth("/v1/sessions", other["access_token"].as_str().unwrap())
            .await
            .status(),
        401
    );
    assert_eq!(app.login(&user.email, new_password).await.status(), 200);
}

#[tokio::test]
async fn the_password_policy_refuses_each_weak_kind_with_a_reason() {
    let app = TestApp::spawn().await;
    for (password, code) in [
        ("short-pw-1", "password_too_short"),
        (&*"x".repeat(129), "password_too_long"),
        ("password1234", "password_common"),
        ("ada.lovelace-my-secret", "password_contains_email"),
        ("aaaaaaaaaaaaaaaa", "password_too_weak"),
    ] {
        let r = app.register("ada.lovelace@example.com", password).await;
        assert_eq!(r.status(), 422, "{password}");
        let body = problem(r).await;
        assert_eq!(body["errors"][0]["field"], "password");
        assert_eq!(body["errors"][0]["code"], code, "{password}");
        assert!(!body["errors"][0]["message"].as_str().unwrap().is_empty());
    }
    let r = app
        .register("ada.lovelace@example.com", "tulip orbit canyon")
        .await;
    assert_eq!(
        r.status(),
        202,
        "a strong passphrase of 18 characters is accepted"
    );
}

#[tokio::test]
async fn a_locked_account_cannot_sign_in_even_with_the_right_password() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    sqlx::query("UPDATE users SET status = 'locked' WHERE user_id = $1")
        .bind(user.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    let r = app.login(&user.email, &user.password).await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "account_locked");
    assert_eq!(
        app.get_auth("/v1/sessions", user.access()).await.status(),
        401,
        "its sessions stop at once"
    );
    let wrong = app.login(&user.email, "not-the-password-at-all").await;
    assert_eq!(
        problem(wrong).await["code"],
        "invalid_credentials",
        "no state leaks without the password"
    );
}

#[tokio::test]
async fn sign_in_and_failures_are_audited_without_the_password() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    app.login(&user.email, "wrong-password-attempt").await;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT event_type, outcome, details::text FROM audit_events WHERE user_id = $1 ORDER BY occurred_at, audit_event_id",
    )
    .bind(user.user_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let types: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    for expected in [
        "auth.account.registered",
        "auth.email.verification_sent",
        "auth.email.verified",
        "auth.login.succeeded",
        "auth.login.failed",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    for (_, _, details) in &rows {
        assert!(!details.contains("wrong-password-attempt") && !details.contains(&user.password));
    }
}

#[tokio::test]
async fn a_hash_with_old_parameters_is_upgraded_at_the_next_sign_in() {
    use mobile_backend::{accounts::password::PasswordHasher, config::Argon2Params};
    use secrecy::SecretString;
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let old = PasswordHasher::new(
        Argon2Params {
            memory_kib: 2048,
            iterations: 1,
            parallelism: 1,
        },
        None,
        1,
        1,
    )
    .unwrap();
    let old_hash = old
        .hash(&SecretString::from(user.password.clone()))
        .await
        .unwrap();
    sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
        .bind(user.user_id)
        .bind(&old_hash)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(app.login(&user.email, &user.password).await.status(), 200);
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(
        stored.contains("m=4096,t=1,p=1"),
        "re-hashed with the configured parameters: {stored}"
    );
    assert_eq!(app.login(&user.email, &user.password).await.status(), 200);
}

#[tokio::test]
async fn an_absurdly_long_password_is_refused_without_hashing() {
    let app = TestApp::spawn().await;
    app.signed_up_user("ada@example.com").await;
    let r = app.login("ada@example.com", &"p".repeat(4000)).await;
    assert_eq!(r.status(), 401);
    assert_eq!(problem(r).await["code"], "invalid_credentials");
}

/// A stand-in for the Pwned Passwords range API on loopback.
async fn fake_pwned_api(breached: &'static str) -> String {
    use sha1::{Digest, Sha1};
    let hex: String = Sha1::digest(breached.as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let (prefix, suffix) = (hex[..5].to_owned(), hex[5..].to_owned());
    let app = axum::Router::new().route(
        "/range/{prefix}",
        axum::routing::get(move |axum::extract::Path(p): axum::extract::Path<String>| {
            let (prefix, suffix) = (prefix.clone(), suffix.clone());
            async move {
                // Padding entries (count 0) must not count as a breach.
                let mut body = String::from("0000000000000000000000000000000000A:0\r\n");
                if p == prefix {
                    body.push_str(&format!("{suffix}:42\r\n"));
                }
                body
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

#[tokio::test]
async fn with_the_optional_check_on_a_breached_password_is_refused_by_range_query() {
    let breached = "this-one-leaked-in-2019";
    let api = fake_pwned_api(breached).await;
    let app = TestApp::builder()
        .env("PWNED_PASSWORDS_CHECK", "true")
        .env("PWNED_PASSWORDS_URL", &api)
        .spawn()
        .await;
    let r = app.register("ada@example.com", breached).await;
    assert_eq!(r.status(), 422);
    assert_eq!(problem(r).await["errors"][0]["code"], "password_breached");
    assert_eq!(
        app.register("ada@example.com", STRONG_PASSWORD)
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn when_the_breach_api_is_down_registration_still_works() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::builder()
        .env("PWNED_PASSWORDS_CHECK", "true")
        .env("PWNED_PASSWORDS_URL", &format!("http://127.0.0.1:{port}/"))
        .spawn()
        .await;
    assert_eq!(
        app.register("ada@example.com", STRONG_PASSWORD)
            .await
            .status(),
        202
    );
}
