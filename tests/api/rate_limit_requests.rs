//! Rate-limit requests (#18): a user asks for a higher tier, staff see the
//! evidence and an administrator decides; the tier may expire. The whole
//! journey, every refusal, object-level and function-level authorization,
//! the 429 link, races, and the reason's life at rest (sealed, exported,
//! erased with the account).

use crate::helpers::{problem, TestApp, TestUser};
use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use std::net::IpAddr;

const REQUESTS: &str = "/v1/me/rate-limit-requests";
const ADMIN_REQUESTS: &str = "/v1/admin/rate-limit-requests";

async fn ask(app: &TestApp, user: &TestUser, body: &Value) -> reqwest::Response {
    app.post_auth(REQUESTS, user.access(), Some(body)).await
}

async fn ask_ok(app: &TestApp, user: &TestUser, reason: &str) -> Value {
    let r = ask(app, user, &json!({ "reason": reason })).await;
    assert_eq!(r.status(), 201, "ask");
    r.json().await.unwrap()
}

async fn decide(app: &TestApp, token: &str, id: &str, body: &Value) -> reqwest::Response {
    app.post_auth(
        &format!("{ADMIN_REQUESTS}/{id}/decision"),
        token,
        Some(body),
    )
    .await
}

async fn withdraw(app: &TestApp, user: &TestUser, id: &str) -> reqwest::Response {
    app.delete_auth(&format!("{REQUESTS}/{id}"), user.access())
        .await
}

