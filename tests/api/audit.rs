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
