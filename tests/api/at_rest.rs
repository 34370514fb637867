//! Data at rest and data exposure: known PII never appears in clear in any
//! table; a ciphertext moved between users does not open (and the API
//! answers with a problem, not a crash); master-key rotation re-wraps every
//! user key; and no response of a full scenario carries a hash, key or token.

use crate::helpers::{contains, dump_everything, TestApp, TestUser};
use reqwest::Method;
use serde_json::{json, Value};

const PII: &[&str] = &[
    "pii.person@example.com",
    "Ferdinand Quixotic",
    "+447700900777",
    "1977-07-07",
    "42 Wallaby Way",
    "Sydneyopolis",
    "QX9 9ZZ",
    "push-token-ferdinand-0001",
];

async fn person_with_everything(app: &TestApp) -> TestUser {
    let user = app.signed_up_user(PII[0]).await;
    let r = app
        .send_auth(
            Method::PATCH,
            "/v1/me",
            user.access(),
            Some(&json!({
                "display_name": PII[1],
                "phone": PII[2],
                "date_of_birth": PII[3],
                "address": {"line1": PII[4], "city": PII[5], "postal_code": PII[6], "country": "AU"}
            })),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post_auth(
            "/v1/devices",
            user.access(),
            Some(&json!({"platform": "ios", "push_token": PII[7]})),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.enable_totp(&user).await;
    user
}

#[tokio::test]
async fn a_raw_scan_of_every_table_finds_no_known_pii_in_clear() {
    let app = TestApp::spawn().await;
    let user = person_with_everything(&app).await;
    // A pending email change stores the new address too.
    let r = app
        .post_auth(
            "/v1/me/email",
            user.access(),
            Some(
                &json!({"new_email": "pii.pending@example.com", "current_password": user.password}),
            ),
        )
        .await;
    assert_eq!(r.status(), 202);
    let dump = dump_everything(&app).await;
    assert!(dump.len() >= 10);
    for value in PII
        .iter()
        .chain(&["pii.pending@example.com", "Wallaby", "Quixotic"])
    {
        let lower = value.to_ascii_lowercase();
        if let Some((table, _)) = dump.iter().find(|(_, v)| contains(v, lower.as_bytes())) {
            panic!("{value} is stored in clear (any case) in {table}");
        }
    }
    // The API still reads all of it back for the owner.
    let me: Value = app
        .get_auth("/v1/me", user.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["profile"]["address"]["line1"], PII[4]);
}

#[tokio::test]
async fn a_ciphertext_copied_into_another_users_row_does_not_open_and_the_api_answers_a_problem() {
    let app = TestApp::spawn().await;
    let alice = person_with_everything(&app).await;
    let bob = app.signed_up_user("bob@example.com").await;
    // The attacker with write access to the database copies Alice's sealed
    // phone into Bob's row, hoping Bob's view will decrypt it.
    sqlx::query(
        "UPDATE users SET phone_ciphertext = (SELECT phone_ciphertext FROM users WHERE user_id = $1) WHERE user_id = $2",
    )
    .bind(alice.user_id)
    .bind(bob.user_id)
    .execute(&app.db)
    .await
    .unwrap();
    let r = app.get_auth("/v1/me", bob.access()).await;
    assert_eq!(r.status(), 500);
    let body = crate::helpers::problem(r).await;
    assert_eq!(body["code"], "internal_error");
    assert!(!body.to_string().contains("7700900777"));
    // Counted for alerting, and the service is fine for everyone else.
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("crypto_open_failures_total"), "{metrics}");
    assert_eq!(app.get_auth("/v1/me", alice.access()).await.status(), 200);

    // Moving a whole wrapped key to another user fails the same way.
    sqlx::query(
        "UPDATE user_keys SET wrapped_key = (SELECT wrapped_key FROM user_keys WHERE user_id = $1) WHERE user_id = $2",
    )
    .bind(alice.user_id)
    .bind(bob.user_id)
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(app.get_auth("/v1/me", bob.access()).await.status(), 500);
}

#[tokio::test]
async fn keys_rotate_then_rewrap_moves_every_user_key_and_the_old_master_key_can_go() {
    let app = TestApp::spawn().await;
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(app.signed_up_user(&format!("rot{i}@example.com")).await);
    }
    let old_spec = app.state.keys.data.to_spec();
    let old_id = app.state.keys.data.primary_id();

    let rotated = app
        .run_cli(&["keys", "rotate"], Some(&old_spec), None)
        .await;
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let stdout = String::from_utf8(rotated.stdout).unwrap();
    // Two values: the new key known but unused, then current.
    let values: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("DATA_KEYS="))
        .collect();
    assert_eq!(values.len(), 2, "{stdout}");
    let staged = mobile_backend::crypto::KeyRing::parse(values[0]).unwrap();
    assert_eq!(staged.ids(), vec![old_id, old_id + 1]);
    let new_spec = values[1].to_owned();
    let ring = mobile_backend::crypto::KeyRing::parse(&new_spec).unwrap();
    assert_eq!(ring.ids(), vec![old_id + 1, old_id]);

    let status = app
        .run_cli(&["keys", "status"], Some(&new_spec), None)
        .await;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        text.contains(&format!("master key {old_id}: 5 user keys")),
        "{text}"
    );

    let rewrap = app
        .run_cli(&["keys", "rewrap", "--batch", "2"], Some(&new_spec), None)
        .await;
    assert!(
        rewrap.status.success(),
        "{}",
        String::from_utf8_lossy(&rewrap.stderr)
    );
    let progress = String::from_utf8_lossy(&rewrap.stdout).into_owned();
    assert!(progress.contains("user keys: 5 re-sealed"), "{progress}");
    assert!(progress.contains("0 remaining"), "{progress}");
    assert!(progress.lines().count() >= 3, "batches of 2: {progress}");

    let under_old: i64 =
        sqlx::query_scalar("SELECT count(*) FROM user_keys WHERE master_key_id = $1")
            .bind(i64::from(old_id))
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(under_old, 0);

    // With only the new master key, every user's email still opens.
    let new_only = new_spec.split(',').next().unwrap();
    let new_ring = mobile_backend::crypto::KeyRing::parse(new_only).unwrap();
    let mut conn = app.db.acquire().await.unwrap();
    for user in &users {
        let key = mobile_backend::user_keys::UserKey::load(&mut conn, &new_ring, user.user_id)
            .await
            .unwrap();
        let sealed: Vec<u8> =
            sqlx::query_scalar("SELECT email_ciphertext FROM users WHERE user_id = $1")
                .bind(user.user_id)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        let email = mobile_backend::profile::open_text(&key, "email", Some(&sealed))
            .unwrap()
            .unwrap();
        assert_eq!(email, user.email);
    }
    // The old ring alone no longer unwraps anything.
    let old_only = mobile_backend::crypto::KeyRing::parse(&old_spec).unwrap();
    assert!(
        mobile_backend::user_keys::UserKey::load(&mut conn, &old_only, users[0].user_id)
            .await
            .is_err()
    );
    // A second run has nothing to do.
    let again = app
        .run_cli(&["keys", "rewrap"], Some(&new_spec), None)
        .await;
    assert!(String::from_utf8_lossy(&again.stdout).contains("user keys: 0 re-sealed"));
}

