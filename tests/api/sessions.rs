//! The session list: own sessions only, `current` marked, and another
//! user's session id answers 404 and stays alive.

use crate::helpers::{decode_claims, problem, TestApp};
use serde_json::{json, Value};

#[tokio::test]
async fn the_list_shows_only_the_callers_sessions_with_current_marked() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let bob = app.signed_up_user("bob@example.com").await;
    let r = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": ada.email, "password": ada.password, "device": {"name": "Ada's Pixel", "platform": "android", "model": "Pixel 9"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let list: Vec<Value> = app
        .get_auth("/v1/sessions", ada.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 2);
    let ada_sid = decode_claims(ada.access())["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_sid = decode_claims(bob.access())["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(list.iter().all(|s| s["id"] != bob_sid.as_str()));
    let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], ada_sid.as_str());
    assert!(list
        .iter()
        .any(|s| s["device_name"] == "Ada's Pixel" && s["platform"] == "android"));
    assert_eq!(list[0]["ip"], "127.0.0.1");
}

#[tokio::test]
async fn deleting_another_users_session_is_404_like_a_random_id_and_leaves_it_alive() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let bob = app.signed_up_user("bob@example.com").await;
    let bob_sid = decode_claims(bob.access())["sid"]
        .as_str()
        .unwrap()
        .to_owned();

    let theirs = app
        .delete_auth(&format!("/v1/sessions/{bob_sid}"), ada.access())
        .await;
    let random = app
        .delete_auth(
            &format!("/v1/sessions/{}", uuid::Uuid::now_v7()),
            ada.access(),
        )
        .await;
    let garbage = app
        .delete_auth("/v1/sessions/not-a-uuid", ada.access())
        .await;
    assert_eq!(theirs.status(), 404);
    assert_eq!(random.status(), 404);
    assert_eq!(garbage.status(), 404);
    let (a, b) = (problem(theirs).await, problem(random).await);
    assert_eq!(a["code"], b["code"]);
    assert_eq!(a["detail"], b["detail"]);

    assert_eq!(
        app.get_auth("/v1/sessions", bob.access()).await.status(),
        200,
        "bob's session is untouched"
    );
    assert_eq!(app.refresh(bob.refresh_token()).await.status(), 200);
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_only() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let ada2: Value = app
        .login(&ada.email, &ada.password)
        .await
        .json()
        .await
        .unwrap();
    let bob = app.signed_up_user("bob@example.com").await;
    assert_eq!(
        app.post_auth("/v1/auth/logout-all", ada.access(), None)
            .await
            .status(),
        204
    );
    assert_eq!(
        app.get_auth("/v1/sessions", ada.access()).await.status(),
        401
    );
    assert_eq!(
        app.get_auth("/v1/sessions", ada2["access_token"].as_str().unwrap())
            .await
            .status(),
        401
    );
    assert_eq!(
        app.get_auth("/v1/sessions", bob.access()).await.status(),
        200
    );
}

/// Authentication reads the session on every request, in whichever process
/// serves it: a session ended through one process stops at once in
/// another that served the same token a moment before (nothing caches
/// liveness). Logout, logout-everywhere and a password change each.
#[tokio::test]
async fn an_ended_session_stops_at_once_in_every_process() {
    let a = TestApp::spawn().await;
    let b = TestApp::builder().same_database_as(&a).spawn().await;
    let ada = a.signed_up_user("two-processes@example.com").await;

    // Logout through A; B served the token just before.
    assert_eq!(b.get_auth("/v1/me", ada.access()).await.status(), 200);
    let r = a.post_auth("/v1/auth/logout", ada.access(), None).await;
    assert!(r.status().is_success(), "{}", r.status());
    let r = b.get_auth("/v1/me", ada.access()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(problem(r).await["code"], "invalid_token");

    // Logout everywhere through B ends a session A just served.
    let first: Value = a
        .login(&ada.email, &ada.password)
        .await
        .json()
        .await
        .unwrap();
    let second: Value = b
        .login(&ada.email, &ada.password)
        .await
        .json()
        .await
        .unwrap();
    let first = first["access_token"].as_str().unwrap();
    let second = second["access_token"].as_str().unwrap();
    assert_eq!(a.get_auth("/v1/sessions", first).await.status(), 200);
    let r = b.post_auth("/v1/auth/logout-all", second, None).await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(a.get_auth("/v1/sessions", first).await.status(), 401);
    assert_eq!(b.get_auth("/v1/sessions", first).await.status(), 401);

    // A write is refused the same way as a read.
    let r = a
        .send_auth(
            reqwest::Method::PATCH,
            "/v1/me",
            first,
            Some(&json!({"display_name": "After logout"})),
        )
        .await;
    assert_eq!(r.status(), 401);
}
