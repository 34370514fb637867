//! Security notices: the owner is emailed about a sign-in from a new
//! device and about every change to how they sign in.

use crate::helpers::{CapturedMail, TestApp};
use serde_json::json;

fn notices_to<'a>(mails: &'a [CapturedMail], to: &str) -> Vec<&'a CapturedMail> {
    mails
        .iter()
        .filter(|m| m.to == to && m.subject.starts_with("Security notice"))
        .collect()
}

#[tokio::test]
async fn a_sign_in_from_a_new_device_is_mailed_but_a_known_device_is_not() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let device = |name: &str| json!({"email": user.email, "password": user.password, "device": {"name": name, "platform": "android", "model": "Pixel 9"}});
    assert_eq!(
        app.post_json("/v1/auth/login", &device("Ada's Pixel"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_json("/v1/auth/login", &device("Ada's Pixel"))
            .await
            .status(),
        200
    );
    let mails = app.drain_outbox().await;
    let notices = notices_to(&mails, &user.email);
    assert_eq!(
        notices.len(),
        1,
        "only the first sign-in from the new device"
    );
    assert!(notices[0].subject.contains("New sign-in"));
    assert!(notices[0].text.contains("Ada's Pixel"));
    assert!(
        notices[0].text.contains("2026-03-01 12:00 UTC"),
        "approximate time: {}",
        notices[0].text
    );
    assert!(notices[0].text.contains("If it was not you"));
}

#[tokio::test]
async fn password_change_and_reset_and_mfa_changes_are_each_mailed_to_the_owner() {
    let app = TestApp::spawn().await;
    let mut user = app.signed_up_user("ada@example.com").await;
    let r = app
        .post_auth("/v1/auth/password/change", user.access(), Some(&json!({"current_password": user.password, "new_password": "a-fresh-long-passphrase-8"})))
        .await;
    assert_eq!(r.status(), 204);
    user.password = "a-fresh-long-passphrase-8".into();

    let secret = app.totp_setup(&user).await;
    let code = |app: &TestApp| {
        mobile_backend::mfa::totp::code_at(&secret, app.clock.now().timestamp() as u64, 6).unwrap()
    };
    assert_eq!(
        app.post_auth(
            "/v1/mfa/totp/confirm",
            user.access(),
            Some(&json!({"code": code(&app)}))
        )
        .await
        .status(),
        200
    );
    app.clock.advance(chrono::Duration::seconds(30));
    let r = app
        .post_auth(
            "/v1/mfa/totp/disable",
            user.access(),
            Some(&json!({"current_password": "a-fresh-long-passphrase-8", "code": code(&app)})),
        )
        .await;
    assert_eq!(r.status(), 204);

    app.post_json("/v1/auth/password/forgot", &json!({"email": user.email}))
        .await;
    let reset = app.code_for(&user.email).await;
    let r = app
        .post_json("/v1/auth/password/reset", &json!({"email": user.email, "code": reset, "new_password": "yet-another-passphrase-31"}))
        .await;
    assert_eq!(r.status(), 204);

    let mails = app.drain_outbox().await;
    let subjects: Vec<&str> = notices_to(&mails, &user.email)
        .iter()
        .map(|m| m.subject.as_str())
        .collect();
    for expected in [
        "Security notice: Password changed",
        "Security notice: Two-factor authentication turned on",
        "Security notice: Two-factor authentication turned off",
        "Security notice: Password reset",
    ] {
        assert!(
            subjects.contains(&expected),
            "{expected} missing from {subjects:?}"
        );
    }
}
