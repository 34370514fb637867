//! Bad input never reaches a 500 and never gets text/plain: each kind of
//! malformed request is answered as problem+json with the right status,
//! and panics and timeouts are contained.

use crate::helpers::{problem, TestApp};
use reqwest::Method;
use serde_json::json;

const ECHO: &str = "/v1/_probe/echo";

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = TestApp::spawn().await;
    let r = app
        .post_raw(ECHO, "application/json", b"{\"name\": \"a\",".to_vec())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(problem(r).await["code"], "malformed_json");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415_problem() {
    let app = TestApp::spawn().await;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let r = app.post_raw(ECHO, ct, b"name=a&count=1".to_vec()).await;
        assert_eq!(r.status(), 415, "{ct}");
        assert_eq!(problem(r).await["code"], "unsupported_media_type");
    }
    // A JSON body without any content type is refused too.
    let r = app
        .client
        .post(app.url(ECHO))
        .body(r#"{"name":"a","count":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn a_65_kib_body_is_a_413_problem_declared_or_streamed() {
    let app = TestApp::spawn().await;
    let big = format!(
        r#"{{"name":"a","count":1,"note":"{}"}}"#,
        "x".repeat(65 * 1024)
    );
    let r = app
        .post_raw(ECHO, "application/json", big.clone().into_bytes())
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(problem(r).await["code"], "payload_too_large");

    // Chunked: no Content-Length, so the limit must hold while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(4096)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = app
        .client
        .post(app.url(ECHO))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(problem(r).await["code"], "payload_too_large");
}

#[tokio::test]
async fn a_body_just_under_the_limit_is_accepted() {
    let app = TestApp::spawn().await;
    let note = "x".repeat(60 * 1024);
    let r = app
        .post_json(ECHO, &json!({"name": "a", "count": 1, "note": note}))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_unknown_field_is_a_422_naming_it() {
    let app = TestApp::spawn().await;
    let r = app
        .post_json(ECHO, &json!({"name": "a", "count": 1, "role": "admin"}))
        .await;
    assert_eq!(r.status(), 422);
    let body = problem(r).await;
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(body["errors"][0]["field"], "role");
    assert_eq!(body["errors"][0]["code"], "unknown_field");
}

#[tokio::test]
async fn a_missing_field_is_a_422_naming_it() {
    let app = TestApp::spawn().await;
    let r = app.post_json(ECHO, &json!({"name": "a"})).await;
    assert_eq!(r.status(), 422);
    let body = problem(r).await;
    assert_eq!(body["errors"][0]["field"], "count");
    assert_eq!(body["errors"][0]["code"], "missing_field");
}

#[tokio::test]
async fn a_wrong_type_is_a_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let r = app
        .post_json(ECHO, &json!({"name": "a", "count": "seven"}))
        .await;
    assert_eq!(r.status(), 422);
    let body = problem(r).await;
    assert_eq!(body["errors"][0]["field"], "count");
    assert_eq!(body["errors"][0]["code"], "invalid_type");
}

#[tokio::test]
async fn a_failed_validation_rule_is_a_422_naming_each_field() {
    let app = TestApp::spawn().await;
    let r = app.post_json(ECHO, &json!({"name": "", "count": 11})).await;
    assert_eq!(r.status(), 422);
    let body = problem(r).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["count", "name"]);
}

#[tokio::test]
async fn injection_strings_are_plain_data() {
    let app = TestApp::spawn().await;
    let evil = "'; DROP TABLE audit_events; --<script>";
    let r = app
        .post_json(ECHO, &json!({"name": "x", "count": 1, "note": evil}))
        .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["note"], evil);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(n >= 1, "the table is still there");
}

#[tokio::test]
async fn a_panicking_handler_is_an_opaque_500_problem() {
    let app = TestApp::spawn().await;
    let r = app.get("/v1/_probe/panic").await;
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(!text.contains("hunter2"), "panic detail leaked: {text}");
    assert!(!text.contains("secret-panic-detail"));
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], "internal_error");
    // The server is still up.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_request_past_the_timeout_is_a_503_problem_with_retry_after() {
    let app = TestApp::builder()
        .env("REQUEST_TIMEOUT_SECS", "1")
        .spawn()
        .await;
    let r = app.get("/v1/_probe/slow").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(problem(r).await["code"], "request_timeout");
}

#[tokio::test]
async fn an_exhausted_connection_pool_is_a_503_problem_not_a_hang() {
    let app = TestApp::builder()
        .env("DATABASE_MAX_CONNECTIONS", "1")
        .env("DATABASE_ACQUIRE_TIMEOUT_SECS", "1")
        .spawn()
        .await;
    assert_eq!(app.get("/v1/_probe/db").await.status(), 200);
    let held = app.state.db.acquire().await.unwrap();
    let r = app.get("/v1/_probe/db").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(problem(r).await["code"], "database_unavailable");
    drop(held);
    assert_eq!(app.get("/v1/_probe/db").await.status(), 200);
}