async fn list(app: &TestApp, user: &TestUser) -> Value {
    let r = app.get_auth(REQUESTS, user.access()).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn admin_list(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.get_auth(&format!("{ADMIN_REQUESTS}{query}"), token)
        .await
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

async fn tier_of(app: &TestApp, user: uuid::Uuid) -> (String, Option<DateTime<Utc>>) {
    sqlx::query_as(
        "SELECT rate_limit_tier, rate_limit_tier_expires_at FROM users WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

async fn audit_count(app: &TestApp, event_type: &str, outcome: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event_type = $1 AND outcome = $2")
        .bind(event_type)
        .bind(outcome)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// The same account with a fresh session (after the clock moved past the
/// access token's life).
async fn signed_in_again(app: &TestApp, user: TestUser) -> TestUser {
    let r = app.login(&user.email, &user.password).await;
    assert_eq!(r.status(), 200, "sign in again");
    TestUser {
        tokens: r.json().await.unwrap(),
        ..user
    }
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn request_list_approve_then_five_times_the_reads_until_the_tier_expires() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_READS", "3/60")
        .spawn()
        .await;
    let user = app.signed_up_user("heavy@example.com").await;
    let start = app.clock.now();

    let created = ask_ok(&app, &user, "Our sync job reads every 10 seconds.").await;
    assert_eq!(created["status"], "pending");
    assert_eq!(created["requested_tier"], "raised", "the default");
    assert_eq!(created["reason"], "Our sync job reads every 10 seconds.");
    assert_eq!(time(&created["created_at"]), start);
    for absent in ["decided_at", "note", "expires_at"] {
        assert!(created[absent].is_null(), "{absent}");
    }
    let id = created["id"].as_str().unwrap().to_owned();

    let mine = list(&app, &user).await; // read 1 of 3
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine["items"][0], created);
    assert!(mine["next_cursor"].is_null());

    // The user runs out of reads: the 429 points at the request route.
    for _ in 0..2 {
        assert_eq!(
            app.get_auth("/v1/sessions", user.access()).await.status(),
            200
        );
    }
    let r = app.get_auth("/v1/sessions", user.access()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-policy"], "\"reads\";q=3;w=60");
    assert_eq!(
        problem(r).await["links"]["request_increase"],
        "/v1/me/rate-limit-requests"
    );

    // Staff see the request with the evidence.
    let admin = app.staff_user("admin@example.com", "admin").await;
    let r = admin_list(&app, admin.access(), "?status=pending").await;
    assert_eq!(r.status(), 200);
    let queue: Value = r.json().await.unwrap();
    let item = &queue["items"][0];
    assert_eq!(queue["items"].as_array().unwrap().len(), 1);
    assert_eq!(item["id"], id.as_str());
    assert_eq!(item["user_id"], user.user_id.to_string());
    assert_eq!(item["email"], "heavy@example.com");
    assert_eq!(item["pii_masked"], false);
    assert_eq!(item["current_tier"], "standard");
    assert_eq!(item["requested_tier"], "raised");
    assert_eq!(item["reason"], "Our sync job reads every 10 seconds.");
    assert_eq!(item["status"], "pending");
    assert_eq!(item["rate_limited_last_30_days"], 1, "the 429 above");
    assert_eq!(
        audit_count(&app, "admin.rate_limit_request.listed", "success").await,
        1,
        "reading reasons is audited"
    );

    // An administrator approves it for a week, with a note.
    let r = decide(
        &app,
        admin.access(),
        &id,
        &json!({"decision": "approve", "note": "Granted for the spring import.", "expires_in_days": 7}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let decided: Value = r.json().await.unwrap();
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["current_tier"], "raised");
    assert_eq!(decided["decided_by"], admin.user_id.to_string());
    assert_eq!(time(&decided["expires_at"]), start + Duration::days(7));
    assert_eq!(
        tier_of(&app, user.user_id).await,
        ("raised".into(), Some(start + Duration::days(7)))
    );

    // The user's reads are now 5 x 3, from a full quota.
    let r = app.get_auth("/v1/sessions", user.access()).await;
    assert_eq!(r.status(), 200, "served again at once");
    assert_eq!(r.headers()["ratelimit-policy"], "\"reads\";q=15;w=60");
    assert_eq!(r.headers()["ratelimit"], "\"reads\";r=14;t=4");

    let mine = list(&app, &user).await;
    let item = &mine["items"][0];
    assert_eq!(item["status"], "approved");
    assert_eq!(item["note"], "Granted for the spring import.");
    assert_eq!(time(&item["decided_at"]), start);
    assert_eq!(time(&item["expires_at"]), start + Duration::days(7));

    // Mailed through the outbox: the outcome, never the note or the reason.
    let mails = app.drain_outbox().await;
    let mail = mails
        .iter()
        .find(|m| m.to == "heavy@example.com" && m.subject.contains("approved"))
        .expect("the outcome is mailed");
    assert!(mail.text.contains("raised") && mail.text.contains("UTC"));
    assert!(!mail.text.contains("spring import") && !mail.text.contains("sync job"));

    // Audited: the request, the decision and the tier change, with actor
    // and target.
    let (actor, target, request_id): (uuid::Uuid, uuid::Uuid, String) = sqlx::query_as(
        "SELECT actor_id, user_id, details->>'request_id' FROM audit_events \
         WHERE event_type = 'admin.user.rate_limit_tier_changed'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (actor, target, request_id.as_str()),
        (admin.user_id, user.user_id, id.as_str())
    );
    let (actor, target, decision): (uuid::Uuid, uuid::Uuid, String) = sqlx::query_as(
        "SELECT actor_id, user_id, details->>'decision' FROM audit_events \
         WHERE event_type = 'admin.rate_limit_request.decided' AND outcome = 'success'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (actor, target, decision.as_str()),
        (admin.user_id, user.user_id, "approve")
    );
    assert_eq!(
        audit_count(&app, "rate_limit.request.created", "success").await,
        1
    );

    // A week later the tier is over: the limiter applies `standard` at
    // once, and the pass writes it back and audits it.
    app.clock.advance(Duration::days(7) + Duration::seconds(1));
    let user = signed_in_again(&app, user).await;
    let r = app.get_auth("/v1/sessions", user.access()).await;
    assert_eq!(r.status(), 200, "counted per user");
    assert_eq!(r.headers()["ratelimit-policy"], "\"reads\";q=3;w=60");
    let expired = mobile_backend::rate_limit::tiers::expire_due(&app.state)
        .await
        .unwrap();
    assert!(expired <= 1, "the background pass may have been first");
    assert_eq!(tier_of(&app, user.user_id).await, ("standard".into(), None));
    let (target, from): (uuid::Uuid, String) = sqlx::query_as(
        "SELECT user_id, details->>'from' FROM audit_events WHERE event_type = 'rate_limit.tier.expired'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((target, from.as_str()), (user.user_id, "raised"));
    assert_eq!(
        mobile_backend::rate_limit::tiers::expire_due(&app.state)
            .await
            .unwrap(),
        0,
        "once"
    );
}

#[tokio::test]
async fn a_bad_request_body_is_refused_naming_its_field() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("asker@example.com").await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"reason": "x".repeat(501)}), "reason", "length"),
        (json!({"reason": ""}), "reason", "length"),
        (
            json!({"reason": "red \u{1b}[31malert\u{1b}[0m"}),
            "reason",
            "control_characters",
        ),
        (
            json!({"reason": "line\nbreak"}),
            "reason",
            "control_characters",
        ),
        (
            json!({"reason": "evil\u{202E}gpj.exe"}),
            "reason",
            "bidi_characters",
        ),
        (json!({}), "reason", "missing_field"),
        (
            json!({"reason": "ok", "user_id": uuid::Uuid::now_v7()}),
            "user_id",
            "unknown_field",
        ),
        (
            json!({"reason": "ok", "status": "approved"}),
            "status",
            "unknown_field",
        ),
        (
            json!({"reason": "ok", "requested_tier": "ultra"}),
            "requested_tier",
            "invalid_value",
        ),
        (
            json!({"reason": "ok", "requested_tier": "standard"}),
            "requested_tier",
            "tier_not_higher",
        ),
        (json!({"reason": 42}), "reason", "invalid_type"),
        (json!(["a reason", "high"]), "", "invalid_type"),
    ];
    for (body, field, code) in cases {
        let r = ask(&app, &user, &body).await;
        assert_eq!(r.status(), 422, "{body}");
        let p = problem(r).await;
        assert_eq!(p["code"], "validation_failed", "{body}");
        assert_eq!(p["errors"][0]["field"], field, "{body}");
        assert_eq!(p["errors"][0]["code"], code, "{body}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM rate_limit_requests")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing was stored");

    // 500 characters (not bytes) is the limit; markup is text, kept as is
    // and JSON-encoded on the way out.
    let long = "é".repeat(500);
    assert_eq!(
        ask(&app, &user, &json!({"reason": long})).await.status(),
        201
    );
}

#[tokio::test]
async fn a_request_must_be_for_a_higher_tier_one_at_a_time_and_five_per_thirty_days() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("asker@example.com").await;

    // One pending request at a time.
    let first = ask_ok(&app, &user, "first").await;
    let r = ask(
        &app,
        &user,
        &json!({"reason": "second", "requested_tier": "high"}),
    )
    .await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "request_pending");

    // Withdrawing and asking again counts: five requests in 30 days.
    assert_eq!(
        withdraw(&app, &user, first["id"].as_str().unwrap())
            .await
            .status(),
        204
    );
    for i in 1..5 {
        let again = ask_ok(&app, &user, &format!("again {i}")).await;
        let r = withdraw(&app, &user, again["id"].as_str().unwrap()).await;
        assert_eq!(r.status(), 204);
    }
    let r = ask(&app, &user, &json!({"reason": "a sixth"})).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers()["retry-after"],
        (30 * 86_400).to_string().as_str(),
        "until the first leaves the window"
    );
    let p = problem(r).await;
    assert_eq!(p["code"], "rate_limited");
    assert!(p.get("links").is_none(), "asking again is what is limited");

    app.clock.advance(Duration::days(30));
    let user = signed_in_again(&app, user).await;
    ask_ok(&app, &user, "a month later").await;

    // Never at or below the tier in force.
    let admin = app.staff_user("admin@example.com", "admin").await;
    sqlx::query("UPDATE rate_limit_requests SET status = 'withdrawn', decided_at = now()")
        .execute(&app.db)
        .await
        .unwrap();
    let r = app
        .send_auth(
            Method::PUT,
            &format!("/v1/admin/users/{}/rate-limit-tier", user.user_id),
            admin.access(),
            Some(&json!({"tier": "high"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    for tier in ["raised", "high"] {
        let r = ask(
            &app,
            &user,
            &json!({"reason": "more", "requested_tier": tier}),
        )
        .await;
        assert_eq!(r.status(), 422, "{tier}");
        let p = problem(r).await;
        assert_eq!(p["errors"][0]["field"], "requested_tier");
        assert_eq!(p["errors"][0]["code"], "tier_not_higher");
    }
}

#[tokio::test]
async fn concurrent_requests_leave_exactly_one_pending() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("racer@example.com").await;
    let bodies: Vec<Value> = (0..10)
        .map(|i| json!({ "reason": format!("race {i}") }))
        .collect();
    let answers =
        futures_util::future::join_all(bodies.iter().map(|body| ask(&app, &user, body))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rate_limit_requests WHERE status = 'pending'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(pending, 1);

    // The partial unique index holds even past the handler's check.
    let dup = sqlx::query(
        "INSERT INTO rate_limit_requests (request_id, user_id, requested_tier, reason_ciphertext, status, created_at) \
         VALUES (gen_random_uuid(), $1, 'high', '\\x00', 'pending', now())",
    )
    .bind(user.user_id)
    .execute(&app.db)
    .await
    .unwrap_err();
    assert!(
        dup.to_string().contains("rate_limit_requests_one_pending"),
        "{dup}"
    );
}

#[tokio::test]
async fn the_owner_pages_through_their_requests_newest_first() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("pager@example.com").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let made = ask_ok(&app, &user, &format!("request {i}")).await;
        let id = made["id"].as_str().unwrap().to_owned();
        assert_eq!(withdraw(&app, &user, &id).await.status(), 204);
        ids.push(id);
    }
    let page: Value = app
        .get_auth(&format!("{REQUESTS}?limit=2"), user.access())
        .await
        .json()
        .await
        .unwrap();
    let got: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(page["items"][0]["status"], "withdrawn");
    assert!(!page["items"][0]["decided_at"].is_null());
    let cursor = page["next_cursor"].as_str().unwrap();
    let page: Value = app
        .get_auth(
            &format!("{REQUESTS}?limit=2&cursor={cursor}"),
            user.access(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], ids[0].as_str());
    assert!(page["next_cursor"].is_null());

    for (query, code) in [
        ("?cursor=not-a-cursor", "invalid_cursor"),
        (&format!("?cursor={}", ids[0])[..], "invalid_cursor"),
        ("?limit=0", "range"),
        ("?limit=101", "range"),
        ("?user_id=x", "invalid_query"),
    ] {
        let r = app
            .get_auth(&format!("{REQUESTS}{query}"), user.access())
            .await;
        assert_eq!(r.status(), 422, "{query}");
        assert_eq!(problem(r).await["errors"][0]["code"], code, "{query}");
    }
}

#[tokio::test]
async fn another_users_request_is_404_like_a_random_id_and_plain_users_get_403_from_staff_routes() {
    let app = TestApp::spawn().await;
    let owner = app.signed_up_user("owner@example.com").await;
    let other = app.signed_up_user("other@example.com").await;
    let made = ask_ok(&app, &owner, "mine").await;
    let id = made["id"].as_str().unwrap();

    let theirs = withdraw(&app, &other, id).await;
    assert_eq!(theirs.status(), 404);
    let theirs = problem(theirs).await;
    let random = problem(withdraw(&app, &other, &uuid::Uuid::now_v7().to_string()).await).await;
    for member in ["type", "title", "status", "detail", "code"] {
        assert_eq!(theirs[member], random[member], "{member}");
    }
    assert_eq!(withdraw(&app, &other, "not-a-uuid").await.status(), 404);
    assert!(list(&app, &other).await["items"]
        .as_array()
        .unwrap()
        .is_empty());

    // A plain user reaches no staff route, and learns nothing.
    let r = admin_list(&app, other.access(), "").await;
    assert_eq!(r.status(), 403);
    let p = problem(r).await;
    assert_eq!(p["code"], "forbidden");
    assert!(p.get("items").is_none());
    for who in [&other, &owner] {
        let r = decide(&app, who.access(), id, &json!({"decision": "approve"})).await;
        assert_eq!(r.status(), 403);
        assert_eq!(problem(r).await["code"], "forbidden");
    }

    // The request is untouched, and still the owner's to withdraw.
    let mine = list(&app, &owner).await;
    assert_eq!(mine["items"][0], made);
    assert_eq!(tier_of(&app, owner.user_id).await.0, "standard");
    assert_eq!(withdraw(&app, &owner, id).await.status(), 204);
    let r = withdraw(&app, &owner, id).await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "already_decided");
}

