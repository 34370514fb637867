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
    // Registering Bob's token from Ada's account creates Ada's own row.
    let r = register(&app, &ada, "fcm-token-bob", "hijack").await;
    assert_eq!(r.status(), 201);
    assert_ne!(r.json::<Value>().await.unwrap()["id"], bob_id.as_str());
    let still: Value = app
        .get_auth(&format!("/v1/devices/{bob_id}"), bob.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["name"], "Bob's Pixel");
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