/// Words that name Rust internals rather than the API; none may reach a
/// client.
const RUST_WORDS: &[&str] = &[
    "struct",
    "enum ",
    "sequence",
    "u8",
    "u16",
    "u32",
    "u64",
    "i32",
    "i64",
    "usize",
    "Option",
    "String",
    "::",
    "serde",
    "invalid type",
    "variant",
    "mobile_backend",
];

/// Every text of a problem a client reads: `detail` and each error's
/// `field` and `message`.
fn problem_texts(body: &serde_json::Value) -> Vec<String> {
    let mut texts = vec![body["detail"].as_str().unwrap_or_default().to_owned()];
    for e in body["errors"].as_array().into_iter().flatten() {
        texts.push(e["field"].as_str().unwrap_or_default().to_owned());
        texts.push(e["message"].as_str().unwrap_or_default().to_owned());
    }
    texts
}

fn assert_no_rust_words(what: &str, body: &serde_json::Value) {
    for text in problem_texts(body) {
        for word in RUST_WORDS {
            assert!(!text.contains(word), "{what}: {word:?} in {text:?}");
        }
    }
}

#[tokio::test]
async fn a_body_that_is_not_an_object_is_a_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("shape@example.com").await;
    let before: serde_json::Value = app
        .get_auth("/v1/me", user.access())
        .await
        .json()
        .await
        .unwrap();
    for body in [
        r#"["Mallory", "+447700900123"]"#,
        r#""display_name""#,
        "42",
        "4.2",
        "null",
        "true",
    ] {
        let r = app
            .client
            .patch(app.url("/v1/me"))
            .bearer_auth(user.access())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let p = problem(r).await;
        assert_eq!(p["errors"][0]["field"], "", "{body}");
        assert_eq!(p["errors"][0]["code"], "invalid_type", "{body}");
        assert_eq!(p["detail"], "The body must be a JSON object.", "{body}");
    }
    let after: serde_json::Value = app
        .get_auth("/v1/me", user.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn wrong_input_of_every_kind_is_described_in_the_apis_own_words() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("words@example.com").await;
    // JSON bodies: wrong types at the top and inside, unknown members,
    // missing members, out-of-range numbers, unknown enum values.
    for body in [
        json!(["a", 1]),
        json!("text"),
        json!(null),
        json!({"name": 5, "count": 1}),
        json!({"name": ["a"], "count": 1}),
        json!({"name": {"x": 1}, "count": 1}),
        json!({"name": null, "count": 1}),
        json!({"name": "a", "count": "seven"}),
        json!({"name": "a", "count": 300}),
        json!({"name": "a", "count": -1}),
        json!({"name": "a", "count": 1.5}),
        json!({"name": "a", "count": 1, "note": 5}),
        json!({"name": "a"}),
        json!({"name": "", "count": 11}),
        json!({"name": "a", "count": 1, "role": "admin"}),
    ] {
        let r = app.post_json(ECHO, &body).await;
        assert_eq!(r.status(), 422, "{body}");
        assert_no_rust_words(&body.to_string(), &problem(r).await);
    }
    for body in [
        json!(["a@example.com", "pw"]),
        json!({"email": 5, "password": "x"}),
        json!({"email": "a@example.com", "password": "x", "device": []}),
        json!({"email": "a@example.com", "password": "x", "device": {"platform": 1}}),
    ] {
        let r = app.post_json("/v1/auth/login", &body).await;
        assert_eq!(r.status(), 422, "{body}");
        assert_no_rust_words(&body.to_string(), &problem(r).await);
    }
    let r = app
        .send_auth(
            Method::PATCH,
            "/v1/me",
            user.access(),
            Some(&json!({"date_of_birth": "yesterday"})),
        )
        .await;
    assert_eq!(r.status(), 422);
    assert_no_rust_words("date_of_birth", &problem(r).await);
    // Query strings: each failure names its parameter.
    for (query, field) in [
        ("?limit=x", "limit"),
        ("?limit=-3", "limit"),
        ("?limit=99999999999999999999", "limit"),
        ("?limit=0", "limit"),
        ("?page=2", "page"),
    ] {
        let r = app
            .get_auth(&format!("/v1/notes{query}"), user.access())
            .await;
        assert_eq!(r.status(), 422, "{query}");
        let p = problem(r).await;
        assert_eq!(p["errors"][0]["field"], field, "{query}");
        assert_no_rust_words(query, &p);
    }
    // Path parameters: a malformed id is a plain 404.
    let r = app.get_auth("/v1/notes/not-a-uuid", user.access()).await;
    assert_eq!(r.status(), 404);
    assert_no_rust_words("path", &problem(r).await);
    // Headers.
    for (name, value) in [
        ("x-client-version", "v1.2.3"),
        ("x-app-install-id", "not-a-uuid"),
    ] {
        let mut req = app
            .client
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": "words@example.com", "password": "wrong"}))
            .header(name, value);
        if name == "x-client-version" {
            req = req.header("x-client-platform", "ios");
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400, "{name}");
        assert_no_rust_words(name, &problem(r).await);
    }
}

