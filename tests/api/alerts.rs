//! Anomaly rules: each fires in a scenario built for it, stays quiet on the
//! happy path, reaches the webhook (after retries when the receiver fails
//! at first), and is listed and acknowledged by administrators only.

use crate::helpers::{problem, TestApp, STRONG_PASSWORD};
use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
use serde_json::{json, Value};
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

async fn alerts(app: &TestApp) -> Vec<(String, Option<uuid::Uuid>, Value)> {
    sqlx::query_as("SELECT rule, user_id, details FROM security_alerts ORDER BY security_alert_id")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_happy_path_raises_no_alert() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let next: Value = app
        .refresh(user.refresh_token())
        .await
        .json()
        .await
        .unwrap();
    app.get_auth("/v1/sessions", next["access_token"].as_str().unwrap())
        .await;
    app.login(&user.email, &user.password).await;
    app.post_auth(
        "/v1/auth/logout",
        next["access_token"].as_str().unwrap(),
        None,
    )
    .await;
    assert!(alerts(&app).await.is_empty(), "{:?}", alerts(&app).await);
}

#[tokio::test]
async fn a_failed_login_spike_on_one_account_raises_one_alert() {
    let app = TestApp::builder()
        .env("ALERT_FAILED_LOGINS_ACCOUNT", "3/900")
        .spawn()
        .await;
    let user = app.signed_up_user("ada@example.com").await;
    for _ in 0..6 {
        app.login(&user.email, "not-the-password-at-all").await;
    }
    let raised = alerts(&app).await;
    assert_eq!(raised.len(), 1, "once per crossing: {raised:?}");
    assert_eq!(raised[0].0, "failed_logins_account");
    assert_eq!(raised[0].1, Some(user.user_id));
}

#[tokio::test]
async fn a_failed_login_spike_from_one_ip_and_globally_raise_alerts() {
    let app = TestApp::builder()
        .env("ALERT_FAILED_LOGINS_IP", "4/900")
        .env("ALERT_FAILED_LOGINS_GLOBAL", "6/300")
        .spawn()
        .await;
    let stuffer = client_from("127.0.3.1");
    for i in 0..4 {
        stuffer
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": format!("victim{i}@example.com"), "password": "password-from-a-leak"}))
            .send()
            .await
            .unwrap();
    }
    let other = client_from("127.0.3.2");
    for i in 0..2 {
        other
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": format!("other{i}@example.com"), "password": "password-from-a-leak"}))
            .send()
            .await
            .unwrap();
    }
    let rules: Vec<String> = alerts(&app).await.into_iter().map(|a| a.0).collect();
    assert_eq!(rules, ["failed_logins_ip", "failed_logins_global"]);
}

#[tokio::test]
async fn refresh_token_reuse_raises_an_alert() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let next: serde_json::Value = app
        .refresh(user.refresh_token())
        .await
        .json()
        .await
        .unwrap();
    // A lost answer retried later is no alert: the successor is unused.
    app.clock.advance(chrono::Duration::hours(6));
    assert_eq!(app.refresh(user.refresh_token()).await.status(), 200);
    assert!(alerts(&app).await.is_empty());
    // Once the successor was used, the retired token is reuse.
    assert_eq!(
        app.refresh(next["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    assert_eq!(app.refresh(user.refresh_token()).await.status(), 401);
    let raised = alerts(&app).await;
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].0, "refresh_token_reuse");
}

#[tokio::test]
async fn a_sign_in_from_a_new_device_raises_an_alert() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let r = app
        .post_json("/v1/auth/login", &json!({"email": user.email, "password": STRONG_PASSWORD, "device": {"name": "Unknown tablet", "platform": "android"}}))
        .await;
    assert_eq!(r.status(), 200);
    let raised = alerts(&app).await;
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].0, "new_device");
    // The session and platform, never the name the user typed.
    assert_eq!(raised[0].2["platform"], "android");
    assert!(raised[0].2["session_id"].as_str().is_some());
    assert!(
        !raised[0].2.to_string().contains("Unknown tablet"),
        "{}",
        raised[0].2
    );
}

