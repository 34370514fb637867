//! Audit and erasure hardening: the service runs as a role that owns
//! nothing and cannot rewrite audit history with its own credentials;
//! retention runs only through the database's definer function and its
//! recorded period; an anchor kept outside the database catches history
//! cut and re-sealed by someone with the owner's power; deleting an account
//! erases its IP addresses and user agents without breaking the chain; the
//! export shows no other person's client details.

use crate::helpers::{TestApp, TestUser, STRONG_PASSWORD};
use mobile_backend::audit::{
    self,
    chain::{self, Anchor, Verification},
    retention, AuditEvent, Outcome,
};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

async fn seal_all(db: &PgPool) {
    while chain::seal_pending(db, 0.0).await.unwrap() > 0 {}
}

async fn some_events(db: &PgPool, at: chrono::DateTime<chrono::Utc>, n: usize) {
    for i in 0..n {
        let mut conn = db.acquire().await.unwrap();
        audit::record(
            &mut conn,
            at,
            &AuditEvent::new("test.chain.event", Outcome::Success).detail("i", i as i64),
        )
        .await
        .unwrap();
    }
}

/// The owner's power (a superuser bypassing the triggers): the attacker
/// the external anchor exists for.
async fn as_owner_bypassing_triggers(db: &PgPool, statements: &[&str]) {
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn count(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

/// Runs the real binary against `app`'s database with `env` on top of
/// the app's keys (`TestApp::run_cli` without extra variables).
async fn cli(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = app.mail_dir.parent().unwrap();
    let db_url = app
        .state
        .config
        .database_url
        .as_ref()
        .map(|u| secrecy::ExposeSecret::expose_secret(u).to_owned())
        .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobile-backend"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("DATA_KEYS", app.state.keys.data.to_spec())
        .env("DATA_DIR", dir)
        .env(
            "BLIND_INDEX_KEYS",
            app.state.keys.blind_index.ring().to_spec(),
        )
        .env("CODE_HMAC_KEYS", app.state.keys.codes.ring().to_spec())
        .env("SIGNING_KEYS", app.state.keys.signing.to_pem())
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .expect("the CLI finishes within two minutes")
    .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn client_from(ip: &str, user_agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .user_agent(user_agent)
        .build()
        .unwrap()
}

async fn sign_in_from(
    app: &TestApp,
    client: &reqwest::Client,
    user: &TestUser,
    device: Value,
) -> Value {
    let r = client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": user.email, "password": STRONG_PASSWORD, "device": device}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn the_service_role_cannot_rewrite_delete_or_unprotect_audit_history() {
    let app = TestApp::builder().restricted_service_role().spawn().await;
    let service = &app.state.db;
    let user = app.signed_up_user("ada@example.com").await;
    // The service seals with its own role (it may set the chain columns once).
    seal_all(service).await;
    assert!(!retention::service_owns_audit_trail(service).await.unwrap());
    assert!(retention::service_owns_audit_trail(&app.db).await.unwrap());
    let rows = count(&app.db, "SELECT count(*) FROM audit_events").await;
    assert!(rows >= 4, "sign-up left a trail: {rows}");

    let attacks = [
        "UPDATE audit_events SET outcome = 'success'".to_owned(),
        "UPDATE audit_events SET ip = NULL".to_owned(),
        "DELETE FROM audit_events WHERE chain_pos > 2".to_owned(),
        "TRUNCATE audit_events".to_owned(),
        // Re-sealing a sealed row is refused by the trigger.
        "UPDATE audit_events SET chain_pos = chain_pos + 1000, chain_hash = chain_hash WHERE chain_pos IS NOT NULL".to_owned(),
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only".to_owned(),
        "ALTER TABLE audit_events DISABLE TRIGGER ALL".to_owned(),
        "DROP TRIGGER audit_events_append_only ON audit_events".to_owned(),
        "CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN COALESCE(NEW, OLD); END $$".to_owned(),
        "DROP TABLE audit_events".to_owned(),
        "DROP TABLE audit_checkpoints".to_owned(),
        "ALTER TABLE audit_events OWNER TO CURRENT_USER".to_owned(),
        "SET session_replication_role = replica".to_owned(),
        "INSERT INTO audit_checkpoints (audit_checkpoint_id, created_at, chain_pos, chain_hash, deleted_rows) VALUES (gen_random_uuid(), now(), 1000, '\\x00', 0)".to_owned(),
        "DELETE FROM audit_checkpoints".to_owned(),
        "UPDATE audit_retention_policy SET retention_days = 1".to_owned(),
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'x', true, '\\x00', 0)".to_owned(),
        "CREATE TABLE owned_by_the_service (i int)".to_owned(),
        // Erasure is for deleted accounts only.
        format!("SELECT audit_erase_client_details('{}')", user.user_id),
    ];
    for attack in &attacks {
        let err = sqlx::query(attack).execute(service).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("permission denied")
                || msg.contains("must be owner")
                || msg.contains("append-only")
                || msg.contains("only for a deleted account"),
            "{attack}: {msg}"
        );
    }
    // Whatever an insert says, the row starts unsealed, at the database's
    // time, with a digest the database computed.
    sqlx::query(
        "INSERT INTO audit_events (audit_event_id, occurred_at, event_type, outcome, ip, user_agent,
                                   inserted_at, chain_pos, chain_hash, hash_version, client_salt, client_digest)
         VALUES (gen_random_uuid(), now(), 'test.forged.event', 'success', '203.0.113.5', 'Forger/1',
                 '2000-01-01', 999999, '\\x00', 1, '\\x00000000000000000000000000000000', '\\x00')",
    )
    .execute(service)
    .await
    .unwrap();
    let (sealed, fresh, version, digest_ok): (bool, bool, i16, bool) = sqlx::query_as(
        "SELECT chain_pos IS NOT NULL, inserted_at > now() - interval '1 hour', hash_version,
                client_digest = sha256(client_salt || convert_to(jsonb_build_array(host(ip), user_agent)::text, 'UTF8'))
         FROM audit_events WHERE event_type = 'test.forged.event'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((sealed, fresh, version, digest_ok), (false, true, 2, true));
    let rows = rows + 1;
    // Nor can the service seal it anywhere but at the next position: not
    // before the origin (where verify would not walk and retention would
    // take it), not on a taken position, not past a gap.
    for pos in [
        "-1",
        "0",
        "1",
        "(SELECT max(chain_pos) + 5 FROM audit_events)",
    ] {
        let err = sqlx::query(&format!(
            "UPDATE audit_events SET chain_pos = {pos}, chain_hash = '\\x00' WHERE event_type = 'test.forged.event'"
        ))
        .execute(service)
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("append-only") || msg.contains("duplicate key"),
            "{pos}: {msg}"
        );
    }
    // A table the owner adds later is the service's to use (default
    // privileges), without an ownership it could abuse.
    sqlx::query("CREATE TABLE later_feature (i int)")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO later_feature VALUES (1)")
        .execute(service)
        .await
        .unwrap();
    let err = sqlx::query("DROP TABLE later_feature")
        .execute(service)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be owner"), "{err}");
    // The old bypass: setting the GUC, by any means, changes nothing.
    for set in [
        "SET LOCAL mobile_backend.audit_retention = 'on'",
        "SELECT set_config('mobile_backend.audit_retention', 'on', true)",
    ] {
        let mut tx = service.begin().await.unwrap();
        sqlx::query(set).execute(&mut *tx).await.unwrap();
        let err = sqlx::query("DELETE FROM audit_events WHERE chain_pos > 2")
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
    }
    assert_eq!(
        count(&app.db, "SELECT count(*) FROM audit_events").await,
        rows
    );
    assert!(matches!(
        chain::verify(service).await.unwrap(),
        Verification::Intact { .. }
    ));
    // And it still serves: reads and writes its own tables.
    let r = app.get_auth("/v1/me", user.access()).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_retention_guc_is_no_bypass_even_for_the_owning_role() {
    // Development: the service is the owner (here a superuser); the
    // trigger rules hold for it too (only disabling them gets past).
    let app = TestApp::spawn().await;
    some_events(&app.db, app.clock.now(), 3).await;
    seal_all(&app.db).await;
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("SELECT set_config('mobile_backend.audit_retention', 'on', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query("DELETE FROM audit_events WHERE chain_pos = 3")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    drop(tx);
    assert_eq!(count(&app.db, "SELECT count(*) FROM audit_events").await, 4);
}

#[tokio::test]
async fn retention_through_the_definer_function_deletes_only_rows_past_the_recorded_period() {
    let app = TestApp::builder()
        .restricted_service_role()
        .env("AUDIT_RETENTION_DAYS", "30")
        .spawn()
        .await;
    // `migrate` (the owner) recorded the period the database enforces.
    assert_eq!(retention::policy_days(&app.db).await.unwrap(), Some(30));
    // Rows 1..=7: the start-up event and six more, all sealed.
    some_events(&app.db, app.clock.now(), 6).await;
    seal_all(&app.db).await;
    // By the database's clock: 1-3 are 31 days old, 4 is 29 days old, 5 is
    // fresh, 6 is 31 days old again (behind a younger row), 7 is fresh.
    as_owner_bypassing_triggers(
        &app.db,
        &[
            "UPDATE audit_events SET inserted_at = now() - interval '31 days' WHERE chain_pos IN (1, 2, 3, 6)",
            "UPDATE audit_events SET inserted_at = now() - interval '29 days' WHERE chain_pos = 4",
        ],
    )
    .await;
    let hashes: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT chain_hash FROM audit_events WHERE chain_pos <= 3 ORDER BY chain_pos",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    // The service role, with a temporary policy table of its own shadowing
    // the real one, runs retention: the pinned search_path ignores it.
    let mut conn = app.state.db.acquire().await.unwrap();
    sqlx::query(
        "CREATE TEMP TABLE audit_retention_policy AS SELECT true AS singleton, 1 AS retention_days",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let (deleted, up_to, days): (i64, Option<i64>, i32) =
        sqlx::query_as("SELECT * FROM audit_apply_retention()")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    drop(conn);
    assert_eq!((deleted, up_to, days), (3, Some(3), 30));
    let left: Vec<i64> = sqlx::query_scalar(
        "SELECT chain_pos FROM audit_events WHERE chain_pos IS NOT NULL ORDER BY chain_pos",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(left, [4, 5, 6, 7], "only the old prefix went");
    let checkpoint: (i64, i64) =
        sqlx::query_as("SELECT chain_pos, deleted_rows FROM audit_checkpoints")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(checkpoint, (3, 3));
    // An anchor at the checkpoint still checks; one before it cannot be
    // checked and fails, as does a wrong hash at the checkpoint.
    let at = |pos: i64, hash: &[u8]| Anchor {
        chain_pos: pos,
        chain_hash: hash.to_vec(),
    };
    assert!(matches!(
        chain::verify_anchored(&app.state.db, &[at(3, &hashes[2])])
            .await
            .unwrap(),
        Verification::Intact { .. }
    ));
    for (anchor, why) in [
        (at(2, &hashes[1]), "before the oldest retention checkpoint"),
        (
            at(3, &hashes[1]),
            "checkpoint at this position holds another hash",
        ),
    ] {
        match chain::verify_anchored(&app.state.db, &[anchor])
            .await
            .unwrap()
        {
            Verification::AnchorMismatch { reason, .. } => {
                assert!(reason.contains(why), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    // Nothing more is due; what is left verifies from the checkpoint.
    let again = retention::purge(&app.state.db).await.unwrap();
    assert_eq!(again.deleted, 0);
    assert_eq!(
        chain::verify(&app.state.db).await.unwrap(),
        Verification::Intact {
            rows: 4,
            unsealed: 0
        }
    );
}

#[tokio::test]
async fn an_anchor_kept_outside_the_database_catches_history_cut_and_resealed_by_the_owner() {
    let app = TestApp::builder().restricted_service_role().spawn().await;
    some_events(&app.db, app.clock.now(), 5).await;
    // `audit seal` logs the head as a structured `audit_chain_head` line.
    let sealed = cli(&app, &["audit", "seal"], &[("LOG_FORMAT", "json")]).await;
    assert!(sealed.status.success(), "{}", text(&sealed));
    let head_line: Value = String::from_utf8_lossy(&sealed.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "audit_chain_head")
        .unwrap_or_else(|| panic!("no audit_chain_head line in {}", text(&sealed)));
    let anchor: Anchor = head_line["anchor"].as_str().unwrap().parse().unwrap();
    assert_eq!(anchor.chain_pos, 6);
    assert_eq!(head_line["chain_pos"], 6);
    assert_eq!(
        head_line["chain_hash"].as_str().unwrap(),
        anchor.to_string().split_once(':').unwrap().1
    );
    let anchor = anchor.to_string();
    assert!(String::from_utf8_lossy(&sealed.stdout).contains(&format!("chain head {anchor}")));

    let held = app
        .run_cli(&["audit", "verify", "--anchor", &anchor], None, None)
        .await;
    assert!(held.status.success(), "{}", text(&held));

    // The owner cuts the newest rows, lets new ones in and re-seals: the
    // chain alone still looks intact.
    as_owner_bypassing_triggers(&app.db, &["DELETE FROM audit_events WHERE chain_pos > 3"]).await;
    some_events(&app.db, app.clock.now(), 4).await;
    seal_all(&app.db).await;
    let plain = app.run_cli(&["audit", "verify"], None, None).await;
    assert!(plain.status.success(), "{}", text(&plain));
    let caught = app
        .run_cli(&["audit", "verify", "--anchor", &anchor], None, None)
        .await;
    assert_eq!(caught.status.code(), Some(1), "{}", text(&caught));
    let stderr = String::from_utf8_lossy(&caught.stderr);
    assert!(
        stderr.contains(&format!("does not hold anchor {anchor}")) && stderr.contains("rewritten"),
        "{stderr}"
    );

    // Truncating everything after position 2 and sealing nothing more.
    as_owner_bypassing_triggers(&app.db, &["DELETE FROM audit_events WHERE chain_pos > 2"]).await;
    let truncated = app
        .run_cli(&["audit", "verify", "--anchor", &anchor], None, None)
        .await;
    assert_eq!(truncated.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&truncated.stderr).contains("chain ends before this position"),
        "{}",
        text(&truncated)
    );
    // A mistyped anchor is refused, not ignored.
    let bad = app
        .run_cli(&["audit", "verify", "--anchor", "6:abc"], None, None)
        .await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("POS:HASH"));
}

#[tokio::test]
async fn migrations_run_as_the_owner_and_a_service_role_that_owns_nothing_cannot_run_them() {
    let app = TestApp::builder().restricted_service_role().spawn().await;
    let owner_url = app
        .state
        .config
        .migration_database_url
        .as_ref()
        .map(|u| secrecy::ExposeSecret::expose_secret(u).to_owned())
        .unwrap();
    // Already migrated by the owner: the service role's CLI finds nothing to do.
    let verify = cli(&app, &["audit", "verify"], &[]).await;
    assert!(verify.status.success(), "{}", text(&verify));
    // A fresh, empty database: the service role cannot migrate it...
    let fresh = format!("test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {fresh}"))
        .execute(&app.db)
        .await
        .unwrap();
    let service_url =
        secrecy::ExposeSecret::expose_secret(app.state.config.database_url.as_ref().unwrap())
            .to_owned();
    let on_fresh = |url: &str| crate::helpers::with_database(url, &fresh);
    let refused = cli(
        &app,
        &["migrate"],
        &[("DATABASE_URL", &on_fresh(&service_url))],
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("MIGRATION_DATABASE_URL"),
        "{}",
        text(&refused)
    );
    // ...the owner can, and records AUDIT_RETENTION_DAYS.
    let migrated = cli(
        &app,
        &["migrate"],
        &[
            ("DATABASE_URL", &on_fresh(&service_url)),
            ("MIGRATION_DATABASE_URL", &on_fresh(&owner_url)),
            ("AUDIT_RETENTION_DAYS", "90"),
        ],
    )
    .await;
    assert!(migrated.status.success(), "{}", text(&migrated));
    let fresh_pool = PgPool::connect(&on_fresh(&owner_url)).await.unwrap();
    assert_eq!(retention::policy_days(&fresh_pool).await.unwrap(), Some(90));
    fresh_pool.close().await;
    sqlx::query(&format!("DROP DATABASE {fresh} WITH (FORCE)"))
        .execute(&app.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn deleting_an_account_erases_its_ip_and_user_agent_everywhere_and_the_chain_still_verifies()
{
    let app = TestApp::builder().restricted_service_role().spawn().await;
    let ada = app.signed_up_user("ada.erased@example.com").await;
    let ada_ip = "127.0.4.7";
    let ada_ua = "AdaPhone/9.1 (ada-typed-ua)";
    let device_name = "Ada's private iPad";
    let phone = client_from(ada_ip, ada_ua);
    // A second sign-in from a new device raises `new_device`.
    let tokens = sign_in_from(
        &app,
        &phone,
        &ada,
        json!({"name": device_name, "model": "iPad13,1", "platform": "ios"}),
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    // Someone else mistypes the address at sign-in.
    let r = client_from("127.0.4.8", "StrangerBrowser/1.0")
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": ada.email, "password": "not-her-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Part of the trail is sealed before the deletion, part after.
    seal_all(&app.state.db).await;

    let alert: Value = sqlx::query_scalar(
        "SELECT details FROM security_alerts WHERE rule = 'new_device' AND user_id = $1",
    )
    .bind(ada.user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(alert["platform"], "ios");
    assert!(alert["session_id"].as_str().is_some());
    assert!(
        !alert.to_string().contains("iPad"),
        "typed text in an alert: {alert}"
    );
    // Not vacuous: before the deletion her rows do hold her client.
    let with_client = count(
        &app.db,
        &format!("SELECT count(*) FROM audit_events WHERE user_id = '{}' AND host(ip) = '{ada_ip}' AND user_agent = '{ada_ua}'", ada.user_id),
    )
    .await;
    assert!(with_client >= 1);

    let r = phone
        .request(Method::DELETE, app.url("/v1/me"))
        .bearer_auth(&access)
        .json(&json!({"current_password": STRONG_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    seal_all(&app.state.db).await;

    // The tombstone stays, without a client.
    let tombstones = count(
        &app.db,
        &format!("SELECT count(*) FROM audit_events WHERE user_id = '{}' AND event_type = 'user.account.deleted' AND outcome = 'success' AND ip IS NULL AND user_agent IS NULL", ada.user_id),
    )
    .await;
    assert_eq!(tombstones, 1);
    let left = count(
        &app.db,
        &format!("SELECT count(*) FROM audit_events WHERE user_id = '{}' AND (ip IS NOT NULL OR user_agent IS NOT NULL OR client_salt IS NOT NULL)", ada.user_id),
    )
    .await;
    assert_eq!(left, 0, "audit rows kept her client details");
    let alerts_left = count(
        &app.db,
        &format!(
            "SELECT count(*) FROM security_alerts WHERE user_id = '{}' AND ip IS NOT NULL",
            ada.user_id
        ),
    )
    .await;
    assert_eq!(alerts_left, 0);
    // Nowhere in the database, in any table, in clear.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_name) FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    for table in tables {
        let hits: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} t WHERE t::text LIKE '%' || $1 || '%' OR t::text LIKE '%' || $2 || '%' OR t::text LIKE '%' || $3 || '%'"
        ))
        .bind(ada_ip)
        .bind("ada-typed-ua")
        .bind("private iPad")
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(
            hits, 0,
            "{table} still holds her IP, user agent or device name"
        );
    }
    // The chain verifies across rows sealed before and after the erasure.
    match chain::verify(&app.db).await.unwrap() {
        Verification::Intact { rows, unsealed } => {
            assert!(rows >= 8, "{rows}");
            assert_eq!(unsealed, 0);
        }
        broken => panic!("erasure broke the chain: {broken:?}"),
    }
}

#[tokio::test]
async fn an_erasable_ip_is_still_tamper_evident() {
    let app = TestApp::spawn().await;
    let mut event = AuditEvent::new("test.client.event", Outcome::Success);
    event.ip = Some("198.51.100.7".parse().unwrap());
    event.user_agent = Some("Original/1.0".into());
    for _ in 0..3 {
        let mut conn = app.db.acquire().await.unwrap();
        audit::record(&mut conn, app.clock.now(), &event)
            .await
            .unwrap();
    }
    seal_all(&app.db).await;
    let broken_at = |reason: &'static str, pos: i64| {
        let db = app.db.clone();
        async move {
            match chain::verify(&db).await.unwrap() {
                Verification::Broken {
                    chain_pos,
                    reason: r,
                    ..
                } => {
                    assert_eq!((chain_pos, r), (pos, reason));
                }
                intact => panic!("tampering went unnoticed: {intact:?}"),
            }
        }
    };
    // Another IP in place of the sealed one, then put back.
    as_owner_bypassing_triggers(
        &app.db,
        &["UPDATE audit_events SET ip = '203.0.113.9' WHERE chain_pos = 2"],
    )
    .await;
    broken_at("the IP address or user agent of this row was altered", 2).await;
    as_owner_bypassing_triggers(
        &app.db,
        &["UPDATE audit_events SET ip = '198.51.100.7' WHERE chain_pos = 2"],
    )
    .await;
    assert!(matches!(
        chain::verify(&app.db).await.unwrap(),
        Verification::Intact { .. }
    ));
    // Erasure (the one change the trigger allows) keeps the chain whole...
    sqlx::query(
        "UPDATE audit_events SET ip = NULL, user_agent = NULL, client_salt = NULL WHERE chain_pos = 3",
    )
    .execute(&app.db)
    .await
    .unwrap();
    assert!(matches!(
        chain::verify(&app.db).await.unwrap(),
        Verification::Intact { .. }
    ));
    // ...while an IP written onto the erased row is caught,
    as_owner_bypassing_triggers(
        &app.db,
        &["UPDATE audit_events SET ip = '203.0.113.9' WHERE chain_pos = 3"],
    )
    .await;
    broken_at("the IP address or user agent of this row was altered", 3).await;
    // even with a fresh salt and a digest to match: the old digest is sealed.
    as_owner_bypassing_triggers(
        &app.db,
        &[
            "UPDATE audit_events SET client_salt = uuid_send(gen_random_uuid()) WHERE chain_pos = 3",
            "UPDATE audit_events SET client_digest = sha256(client_salt || convert_to(jsonb_build_array(host(ip), user_agent)::text, 'UTF8')) WHERE chain_pos = 3",
        ],
    )
    .await;
    broken_at("this row, or one before it, was altered", 3).await;
}

#[tokio::test]
async fn rows_sealed_before_version_2_still_verify_next_to_erased_ones() {
    let app = TestApp::spawn().await;
    // Rows as the code before migration 0014 wrote them: hash version 1,
    // the IP and user agent inside the sealed canonical form. (Replica
    // mode skips the insert trigger, which would make them version 2.)
    as_owner_bypassing_triggers(
        &app.db,
        &["INSERT INTO audit_events (audit_event_id, occurred_at, event_type, outcome, user_id, ip, user_agent, hash_version)
           SELECT gen_random_uuid(), now(), 'test.old.event', 'success', '00000000-0000-7000-8000-000000000001', '198.51.100.1', 'Old/1', 1
           FROM generate_series(1, 3)"],
    )
    .await;
    let mut event = AuditEvent::new("test.new.event", Outcome::Success).user(
        uuid::Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001),
    );
    event.ip = Some("198.51.100.2".parse().unwrap());
    event.user_agent = Some("New/2".into());
    for _ in 0..3 {
        let mut conn = app.db.acquire().await.unwrap();
        audit::record(&mut conn, app.clock.now(), &event)
            .await
            .unwrap();
    }
    seal_all(&app.db).await;
    assert_eq!(
        count(
            &app.db,
            "SELECT count(*) FROM audit_events WHERE hash_version = 1 AND chain_pos IS NOT NULL"
        )
        .await,
        3
    );
    // The account (never a `users` row here) is erased: version-2 rows lose
    // their client, version-1 rows keep it (erasing it would break them).
    let erased: i64 = sqlx::query_scalar(
        "SELECT audit_erase_client_details('00000000-0000-7000-8000-000000000001')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(erased, 3);
    assert_eq!(
        count(&app.db, "SELECT count(*) FROM audit_events WHERE ip IS NOT NULL AND hash_version = 2 AND user_id IS NOT NULL").await,
        0
    );
    assert_eq!(
        count(
            &app.db,
            "SELECT count(*) FROM audit_events WHERE ip IS NOT NULL AND hash_version = 1"
        )
        .await,
        3
    );
    match chain::verify(&app.db).await.unwrap() {
        Verification::Intact { rows, unsealed } => assert_eq!((rows, unsealed), (7, 0)),
        broken => panic!("{broken:?}"),
    }
    // And a version-1 row's IP is sealed as before: editing it breaks the link.
    as_owner_bypassing_triggers(
        &app.db,
        &["UPDATE audit_events SET ip = NULL WHERE hash_version = 1 AND chain_pos = (SELECT min(chain_pos) FROM audit_events WHERE hash_version = 1)"],
    )
    .await;
    assert!(matches!(
        chain::verify(&app.db).await.unwrap(),
        Verification::Broken {
            reason: "this row, or one before it, was altered",
            ..
        }
    ));
}

#[tokio::test]
async fn the_export_shows_ip_and_user_agent_only_for_the_users_own_sessions() {
    let app = TestApp::spawn().await;
    let alice = app.signed_up_user("alice.own@example.com").await;
    let alice_phone = client_from("127.0.5.1", "AlicePhone/2.0");
    let tokens = sign_in_from(&app, &alice_phone, &alice, json!({"platform": "android"})).await;
    // A second person mistypes the address at sign-in, from elsewhere.
    let r = client_from("127.0.5.2", "MalloryBrowser/6.6")
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": alice.email, "password": "mallorys-own-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The attempt is recorded under her id, with the second person's client.
    let recorded = count(
        &app.db,
        &format!("SELECT count(*) FROM audit_events WHERE user_id = '{}' AND event_type = 'auth.login.failed' AND host(ip) = '127.0.5.2'", alice.user_id),
    )
    .await;
    assert_eq!(recorded, 1);

    let r = alice_phone
        .get(app.url("/v1/me/export"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let export: Value = r.json().await.unwrap();
    let text = export.to_string();
    assert!(
        !text.contains("127.0.5.2") && !text.contains("MalloryBrowser"),
        "another person's client in the export"
    );
    let events = export["audit_events"].as_array().unwrap();
    let failed = events
        .iter()
        .find(|e| e["event_type"] == "auth.login.failed")
        .expect("the failed attempt is listed");
    assert!(failed["ip"].is_null() && failed["user_agent"].is_null());
    // Her own session's events keep her client.
    assert!(events
        .iter()
        .any(|e| e["event_type"] == "auth.login.succeeded"
            && e["ip"] == "127.0.5.1"
            && e["user_agent"] == "AlicePhone/2.0"));
    // The registration had no session: listed without a client.
    let registered = events
        .iter()
        .find(|e| e["event_type"] == "auth.account.registered")
        .unwrap();
    assert!(registered["ip"].is_null());
}
