//! Review of issue #16 (DPoP-bound sessions, app attestation): each test is
//! an attack, and fails if the attack succeeds.

use crate::attestation::{challenge, post_android, Platforms};
use crate::dpop::{builder, DeviceKey, BASE};
use crate::helpers::*;
use serde_json::{json, Value};

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    auth: Option<(&str, &str)>,
    dpop: Option<String>,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some((scheme, token)) = auth {
        req = req.header("Authorization", format!("{scheme} {token}"));
    }
    if let Some(p) = dpop {
        req = req.header("DPoP", p);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

async fn code_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

async fn bound_login(app: &TestApp, email: &str, key: &DeviceKey) -> Value {
    let r = send(
        app,
        reqwest::Method::POST,
        "/v1/auth/login",
        None,
        Some(key.proof(app, "POST", "/v1/auth/login", None)),
        Some(&json!({"email": email, "password": STRONG_PASSWORD})),
    )
    .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn me_status(app: &TestApp, access: &str, key: &DeviceKey) -> u16 {
    send(
        app,
        reqwest::Method::GET,
        "/v1/me",
        Some(("DPoP", access)),
        Some(key.proof(app, "GET", "/v1/me", Some(access))),
        None,
    )
    .await
    .status()
    .as_u16()
}

/// A proof seen on the network: for one endpoint, replayed on another (and
/// a fresh one naming another host).
#[tokio::test]
async fn a_proof_for_one_endpoint_or_host_is_refused_elsewhere() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("hop@example.com").await;
    let key = DeviceKey::generate();
    let pair = bound_login(&app, &user.email, &key).await;
    let access = pair["access_token"].as_str().unwrap();
    // A proof for GET /v1/me, bound to the token, used on GET /v1/sessions.
    let p = key.proof(&app, "GET", "/v1/me", Some(access));
    let r = send(
        &app,
        reqwest::Method::GET,
        "/v1/sessions",
        Some(("DPoP", access)),
        Some(p),
        None,
    )
    .await;
    assert_eq!(code_of(r).await, (401, "dpop_proof_invalid".into()));
    // A proof for the refresh endpoint used at login.
    let p = key.proof(&app, "POST", "/v1/auth/refresh", None);
    let r = send(
        &app,
        reqwest::Method::POST,
        "/v1/auth/login",
        None,
        Some(p),
        Some(&json!({"email": user.email, "password": STRONG_PASSWORD})),
    )
    .await;
    assert_eq!(code_of(r).await, (401, "dpop_proof_invalid".into()));
    // htu of another host, correct path.
    let mut claims = key.claims(&app, "GET", "/v1/me");
    claims["htu"] = json!("https://evil.example.test/v1/me");
    claims["ath"] = json!(base64_ath(access));
    let p = key.sign(
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk()}),
        &claims,
    );
    let r = send(
        &app,
        reqwest::Method::GET,
        "/v1/me",
        Some(("DPoP", access)),
        Some(p),
        None,
    )
    .await;
    assert_eq!(code_of(r).await, (401, "dpop_proof_invalid".into()));
    // Same host, other scheme/port.
    let mut claims = key.claims(&app, "GET", "/v1/me");
    claims["htu"] = json!(format!("{}:8443/v1/me", BASE));
    claims["ath"] = json!(base64_ath(access));
    let p = key.sign(
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk()}),
        &claims,
    );
    let r = send(
        &app,
        reqwest::Method::GET,
        "/v1/me",
        Some(("DPoP", access)),
        Some(p),
        None,
    )
    .await;
    assert_eq!(code_of(r).await, (401, "dpop_proof_invalid".into()));
    // The method: a GET proof on HEAD/POST.
    let p = key.proof(&app, "GET", "/v1/auth/logout", Some(access));
    let r = send(
        &app,
        reqwest::Method::POST,
        "/v1/auth/logout",
        Some(("DPoP", access)),
        Some(p),
        None,
    )
    .await;
    assert_eq!(code_of(r).await, (401, "dpop_proof_invalid".into()));
    assert_eq!(
        me_status(&app, access, &key).await,
        200,
        "session still live"
    );
}