#[tokio::test]
async fn a_sign_in_from_a_new_country_raises_an_alert_only_via_a_trusted_proxy() {
    let app = TestApp::builder()
        .env("TRUSTED_PROXIES", "127.0.0.1")
        .env("GEO_COUNTRY_HEADER", "CF-IPCountry")
        .spawn()
        .await;
    let user = app.signed_up_user("ada@example.com").await;
    let login = |country: &'static str, from: &'static str| {
        let client = client_from(from);
        let url = app.url("/v1/auth/login");
        let body = json!({"email": user.email, "password": STRONG_PASSWORD});
        async move {
            client
                .post(url)
                .header("cf-ipcountry", country)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(login("DE", "127.0.0.1").await, 200);
    assert_eq!(login("DE", "127.0.0.1").await, 200);
    // An untrusted peer cannot claim a country.
    assert_eq!(login("BR", "127.0.4.1").await, 200);
    assert!(alerts(&app).await.iter().all(|a| a.0 != "new_country"));
    assert_eq!(login("FR", "127.0.0.1").await, 200);
    let countries: Vec<Value> = alerts(&app)
        .await
        .into_iter()
        .filter(|a| a.0 == "new_country")
        .map(|a| a.2)
        .collect();
    assert_eq!(countries.len(), 1);
    assert_eq!(countries[0]["country"], "FR");
}

#[tokio::test]
async fn a_refresh_from_another_platform_than_the_sign_in_raises_a_drift_alert() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let pair: Value = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("x-client-platform", "ios")
        .header("x-client-version", "3.2.1")
        .json(&json!({"email": user.email, "password": STRONG_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = app
        .client
        .post(app.url("/v1/auth/refresh"))
        .header("x-client-platform", "android")
        .header("x-client-version", "3.2.1")
        .json(&json!({"refresh_token": pair["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let drift: Vec<Value> = alerts(&app)
        .await
        .into_iter()
        .filter(|a| a.0 == "device_drift")
        .map(|a| a.2)
        .collect();
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0]["signed_in_as"], "ios");
    assert_eq!(drift[0]["refreshing_as"], "android");
}

#[tokio::test]
async fn a_refresh_from_another_app_install_raises_a_drift_alert_and_the_same_install_does_not() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("install@example.com").await;
    let install = uuid::Uuid::new_v4().to_string();
    let pair: Value = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("x-app-install-id", &install)
        .json(&json!({"email": user.email, "password": STRONG_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = |token: Value, install: Option<String>| {
        let app = &app;
        async move {
            let mut req = app.client.post(app.url("/v1/auth/refresh"));
            if let Some(id) = install {
                req = req.header("x-app-install-id", id);
            }
            let r = req
                .json(&json!({"refresh_token": token}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let drift = || async {
        alerts(&app)
            .await
            .into_iter()
            .filter(|a| a.0 == "device_drift")
            .map(|a| a.2)
            .collect::<Vec<Value>>()
    };
    // The same install: quiet.
    let pair = refresh(pair["refresh_token"].clone(), Some(install.clone())).await;
    assert!(drift().await.is_empty());
    // Another install, then none at all: each flagged.
    let pair = refresh(
        pair["refresh_token"].clone(),
        Some(uuid::Uuid::new_v4().to_string()),
    )
    .await;
    refresh(pair["refresh_token"].clone(), None).await;
    let found = drift().await;
    assert_eq!(found.len(), 2, "{found:?}");
    let kinds: Vec<&str> = found
        .iter()
        .filter_map(|d| d["install_id"].as_str())
        .collect();
    assert!(
        kinds.contains(&"different") && kinds.contains(&"missing"),
        "{kinds:?}"
    );
    // The stored value is a keyed index, not the id itself.
    let stored: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT install_id_index FROM sessions WHERE install_id_index IS NOT NULL",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(stored.unwrap().len(), 32);
    // A malformed id is refused, not ignored.
    let r = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("x-app-install-id", "not-a-uuid")
        .json(&json!({"email": user.email, "password": STRONG_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // On every /v1 operation, reads and unaudited changes included (the
    // spec's 36-character hyphenated form only), before anything happens.
    let token = user.tokens["access_token"].as_str().unwrap();
    let note = app
        .post_auth(
            "/v1/notes",
            token,
            Some(&json!({"title": "t", "body": "b"})),
        )
        .await;
    assert_eq!(note.status(), 201);
    let note: Value = note.json().await.unwrap();
    let long = format!("{install}a");
    let braced = format!("{{{install}}}");
    for bad in ["not-a-uuid", long.as_str(), braced.as_str()] {
        for (method, path) in [
            (reqwest::Method::GET, "/v1/me".to_owned()),
            (
                reqwest::Method::PATCH,
                format!("/v1/notes/{}", note["id"].as_str().unwrap()),
            ),
        ] {
            let r = app
                .client
                .request(method.clone(), app.url(&path))
                .bearer_auth(token)
                .header("x-app-install-id", bad)
                .json(&json!({"title": "changed"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{method} {path} {bad}");
            assert_eq!(
                crate::helpers::problem(r).await["code"],
                "invalid_install_id"
            );
        }
    }
    let r = app
        .get_auth(
            &format!("/v1/notes/{}", note["id"].as_str().unwrap()),
            token,
        )
        .await;
    let unchanged: Value = r.json().await.unwrap();
    assert_eq!(unchanged["title"], "t");
}

/// What the receiver got, and how often it was called.
type Received = (Arc<Mutex<Vec<Value>>>, Arc<AtomicUsize>);

/// A webhook receiver on loopback that fails its first `failures` calls.
async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<Value>>>, Arc<AtomicUsize>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route(
            "/hook",
            post(
                move |State((got, calls)): State<Received>, Json(body): Json<Value>| async move {
                    if calls.fetch_add(1, Ordering::SeqCst) < failures {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    got.lock().unwrap().push(body);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state((got.clone(), calls.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}/hook"), got, calls)
}

async fn reuse_alert(app: &TestApp) {
    let user = app.signed_up_user("ada@example.com").await;
    app.make_refresh_reuse(&user).await;
}

#[tokio::test]
async fn the_webhook_receives_the_alert_json() {
    let (url, got, _) = receiver(0).await;
    let app = TestApp::builder()
        .env("ALERT_WEBHOOK_URL", &url)
        .spawn()
        .await;
    reuse_alert(&app).await;
    let client = mobile_backend::alerts::webhook::client().unwrap();
    mobile_backend::alerts::webhook::deliver_due(&app.state, &client)
        .await
        .unwrap();
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["rule"], "refresh_token_reuse");
    assert_eq!(got[0]["severity"], "critical");
    assert!(got[0]["id"].is_string() && got[0]["created_at"].is_string());
}

#[tokio::test]
async fn a_receiver_that_fails_at_first_gets_the_alert_after_retries() {
    let (url, got, calls) = receiver(2).await;
    let app = TestApp::builder()
        .env("ALERT_WEBHOOK_URL", &url)
        .spawn()
        .await;
    reuse_alert(&app).await;
    let client = mobile_backend::alerts::webhook::client().unwrap();
    for _ in 0..3 {
        mobile_backend::alerts::webhook::deliver_due(&app.state, &client)
            .await
            .unwrap();
        app.clock.advance(chrono::Duration::minutes(10));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        got.lock().unwrap().len(),
        1,
        "delivered on the third attempt"
    );
    let status: String = sqlx::query_scalar("SELECT webhook_status FROM security_alerts")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "sent");
}

#[tokio::test]
async fn admins_list_and_acknowledge_alerts_and_query_the_audit_trail_and_users_cannot() {
    let app = TestApp::spawn().await;
    reuse_alert(&app).await;
    let user = app.signed_up_user("bob@example.com").await;
    for path in ["/v1/admin/alerts", "/v1/admin/audit-events"] {
        let r = app.get_auth(path, user.access()).await;
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(problem(r).await["code"], "forbidden");
    }

    let admin = crate::rate_limits::admin_with_aal2(&app, "admin@example.com").await;
    let list: Value = app
        .get_auth("/v1/admin/alerts?unacknowledged=true", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .post_auth(&format!("/v1/admin/alerts/{id}/acknowledge"), &admin, None)
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["acknowledged_at"].is_string());
    let list: Value = app
        .get_auth("/v1/admin/alerts?unacknowledged=true", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(list["items"].as_array().unwrap().is_empty());

    let events: Value = app
        .get_auth(
            &format!(
                "/v1/admin/audit-events?user_id={}&type=auth.login.succeeded&limit=5",
                user.user_id
            ),
            &admin,
        )
        .await
        .json()
        .await
        .unwrap();
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["event_type"], "auth.login.succeeded");
    // Paging: a cursor walks the trail without repeats.
    let page: Value = app
        .get_auth("/v1/admin/audit-events?limit=2", &admin)
        .await
        .json()
        .await
        .unwrap();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next: Value = app
        .get_auth(
            &format!("/v1/admin/audit-events?limit=2&before={cursor}"),
            &admin,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(page["items"][0]["id"], next["items"][0]["id"]);
    // Strict query strings.
    let r = app
        .get_auth("/v1/admin/audit-events?limit=5000", &admin)
        .await;
    assert_eq!(r.status(), 422);
    let r = app
        .get_auth("/v1/admin/audit-events?sort=asc", &admin)
        .await;
    assert_eq!(r.status(), 422);
    // The type filter: control characters are refused, as the spec says,
    // and its 64-character limit counts characters, not bytes (both found
    // by Schemathesis).
    let r = app
        .get_auth("/v1/admin/audit-events?type=auth.login%0Afailed", &admin)
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(problem(r).await["errors"][0]["code"], "control_characters");
    let wide = "é".repeat(64);
    let r = app
        .get_auth(&format!("/v1/admin/audit-events?type={wide}"), &admin)
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .get_auth(&format!("/v1/admin/audit-events?type={wide}x"), &admin)
        .await;
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn the_public_profile_shows_only_id_and_display_name() {
    let app = TestApp::spawn().await;
    let r = app
        .post_json("/v1/auth/register", &json!({"email": "named@example.com", "password": STRONG_PASSWORD, "display_name": "Ada L."}))
        .await;
    assert_eq!(r.status(), 202);
    let code = app.code_for("named@example.com").await;
    app.post_json(
        "/v1/auth/verify-email",
        &json!({"email": "named@example.com", "code": code, "password": STRONG_PASSWORD}),
    )
    .await;
    let named: Value = app
        .login("named@example.com", STRONG_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let named_id = crate::helpers::decode_claims(named["access_token"].as_str().unwrap())["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let viewer = app.signed_up_user("viewer@example.com").await;

    let body: Value = app
        .get_auth(&format!("/v1/users/{named_id}"), viewer.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"id": named_id, "display_name": "Ada L."}),
        "exactly two fields"
    );
    let r = app
        .get_auth(
            &format!("/v1/users/{}", uuid::Uuid::now_v7()),
            viewer.access(),
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        app.get(&format!("/v1/users/{named_id}")).await.status(),
        401
    );
}

#[tokio::test]
async fn viewing_many_distinct_profiles_quickly_raises_a_data_access_alert() {
    let app = TestApp::builder()
        .env("ALERT_PROFILE_VIEWS", "3/300")
        .spawn()
        .await;
    let scraper = app.signed_up_user("scraper@example.com").await;
    let mut ids = vec![];
    for i in 0..4 {
        ids.push(
            app.signed_up_user(&format!("person{i}@example.com"))
                .await
                .user_id,
        );
    }
    // Looking at one profile many times is not enumeration.
    for _ in 0..5 {
        app.get_auth(&format!("/v1/users/{}", ids[0]), scraper.access())
            .await;
    }
    assert!(alerts(&app)
        .await
        .iter()
        .all(|a| a.0 != "data_access_volume"));
    for id in &ids[1..] {
        assert_eq!(
            app.get_auth(&format!("/v1/users/{id}"), scraper.access())
                .await
                .status(),
            200
        );
    }
    let raised: Vec<_> = alerts(&app)
        .await
        .into_iter()
        .filter(|a| a.0 == "data_access_volume")
        .collect();
    assert_eq!(raised.len(), 1, "once per crossing");
    assert_eq!(raised[0].1, Some(scraper.user_id));
}

#[tokio::test]
async fn a_failed_login_spike_rotating_addresses_inside_one_ipv6_64_is_one_source() {
    let app = TestApp::builder()
        .env("TRUSTED_PROXIES", "127.0.0.1")
        .env("ALERT_FAILED_LOGINS_IP", "4/900")
        .spawn()
        .await;
    // Four addresses of one /64 (one host), one guess each.
    for i in 1..=4 {
        app.client
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", format!("2001:db8:1:2::{i:x}"))
            .json(&json!({"email": format!("victim{i}@example.com"), "password": "password-from-a-leak"}))
            .send()
            .await
            .unwrap();
    }
    // Another /64 of the same /48 is another source.
    app.client
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", "2001:db8:1:3::1")
        .json(&json!({"email": "victim9@example.com", "password": "password-from-a-leak"}))
        .send()
        .await
        .unwrap();
    let raised: Vec<(String, Value)> = alerts(&app).await.into_iter().map(|a| (a.0, a.2)).collect();
    let per_ip: Vec<&(String, Value)> = raised
        .iter()
        .filter(|a| a.0 == "failed_logins_ip")
        .collect();
    assert_eq!(per_ip.len(), 1, "{raised:?}");
    assert_eq!(per_ip[0].1["failures"], 4);
}