/// Field names that must never appear in any response.
const FORBIDDEN_KEYS: &[&str] = &[
    "password_hash",
    "hash",
    "token_hash",
    "code_hash",
    "wrapped_key",
    "ciphertext",
    "blind_index",
    "push_token",
    "secret_ciphertext",
];

fn walk(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if FORBIDDEN_KEYS
                    .iter()
                    .any(|f| k == f || k.ends_with("_hash") || k.ends_with("_ciphertext"))
                {
                    out.push(format!("{path}.{k}"));
                }
                walk(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn no_response_of_a_full_scenario_contains_a_hash_a_key_or_a_token_hash() {
    let app = TestApp::spawn().await;
    let user = person_with_everything(&app).await;
    let other = app.signed_up_user("other@example.com").await;
    // Promoted to support below: staff roles need MFA.
    app.enable_totp(&other).await;
    let admin = app.staff_user("admin@example.com", "admin").await;
    let support = app.staff_user("support@example.com", "support").await;
    let mut bodies: Vec<(String, Value)> = Vec::new();
    let calls: Vec<(Method, String, &TestUser, Option<Value>)> = vec![
        (Method::GET, "/v1/me".into(), &user, None),
        (Method::GET, "/v1/me/export".into(), &user, None),
        (Method::GET, "/v1/mfa".into(), &user, None),
        (Method::GET, "/v1/sessions".into(), &user, None),
        (Method::GET, "/v1/devices".into(), &user, None),
        (
            Method::GET,
            format!("/v1/users/{}", user.user_id),
            &other,
            None,
        ),
        (
            Method::PATCH,
            "/v1/me".into(),
            &other,
            Some(json!({"display_name": "Other"})),
        ),
        (Method::GET, "/v1/admin/users".into(), &admin, None),
        (
            Method::GET,
            format!("/v1/admin/users/{}", user.user_id),
            &admin,
            None,
        ),
        (
            Method::GET,
            format!("/v1/admin/users/{}", user.user_id),
            &support,
            None,
        ),
        (
            Method::GET,
            "/v1/admin/audit-events?limit=200".into(),
            &admin,
            None,
        ),
        (Method::GET, "/v1/admin/alerts".into(), &admin, None),
        (Method::GET, "/v1/admin/client-policy".into(), &admin, None),
        (
            Method::PATCH,
            format!("/v1/admin/users/{}", other.user_id),
            &admin,
            Some(json!({"role": "support"})),
        ),
        (
            Method::POST,
            format!("/v1/admin/users/{}/revoke-sessions", other.user_id),
            &admin,
            None,
        ),
    ];
    for (method, path, who, body) in calls {
        let r = app
            .send_auth(method.clone(), &path, who.access(), body.as_ref())
            .await;
        assert!(r.status().is_success(), "{method} {path}: {}", r.status());
        bodies.push((format!("{method} {path}"), r.json().await.unwrap()));
    }
    // Token endpoints hand out tokens by design, but never their hashes.
    let refreshed: Value = app
        .refresh(user.refresh_token())
        .await
        .json()
        .await
        .unwrap();
    bodies.push(("POST /v1/auth/refresh".into(), refreshed));

    // Every stored hash, wrapped key and ciphertext, as a response could
    // spell it (hex or base64).
    let mut stored: Vec<Vec<u8>> = Vec::new();
    for (table, column) in [
        ("refresh_tokens", "token_hash"),
        ("recovery_codes", "code_hash"),
        ("user_keys", "wrapped_key"),
        ("users", "email_ciphertext"),
        ("users", "email_blind_index"),
        ("mfa_totp", "secret_ciphertext"),
        ("devices", "push_token_ciphertext"),
    ] {
        let values: Vec<Vec<u8>> = sqlx::query_scalar(&format!("SELECT {column} FROM {table}"))
            .fetch_all(&app.db)
            .await
            .unwrap();
        assert!(!values.is_empty(), "{table}.{column}");
        stored.extend(values);
    }
    let password_hashes: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_all(&app.db)
        .await
        .unwrap();
    use base64::Engine;
    for (call, body) in &bodies {
        let mut bad = Vec::new();
        walk(body, "", &mut bad);
        assert!(bad.is_empty(), "{call} exposes {bad:?}");
        let text = body.to_string();
        assert!(!text.contains("$argon2id$"), "{call} has a password hash");
        assert!(!text.contains(&user.password), "{call} has a password");
        assert!(!text.contains(PII[7]), "{call} has a push token");
        for h in &password_hashes {
            assert!(!text.contains(h.as_str()));
        }
        for bytes in &stored {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            assert!(
                !text.contains(&hex) && !text.contains(&b64) && !text.contains(&b64url),
                "{call} exposes a stored secret"
            );
        }
    }
}

#[tokio::test]
async fn a_rewrap_stopped_midway_resumes_and_two_runs_share_the_work() {
    use mobile_backend::{crypto::KeyRing, user_keys};
    let app = TestApp::spawn().await;
    for i in 0..7 {
        app.signed_up_user(&format!("resume{i}@example.com")).await;
    }
    let ring = mobile_backend::keys::rotated(&app.state.keys.data).unwrap();
    let now = app.clock.now();
    // One batch, then "the operator presses Ctrl-C".
    let first = user_keys::rewrap_batch(&app.db, &ring, None, 3, now)
        .await
        .unwrap();
    assert_eq!(first.done, 3);
    assert_eq!(user_keys::remaining(&app.db, &ring).await.unwrap(), 4);
    // Two runs at once: SKIP LOCKED hands each its own rows.
    let (a, b) = tokio::join!(
        user_keys::rewrap_batch(&app.db, &ring, None, 2, now),
        user_keys::rewrap_batch(&app.db, &ring, None, 2, now)
    );
    assert_eq!(a.unwrap().done + b.unwrap().done, 4);
    let last = user_keys::rewrap_batch(&app.db, &ring, None, 100, now)
        .await
        .unwrap();
    assert_eq!((last.done, last.last), (0, None));
    assert_eq!(user_keys::remaining(&app.db, &ring).await.unwrap(), 0);
    let mut conn = app.db.acquire().await.unwrap();
    let status = user_keys::status(&mut conn, &ring).await.unwrap();
    assert_eq!(status.per_key, vec![(ring.primary_id(), 7)]);
    assert!(status.unreadable.is_empty());
    // Every key still unwraps under the new master key alone.
    let new_only = KeyRing::parse(ring.to_spec().split(',').next().unwrap()).unwrap();
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT user_id FROM user_keys")
        .fetch_all(&app.db)
        .await
        .unwrap();
    for id in ids {
        user_keys::UserKey::load(&mut conn, &new_only, id)
            .await
            .unwrap();
    }
}