fn base64_ath(token: &str) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use sha2::{Digest, Sha256};
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// A copied bound access token, used as `Bearer` (and as `DPoP` without a
/// proof) on every kind of authenticated route: nothing may answer 2xx, and
/// nothing may change (the session survives, no logout).
#[tokio::test]
async fn a_copied_bound_token_works_on_no_route_without_the_key() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("copy@example.com").await;
    let key = DeviceKey::generate();
    let pair = bound_login(&app, &user.email, &key).await;
    let access = pair["access_token"].as_str().unwrap();
    let sid = decode_claims(access)["sid"].as_str().unwrap().to_owned();
    use reqwest::Method as M;
    let routes: Vec<(M, String, Option<Value>)> = vec![
        (M::GET, "/v1/me".into(), None),
        (
            M::PATCH,
            "/v1/me".into(),
            Some(json!({"display_name": "x"})),
        ),
        (M::GET, "/v1/me/export".into(), None),
        (M::GET, "/v1/sessions".into(), None),
        (M::DELETE, format!("/v1/sessions/{sid}"), None),
        (M::GET, "/v1/devices".into(), None),
        (M::GET, "/v1/mfa".into(), None),
        (M::POST, "/v1/mfa/totp/setup".into(), None),
        (M::GET, "/v1/notes".into(), None),
        (
            M::POST,
            "/v1/me/email".into(),
            Some(json!({"new_email": "thief@example.com", "password": STRONG_PASSWORD})),
        ),
        (M::GET, "/v1/admin/alerts".into(), None),
        (M::GET, format!("/v1/admin/users/{}", user.user_id), None),
        (M::POST, "/v1/auth/logout-all".into(), None),
        (M::POST, "/v1/auth/logout".into(), None),
        (
            M::DELETE,
            "/v1/me".into(),
            Some(json!({"password": STRONG_PASSWORD})),
        ),
    ];
    for (m, path, body) in &routes {
        for (scheme, proof) in [
            ("Bearer", None),
            ("bearer", None),
            ("DPoP", None),
            // A proof by the thief's own key.
            (
                "DPoP",
                Some(DeviceKey::generate().proof(&app, m.as_str(), path, Some(access))),
            ),
            // Bearer, with a valid proof by the thief's key.
            (
                "Bearer",
                Some(DeviceKey::generate().proof(&app, m.as_str(), path, Some(access))),
            ),
        ] {
            let r = send(
                &app,
                m.clone(),
                path,
                Some((scheme, access)),
                proof,
                body.as_ref(),
            )
            .await;
            let status = r.status().as_u16();
            assert!(
                status == 401 || status == 404 || status == 405,
                "{m} {path} as {scheme}: {status} {}",
                r.text().await.unwrap()
            );
        }
    }
    assert_eq!(
        me_status(&app, access, &key).await,
        200,
        "the owner's session survives"
    );
}

