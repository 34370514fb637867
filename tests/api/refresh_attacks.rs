//! Attacks on the lost-answer rule of refresh (a retired token whose
//! successor was never used gets it again) and on push registrations
//! ending with their session, from an outside review. Each asserts the
//! secure behaviour.

use crate::helpers::{TestApp, STRONG_PASSWORD};
use chrono::Duration;
use serde_json::{json, Value};

async fn login_from(app: &TestApp, email: &str, install: &str) -> Value {
    let r = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("x-app-install-id", install)
        .json(&json!({"email": email, "password": STRONG_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn refresh_from(app: &TestApp, token: &str, install: Option<&str>) -> reqwest::Response {
    let mut req = app.client.post(app.url("/v1/auth/refresh"));
    if let Some(id) = install {
        req = req.header("x-app-install-id", id);
    }
    req.json(&json!({"refresh_token": token}))
        .send()
        .await
        .unwrap()
}

/// Finding R1. The owner's phone refreshed once (T0 -> T1), stored T1, and
/// has not been opened since. Weeks later, a copy of T0 (an old device
/// backup, a logged request body, a copied app container) presented from
/// ANOTHER install is answered with the owner's live refresh token T1 and a
/// working access token: no revocation, only a device-drift alert.
#[tokio::test]
async fn a_retired_token_replayed_weeks_later_from_another_install_does_not_get_the_live_token() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let owner_install = uuid::Uuid::new_v4().to_string();
    let pair = login_from(&app, &user.email, &owner_install).await;
    let t0 = pair["refresh_token"].as_str().unwrap().to_owned();

    // The owner refreshes once, gets and keeps T1, then the app sits idle.
    let r = refresh_from(&app, &t0, Some(&owner_install)).await;
    assert_eq!(r.status(), 200);
    let t1 = r.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.clock.advance(Duration::days(20));

    // The thief, from another install, with the stale T0.
    let thief_install = uuid::Uuid::new_v4().to_string();
    let r = refresh_from(&app, &t0, Some(&thief_install)).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let got_live = body["refresh_token"].as_str() == Some(t1.as_str());
    let access_works = match body["access_token"].as_str() {
        Some(a) => app.get_auth("/v1/sessions", a).await.status() == 200,
        None => false,
    };
    assert!(
        !got_live && !access_works,
        "a stale T0 from another install, 20 days later, got status {status}, \
         the owner's live refresh token: {got_live}, a working access token: {access_works}"
    );
}

/// Finding R2. A retired token of the session that changes the password
/// (the kept session) still yields that session's live token afterwards:
/// the change clears the sealed successors of the sessions it ends, not of
/// the one it keeps.
#[tokio::test]
async fn a_retired_token_of_the_kept_session_dies_with_a_password_change() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let t0 = user.refresh_token().to_owned();
    let r = app.refresh(&t0).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let t1 = v["refresh_token"].as_str().unwrap().to_owned();
    let access = v["access_token"].as_str().unwrap().to_owned();
    let r = app
        .post_auth(
            "/v1/auth/password/change",
            &access,
            Some(&json!({"current_password": STRONG_PASSWORD,
                         "new_password": "a-brand-new-passphrase-77"})),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    app.clock.advance(Duration::days(3));
    let r = app.refresh(&t0).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_ne!(
        body["refresh_token"].as_str(),
        Some(t1.as_str()),
        "after the password change, the pre-change retired token T0 still \
         yields the live token (status {status})"
    );
}

/// Finding D1. A session that simply expires (idle lifetime) is a session
/// end too, but its push registration stays: nothing deletes it (the
/// sweeper clears sealed successors only).
#[tokio::test]
async fn an_expired_sessions_push_registration_is_removed() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let r = app
        .post_auth(
            "/v1/devices",
            user.access(),
            Some(&json!({"platform": "ios", "push_token": "apns-expiring", "name": "Phone"})),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.clock.advance(Duration::days(30) + Duration::seconds(1));
    mobile_backend::sessions::successor::clear_expired(&app.db, app.clock.now())
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        rows, 0,
        "the registration of a session that expired 30 days ago still receives this account's pushes"
    );
}

/// Finding R1 (lifetime). The owner refreshed once and abandoned the phone
/// (or uninstalled the app without signing out). A holder of the retired
/// T0 keeps "retrying" it: each retry slides the session's idle expiry, so
/// the session outlives the 30-day idle lifetime the owner's own inactivity
/// would have ended it at, up to the 90-day absolute one. The retry path
/// is meant to deliver a lost answer, not to keep a session alive.
#[tokio::test]
async fn retrying_a_retired_token_does_not_keep_an_abandoned_session_alive() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let t0 = user.refresh_token().to_owned();
    assert_eq!(app.refresh(&t0).await.status(), 200); // owner: T0 -> T1, then gone
    let mut alive_after_day_30 = false;
    for day in [25, 50, 75] {
        app.clock.advance(Duration::days(25));
        let r = app.refresh(&t0).await;
        if r.status() == 200 && day > 30 {
            alive_after_day_30 = true;
        }
    }
    assert!(
        !alive_after_day_30,
        "the owner last acted on day 0, yet retries of the retired T0 still \
         got working tokens on day 50 and 75"
    );
}

/// Finding R2 (step-up). The owner refreshes (T0 -> T1) and, with T1's
/// access token, turns on TOTP: the session becomes aal2 with a fresh
/// auth_time. A stale copy of T0 (taken before MFA existed) still retries
/// into that session and gets what the second factor protects (here the
/// full data export, `Aal2`).
#[tokio::test]
async fn a_retired_token_from_before_mfa_does_not_retry_into_the_stepped_up_session() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let t0 = user.refresh_token().to_owned();
    let r = app.refresh(&t0).await;
    assert_eq!(r.status(), 200);
    let owner = crate::helpers::TestUser {
        email: user.email.clone(),
        password: user.password.clone(),
        user_id: user.user_id,
        tokens: r.json().await.unwrap(),
    };
    app.enable_totp(&owner).await;
    // Minutes later (past the old 10-second grace, within T1's access
    // token lifetime, so the owner has not refreshed yet): the thief.
    app.clock.advance(Duration::minutes(5));
    let r = app.refresh(&t0).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let export = match body["access_token"].as_str() {
        Some(a) => app.get_auth("/v1/me/export", a).await.status().as_u16(),
        None => 0,
    };
    assert_ne!(
        export, 200,
        "a refresh token retired before MFA was turned on (retry status {status}) \
         reached the aal2-only export"
    );
}

/// The phone that lost the answer asks again from the same install, days
/// later: it gets the successor. The same request from another install
/// (a copied token) is reuse: refused, and the session ends, so the
/// successor dies too.
#[tokio::test]
async fn the_same_install_gets_its_lost_answer_and_another_install_ends_the_session() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let install = uuid::Uuid::new_v4().to_string();
    let pair = login_from(&app, &user.email, &install).await;
    let t0 = pair["refresh_token"].as_str().unwrap().to_owned();
    let r = refresh_from(&app, &t0, Some(&install)).await;
    assert_eq!(r.status(), 200);
    let t1 = r.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    app.clock.advance(Duration::days(3));
    let r = refresh_from(&app, &t0, Some(&install)).await;
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["refresh_token"].as_str(), Some(t1.as_str()));

    // A copy without the install id, or with another one: reuse.
    let r = refresh_from(&app, &t0, None).await;
    assert_eq!(r.status(), 401);
    let r = refresh_from(&app, &t1, Some(&install)).await;
    assert_eq!(r.status(), 401, "the session ended with the reuse");
}