#[tokio::test]
async fn an_unknown_name_comes_back_only_as_a_short_printable_prefix() {
    let app = TestApp::spawn().await;
    let long = "n".repeat(60 * 1024);
    for (name, expected) in [
        ("\u{1b}[31mred", "…".to_owned()),
        ("ok\u{1b}[2J", "ok…".to_owned()),
        (long.as_str(), format!("{}…", "n".repeat(64))),
    ] {
        let mut body = json!({"name": "a", "count": 1});
        body[name] = json!(1);
        let r = app.post_json(ECHO, &body).await;
        assert_eq!(r.status(), 422);
        let text = r.text().await.unwrap();
        assert!(!text.contains('\u{1b}'), "an escape came back: {text:?}");
        assert!(text.len() < 1024, "the name came back whole");
        let p: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(p["errors"][0]["code"], "unknown_field");
        assert_eq!(p["errors"][0]["field"], expected.as_str());
    }
    // The same for a query parameter's name.
    let user = app.signed_up_user("names@example.com").await;
    let r = app
        .get_auth(
            &format!("/v1/notes?%1B%5B31m{}=1", "q".repeat(5000)),
            user.access(),
        )
        .await;
    assert_eq!(r.status(), 422);
    let text = r.text().await.unwrap();
    assert!(!text.contains('\u{1b}') && text.len() < 1024, "{text:?}");
}

/// The spec's `AdminUpdateUserRequest` members are optional but never
/// `null`; the server agrees (serde alone would read `null` as "absent").
#[tokio::test]
async fn the_admin_patch_refuses_null_members_as_the_spec_says() {
    let app = TestApp::spawn().await;
    let admin = app.staff_user("nulls-admin@example.com", "admin").await;
    let target = app.signed_up_user("nulls-target@example.com").await;
    let path = format!("/v1/admin/users/{}", target.user_id);
    for (body, field) in [
        (json!({"role": null}), "role"),
        (json!({"status": null}), "status"),
        (json!({"role": "user", "status": null}), "status"),
    ] {
        let r = app
            .send_auth(Method::PATCH, &path, admin.access(), Some(&body))
            .await;
        assert_eq!(r.status(), 422, "{body}");
        let p = problem(r).await;
        assert_eq!(p["errors"][0]["field"], field, "{body}");
        assert_eq!(p["errors"][0]["code"], "invalid_type", "{body}");
        assert_no_rust_words(&body.to_string(), &p);
    }
    let r = app
        .send_auth(
            Method::PATCH,
            &path,
            admin.access(),
            Some(&json!({"status": "locked"})),
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// Other optional members the spec does not mark nullable refuse `null`
/// too (serde alone reads it as "absent").
#[tokio::test]
async fn optional_members_that_are_not_nullable_in_the_spec_refuse_null() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("not-nullable@example.com").await;
    for (path, body, field) in [
        (
            "/v1/auth/mfa",
            json!({"mfa_token": "x", "code": null, "recovery_code": "ABCD-EFGH-JKMN"}),
            "code",
        ),
        (
            "/v1/auth/mfa",
            json!({"mfa_token": "x", "code": "123456", "recovery_code": null}),
            "recovery_code",
        ),
        (
            "/v1/me/rate-limit-requests",
            json!({"reason": "more reads please", "requested_tier": null}),
            "requested_tier",
        ),
        (
            "/v1/mfa/totp/setup",
            json!({"current_password": "x", "code": null}),
            "code",
        ),
    ] {
        let r = if path == "/v1/auth/mfa" {
            app.post_json(path, &body).await
        } else {
            app.send_auth(Method::POST, path, user.access(), Some(&body))
                .await
        };
        assert_eq!(r.status(), 422, "{path} {body}");
        let p = problem(r).await;
        assert_eq!(p["errors"][0]["field"], field, "{path} {body}");
        assert_eq!(p["errors"][0]["code"], "invalid_type", "{path} {body}");
    }
    let r = app
        .send_auth(
            Method::DELETE,
            "/v1/me",
            user.access(),
            Some(&json!({"current_password": "x", "code": null})),
        )
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(problem(r).await["errors"][0]["field"], "code");
}

/// Development logs written to a pipe (or a file) carry no ANSI colour
/// codes: colour is for a terminal only.
#[tokio::test]
async fn development_logs_to_a_pipe_carry_no_ansi_escapes() {
    let app = TestApp::spawn().await;
    let out = app
        .run_cli_with(
            &["migrate"],
            &[("LOG_FORMAT", "pretty"), ("RUST_LOG", "info")],
            None,
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("migrations applied"), "{stdout}");
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !stream.contains(&0x1b),
            "an escape byte in the log: {:?}",
            String::from_utf8_lossy(stream)
        );
    }
}