/// Malformed and oversized DPoP headers on every kind of route: never a
/// 5xx, never a success on a bound route.
#[tokio::test]
async fn malformed_dpop_headers_never_cause_a_5xx() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("junk@example.com").await;
    let key = DeviceKey::generate();
    let pair = bound_login(&app, &user.email, &key).await;
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B, Engine};
    let hdr = |v: Value| B.encode(v.to_string());
    let claims = key.claims(&app, "GET", "/v1/me");
    let junk: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"a".to_vec(),
        b"...".to_vec(),
        b"a.b.c.d".to_vec(),
        vec![b'a'; 4097],
        vec![b'a'; 16000],
        vec![0x80, 0xff, b'.', b'x'],
        format!("{}.{}.{}", hdr(json!({"typ":"dpop+jwt","alg":"none","jwk":key.jwk()})), hdr(claims.clone()), "").into_bytes(),
        format!("{}.{}.{}", hdr(json!({"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}})), hdr(claims.clone()), B.encode([0u8; 64])).into_bytes(),
        format!("{}.{}.{}", hdr(json!({"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":B.encode([0u8;32]),"y":B.encode([0u8;32])}})), hdr(claims.clone()), B.encode([0u8; 64])).into_bytes(),
        format!("{}.{}.{}", hdr(json!({"typ":"dpop+jwt","alg":"ES256","jwk":key.jwk()})), B.encode("[".repeat(1500)), B.encode([1u8; 64])).into_bytes(),
        format!("{}.{}.{}", B.encode("{".repeat(10)), hdr(claims.clone()), B.encode([1u8; 64])).into_bytes(),
        key.sign(&json!({"typ":"dpop+jwt","alg":"ES256","jwk":key.jwk()}), &json!({"jti": 1, "htm": "GET", "htu": 5, "iat": 1e300})).into_bytes(),
        key.sign(&json!({"typ":"dpop+jwt","alg":"ES256","jwk":key.jwk()}), &json!({"jti": "é".repeat(200), "htm": "GET", "htu": format!("{BASE}/v1/me"), "iat": i64::MIN})).into_bytes(),
        key.sign(&json!({"typ":"dpop+jwt","alg":"ES256","jwk":key.jwk()}), &json!({"jti": "x", "htm": "GET", "htu": format!("{BASE}/v1/me"), "iat": i64::MAX})).into_bytes(),
    ];
    use reqwest::Method as M;
    type Route<'a> = (M, &'a str, Option<(&'a str, &'a str)>, Value);
    let routes: Vec<Route> = vec![
        (
            M::GET,
            "/v1/me",
            Some(("DPoP", access.as_str())),
            Value::Null,
        ),
        (
            M::GET,
            "/v1/sessions",
            Some(("Bearer", user.access())),
            Value::Null,
        ),
        (
            M::POST,
            "/v1/auth/login",
            None,
            json!({"email": user.email, "password": STRONG_PASSWORD}),
        ),
        (
            M::POST,
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh}),
        ),
        (
            M::POST,
            "/v1/auth/register",
            None,
            json!({"email": "x@example.com", "password": STRONG_PASSWORD}),
        ),
        (
            M::POST,
            "/v1/auth/verify-email",
            None,
            json!({"email": "x@example.com", "code": "123456", "password": STRONG_PASSWORD}),
        ),
        (
            M::POST,
            "/v1/auth/mfa",
            None,
            json!({"mfa_token": "x", "code": "123456"}),
        ),
        (
            M::POST,
            "/v1/attestation/apple",
            None,
            json!({"key_id": "a", "attestation_object": "a", "challenge": "a".repeat(43)}),
        ),
        (
            M::POST,
            "/v1/attestation/android",
            None,
            json!({"integrity_token": "a", "challenge": "a".repeat(43)}),
        ),
        (
            M::POST,
            "/v1/auth/logout",
            Some(("DPoP", access.as_str())),
            Value::Null,
        ),
    ];
    for (m, path, auth, body) in &routes {
        for j in &junk {
            let mut req = app.client.request(m.clone(), app.url(path));
            if let Some((s, t)) = auth {
                req = req.header("Authorization", format!("{s} {t}"));
            }
            req = req.header("DPoP", reqwest::header::HeaderValue::from_bytes(j).unwrap());
            if !body.is_null() {
                req = req.json(body);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            assert!(
                status < 500,
                "{m} {path} with {:?}: {status}",
                String::from_utf8_lossy(&j[..j.len().min(40)])
            );
            if *path == "/v1/me" || *path == "/v1/auth/logout" || *path == "/v1/auth/refresh" {
                assert!(status >= 400, "{m} {path} accepted junk: {status}");
            }
        }
    }
    assert_eq!(me_status(&app, &access, &key).await, 200);
}

/// The lost-answer retry of a bound session, by a thief holding the old
/// refresh token (no key): refused, and the owner is neither logged out
/// nor handed a reuse revocation.
#[tokio::test]
async fn a_thief_cannot_replay_or_burn_a_bound_refresh_token() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("retry@example.com").await;
    let key = DeviceKey::generate();
    let pair = bound_login(&app, &user.email, &key).await;
    let old = pair["refresh_token"].as_str().unwrap();
    let refresh = |token: &str, k: Option<&DeviceKey>| {
        let proof = k.map(|k| k.proof(&app, "POST", "/v1/auth/refresh", None));
        let body = json!({"refresh_token": token});
        let app = &app;
        async move {
            send(
                app,
                reqwest::Method::POST,
                "/v1/auth/refresh",
                None,
                proof,
                Some(&body),
            )
            .await
        }
    };
    let r = refresh(old, Some(&key)).await;
    assert_eq!(r.status(), 200);
    let new: Value = r.json().await.unwrap();
    // The thief replays the retired token: with no proof, with their key.
    let thief = DeviceKey::generate();
    for k in [None, Some(&thief)] {
        let r = refresh(old, k).await;
        assert_eq!(r.status(), 401, "thief's retry");
    }
    // And the current one.
    let r = refresh(new["refresh_token"].as_str().unwrap(), Some(&thief)).await;
    assert_eq!(r.status(), 401);
    // The owner is not logged out by the thief's attempts.
    let access = new["access_token"].as_str().unwrap();
    assert_eq!(me_status(&app, access, &key).await, 200);
    let r = refresh(new["refresh_token"].as_str().unwrap(), Some(&key)).await;
    assert_eq!(r.status(), 200);
}

