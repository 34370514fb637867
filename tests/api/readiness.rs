//! `/readyz` follows the database: 503 while PostgreSQL is down, 200 again
//! once it is back, with no restart. Uses its own throwaway cluster so it
//! can stop it.

use crate::helpers::{problem, start_throwaway_cluster, TestApp};
use std::time::Duration;

#[tokio::test]
async fn readyz_turns_503_when_postgres_stops_and_200_when_it_returns() {
    let pg = start_throwaway_cluster().await;
    let app = TestApp::builder()
        .database_server(pg.url("postgres"))
        .env("DATABASE_ACQUIRE_TIMEOUT_SECS", "1")
        .spawn()
        .await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    pg.stop().await.unwrap();
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(problem(r).await["code"], "not_ready");
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "liveness ignores the database"
    );

    pg.start().await.unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = app.get("/readyz").await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200, "ready again without a restart");
}
