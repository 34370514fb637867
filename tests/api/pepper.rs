//! The password pepper (#17): `PASSWORD_PEPPER_KEYS` is argon2's secret
//! input, its key id is in each hash, and it rotates like every other key:
//! staged, current, then the old key leaves once `keys status` says no hash
//! uses it, with every account signing in throughout. And every refusal
//! costs the same argon2 work, whether the account is unknown, current, or
//! stored with older parameters. Rotations are "restarts": another app on
//! the same database with the new value.

use crate::helpers::{TestApp, TestUser};
use mobile_backend::{
    accounts::password::PasswordHasher, config::Argon2Params, crypto::PepperKeys,
};
use secrecy::SecretString;
use serde_json::json;

async fn restarted(app: &TestApp, pepper: &str) -> TestApp {
    let other = TestApp::builder()
        .same_database_as(app)
        .env("PASSWORD_PEPPER_KEYS", pepper)
        .spawn()
        .await;
    other.clock.advance(app.clock.now() - other.clock.now());
    other
}

async fn stored_hash(app: &TestApp, user: &TestUser) -> String {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// The `keyid=` of a stored hash (`None`: no pepper).
async fn pepper_of(app: &TestApp, user: &TestUser) -> Option<String> {
    let phc = stored_hash(app, user).await;
    phc.split('$')
        .nth(3)
        .and_then(|params| params.split(',').find_map(|p| p.strip_prefix("keyid=")))
        .map(str::to_owned)
}

async fn signs_in(app: &TestApp, user: &TestUser) {
    let r = app.login(&user.email, &user.password).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn status(app: &TestApp, pepper: &str) -> String {
    let out = app
        .run_cli_with(
            &["keys", "status"],
            &[("PASSWORD_PEPPER_KEYS", pepper)],
            None,
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const KEY_1: Option<&str> = Some("AAAAAQ");
const KEY_2: Option<&str> = Some("AAAAAg");

#[tokio::test]
async fn a_pepper_is_introduced_then_rotated_away_and_every_account_keeps_signing_in() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let bo = app.signed_up_user("bo@example.com").await;
    assert_eq!(pepper_of(&app, &ada).await, None);
    let (staged_1, current_1) = PepperKeys::rotation(None).unwrap();
    let (staged_2, current_2) = PepperKeys::rotation(Some(&current_1)).unwrap();

    // Step 1: every process learns key 1; nothing is re-hashed yet.
    let step = restarted(&app, &staged_1.to_spec()).await;
    signs_in(&step, &ada).await;
    assert_eq!(pepper_of(&app, &ada).await, None);

    // Step 2: key 1 is current; Ada's next sign-in peppers her hash, Bo
    // (who does not sign in) keeps his unpeppered one, which still works.
    let one = restarted(&app, &current_1.to_spec()).await;
    signs_in(&one, &ada).await;
    assert_eq!(pepper_of(&app, &ada).await.as_deref(), KEY_1);
    signs_in(&one, &ada).await;
    assert_eq!(pepper_of(&app, &bo).await, None);
    // A copy of the database without the pepper: argon2 with the right
    // password but no secret does not match, so offline guessing is futile.
    {
        use argon2::password_hash::{PasswordHash, PasswordVerifier as _};
        let phc = stored_hash(&app, &ada).await;
        assert!(argon2::Argon2::default()
            .verify_password(ada.password.as_bytes(), &PasswordHash::new(&phc).unwrap())
            .is_err());
    }

    // Rotation: key 2 staged (a hash another process writes under key 2
    // is verified and left alone), then current.
    let staged = restarted(&app, &staged_2.to_spec()).await;
    signs_in(&staged, &ada).await;
    assert_eq!(pepper_of(&app, &ada).await.as_deref(), KEY_1);
    let two = restarted(&app, &current_2.to_spec()).await;
    signs_in(&two, &ada).await;
    assert_eq!(pepper_of(&app, &ada).await.as_deref(), KEY_2);
    signs_in(&staged, &ada).await;
    assert_eq!(pepper_of(&app, &ada).await.as_deref(), KEY_2);

    // Key 1 cannot go while a hash uses it... (Bo is unpeppered, Ada on 2:
    // key 1 is already free, so first put a hash under it.)
    let cy = one.signed_up_user("cy@example.com").await;
    assert_eq!(pepper_of(&app, &cy).await.as_deref(), KEY_1);
    let text = status(&app, &current_2.to_spec()).await;
    for line in [
        "password pepper keys (PASSWORD_PEPPER_KEYS): current 2, in the ring [2, 1]",
        "users.password_hash: no pepper: 1 hashes (no pepper: re-hashed",
        "users.password_hash: pepper key 1: 1 hashes (older",
        "users.password_hash: pepper key 2: 1 hashes (current)",
        "pepper key 1: 1 hashes still under it; keep it",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    // ...and may go once every remaining account has signed in.
    signs_in(&two, &bo).await;
    signs_in(&two, &cy).await;
    assert_eq!(pepper_of(&app, &bo).await.as_deref(), KEY_2);
    assert_eq!(pepper_of(&app, &cy).await.as_deref(), KEY_2);
    let text = status(&app, &current_2.to_spec()).await;
    assert!(
        text.contains("pepper key 1: no hash left under it; it may leave PASSWORD_PEPPER_KEYS"),
        "{text}"
    );
    let only_two = current_2.to_spec();
    let only_two = only_two.split(',').next().unwrap();
    let after = restarted(&app, only_two).await;
    for user in [&ada, &bo, &cy] {
        signs_in(&after, user).await;
    }
    // A new password (reset or change) is written under the current key.
    let r = after
        .post_json("/v1/auth/password/forgot", &json!({"email": bo.email}))
        .await;
    assert_eq!(r.status(), 202);
    let code = after.code_for(&bo.email).await;
    let r = after
        .post_json(
            "/v1/auth/password/reset",
            &json!({"email": bo.email, "code": code, "new_password": "a-brand-new-passphrase-77"}),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(pepper_of(&app, &bo).await.as_deref(), KEY_2);
    let r = after.login(&bo.email, "a-brand-new-passphrase-77").await;
    assert_eq!(r.status(), 200);
}

/// Enumeration by timing: the dummy hash for an unknown address costs what
/// a real account's check costs, including an account whose hash still has
/// older, cheaper parameters or no pepper (until its next sign-in).
#[tokio::test]
async fn a_wrong_password_costs_the_same_for_unknown_current_and_older_accounts() {
    let (_, pepper) = PepperKeys::rotation(None).unwrap();
    let app = TestApp::builder()
        .env("PASSWORD_PEPPER_KEYS", &pepper.to_spec())
        .spawn()
        .await;
    let current = app.signed_up_user("current@example.com").await;
    let older = app.signed_up_user("older@example.com").await;
    let unpeppered = app.signed_up_user("unpeppered@example.com").await;
    for (user, params, pepper) in [
        (
            &older,
            Argon2Params {
                memory_kib: 1024,
                iterations: 2,
                parallelism: 1,
            },
            Some(pepper.clone()),
        ),
        (
            &unpeppered,
            Argon2Params {
                memory_kib: 2048,
                iterations: 1,
                parallelism: 1,
            },
            None,
        ),
    ] {
        let phc = PasswordHasher::new(params, pepper, 1, 1)
            .unwrap()
            .hash(&SecretString::from(user.password.clone()))
            .await
            .unwrap();
        sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
            .bind(user.user_id)
            .bind(phc)
            .execute(&app.db)
            .await
            .unwrap();
    }
    let hasher = &app.state.hasher;
    let mut costs = Vec::new();
    for email in [
        "nobody@example.com",
        &current.email,
        &older.email,
        &unpeppered.email,
    ] {
        let before = hasher.work_blocks();
        let r = app.login(email, "not the password 123").await;
        assert_eq!(r.status(), 401, "{email}");
        costs.push((email.to_owned(), hasher.work_blocks() - before));
    }
    let unknown = costs[0].1;
    assert_eq!(unknown, 4096, "the suite's parameters: 4096 KiB, 1 pass");
    for (email, cost) in &costs {
        assert!(
            *cost <= unknown && unknown - cost < 8,
            "{email}: {cost} blocks, an unknown address {unknown}: {costs:?}"
        );
    }
    // The right password still works for each, and upgrades the older ones.
    for user in [&current, &older, &unpeppered] {
        signs_in(&app, user).await;
        assert_eq!(pepper_of(&app, user).await.as_deref(), KEY_1);
        assert!(stored_hash(&app, user).await.contains("m=4096,t=1,p=1"));
    }
}

/// `keys rotate --ring pepper` prints the two values to deploy in turn:
/// from nothing, `-,1:…` then `1:…`; from a ring, the new key known, then
/// current. It stores nothing.
#[tokio::test]
async fn keys_rotate_prints_the_staged_then_the_current_pepper() {
    let app = TestApp::spawn().await;
    let values = |out: std::process::Output| -> Vec<PepperKeys> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("PASSWORD_PEPPER_KEYS="))
            .map(|v| PepperKeys::parse(v).unwrap())
            .collect()
    };
    let first = values(
        app.run_cli_with(&["keys", "rotate", "--ring", "pepper"], &[], None)
            .await,
    );
    assert_eq!(first.len(), 2);
    assert_eq!((first[0].current_id(), first[0].ids()), (None, vec![1]));
    assert_eq!((first[1].current_id(), first[1].ids()), (Some(1), vec![1]));
    let next = values(
        app.run_cli_with(
            &["keys", "rotate", "--ring", "pepper"],
            &[("PASSWORD_PEPPER_KEYS", &first[1].to_spec())],
            None,
        )
        .await,
    );
    assert_eq!((next[0].current_id(), next[0].ids()), (Some(1), vec![1, 2]));
    assert_eq!((next[1].current_id(), next[1].ids()), (Some(2), vec![2, 1]));
    // The old key is carried over, not replaced.
    assert_eq!(
        next[1].to_spec().split(',').nth(1),
        Some(first[1].to_spec().as_str())
    );
}

/// A hash under a pepper key this process lacks (removed too early, or
/// written into the row by someone with database access) is answered
/// like a wrong password at the usual cost, never with a fast error that
/// would confirm the account, and the operator sees it in a metric.
#[tokio::test]
async fn a_hash_under_a_missing_pepper_key_is_a_wrong_password_not_an_error() {
    let (_, one) = PepperKeys::rotation(None).unwrap();
    let (_, two) = PepperKeys::rotation(Some(&one)).unwrap();
    let app = TestApp::builder()
        .env("PASSWORD_PEPPER_KEYS", &one.to_spec())
        .spawn()
        .await;
    let ada = app.signed_up_user("ada@example.com").await;
    let only_two = two.to_spec();
    let only_two = only_two.split(',').next().unwrap().to_owned();
    let other = restarted(&app, &only_two).await;
    let before = other.state.hasher.work_blocks();
    let r = other.login(&ada.email, &ada.password).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        crate::helpers::problem(r).await["code"],
        "invalid_credentials"
    );
    assert_eq!(other.state.hasher.work_blocks() - before, 4096);
    let metrics = other.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("password_hash_unusable_total{reason=\"pepper_key_missing\"}")),
        "{metrics}"
    );
    // The key back in the ring: she signs in, and moves to key 2.
    let both = restarted(&app, &two.to_spec()).await;
    signs_in(&both, &ada).await;
    assert_eq!(pepper_of(&app, &ada).await.as_deref(), KEY_2);
}

