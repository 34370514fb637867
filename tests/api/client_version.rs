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

/// What phones really send: iOS `CFBundleShortVersionString` has one to
/// three numbers, Android `versionName` carries suffixes.
async fn phone_gated_app() -> TestApp {
    TestApp::builder()
        .env("MIN_CLIENT_VERSION_IOS", "2.3")
        .env("MIN_CLIENT_VERSION_ANDROID", "2.3.0")
        .spawn()
        .await
}

async fn login_as(app: &TestApp, email: &str, platform: &str, version: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .header("x-client-platform", platform)
        .header("x-client-version", version)
        .json(&serde_json::json!({"email": email, "password": crate::helpers::STRONG_PASSWORD}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn phones_sign_in_with_the_versions_their_platforms_report() {
    let app = phone_gated_app().await;
    let user = app.signed_up_user("ada@example.com").await;
    for (platform, version) in [
        ("ios", "2.3"),
        ("ios", "2.3.0"),
        ("ios", "3"),
        ("ios", "2.10"),
        ("android", "2.3.0-beta.1"),
        ("android", "2.3.0-debug"),
        ("android", "2.3.0+45"),
        ("android", "2.3-rc.1+build.7"),
        ("android", "2.3.0.1"),
        ("android", "2024.01.15"),
    ] {
        let r = login_as(&app, &user.email, platform, version).await;
        assert_eq!(r.status(), 200, "{platform} {version}");
        assert_eq!(
            call(&app, "/v1/_probe", platform, version).await.status(),
            200
        );
    }
    // The session keeps the version as the app sent it.
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT app_version FROM sessions WHERE user_id = $1 AND app_version IS NOT NULL",
    )
    .bind(user.user_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(stored.iter().any(|v| v == "2.3.0-beta.1"), "{stored:?}");
}

#[tokio::test]
async fn below_the_minimum_is_426_numerically_with_tags_ignored() {
    let app = phone_gated_app().await;
    let user = app.signed_up_user("ada@example.com").await;
    for (platform, version) in [
        ("ios", "2"),
        ("ios", "2.2"),
        ("ios", "2.2.99"),
        ("android", "2.2.9-beta.1"),
        ("android", "2.2.99.99+45"),
    ] {
        let r = login_as(&app, &user.email, platform, version).await;
        assert_eq!(r.status(), 426, "{platform} {version}");
        let body = problem(r).await;
        assert_eq!(body["code"], "client_upgrade_required");
        // The minimum as configured.
        let min = if platform == "ios" { "2.3" } else { "2.3.0" };
        assert_eq!(body["min_version"], min);
    }
}

#[tokio::test]
async fn garbage_versions_are_400_with_a_reason_on_every_call_sign_in_included() {
    let app = phone_gated_app().await;
    let user = app.signed_up_user("ada@example.com").await;
    let long = format!("2.3.0-{}", "a".repeat(40));
    for (version, reason) in [
        ("v2.3", "must be a number"),
        ("latest", "must be a number"),
        ("2..3", "must be a number"),
        ("2.3.", "must be a number"),
        ("2.\t3", "must be a number"),
        ("1.2.3.4.5", "more than 4 numbers"),
        ("1234567890.1", "more than 9 digits"),
        ("2.3.0-", "-tag or +build"),
        ("2.3.0-beta_1", "-tag or +build"),
        (long.as_str(), "longer than 32"),
    ] {
        for r in [
            login_as(&app, &user.email, "android", version).await,
            call(&app, "/v1/_probe", "android", version).await,
        ] {
            assert_eq!(r.status(), 400, "{version:?}");
            let body = problem(r).await;
            assert_eq!(body["code"], "invalid_client_version");
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains(reason), "{version:?}: {detail}");
            assert!(detail.contains("for example 2, 2.3"), "{detail}");
        }
    }
    // Bytes that are not text at all.
    let r = app
        .client
        .get(app.url("/v1/_probe"))
        .header("x-client-platform", "ios")
        .header(
            "x-client-version",
            reqwest::header::HeaderValue::from_bytes(b"2.3\xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing was signed in by the refused attempts.
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions, 1, "only the sign-up's session");
}
