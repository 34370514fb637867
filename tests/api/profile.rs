//! `/v1/me`: the owner's view, strict updates (mass assignment refused),
//! email change with its code and notices, deletion with crypto-shredding,
//! and the data export.

use crate::helpers::{problem, TestApp, TestUser};
use reqwest::Method;
use serde_json::{json, Value};

async fn patch_me(app: &TestApp, user: &TestUser, body: Value) -> reqwest::Response {
    app.send_auth(Method::PATCH, "/v1/me", user.access(), Some(&body))
        .await
}

async fn me(app: &TestApp, user: &TestUser) -> Value {
    let r = app.get_auth("/v1/me", user.access()).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The raw `users` row, as the database holds it.
async fn raw_user(app: &TestApp, id: uuid::Uuid) -> Value {
    sqlx::query_scalar(
        "SELECT row_to_json(u) FROM (SELECT role, status, email_verified_at, email_ciphertext, \
         display_name_ciphertext, phone_ciphertext, updated_at FROM users WHERE user_id = $1) u",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

fn full_profile() -> Value {
    json!({
        "display_name": "Ada Lovelace",
        "phone": "+447700900123",
        "date_of_birth": "1990-12-10",
        "address": {
            "line1": "12 Analytical Row",
            "city": "London",
            "postal_code": "N1 9GU",
            "country": "GB"
        }
    })
}

#[tokio::test]
async fn the_owner_reads_updates_and_clears_their_profile() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let before = me(&app, &user).await;
    assert_eq!(before["id"], user.user_id.to_string());
    assert_eq!(before["email"], "ada@example.com");
    assert_eq!(before["email_verified"], true);
    assert_eq!(before["role"], "user");
    assert_eq!(before["mfa_enabled"], false);
    assert!(before["profile"]["phone"].is_null());

    let r = patch_me(&app, &user, full_profile()).await;
    assert_eq!(r.status(), 200);
    let after: Value = r.json().await.unwrap();
    assert_eq!(after["profile"]["display_name"], "Ada Lovelace");
    assert_eq!(after["profile"]["phone"], "+447700900123");
    assert_eq!(after["profile"]["date_of_birth"], "1990-12-10");
    assert_eq!(after["profile"]["address"]["city"], "London");
    assert!(after["profile"]["address"]["line2"].is_null());
    assert_eq!(me(&app, &user).await, after);

    // null clears, absent leaves alone.
    let r = patch_me(&app, &user, json!({"phone": null})).await;
    assert_eq!(r.status(), 200);
    let cleared = me(&app, &user).await;
    assert!(cleared["profile"]["phone"].is_null());
    assert_eq!(cleared["profile"]["display_name"], "Ada Lovelace");

    // The audit row names the fields, never their values.
    let details: Vec<String> = sqlx::query_scalar(
        "SELECT details::text FROM audit_events WHERE event_type = 'user.profile.updated' ORDER BY audit_event_id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(details.len(), 2);
    assert!(details[0].contains("date_of_birth") && details[0].contains("phone"));
    assert!(!details.concat().contains("7700900123") && !details.concat().contains("London"));
}

#[tokio::test]
async fn mass_assignment_of_role_email_verification_id_or_status_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("mallory@example.com").await;
    let before = raw_user(&app, user.user_id).await;
    for (field, value) in [
        ("role", json!("admin")),
        ("email_verified", json!(true)),
        ("id", json!(uuid::Uuid::new_v4())),
        ("status", json!("active")),
        ("email", json!("other@example.com")),
        ("password_hash", json!("$argon2id$...")),
    ] {
        let mut body = json!({"display_name": "Mallory"});
        body[field] = value;
        let r = patch_me(&app, &user, body).await;
        assert_eq!(r.status(), 422, "{field}");
        let p = problem(r).await;
        assert_eq!(p["code"], "validation_failed");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
        assert_eq!(p["errors"][0]["code"], "unknown_field");
    }
    assert_eq!(raw_user(&app, user.user_id).await, before);
    assert_eq!(me(&app, &user).await["role"], "user");
}

#[tokio::test]
async fn each_bad_profile_value_is_refused_with_its_field_named() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("val@example.com").await;
    // Frozen test clock: compute dates relative to it.
    let today = app.clock.now().date_naive();
    let twelve = today - chrono::Duration::days(365 * 12);
    let tomorrow = today + chrono::Duration::days(1);
    let cases = [
        (json!({"display_name": ""}), "display_name"),
        (json!({"display_name": "x".repeat(65)}), "display_name"),
        (json!({"display_name": "bad\u{0007}name"}), "display_name"),
        (json!({"phone": "07700900123"}), "phone"),
        (json!({"phone": "+0447700900123"}), "phone"),
        (json!({"phone": "+44 7700 900123"}), "phone"),
        (json!({"phone": "+4477009001231234"}), "phone"),
        (
            json!({"date_of_birth": tomorrow.to_string()}),
            "date_of_birth",
        ),
        (
            json!({"date_of_birth": twelve.to_string()}),
            "date_of_birth",
        ),
        (json!({"date_of_birth": "1850-01-01"}), "date_of_birth"),
        (json!({"date_of_birth": "10/12/1990"}), "date_of_birth"),
        (
            json!({"address": {"line1": "x".repeat(129), "city": "A", "postal_code": "1", "country": "GB"}}),
            "address.line1",
        ),
        (
            json!({"address": {"line1": "1", "city": "A", "postal_code": "1", "country": "gb"}}),
            "address.country",
        ),
        (
            json!({"address": {"line1": "1", "city": "A", "postal_code": "1", "country": "GB", "notes": "x"}}),
            "address.notes",
        ),
        (json!({"address": {"line1": "1"}}), "address.city"),
    ];
    for (body, field) in cases {
        let r = patch_me(&app, &user, body.clone()).await;
        assert_eq!(r.status(), 422, "{body}");
        let p = problem(r).await;
        let fields: Vec<&str> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(
            fields.iter().any(|f| f.starts_with(field)),
            "{body}: {fields:?}"
        );
    }
    assert!(me(&app, &user).await["profile"]["phone"].is_null());
}

#[tokio::test]
async fn an_email_change_needs_the_password_and_the_code_sent_to_the_new_address() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("old@example.com").await;
    let change =
        |password: &str| json!({"new_email": "New@Example.com", "current_password": password});

    let r = app
        .post_auth(
            "/v1/me/email",
            user.access(),
            Some(&change("wrong-password-123")),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "invalid_credentials");

    let r = app
        .post_auth("/v1/me/email", user.access(), Some(&change(&user.password)))
        .await;
    assert_eq!(r.status(), 202);
    let mails = app.drain_outbox().await;
    let notice = mails
        .iter()
        .rev()
        .find(|m| m.to == "old@example.com")
        .unwrap();
    assert!(notice.text.contains("n**@example.com"), "{}", notice.text);
    // Nothing changes before the code.
    assert_eq!(me(&app, &user).await["email"], "old@example.com");

    let r = app
        .post_auth(
            "/v1/me/email/confirm",
            user.access(),
            Some(&json!({"code": "000000"})),
        )
        .await;
    assert_eq!(problem(r).await["code"], "invalid_code");
    let code = app.code_for("new@example.com").await;
    let r = app
        .post_auth(
            "/v1/me/email/confirm",
            user.access(),
            Some(&json!({"code": code})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["email"], "new@example.com");
    // The code is single use.
    let r = app
        .post_auth(
            "/v1/me/email/confirm",
            user.access(),
            Some(&json!({"code": code})),
        )
        .await;
    assert_eq!(problem(r).await["code"], "invalid_code");

    let mails = app.drain_outbox().await;
    assert!(mails.iter().any(|m| m.to == "old@example.com"
        && m.subject.contains("Email address changed")
        && m.text.contains("n**@example.com")));
    assert_eq!(
        app.login("old@example.com", &user.password).await.status(),
        401
    );
    assert_eq!(
        app.login("new@example.com", &user.password).await.status(),
        200
    );
}

#[tokio::test]
async fn changing_to_an_address_that_has_an_account_looks_the_same_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("one@example.com").await;
    app.signed_up_user("two@example.com").await;
    let before = app.drain_outbox().await.len();
    let r = app
        .post_auth(
            "/v1/me/email",
            user.access(),
            Some(&json!({"new_email": "two@example.com", "current_password": user.password})),
        )
        .await;
    assert_eq!(r.status(), 202);
    let mails = app.drain_outbox().await;
    let new: Vec<_> = mails[before..].iter().collect();
    // The other account's owner hears about it; no code exists to confirm.
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].to, "two@example.com");
    assert!(!new[0].text.chars().any(|c| c.is_ascii_digit()));
    let pending: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT pending_email_ciphertext FROM users WHERE user_id = $1")
            .bind(user.user_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(pending.is_none());
    assert_eq!(me(&app, &user).await["email"], "one@example.com");
}

