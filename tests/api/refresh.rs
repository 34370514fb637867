//! Refresh-token rotation, lost answers retried, reuse detection, concurrency
//! and session lifetimes (moved with the test clock, never slept).

use crate::helpers::{decode_claims, problem, TestApp};
use chrono::Duration;
use serde_json::Value;

/// The refresh token of a token-pair answer.
async fn pair(r: reqwest::Response) -> (String, String) {
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    (
        v["refresh_token"].as_str().unwrap().to_owned(),
        v["access_token"].as_str().unwrap().to_owned(),
    )
}

/// How many times reuse was detected for the user, and how many alerts.
async fn reuse_counts(app: &TestApp, user_id: uuid::Uuid) -> (i64, i64) {
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'auth.refresh.reuse_detected' AND user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let alerts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM security_alerts WHERE rule = 'refresh_token_reuse'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    (audited, alerts)
}

#[tokio::test]
async fn rotation_returns_a_new_token_and_the_old_one_dies_once_its_successor_is_used() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let first = user.refresh_token().to_owned();
    let (second, _) = pair(app.refresh(&first).await).await;
    assert_ne!(second, first);
    assert!(second.len() >= 43, "at least 256 bits, base64url");

    // Minutes later, the successor still unused: the same successor.
    app.clock.advance(Duration::minutes(10));
    let (again, _) = pair(app.refresh(&first).await).await;
    assert_eq!(again, second);

    // The successor's first use retires the first token for good.
    pair(app.refresh(&second).await).await;
    let r = app.refresh(&first).await;
    assert_eq!(r.status(), 401);
    assert_eq!(problem(r).await["code"], "refresh_token_reused");
}

#[tokio::test]
async fn a_lost_answer_retried_days_later_gets_the_same_successor_and_a_fresh_access_token() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    // The app refreshed, and was killed before it stored the answer.
    let (lost, lost_access) = pair(app.refresh(user.refresh_token()).await).await;
    // It comes back a day later, then again much later, still within the
    // 30-day idle lifetime that the lost refresh set (a retry delivers the
    // lost answer and does not slide it).
    for later in [
        Duration::hours(26),
        Duration::days(29) - Duration::hours(26),
    ] {
        app.clock.advance(later);
        let (refresh, access) = pair(app.refresh(user.refresh_token()).await).await;
        assert_eq!(refresh, lost, "the same refresh token value");
        assert_ne!(access, lost_access, "a fresh access token");
        let claims = decode_claims(&access);
        assert!(claims["exp"].as_i64().unwrap() > app.clock.now().timestamp());
        assert_eq!(
            app.get_auth("/v1/sessions", &access).await.status(),
            200,
            "signed in"
        );
    }
    assert_eq!(
        reuse_counts(&app, user.user_id).await,
        (0, 0),
        "no revocation, no alert: nothing was stolen"
    );
    let retries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'auth.refresh.rotated'
           AND user_id = $1 AND (details->>'retry')::boolean",
    )
    .bind(user.user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(retries, 2, "each retry audited as one");
    // The successor works, once.
    let (third, _) = pair(app.refresh(&lost).await).await;
    assert_ne!(third, lost);
}

#[tokio::test]
async fn a_thief_replaying_the_retired_token_after_the_owner_used_the_successor_ends_the_session() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let stolen = user.refresh_token().to_owned();
    // The owner keeps refreshing.
    let (owner, _) = pair(app.refresh(&stolen).await).await;
    app.clock.advance(Duration::seconds(30));
    let (owner2, owner2_access) = pair(app.refresh(&owner).await).await;

    // The thief replays the stolen token.
    let r = app.refresh(&stolen).await;
    assert_eq!(r.status(), 401);
    let body = problem(r).await;
    assert_eq!(body["code"], "refresh_token_reused");
    assert!(body.get("refresh_token").is_none());
    // Every token of the session is dead, with the same reason.
    let r = app.refresh(&owner2).await;
    assert_eq!(problem(r).await["code"], "refresh_token_reused");
    assert_eq!(
        app.get_auth("/v1/sessions", &owner2_access).await.status(),
        401
    );
    assert_eq!(
        reuse_counts(&app, user.user_id).await,
        (1, 1),
        "audited, alerted"
    );
}

