//! Devices, the example user-owned resource: CRUD for the owner, and the
//! BOLA matrix — another user's id answers 404 on every verb, with the same
//! body as a random id, and the object is unchanged.

use crate::helpers::{problem, TestApp, TestUser};
use serde_json::{json, Value};

async fn register(app: &TestApp, user: &TestUser, token: &str, name: &str) -> reqwest::Response {
    app.post_auth(
        "/v1/devices",
        user.access(),
        Some(&json!({"platform": "ios", "push_token": token, "name": name})),
    )
    .await
}

#[tokio::test]
async fn the_owner_registers_lists_reads_and_deletes_a_device() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let r = register(&app, &ada, "apns-token-0001", "Ada's iPhone").await;
    assert_eq!(r.status(), 201);
    let device: Value = r.json().await.unwrap();
    assert_eq!(device["name"], "Ada's iPhone");
    assert!(
        device.get("push_token").is_none(),
        "the token is never returned"
    );
    let id = device["id"].as_str().unwrap().to_owned();

    // The same token again refreshes the row instead of duplicating it.
    let r = register(&app, &ada, "apns-token-0001", "Ada's iPhone 16").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], id.as_str());

    let list: Vec<Value> = app
        .get_auth("/v1/devices", ada.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "Ada's iPhone 16");
    let one: Value = app
        .get_auth(&format!("/v1/devices/{id}"), ada.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], id.as_str());
    assert_eq!(
        app.delete_auth(&format!("/v1/devices/{id}"), ada.access())
            .await
            .status(),
        204
    );
    assert_eq!(
        app.get_auth(&format!("/v1/devices/{id}"), ada.access())
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn another_users_device_is_404_on_every_verb_like_a_random_id_and_stays_unchanged() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let bob = app.signed_up_user("bob@example.com").await;
    let bobs: Value = register(&app, &bob, "fcm-token-bob", "Bob's Pixel")
        .await
        .json()
        .await
        .unwrap();
    let bob_id = bobs["id"].as_str().unwrap().to_owned();
    let random = uuid::Uuid::now_v7().to_string();

    for id in [&bob_id, &random] {
        let got = app
            .get_auth(&format!("/v1/devices/{id}"), ada.access())
            .await;
        assert_eq!(got.status(), 404);
        let deleted = app
            .delete_auth(&format!("/v1/devices/{id}"), ada.access())
            .await;
        assert_eq!(deleted.status(), 404);
    }
    let theirs = problem(
        app.get_auth(&format!("/v1/devices/{bob_id}"), ada.access())
            .await,
    )
    .await;
    let missing = problem(
        app.get_auth(&format!("/v1/devices/{random}"), ada.access())
            .await,
    )
    .await;
    assert_eq!(
        (theirs["code"].clone(), theirs["detail"].clone()),
        (missing["code"].clone(), missing["detail"].clone())
    );
    assert_eq!(
        app.get_auth("/v1/devices/not-a-uuid", ada.access())
            .await
            .status(),
        404
    );

    // Ada's list does not show it, and Bob still has it, unchanged.
    let list: Vec<Value> = app
        .get_auth("/v1/devices", ada.access())
        .await
        .json()
        .await
        .unwrap();
    assert!(list.is_empty());
    let still: Value = app
        .get_auth(&format!("/v1/devices/{bob_id}"), bob.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still, bobs);
    // Registering Bob's token from Ada's account creates Ada's own row
    // (never Bob's row with Bob's id), and the token leaves Bob's account:
    // one account per push token, the latest (see the shared-phone tests).
    let r = register(&app, &ada, "fcm-token-bob", "hijack").await;
    assert_eq!(r.status(), 201);
    let adas: Value = r.json().await.unwrap();
    assert_ne!(adas["id"], bob_id.as_str());
    assert_eq!(adas["name"], "hijack");
    let gone = app
        .get_auth(&format!("/v1/devices/{bob_id}"), bob.access())
        .await;
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn bad_device_input_is_refused_and_the_push_token_is_not_stored_in_clear() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    for (body, field) in [
        (
            json!({"platform": "symbian", "push_token": "t"}),
            "platform",
        ),
        (json!({"platform": "ios", "push_token": ""}), "push_token"),
        (
            json!({"platform": "ios", "push_token": "t", "name": "x".repeat(65)}),
            "name",
        ),
        (
            json!({"platform": "ios", "push_token": "t", "user_id": ada.user_id}),
            "user_id",
        ),
    ] {
        let r = app
            .post_auth("/v1/devices", ada.access(), Some(&body))
            .await;
        assert_eq!(r.status(), 422, "{body}");
        assert_eq!(problem(r).await["errors"][0]["field"], field);
    }
    register(&app, &ada, "very-secret-push-token-123", "phone").await;
    let dump: Vec<(String,)> = sqlx::query_as("SELECT row_to_json(d)::text FROM devices d")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(dump.len(), 1);
    assert!(!dump[0].0.contains("very-secret-push-token-123"));
    // row_to_json prints bytea as hex, so the text check alone could never
    // fail for a token stored in a bytea column: look for the token's hex
    // too, and in the raw bytes of every bytea column.
    let token = b"very-secret-push-token-123";
    let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        !dump[0].0.contains(&hex),
        "the token's bytes are stored in clear"
    );
    let raw: Vec<(Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT push_token_ciphertext, push_token_index FROM devices")
            .fetch_all(&app.db)
            .await
            .unwrap();
    for (sealed, index) in &raw {
        for column in [sealed, index] {
            assert!(
                !column.windows(token.len()).any(|w| w == token),
                "a bytea column holds the token in clear"
            );
        }
    }

    assert_eq!(app.get("/v1/devices").await.status(), 401);
}

