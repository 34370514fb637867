//! Bad input never reaches a 500 and never gets text/plain: each kind of
//! malformed request is answered as problem+json with the right status,
//! and panics and timeouts are contained.

use crate::helpers::{problem, TestApp};
use serde_json::json;

const ECHO: &str = "/v1/_probe/echo";

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = TestApp::spawn().await;
    let r = app
        .post_raw(ECHO, "application/json", b"{\"name\": \"a\",".to_vec())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(problem(r).await["code"], "malformed_json");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415_problem() {
    let app = TestApp::spawn().await;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let r = app.post_raw(ECHO, ct, b"name=a&count=1".to_vec()).await;
        assert_eq!(r.status(), 415, "{ct}");
        assert_eq!(problem(r).await["code"], "unsupported_media_type");
    }
    // A JSON body without any content type is refused too.
    let r = app
        .client
        .post(app.url(ECHO))
        .body(r#"{"name":"a","count":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn a_65_kib_body_is_a_413_problem_declared_or_streamed() {
    let app = TestApp::spawn().await;
    let big = format!(
        r#"{{"name":"a","count":1,"note":"{}"}}"#,
        "x".repeat(65 * 1024)
    );
    let r = app
        .post_raw(ECHO, "application/json", big.clone().into_bytes())
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(problem(r).await["code"], "payload_too_large");

    // Chunked: no Content-Length, so the limit must hold while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(4096)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = app
        .client
        .post(app.url(ECHO))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(problem(r).await["code"], "payload_too_large");
}

#[tokio::test]
async fn a_body_just_under_the_limit_is_accepted() {
    let app = TestApp::spawn().await;
    let note = "x".repeat(60 * 1024);
    let r = app
        .post_json(ECHO, &json!({"name": "a", "count": 1, "note": note}))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_unknown_field_is_a_422_naming_it() {
    let app = TestApp::spawn().await;
    let r = app
        .post_json(ECHO, &json!({"name": "a", "count": 1, "role": "admin"}))
        .await;
    assert_eq!(r.status(), 422);
    let body = problem(r).await;
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(body["errors"][0]["field"], "role");
    assert_eq!(body["errors"][0]["code"], "unknown_field");
}

#[tokio::test]
async fn a_missing_field_is_a_422_naming_it() {
    let app = TestApp::spawn().await;
    let r = app.post_json(ECHO, &json!({"name": "a"})).await;
    assert_eq!(r.status(), 422);
    let body = problem(r).await;
    assert_eq!(body["errors"][0]["field"], "count");
    assert_eq!(body["errors"][0]["code"], "missing_field");
}

#[tokio::test]
async fn a_wrong_type_is_a_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let r = app
        .post_json(ECHO, &json!({"name": "a", "count": "seven"}))
        .await;
    assert_eq!(r.status(), 422);
    let body = problem(r).await;
    assert_eq!(body["errors"][0]["field"], "count");
    assert_eq!(body["errors"][0]["code"], "invalid_type");
}

#[tokio::test]
async fn a_failed_validation_rule_is_a_422_naming_each_field() {
    let app = TestApp::spawn().await;
    let r = app.post_json(ECHO, &json!({"name": "", "count": 11})).await;
    assert_eq!(r.status(), 422);
    let body = problem(r).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["count", "name"]);
}

#[tokio::test]
async fn injection_strings_are_plain_data() {
    let app = TestApp::spawn().await;
    let evil = "'; DROP TABLE audit_events; --<script>";
    let r = app
        .post_json(ECHO, &json!({"name": "x", "count": 1, "note": evil}))
        .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["note"], evil);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(n >= 1, "the table is still there");
}

#[tokio::test]
async fn a_panicking_handler_is_an_opaque_500_problem() {
    let app = TestApp::spawn().await;
    let r = app.get("/v1/_probe/panic").await;
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(!text.contains("hunter2"), "panic detail leaked: {text}");
    assert!(!text.contains("secret-panic-detail"));
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], "internal_error");
    // The server is still up.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_request_past_the_timeout_is_a_503_problem_with_retry_after() {
    let app = TestApp::builder()
        .env("REQUEST_TIMEOUT_SECS", "1")
        .spawn()
        .await;
    let r = app.get("/v1/_probe/slow").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(problem(r).await["code"], "request_timeout");
}

#[tokio::test]
async fn an_exhausted_connection_pool_is_a_503_problem_not_a_hang() {
    let app = TestApp::builder()
        .env("DATABASE_MAX_CONNECTIONS", "1")
        .env("DATABASE_ACQUIRE_TIMEOUT_SECS", "1")
        .spawn()
        .await;
    assert_eq!(app.get("/v1/_probe/db").await.status(), 200);
    let held = app.state.db.acquire().await.unwrap();
    let r = app.get("/v1/_probe/db").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(problem(r).await["code"], "database_unavailable");
    drop(held);
    assert_eq!(app.get("/v1/_probe/db").await.status(), 200);
}