async fn mfa_login(app: &TestApp, email: &str, key: &DeviceKey) -> Value {
    let first = bound_login(app, email, key).await;
    assert_eq!(first["mfa_required"], true);
    first
}

/// A device-bound sign-in (password step proven with key A) completed at
/// the second step with another key B: the session must not end up bound
/// to a key that never took part in the password step (an mfa_token seen
/// in the victim's traffic or logs, plus a phished code).
#[tokio::test]
async fn the_second_factor_step_cannot_switch_to_another_key() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("mfa@example.com").await;
    let secret = app.enable_totp(&user).await;
    next_step(&app);
    let key = DeviceKey::generate();
    let first = mfa_login(&app, &user.email, &key).await;
    let thief = DeviceKey::generate();
    let r = send(
        &app,
        reqwest::Method::POST,
        "/v1/auth/mfa",
        None,
        Some(thief.proof(&app, "POST", "/v1/auth/mfa", None)),
        Some(&json!({"mfa_token": first["mfa_token"], "code": code(&app, &secret)})),
    )
    .await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let jkt = body["access_token"]
        .as_str()
        .map(|t| decode_claims(t)["cnf"]["jkt"].clone());
    assert_ne!(
        status, 200,
        "a sign-in started with key A was completed with key B (token cnf.jkt = {jkt:?}, thief = {})",
        thief.jkt()
    );
}

/// The same, completed with no proof at all: a bound sign-in downgraded
/// to a bearer session at the second step.
#[tokio::test]
async fn the_second_factor_step_cannot_drop_the_binding() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("mfa2@example.com").await;
    let secret = app.enable_totp(&user).await;
    next_step(&app);
    let key = DeviceKey::generate();
    let first = mfa_login(&app, &user.email, &key).await;
    let r = send(
        &app,
        reqwest::Method::POST,
        "/v1/auth/mfa",
        None,
        None,
        Some(&json!({"mfa_token": first["mfa_token"], "code": code(&app, &secret)})),
    )
    .await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_ne!(
        status, 200,
        "a bound sign-in was completed as a {} session",
        body["token_type"]
    );
}

