//! Multi-factor authentication: enrolment, the login challenge, replay
//! protection, recovery codes, step-up and the progressive throttle. Time
//! moves with the test clock; nothing sleeps.

use crate::helpers::{code, decode_claims, next_step, problem, TestApp, TestUser};
use chrono::Duration;
use mobile_backend::mfa::totp;
use serde_json::{json, Value};

struct Enrolled {
    user: TestUser,
    secret: Vec<u8>,
    recovery_codes: Vec<String>,
    /// An aal2 access token (the session that confirmed enrolment).
    aal2_access: String,
    /// A session opened before MFA was enabled: still aal1.
    aal1_access: String,
}

async fn enrolled(app: &TestApp, email: &str) -> Enrolled {
    let user = app.signed_up_user(email).await;
    let aal1: Value = app
        .login(&user.email, &user.password)
        .await
        .json()
        .await
        .unwrap();
    let r = app
        .post_auth(
            "/v1/mfa/totp/setup",
            user.access(),
            Some(&json!({"current_password": user.password})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let setup: Value = r.json().await.unwrap();
    assert!(setup["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/"));
    assert!(setup["qr_svg"].as_str().unwrap().contains("<svg"));
    let secret = totp_rs::Secret::try_from_base32(setup["secret"].as_str().unwrap())
        .unwrap()
        .as_ref()
        .to_vec();
    assert_eq!(secret.len(), 20, "160-bit secret");
    let r = app
        .post_auth(
            "/v1/mfa/totp/confirm",
            user.access(),
            Some(&json!({"code": code(app, &secret)})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let codes: Vec<String> =
        serde_json::from_value(r.json::<Value>().await.unwrap()["recovery_codes"].clone()).unwrap();
    assert_eq!(codes.len(), 10);
    next_step(app);
    Enrolled {
        aal2_access: user.access().to_owned(),
        aal1_access: aal1["access_token"].as_str().unwrap().to_owned(),
        user,
        secret,
        recovery_codes: codes,
    }
}

async fn challenge(app: &TestApp, user: &TestUser) -> String {
    let r = app.login(&user.email, &user.password).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["mfa_required"], true);
    assert!(
        body.get("access_token").is_none(),
        "no tokens before the second factor"
    );
    body["mfa_token"].as_str().unwrap().to_owned()
}

async fn complete(app: &TestApp, token: &str, field: &str, value: &str) -> reqwest::Response {
    app.post_json("/v1/auth/mfa", &json!({"mfa_token": token, field: value}))
        .await
}

#[tokio::test]
async fn enrol_confirm_logout_then_login_needs_the_code_and_yields_aal2() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;
    let status: Value = app
        .get_auth("/v1/mfa", &e.aal2_access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        status,
        json!({"totp_enabled": true, "recovery_codes_remaining": 10})
    );
    assert_eq!(
        app.post_auth("/v1/auth/logout", &e.aal2_access, None)
            .await
            .status(),
        204
    );

    let token = challenge(&app, &e.user).await;
    let body: Value = app
        .login(&e.user.email, &e.user.password)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["methods"], json!(["totp", "recovery_code"]));
    assert_eq!(body["expires_in"], 300);
    let r = complete(&app, &token, "code", &code(&app, &e.secret)).await;
    assert_eq!(r.status(), 200);
    let pair: Value = r.json().await.unwrap();
    let claims = decode_claims(pair["access_token"].as_str().unwrap());
    assert_eq!(claims["aal"], "aal2");
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
}

#[tokio::test]
async fn confirming_upgrades_the_current_session_to_aal2() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;
    // The next refresh of that session carries aal2.
    let pair: Value = app
        .refresh(e.user.refresh_token())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        decode_claims(pair["access_token"].as_str().unwrap())["aal"],
        "aal2"
    );
}

#[tokio::test]
async fn one_code_twice_within_its_window_succeeds_once_across_two_challenges() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;
    let c = code(&app, &e.secret);
    let (t1, t2) = (
        challenge(&app, &e.user).await,
        challenge(&app, &e.user).await,
    );
    assert_eq!(complete(&app, &t1, "code", &c).await.status(), 200);
    app.clock.advance(Duration::seconds(5));
    let r = complete(&app, &t2, "code", &c).await;
    assert_eq!(r.status(), 401);
    assert_eq!(problem(r).await["code"], "invalid_code");
}

#[tokio::test]
async fn an_earlier_steps_code_fails_after_a_later_one_was_used_and_two_steps_away_fails() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;
    let earlier = code(&app, &e.secret);
    app.clock.advance(Duration::seconds(30));
    let later = code(&app, &e.secret);
    assert_eq!(
        complete(&app, &challenge(&app, &e.user).await, "code", &later)
            .await
            .status(),
        200
    );
    // `earlier` is still inside the ±1 window, but older than the used step.
    let r = complete(&app, &challenge(&app, &e.user).await, "code", &earlier).await;
    assert_eq!(r.status(), 401);

    app.clock.advance(Duration::seconds(60));
    let stale = totp::code_at(&e.secret, (app.clock.now().timestamp() - 60) as u64, 6).unwrap();
    let r = complete(&app, &challenge(&app, &e.user).await, "code", &stale).await;
    assert_eq!(r.status(), 401, "two steps away");
}