#[tokio::test]
async fn a_retry_after_the_successor_was_used_is_reuse_even_seconds_later() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let (next, _) = pair(app.refresh(user.refresh_token()).await).await;
    pair(app.refresh(&next).await).await;
    let r = app.refresh(user.refresh_token()).await;
    assert_eq!(problem(r).await["code"], "refresh_token_reused");
    assert_eq!(reuse_counts(&app, user.user_id).await, (1, 1));
}

#[tokio::test]
async fn a_thief_racing_the_owner_gets_the_same_successor_and_whoever_uses_it_first_exposes_the_other(
) {
    for thief_first in [false, true] {
        let app = TestApp::spawn().await;
        let user = app.signed_up_user("ada@example.com").await;
        let stolen = user.refresh_token().to_owned();
        // Both present the same token before the successor is used: both
        // hold the same successor, nothing the owner did not hold already.
        let (owner_next, _) = pair(app.refresh(&stolen).await).await;
        let (thief_next, _) = pair(app.refresh(&stolen).await).await;
        assert_eq!(owner_next, thief_next);
        assert_eq!(reuse_counts(&app, user.user_id).await, (0, 0));

        // One of them uses the successor; the other, still behind, later
        // replays the retired token: that is reuse, and the session ends.
        let (first_user, _) = pair(app.refresh(&owner_next).await).await;
        let r = app.refresh(&stolen).await;
        assert_eq!(
            problem(r).await["code"],
            "refresh_token_reused",
            "thief first: {thief_first}"
        );
        assert_eq!(reuse_counts(&app, user.user_id).await, (1, 1));
        // Whoever moved ahead is cut off too: the session is gone.
        let r = app.refresh(&first_user).await;
        assert_eq!(problem(r).await["code"], "refresh_token_reused");
    }
}

#[tokio::test]
async fn a_chain_of_three_only_the_last_retired_token_retries() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let t1 = user.refresh_token().to_owned();
    let (t2, _) = pair(app.refresh(&t1).await).await;
    let (t3, _) = pair(app.refresh(&t2).await).await;
    // t2 is retired and t3 unused: t2 still gets t3.
    app.clock.advance(Duration::hours(3));
    let (again, _) = pair(app.refresh(&t2).await).await;
    assert_eq!(again, t3);
    // t1's successor (t2) was used: t1 is reuse, and ends the session.
    let r = app.refresh(&t1).await;
    assert_eq!(problem(r).await["code"], "refresh_token_reused");
    for token in [&t2, &t3] {
        let r = app.refresh(token).await;
        assert_eq!(problem(r).await["code"], "refresh_token_reused");
    }

    // In another session: rotated twice more, t2 and t1 are both reuse.
    let user = app.signed_up_user("bob@example.com").await;
    let t1 = user.refresh_token().to_owned();
    let (t2, _) = pair(app.refresh(&t1).await).await;
    let (t3, _) = pair(app.refresh(&t2).await).await;
    pair(app.refresh(&t3).await).await;
    let r = app.refresh(&t2).await;
    assert_eq!(problem(r).await["code"], "refresh_token_reused");
}

#[tokio::test]
async fn a_retired_token_after_logout_logout_all_or_expiry_gets_no_successor() {
    let app = TestApp::spawn().await;
    // Logout, logout-all, and revocation from the session list.
    for (i, route) in ["/v1/auth/logout", "/v1/auth/logout-all"]
        .iter()
        .enumerate()
    {
        let user = app.signed_up_user(&format!("user{i}@example.com")).await;
        let (_, access) = pair(app.refresh(user.refresh_token()).await).await;
        assert!(sealed_successor(&app, user.refresh_token()).await.is_some());
        let r = app.post_auth(route, &access, None).await;
        assert!(r.status().is_success(), "{route}: {}", r.status());
        // Ending the session forgets the sealed successor at once.
        assert_eq!(
            sealed_successor(&app, user.refresh_token()).await,
            None,
            "{route}"
        );
        let r = app.refresh(user.refresh_token()).await;
        assert_eq!(r.status(), 401, "{route}");
        let body = problem(r).await;
        assert_eq!(body["code"], "session_revoked", "{route}");
        assert!(body.get("refresh_token").is_none());
        assert_eq!(reuse_counts(&app, user.user_id).await, (0, 0), "no alert");
    }

    // Idle expiry: 30 days without use.
    let user = app.signed_up_user("idle@example.com").await;
    pair(app.refresh(user.refresh_token()).await).await;
    app.clock.advance(Duration::days(30) + Duration::seconds(1));
    let r = app.refresh(user.refresh_token()).await;
    assert_eq!(problem(r).await["code"], "session_expired_idle");

    // Absolute expiry: used every 20 days, the retired token's retry ends
    // with the session's 90 days.
    let user = app.signed_up_user("absolute@example.com").await;
    let mut token = user.refresh_token().to_owned();
    let mut retired = token.clone();
    for _ in 0..4 {
        app.clock.advance(Duration::days(20));
        retired = token;
        token = pair(app.refresh(&retired).await).await.0;
    }
    app.clock.advance(Duration::days(11));
    let r = app.refresh(&retired).await;
    assert_eq!(problem(r).await["code"], "session_expired_absolute");
}

