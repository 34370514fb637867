//! Rate limits: bursts, progressive blocks, the (account, IP) soft lock,
//! one limit across processes sharing Redis, failing closed without Redis,
//! proxy-aware client IPs and load shedding. Distinct clients are distinct
//! loopback source addresses (127.0.0.2, 127.0.0.3, …), not just headers.

use crate::helpers::{problem, TestApp, STRONG_PASSWORD};
use chrono::Duration;
use serde_json::json;
use std::net::IpAddr;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login_from(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

fn unique_prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn a_login_burst_from_one_ip_gets_429_with_headers_and_is_served_again_later() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_CREDENTIALS", "3/60")
        .spawn()
        .await;
    let client = client_from("127.0.0.2");
    for i in 0..3 {
        let r = login_from(&app, &client, "x@example.com", "whatever-password").await;
        assert_eq!(r.status(), 401, "request {i}");
        assert_eq!(r.headers()["ratelimit-policy"], "\"credentials\";q=3;w=60");
        assert_eq!(
            r.headers()["ratelimit"].to_str().unwrap(),
            format!("\"credentials\";r={};t={}", 2 - i, (i + 1) * 20)
        );
    }
    let r = login_from(&app, &client, "x@example.com", "whatever-password").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "20");
    assert_eq!(r.headers()["ratelimit"], "\"credentials\";r=0;t=60");
    let body = problem(r).await;
    assert_eq!(body["code"], "rate_limited");
    assert!(body["detail"].as_str().unwrap().contains("20 seconds"));

    // Another client is unaffected.
    let other = login_from(
        &app,
        &client_from("127.0.0.3"),
        "x@example.com",
        "whatever-password",
    )
    .await;
    assert_eq!(other.status(), 401);

    app.clock.advance(Duration::seconds(20));
    let r = login_from(&app, &client, "x@example.com", "whatever-password").await;
    assert_eq!(r.status(), 401, "served again after the wait");
}

#[tokio::test]
async fn repeated_violations_get_longer_blocks_and_a_quiet_period_resets_them() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_CREDENTIALS", "1/10")
        .spawn()
        .await;
    let client = client_from("127.0.0.4");
    let mut waits = vec![];
    for _ in 0..4 {
        assert_eq!(
            login_from(&app, &client, "x@example.com", "whatever-password")
                .await
                .status(),
            401
        );
        let r = login_from(&app, &client, "x@example.com", "whatever-password").await;
        assert_eq!(r.status(), 429);
        let wait: i64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        waits.push(wait);
        app.clock.advance(Duration::seconds(wait));
    }
    assert_eq!(waits, [10, 10, 20, 40], "each violation doubles the block");

    app.clock.advance(Duration::minutes(16));
    assert_eq!(
        login_from(&app, &client, "x@example.com", "whatever-password")
            .await
            .status(),
        401
    );
    let r = login_from(&app, &client, "x@example.com", "whatever-password").await;
    assert_eq!(
        r.headers()["retry-after"],
        "10",
        "forgiven after a quiet period"
    );
}

#[tokio::test]
async fn failed_logins_lock_the_pair_but_the_owner_still_signs_in_from_another_ip() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_LOGIN_FAILURES", "3/900")
        .spawn()
        .await;
    let user = app.signed_up_user("victim@example.com").await;
    let attacker = client_from("127.0.0.5");
    for _ in 0..3 {
        let r = login_from(&app, &attacker, &user.email, "guessing-the-password").await;
        assert_eq!(r.status(), 401);
    }
    // Three failures used the pair's budget: now even the right password
    // from the attacker's address is held back.
    let r = login_from(&app, &attacker, &user.email, STRONG_PASSWORD).await;
    assert_eq!(r.status(), 429);
    assert_eq!(problem(r).await["code"], "rate_limited");

    let owner = login_from(
        &app,
        &client_from("127.0.0.6"),
        &user.email,
        STRONG_PASSWORD,
    )
    .await;
    assert_eq!(
        owner.status(),
        200,
        "the attacker cannot lock the owner out"
    );
    let denied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'auth.login.failed' AND details->>'reason' = 'too_many_failures'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(denied, 1);
}