#[tokio::test]
async fn the_code_that_confirmed_enrolment_cannot_also_sign_in() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let secret = app.totp_setup(&user).await;
    let c = code(&app, &secret);
    assert_eq!(
        app.post_auth(
            "/v1/mfa/totp/confirm",
            user.access(),
            Some(&json!({"code": c}))
        )
        .await
        .status(),
        200
    );
    let r = complete(&app, &challenge(&app, &user).await, "code", &c).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn an_mfa_token_dies_after_use_after_five_minutes_and_after_five_wrong_codes() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;

    let used = challenge(&app, &e.user).await;
    assert_eq!(
        complete(&app, &used, "code", &code(&app, &e.secret))
            .await
            .status(),
        200
    );
    next_step(&app);
    let r = complete(&app, &used, "code", &code(&app, &e.secret)).await;
    assert_eq!(problem(r).await["code"], "mfa_token_invalid");

    let old = challenge(&app, &e.user).await;
    app.clock
        .advance(Duration::minutes(5) + Duration::seconds(1));
    let r = complete(&app, &old, "code", &code(&app, &e.secret)).await;
    assert_eq!(problem(r).await["code"], "mfa_token_invalid");

    let ground = challenge(&app, &e.user).await;
    let right = code(&app, &e.secret);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..5 {
        assert_eq!(complete(&app, &ground, "code", wrong).await.status(), 401);
    }
    // Past the per-user throttle, still inside the token's five minutes.
    app.clock.advance(Duration::minutes(4));
    let r = complete(&app, &ground, "code", &code(&app, &e.secret)).await;
    assert_eq!(problem(r).await["code"], "mfa_token_invalid");
}

#[tokio::test]
async fn an_mfa_token_cannot_be_completed_with_another_users_factor() {
    let app = TestApp::spawn().await;
    let ada = enrolled(&app, "ada@example.com").await;
    let bob = enrolled(&app, "bob@example.com").await;
    let ada_token = challenge(&app, &ada.user).await;
    let r = complete(&app, &ada_token, "code", &code(&app, &bob.secret)).await;
    assert_eq!(r.status(), 401);
    let r = complete(&app, &ada_token, "recovery_code", &bob.recovery_codes[0]).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn each_recovery_code_works_once_and_regeneration_kills_the_old_set() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;
    for (i, rc) in e.recovery_codes.iter().enumerate() {
        let r = complete(&app, &challenge(&app, &e.user).await, "recovery_code", rc).await;
        assert_eq!(r.status(), 200, "code {i}");
        let pair: Value = r.json().await.unwrap();
        assert_eq!(
            decode_claims(pair["access_token"].as_str().unwrap())["amr"],
            json!(["pwd", "rec"])
        );
    }
    // The 11th attempt, with a used code, fails.
    let r = complete(
        &app,
        &challenge(&app, &e.user).await,
        "recovery_code",
        &e.recovery_codes[0],
    )
    .await;
    assert_eq!(r.status(), 401);
    let status: Value = app
        .get_auth("/v1/mfa", &e.aal2_access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["recovery_codes_remaining"], 0);
    // Each use was mailed to the owner.
    let notices = app
        .drain_outbox()
        .await
        .into_iter()
        .filter(|m| m.subject.contains("recovery code"))
        .count();
    assert_eq!(notices, 10);

    let r = app
        .post_auth(
            "/v1/mfa/recovery-codes",
            &e.aal2_access,
            Some(&json!({"code": code(&app, &e.secret)})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let fresh: Vec<String> =
        serde_json::from_value(r.json::<Value>().await.unwrap()["recovery_codes"].clone()).unwrap();
    let status: Value = app
        .get_auth("/v1/mfa", &e.aal2_access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["recovery_codes_remaining"], 10);
    next_step(&app);
    let r = app
        .post_auth(
            "/v1/mfa/recovery-codes",
            &e.aal2_access,
            Some(&json!({"code": code(&app, &e.secret)})),
        )
        .await;
    assert_eq!(r.status(), 200, "a second regeneration");
    let r = complete(
        &app,
        &challenge(&app, &e.user).await,
        "recovery_code",
        &fresh[0],
    )
    .await;
    assert_eq!(r.status(), 401, "the previous set died");
}

#[tokio::test]
async fn recovery_codes_are_forgiving_about_case_and_dashes() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;
    let typed = e.recovery_codes[3].to_lowercase().replace('-', " ");
    let r = complete(
        &app,
        &challenge(&app, &e.user).await,
        "recovery_code",
        &typed,
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn neither_the_totp_secret_nor_a_recovery_code_is_stored_in_clear() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;
    let secret_b32 = totp::secret_base32(&e.secret);
    let secret_hex: String = e.secret.iter().map(|b| format!("{b:02x}")).collect();
    for table in [
        "mfa_totp",
        "recovery_codes",
        "mfa_challenges",
        "audit_events",
        "users",
        "sessions",
    ] {
        let dump: Vec<(String,)> =
            sqlx::query_as(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                .fetch_all(&app.db)
                .await
                .unwrap();
        let dump = dump.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n");
        assert!(
            !dump.contains(&secret_b32) && !dump.contains(&secret_hex),
            "{table} holds the secret"
        );
        for rc in &e.recovery_codes {
            // bytea columns print as hex in row_to_json: look for that too.
            let bare = rc.replace('-', "");
            let hex: String = bare.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(
                !dump.contains(rc) && !dump.contains(&bare) && !dump.contains(&hex),
                "{table} holds a recovery code"
            );
        }
    }
}

#[tokio::test]
async fn disable_without_the_password_or_a_valid_code_fails_and_mfa_stays_on() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;
    let r = app
        .post_auth("/v1/mfa/totp/disable", &e.aal2_access, Some(&json!({"current_password": "wrong-password-entirely", "code": code(&app, &e.secret)})))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "invalid_credentials");
    next_step(&app);
    let r = app
        .post_auth(
            "/v1/mfa/totp/disable",
            &e.aal2_access,
            Some(&json!({"current_password": e.user.password, "code": "000000"})),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        problem(r).await["code"],
        "invalid_credentials",
        "a wrong code is answered like a wrong password"
    );
    let status: Value = app
        .get_auth("/v1/mfa", &e.aal2_access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["totp_enabled"], true);

    // With both, it goes, and every other session ends.
    next_step(&app);
    let r = app
        .post_auth(
            "/v1/mfa/totp/disable",
            &e.aal2_access,
            Some(&json!({"current_password": e.user.password, "code": code(&app, &e.secret)})),
        )
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.get_auth("/v1/sessions", &e.aal1_access).await.status(),
        401
    );
    let login: Value = app
        .login(&e.user.email, &e.user.password)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        login.get("access_token").is_some(),
        "no second step any more"
    );
}

