//! Graceful shutdown: a request in flight when SIGTERM arrives completes.
//!
//! A separate test binary because signals are process-wide: raising
//! SIGTERM here must not stop the servers of the other integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::http::Method;
use mobile_backend::{
    clock::Clock, config::Config, http::routes::ApiRouter, keys::Keys, rate_limit::policy::Class,
    startup,
};
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::sync::Notify;

#[tokio::test]
async fn a_request_in_flight_when_sigterm_arrives_completes() {
    // Keep the throwaway cluster (if any) alive for the whole test.
    let mut _cluster = None;
    let admin_url = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let pg = mobile_backend::dev_db::start_throwaway().await.unwrap();
            let url = pg.url("postgres");
            _cluster = Some(pg);
            url
        }
    };
    let db = format!("test_{}", uuid::Uuid::new_v4().simple());
    mobile_backend::dev_db::ensure_database(&admin_url, &db)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::generate().unwrap();
    let env: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", format!("{base}/{db}")),
        ("LISTEN_ADDR", "127.0.0.1:0".into()),
        ("METRICS_ADDR", "127.0.0.1:0".into()),
        ("DATA_DIR", tmp.path().display().to_string()),
        ("DATA_KEYS", keys.data.to_spec()),
        ("BLIND_INDEX_KEYS", keys.blind_index.ring().to_spec()),
        ("CODE_HMAC_KEYS", keys.codes.ring().to_spec()),
        ("SIGNING_KEYS", keys.signing.to_pem()),
    ]);
    let config = Config::from_lookup(|k| env.get(k).cloned()).unwrap();

    // A handler that reports when it has started, then takes a while.
    let started = Arc::new(Notify::new());
    let signal_started = started.clone();
    let slow = ApiRouter::new().route(
        Method::GET,
        "/v1/_probe/slow",
        "probe_slow",
        Class::Reads,
        move || {
            let signal_started = signal_started.clone();
            async move {
                signal_started.notify_one();
                tokio::time::sleep(Duration::from_millis(700)).await;
                "finished"
            }
        },
    );
    let app = startup::Application::build_with(config, Clock::system(), slow)
        .await
        .unwrap();
    let addr = app.local_addr().unwrap();
    let shutdown = startup::shutdown_signal().unwrap();
    let server = tokio::spawn(app.run_until(shutdown));

    let request =
        tokio::spawn(async move { reqwest::get(format!("http://{addr}/v1/_probe/slow")).await });
    started.notified().await;
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();

    let response = request
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stopped after draining")
        .unwrap()
        .unwrap();
    // New connections are refused once stopped.
    assert!(reqwest::get(format!("http://{addr}/healthz"))
        .await
        .is_err());

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}