// ---- Shared phones: one account per push token, gone with the session ----

/// The push-token ids (device ids) the user sees.
async fn device_ids(app: &TestApp, user: &TestUser) -> Vec<String> {
    let r = app.get_auth("/v1/devices", user.access()).await;
    assert_eq!(r.status(), 200);
    let list: Vec<Value> = r.json().await.unwrap();
    list.iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn rows_of(app: &TestApp, user: &TestUser) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM devices WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// A second session of `user` (another phone).
async fn second_session(app: &TestApp, user: &TestUser) -> TestUser {
    let r = app
        .login(&user.email, crate::helpers::STRONG_PASSWORD)
        .await;
    assert_eq!(r.status(), 200);
    let pair: Value = r.json().await.unwrap();
    TestUser {
        email: user.email.clone(),
        password: user.password.clone(),
        user_id: user.user_id,
        tokens: pair,
    }
}

#[tokio::test]
async fn signing_out_removes_the_phones_registration_and_the_next_account_gets_the_token() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let bob = app.signed_up_user("bob@example.com").await;
    let token = "apns-shared-phone-0001";
    assert_eq!(
        register(&app, &ada, token, "Family iPad").await.status(),
        201
    );
    assert_eq!(device_ids(&app, &ada).await.len(), 1);

    // Ada signs out on the shared phone: her registration ends with it.
    let r = app.post_auth("/v1/auth/logout", ada.access(), None).await;
    assert!(r.status().is_success());
    assert_eq!(rows_of(&app, &ada).await, 0, "logout alone removes it");

    // Bob signs in on the same phone and registers the same token.
    let r = register(&app, &bob, token, "Family iPad").await;
    assert_eq!(r.status(), 201);
    assert_eq!(device_ids(&app, &bob).await.len(), 1);
    // Ada, signing in again elsewhere, does not have it.
    let ada_again = second_session(&app, &ada).await;
    assert!(device_ids(&app, &ada_again).await.is_empty());
}

