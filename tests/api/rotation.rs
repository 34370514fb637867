//! Master-key rotation that cannot lose data (#17): `keys rewrap` finds
//! what to re-seal by the key id in each value's authenticated header (an
//! edited `master_key_id` column hides nothing), passes over a value that
//! does not open (reports it, finishes the rest, exits non-zero), and
//! re-seals mail waiting in the outbox, so that once it says "done" the
//! old master key can leave and nothing is lost: not a user, not a reset
//! code. Each "old key gone" is a restart: a second app on the same
//! database with the new key alone.

use crate::helpers::{TestApp, STRONG_PASSWORD};
use serde_json::json;

/// The ring with a fresh master key first (what `keys rotate` prints),
/// and that new key alone.
fn rotated(app: &TestApp) -> (String, String) {
    let ring = mobile_backend::keys::rotated(&app.state.keys.data).unwrap();
    let spec = ring.to_spec();
    let alone = spec.split(',').next().unwrap().to_owned();
    (spec, alone)
}

async fn header_key_id(app: &TestApp, user_id: uuid::Uuid) -> u32 {
    let wrapped: Vec<u8> =
        sqlx::query_scalar("SELECT wrapped_key FROM user_keys WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    mobile_backend::crypto::aead::key_id_of(&wrapped).unwrap()
}

#[tokio::test]
async fn an_edited_master_key_id_column_cannot_hide_a_user_key_from_the_rewrap() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("edited@example.com").await;
    let old_id = app.state.keys.data.primary_id();
    let (spec, alone) = rotated(&app);
    let new_id = old_id + 1;
    // The plain column claims the row is already under the new key; the
    // wrapped value says otherwise.
    sqlx::query("UPDATE user_keys SET master_key_id = $2 WHERE user_id = $1")
        .bind(user.user_id)
        .bind(i64::from(new_id))
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(header_key_id(&app, user.user_id).await, old_id);

    let rewrap = app.run_cli(&["keys", "rewrap"], Some(&spec), None).await;
    let out = String::from_utf8_lossy(&rewrap.stdout);
    assert!(
        rewrap.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&rewrap.stderr)
    );
    assert!(out.contains("user keys: 1 re-sealed"), "{out}");
    assert!(
        out.contains("older master keys can leave DATA_KEYS"),
        "{out}"
    );
    assert_eq!(header_key_id(&app, user.user_id).await, new_id);

    // The old key leaves: a restart with the new key alone.
    let after = TestApp::builder()
        .same_database_as(&app)
        .env("DATA_KEYS", &alone)
        .spawn()
        .await;
    let login = after.login(&user.email, STRONG_PASSWORD).await;
    assert_eq!(login.status(), 200);
    let tokens: serde_json::Value = login.json().await.unwrap();
    let me = after
        .get_auth("/v1/me", tokens["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["email"], user.email);
}

#[tokio::test]
async fn a_user_key_that_does_not_unwrap_is_reported_and_skipped_and_the_others_are_rewrapped() {
    let app = TestApp::spawn().await;
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(app.signed_up_user(&format!("corrupt{i}@example.com")).await);
    }
    let old_id = app.state.keys.data.primary_id();
    let (spec, _) = rotated(&app);
    // Flip the last byte of the second user's wrapped key (its tag); the
    // header still names the old key.
    let victim = users[1].user_id;
    sqlx::query(
        "UPDATE user_keys SET wrapped_key = overlay(wrapped_key PLACING \
         decode(lpad(to_hex(get_byte(wrapped_key, length(wrapped_key) - 1) # 1), 2, '0'), 'hex') \
         FROM length(wrapped_key)) WHERE user_id = $1",
    )
    .bind(victim)
    .execute(&app.db)
    .await
    .unwrap();

    // Batches of one: the bad row must not stop the batches after it.
    let rewrap = app
        .run_cli(&["keys", "rewrap", "--batch", "1"], Some(&spec), None)
        .await;
    let out = String::from_utf8_lossy(&rewrap.stdout).into_owned();
    let err = String::from_utf8_lossy(&rewrap.stderr).into_owned();
    assert_eq!(rewrap.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains(&format!(
            "NOT REWRAPPED: user_keys row {victim}: decryption failed"
        )),
        "{err}"
    );
    assert!(err.contains("keep every older master key"), "{err}");
    assert!(!out.contains("can leave"), "{out}");
    assert!(out.contains("user keys: 3 re-sealed"), "{out}");
    for user in &users {
        let expected = if user.user_id == victim {
            old_id
        } else {
            old_id + 1
        };
        assert_eq!(header_key_id(&app, user.user_id).await, expected);
    }

    let status = app.run_cli(&["keys", "status"], Some(&spec), None).await;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("user keys that do not unwrap with DATA_KEYS: 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!("user {victim}: decryption failed")),
        "{text}"
    );
    assert!(
        text.contains(&format!("master key {old_id}: 1 user keys")),
        "{text}"
    );
    assert!(!text.contains("may leave DATA_KEYS"), "{text}");
}

