//! The old-client gate: 426 below the platform minimum, on /v1 only,
//! changeable at run time.

use crate::helpers::{problem, TestApp};

async fn call(app: &TestApp, path: &str, platform: &str, version: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("x-client-platform", platform)
        .header("x-client-version", version)
        .send()
        .await
        .unwrap()
}

async fn gated_app() -> TestApp {
    TestApp::builder()
        .env("MIN_CLIENT_VERSION_IOS", "2.4.0")
        .env(
            "CLIENT_STORE_URL_IOS",
            "https://apps.apple.com/app/id000000",
        )
        .spawn()
        .await
}

#[tokio::test]
async fn an_app_below_the_minimum_gets_426_with_the_minimum_and_store_link() {
    let app = gated_app().await;
    let r = call(&app, "/v1/_probe", "ios", "2.3.9").await;
    assert_eq!(r.status(), 426);
    let body = problem(r).await;
    assert_eq!(body["code"], "client_upgrade_required");
    assert_eq!(body["min_version"], "2.4.0");
    assert_eq!(body["store_url"], "https://apps.apple.com/app/id000000");
}

#[tokio::test]
async fn apps_at_or_above_the_minimum_and_other_platforms_pass() {
    let app = gated_app().await;
    assert_eq!(call(&app, "/v1/_probe", "ios", "2.4.0").await.status(), 200);
    assert_eq!(
        call(&app, "/v1/_probe", "ios", "2.10.0").await.status(),
        200
    );
    assert_eq!(
        call(&app, "/v1/_probe", "android", "0.1.0").await.status(),
        200
    );
    assert_eq!(
        app.get("/v1/_probe").await.status(),
        200,
        "no headers: not an app"
    );
}

#[tokio::test]
async fn operational_endpoints_are_not_gated() {
    let app = gated_app().await;
    assert_eq!(call(&app, "/healthz", "ios", "1.0.0").await.status(), 200);
}

#[tokio::test]
async fn malformed_version_headers_are_a_400_problem() {
    let app = gated_app().await;
    let r = call(&app, "/v1/_probe", "ios", "latest").await;
    assert_eq!(r.status(), 400);
    assert_eq!(problem(r).await["code"], "invalid_client_version");
    let r = app
        .client
        .get(app.url("/v1/_probe"))
        .header("x-client-platform", "ios")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a platform without a version");
    assert_eq!(problem(r).await["code"], "invalid_client_version");
    let r = call(&app, "/v1/_probe", "blackberry", "1.0.0").await;
    assert_eq!(r.status(), 400);
    assert_eq!(problem(r).await["code"], "invalid_client_platform");
}

#[tokio::test]
async fn raising_the_minimum_at_run_time_takes_effect_without_a_restart() {
    let app = gated_app().await;
    assert_eq!(
        call(&app, "/v1/_probe", "android", "3.0.0").await.status(),
        200
    );
    // What an administrator's PUT (from any process) leaves in the database,
    // then this process's next refresh.
    sqlx::query(
        "INSERT INTO client_policy (platform, min_version, updated_at, updated_by) VALUES ('android', '3.1.0', now(), $1)",
    )
    .bind(uuid::Uuid::new_v4())
    .execute(&app.db)
    .await
    .unwrap();
    mobile_backend::admin::client_policy::refresh(&app.state)
        .await
        .unwrap();
    let r = call(&app, "/v1/_probe", "android", "3.0.0").await;
    assert_eq!(r.status(), 426);
    assert!(problem(r).await.get("store_url").is_none());
}