#[tokio::test]
async fn an_aal1_session_of_a_user_with_mfa_is_refused_every_step_up_action() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;
    let c = code(&app, &e.secret);
    for (path, body) in [
        (
            "/v1/mfa/totp/disable",
            json!({"current_password": e.user.password, "code": c}),
        ),
        ("/v1/mfa/recovery-codes", json!({"code": c})),
        ("/v1/mfa/totp/setup", json!({"code": c})),
    ] {
        let r = app.post_auth(path, &e.aal1_access, Some(&body)).await;
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(problem(r).await["code"], "mfa_required", "{path}");
    }
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'mfa.step_up.refused'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(refused, 3);
    // Nothing changed.
    let status: Value = app
        .get_auth("/v1/mfa", &e.aal2_access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        status,
        json!({"totp_enabled": true, "recovery_codes_remaining": 10})
    );
}

#[tokio::test]
async fn replacing_the_authenticator_needs_a_code_from_the_current_one() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;
    let r = app
        .post_auth("/v1/mfa/totp/setup", &e.aal2_access, None)
        .await;
    assert_eq!(r.status(), 422);
    let r = app
        .post_auth(
            "/v1/mfa/totp/setup",
            &e.aal2_access,
            Some(&json!({"current_password": e.user.password})),
        )
        .await;
    assert_eq!(r.status(), 422, "the password alone is not enough");
    let r = app
        .post_auth(
            "/v1/mfa/totp/setup",
            &e.aal2_access,
            Some(&json!({"current_password": e.user.password, "code": code(&app, &e.secret)})),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_progressive_throttle_slows_the_sixth_wrong_code_across_fresh_challenges() {
    let app = TestApp::spawn().await;
    let e = enrolled(&app, "ada@example.com").await;
    let wrong = |app: &TestApp| {
        let right = code(app, &e.secret);
        if right == "000000" {
            "111111".to_owned()
        } else {
            "000000".to_owned()
        }
    };
    for _ in 0..5 {
        let token = challenge(&app, &e.user).await;
        assert_eq!(
            complete(&app, &token, "code", &wrong(&app)).await.status(),
            401
        );
    }
    // The 6th attempt, on a fresh challenge, is held back even with the right code.
    let token = challenge(&app, &e.user).await;
    let r = complete(&app, &token, "code", &code(&app, &e.secret)).await;
    assert_eq!(r.status(), 429);
    let retry: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15).contains(&retry), "{retry}");
    assert_eq!(problem(r).await["code"], "rate_limited");

    app.clock.advance(Duration::seconds(16));
    let r = complete(&app, &token, "code", &wrong(&app)).await;
    assert_eq!(r.status(), 401, "the 6th wrong code counts");
    let token = challenge(&app, &e.user).await;
    let r = complete(&app, &token, "code", &code(&app, &e.secret)).await;
    assert_eq!(r.status(), 429, "now the wait is longer");
    let retry: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 15 && retry <= 30, "{retry}");

    app.clock.advance(Duration::seconds(31));
    let r = complete(&app, &token, "code", &code(&app, &e.secret)).await;
    assert_eq!(r.status(), 200, "a success resets the throttle");
}
