//! Notes, the example user-owned resource: the owner's journey on every
//! verb, cursor pages, input rules, PATCH semantics, the per-user cap, and
//! the BOLA matrix (another user's id is the same 404 as a random one on
//! every verb, and the note is unchanged). The generic checks every owned
//! table gets (sealing at rest, export, erasure, cross-user access over
//! the whole route table) are in `owned.rs`.

use crate::helpers::{problem, TestApp, TestUser};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;

async fn create(app: &TestApp, user: &TestUser, title: &str, body: &str) -> Value {
    let r = app
        .post_auth(
            "/v1/notes",
            user.access(),
            Some(&json!({"title": title, "body": body})),
        )
        .await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

#[tokio::test]
async fn the_owner_creates_lists_reads_updates_and_deletes_a_note() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let note = create(&app, &ada, "Groceries", "Eggs\nFlour\tx2").await;
    assert_eq!(note["title"], "Groceries");
    assert_eq!(note["body"], "Eggs\nFlour\tx2");
    assert_eq!(note["created_at"], note["updated_at"]);
    assert!(note.get("user_id").is_none());
    let id = note["id"].as_str().unwrap().to_owned();

    let list = json_of(app.get_auth("/v1/notes", ada.access()).await).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0], note);
    assert_eq!(list["next_cursor"], Value::Null);
    let one = json_of(app.get_auth(&format!("/v1/notes/{id}"), ada.access()).await).await;
    assert_eq!(one, note);

    app.clock.advance(chrono::Duration::minutes(5));
    let r = app
        .send_auth(
            Method::PATCH,
            &format!("/v1/notes/{id}"),
            ada.access(),
            Some(&json!({"title": "Groceries for Sunday"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let updated = json_of(r).await;
    assert_eq!(updated["title"], "Groceries for Sunday");
    assert_eq!(
        updated["body"], "Eggs\nFlour\tx2",
        "an absent field is kept"
    );
    assert_eq!(updated["created_at"], note["created_at"]);
    assert_ne!(updated["updated_at"], note["updated_at"]);

    let r = app
        .delete_auth(&format!("/v1/notes/{id}"), ada.access())
        .await;
    assert_eq!(r.status(), 204);
    for (method, status) in [(Method::GET, 404), (Method::DELETE, 404)] {
        let r = app
            .send_auth(method, &format!("/v1/notes/{id}"), ada.access(), None)
            .await;
        assert_eq!(r.status(), status);
    }
    // Creation and deletion are audited, with the id and never the text.
    let events: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, details FROM audit_events WHERE user_id = $1 AND event_type LIKE 'notes.%' ORDER BY occurred_at, inserted_at",
    )
    .bind(ada.user_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        events,
        vec![
            ("notes.note.created".into(), json!({"note_id": id})),
            ("notes.note.deleted".into(), json!({"note_id": id})),
        ]
    );
    assert_eq!(app.get("/v1/notes").await.status(), 401);
}

#[tokio::test]
async fn pages_walk_every_note_once_newest_first_and_a_bad_cursor_is_refused() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let bob = app.signed_up_user("bob@example.com").await;
    // Bob's note is older than all of Ada's, so Ada's cursors point past it.
    let bobs_note = create(&app, &bob, "bob's", "body").await;
    let mut created = Vec::new();
    for i in 0..45 {
        let n = create(&app, &ada, &format!("note {i}"), "body").await;
        created.push(n["id"].as_str().unwrap().to_owned());
    }

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    let mut cursors = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/notes?limit=20&cursor={c}"),
            None => "/v1/notes?limit=20".to_owned(),
        };
        let r = app.get_auth(&path, ada.access()).await;
        assert_eq!(r.status(), 200, "{path}");
        let page = json_of(r).await;
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        seen.extend(items.iter().map(|n| n["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => {
                cursors.push(c.to_owned());
                cursor = Some(c.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(sizes, vec![20, 20, 5]);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 45, "no duplicates");
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let default = json_of(app.get_auth("/v1/notes", ada.access()).await).await;
    assert_eq!(default["items"].as_array().unwrap().len(), 20);

    // Ada's cursor in Bob's hands only positions Bob's own list: the notes
    // older than it are Ada's 25 and Bob's one, and he sees his one.
    let bobs = json_of(
        app.get_auth(&format!("/v1/notes?cursor={}", cursors[0]), bob.access())
            .await,
    )
    .await;
    assert_eq!(bobs["items"], json!([bobs_note]));
    assert_eq!(bobs["next_cursor"], Value::Null);

    // Altered, truncated, made up, or an id passed as a cursor: 422.
    let good = &cursors[0];
    let mut flipped = good.clone().into_bytes();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for bad in [
        flipped.as_str(),
        &good[..good.len() - 2],
        "garbage",
        created[3].as_str(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let r = app
            .get_auth(&format!("/v1/notes?cursor={bad}"), ada.access())
            .await;
        assert_eq!(r.status(), 422, "{bad}");
        let body = problem(r).await;
        assert_eq!(body["errors"][0]["field"], "cursor", "{bad}");
        assert_eq!(body["errors"][0]["code"], "invalid_cursor", "{bad}");
    }
    for query in ["limit=0", "limit=101", "limit=ten", "page=2"] {
        let r = app
            .get_auth(&format!("/v1/notes?{query}"), ada.access())
            .await;
        assert_eq!(r.status(), 422, "{query}");
    }
}

#[tokio::test]
async fn another_users_note_is_404_on_every_verb_like_a_random_id_and_stays_unchanged() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let bob = app.signed_up_user("bob@example.com").await;
    let bobs = create(&app, &bob, "Bob's secret", "Do not read").await;
    let bob_id = bobs["id"].as_str().unwrap().to_owned();
    let random = uuid::Uuid::now_v7().to_string();
    let patch = json!({"title": "hijacked"});

    let mut answers = Vec::new();
    for id in [&bob_id, &random] {
        let mut these = Vec::new();
        for (method, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(&patch)),
            (Method::DELETE, None),
        ] {
            let r = app
                .send_auth(
                    method.clone(),
                    &format!("/v1/notes/{id}"),
                    ada.access(),
                    body,
                )
                .await;
            assert_eq!(r.status(), 404, "{method} {id}");
            let p = problem(r).await;
            these.push((p["code"].clone(), p["detail"].clone()));
        }
        answers.push(these);
    }
    assert_eq!(
        answers[0], answers[1],
        "another's id answers like a random one"
    );
    let list = json_of(app.get_auth("/v1/notes", ada.access()).await).await;
    assert!(list["items"].as_array().unwrap().is_empty());
    let still = json_of(
        app.get_auth(&format!("/v1/notes/{bob_id}"), bob.access())
            .await,
    )
    .await;
    assert_eq!(still, bobs);
    assert_eq!(
        app.get_auth("/v1/notes/not-a-uuid", ada.access())
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn bad_note_input_is_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let ok = "fine";
    for (body, field, code) in [
        (json!({"title": "", "body": ok}), "title", "length"),
        (
            json!({"title": "t".repeat(201), "body": ok}),
            "title",
            "length",
        ),
        (json!({"title": ok, "body": ""}), "body", "length"),
        (
            json!({"title": ok, "body": "b".repeat(10_001)}),
            "body",
            "length",
        ),
        (
            json!({"title": "two\nlines", "body": ok}),
            "title",
            "control_characters",
        ),
        (
            json!({"title": ok, "body": "carriage\rreturn"}),
            "body",
            "control_characters",
        ),
        (
            json!({"title": ok, "body": "nul\u{0}"}),
            "body",
            "control_characters",
        ),
        (
            json!({"title": ok, "body": ok, "user_id": ada.user_id}),
            "user_id",
            "unknown_field",
        ),
        (json!({"title": ok}), "body", "missing_field"),
        (json!({"title": 5, "body": ok}), "title", "invalid_type"),
        (json!(["a title", "a body"]), "", "invalid_type"),
    ] {
        let r = app.post_auth("/v1/notes", ada.access(), Some(&body)).await;
        assert_eq!(r.status(), 422, "{body}");
        let p = problem(r).await;
        assert_eq!(p["errors"][0]["field"], field, "{body}");
        assert_eq!(p["errors"][0]["code"], code, "{body}");
    }
    // The limits are characters, not bytes: 200 four-byte characters fit.
    let wide = "𝄞".repeat(200);
    let n = create(&app, &ada, &wide, &"é".repeat(10_000)).await;
    assert_eq!(n["title"], wide);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1, "nothing refused was stored");
}

#[tokio::test]
async fn patch_keeps_absent_fields_refuses_null_and_an_empty_patch_changes_nothing() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let note = create(&app, &ada, "Title", "Body").await;
    let path = format!("/v1/notes/{}", note["id"].as_str().unwrap());
    let patch = |body: Value| {
        let path = path.clone();
        let app = &app;
        let token = ada.access().to_owned();
        async move {
            app.send_auth(Method::PATCH, &path, &token, Some(&body))
                .await
        }
    };
    app.clock.advance(chrono::Duration::minutes(1));
    let r = patch(json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await, note, "an empty patch changes nothing");

    let r = patch(json!({"body": "New body"})).await;
    let after = json_of(r).await;
    assert_eq!(
        (&after["title"], &after["body"]),
        (&json!("Title"), &json!("New body"))
    );
    let r = patch(json!({"title": "New title", "body": "Newer body"})).await;
    let after = json_of(r).await;
    assert_eq!(
        (&after["title"], &after["body"]),
        (&json!("New title"), &json!("Newer body"))
    );

    for (body, field, code) in [
        (json!({"title": null}), "title", "null_not_allowed"),
        (json!({"body": null}), "body", "null_not_allowed"),
        (json!({"title": ""}), "title", "length"),
        (json!({"body": "\u{7}"}), "body", "control_characters"),
        (json!({"id": "x"}), "id", "unknown_field"),
        (
            json!({"created_at": "2020-01-01T00:00:00Z"}),
            "created_at",
            "unknown_field",
        ),
    ] {
        let r = patch(body.clone()).await;
        assert_eq!(r.status(), 422, "{body}");
        let p = problem(r).await;
        assert_eq!(p["errors"][0]["field"], field, "{body}");
        assert_eq!(p["errors"][0]["code"], code, "{body}");
    }
    let now = json_of(app.get_auth(&path, ada.access()).await).await;
    assert_eq!(now, after, "a refused patch changes nothing");
}

#[tokio::test]
async fn a_user_holds_at_most_the_cap_of_notes() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let first = create(&app, &ada, "first", "body").await;
    // Fill up to the cap directly (the stored values need not open: the
    // cap is a count).
    sqlx::query(
        "INSERT INTO notes (note_id, user_id, title_ciphertext, body_ciphertext, created_at, updated_at)
         SELECT gen_random_uuid(), $1, '\\x00', '\\x00', now(), now() FROM generate_series(2, $2)",
    )
    .bind(ada.user_id)
    .bind(mobile_backend::notes::MAX_NOTES_PER_USER as i32)
    .execute(&app.db)
    .await
    .unwrap();
    let r = app
        .post_auth(
            "/v1/notes",
            ada.access(),
            Some(&json!({"title": "one more", "body": "x"})),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "too_many_notes");
    let r = app
        .delete_auth(
            &format!("/v1/notes/{}", first["id"].as_str().unwrap()),
            ada.access(),
        )
        .await;
    assert_eq!(r.status(), 204);
    create(&app, &ada, "room again", "x").await;
}