/// DPOP_POLICY=staff: an account promoted to staff keeps (and keeps
/// refreshing) the bearer session it had as a user; that copied bearer
/// token then reaches staff routes without any device key.
#[tokio::test]
async fn with_dpop_policy_staff_a_promoted_accounts_bearer_session_is_not_a_staff_session() {
    let app = builder().env("DPOP_POLICY", "staff").spawn().await;
    // An ordinary user with a second factor, signed in (bearer, aal2:
    // confirming TOTP upgrades the current session).
    let user = app.signed_up_user("soon-staff@example.com").await;
    app.enable_totp(&user).await;
    assert_eq!(user.tokens["token_type"], "Bearer");
    // Promoted (the same UPDATE the CLI and PATCH /v1/admin/users/{id} run;
    // neither ends the account's sessions).
    sqlx::query("UPDATE users SET role = 'admin' WHERE user_id = $1")
        .bind(user.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    let r = app.get_auth("/v1/admin/alerts", user.access()).await;
    let status = r.status().as_u16();
    assert!(
        status == 401 || status == 403,
        "a bearer (unbound) session reached an admin route under DPOP_POLICY=staff: {status}"
    );
}

/// DPOP_POLICY=staff, the same promoted account: its bearer refresh token
/// keeps minting bearer tokens for a staff account.
#[tokio::test]
async fn with_dpop_policy_staff_a_promoted_account_refreshes_no_bearer_tokens() {
    let app = builder().env("DPOP_POLICY", "staff").spawn().await;
    let user = app.signed_up_user("soon-staff2@example.com").await;
    app.enable_totp(&user).await;
    sqlx::query("UPDATE users SET role = 'support' WHERE user_id = $1")
        .bind(user.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    let r = app.refresh(user.refresh_token()).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(
        status != 200 || body["token_type"] == "DPoP",
        "bearer tokens refreshed for a staff account under DPOP_POLICY=staff: {body}"
    );
}

/// Two processes, Redis reachable from one and not from the other (a
/// partial outage): a proof seen on the network, already spent through
/// Redis, is accepted again by the process that fell back to PostgreSQL.
#[tokio::test]
async fn a_proof_spent_in_redis_is_not_accepted_by_a_process_on_the_postgres_fallback() {
    let prefix = format!("review16-{}", uuid::Uuid::new_v4().simple());
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let healthy = builder()
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("REDIS_KEY_PREFIX", &prefix)
        .spawn()
        .await;
    let cut_off = builder()
        .env("REDIS_URL", &format!("redis://127.0.0.1:{dead}"))
        .env("REDIS_KEY_PREFIX", &prefix)
        .same_database_as(&healthy)
        .spawn()
        .await;
    let key = DeviceKey::generate();
    let path = "/v1/me";
    let proof = key.proof(&healthy, "GET", path, Some("tok"));
    let mut h = axum::http::HeaderMap::new();
    h.insert("dpop", proof.parse().unwrap());
    let first = mobile_backend::dpop::verify(
        &healthy.state,
        &h,
        &axum::http::Method::GET,
        path,
        Some("tok"),
    )
    .await;
    assert!(matches!(first, Ok(Some(_))), "first use");
    let again = mobile_backend::dpop::verify(
        &cut_off.state,
        &h,
        &axum::http::Method::GET,
        path,
        Some("tok"),
    )
    .await;
    assert!(
        !matches!(again, Ok(Some(_))),
        "the replayed proof was accepted by the process on the PostgreSQL fallback"
    );
}

/// The integrity token seen once: replayed after 4 minutes with a new
/// challenge, for the same key and for the thief's key.
#[tokio::test]
async fn a_play_token_seen_once_is_useless_with_a_new_challenge() {
    let p = Platforms::new();
    let app = p.builder().spawn().await;
    let key = DeviceKey::generate();
    let c = challenge(&app).await;
    let body = p.play_body(&app, &c, &key.jkt(), |_| {});
    assert_eq!(post_android(&app, &key, &body).await.status(), 200);
    app.clock.advance(chrono::Duration::seconds(240));
    let thief = DeviceKey::generate();
    for k in [&key, &thief] {
        let c2 = challenge(&app).await;
        let again = json!({"integrity_token": body["integrity_token"], "challenge": c2});
        let r = post_android(&app, k, &again).await;
        assert_eq!(code_of(r).await, (403, "attestation_invalid".into()));
        // And the old challenge again.
        let r = post_android(&app, k, &body).await;
        assert_eq!(r.status(), 403);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM attested_keys WHERE jkt = $1")
        .bind(thief.jkt())
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

/// One challenge raced by two requests (two processes): one attestation.
#[tokio::test]
async fn a_challenge_raced_by_two_requests_serves_one() {
    let p = Platforms::new();
    let a = p.builder().spawn().await;
    let b = p.builder().same_database_as(&a).spawn().await;
    let k1 = DeviceKey::generate();
    let k2 = DeviceKey::generate();
    let c = challenge(&a).await;
    let body1 = p.play_body(&a, &c, &k1.jkt(), |_| {});
    let body2 = p.play_body(&b, &c, &k2.jkt(), |_| {});
    let (r1, r2) = tokio::join!(post_android(&a, &k1, &body1), post_android(&b, &k2, &body2));
    let ok = [r1.status(), r2.status()]
        .iter()
        .filter(|s| s.as_u16() == 200)
        .count();
    assert_eq!(ok, 1, "{} {}", r1.status(), r2.status());
}

/// Someone holding only an attested key's thumbprint (or public JWK) signs
/// in with their own key: not attested, refused under require.
#[tokio::test]
async fn an_attested_thumbprint_alone_does_not_pass_the_gate() {
    let p = Platforms::new();
    let app = p
        .builder()
        .env("ATTESTATION_POLICY", "require")
        .spawn()
        .await;
    let victim = DeviceKey::generate();
    let c = challenge(&app).await;
    assert_eq!(
        post_android(&app, &victim, &p.play_body(&app, &c, &victim.jkt(), |_| {}))
            .await
            .status(),
        200
    );
    let thief = DeviceKey::generate();
    // The victim's public JWK in the header, signed by the thief.
    let claims = thief.claims(&app, "POST", "/v1/auth/login");
    let forged = thief.sign(
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": victim.jwk()}),
        &claims,
    );
    let r = send(
        &app,
        reqwest::Method::POST,
        "/v1/auth/login",
        None,
        Some(forged),
        Some(&json!({"email": "a@example.com", "password": STRONG_PASSWORD})),
    )
    .await;
    assert_eq!(r.status(), 401);
    // The thief's own key: attestation_required.
    let r = send(
        &app,
        reqwest::Method::POST,
        "/v1/auth/login",
        None,
        Some(thief.proof(&app, "POST", "/v1/auth/login", None)),
        Some(&json!({"email": "a@example.com", "password": STRONG_PASSWORD})),
    )
    .await;
    assert_eq!(code_of(r).await, (403, "attestation_required".into()));
    // verify-email without any proof under require.
    let r = send(
        &app,
        reqwest::Method::POST,
        "/v1/auth/verify-email",
        None,
        None,
        Some(&json!({"email": "a@example.com", "code": "123456", "password": STRONG_PASSWORD})),
    )
    .await;
    assert_eq!(code_of(r).await, (403, "attestation_required".into()));
    // complete_mfa without a proof under require.
    let r = send(
        &app,
        reqwest::Method::POST,
        "/v1/auth/mfa",
        None,
        None,
        Some(&json!({"mfa_token": "x", "code": "123456"})),
    )
    .await;
    assert_eq!(code_of(r).await, (403, "attestation_required".into()));
}

/// DPoP-Nonce: a nonce from two windows ago, or a forged one, is refused
/// with a fresh nonce; the bound request then works with it.
#[tokio::test]
async fn stale_or_forged_nonces_are_refused_with_a_fresh_one() {
    let app = builder().env("DPOP_NONCE", "true").spawn().await;
    let user = app.signed_up_user("nonce@example.com").await;
    let key = DeviceKey::generate();
    let old_nonce = app.get("/healthz").await.headers()["dpop-nonce"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut claims = key.claims(&app, "POST", "/v1/auth/login");
    claims["nonce"] = json!(old_nonce);
    let p = key.sign(
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk()}),
        &claims,
    );
    let r = send(
        &app,
        reqwest::Method::POST,
        "/v1/auth/login",
        None,
        Some(p),
        Some(&json!({"email": user.email, "password": STRONG_PASSWORD})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let pair: Value = r.json().await.unwrap();
    let access = pair["access_token"].as_str().unwrap();
    app.clock.advance(chrono::Duration::seconds(601));
    let (window, tag) = old_nonce.split_once('.').unwrap();
    let forged = format!("{}.{tag}", window.parse::<i64>().unwrap() + 2);
    for n in [
        old_nonce.clone(),
        forged,
        "".into(),
        "1.".into(),
        "x".repeat(3000),
    ] {
        let mut claims = key.claims(&app, "GET", "/v1/me");
        claims["nonce"] = json!(n);
        claims["ath"] = json!(base64_ath(access));
        let p = key.sign(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk()}),
            &claims,
        );
        let r = send(
            &app,
            reqwest::Method::GET,
            "/v1/me",
            Some(("DPoP", access)),
            Some(p),
            None,
        )
        .await;
        assert_eq!(r.status(), 401);
        assert!(
            r.headers().get("dpop-nonce").is_some(),
            "a refused nonce comes with a fresh one"
        );
    }
}

/// PATCH /v1/me under merge-patch: the base address is the one read with
/// the session (before the handler), not under a row lock, so two
/// concurrent merge patches of different members lose one of them.
#[tokio::test]
async fn concurrent_address_merge_patches_lose_no_member() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("race@example.com").await;
    let merge = "application/merge-patch+json";
    let patch = |body: String| {
        app.client
            .patch(app.url("/v1/me"))
            .bearer_auth(user.access())
            .header("Content-Type", merge)
            .body(body)
            .send()
    };
    let full = r#"{"address": {"line1": "1 A Street", "city": "London",
        "postal_code": "NW1 6XE", "country": "GB"}}"#;
    assert_eq!(patch(full.to_owned()).await.unwrap().status(), 200);
    for i in 0..15 {
        let (a, b) = tokio::join!(
            patch(format!(r#"{{"address": {{"line1": "{i} Line Street"}}}}"#)),
            patch(format!(r#"{{"address": {{"city": "City{i}"}}}}"#)),
        );
        assert_eq!(a.unwrap().status(), 200);
        assert_eq!(b.unwrap().status(), 200);
        let me: Value = app
            .get_auth("/v1/me", user.access())
            .await
            .json()
            .await
            .unwrap();
        let address = &me["profile"]["address"];
        assert_eq!(
            (address["line1"].as_str(), address["city"].as_str()),
            (
                Some(format!("{i} Line Street").as_str()),
                Some(format!("City{i}").as_str())
            ),
            "round {i}: one of two concurrent merge patches was lost: {address}"
        );
    }
}

/// A bound session's read whose database connection is lost: the server
/// re-runs the whole request once (src/http/retry.rs). The proof was
/// already spent by the first run; the retry must not take it for a
/// replay (it was, before the two runs shared the proofs they spent), and
/// another request presenting the same proof afterwards still must.
#[tokio::test]
async fn a_bound_read_retried_after_a_lost_connection_is_not_refused_as_a_replay() {
    let app = builder().spawn().await;
    let user = app.signed_up_user("lost-read@example.com").await;
    let key = DeviceKey::generate();
    let pair = bound_login(&app, &user.email, &key).await;
    let access = pair["access_token"].as_str().unwrap().to_owned();

    let mut lock = app.db.begin().await.unwrap();
    sqlx::query("LOCK TABLE user_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let proof = key.proof(&app, "GET", "/v1/me", Some(&access));
    let request = {
        let client = app.client.clone();
        let url = app.url("/v1/me");
        let proof = proof.clone();
        let access = access.clone();
        tokio::spawn(async move {
            client
                .get(url)
                .header("Authorization", format!("DPoP {access}"))
                .header("DPoP", proof)
                .send()
                .await
                .unwrap()
        })
    };
    let waiting = loop {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND wait_event_type = 'Lock' AND query ILIKE '%user_keys%'",
        )
        .fetch_all(&app.db)
        .await
        .unwrap();
        if !pids.is_empty() {
            break pids;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    for pid in &waiting {
        let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&app.db)
            .await
            .unwrap();
    }
    loop {
        let alive: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&waiting)
                .fetch_one(&app.db)
                .await
                .unwrap();
        if alive == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    lock.rollback().await.unwrap();
    let r = request.await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(
        status == 200 || status == 503,
        "the retried bound read was answered {status} {body}"
    );
    let replay = app
        .client
        .get(app.url("/v1/me"))
        .header("Authorization", format!("DPoP {access}"))
        .header("DPoP", proof)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401, "another request replaying the proof");
}

/// DPOP_POLICY switched to `required` (a new deployment on the same
/// database): a bearer refresh token copied before the switch keeps
/// minting bearer tokens and reaching every route without any key.
#[tokio::test]
async fn with_dpop_policy_required_a_bearer_session_from_before_gets_no_bearer_tokens() {
    let before = builder().spawn().await;
    let user = before.signed_up_user("old-bearer@example.com").await;
    assert_eq!(user.tokens["token_type"], "Bearer");
    let after = builder()
        .env("DPOP_POLICY", "required")
        .same_database_as(&before)
        .spawn()
        .await;
    let r = after.refresh(user.refresh_token()).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(
        status != 200 || body["token_type"] == "DPoP",
        "DPOP_POLICY=required refreshed a bearer session: {}",
        body["token_type"]
    );
}