#[tokio::test]
async fn a_reset_code_queued_before_a_rotation_arrives_and_works_after_the_old_key_has_left() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("queued@example.com").await;
    // The reset is asked of a process whose mail transport fails: the mail
    // waits in the outbox (retryable), sealed under the old master key.
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let failing = TestApp::builder()
        .same_database_as(&app)
        .env("MAIL_TRANSPORT", &format!("file:{}", mail_dir.display()))
        .spawn()
        .await;
    // Its mail folder becomes a plain file: every write fails (retryable).
    std::fs::remove_dir_all(&mail_dir).unwrap();
    std::fs::write(&mail_dir, b"not a folder").unwrap();
    assert_eq!(
        failing
            .post_json("/v1/auth/password/forgot", &json!({"email": user.email}))
            .await
            .status(),
        202
    );
    failing.state.deferred.idle().await;
    // Its sender, woken by the commit, tries and fails.
    let mut tried = false;
    for _ in 0..200 {
        let failed: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM mail_outbox WHERE status = 'pending' AND template = 'password_reset'",
        )
        .fetch_optional(&app.db)
        .await
        .unwrap()
        .flatten();
        if failed.as_deref() == Some("file_write_failed") {
            tried = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(tried, "the failing sender never tried");
    let old_id = app.state.keys.data.primary_id();
    let payload: Vec<u8> = sqlx::query_scalar(
        "SELECT payload FROM mail_outbox WHERE status = 'pending' AND template = 'password_reset'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        mobile_backend::crypto::aead::key_id_of(&payload).unwrap(),
        old_id
    );
    let (spec, alone) = rotated(&app);

    let status = app.run_cli(&["keys", "status"], Some(&spec), None).await;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "master key {old_id}: 1 mail waiting in the outbox"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("master key {old_id}: still seals")),
        "{text}"
    );

    let rewrap = app.run_cli(&["keys", "rewrap"], Some(&spec), None).await;
    let out = String::from_utf8_lossy(&rewrap.stdout).into_owned();
    assert!(rewrap.status.success(), "{out}");
    assert!(
        out.contains("mail waiting in the outbox: 1 re-sealed"),
        "{out}"
    );

    let after = TestApp::builder()
        .same_database_as(&app)
        .env("DATA_KEYS", &alone)
        .spawn()
        .await;
    // Past the failed attempt's back-off.
    after.clock.advance(chrono::Duration::minutes(1));
    let code = after.code_for(&user.email).await;
    let new_password = "a-brand-new-passphrase-77";
    let reset = after
        .post_json(
            "/v1/auth/password/reset",
            &json!({"email": user.email, "code": code, "new_password": new_password}),
        )
        .await;
    assert_eq!(reset.status(), 204);
    assert_eq!(after.login(&user.email, new_password).await.status(), 200);
}

#[tokio::test]
async fn a_lost_refresh_answer_retried_later_survives_a_rotation_and_the_old_keys_leaving() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("retry@example.com").await;
    let first = app.refresh(user.refresh_token()).await;
    assert_eq!(first.status(), 200);
    let first: serde_json::Value = first.json().await.unwrap();
    let (spec, alone) = rotated(&app);

    let rewrap = app.run_cli(&["keys", "rewrap"], Some(&spec), None).await;
    let out = String::from_utf8_lossy(&rewrap.stdout).into_owned();
    assert!(rewrap.status.success(), "{out}");
    assert!(
        out.contains("sealed refresh successors: 1 re-sealed"),
        "{out}"
    );

    let after = TestApp::builder()
        .same_database_as(&app)
        .env("DATA_KEYS", &alone)
        .spawn()
        .await;
    // The retry (a lost response) gets the same successor.
    let retry = after.refresh(user.refresh_token()).await;
    assert_eq!(retry.status(), 200);
    let retry: serde_json::Value = retry.json().await.unwrap();
    assert_eq!(retry["refresh_token"], first["refresh_token"]);
}
