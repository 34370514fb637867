//! Key lifecycle (#17): the blind-index and code keys are rings. An address
//! indexed under an older key is still found and still taken; `keys
//! reindex` moves every index to the current key, after which a process
//! holding only the new key finds every account and one holding only the
//! old key finds none; codes issued under an older code key keep working
//! until used, and `keys status` says when an old key may go. Rotations
//! are "restarts": a second app on the same database with the new ring.

use crate::helpers::{code, next_step, problem, TestApp, TestUser, STRONG_PASSWORD};
use mobile_backend::keys::RingName;
use serde_json::{json, Value};

/// `ring`'s spec with a fresh key first (what `keys rotate` prints).
fn rotated(which: RingName, ring: &mobile_backend::crypto::MacKeyRing) -> String {
    which.rotate(ring.key_ring()).unwrap().to_spec()
}

/// Moves `app`'s clock to the real time: `keys status` runs with the
/// system clock, and counts only what is live by it.
fn to_real_time(app: &TestApp) {
    let behind = chrono::Utc::now() - app.clock.now();
    if behind > chrono::Duration::zero() {
        app.clock.advance(behind);
    }
}

/// The first (current) entry of a ring spec alone.
fn current_only(spec: &str) -> String {
    spec.split(',').next().unwrap().to_owned()
}

/// Another app on `app`'s database with `var` set to `spec`; its clock is
/// moved to `app`'s time.
async fn restarted(app: &TestApp, var: &str, spec: &str) -> TestApp {
    let other = TestApp::builder()
        .same_database_as(app)
        .env(var, spec)
        .spawn()
        .await;
    other.clock.advance(app.clock.now() - other.clock.now());
    other
}

