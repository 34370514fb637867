//! The audit trail: written in the caller's transaction, append-only in
//! the database, no secrets in details.

use crate::helpers::TestApp;
use mobile_backend::audit::{self, AuditEvent, Outcome};
use sqlx::Row;

#[tokio::test]
async fn start_up_is_audited() {
    let app = TestApp::spawn().await;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'system.service.started'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn an_event_commits_with_its_transaction_and_holds_every_field() {
    let app = TestApp::spawn().await;
    let user = uuid::Uuid::now_v7();
    let session = uuid::Uuid::now_v7();
    let mut tx = app.db.begin().await.unwrap();
    let event = AuditEvent::new("auth.login.attempted", Outcome::Failure)
        .user(user)
        .actor(user)
        .session(session)
        .detail("reason", "invalid_credentials")
        .detail("password", "correct horse battery staple");
    let mut event = event;
    event.ip = Some("198.51.100.7".parse().unwrap());
    event.user_agent = Some("MyApp/2.4.0 (iPhone)".into());
    event.request_id = Some("req-1".into());
    let id = audit::record(&mut tx, app.clock.now(), &event)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let row = sqlx::query(
        "SELECT event_type, outcome, user_id, actor_id, session_id, host(ip) AS ip, user_agent,
                request_id, details::text AS details, occurred_at
         FROM audit_events WHERE audit_event_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("event_type"), "auth.login.attempted");
    assert_eq!(row.get::<String, _>("outcome"), "failure");
    assert_eq!(row.get::<uuid::Uuid, _>("user_id"), user);
    assert_eq!(row.get::<uuid::Uuid, _>("session_id"), session);
    assert_eq!(row.get::<String, _>("ip"), "198.51.100.7");
    assert_eq!(row.get::<String, _>("request_id"), "req-1");
    assert_eq!(
        row.get::<chrono::DateTime<chrono::Utc>, _>("occurred_at"),
        app.clock.now()
    );
    let details = row.get::<String, _>("details");
    assert!(details.contains("invalid_credentials"));
    assert!(
        !details.contains("battery"),
        "a password reached the audit trail: {details}"
    );
}

#[tokio::test]
async fn an_event_in_a_rolled_back_transaction_is_gone_with_it() {
    let app = TestApp::spawn().await;
    let mut tx = app.db.begin().await.unwrap();
    let id = audit::record(
        &mut tx,
        app.clock.now(),
        &AuditEvent::new("test.rolled.back", Outcome::Success),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let found: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT audit_event_id FROM audit_events WHERE audit_event_id = $1")
            .bind(id)
            .fetch_optional(&app.db)
            .await
            .unwrap();
    assert!(found.is_none());
}

#[tokio::test]
async fn the_database_refuses_to_update_delete_or_truncate_audit_rows() {
    let app = TestApp::spawn().await;
    for attack in [
        "UPDATE audit_events SET outcome = 'success'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let err = sqlx::query(attack).execute(&app.db).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{attack}: {err}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 1, "the start-up event survived");
}

use mobile_backend::audit::{chain, retention};

async fn seal_all(app: &TestApp) {
    while chain::seal_pending(&app.db, 0.0).await.unwrap() > 0 {}
}

async fn some_events(app: &TestApp, n: usize) {
    for i in 0..n {
        let mut conn = app.db.acquire().await.unwrap();
        audit::record(
            &mut conn,
            app.clock.now(),
            &AuditEvent::new("test.chain.event", Outcome::Success).detail("i", i as i64),
        )
        .await
        .unwrap();
    }
}

/// A superuser's edit, bypassing the append-only trigger: the tamper the
/// chain must reveal.
async fn privileged(app: &TestApp, statement: &str) {
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(statement).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn an_untouched_chain_verifies() {
    let app = TestApp::spawn().await;
    some_events(&app, 12).await;
    seal_all(&app).await;
    match chain::verify(&app.db).await.unwrap() {
        chain::Verification::Intact { rows, unsealed } => {
            assert_eq!(rows, 13, "the start-up event and twelve more");
            assert_eq!(unsealed, 0);
        }
        broken => panic!("{broken:?}"),
    }
}

#[tokio::test]
async fn an_altered_row_is_named_by_verify() {
    let app = TestApp::spawn().await;
    some_events(&app, 6).await;
    seal_all(&app).await;
    let victim: uuid::Uuid =
        sqlx::query_scalar("SELECT audit_event_id FROM audit_events WHERE chain_pos = 4")
            .fetch_one(&app.db)
            .await
            .unwrap();
    privileged(
        &app,
        &format!("UPDATE audit_events SET outcome = 'failure' WHERE audit_event_id = '{victim}'"),
    )
    .await;
    assert_eq!(
        chain::verify(&app.db).await.unwrap(),
        chain::Verification::Broken {
            chain_pos: 4,
            audit_event_id: victim,
            reason: "this row, or one before it, was altered"
        }
    );
}

#[tokio::test]
async fn a_deleted_row_breaks_the_chain_at_the_next_one() {
    let app = TestApp::spawn().await;
    some_events(&app, 6).await;
    seal_all(&app).await;
    privileged(&app, "DELETE FROM audit_events WHERE chain_pos = 3").await;
    match chain::verify(&app.db).await.unwrap() {
        chain::Verification::Broken { chain_pos, .. } => assert_eq!(chain_pos, 4),
        intact => panic!("a deletion went unnoticed: {intact:?}"),
    }
}

#[tokio::test]
async fn sealing_cannot_be_used_to_rewrite_a_row() {
    let app = TestApp::spawn().await;
    some_events(&app, 1).await;
    // Setting the chain columns while changing content is refused.
    let err = sqlx::query(
        "UPDATE audit_events SET chain_pos = 99, chain_hash = '\\x00', outcome = 'denied' WHERE chain_pos IS NULL",
    )
    .execute(&app.db)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    // And a sealed row cannot be resealed.
    seal_all(&app).await;
    let err = sqlx::query("UPDATE audit_events SET chain_pos = chain_pos + 100")
        .execute(&app.db)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test]
async fn retention_deletes_old_sealed_rows_through_a_checkpoint_and_the_rest_still_verifies() {
    let app = TestApp::spawn().await;
    some_events(&app, 5).await;
    seal_all(&app).await;
    // Retention reads the database's clock (`inserted_at`, set by the
    // database), not the app's: age these rows past the period there.
    // `inserted_at` is outside the sealed content, so the chain holds.
    privileged(
        &app,
        "UPDATE audit_events SET inserted_at = now() - interval '400 days'",
    )
    .await;
    some_events(&app, 3).await;
    seal_all(&app).await;
    let purged = retention::purge(&app.db).await.unwrap();
    assert_eq!(
        purged.deleted, 6,
        "the start-up event and the five old ones"
    );
    assert_eq!(purged.up_to_chain_pos, Some(6));
    assert_eq!(purged.retention_days, 365);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(left, 3);
    let checkpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_checkpoints")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(checkpoints, 1);
    assert_eq!(
        chain::verify(&app.db).await.unwrap(),
        chain::Verification::Intact {
            rows: 3,
            unsealed: 0
        }
    );
    // Outside that path, deleting stays refused.
    let err = sqlx::query("DELETE FROM audit_events")
        .execute(&app.db)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"));
    // Checkpoints cannot be changed or removed either.
    for attack in [
        "UPDATE audit_checkpoints SET chain_pos = chain_pos + 1",
        "DELETE FROM audit_checkpoints",
        "TRUNCATE audit_checkpoints",
    ] {
        let err = sqlx::query(attack).execute(&app.db).await.unwrap_err();
        assert!(
            err.to_string().contains("audit_checkpoints is append-only"),
            "{attack}: {err}"
        );
    }
}

#[tokio::test]
async fn the_audit_verify_command_passes_on_an_intact_chain_and_names_a_tampered_row() {
    let app = TestApp::spawn().await;
    some_events(&app, 3).await;
    // Awaited child processes (see `TestApp::run_cli`): this test's app
    // keeps sealing, under the same lock, while the CLI runs.
    let run = |args: &'static [&'static str]| app.run_cli(args, None, None);
    let sealed = run(&["audit", "seal"]).await;
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let ok = run(&["audit", "verify"]).await;
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact: 4 sealed rows"));

    let victim: uuid::Uuid =
        sqlx::query_scalar("SELECT audit_event_id FROM audit_events WHERE chain_pos = 2")
            .fetch_one(&app.db)
            .await
            .unwrap();
    privileged(
        &app,
        &format!(
            "UPDATE audit_events SET details = '{{\"i\": 99}}' WHERE audit_event_id = '{victim}'"
        ),
    )
    .await;
    let broken = run(&["audit", "verify"]).await;
    assert!(!broken.status.success());
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains(&victim.to_string()) && stderr.contains("position 2"),
        "{stderr}"
    );
}
