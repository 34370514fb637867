//! Administration: function-level authorization on every admin route
//! (BFLA), support's masked view, user search, locking and roles with
//! last-admin protection, revoking sessions, and the run-time client policy.

use crate::helpers::{problem, TestApp, TestUser};
use reqwest::Method;
use serde_json::{json, Value};

/// Every routed `/v1/admin` operation, with a random id in its path.
fn admin_routes(app: &TestApp) -> Vec<(Method, String)> {
    let id = uuid::Uuid::new_v4().to_string();
    app.routes
        .iter()
        .filter(|r| r.path.starts_with("/v1/admin"))
        .map(|r| {
            (
                Method::from_bytes(r.method.as_str().as_bytes()).unwrap(),
                r.path.replace("{id}", &id),
            )
        })
        .collect()
}

/// Admin-only operations (support may call the rest).
fn admin_only(method: &Method, path: &str) -> bool {
    let staff_readable = (*method == Method::GET
        && (path.starts_with("/v1/admin/users") || path == "/v1/admin/rate-limit-requests"))
        || (*method == Method::POST && path.ends_with("/revoke-sessions"));
    !staff_readable
}

#[tokio::test]
async fn users_get_403_on_every_admin_route_support_on_admin_only_routes_and_aal1_admins_need_mfa()
{
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("plain@example.com").await;
    let support = app.staff_user("support@example.com", "support").await;
    let aal1_admin = app.signed_up_user("aal1-admin@example.com").await;
    sqlx::query("UPDATE users SET role = 'admin' WHERE user_id = $1")
        .bind(aal1_admin.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    let routes = admin_routes(&app);
    assert!(routes.len() >= 10, "{routes:?}");
    for (method, path) in &routes {
        let body = json!({});
        let r = app
            .send_auth(method.clone(), path, user.access(), Some(&body))
            .await;
        assert_eq!(r.status(), 403, "user {method} {path}");
        let p = problem(r).await;
        assert_eq!(p["code"], "forbidden");
        assert!(p.get("items").is_none() && p.get("email").is_none());

        let r = app
            .send_auth(method.clone(), path, aal1_admin.access(), Some(&body))
            .await;
        assert_eq!(r.status(), 403, "aal1 admin {method} {path}");
        assert_eq!(problem(r).await["code"], "mfa_required");

        if admin_only(method, path) {
            let r = app
                .send_auth(method.clone(), path, support.access(), Some(&body))
                .await;
            assert_eq!(r.status(), 403, "support {method} {path}");
            assert_eq!(problem(r).await["code"], "forbidden");
        }
    }
    // Each denial is on the audit trail.
    let denials: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'authz.role.denied'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(denials >= routes.len() as i64);
    let step_ups: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'mfa.step_up.refused' \
         AND user_id = $1 AND details->>'reason' = 'admin_requires_aal2'",
    )
    .bind(aal1_admin.user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(step_ups, routes.len() as i64);
}

async fn user_with_profile(app: &TestApp, email: &str) -> TestUser {
    let user = app.signed_up_user(email).await;
    let r = app
        .send_auth(
            Method::PATCH,
            "/v1/me",
            user.access(),
            Some(&json!({
                "display_name": "Grace Hopper",
                "phone": "+447700900189",
                "date_of_birth": "1985-12-09",
                "address": {"line1": "1 Compiler Way", "city": "Arlington", "postal_code": "22201", "country": "US"}
            })),
        )
        .await;
    assert_eq!(r.status(), 200);
    user
}

#[tokio::test]
async fn support_sees_pii_masked_and_admins_see_it_and_search_is_by_exact_email() {
    let app = TestApp::spawn().await;
    let target = user_with_profile(&app, "grace@example.com").await;
    let support = app.staff_user("support@example.com", "support").await;
    let admin = app.staff_user("admin@example.com", "admin").await;

    let path = format!("/v1/admin/users/{}", target.user_id);
    let masked: Value = app
        .get_auth(&path, support.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(masked["pii_masked"], true);
    assert_eq!(masked["email"], "g****@example.com");
    assert_eq!(masked["profile"]["phone"], "+44********89");
    assert_eq!(masked["profile"]["date_of_birth"], "****-**-**");
    assert_eq!(masked["profile"]["address"]["line1"], "***");
    assert_eq!(masked["profile"]["address"]["country"], "US");
    let text = masked.to_string();
    for clear in [
        "grace@",
        "7700900",
        "1985",
        "Compiler",
        "Arlington",
        "22201",
    ] {
        assert!(!text.contains(clear), "{clear} in the support view");
    }

    let clear: Value = app
        .get_auth(&path, admin.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(clear["pii_masked"], false);
    assert_eq!(clear["email"], "grace@example.com");
    assert_eq!(clear["profile"]["phone"], "+447700900189");
    assert_eq!(clear["role"], "user");
    assert_eq!(clear["status"], "active");
    assert_eq!(clear["active_sessions"], 1);

    // Exact search through the blind index, in any spelling of the address.
    let found: Value = app
        .get_auth(
            "/v1/admin/users?email=%20GRACE@Example.COM",
            support.access(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["id"], target.user_id.to_string());
    let none: Value = app
        .get_auth("/v1/admin/users?email=grace@example.org", support.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"], json!([]));

    // Pages of one, by cursor, visit every user once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/users?limit=1&cursor={c}"),
            None => "/v1/admin/users?limit=1".to_owned(),
        };
        let page: Value = app
            .get_auth(&path, admin.access())
            .await
            .json()
            .await
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 3);
    let r = app
        .get_auth("/v1/admin/users?limit=101", admin.access())
        .await;
    assert_eq!(r.status(), 422);

    // Reads by staff are audited with actor and target.
    let viewed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'admin.user.viewed' AND user_id = $1 AND actor_id = $2",
    )
    .bind(target.user_id)
    .bind(support.user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(viewed, 1);
    let r = app
        .get_auth(
            &format!("/v1/admin/users/{}", uuid::Uuid::new_v4()),
            admin.access(),
        )
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn locking_a_user_ends_their_sessions_and_sign_in_then_fails_with_account_locked() {
    let app = TestApp::spawn().await;
    let target = app.signed_up_user("locked@example.com").await;
    let admin = app.staff_user("admin@example.com", "admin").await;
    let path = format!("/v1/admin/users/{}", target.user_id);
    let r = app
        .send_auth(
            Method::PATCH,
            &path,
            admin.access(),
            Some(&json!({"status": "locked"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["status"], "locked");
    assert_eq!(view["active_sessions"], 0);
    assert_eq!(app.get_auth("/v1/me", target.access()).await.status(), 401);
    assert_eq!(app.refresh(target.refresh_token()).await.status(), 401);
    let r = app.login("locked@example.com", &target.password).await;
    assert_eq!(problem(r).await["code"], "account_locked");

    let event: (Option<uuid::Uuid>, String) = sqlx::query_as(
        "SELECT actor_id, details::text FROM audit_events WHERE event_type = 'admin.user.updated' AND user_id = $1",
    )
    .bind(target.user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(event.0, Some(admin.user_id));
    assert!(
        event.1.contains("\"status_to\": \"locked\"")
            || event.1.contains("\"status_to\":\"locked\"")
    );

    // Unlocked, they sign in again; unknown fields are refused.
    let r = app
        .send_auth(
            Method::PATCH,
            &path,
            admin.access(),
            Some(&json!({"status": "active"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.login("locked@example.com", &target.password)
            .await
            .status(),
        200
    );
    let r = app
        .send_auth(
            Method::PATCH,
            &path,
            admin.access(),
            Some(&json!({"email_verified": false})),
        )
        .await;
    assert_eq!(r.status(), 422);
    let r = app
        .send_auth(
            Method::PATCH,
            &path,
            admin.access(),
            Some(&json!({"role": "root"})),
        )
        .await;
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn the_last_admin_can_be_neither_demoted_nor_locked() {
    let app = TestApp::spawn().await;
    let admin = app.staff_user("only-admin@example.com", "admin").await;
    let own = format!("/v1/admin/users/{}", admin.user_id);
    for body in [json!({"role": "user"}), json!({"status": "locked"})] {
        let r = app
            .send_auth(Method::PATCH, &own, admin.access(), Some(&body))
            .await;
        assert_eq!(r.status(), 409, "{body}");
        assert_eq!(problem(r).await["code"], "last_admin");
    }
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE user_id = $1")
        .bind(admin.user_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(role, "admin");

    // With a second admin, the first can step down. (Staff roles need MFA.)
    let second = app.signed_up_user("second@example.com").await;
    app.enable_totp(&second).await;
    let r = app
        .send_auth(
            Method::PATCH,
            &format!("/v1/admin/users/{}", second.user_id),
            admin.access(),
            Some(&json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .send_auth(
            Method::PATCH,
            &own,
            admin.access(),
            Some(&json!({"role": "support"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    // The demotion applies at once: the same token is no longer an admin's.
    let r = app
        .get_auth("/v1/admin/client-policy", admin.access())
        .await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn support_can_sign_a_user_out_everywhere() {
    let app = TestApp::spawn().await;
    let target = app.signed_up_user("lost-phone@example.com").await;
    let second = app.login("lost-phone@example.com", &target.password).await;
    assert_eq!(second.status(), 200);
    let support = app.staff_user("support@example.com", "support").await;
    let r = app
        .post_auth(
            &format!("/v1/admin/users/{}/revoke-sessions", target.user_id),
            support.access(),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["sessions_ended"], 2);
    assert_eq!(app.get_auth("/v1/me", target.access()).await.status(), 401);
    let r = app
        .post_auth(
            &format!("/v1/admin/users/{}/revoke-sessions", uuid::Uuid::new_v4()),
            support.access(),
            None,
        )
        .await;
    assert_eq!(r.status(), 404);
}

async fn ios_call(app: &TestApp, version: &str) -> reqwest::Response {
    app.client
        .get(app.url("/v1/users/00000000-0000-0000-0000-000000000000"))
        .header("x-client-platform", "ios")
        .header("x-client-version", version)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_client_policy_is_changed_at_run_time_and_falls_back_to_configuration() {
    let app = TestApp::builder()
        .env("MIN_CLIENT_VERSION_IOS", "1.0.0")
        .spawn()
        .await;
    let admin = app.staff_user("admin@example.com", "admin").await;
    let policy: Value = app
        .get_auth("/v1/admin/client-policy", admin.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(policy["ios"]["min_version"], "1.0.0");
    assert_eq!(policy["ios"]["source"], "configuration");
    assert_eq!(policy["android"]["source"], "none");
    assert_ne!(ios_call(&app, "1.5.0").await.status(), 426);

    let put = |body: Value| {
        let app = &app;
        let token = admin.access().to_owned();
        async move {
            app.send_auth(Method::PUT, "/v1/admin/client-policy", &token, Some(&body))
                .await
        }
    };
    let r = put(json!({"ios": {"min_version": "2.0.0"}})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ios"]["source"], "runtime");
    assert_eq!(ios_call(&app, "1.5.0").await.status(), 426);
    assert_ne!(ios_call(&app, "2.0.0").await.status(), 426);

    for bad in [
        json!({"ios": {"min_version": "v2.0"}}),
        json!({"ios": {"min_version": "2..0"}}),
        json!({"ios": {"min_version": "1.2.3.4.5"}}),
        json!({"windows": {"min_version": "1.0.0"}}),
    ] {
        assert_eq!(put(bad.clone()).await.status(), 422, "{bad}");
    }
    // The header's grammar: a short version is a minimum too ("2.1" is 2.1.0).
    let r = put(json!({"ios": {"min_version": "2.1"}})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ios"]["min_version"], "2.1");
    assert_eq!(ios_call(&app, "2.0.9").await.status(), 426);
    assert_ne!(ios_call(&app, "2.1.0").await.status(), 426);
    assert_ne!(ios_call(&app, "2.1").await.status(), 426);

    // null removes the run-time minimum: the configured one applies again.
    let r = put(json!({"ios": {"min_version": null}})).await;
    assert_eq!(r.status(), 200);
    assert_ne!(ios_call(&app, "1.5.0").await.status(), 426);
    let changes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'admin.client_policy.changed' AND actor_id = $1",
    )
    .bind(admin.user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(changes, 3);
}

#[tokio::test]
async fn a_policy_written_by_another_process_reaches_this_one_through_the_refresh() {
    let app = TestApp::builder()
        .env("CLIENT_POLICY_REFRESH_SECS", "1")
        .spawn()
        .await;
    assert_ne!(ios_call(&app, "1.0.0").await.status(), 426);
    // What another API process's PUT leaves in the shared database.
    sqlx::query(
        "INSERT INTO client_policy (platform, min_version, updated_at, updated_by) VALUES ('ios', '3.0.0', now(), $1)",
    )
    .bind(uuid::Uuid::new_v4())
    .execute(&app.db)
    .await
    .unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = ios_call(&app, "1.0.0").await.status().as_u16();
        if status == 426 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 426);
}

#[tokio::test]
async fn the_admin_commands_bootstrap_the_first_admin_and_promote_an_existing_account() {
    let app = TestApp::spawn().await;
    let run =
        |args: &'static [&'static str], stdin: Option<&'static str>| app.run_cli(args, None, stdin);
    let weak = run(
        &["admin", "create", "--email", "boss@example.com"],
        Some("short\n"),
    )
    .await;
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("password refused"));

    let password = "a-long-and-unusual-admin-passphrase";
    let created = run(
        &["admin", "create", "--email", "Boss@Example.com"],
        Some("a-long-and-unusual-admin-passphrase\n"),
    )
    .await;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let r = app.login("boss@example.com", password).await;
    assert_eq!(r.status(), 200, "verified and able to sign in");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["mfa_required"], true,
        "a new administrator has two-factor authentication from the start"
    );
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE role = 'admin'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(role, "admin");
    let again = run(
        &["admin", "create", "--email", "boss@example.com"],
        Some("a-long-and-unusual-admin-passphrase\n"),
    )
    .await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("admin promote"));

    let helper = app.signed_up_user("helper@example.com").await;
    let refused = run(
        &[
            "admin",
            "promote",
            "--email",
            "helper@example.com",
            "--role",
            "support",
        ],
        None,
    )
    .await;
    assert!(!refused.status.success(), "no MFA, no staff role");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("second factor"));
    app.enable_totp(&helper).await;
    let promoted = run(
        &[
            "admin",
            "promote",
            "--email",
            "helper@example.com",
            "--role",
            "support",
        ],
        None,
    )
    .await;
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE user_id = $1")
        .bind(helper.user_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(role, "support");
    let missing = run(
        &[
            "admin",
            "promote",
            "--email",
            "nobody@example.com",
            "--role",
            "admin",
        ],
        None,
    )
    .await;
    assert!(!missing.status.success());
    // The CLI keeps the last-admin rule too: the only admin cannot be
    // demoted from the shell either.
    let last = run(
        &[
            "admin",
            "promote",
            "--email",
            "boss@example.com",
            "--role",
            "user",
        ],
        None,
    )
    .await;
    assert!(!last.status.success());
    assert!(String::from_utf8_lossy(&last.stderr).contains("last active administrator"));
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE role = 'admin'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(role, "admin");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'admin.cli.account_bootstrapped'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(audited, 2);
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    let app = TestApp::spawn().await;
    let a = app.staff_user("a-admin@example.com", "admin").await;
    let b = app.staff_user("b-admin@example.com", "admin").await;
    for _ in 0..5 {
        let demote = |actor: String, target: uuid::Uuid| {
            let app = &app;
            async move {
                app.send_auth(
                    Method::PATCH,
                    &format!("/v1/admin/users/{target}"),
                    &actor,
                    Some(&json!({"role": "user"})),
                )
                .await
            }
        };
        let (ra, rb) = tokio::join!(
            demote(a.access().to_owned(), b.user_id),
            demote(b.access().to_owned(), a.user_id)
        );
        let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
        statuses.sort_unstable();
        // Never both: the loser is refused by the row-locked last-admin
        // check (409) or, when it arrives after the winner committed, by
        // its own role already being gone (403).
        assert!(
            statuses == [200, 409] || statuses == [200, 403],
            "{statuses:?}"
        );
        let admins: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM users WHERE role = 'admin' AND status = 'active'",
        )
        .fetch_all(&app.db)
        .await
        .unwrap();
        assert_eq!(admins.len(), 1);
        // Restore both for the next round (straight in the database).
        sqlx::query("UPDATE users SET role = 'admin' WHERE user_id = ANY($1)")
            .bind(vec![a.user_id, b.user_id])
            .execute(&app.db)
            .await
            .unwrap();
    }
}

/// Role, status and assurance level become values in one place as they
/// leave the database: text it does not know is an error, never a role
/// (and never `admin`).
#[tokio::test]
async fn unknown_role_status_or_aal_text_from_the_database_is_refused() {
    use mobile_backend::accounts::{Aal, Role, Status};
    let app = TestApp::spawn().await;
    let decode = |sql: &'static str, text: &'static str| {
        let db = app.db.clone();
        async move {
            (
                sqlx::query_scalar::<_, Role>(sql)
                    .bind(text)
                    .fetch_one(&db)
                    .await
                    .ok(),
                sqlx::query_scalar::<_, Status>(sql)
                    .bind(text)
                    .fetch_one(&db)
                    .await
                    .ok(),
                sqlx::query_scalar::<_, Aal>(sql)
                    .bind(text)
                    .fetch_one(&db)
                    .await
                    .ok(),
            )
        }
    };
    let sql = "SELECT $1::text";
    assert_eq!(decode(sql, "admin").await.0, Some(Role::Admin));
    assert_eq!(decode(sql, "support").await.0, Some(Role::Support));
    assert_eq!(decode(sql, "locked").await.1, Some(Status::Locked));
    assert_eq!(decode(sql, "aal2").await.2, Some(Aal::Aal2));
    for text in ["root", "Admin", "admin ", "", "aal3", "ACTIVE"] {
        assert_eq!(decode(sql, text).await, (None, None, None), "{text:?}");
    }
}
