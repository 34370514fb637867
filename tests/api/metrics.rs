//! Prometheus metrics are served on the metrics listener only.

use crate::helpers::TestApp;

#[tokio::test]
async fn request_metrics_appear_on_the_metrics_listener_by_route_template() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let _ = app.get("/v1/no/such/path/12345").await;
    let text = app.metrics_text().await;
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(text.contains("route=\"/healthz\""));
    assert!(text.contains("http_request_duration_seconds_bucket"));
    // Raw paths never become labels (cardinality and privacy).
    assert!(!text.contains("12345"));
    assert!(text.contains("route=\"unmatched\""));
}

#[tokio::test]
async fn the_public_listener_does_not_serve_metrics() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/metrics").await.status(), 404);
}

#[tokio::test]
async fn a_scenario_exposes_the_security_metrics() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    app.login(&user.email, "not-the-password-at-all").await;
    app.get_auth("/v1/sessions", user.access()).await;
    app.make_refresh_reuse(&user).await;
    app.drain_outbox().await;
    let text = app.metrics_text().await;
    for metric in [
        "auth_login_total",
        "auth_refresh_total",
        "audit_events_total",
        "mail_sent_total",
        "mail_outbox_pending",
        "security_alerts_total",
        "password_hash_wait_duration_seconds",
        "password_hash_duration_seconds",
        "db_pool_acquire_duration_seconds",
    ] {
        assert!(text.contains(metric), "{metric} missing");
    }
    assert!(text.contains("outcome=\"reuse_detected\""));
    assert!(text.contains("rule=\"refresh_token_reuse\""));
    // No user id, email or IP ever becomes a label.
    assert!(!text.contains(&user.user_id.to_string()));
    assert!(!text.contains("ada@example.com"));
    assert!(!text.contains("127.0.0.1"));
}
