//! Takeover paths that cross MFA enrolment with sessions, roles and the
//! credential limits, each tried as the attacker would: a stolen session
//! without the password, a staff password without the factor, a second
//! session racing the owner's enrolment, a session used as a password
//! oracle, an old staff session kept alive by refreshes.

use crate::helpers::{code, decode_claims, next_step, problem, secret_of, TestApp, TestUser};
use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};

async fn second_session(app: &TestApp, user: &TestUser) -> String {
    let r = app.login(&user.email, &user.password).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn mfa_rows(app: &TestApp, user: &TestUser) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM mfa_totp WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn session_aal(app: &TestApp, access: &str) -> String {
    let sid: uuid::Uuid = decode_claims(access)["sid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    sqlx::query_scalar("SELECT aal FROM sessions WHERE session_id = $1")
        .bind(sid)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn setup(app: &TestApp, access: &str, body: Value) -> reqwest::Response {
    app.post_auth("/v1/mfa/totp/setup", access, Some(&body))
        .await
}

#[tokio::test]
async fn a_stolen_session_without_the_password_cannot_bind_an_authenticator() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_LOGIN_FAILURES", "5/900")
        .spawn()
        .await;
    let user = app.signed_up_user("ada@example.com").await;

    // The thief holds the session only.
    let r = app
        .post_auth("/v1/mfa/totp/setup", user.access(), None)
        .await;
    assert_eq!(r.status(), 422);
    let p = problem(r).await;
    assert_eq!(p["errors"][0]["field"], "current_password");
    assert_eq!(p["errors"][0]["code"], "required");
    for i in 0..5 {
        let r = setup(
            &app,
            user.access(),
            json!({"current_password": format!("guess-number-{i}-of-many")}),
        )
        .await;
        assert_eq!(r.status(), 403);
        assert!(r.headers().get("www-authenticate").is_none());
        assert_eq!(problem(r).await["code"], "invalid_credentials");
    }
    assert_eq!(mfa_rows(&app, &user).await, 0, "nothing stored");
    let counted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'auth.login.failed'
           AND user_id = $1 AND details->>'reason' = 'invalid_current_password'",
    )
    .bind(user.user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(counted, 5, "each wrong guess is a failed sign-in");

    // The soft lock now holds for this account from this network, on
    // every route that checks the password, sign-in included.
    let r = setup(
        &app,
        user.access(),
        json!({"current_password": user.password}),
    )
    .await;
    assert_eq!(r.status(), 429, "even the right password waits");
    assert_eq!(
        app.login(&user.email, &user.password).await.status(),
        429,
        "setup guesses and sign-in guesses share one soft lock"
    );
    assert_eq!(mfa_rows(&app, &user).await, 0);
}

#[tokio::test]
async fn the_owner_with_the_password_enrols_and_only_that_session_is_upgraded() {
    let app = TestApp::builder()
        .env("ACCESS_TOKEN_TTL_SECS", "3600")
        .spawn()
        .await;
    let user = app.signed_up_user("ada@example.com").await;
    let other = second_session(&app, &user).await;

    let r = setup(
        &app,
        user.access(),
        json!({"current_password": user.password}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let secret = secret_of(&r.json().await.unwrap());

    // Another session (a thief's, or the owner's other phone) cannot
    // confirm what this one started, even with the right code.
    let r = app
        .post_auth(
            "/v1/mfa/totp/confirm",
            &other,
            Some(&json!({"code": code(&app, &secret)})),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "no_pending_enrolment");
    assert_eq!(session_aal(&app, &other).await, "aal1");

    // A setup older than ten minutes cannot be confirmed either.
    app.clock
        .advance(Duration::minutes(10) + Duration::seconds(1));
    let r = app
        .post_auth(
            "/v1/mfa/totp/confirm",
            user.access(),
            Some(&json!({"code": code(&app, &secret)})),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(session_aal(&app, user.access()).await, "aal1");

    // Password at setup + code now, in one session: aal2, auth_time now.
    let r = setup(
        &app,
        user.access(),
        json!({"current_password": user.password}),
    )
    .await;
    let secret = secret_of(&r.json().await.unwrap());
    let r = app
        .post_auth(
            "/v1/mfa/totp/confirm",
            user.access(),
            Some(&json!({"code": code(&app, &secret)})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(session_aal(&app, user.access()).await, "aal2");
    assert_eq!(session_aal(&app, &other).await, "aal1");
    let auth_time: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT auth_time FROM sessions WHERE session_id = $1")
            .bind(
                decode_claims(user.access())["sid"]
                    .as_str()
                    .unwrap()
                    .parse::<uuid::Uuid>()
                    .unwrap(),
            )
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(auth_time, app.clock.now(), "the full authentication is now");
}

#[tokio::test]
async fn a_thief_with_password_and_session_cannot_replace_the_owners_new_authenticator() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let thief = second_session(&app, &user).await;

    // The thief starts first; the owner's setup replaces it.
    let r = setup(&app, &thief, json!({"current_password": user.password})).await;
    assert_eq!(r.status(), 200);
    let thief_secret = secret_of(&r.json().await.unwrap());
    let r = setup(
        &app,
        user.access(),
        json!({"current_password": user.password}),
    )
    .await;
    let owner_secret = secret_of(&r.json().await.unwrap());

    // Racing: the owner confirms while the thief sets up again.
    let confirm_body = json!({"code": code(&app, &owner_secret)});
    let (confirm, thief_setup) = tokio::join!(
        app.post_auth("/v1/mfa/totp/confirm", user.access(), Some(&confirm_body)),
        setup(&app, &thief, json!({"current_password": user.password})),
    );
    let confirmed = confirm.status() == 200;
    let thief_status = thief_setup.status();
    if !confirmed {
        // The thief's setup won the lock and took the pending slot: the
        // owner's confirm found nothing of theirs. The owner enrols again.
        assert_eq!(thief_status, 200);
        let r = setup(
            &app,
            user.access(),
            json!({"current_password": user.password}),
        )
        .await;
        let again = secret_of(&r.json().await.unwrap());
        let r = app
            .post_auth(
                "/v1/mfa/totp/confirm",
                user.access(),
                Some(&json!({"code": code(&app, &again)})),
            )
            .await;
        assert_eq!(r.status(), 200);
    } else {
        assert_eq!(thief_status, 403, "MFA is on: the thief's aal1 session");
    }
    next_step(&app);

    // Whatever the order, the thief's secrets are worth nothing now.
    for secret in [&thief_secret] {
        let r = app
            .post_auth(
                "/v1/mfa/totp/confirm",
                &thief,
                Some(&json!({"code": code(&app, secret)})),
            )
            .await;
        assert!([403, 409].contains(&r.status().as_u16()), "{}", r.status());
    }
    let r = setup(&app, &thief, json!({"current_password": user.password})).await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "mfa_required");
    let r = app.login(&user.email, &user.password).await;
    let challenge: Value = r.json().await.unwrap();
    let r = app
        .post_json(
            "/v1/auth/mfa",
            &json!({"mfa_token": challenge["mfa_token"], "code": code(&app, &thief_secret)}),
        )
        .await;
    assert_eq!(r.status(), 401, "the thief's authenticator opens nothing");
}

/// Parses the `admin create` output: the otpauth secret and recovery codes.
fn enrolment_from_stdout(stdout: &str) -> (Vec<u8>, Vec<String>) {
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("totp_secret: "))
        .expect("the secret is printed");
    assert!(stdout.contains("otpauth_uri: otpauth://totp/"));
    let codes: Vec<String> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("recovery_codes:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_owned())
        .collect();
    (
        totp_rs::Secret::try_from_base32(secret.trim())
            .unwrap()
            .as_ref()
            .to_vec(),
        codes,
    )
}

#[tokio::test]
async fn an_administrators_password_alone_reaches_no_staff_route() {
    let app = TestApp::spawn().await;
    let password = "a-long-and-unusual-admin-passphrase";
    let out = app
        .run_cli(
            &["admin", "create", "--email", "boss@example.com"],
            None,
            Some("a-long-and-unusual-admin-passphrase\n"),
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (secret, codes) = enrolment_from_stdout(&stdout);
    assert_eq!(codes.len(), 10);
    let stored_secret: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT secret_ciphertext FROM mfa_totp")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(
        !stored_secret
            .unwrap()
            .windows(secret.len())
            .any(|w| w == secret.as_slice()),
        "the secret is sealed at rest"
    );

    // The attacker with the password gets a challenge, never tokens, and
    // cannot enrol a factor of their own (no session to do it with).
    let r = app.login("boss@example.com", password).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["mfa_required"], true);
    assert!(body.get("access_token").is_none());

    // The operator, with the printed secret, reaches the staff routes.
    let r = app
        .post_json(
            "/v1/auth/mfa",
            &json!({"mfa_token": body["mfa_token"], "code": code(&app, &secret)}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(app.get_auth("/v1/admin/users", access).await.status(), 200);

    // A printed recovery code works once too.
    let body: Value = app
        .login("boss@example.com", password)
        .await
        .json()
        .await
        .unwrap();
    let r = app
        .post_json(
            "/v1/auth/mfa",
            &json!({"mfa_token": body["mfa_token"], "recovery_code": codes[0]}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn staff_roles_need_a_second_factor_and_staff_cannot_turn_it_off() {
    let app = TestApp::spawn().await;
    let admin = app.staff_user("boss@example.com", "admin").await;
    let user = app.signed_up_user("ada@example.com").await;
    let path = format!("/v1/admin/users/{}", user.user_id);

    for role in ["support", "admin"] {
        let r = app
            .send_auth(
                Method::PATCH,
                &path,
                admin.access(),
                Some(&json!({"role": role})),
            )
            .await;
        assert_eq!(r.status(), 409, "{role}");
        assert_eq!(problem(r).await["code"], "mfa_not_enrolled");
    }
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(role, "user", "nothing changed");

    let secret = app.enable_totp(&user).await;
    let r = app
        .send_auth(
            Method::PATCH,
            &path,
            admin.access(),
            Some(&json!({"role": "support"})),
        )
        .await;
    assert_eq!(r.status(), 200);

    // Now staff: the factor stays, whatever the session proves.
    next_step(&app);
    let r = app
        .post_auth(
            "/v1/mfa/totp/disable",
            user.access(),
            Some(&json!({"current_password": user.password, "code": code(&app, &secret)})),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "staff_requires_mfa");
    let on: bool =
        sqlx::query_scalar("SELECT enabled_at IS NOT NULL FROM mfa_totp WHERE user_id = $1")
            .bind(user.user_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(on);
}

#[tokio::test]
async fn a_staff_session_must_have_signed_in_recently_and_a_refresh_does_not_renew_that() {
    let app = TestApp::builder()
        .env("STAFF_MAX_AUTH_AGE_SECS", "60")
        .spawn()
        .await;
    let admin = app.staff_user("boss@example.com", "admin").await;
    assert_eq!(
        app.get_auth("/v1/admin/users", admin.access())
            .await
            .status(),
        200
    );
    app.clock.advance(Duration::seconds(61));
    let r = app.get_auth("/v1/admin/users", admin.access()).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("insufficient_user_authentication") && challenge.contains("max_age=60"),
        "{challenge}"
    );
    assert!(
        !challenge.contains("invalid_token"),
        "refreshing cannot help"
    );
    assert_eq!(problem(r).await["code"], "reauthentication_required");

    // A refresh keeps the session but not the freshness.
    let r = app.refresh(admin.refresh_token()).await;
    assert_eq!(r.status(), 200);
    let pair: Value = r.json().await.unwrap();
    let r = app
        .get_auth("/v1/admin/users", pair["access_token"].as_str().unwrap())
        .await;
    assert_eq!(r.status(), 401);
    // Ordinary routes are unaffected.
    assert_eq!(
        app.get_auth("/v1/me", pair["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );

    for bad in ["59", "86401", "soon"] {
        let err = mobile_backend::config::Config::from_lookup(|k| {
            (k == "STAFF_MAX_AUTH_AGE_SECS").then(|| bad.to_owned())
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("STAFF_MAX_AUTH_AGE_SECS"),
            "{bad}: {err}"
        );
    }
}

#[tokio::test]
async fn support_cannot_end_an_administrators_sessions() {
    let app = TestApp::spawn().await;
    let admin = app.staff_user("boss@example.com", "admin").await;
    let support = app.staff_user("help@example.com", "support").await;
    let user = app.signed_up_user("ada@example.com").await;

    let r = app
        .post_auth(
            &format!("/v1/admin/users/{}/revoke-sessions", admin.user_id),
            support.access(),
            None,
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "forbidden");
    assert_eq!(
        app.get_auth("/v1/admin/users", admin.access())
            .await
            .status(),
        200,
        "the administrator is still signed in"
    );
    let r = app
        .post_auth(
            &format!("/v1/admin/users/{}/revoke-sessions", user.user_id),
            support.access(),
            None,
        )
        .await;
    assert_eq!(r.status(), 200, "support still helps users");
}

async fn enabled_user(app: &TestApp) -> (TestUser, Vec<u8>) {
    let user = app.signed_up_user("ada@example.com").await;
    let secret = app.enable_totp(&user).await;
    next_step(app);
    (user, secret)
}

#[tokio::test]
async fn disabling_mfa_is_no_password_oracle() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_LOGIN_FAILURES", "5/900")
        .spawn()
        .await;
    let (user, secret) = enabled_user(&app).await;
    let disable = |password: &str, code: &str| {
        let body = json!({"current_password": password, "code": code});
        let (app, access) = (&app, user.access().to_owned());
        async move {
            app.post_auth("/v1/mfa/totp/disable", &access, Some(&body))
                .await
        }
    };
    let wrong_password = disable("not-the-password-at-all", &code(&app, &secret)).await;
    let status_a = wrong_password.status();
    let mut a = problem(wrong_password).await;
    let wrong_code = disable(&user.password, "000000").await;
    let status_b = wrong_code.status();
    assert!(wrong_code.headers().get("www-authenticate").is_none());
    let mut b = problem(wrong_code).await;
    for p in [&mut a, &mut b] {
        p.as_object_mut().unwrap().remove("request_id");
    }
    assert_eq!(status_a, 403);
    assert_eq!((status_a, &a), (status_b, &b), "indistinguishable");
    assert_eq!(a["code"], "invalid_credentials");

    // Four more wrong passwords reach the soft lock: the right password
    // and code wait now, and so does sign-in.
    for i in 0..4 {
        let r = disable(&format!("another-guess-{i}"), "123456").await;
        assert_eq!(r.status(), 403);
    }
    next_step(&app);
    let r = disable(&user.password, &code(&app, &secret)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(app.login(&user.email, &user.password).await.status(), 429);
    let on: bool =
        sqlx::query_scalar("SELECT enabled_at IS NOT NULL FROM mfa_totp WHERE user_id = $1")
            .bind(user.user_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(on, "MFA stays on");
}

#[tokio::test]
async fn password_checks_behind_a_session_share_the_accounts_credential_budget() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_CREDENTIALS_ACCOUNT", "12/300")
        .spawn()
        .await;
    let (user, _secret) = enabled_user(&app).await;
    let mut refused_at = None;
    for i in 0..20 {
        let r = app
            .post_auth(
                "/v1/mfa/totp/disable",
                user.access(),
                Some(&json!({"current_password": format!("guess-{i}-xyz"), "code": "123456"})),
            )
            .await;
        if r.status() == 429 {
            refused_at = Some(i);
            break;
        }
        assert_eq!(r.status(), 403);
    }
    assert!(
        refused_at.is_some_and(|n| n < 12),
        "the per-account limit stops the guessing: {refused_at:?}"
    );
    // The same budget as sign-in for that address.
    assert_eq!(app.login(&user.email, &user.password).await.status(), 429);
}

#[tokio::test]
async fn only_a_refused_access_token_asks_the_app_to_refresh() {
    let app = TestApp::spawn().await;
    let (user, secret) = enabled_user(&app).await;

    let r = app.login(&user.email, "wrong-password-entirely").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_none(), "login");

    let body: Value = app
        .login(&user.email, &user.password)
        .await
        .json()
        .await
        .unwrap();
    let wrong = if code(&app, &secret) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let r = app
        .post_json(
            "/v1/auth/mfa",
            &json!({"mfa_token": body["mfa_token"], "code": wrong}),
        )
        .await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_none(), "mfa code");

    let r = app.refresh("not-a-refresh-token").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_none(), "refresh");

    let r = app.get_auth("/v1/me", "not.a.token").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
}