#[tokio::test]
async fn one_address_cannot_be_hammered_from_many_ips() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_CREDENTIALS_ACCOUNT", "2/300")
        .spawn()
        .await;
    for (i, ip) in ["127.0.1.1", "127.0.1.2", "127.0.1.3"].iter().enumerate() {
        let r = client_from(ip)
            .post(app.url("/v1/auth/password/forgot"))
            .json(&json!({"email": "target@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), if i < 2 { 202 } else { 429 }, "from {ip}");
    }
}

#[tokio::test]
async fn two_processes_sharing_redis_enforce_one_combined_limit() {
    let prefix = unique_prefix();
    let a = TestApp::builder()
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("REDIS_KEY_PREFIX", &prefix)
        .env("RATE_LIMIT_CREDENTIALS", "4/60")
        .spawn()
        .await;
    let b = TestApp::builder()
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("REDIS_KEY_PREFIX", &prefix)
        .env("RATE_LIMIT_CREDENTIALS", "4/60")
        .spawn()
        .await;
    let client = client_from("127.0.2.1");
    let mut statuses = vec![];
    for app in [&a, &b, &a, &b, &a, &b] {
        statuses.push(
            login_from(app, &client, "x@example.com", "whatever-password")
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 429, 429],
        "four in total across both"
    );
}

#[tokio::test]
async fn with_redis_down_credentials_fail_closed_and_reads_keep_working() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::builder()
        .env("REDIS_URL", &format!("redis://127.0.0.1:{dead}"))
        .spawn()
        .await;
    let r = app.login("x@example.com", "whatever-password").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(problem(r).await["code"], "rate_limit_unavailable");
    // Reads fall back to the in-process store.
    let r = app.get("/v1/sessions").await;
    assert_eq!(
        r.status(),
        401,
        "served (unauthenticated), not refused by the limiter"
    );
    assert!(r.headers().contains_key("ratelimit"));
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_from_an_untrusted_peer_and_honoured_from_a_trusted_proxy() {
    // Untrusted: the header cannot mint fresh budgets.
    let app = TestApp::builder()
        .env("RATE_LIMIT_CREDENTIALS", "2/60")
        .spawn()
        .await;
    let mut statuses = vec![];
    for i in 0..3 {
        let r = app
            .client
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"email": "x@example.com", "password": "whatever-password"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 429]);

    // Trusted proxy on 127.0.0.1: each forwarded client has its own budget.
    let app = TestApp::builder()
        .env("RATE_LIMIT_CREDENTIALS", "2/60")
        .env("TRUSTED_PROXIES", "127.0.0.1")
        .spawn()
        .await;
    let mut statuses = vec![];
    for i in 0..3 {
        let r = client_from("127.0.0.1")
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", format!("6.6.6.6, 198.51.100.{i}"))
            .json(&json!({"email": "x@example.com", "password": "whatever-password"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401]);
}

#[tokio::test]
async fn a_login_flood_beyond_the_hashing_queue_is_shed_while_health_and_reads_answer() {
    let app = TestApp::builder()
        .env("PASSWORD_HASH_CONCURRENCY", "1")
        .env("PASSWORD_HASH_QUEUE", "1")
        .env("ARGON2_MEMORY_KIB", "65536")
        .env("ARGON2_ITERATIONS", "3")
        .spawn()
        .await;
    let user = app.signed_up_user("ada@example.com").await;
    let flood: Vec<_> = (0..12)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/v1/auth/login");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({"email": "ada@example.com", "password": "not-the-right-one"}))
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    // While the flood runs, liveness and authenticated reads answer.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(
        app.get_auth("/v1/sessions", user.access()).await.status(),
        200
    );
    let mut shed = 0;
    for f in flood {
        let r = f.await.unwrap();
        match r.status().as_u16() {
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                assert_eq!(problem(r).await["code"], "overloaded");
                shed += 1;
            }
            401 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(shed > 0, "some logins were shed");
}

#[tokio::test]
async fn beyond_the_concurrency_bound_requests_are_shed_with_503() {
    let app = TestApp::builder()
        .env("MAX_CONCURRENT_REQUESTS", "1")
        .spawn()
        .await;
    let slow = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/v1/_probe/slow");
        async move { client.get(url).send().await.unwrap().status() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = app.get("/v1/_probe").await;
    assert_eq!(r.status(), 503);
    assert_eq!(problem(r).await["code"], "overloaded");
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "probes are never shed"
    );
    slow.abort();
}

#[tokio::test]
async fn the_redis_store_and_the_in_process_store_decide_alike() {
    use mobile_backend::config::RedisFaults;
    use mobile_backend::rate_limit::{gcra::Quota, policy::Class, Limiter};
    use std::collections::HashMap;
    // A slow quota, one that is no whole number of microseconds apart
    // (1,001 per second) and the highest (1,000,000 per second).
    for (class, quota) in [
        (Class::Writes, Quota::per_seconds(3, 10)),
        (Class::Reads, Quota::per_seconds(1_001, 1)),
        (Class::Refresh, Quota::per_seconds(1_000_000, 1)),
    ] {
        let quotas: HashMap<Class, Quota> = [(class, quota)].into();
        let memory = Limiter::new(quotas.clone(), None, "unused", RedisFaults::default()).unwrap();
        // A generous deadline: this test is about arithmetic, not faults.
        let faults = RedisFaults {
            timeout: std::time::Duration::from_secs(5),
            ..RedisFaults::default()
        };
        let redis = Limiter::new(
            quotas,
            Some("redis://127.0.0.1:6379"),
            &unique_prefix(),
            faults,
        )
        .unwrap();
        let base = 1_780_000_000_000_000i64;
        // Bursts, refusals, penalties and refills at uneven times (µs),
        // scaled to the quota's interval.
        let unit = quota.window_ms * 1000 / i64::from(quota.limit) / 3 + 1;
        let mut times: Vec<i64> = [
            0, 0, 0, 0, 1_000, 3_400, 3_500, 9_000, 9_000, 9_000, 20_000, 20_000, 35_000, 35_000,
            35_000, 35_000, 36_000, 900_000, 2_000_000, 2_000_000,
        ]
        .iter()
        .map(|t| t * 1000)
        .collect();
        if quota.limit > 3 {
            // The burst at one instant (past it when it is small enough to
            // send), steps of a third of the interval, and the same after
            // the longest penalty has passed.
            let burst = if quota.limit <= 1_100 {
                quota.limit as usize + 2
            } else {
                200
            };
            let after = 2 * 3_600_000_000;
            times = std::iter::repeat_n(0, burst)
                .chain((0..100).map(|i| i * unit))
                .chain((0..100).map(|i| after + i * unit))
                .collect();
        }
        for t in times {
            let m = memory.check(class, "k", base + t).await.unwrap();
            let r = redis.check(class, "k", base + t).await.unwrap();
            assert_eq!(m, r, "{quota:?} at +{t} µs");
            let (mp, rp) = (
                memory.blocked(class, "k", base + t).await.unwrap(),
                redis.blocked(class, "k", base + t).await.unwrap(),
            );
            assert_eq!(mp, rp, "{quota:?} peek at +{t} µs");
        }
    }
}

/// An administrator whose session completed the second factor.
pub async fn admin_with_aal2(app: &TestApp, email: &str) -> String {
    app.staff_user(email, "admin").await.access().to_owned()
}

async fn put_tier(app: &TestApp, token: &str, user: uuid::Uuid, tier: &str) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/v1/admin/users/{user}/rate-limit-tier")))
        .bearer_auth(token)
        .json(&json!({"tier": tier}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_raised_tier_lets_a_heavy_user_past_the_default_limit() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_READS", "3/60")
        .spawn()
        .await;
    let user = app.signed_up_user("heavy@example.com").await;
    for _ in 0..3 {
        assert_eq!(
            app.get_auth("/v1/sessions", user.access()).await.status(),
            200
        );
    }
    let r = app.get_auth("/v1/sessions", user.access()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-policy"], "\"reads\";q=3;w=60");

    let admin = admin_with_aal2(&app, "admin@example.com").await;
    let r = put_tier(&app, &admin, user.user_id, "raised").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["rate_limit_tier"],
        "raised"
    );
    let r = app.get_auth("/v1/sessions", user.access()).await;
    assert_eq!(r.status(), 200, "served past the default limit");
    assert_eq!(r.headers()["ratelimit-policy"], "\"reads\";q=15;w=60");

    let audited: (Option<uuid::Uuid>, Option<uuid::Uuid>, String) = sqlx::query_as(
        "SELECT user_id, actor_id, details->>'to' FROM audit_events WHERE event_type = 'admin.user.rate_limit_tier_changed'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(audited.0, Some(user.user_id));
    assert!(
        audited.1.is_some() && audited.1 != Some(user.user_id),
        "the actor is the admin"
    );
    assert_eq!(audited.2, "raised");
}

#[tokio::test]
async fn only_an_admin_with_a_second_factor_may_change_a_tier() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("user@example.com").await;
    let r = put_tier(&app, user.access(), user.user_id, "high").await;
    assert_eq!(r.status(), 403);
    let body = problem(r).await;
    assert_eq!(body["code"], "forbidden");
    assert!(
        body.get("rate_limit_tier").is_none() && body.get("id").is_none(),
        "no data"
    );
    let denied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'authz.role.denied'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(denied, 1, "the attempt is audited");

    // An admin without aal2 (no second factor in this session).
    let admin = app.signed_up_user("admin@example.com").await;
    sqlx::query("UPDATE users SET role = 'admin' WHERE user_id = $1")
        .bind(admin.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    let r = put_tier(&app, admin.access(), user.user_id, "high").await;
    assert_eq!(r.status(), 403);
    assert_eq!(problem(r).await["code"], "mfa_required");

    let tier: String = sqlx::query_scalar("SELECT rate_limit_tier FROM users WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(tier, "standard", "nothing changed");

    let real_admin = admin_with_aal2(&app, "root@example.com").await;
    assert_eq!(
        put_tier(&app, &real_admin, uuid::Uuid::now_v7(), "high")
            .await
            .status(),
        404
    );
    let r = put_tier(&app, &real_admin, user.user_id, "infinite").await;
    assert_eq!(r.status(), 422);
}