#[tokio::test]
async fn the_latest_account_to_register_a_token_takes_it_and_learns_nothing_about_the_other() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let bob = app.signed_up_user("bob@example.com").await;
    let token = "fcm-token-changed-hands";
    // Ada is still signed in (she never signed out on that phone).
    assert_eq!(register(&app, &ada, token, "Old phone").await.status(), 201);
    let fresh = register(&app, &bob, "fcm-token-never-seen", "Phone").await;
    let taken = register(&app, &bob, token, "Phone").await;
    // The same answer a token nobody held gets: 201 and Bob's own view.
    assert_eq!(taken.status(), fresh.status());
    let fresh: Value = fresh.json().await.unwrap();
    let taken: Value = taken.json().await.unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&taken), keys(&fresh));
    let text = taken.to_string();
    assert!(
        !text.contains("ada") && !text.contains("Old phone"),
        "{text}"
    );
    assert!(!text.contains(&ada.user_id.to_string()));

    // The token is Bob's alone now.
    assert!(device_ids(&app, &ada).await.is_empty());
    assert_eq!(device_ids(&app, &bob).await.len(), 2);
    let holders: i64 = sqlx::query_scalar("SELECT count(DISTINCT user_id) FROM devices")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(holders, 1);
    // Ada's audit trail says her registration went, and why.
    let reason: String = sqlx::query_scalar(
        "SELECT details->>'reason' FROM audit_events
          WHERE event_type = 'device.registration.deleted' AND user_id = $1",
    )
    .bind(ada.user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(reason, "push_token_registered_by_another_account");

    // Ada registering it back takes it back.
    assert_eq!(register(&app, &ada, token, "Old phone").await.status(), 201);
    assert_eq!(device_ids(&app, &bob).await.len(), 1);
}

#[tokio::test]
async fn a_sessions_end_removes_only_its_own_registrations() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let tablet = second_session(&app, &ada).await;
    let watch = second_session(&app, &ada).await;
    register(&app, &ada, "apns-phone", "Phone").await;
    register(&app, &tablet, "apns-tablet", "Tablet").await;
    register(&app, &watch, "apns-watch", "Watch").await;
    // The watch re-registers the phone's token from its newer session: the
    // registration now ends with the watch's session, not the phone's.
    assert_eq!(
        register(&app, &watch, "apns-phone", "Phone").await.status(),
        200
    );
    assert_eq!(rows_of(&app, &ada).await, 3);

    let r = app
        .post_auth("/v1/auth/logout", tablet.access(), None)
        .await;
    assert!(r.status().is_success());
    assert_eq!(
        rows_of(&app, &ada).await,
        2,
        "the tablet's went, the others stay"
    );
    let r = app.post_auth("/v1/auth/logout", ada.access(), None).await;
    assert!(r.status().is_success());
    assert_eq!(
        rows_of(&app, &ada).await,
        2,
        "re-registered from the watch: it stays with the watch's session"
    );
    // Logout-all ends the rest.
    let r = app
        .post_auth("/v1/auth/logout-all", watch.access(), None)
        .await;
    assert!(r.status().is_success());
    assert_eq!(rows_of(&app, &ada).await, 0);
}

#[tokio::test]
async fn every_way_a_session_ends_removes_its_registrations() {
    let app = TestApp::spawn().await;
    let admin = app.staff_user("root@example.com", "admin").await;
    // Revoked for refresh-token reuse.
    let ada = app.signed_up_user("ada@example.com").await;
    register(&app, &ada, "apns-reuse", "Phone").await;
    let next: Value = app.refresh(ada.refresh_token()).await.json().await.unwrap();
    app.refresh(next["refresh_token"].as_str().unwrap()).await;
    assert_eq!(app.refresh(ada.refresh_token()).await.status(), 401);
    assert_eq!(rows_of(&app, &ada).await, 0, "reuse detection");

    // Revoked by staff.
    let bob = app.signed_up_user("bob@example.com").await;
    register(&app, &bob, "apns-staff", "Phone").await;
    let r = app
        .post_auth(
            &format!("/v1/admin/users/{}/revoke-sessions", bob.user_id),
            admin.access(),
            None,
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(rows_of(&app, &bob).await, 0, "staff revocation");

    // A password change ends the other sessions, and their registrations,
    // but keeps the changing session's.
    let cy = app.signed_up_user("cy@example.com").await;
    let other = second_session(&app, &cy).await;
    register(&app, &cy, "apns-cy-here", "Here").await;
    register(&app, &other, "apns-cy-other", "Other").await;
    let r = app
        .post_auth(
            "/v1/auth/password/change",
            cy.access(),
            Some(&json!({"current_password": crate::helpers::STRONG_PASSWORD,
                         "new_password": "a-brand-new-passphrase-77"})),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        device_ids(&app, &cy).await.len(),
        1,
        "the changing session's stays"
    );
}
