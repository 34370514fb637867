//! Prometheus metrics are served on the metrics listener only.

use crate::helpers::TestApp;

#[tokio::test]
async fn request_metrics_appear_on_the_metrics_listener_by_route_template() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let _ = app.get("/v1/no/such/path/12345").await;
    let text = app
        .client
        .get(format!("http://{}/metrics", app.metrics_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