async fn users_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn events(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn key_ids(app: &TestApp, sql: &str) -> Vec<i16> {
    sqlx::query_scalar(sql).fetch_all(&app.db).await.unwrap()
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn an_address_indexed_under_an_older_key_is_still_taken_and_still_signs_in() {
    let app = TestApp::spawn().await;
    // Before the rotation: Cy asks to move to an address that is still free.
    let cy = app.signed_up_user("cy@example.com").await;
    let r = app
        .post_auth(
            "/v1/me/email",
            cy.access(),
            Some(&json!({"new_email": "ada@example.com", "current_password": cy.password})),
        )
        .await;
    assert_eq!(r.status(), 202);
    let cy_code = app.code_for("ada@example.com").await;
    // Then Ada registers that address, under key 1.
    let ada = app.signed_up_user("ada@example.com").await;
    assert_eq!(
        app.register("una@example.com", STRONG_PASSWORD)
            .await
            .status(),
        202
    );
    let ring = rotated(RingName::BlindIndex, app.state.keys.blind_index.ring());
    // Key 2 is current, key 1 is still in the ring, nothing reindexed.
    let app2 = restarted(&app, "BLIND_INDEX_KEYS", &ring).await;
    assert_eq!(app2.state.keys.blind_index.ring().ids(), vec![2, 1]);

    // Registering the verified address again: the same answer as for a
    // free address, no second account, and the owner is told.
    let r = app2
        .register("ada@example.com", "a-second-registrant-passphrase-9")
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(users_count(&app).await, 3);
    assert_eq!(events(&app, "auth.account.registration_duplicate").await, 1);
    assert!(app2
        .drain_outbox()
        .await
        .iter()
        .any(|m| m.to == "ada@example.com"));
    // The unverified one is replaced, as before, not duplicated.
    let r = app2
        .register("UNA@example.com", "a-newer-registrant-passphrase-4")
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(users_count(&app).await, 3);
    assert_eq!(events(&app, "auth.account.registration_replaced").await, 1);
    // Cy's confirmation finds the address taken under key 1.
    let r = app2
        .post_auth(
            "/v1/me/email/confirm",
            cy.access(),
            Some(&json!({"code": cy_code})),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "email_unavailable");
    // So does `admin create`.
    let out = app
        .run_cli_with(
            &["admin", "create", "--email", "ada@example.com"],
            &[("BLIND_INDEX_KEYS", ring.as_str())],
            Some("a-long-and-unusual-admin-passphrase\n"),
        )
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(users_count(&app).await, 3);

    // Sign-in finds the account under the old key.
    assert_eq!(app2.login(&ada.email, &ada.password).await.status(), 200);
    let r = app2
        .login(&ada.email, "a-second-registrant-passphrase-9")
        .await;
    assert_eq!(problem(r).await["code"], "invalid_credentials");

    // New accounts are indexed under the current key, and cannot take the
    // old-key address by an email change either.
    let new = app2.signed_up_user("new@example.com").await;
    let ids = key_ids(
        &app,
        "SELECT email_blind_index_key_id FROM users ORDER BY user_id",
    )
    .await;
    assert_eq!(ids, vec![1, 1, 1, 2]);
    let r = app2
        .post_auth(
            "/v1/me/email",
            new.access(),
            Some(&json!({"new_email": "ada@example.com", "current_password": new.password})),
        )
        .await;
    assert_eq!(r.status(), 202);
    app2.state.deferred.idle().await;
    let pending: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT pending_email_ciphertext FROM users WHERE user_id = $1")
            .bind(new.user_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(pending.is_none(), "the address is taken: no change starts");
}

#[tokio::test]
async fn reindex_moves_every_index_to_the_new_key_and_then_the_old_key_finds_nothing() {
    let app = TestApp::spawn().await;
    to_real_time(&app);
    let mut users: Vec<TestUser> = Vec::new();
    for i in 0..3 {
        users.push(app.signed_up_user(&format!("rk{i}@example.com")).await);
    }
    // A push token, a pending email change and a session bound to an
    // install id: every kind of blind index.
    let r = app
        .post_auth(
            "/v1/devices",
            users[0].access(),
            Some(&json!({"platform": "ios", "push_token": "apns-rotation-0001"})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let device: Value = r.json().await.unwrap();
    let r = app
        .post_auth(
            "/v1/me/email",
            users[1].access(),
            Some(&json!({"new_email": "moved@example.com", "current_password": STRONG_PASSWORD})),
        )
        .await;
    assert_eq!(r.status(), 202);
    app.state.deferred.idle().await;
    let install = uuid::Uuid::new_v4().to_string();
    let bound: Value = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("x-app-install-id", &install)
        .json(&json!({"email": users[2].email, "password": STRONG_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let out = app
        .run_cli(&["keys", "rotate", "--ring", "blind-index"], None, None)
        .await;
    let printed = stdout_of(&out);
    let values: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("BLIND_INDEX_KEYS="))
        .collect();
    let old_ring = app.state.keys.blind_index.ring().to_spec();
    // First the new key known but unused, then current.
    assert_eq!(values.len(), 2, "{printed}");
    assert!(
        values[0].starts_with(&format!("{old_ring},2:")),
        "{printed}"
    );
    let new_ring = values[1].to_owned();
    assert!(new_ring.starts_with("2:") && new_ring.ends_with(&format!(",{old_ring}")));
    assert_eq!(
        values[0].rsplit(',').next().unwrap(),
        new_ring.split(',').next().unwrap()
    );
    let with_new = [("BLIND_INDEX_KEYS", new_ring.as_str())];

    let status = stdout_of(&app.run_cli_with(&["keys", "status"], &with_new, None).await);
    for line in [
        "users.email: index key 1: 3 rows (older, still found: run `keys reindex`)",
        "users.pending_email: index key 1: 1 rows",
        "devices.push_token: index key 1: 1 rows",
        "sessions.install_id: index key 1: 1 live sessions (cannot be reindexed",
        "index key 1: still used by 6 rows or sessions; keep it",
    ] {
        assert!(status.contains(line), "{line} not in:\n{status}");
    }

    // Without the old key, nothing under it is found: status says so.
    let new_only = current_only(&new_ring);
    let without_old = [("BLIND_INDEX_KEYS", new_only.as_str())];
    let status = stdout_of(
        &app.run_cli_with(&["keys", "status"], &without_old, None)
            .await,
    );
    assert!(
        status.contains(
            "users.email: index key 1: 3 rows (key not in BLIND_INDEX_KEYS: these are NOT FOUND by lookups; run `keys reindex`)"
        ),
        "{status}"
    );
    // Reindexing needs only the current key (values are decrypted, not
    // old indexes read).
    let out = app
        .run_cli_with(
            &["keys", "reindex", "--batch-size", "2"],
            &without_old,
            None,
        )
        .await;
    let progress = stdout_of(&out);
    assert!(
        progress.contains("users.email: reindexed 2 under index key 2; 1 remaining")
            && progress.contains("users.email: reindexed 3 under index key 2; 0 remaining")
            && progress.contains("users.pending_email: reindexed 1 under index key 2; 0 remaining")
            && progress.contains("devices.push_token: reindexed 1 under index key 2; 0 remaining"),
        "{progress}"
    );
    for sql in [
        "SELECT DISTINCT email_blind_index_key_id FROM users",
        "SELECT DISTINCT pending_email_blind_index_key_id FROM users WHERE pending_email_blind_index IS NOT NULL",
        "SELECT DISTINCT push_token_index_key_id FROM devices",
    ] {
        assert_eq!(key_ids(&app, sql).await, vec![2], "{sql}");
    }
    // The index is exactly what the new key computes.
    let ring = mobile_backend::crypto::BlindIndexKeys::parse(&new_ring).unwrap();
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT email_blind_index FROM users WHERE user_id = $1")
            .bind(users[0].user_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        stored,
        ring.compute("users.email", "rk0@example.com")
            .value
            .to_vec()
    );
    // Resumable: a second run finds nothing to do.
    let again = stdout_of(
        &app.run_cli_with(&["keys", "reindex"], &with_new, None)
            .await,
    );
    assert!(
        again.contains("users.email: reindexed 0 under index key 2; 0 remaining"),
        "{again}"
    );
    let status = stdout_of(&app.run_cli_with(&["keys", "status"], &with_new, None).await);
    assert!(
        status.contains("users.email: index key 2: 3 rows (current)")
            && status.contains("sessions.install_id: index key 1: 1 live sessions")
            && status.contains("index key 1: still used by 1 rows or sessions; keep it"),
        "{status}"
    );

    // While key 1 is in the ring, the session bound under it is still
    // checked: the same install is quiet, another one is flagged.
    let drift = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM security_alerts WHERE rule = 'device_drift'",
        )
        .fetch_one(&app.db)
        .await
        .unwrap()
    };
    let rotated_app = restarted(&app, "BLIND_INDEX_KEYS", &new_ring).await;
    let refresh_as = |app: &TestApp, token: Value, install: String| {
        let client = app.client.clone();
        let url = app.url("/v1/auth/refresh");
        async move {
            let r = client
                .post(url)
                .header("x-app-install-id", install)
                .json(&json!({"refresh_token": token}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()["refresh_token"].clone()
        }
    };
    let token = refresh_as(
        &rotated_app,
        bound["refresh_token"].clone(),
        install.clone(),
    )
    .await;
    assert_eq!(drift().await, 0);
    let token = refresh_as(&rotated_app, token, uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(drift().await, 1);

    // The old key leaves the ring: a process holding only the new key
    // finds every account, device and pending change.
    let fresh = restarted(&app, "BLIND_INDEX_KEYS", &new_only).await;
    for user in &users {
        assert_eq!(
            fresh.login(&user.email, &user.password).await.status(),
            200,
            "{}",
            user.email
        );
    }
    let r = fresh
        .post_auth(
            "/v1/devices",
            users[0].access(),
            Some(&json!({"platform": "ios", "push_token": "apns-rotation-0001"})),
        )
        .await;
    assert_eq!(
        r.status(),
        200,
        "the same token: a refresh, not a new device"
    );
    assert_eq!(r.json::<Value>().await.unwrap()["id"], device["id"]);
    let code = app.code_for("moved@example.com").await;
    let r = fresh
        .post_auth(
            "/v1/me/email/confirm",
            users[1].access(),
            Some(&json!({"code": code})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        fresh
            .login("moved@example.com", STRONG_PASSWORD)
            .await
            .status(),
        200
    );
    // The session bound under the old key: its install id can no longer be
    // compared, so refreshing, even from another install, neither fails
    // nor raises a drift alert.
    refresh_as(&fresh, token, uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(drift().await, 1);

    // A process still holding only the old key finds nobody.
    let stale = restarted(&app, "BLIND_INDEX_KEYS", &old_ring).await;
    for email in ["rk0@example.com", "rk2@example.com", "moved@example.com"] {
        let r = stale.login(email, STRONG_PASSWORD).await;
        assert_eq!(problem(r).await["code"], "invalid_credentials", "{email}");
    }
}

#[tokio::test]
async fn codes_issued_under_an_older_code_key_keep_working_and_then_the_key_can_go() {
    let app = TestApp::spawn().await;
    to_real_time(&app);
    let user = app.signed_up_user("ada@example.com").await;
    let secret = app.totp_setup(&user).await;
    let r = app
        .post_auth(
            "/v1/mfa/totp/confirm",
            user.access(),
            Some(&json!({"code": code(&app, &secret)})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let recovery: Vec<String> =
        serde_json::from_value(r.json::<Value>().await.unwrap()["recovery_codes"].clone()).unwrap();
    assert_eq!(
        app.post_json("/v1/auth/password/forgot", &json!({"email": user.email}))
            .await
            .status(),
        202
    );
    let reset_code = app.code_for(&user.email).await;

    // Rotate: key 2 first, key 1 kept.
    let ring = rotated(RingName::Codes, app.state.keys.codes.ring());
    let with_new = [("CODE_HMAC_KEYS", ring.as_str())];
    let status = stdout_of(&app.run_cli_with(&["keys", "status"], &with_new, None).await);
    for line in [
        "email_codes: code key 1: 1 live codes (older, still verified under it; the last expires by",
        "recovery_codes: code key 1: 10 unused codes (older, still verified under it)",
        "code key 1: 11 usable codes still under it; keep it",
    ] {
        assert!(status.contains(line), "{line} not in:\n{status}");
    }
    let app2 = restarted(&app, "CODE_HMAC_KEYS", &ring).await;

    // The email code mailed before the rotation still verifies.
    let new_password = "a-brand-new-passphrase-77";
    let r = app2
        .post_json(
            "/v1/auth/password/reset",
            &json!({"email": user.email, "code": reset_code, "new_password": new_password}),
        )
        .await;
    assert_eq!(r.status(), 204);
    // A recovery code printed before the rotation completes a sign-in.
    let body: Value = app2
        .login(&user.email, new_password)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["mfa_required"], true);
    let r = app2
        .post_json(
            "/v1/auth/mfa",
            &json!({"mfa_token": body["mfa_token"], "recovery_code": recovery[0]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let aal2: Value = r.json().await.unwrap();

    // What is issued now uses the new key.
    next_step(&app2);
    let r = app2
        .post_auth(
            "/v1/mfa/recovery-codes",
            aal2["access_token"].as_str().unwrap(),
            Some(&json!({"code": code(&app2, &secret)})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let fresh_codes: Vec<String> =
        serde_json::from_value(r.json::<Value>().await.unwrap()["recovery_codes"].clone()).unwrap();
    assert_eq!(
        key_ids(&app, "SELECT DISTINCT code_hash_key_id FROM recovery_codes").await,
        vec![2]
    );
    let status = stdout_of(&app.run_cli_with(&["keys", "status"], &with_new, None).await);
    assert!(
        status.contains("code key 1: no usable code left under it; it may leave CODE_HMAC_KEYS"),
        "{status}"
    );

    // The old key leaves: nothing breaks.
    let app3 = restarted(&app, "CODE_HMAC_KEYS", &current_only(&ring)).await;
    let body: Value = app3
        .login(&user.email, new_password)
        .await
        .json()
        .await
        .unwrap();
    let r = app3
        .post_json(
            "/v1/auth/mfa",
            &json!({"mfa_token": body["mfa_token"], "recovery_code": fresh_codes[0]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app3.post_json("/v1/auth/password/forgot", &json!({"email": user.email}))
            .await
            .status(),
        202
    );
    let reset_code = app3.code_for(&user.email).await;
    let r = app3
        .post_json(
            "/v1/auth/password/reset",
            &json!({"email": user.email, "code": reset_code, "new_password": STRONG_PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        key_ids(
            &app,
            "SELECT code_hash_key_id FROM email_codes ORDER BY email_code_id DESC LIMIT 1"
        )
        .await,
        vec![2]
    );
}

#[tokio::test]
async fn two_processes_mid_rotation_registering_one_address_at_once_make_one_account() {
    // The second step of a rotation, mid-restart: one process still on the
    // staged ring (key 1 current, key 2 known), one already on 2,1. Their
    // indexes of a new address differ, so the unique index alone cannot
    // tell the two claims apart; the address lock and the lookup under
    // every key must.
    let first = TestApp::spawn().await;
    let ring = rotated(RingName::BlindIndex, first.state.keys.blind_index.ring());
    let (new_key, old_key) = ring.split_once(',').unwrap();
    let old = restarted(&first, "BLIND_INDEX_KEYS", &format!("{old_key},{new_key}")).await;
    assert_eq!(old.state.keys.blind_index.ring().ids(), vec![1, 2]);
    let new = restarted(&first, "BLIND_INDEX_KEYS", &ring).await;
    for i in 0..8 {
        let email = format!("race{i}@example.com");
        let (a, b) = tokio::join!(
            old.register(&email, STRONG_PASSWORD),
            new.register(&email, STRONG_PASSWORD)
        );
        assert_eq!((a.status().as_u16(), b.status().as_u16()), (202, 202));
        let lookup = mobile_backend::accounts::email::Email::parse(&email, "email")
            .unwrap()
            .lookup(&new.state.keys);
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM users WHERE email_blind_index = ANY($1)")
                .bind(&lookup)
                .fetch_one(&old.db)
                .await
                .unwrap();
        assert_eq!(n, 1, "{email}");
    }
}
