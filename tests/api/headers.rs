//! Headers on every response, request ids, and problem+json for unknown
//! paths and methods.

use crate::helpers::{problem, TestApp};

const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("cache-control", "no-store"),
];

fn assert_hardened(r: &reqwest::Response) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            r.headers().get(*name).map(|v| v.to_str().unwrap()),
            Some(*value),
            "{name} on {}",
            r.url()
        );
    }
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn healthz_answers_ok_without_touching_the_database() {
    let app = TestApp::spawn().await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert_hardened(&r);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn every_kind_of_response_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    for r in [
        app.get("/healthz").await,
        app.get("/readyz").await,
        app.get("/v1/nothing-here").await,
        app.post_raw("/v1/_probe/echo", "text/plain", b"x".to_vec())
            .await,
        app.get("/v1/_probe/panic").await,
    ] {
        assert_hardened(&r);
    }
}

#[tokio::test]
async fn hsts_is_not_sent_over_plain_http_in_development() {
    let app = TestApp::spawn().await;
    let r = app.get("/healthz").await;
    assert!(!r.headers().contains_key("strict-transport-security"));
}

#[tokio::test]
async fn hsts_is_sent_in_production() {
    let app = TestApp::builder()
        .env("APP_ENV", "production")
        .env("PUBLIC_BASE_URL", "https://api.example.com")
        .env("MAIL_TRANSPORT", "smtps://mail.example.com")
        .env("MAIL_FROM", "Example <no-reply@example.com>")
        .env("ARGON2_MEMORY_KIB", "19456")
        .env("ARGON2_ITERATIONS", "2")
        .spawn()
        .await;
    for r in [app.get("/healthz").await, app.get("/v1/missing").await] {
        assert_eq!(
            r.headers()["strict-transport-security"],
            "max-age=63072000; includeSubDomains"
        );
    }
}

#[tokio::test]
async fn a_well_formed_request_id_is_echoed_and_a_hostile_one_replaced() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "client-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-abc.123");

    let long = "a".repeat(500);
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", long.as_str())
        .send()
        .await
        .unwrap();
    let echoed = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(echoed, long);
    assert!(
        uuid::Uuid::parse_str(&echoed).is_ok(),
        "a fresh UUID: {echoed}"
    );
}

#[tokio::test]
async fn the_request_id_in_a_problem_body_matches_the_header() {
    let app = TestApp::spawn().await;
    let r = app.get("/v1/missing").await;
    let header = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = problem(r).await;
    assert_eq!(body["request_id"], header.as_str());
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problem_json() {
    let app = TestApp::spawn().await;
    let r = app.get("/v1/does-not-exist").await;
    assert_eq!(r.status(), 404);
    let body = problem(r).await;
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["status"], 404);

    let r = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(problem(r).await["code"], "method_not_allowed");
}