/// The re-hash at sign-in replaces only the hash it checked: a password
/// reset that committed in between is not overwritten with a hash of the
/// old password.
#[tokio::test]
async fn a_rehash_never_overwrites_a_password_changed_meanwhile() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let checked = stored_hash(&app, &ada).await;
    // A reset commits while her sign-in is between its check and its write.
    let reset = app
        .state
        .hasher
        .hash(&SecretString::from("a-brand-new-passphrase-77".to_owned()))
        .await
        .unwrap();
    sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
        .bind(ada.user_id)
        .bind(&reset)
        .execute(&app.db)
        .await
        .unwrap();
    let rehashed = app
        .state
        .hasher
        .hash(&SecretString::from(ada.password.clone()))
        .await
        .unwrap();
    let mut conn = app.db.acquire().await.unwrap();
    let replaced = mobile_backend::accounts::db::upgrade_password_hash(
        &mut conn,
        ada.user_id,
        &checked,
        &rehashed,
        app.clock.now(),
    )
    .await
    .unwrap();
    assert!(!replaced);
    assert_eq!(stored_hash(&app, &ada).await, reset);
    assert_eq!(app.login(&ada.email, &ada.password).await.status(), 401);
    assert_eq!(
        app.login(&ada.email, "a-brand-new-passphrase-77")
            .await
            .status(),
        200
    );
}
