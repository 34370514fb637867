//! The transactional mail outbox: delivery follows the commit, payloads
//! are sealed at rest and erased once sent, failures back off and retry.

use crate::helpers::TestApp;
use chrono::Duration;
use mobile_backend::mail::{self, sender::MAX_ATTEMPTS, OutgoingMail};
use sqlx::Row;

fn message(to: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.into(),
        subject: "Your code".into(),
        text: "Your verification code is 493817.".into(),
    }
}

async fn enqueue(app: &TestApp, mail: &OutgoingMail, commit: bool) -> uuid::Uuid {
    let mut tx = app.db.begin().await.unwrap();
    let id = mail::enqueue(
        &mut tx,
        &app.state.keys,
        app.clock.now(),
        "email_verification",
        mail,
    )
    .await
    .unwrap();
    if commit {
        tx.commit().await.unwrap();
    } else {
        tx.rollback().await.unwrap();
    }
    id
}

async fn row(app: &TestApp, id: uuid::Uuid) -> sqlx::postgres::PgRow {
    sqlx::query("SELECT status, attempts, payload, next_attempt_at, last_error FROM mail_outbox WHERE mail_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_committed_message_is_delivered_once_and_its_payload_erased() {
    let app = TestApp::spawn().await;
    let id = enqueue(&app, &message("ada@example.com"), true).await;

    // At rest, neither the address nor the code is readable.
    let raw: Vec<u8> = row(&app, id).await.get("payload");
    let raw_text = String::from_utf8_lossy(&raw);
    assert!(!raw_text.contains("ada@example.com") && !raw_text.contains("493817"));

    let mails = app.deliver_mail().await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, "ada@example.com");
    assert_eq!(mails[0].subject, "Your code");
    assert!(mails[0].text.contains("493817"));

    let r = row(&app, id).await;
    assert_eq!(r.get::<String, _>("status"), "sent");
    assert!(r.get::<Option<Vec<u8>>, _>("payload").is_none());
    assert_eq!(app.deliver_mail().await.len(), 1, "not sent twice");
}

#[tokio::test]
async fn a_rolled_back_message_is_never_sent() {
    let app = TestApp::spawn().await;
    enqueue(&app, &message("nobody@example.com"), false).await;
    assert!(app.deliver_mail().await.is_empty());
}

#[tokio::test]
async fn a_failed_delivery_backs_off_retries_and_finally_gives_up() {
    // A mail "folder" that is a regular file: every write fails.
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let app = TestApp::spawn().await;
    let id = enqueue(&app, &message("grace@example.com"), true).await;
    let transport = mobile_backend::mail::transport::Transport::File(blocker.path().join("sub"));

    assert_eq!(
        mail::sender::deliver_due(&app.state, &transport)
            .await
            .unwrap(),
        1
    );
    let r = row(&app, id).await;
    assert_eq!(r.get::<String, _>("status"), "pending");
    assert_eq!(r.get::<i32, _>("attempts"), 1);
    assert_eq!(r.get::<String, _>("last_error"), "file_write_failed");
    assert_eq!(
        r.get::<chrono::DateTime<chrono::Utc>, _>("next_attempt_at"),
        app.clock.now() + Duration::seconds(10)
    );

    // Not due yet: nothing is attempted.
    assert_eq!(
        mail::sender::deliver_due(&app.state, &transport)
            .await
            .unwrap(),
        0
    );
    app.clock.advance(Duration::seconds(11));
    assert_eq!(
        mail::sender::deliver_due(&app.state, &transport)
            .await
            .unwrap(),
        1
    );
    assert_eq!(row(&app, id).await.get::<i32, _>("attempts"), 2);

    for _ in 2..MAX_ATTEMPTS {
        app.clock.advance(Duration::hours(7));
        mail::sender::deliver_due(&app.state, &transport)
            .await
            .unwrap();
    }
    let r = row(&app, id).await;
    assert_eq!(r.get::<String, _>("status"), "failed");
    assert_eq!(r.get::<i32, _>("attempts"), MAX_ATTEMPTS);
    assert!(
        r.get::<Option<Vec<u8>>, _>("payload").is_none(),
        "a dead message keeps no payload"
    );
}

#[tokio::test]
async fn a_payload_moved_to_another_row_does_not_open() {
    let app = TestApp::spawn().await;
    let victim = enqueue(&app, &message("victim@example.com"), true).await;
    let other = enqueue(&app, &message("attacker@example.com"), true).await;
    // An attacker with database access redirects the victim's code.
    sqlx::query("UPDATE mail_outbox SET payload = (SELECT payload FROM mail_outbox WHERE mail_id = $1) WHERE mail_id = $2")
        .bind(victim)
        .bind(other)
        .execute(&app.db)
        .await
        .unwrap();
    let mails = app.deliver_mail().await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, "victim@example.com");
    let r = row(&app, other).await;
    assert_eq!(r.get::<String, _>("status"), "failed");
    assert_eq!(r.get::<String, _>("last_error"), "payload_unreadable");
}

#[tokio::test]
async fn the_background_sender_delivers_when_woken_after_a_commit() {
    let app = TestApp::spawn().await;
    enqueue(&app, &message("lin@example.com"), true).await;
    app.state.outbox.wake();
    let mut delivered = vec![];
    for _ in 0..100 {
        delivered = app.mailbox();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        delivered.len(),
        1,
        "the sender task delivered without being called"
    );
    assert_eq!(delivered[0].to, "lin@example.com");
}
