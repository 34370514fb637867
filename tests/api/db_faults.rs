//! PostgreSQL faults under a request: a connection killed while a request
//! uses it (`pg_terminate_backend`, as in a failover) is a 503
//! `database_unavailable` with `Retry-After`, never a 500; a safe read hit
//! by it is run once more on a fresh connection.
//!
//! Determinism: for a read, the test holds `LOCK TABLE user_keys IN ACCESS
//! EXCLUSIVE MODE` in its own transaction, so the request's first read (the
//! caller's session context, which joins the user key) waits inside
//! PostgreSQL; for a write, it holds the user's row `FOR UPDATE`, which
//! plain reads pass but the handler's `UPDATE users` waits on. The test
//! finds that waiting backend in `pg_stat_activity`, terminates it, waits
//! until it is gone, and only then releases the lock. (No periodic task
//! reads `user_keys` or writes `users` rows.)

use crate::helpers::{problem, TestApp, TestUser};
use reqwest::Method;
use serde_json::json;
use sqlx::{Postgres, Transaction};

/// Takes the lock the request will wait on.
async fn lock_user_keys(app: &TestApp) -> Transaction<'static, Postgres> {
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("LOCK TABLE user_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Holds `user`'s row the way a write would, so the handler's update waits.
async fn lock_user_row(app: &TestApp, user: &TestUser) -> Transaction<'static, Postgres> {
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE")
        .bind(user.user_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Waits (polling, no deadline asserted) until a backend of this database
/// is waiting for the `user_keys` lock, terminates it and waits until it is
/// gone. Returns how many backends were terminated.
async fn kill_the_waiting_backend(app: &TestApp) -> usize {
    kill_backend_waiting_in(app, "%user_keys%").await
}

/// The same for a backend waiting on a lock in a statement like `pattern`.
async fn kill_backend_waiting_in(app: &TestApp, pattern: &str) -> usize {
    let waiting = loop {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND wait_event_type = 'Lock' AND query ILIKE $1",
        )
        .bind(pattern)
        .fetch_all(&app.db)
        .await
        .unwrap();
        if !pids.is_empty() {
            break pids;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    for pid in &waiting {
        let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert!(done, "backend {pid} was not terminated");
    }
    loop {
        let alive: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&waiting)
                .fetch_one(&app.db)
                .await
                .unwrap();
        if alive == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    waiting.len()
}

async fn display_name(app: &TestApp, user: &TestUser) -> serde_json::Value {
    let me: serde_json::Value = app
        .get_auth("/v1/me", user.access())
        .await
        .json()
        .await
        .unwrap();
    me["profile"]["display_name"].clone()
}

#[tokio::test]
async fn a_write_whose_connection_is_killed_is_a_503_with_retry_after_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("killed-write@example.com").await;
    let before = display_name(&app, &user).await;

    let lock = lock_user_row(&app, &user).await;
    let request = {
        let client = app.client.clone();
        let url = app.url("/v1/me");
        let token = user.access().to_owned();
        tokio::spawn(async move {
            client
                .request(Method::PATCH, url)
                .bearer_auth(token)
                .json(&json!({"display_name": "Never Stored"}))
                .send()
                .await
                .unwrap()
        })
    };
    assert_eq!(kill_backend_waiting_in(&app, "%UPDATE users%").await, 1);
    lock.rollback().await.unwrap();

    let r = request.await.unwrap();
    assert_eq!(r.status(), 503, "a killed connection is not a 500");
    assert_eq!(r.headers()["retry-after"], "1");
    let p = problem(r).await;
    assert_eq!(p["code"], "database_unavailable");
    assert_eq!(p["status"], 503);
    // Not retried (a write), and nothing was stored.
    assert_eq!(display_name(&app, &user).await, before);
    // The pool replaced the connection: the same write now succeeds.
    let r = app
        .send_auth(
            Method::PATCH,
            "/v1/me",
            user.access(),
            Some(&json!({"display_name": "Stored"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(display_name(&app, &user).await, "Stored");
}

#[tokio::test]
async fn a_read_whose_connection_is_killed_is_run_once_more_and_succeeds() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("killed-read@example.com").await;
    app.send_auth(
        Method::PATCH,
        "/v1/me",
        user.access(),
        Some(&json!({"display_name": "Ada"})),
    )
    .await;

    let lock = lock_user_keys(&app).await;
    let request = {
        let client = app.client.clone();
        let url = app.url("/v1/me");
        let token = user.access().to_owned();
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await.unwrap() })
    };
    assert_eq!(kill_the_waiting_backend(&app).await, 1);
    lock.rollback().await.unwrap();

    let r = request.await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the read was retried on a fresh connection"
    );
    let me: serde_json::Value = r.json().await.unwrap();
    assert_eq!(me["profile"]["display_name"], "Ada");
    assert!(app
        .metrics_text()
        .await
        .contains("db_connection_lost_retries_total"));
}

#[tokio::test]
async fn a_read_whose_retry_is_killed_too_is_a_503_not_a_500() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("killed-twice@example.com").await;

    let lock = lock_user_keys(&app).await;
    let request = {
        let client = app.client.clone();
        let url = app.url("/v1/me");
        let token = user.access().to_owned();
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await.unwrap() })
    };
    // The first attempt and then its retry both wait for the lock.
    assert_eq!(kill_the_waiting_backend(&app).await, 1);
    assert_eq!(kill_the_waiting_backend(&app).await, 1);
    lock.rollback().await.unwrap();

    let r = request.await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(problem(r).await["code"], "database_unavailable");
}