#[tokio::test]
async fn deleting_the_account_needs_password_and_code_then_erases_and_shreds() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("leaving@example.com").await;
    let secret = app.enable_totp(&user).await;
    patch_me(&app, &user, full_profile()).await;
    app.post_auth(
        "/v1/devices",
        user.access(),
        Some(&json!({"platform": "ios", "push_token": "apns-token-leaving"})),
    )
    .await;
    let delete = |body: Value| {
        let (app, token) = (&app, user.access().to_owned());
        async move {
            app.send_auth(Method::DELETE, "/v1/me", &token, Some(&body))
                .await
        }
    };

    // A missing code is refused before the password is looked at; a wrong
    // password and a wrong code get one answer (no password oracle).
    let r = delete(json!({"current_password": "not-my-password-1"})).await;
    assert_eq!(r.status(), 422);
    assert_eq!(problem(r).await["errors"][0]["field"], "code");
    let r = delete(json!({"current_password": user.password})).await;
    assert_eq!(r.status(), 422);
    assert_eq!(problem(r).await["errors"][0]["field"], "code");
    let r = delete(json!({"current_password": "not-my-password-1", "code": "000000"})).await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "invalid_credentials");
    let r = delete(json!({"current_password": user.password, "code": "000000"})).await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "invalid_credentials");
    assert_eq!(me(&app, &user).await["email"], "leaving@example.com");

    let saved: (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT email_ciphertext, phone_ciphertext FROM users WHERE user_id = $1")
            .bind(user.user_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    app.clock.advance(chrono::Duration::seconds(31));
    let code = app.totp_code(&secret);
    let r = delete(json!({"current_password": user.password, "code": code})).await;
    assert_eq!(r.status(), 204);

    // Gone: the token, the row and everything hanging off it, the key.
    assert_eq!(app.get_auth("/v1/me", user.access()).await.status(), 401);
    assert_eq!(
        app.login("leaving@example.com", &user.password)
            .await
            .status(),
        401
    );
    for table in [
        "users",
        "user_keys",
        "sessions",
        "devices",
        "mfa_totp",
        "recovery_codes",
        "email_codes",
    ] {
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE user_id = $1"))
                .bind(user.user_id)
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    // Only the tombstone remains, and a notice went to the address.
    let tombstones: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'user.account.deleted' AND outcome = 'success' AND user_id = $1",
    )
    .bind(user.user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(tombstones, 1);
    assert!(app
        .drain_outbox()
        .await
        .iter()
        .any(|m| m.to == "leaving@example.com" && m.subject == "Security notice: Account deleted"));

    // A saved copy of the row opens with no key at all: not the master
    // ring, not another user's key.
    let aad = |c| mobile_backend::crypto::Aad::new("users", c, user.user_id);
    for (column, sealed) in [("email", &saved.0), ("phone", &saved.1)] {
        assert!(
            mobile_backend::crypto::aead::open(&app.state.keys.data, &aad(column), sealed).is_err()
        );
        let other = app
            .signed_up_user(&format!("other-{column}@example.com"))
            .await;
        let mut conn = app.db.acquire().await.unwrap();
        let other_key = mobile_backend::user_keys::UserKey::load(
            &mut conn,
            &app.state.keys.data,
            other.user_id,
        )
        .await
        .unwrap();
        assert!(other_key.open(&aad(column), sealed).is_err());
    }
    // The address is free again.
    assert_eq!(
        app.register("leaving@example.com", &user.password)
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn the_export_holds_the_callers_data_and_nobody_elses() {
    let app = TestApp::spawn().await;
    let alice = app.signed_up_user("alice.export@example.com").await;
    let bob = app.signed_up_user("bob.export@example.com").await;
    patch_me(&app, &alice, full_profile()).await;
    patch_me(
        &app,
        &bob,
        json!({"display_name": "Bob Builder", "phone": "+12025550123"}),
    )
    .await;
    for (u, token) in [(&alice, "alice-push-token"), (&bob, "bob-push-token")] {
        app.post_auth(
            "/v1/devices",
            u.access(),
            Some(&json!({"platform": "android", "push_token": token, "name": format!("{} phone", u.email)})),
        )
        .await;
    }
    // A support agent looks at Alice's record: she sees that it happened,
    // not the agent's IP address or user agent.
    let support = app.staff_user("agent@example.com", "support").await;
    let r = app
        .get_auth(
            &format!("/v1/admin/users/{}", alice.user_id),
            support.access(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app.get_auth("/v1/me/export", alice.access()).await;
    assert_eq!(r.status(), 200);
    let export: Value = r.json().await.unwrap();
    let viewed = export["audit_events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "admin.user.viewed")
        .expect("the staff view is in the export");
    assert!(viewed["ip"].is_null() && viewed["user_agent"].is_null());
    assert!(!export.to_string().contains("agent@example.com"));
    assert_eq!(export["account"]["email"], "alice.export@example.com");
    assert_eq!(export["account"]["profile"]["phone"], "+447700900123");
    assert_eq!(export["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(export["devices"].as_array().unwrap().len(), 1);
    assert_eq!(export["mfa"]["totp_enabled"], false);
    let types: Vec<&str> = export["audit_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"auth.login.succeeded") && types.contains(&"user.profile.updated"));
    let text = export.to_string();
    for foreign in [
        "bob",
        "Bob",
        "+12025550123",
        bob.user_id.to_string().as_str(),
    ] {
        assert!(!text.contains(foreign), "{foreign} leaked into the export");
    }
    // No push token, hash or secret either.
    assert!(!text.contains("alice-push-token"));
}

#[tokio::test]
async fn an_address_taken_between_request_and_confirm_is_a_conflict_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("racer@example.com").await;
    let r = app
        .post_auth(
            "/v1/me/email",
            user.access(),
            Some(&json!({"new_email": "contested@example.com", "current_password": user.password})),
        )
        .await;
    assert_eq!(r.status(), 202);
    let code = app.code_for("contested@example.com").await;
    // Someone else registers the address before the confirmation.
    assert_eq!(
        app.register("contested@example.com", &user.password)
            .await
            .status(),
        202
    );
    let r = app
        .post_auth(
            "/v1/me/email/confirm",
            user.access(),
            Some(&json!({"code": code})),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "email_unavailable");
    assert_eq!(me(&app, &user).await["email"], "racer@example.com");
}

#[tokio::test]
async fn with_mfa_on_an_email_change_needs_an_aal2_session() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("stepup@example.com").await;
    // A second session from before MFA was turned on stays aal1.
    let older: Value = app
        .login("stepup@example.com", &user.password)
        .await
        .json()
        .await
        .unwrap();
    app.enable_totp(&user).await;
    let older_token = older["access_token"].as_str().unwrap();
    let body = json!({"new_email": "elsewhere@example.com", "current_password": user.password});
    let r = app
        .post_auth("/v1/me/email", older_token, Some(&body))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "mfa_required");
    let r = app.get_auth("/v1/me/export", older_token).await;
    assert_eq!(problem(r).await["code"], "mfa_required");
    // The session that completed the second factor may.
    let r = app
        .post_auth("/v1/me/email", user.access(), Some(&body))
        .await;
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn the_last_admin_cannot_delete_their_own_account() {
    let app = TestApp::spawn().await;
    let admin = app.signed_up_user("last-admin@example.com").await;
    let secret = app.enable_totp(&admin).await;
    sqlx::query("UPDATE users SET role = 'admin' WHERE user_id = $1")
        .bind(admin.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    app.clock.advance(chrono::Duration::seconds(31));
    let body = json!({"current_password": admin.password, "code": app.totp_code(&secret)});
    let r = app
        .send_auth(Method::DELETE, "/v1/me", admin.access(), Some(&body))
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "last_admin");
    assert_eq!(me(&app, &admin).await["role"], "admin");
}

/// `PATCH /v1/me` with a raw body and content type.
async fn patch_me_as(
    app: &TestApp,
    user: &TestUser,
    content_type: &str,
    body: &str,
) -> reqwest::Response {
    app.client
        .patch(app.url("/v1/me"))
        .bearer_auth(user.access())
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_merge_patch_clears_with_null_keeps_what_is_absent_and_json_behaves_the_same() {
    let app = TestApp::spawn().await;
    let set = r#"{"display_name": "Ada", "phone": "+447700900123"}"#;
    let clear = r#"{"phone": null}"#;
    let mut results = Vec::new();
    for (i, content_type) in [
        "application/merge-patch+json",
        "application/merge-patch+json; charset=utf-8",
        "application/json",
    ]
    .iter()
    .enumerate()
    {
        let user = app.signed_up_user(&format!("user{i}@example.com")).await;
        let r = patch_me_as(&app, &user, content_type, set).await;
        assert_eq!(r.status(), 200, "{content_type}");
        let r = patch_me_as(&app, &user, content_type, clear).await;
        assert_eq!(r.status(), 200, "{content_type}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["profile"]["phone"],
            Value::Null,
            "{content_type}: null clears"
        );
        assert_eq!(
            body["profile"]["display_name"], "Ada",
            "{content_type}: absent keeps"
        );
        assert_eq!(me(&app, &user).await["profile"], body["profile"]);
        // The same refusals too: an unknown member changes nothing.
        let r = patch_me_as(
            &app,
            &user,
            content_type,
            r#"{"role": "admin", "display_name": "X"}"#,
        )
        .await;
        assert_eq!(r.status(), 422, "{content_type}");
        assert_eq!(problem(r).await["errors"][0]["code"], "unknown_field");
        results.push(me(&app, &user).await["profile"].clone());
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");

    // Any other content type is 415, and changes nothing.
    let user = app.signed_up_user("other@example.com").await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/merge-patch",
    ] {
        let r = patch_me_as(&app, &user, content_type, r#"{"display_name": "Eve"}"#).await;
        assert_eq!(r.status(), 415, "{content_type}");
        assert_eq!(problem(r).await["code"], "unsupported_media_type");
    }
    assert_eq!(
        me(&app, &user).await["profile"]["display_name"],
        Value::Null
    );
}

#[tokio::test]
async fn a_body_failing_three_fields_lists_all_three_with_messages_for_people() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let r = patch_me(
        &app,
        &user,
        json!({
            "display_name": "x".repeat(65),
            "phone": "0044 7700 900123",
            "address": {"line1": "221B Baker Street", "city": "London", "postal_code": "NW1 6XE", "country": "Britain"},
        }),
    )
    .await;
    assert_eq!(r.status(), 422);
    let body = problem(r).await;
    let errors = body["errors"].as_array().unwrap();
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["address.country", "display_name", "phone"],
        "{body}"
    );
    for e in errors {
        let message = e["message"].as_str().unwrap();
        assert!(message.ends_with('.') && message.len() > 10, "{e}");
        for word in ["Failed", "rule", "`", "length", "regex", "validator"] {
            assert!(!message.contains(word), "{word:?} in {e}");
        }
    }
    assert_eq!(errors[1]["message"], "Must be 1 to 64 characters long.");
    // Nothing changed.
    assert_eq!(
        me(&app, &user).await["profile"]["display_name"],
        Value::Null
    );
}

/// Problems serde finds (an unknown field, a wrong type, nested too) are
/// listed together with the failed rules, not one per request: an app
/// marks every wrong field of the form at once, and nothing changes.
#[tokio::test]
async fn unknown_mistyped_and_invalid_fields_are_listed_together() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let r = patch_me(
        &app,
        &user,
        json!({
            "role": "admin",
            "display_name": "",
            "phone": 5,
            "address": {"line1": "221B Baker Street", "city": 7, "postal_code": "NW1 6XE", "country": "GB", "planet": "Earth"},
        }),
    )
    .await;
    assert_eq!(r.status(), 422);
    let body = problem(r).await;
    let mut found: Vec<(String, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    let expected: Vec<(String, String)> = [
        ("address.city", "invalid_type"),
        ("address.planet", "unknown_field"),
        ("display_name", "length"),
        ("phone", "invalid_type"),
        ("role", "unknown_field"),
    ]
    .iter()
    .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
    .collect();
    assert_eq!(found, expected, "{body}");
    assert_eq!(me(&app, &user).await["role"], "user", "nothing changed");
}

#[tokio::test]
async fn a_merge_patch_merges_the_address_member_by_member_and_plain_json_replaces_it() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let merge = "application/merge-patch+json";
    let full = r#"{"address": {"line1": "221B Baker Street", "line2": "Flat 1", "city": "London",
        "region": "Greater London", "postal_code": "NW1 6XE", "country": "GB"}}"#;
    assert_eq!(patch_me_as(&app, &user, merge, full).await.status(), 200);

    // One member changes, one is added over, the rest is kept.
    let r = patch_me_as(
        &app,
        &user,
        merge,
        r#"{"address": {"line2": "Flat 2", "city": "Leeds"}}"#,
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["profile"]["address"],
        json!({"line1": "221B Baker Street", "line2": "Flat 2", "city": "Leeds",
               "region": "Greater London", "postal_code": "NW1 6XE", "country": "GB"})
    );
    assert_eq!(me(&app, &user).await["profile"], body["profile"]);

    // `null` inside the address removes that member only.
    let r = patch_me_as(&app, &user, merge, r#"{"address": {"region": null}}"#).await;
    assert_eq!(r.status(), 200);
    let address = me(&app, &user).await["profile"]["address"].clone();
    assert_eq!(address["region"], Value::Null);
    assert_eq!(address["city"], "Leeds");
    assert_eq!(address["line2"], "Flat 2");

    // An empty address patch changes nothing.
    let r = patch_me_as(&app, &user, merge, r#"{"address": {}}"#).await;
    assert_eq!(r.status(), 200);
    assert_eq!(me(&app, &user).await["profile"]["address"], address);

    // A required member cannot be removed, and a bad value is named; either
    // way nothing changes.
    for (body, field, code) in [
        (
            r#"{"address": {"line1": null}}"#,
            "address.line1",
            "invalid_type",
        ),
        (
            r#"{"address": {"country": "gb"}}"#,
            "address.country",
            "country_code",
        ),
        (
            r#"{"address": {"postcode": "X"}}"#,
            "address.postcode",
            "unknown_field",
        ),
    ] {
        let r = patch_me_as(&app, &user, merge, body).await;
        assert_eq!(r.status(), 422, "{body}");
        let p = problem(r).await;
        assert_eq!(p["errors"][0]["field"], field, "{p}");
        assert_eq!(p["errors"][0]["code"], code, "{p}");
        assert_eq!(me(&app, &user).await["profile"]["address"], address);
    }

    // Plain JSON keeps its old meaning: the object is the whole address.
    let r = patch_me_as(
        &app,
        &user,
        "application/json",
        r#"{"address": {"city": "York"}}"#,
    )
    .await;
    assert_eq!(r.status(), 422);
    let p = problem(r).await;
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["address.line1", "address.postal_code", "address.country"],
        "{p}"
    );
    assert!(p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["code"] == "missing_field" && e["message"] == "This field is required."));
    assert_eq!(me(&app, &user).await["profile"]["address"], address);
    let r = patch_me_as(
        &app,
        &user,
        "application/json",
        r#"{"address": {"line1": "1 Main Street", "city": "York", "postal_code": "YO1 7HH", "country": "GB"}}"#,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        me(&app, &user).await["profile"]["address"],
        json!({"line1": "1 Main Street", "line2": null, "city": "York",
               "region": null, "postal_code": "YO1 7HH", "country": "GB"}),
        "plain JSON replaced the address, line2 included"
    );

    // Removing the address, then patching into nothing: the patch must hold
    // every required member.
    let r = patch_me_as(&app, &user, merge, r#"{"address": null}"#).await;
    assert_eq!(r.status(), 200);
    let r = patch_me_as(
        &app,
        &user,
        merge,
        r#"{"address": {"city": "Bath"}, "display_name": "Ada"}"#,
    )
    .await;
    assert_eq!(r.status(), 422);
    let p = problem(r).await;
    assert_eq!(p["errors"].as_array().unwrap().len(), 3, "{p}");
    let profile = me(&app, &user).await["profile"].clone();
    assert_eq!(profile["address"], Value::Null);
    assert_eq!(profile["display_name"], Value::Null, "nothing changed");
}

#[tokio::test]
async fn a_merge_patch_reads_only_the_callers_own_address() {
    // A second account's merge patch builds on its own (empty) address,
    // never on another user's: it cannot fill in someone else's lines.
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let eve = app.signed_up_user("eve@example.com").await;
    let full = r#"{"address": {"line1": "221B Baker Street", "city": "London", "postal_code": "NW1 6XE", "country": "GB"}}"#;
    let merge = "application/merge-patch+json";
    assert_eq!(patch_me_as(&app, &ada, merge, full).await.status(), 200);
    let r = patch_me_as(&app, &eve, merge, r#"{"address": {"city": "Leeds"}}"#).await;
    assert_eq!(r.status(), 422);
    assert_eq!(me(&app, &eve).await["profile"]["address"], Value::Null);
    assert_eq!(me(&app, &ada).await["profile"]["address"]["city"], "London");
}