#[tokio::test]
async fn support_reads_masked_but_cannot_decide_aal1_staff_are_refused_and_nobody_decides_their_own(
) {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("alice@example.com").await;
    let support = app.staff_user("support@example.com", "support").await;
    let admin = app.staff_user("admin@example.com", "admin").await;
    let aal1_admin = app.signed_up_user("aal1@example.com").await;
    sqlx::query("UPDATE users SET role = 'admin' WHERE user_id = $1")
        .bind(aal1_admin.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    let reason = "<img src=x onerror=alert(1)> & \"quotes\"";
    let made = ask_ok(&app, &user, reason).await;
    let id = made["id"].as_str().unwrap();

    // Support reads the queue, the address masked, the reason as written.
    let r = admin_list(&app, support.access(), "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let queue: Value = r.json().await.unwrap();
    assert_eq!(queue["items"][0]["email"], "a****@example.com");
    assert_eq!(queue["items"][0]["pii_masked"], true);
    assert_eq!(queue["items"][0]["reason"], reason);

    // Support may not decide, a user's request or their own; an aal1
    // admin may do nothing.
    let r = decide(&app, support.access(), id, &json!({"decision": "approve"})).await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "forbidden");
    let theirs = ask_ok(&app, &support, "support wants more").await;
    let r = decide(
        &app,
        support.access(),
        theirs["id"].as_str().unwrap(),
        &json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "forbidden");
    assert_eq!(tier_of(&app, support.user_id).await.0, "standard");
    let r = decide(
        &app,
        aal1_admin.access(),
        id,
        &json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "mfa_required");
    let r = admin_list(&app, aal1_admin.access(), "").await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "mfa_required");
    assert_eq!(list(&app, &user).await["items"][0]["status"], "pending");

    // An administrator's own request goes to another administrator: they
    // can neither approve nor deny it, nor set their own tier directly.
    let own = ask_ok(&app, &admin, "I want more").await;
    let own_id = own["id"].as_str().unwrap();
    for decision in ["approve", "deny"] {
        let r = decide(&app, admin.access(), own_id, &json!({"decision": decision})).await;
        assert_eq!(r.status(), 403, "{decision}");
        assert_eq!(problem(r).await["code"], "own_account");
    }
    let r = app
        .send_auth(
            Method::PUT,
            &format!("/v1/admin/users/{}/rate-limit-tier", admin.user_id),
            admin.access(),
            Some(&json!({"tier": "high"})),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "own_account");
    assert_eq!(tier_of(&app, admin.user_id).await.0, "standard");
    assert_eq!(list(&app, &admin).await["items"][0]["status"], "pending");
    assert_eq!(
        audit_count(&app, "admin.rate_limit_request.decided", "denied").await,
        2
    );
    assert_eq!(
        audit_count(&app, "admin.user.rate_limit_tier_refused", "denied").await,
        1
    );

    // A second administrator may.
    let other_admin = app.staff_user("admin2@example.com", "admin").await;
    let r = decide(
        &app,
        other_admin.access(),
        own_id,
        &json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(tier_of(&app, admin.user_id).await, ("raised".into(), None));
}

#[tokio::test]
async fn a_request_is_decided_once_and_a_denial_keeps_the_tier() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("user@example.com").await;
    let admin = app.staff_user("admin@example.com", "admin").await;
    let second = app.staff_user("second@example.com", "admin").await;
    let made = ask_ok(&app, &user, "please").await;
    let id = made["id"].as_str().unwrap();

    // Bad decisions are refused before anything is looked at.
    for (body, field, code) in [
        (json!({"decision": "maybe"}), "decision", "invalid_value"),
        (
            json!({"decision": "deny", "expires_in_days": 5}),
            "expires_in_days",
            "not_allowed",
        ),
        (
            json!({"decision": "approve", "expires_in_days": 0}),
            "expires_in_days",
            "range",
        ),
        (
            json!({"decision": "approve", "expires_in_days": 366}),
            "expires_in_days",
            "range",
        ),
        (
            json!({"decision": "approve", "note": "a\u{7}bell"}),
            "note",
            "control_characters",
        ),
        (
            json!({"decision": "approve", "note": "n".repeat(501)}),
            "note",
            "length",
        ),
        (
            json!({"decision": "approve", "tier": "high"}),
            "tier",
            "unknown_field",
        ),
    ] {
        let r = decide(&app, admin.access(), id, &body).await;
        assert_eq!(r.status(), 422, "{body}");
        let p = problem(r).await;
        assert_eq!(p["errors"][0]["field"], field, "{body}");
        assert_eq!(p["errors"][0]["code"], code, "{body}");
    }
    let r = decide(
        &app,
        admin.access(),
        &uuid::Uuid::now_v7().to_string(),
        &json!({"decision": "deny"}),
    )
    .await;
    assert_eq!(r.status(), 404);

    // Two administrators at once: one decision.
    let deny = json!({"decision": "deny", "note": "Use the bulk export instead."});
    let approve = json!({"decision": "approve"});
    let (a, b) = tokio::join!(
        decide(&app, admin.access(), id, &deny),
        decide(&app, second.access(), id, &approve),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let loser = if a.status() == 409 { a } else { b };
    assert_eq!(problem(loser).await["code"], "already_decided");
    let decided: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'admin.rate_limit_request.decided' AND outcome = 'success'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(decided, 1);

    // Whatever won, a third try is refused, and a withdrawal too.
    let r = decide(&app, admin.access(), id, &json!({"decision": "approve"})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "already_decided");
    let r = withdraw(&app, &user, id).await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "already_decided");

    // A withdrawn request cannot be decided either.
    sqlx::query("DELETE FROM rate_limit_requests")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET rate_limit_tier = 'standard' WHERE user_id = $1")
        .bind(user.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    let made = ask_ok(&app, &user, "again").await;
    let id = made["id"].as_str().unwrap();
    assert_eq!(withdraw(&app, &user, id).await.status(), 204);
    let r = decide(&app, admin.access(), id, &json!({"decision": "approve"})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "already_decided");
    assert_eq!(tier_of(&app, user.user_id).await.0, "standard");

    // A denial: the tier stays, the user sees the note in the app and the
    // mail carries no free text.
    let made = ask_ok(&app, &user, "third time").await;
    let id = made["id"].as_str().unwrap();
    let r = decide(
        &app,
        admin.access(),
        id,
        &json!({"decision": "deny", "note": "Call +1 555 0100 to appeal"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(tier_of(&app, user.user_id).await.0, "standard");
    let mine = list(&app, &user).await;
    assert_eq!(mine["items"][0]["status"], "denied");
    assert_eq!(mine["items"][0]["note"], "Call +1 555 0100 to appeal");
    let mails = app.drain_outbox().await;
    let denial = mails
        .iter()
        .rev()
        .find(|m| m.to == "user@example.com" && m.subject.contains("not approved"))
        .expect("the denial is mailed");
    assert!(!denial.text.contains("555") && !denial.text.contains("third time"));
}

#[tokio::test]
async fn approving_never_lowers_a_tier_and_a_later_set_tier_clears_the_expiry() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("user@example.com").await;
    let admin = app.staff_user("admin@example.com", "admin").await;
    let set_tier = |tier: &'static str| {
        let path = format!("/v1/admin/users/{}/rate-limit-tier", user.user_id);
        let token = admin.access().to_owned();
        let app = &app;
        async move {
            app.send_auth(Method::PUT, &path, &token, Some(&json!({ "tier": tier })))
                .await
        }
    };

    let made = ask_ok(&app, &user, "raised please").await;
    let id = made["id"].as_str().unwrap();
    // Raised to high by hand meanwhile: approving `raised` would lower it.
    assert_eq!(set_tier("high").await.status(), 200);
    let r = decide(&app, admin.access(), id, &json!({"decision": "approve"})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "tier_not_higher");
    assert_eq!(tier_of(&app, user.user_id).await, ("high".into(), None));
    assert_eq!(list(&app, &user).await["items"][0]["status"], "pending");
    let r = decide(&app, admin.access(), id, &json!({"decision": "deny"})).await;
    assert_eq!(r.status(), 200);

    // An approval with an expiry, then a direct change: the expiry goes.
    assert_eq!(set_tier("standard").await.status(), 200);
    let made = ask_ok(&app, &user, "for a week").await;
    let id = made["id"].as_str().unwrap();
    let r = decide(
        &app,
        admin.access(),
        id,
        &json!({"decision": "approve", "expires_in_days": 7}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(tier_of(&app, user.user_id).await.1.is_some());
    assert_eq!(set_tier("high").await.status(), 200);
    assert_eq!(tier_of(&app, user.user_id).await, ("high".into(), None));
    app.clock.advance(Duration::days(8));
    mobile_backend::rate_limit::tiers::expire_due(&app.state)
        .await
        .unwrap();
    assert_eq!(tier_of(&app, user.user_id).await, ("high".into(), None));
    let (from, to, expires): (String, String, Option<String>) = sqlx::query_as(
        "SELECT details->>'from', details->>'to', details->>'expires_at' FROM audit_events \
         WHERE event_type = 'admin.user.rate_limit_tier_changed' ORDER BY audit_event_id DESC LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (from.as_str(), to.as_str(), expires),
        ("raised", "high", None)
    );
}

#[tokio::test]
async fn a_429_links_to_the_request_on_reads_and_writes_for_a_signed_in_user_only() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_READS", "1/60")
        .env("RATE_LIMIT_WRITES", "1/60")
        .env("RATE_LIMIT_CREDENTIALS", "2/60")
        .spawn()
        .await;
    let user = app.signed_up_user("limited@example.com").await; // 2 credential calls
    let link = |p: &Value| p["links"]["request_increase"].clone();

    // Reads and writes counted per user: the link.
    assert_eq!(
        app.get_auth("/v1/sessions", user.access()).await.status(),
        200
    );
    let r = app.get_auth("/v1/sessions", user.access()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(link(&problem(r).await), "/v1/me/rate-limit-requests");
    let empty = json!({});
    let patch = || app.send_auth(Method::PATCH, "/v1/me", user.access(), Some(&empty));
    assert_eq!(patch().await.status(), 200);
    let r = patch().await;
    assert_eq!(r.status(), 429);
    assert_eq!(link(&problem(r).await), "/v1/me/rate-limit-requests");

    // Anonymous reads: no link (nobody to raise).
    let anonymous = client_from("127.0.0.2");
    let probe = || anonymous.get(app.url("/v1/_probe")).send();
    assert_eq!(probe().await.unwrap().status(), 200);
    let r = probe().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(problem(r).await.get("links").is_none());

    // Credential classes: never, signed in or not.
    let elsewhere = client_from("127.0.0.3");
    let change = || {
        elsewhere
            .post(app.url("/v1/auth/password/change"))
            .bearer_auth(user.access())
            .json(&json!({"current_password": "wrong-password-123", "new_password": "another-long-password-99"}))
            .send()
    };
    for _ in 0..2 {
        assert_ne!(change().await.unwrap().status(), 429);
    }
    let r = change().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(problem(r).await.get("links").is_none());
    let login = || {
        elsewhere
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": "limited@example.com", "password": "wrong-password-123"}))
            .send()
    };
    let r = login().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(problem(r).await.get("links").is_none());

    // At the highest tier there is nothing to ask for: no link.
    sqlx::query("UPDATE users SET rate_limit_tier = 'high' WHERE user_id = $1")
        .bind(user.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    for _ in 0..20 {
        assert_eq!(
            app.get_auth("/v1/sessions", user.access()).await.status(),
            200
        );
    }
    let r = app.get_auth("/v1/sessions", user.access()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-policy"], "\"reads\";q=20;w=60");
    assert!(problem(r).await.get("links").is_none());

    // Each per-user 429 is counted for staff; the others are not.
    mobile_backend::rate_limit::tiers::flush_refusals(&app.state)
        .await
        .unwrap();
    let counted: Vec<(uuid::Uuid, i32)> =
        sqlx::query_as("SELECT user_id, refusals FROM rate_limit_refusals")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(counted, [(user.user_id, 3)]);
}

#[tokio::test]
async fn the_reason_is_sealed_at_rest_exported_and_erased_with_the_account() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_READS", "2/60")
        .spawn()
        .await;
    let user = app.signed_up_user("leaver@example.com").await;
    let admin = app.staff_user("admin@example.com", "admin").await;
    let reason = "reason-Zanzibar-7731 for the quarterly report";
    let note = "note-Quokka-4410 from staff";
    let made = ask_ok(&app, &user, reason).await;
    let id = made["id"].as_str().unwrap();
    let r = decide(
        &app,
        admin.access(),
        id,
        &json!({"decision": "deny", "note": note}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let pending = ask_ok(&app, &user, reason).await;

    // Stored sealed: the raw bytes hold neither text.
    let sealed: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT reason_ciphertext, note_ciphertext FROM rate_limit_requests")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(sealed.len(), 2);
    for (r, n) in &sealed {
        for (bytes, text) in [(r.as_slice(), reason), (n.as_deref().unwrap_or(&[]), note)] {
            assert!(
                !bytes
                    .windows(8)
                    .any(|w| text.as_bytes().windows(8).any(|t| t == w)),
                "plaintext in a sealed column"
            );
        }
    }
    let dump: Vec<String> =
        sqlx::query_scalar("SELECT row_to_json(t)::text FROM rate_limit_requests t")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert!(dump
        .iter()
        .all(|row| !row.contains("Zanzibar") && !row.contains("Quokka")));

    // A 429 to show in the export.
    for _ in 0..2 {
        app.get_auth("/v1/sessions", user.access()).await;
    }
    assert_eq!(
        app.get_auth("/v1/sessions", user.access()).await.status(),
        429
    );
    app.clock.advance(Duration::seconds(60));

    let r = app.get_auth("/v1/me/export", user.access()).await;
    assert_eq!(r.status(), 200);
    let export: Value = r.json().await.unwrap();
    let requests = export["rate_limit_requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["id"], pending["id"]);
    assert_eq!(requests[1]["reason"], reason);
    assert_eq!(requests[1]["note"], note);
    assert_eq!(requests[1]["status"], "denied");
    assert_eq!(
        export["rate_limit_refusals"],
        json!([{"day": "2026-03-01", "refusals": 1}])
    );

    // Deleting the account takes every request and count with it.
    let r = app
        .send_auth(
            Method::DELETE,
            "/v1/me",
            user.access(),
            Some(&json!({"current_password": user.password})),
        )
        .await;
    assert_eq!(r.status(), 204);
    for table in ["rate_limit_requests", "rate_limit_refusals"] {
        let left: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE user_id = $1"))
                .bind(user.user_id)
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    // The pending request is gone for staff too.
    let r = decide(
        &app,
        admin.access(),
        pending["id"].as_str().unwrap(),
        &json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let queue: Value = admin_list(&app, admin.access(), "")
        .await
        .json()
        .await
        .unwrap();
    assert!(queue["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn staff_page_through_requests_by_status() {
    let app = TestApp::spawn().await;
    let admin = app.staff_user("admin@example.com", "admin").await;
    let mut users = Vec::new();
    for i in 0..3 {
        let user = app.signed_up_user(&format!("u{i}@example.com")).await;
        ask_ok(&app, &user, &format!("user {i}")).await;
        users.push(user);
    }
    let first: Value = admin_list(&app, admin.access(), "?limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["items"][0]["reason"], "user 2", "newest first");
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = admin_list(&app, admin.access(), &format!("?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["items"][0]["reason"], "user 0");
    assert!(second["next_cursor"].is_null());

    let id = first["items"][0]["id"].as_str().unwrap();
    assert_eq!(
        decide(&app, admin.access(), id, &json!({"decision": "approve"}))
            .await
            .status(),
        200
    );
    let pending: Value = admin_list(&app, admin.access(), "?status=pending")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending["items"].as_array().unwrap().len(), 2);
    let approved: Value = admin_list(&app, admin.access(), "?status=approved")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(approved["items"][0]["id"], id);
    assert_eq!(approved["items"][0]["current_tier"], "raised");

    for (query, code) in [
        ("?status=lost", "invalid_query"),
        ("?limit=0", "range"),
        ("?cursor=xyz", "invalid_cursor"),
        ("?user_id=1", "invalid_query"),
    ] {
        let r = admin_list(&app, admin.access(), query).await;
        assert_eq!(r.status(), 422, "{query}");
        assert_eq!(problem(r).await["errors"][0]["code"], code, "{query}");
    }
}

#[tokio::test]
async fn a_time_limited_approval_never_cuts_short_a_longer_raised_tier() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("held@example.com").await;
    let admin = app.staff_user("admin@example.com", "admin").await;
    // The account holds `raised` for good, set by hand.
    let path = format!("/v1/admin/users/{}/rate-limit-tier", user.user_id);
    let r = app
        .send_auth(
            Method::PUT,
            &path,
            admin.access(),
            Some(&json!({ "tier": "raised" })),
        )
        .await;
    assert_eq!(r.status(), 200);
    let made = ask(
        &app,
        &user,
        &json!({"reason": "a week of high", "requested_tier": "high"}),
    )
    .await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let id = made["id"].as_str().unwrap();
    // Approving `high` for a week would drop the account to `standard`
    // when the week ends, ending the permanent `raised` with it.
    let r = decide(
        &app,
        admin.access(),
        id,
        &json!({"decision": "approve", "expires_in_days": 7}),
    )
    .await;
    assert_eq!(r.status(), 409);
    assert_eq!(problem(r).await["code"], "tier_would_lapse");
    assert_eq!(tier_of(&app, user.user_id).await, ("raised".into(), None));
    assert_eq!(list(&app, &user).await["items"][0]["status"], "pending");
    // Without an end it is granted, and nothing lapses later.
    let r = decide(&app, admin.access(), id, &json!({"decision": "approve"})).await;
    assert_eq!(r.status(), 200);
    app.clock.advance(Duration::days(400));
    mobile_backend::rate_limit::tiers::expire_due(&app.state)
        .await
        .unwrap();
    assert_eq!(tier_of(&app, user.user_id).await, ("high".into(), None));
}

#[tokio::test]
async fn a_password_level_session_cannot_file_or_withdraw_once_mfa_is_on() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("twofactor@example.com").await;
    // A session from before MFA was turned on stays aal1 (a stolen one, say).
    let older: Value = app
        .login("twofactor@example.com", &user.password)
        .await
        .json()
        .await
        .unwrap();
    let older = older["access_token"].as_str().unwrap().to_owned();
    let made = ask_ok(&app, &user, "before MFA").await;
    let id = made["id"].as_str().unwrap();
    app.enable_totp(&user).await;
    let r = app
        .post_auth(REQUESTS, &older, Some(&json!({"reason": "in your name"})))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "mfa_required");
    let r = app.delete_auth(&format!("{REQUESTS}/{id}"), &older).await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "mfa_required");
    assert_eq!(list(&app, &user).await["items"][0]["status"], "pending");
    // The session that completed the second factor may.
    assert_eq!(withdraw(&app, &user, id).await.status(), 204);
}
