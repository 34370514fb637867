//! Refresh-token rotation, the retry grace, reuse detection, concurrency
//! and session lifetimes (moved with the test clock, never slept).

use crate::helpers::{decode_claims, problem, TestApp};
use chrono::Duration;
use serde_json::Value;

#[tokio::test]
async fn rotation_returns_a_new_token_and_the_old_one_dies_after_the_grace_window() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let first = user.refresh_token().to_owned();
    let r = app.refresh(&first).await;
    assert_eq!(r.status(), 200);
    let next: Value = r.json().await.unwrap();
    let second = next["refresh_token"].as_str().unwrap();
    assert_ne!(second, first);
    assert!(second.len() >= 43, "at least 256 bits, base64url");

    app.clock.advance(Duration::seconds(11));
    let r = app.refresh(&first).await;
    assert_eq!(r.status(), 401);
    assert_eq!(problem(r).await["code"], "refresh_token_reused");
}

#[tokio::test]
async fn a_retry_within_the_grace_window_gets_the_same_successor() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let a: Value = app
        .refresh(user.refresh_token())
        .await
        .json()
        .await
        .unwrap();
    app.clock.advance(Duration::seconds(5));
    let r = app.refresh(user.refresh_token()).await;
    assert_eq!(
        r.status(),
        200,
        "a lost response is retried without signing out"
    );
    let b: Value = r.json().await.unwrap();
    assert_eq!(a["refresh_token"], b["refresh_token"]);
    // The successor works, once.
    let c = app.refresh(b["refresh_token"].as_str().unwrap()).await;
    assert_eq!(c.status(), 200);
}

#[tokio::test]
async fn reuse_after_the_window_revokes_the_whole_session_and_is_audited() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let stolen = user.refresh_token().to_owned();
    // The owner keeps refreshing.
    let owner: Value = app.refresh(&stolen).await.json().await.unwrap();
    app.clock.advance(Duration::seconds(30));
    let owner2: Value = app
        .refresh(owner["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();

    // The thief replays the stolen token.
    let r = app.refresh(&stolen).await;
    assert_eq!(problem(r).await["code"], "refresh_token_reused");
    // Every token of the session is dead, with the same reason.
    let r = app.refresh(owner2["refresh_token"].as_str().unwrap()).await;
    assert_eq!(problem(r).await["code"], "refresh_token_reused");
    assert_eq!(
        app.get_auth("/v1/sessions", owner2["access_token"].as_str().unwrap())
            .await
            .status(),
        401
    );

    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'auth.refresh.reuse_detected' AND user_id = $1",
    )
    .bind(user.user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_retry_after_the_successor_was_used_is_reuse_even_within_the_grace_window() {
    let app = TestApp::spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let next: Value = app
        .refresh(user.refresh_token())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        app.refresh(next["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    let r = app.refresh(user.refresh_token()).await;
    assert_eq!(problem(r).await["code"], "refresh_token_reused");
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
async fn the_sealed_successor_is_not_the_token_and_is_gone_after_its_first_use_or_the_grace() {
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
        .expect("kept for the grace window");
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

    // Unused past the grace window: the sweep clears it.
    app.clock.advance(Duration::seconds(10));
    let grace = app.state.config.auth.refresh_grace;
    let swept = mobile_backend::sessions::successor::clear_expired(&app.db, app.clock.now(), grace)
        .await
        .unwrap();
    assert_eq!(swept, 0, "still within the window");
    app.clock.advance(Duration::seconds(1));
    let swept = mobile_backend::sessions::successor::clear_expired(&app.db, app.clock.now(), grace)
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
    // And the live token still works.
    assert_eq!(app.refresh(&third).await.status(), 200);
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
