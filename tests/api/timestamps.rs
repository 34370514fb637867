//! Every timestamp in a JSON response has one shape, RFC 3339 in UTC with
//! exactly three fractional digits (`2026-12-03T17:00:00.000Z`): iOS's
//! `.iso8601` decoding with fractional seconds needs a fixed shape. The
//! test clock is moved off whole seconds and off whole milliseconds, so a
//! default chrono serialisation (no fraction, or six digits) would show.

use crate::helpers::{TestApp, STRONG_PASSWORD};
use chrono::Duration;
use serde_json::{json, Value};

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, checked byte by byte.
fn is_millis_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

/// Does it start like a date-time (`YYYY-MM-DDT`)?
fn looks_like_a_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 11
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && b[10] == b'T'
}

/// Every timestamp-looking string in `v`, with its JSON path.
fn timestamps(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) if looks_like_a_timestamp(s) => out.push((path.to_owned(), s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                timestamps(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                timestamps(item, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

async fn json_of(r: reqwest::Response, what: &str) -> Value {
    assert!(r.status().is_success(), "{what}: {}", r.status());
    r.json().await.unwrap()
}

#[tokio::test]
async fn every_timestamp_in_every_response_has_exactly_three_fractional_digits() {
    let app = TestApp::spawn().await;
    // Off the whole second and the whole millisecond.
    app.clock.advance(Duration::microseconds(123_456));
    let ada = app.signed_up_user("ada@example.com").await;
    app.clock.advance(Duration::microseconds(1_000_789));
    let admin = app.staff_user("root@example.com", "admin").await;
    app.clock.advance(Duration::microseconds(7));

    // Ada's data: a profile, a device, a note, a rate-limit request, a second session.
    let r = app
        .send_auth(
            reqwest::Method::PATCH,
            "/v1/me",
            ada.access(),
            Some(&json!({"display_name": "Ada"})),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let r = app
        .post_auth(
            "/v1/devices",
            ada.access(),
            Some(&json!({"platform": "ios", "push_token": "apns-ts-0001", "name": "Phone"})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = app
        .post_auth(
            "/v1/notes",
            ada.access(),
            Some(&json!({"title": "t", "body": "b"})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = app
        .post_auth(
            "/v1/me/rate-limit-requests",
            ada.access(),
            Some(&json!({"reason": "A sync job reads often."})),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    app.clock.advance(Duration::microseconds(2_345));
    assert_eq!(app.login(&ada.email, STRONG_PASSWORD).await.status(), 200);

    let mut responses: Vec<(&str, Value)> = Vec::new();
    for path in [
        "/v1/me",
        "/v1/sessions",
        "/v1/devices",
        "/v1/notes",
        "/v1/me/rate-limit-requests",
        "/v1/me/export",
    ] {
        responses.push((
            path,
            json_of(app.get_auth(path, ada.access()).await, path).await,
        ));
    }
    let admin_paths = [
        format!("/v1/admin/users?email={}", ada.email),
        format!("/v1/admin/users/{}", ada.user_id),
        format!("/v1/admin/audit-events?user_id={}", ada.user_id),
        "/v1/admin/alerts".to_owned(),
        "/v1/admin/client-policy".to_owned(),
        "/v1/admin/rate-limit-requests".to_owned(),
    ];
    for path in &admin_paths {
        responses.push((
            path.as_str(),
            json_of(app.get_auth(path, admin.access()).await, path).await,
        ));
    }

    let mut seen = 0;
    for (path, body) in &responses {
        let mut found = Vec::new();
        timestamps(body, "", &mut found);
        for (at, value) in found {
            seen += 1;
            assert!(
                is_millis_utc(&value),
                "{path}{at}: {value:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ"
            );
        }
    }
    assert!(seen >= 20, "the walk saw only {seen} timestamps");
}

#[test]
fn the_shape_check_refuses_the_other_rfc_3339_spellings() {
    assert!(is_millis_utc("2026-12-03T17:00:00.000Z"));
    for other in [
        "2026-12-03T17:00:00Z",
        "2026-12-03T17:00:00.123456Z",
        "2026-12-03T17:00:00.000+00:00",
        "2026-12-03T17:00:00.1Z",
    ] {
        assert!(looks_like_a_timestamp(other));
        assert!(!is_millis_utc(other), "{other}");
    }
}