#[tokio::test]
async fn fifty_simultaneous_refreshes_of_one_token_all_get_the_same_successor() {
    let app = TestApp::builder()
        .env("DATABASE_MAX_CONNECTIONS", "20")
        .spawn()
        .await;
    let user = app.signed_up_user("ada@example.com").await;
    let token = user.refresh_token().to_owned();
    let requests = (0..50).map(|_| {
        let client = app.client.clone();
        let url = app.url("/v1/auth/refresh");
        let body = serde_json::json!({"refresh_token": token});
        tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap() })
    });
    let mut successors = std::collections::BTreeSet::new();
    for handle in requests {
        let r = handle.await.unwrap();
        assert_eq!(r.status(), 200);
        let pair: Value = r.json().await.unwrap();
        successors.insert(pair["refresh_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        successors.len(),
        1,
        "every success holds the same successor"
    );
    let successor = successors.into_iter().next().unwrap();
    let r = app.refresh(&successor).await;
    assert_eq!(r.status(), 200, "the session is still usable with it");
}

#[tokio::test]
async fn an_idle_session_expires_after_thirty_days_without_use() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    app.clock.advance(Duration::days(30) + Duration::seconds(1));
    let r = app.refresh(user.refresh_token()).await;
    assert_eq!(problem(r).await["code"], "session_expired_idle");
}

#[tokio::test]
async fn use_keeps_a_session_alive_only_until_its_absolute_lifetime() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let auth_time = decode_claims(user.access())["auth_time"].clone();
    let mut token = user.refresh_token().to_owned();
    for _ in 0..4 {
        app.clock.advance(Duration::days(20));
        let r = app.refresh(&token).await;
        assert_eq!(r.status(), 200);
        let pair: Value = r.json().await.unwrap();
        assert_eq!(
            decode_claims(pair["access_token"].as_str().unwrap())["auth_time"],
            auth_time,
            "auth_time is kept"
        );
        assert!(
            pair["refresh_expires_in"].as_i64().unwrap()
                <= (Duration::days(90) - Duration::days(20 * 4))
                    .num_seconds()
                    .max(0)
                    + 30 * 86400
        );
        token = pair["refresh_token"].as_str().unwrap().to_owned();
    }
    app.clock.advance(Duration::days(11));
    let r = app.refresh(&token).await;
    assert_eq!(problem(r).await["code"], "session_expired_absolute");
}

#[tokio::test]
async fn an_unknown_refresh_token_is_invalid() {
    let app = TestApp::spawn().await;
    let r = app
        .refresh("bm90LWEtcmVhbC10b2tlbi1hdC1hbGwtbm90LWEtcmVhbC10b2tlbg")
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(problem(r).await["code"], "refresh_token_invalid");
}

