//! No secret reaches the logs: a full scenario (register, verify, login,
//! MFA enrolment and sign-in, refresh, recovery code, password reset) runs
//! with every target logged at TRACE into a buffer, and the buffer is
//! searched for every password, token, code, secret and email the scenario
//! handled.
//!
//! A separate test binary because the tracing subscriber is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use helpers::{TestApp, STRONG_PASSWORD};
use serde_json::{json, Value};
use std::{
    io::Write,
    sync::{Arc, Mutex},
};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_full_scenario_logged_at_trace_leaks_no_secret() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let app = TestApp::spawn().await;
    let email = "private.person@example.com";
    let user = app.signed_up_user(email).await;
    let mut secrets: Vec<String> = vec![
        email.to_owned(),
        STRONG_PASSWORD.to_owned(),
        user.access().to_owned(),
        user.refresh_token().to_owned(),
    ];
    let verification = app
        .mailbox()
        .iter()
        .find(|m| m.subject.contains("verification"))
        .unwrap()
        .text
        .clone();
    secrets.push(
        verification
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 6)
            .unwrap()
            .to_owned(),
    );

    let refreshed: Value = app
        .refresh(user.refresh_token())
        .await
        .json()
        .await
        .unwrap();
    secrets.push(refreshed["refresh_token"].as_str().unwrap().to_owned());
    let access = refreshed["access_token"].as_str().unwrap().to_owned();
    secrets.push(access.clone());

    let setup: Value = app
        .post_auth(
            "/v1/mfa/totp/setup",
            &access,
            Some(&json!({"current_password": STRONG_PASSWORD})),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret_b32 = setup["secret"].as_str().unwrap().to_owned();
    let secret = totp_rs::Secret::try_from_base32(&secret_b32)
        .unwrap()
        .as_ref()
        .to_vec();
    let code = |app: &TestApp| {
        mobile_backend::mfa::totp::code_at(&secret, app.clock.now().timestamp() as u64, 6).unwrap()
    };
    let c1 = code(&app);
    let confirmed: Value = app
        .post_auth("/v1/mfa/totp/confirm", &access, Some(&json!({"code": c1})))
        .await
        .json()
        .await
        .unwrap();
    let recovery: Vec<String> =
        serde_json::from_value(confirmed["recovery_codes"].clone()).unwrap();
    secrets.push(secret_b32);
    secrets.push(setup["otpauth_uri"].as_str().unwrap().to_owned());
    secrets.extend(recovery.iter().cloned());

    app.clock.advance(chrono::Duration::seconds(30));
    let login: Value = app
        .login(email, STRONG_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let mfa_token = login["mfa_token"].as_str().unwrap().to_owned();
    let c2 = code(&app);
    let pair: Value = app
        .post_json("/v1/auth/mfa", &json!({"mfa_token": mfa_token, "code": c2}))
        .await
        .json()
        .await
        .unwrap();
    secrets.push(mfa_token);
    secrets.push(pair["access_token"].as_str().unwrap().to_owned());
    secrets.push(pair["refresh_token"].as_str().unwrap().to_owned());
    let login: Value = app
        .login(email, STRONG_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let r = app
        .post_json(
            "/v1/auth/mfa",
            &json!({"mfa_token": login["mfa_token"], "recovery_code": recovery[0]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    secrets.push(login["mfa_token"].as_str().unwrap().to_owned());

    // Profile PII and an email change are logged without their values.
    let me_token = pair["access_token"].as_str().unwrap().to_owned();
    let profile = json!({
        "display_name": "Private Person",
        "phone": "+447700900555",
        "date_of_birth": "1981-03-04",
        "address": {"line1": "7 Hidden Lane", "city": "Secretville", "postal_code": "SV1 1SV", "country": "GB"}
    });
    let r = app
        .send_auth(reqwest::Method::PATCH, "/v1/me", &me_token, Some(&profile))
        .await;
    assert_eq!(r.status(), 200);
    secrets.extend(
        [
            "Private Person",
            "+447700900555",
            "1981-03-04",
            "7 Hidden Lane",
            "Secretville",
        ]
        .map(str::to_owned),
    );
    app.post_auth(
        "/v1/me/email",
        &me_token,
        Some(
            &json!({"new_email": "next.private@example.com", "current_password": STRONG_PASSWORD}),
        ),
    )
    .await;
    secrets.push("next.private@example.com".to_owned());
    // A tampered ciphertext is logged as such, without the value.
    sqlx::query("UPDATE users SET phone_ciphertext = display_name_ciphertext")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(app.get_auth("/v1/me", &me_token).await.status(), 500);
    app.post_json("/v1/auth/password/forgot", &json!({"email": email}))
        .await;
    let reset = app.code_for(email).await;
    let new_password = "a-new-secret-passphrase-55";
    let r = app
        .post_json(
            "/v1/auth/password/reset",
            &json!({"email": email, "code": reset, "new_password": new_password}),
        )
        .await;
    assert_eq!(r.status(), 204);
    secrets.push(reset);
    secrets.push(new_password.to_owned());
    // A failed login with a wrong password is logged too.
    app.login(email, "wrong-password-typed-here").await;
    secrets.push("wrong-password-typed-here".to_owned());
    app.drain_outbox().await;

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("crypt_decrypt_fail"),
        "the decryption failure is logged for alerting"
    );
    assert!(
        logs.len() > 10_000,
        "TRACE logging captured the scenario ({} bytes)",
        logs.len()
    );
    assert!(
        logs.contains("request finished"),
        "the request log lines are there"
    );
    for secret in &secrets {
        // 6-digit codes: match whole numbers only (timestamps are full of digits).
        let leaked = if secret.len() == 6 && secret.bytes().all(|b| b.is_ascii_digit()) {
            logs.split(|c: char| !c.is_ascii_digit())
                .any(|run| run == secret)
        } else {
            logs.contains(secret.as_str())
        };
        assert!(
            !leaked,
            "a secret reached the logs: {}…",
            &secret[..secret.len().min(6)]
        );
    }
    for code in [c1, c2] {
        assert!(
            !logs
                .split(|c: char| !c.is_ascii_digit())
                .any(|run| run == code),
            "a TOTP code was logged"
        );
    }
}