/// The parent's stored successor, raw (bytea, not through any text cast).
async fn sealed_successor(app: &TestApp, token: &str) -> Option<Vec<u8>> {
    sqlx::query_scalar("SELECT successor_ciphertext FROM refresh_tokens WHERE token_hash = $1")
        .bind(mobile_backend::crypto::hash::hash_token(token))
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn successors_are_random_not_an_hmac_of_the_session_and_parent() {
    use base64::Engine;
    let app = TestApp::spawn().await;
    let mut seen = std::collections::HashSet::new();
    for email in ["ada@example.com", "bob@example.com"] {
        let user = app.signed_up_user(email).await;
        let session = decode_claims(user.access())["sid"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut token = user.refresh_token().to_owned();
        assert!(seen.insert(token.clone()));
        for _ in 0..5 {
            let pair: Value = app.refresh(&token).await.json().await.unwrap();
            let next = pair["refresh_token"].as_str().unwrap().to_owned();
            // The formula successors used to follow, under this app's
            // CODE_HMAC_KEYS: whoever held the key and one token of the
            // session could compute every later one.
            let derived = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                app.state
                    .keys
                    .codes
                    .hash("refresh_successor", &session, &token)
                    .mac,
            );
            assert_ne!(next, derived, "the successor must not be derivable");
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&next)
                .unwrap();
            assert_eq!(raw.len(), 32, "256 bits");
            assert!(seen.insert(next.clone()), "no two tokens collide");
            token = next;
        }
    }
    assert_eq!(seen.len(), 12);
}

#[tokio::test]
async fn the_sealed_successor_is_not_the_token_and_is_gone_after_its_first_use_or_the_sessions_end()
{
    use base64::Engine;
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let first = user.refresh_token().to_owned();
    assert_eq!(
        sealed_successor(&app, &first).await,
        None,
        "unused: nothing kept"
    );
    let pair: Value = app.refresh(&first).await.json().await.unwrap();
    let second = pair["refresh_token"].as_str().unwrap().to_owned();

    let sealed = sealed_successor(&app, &first)
        .await
        .expect("kept until the successor is used");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&second)
        .unwrap();
    for clear in [second.as_bytes(), &raw[..]] {
        assert!(
            !sealed.windows(clear.len()).any(|w| w == clear),
            "the successor is stored sealed, never in clear"
        );
    }
    // Sealed under the master data key ring (format version 1, its key id).
    let master = app.state.keys.data.primary_id();
    assert_eq!(sealed[0], 1);
    assert_eq!(u32::from_be_bytes(sealed[1..5].try_into().unwrap()), master);
    // A retry opens it: the same successor.
    let retry: Value = app.refresh(&first).await.json().await.unwrap();
    assert_eq!(retry["refresh_token"], second.as_str());

    // The successor's first use clears it from the parent's row.
    let pair: Value = app.refresh(&second).await.json().await.unwrap();
    assert_eq!(sealed_successor(&app, &first).await, None);
    let third = pair["refresh_token"].as_str().unwrap().to_owned();
    assert!(sealed_successor(&app, &second).await.is_some());

    // Unused, it is kept as long as the session lives.
    app.clock.advance(Duration::days(29));
    let swept = mobile_backend::sessions::successor::clear_expired(&app.db, app.clock.now())
        .await
        .unwrap();
    assert_eq!(swept, 0, "the session is still live");
    assert!(sealed_successor(&app, &second).await.is_some());
    // Past the session's idle lifetime, the sweep clears it.
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    let swept = mobile_backend::sessions::successor::clear_expired(&app.db, app.clock.now())
        .await
        .unwrap();
    assert_eq!(swept, 1);
    assert_eq!(sealed_successor(&app, &second).await, None);
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE successor_ciphertext IS NOT NULL",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(n, 0);
    let r = app.refresh(&third).await;
    assert_eq!(problem(r).await["code"], "session_expired_idle");
}

#[tokio::test]
async fn a_sealed_successor_moved_to_another_sessions_token_does_not_open() {
    let app = TestApp::spawn().await;
    let ada = app.signed_up_user("ada@example.com").await;
    let eve = app.signed_up_user("eve@example.com").await;
    let ada_next: Value = app.refresh(ada.refresh_token()).await.json().await.unwrap();
    app.refresh(eve.refresh_token()).await;
    // A database writer copies Ada's sealed successor onto Eve's retired token.
    sqlx::query("UPDATE refresh_tokens SET successor_ciphertext = $1 WHERE token_hash = $2")
        .bind(sealed_successor(&app, ada.refresh_token()).await.unwrap())
        .bind(mobile_backend::crypto::hash::hash_token(
            eve.refresh_token(),
        ))
        .execute(&app.db)
        .await
        .unwrap();
    let r = app.refresh(eve.refresh_token()).await;
    assert_eq!(
        r.status(),
        500,
        "bound to its session and row: it does not open"
    );
    let body = r.text().await.unwrap();
    assert!(!body.contains(ada_next["refresh_token"].as_str().unwrap()));
}
