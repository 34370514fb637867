//! Authentication happens once per request: the access token is verified
//! and the caller's session, role, MFA state, rate-limit tier and wrapped
//! data key are read in one query, shared by the rate limiter and
//! `AuthUser`. Here every SQL statement the server runs is counted per
//! request route (sqlx logs each statement inside the request's span), so
//! a second lookup, a tier query of its own or a separate read of the user
//! key fails the test.
//!
//! A separate test binary because the tracing subscriber is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use helpers::TestApp;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tracing::{field::Field, span, Event, Subscriber};
use tracing_subscriber::{
    filter::Targets, layer::Context, prelude::*, registry::LookupSpan, Layer,
};

/// The route of a request span (`telemetry::observe`).
struct Route(String);

/// Statements run per request, keyed by request id.
#[derive(Clone, Default)]
struct Statements(Arc<Mutex<HashMap<String, Vec<String>>>>);

/// The request id of a request span.
struct RequestId(String);

struct Visit<'a>(&'a mut Option<String>, &'a mut Option<String>);

impl tracing::field::Visit for Visit<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "route" => *self.0 = Some(format!("{value:?}")),
            "request_id" => *self.1 = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

/// sqlx's `summary` (the first words) and `db.statement` (the whole
/// statement, when longer than the summary).
#[derive(Default)]
struct Statement {
    summary: String,
    statement: String,
}

impl tracing::field::Visit for Statement {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let value = format!("{value:?}");
        match field.name() {
            "summary" if self.summary.is_empty() => self.summary = value,
            "db.statement" if self.statement.is_empty() => self.statement = value,
            _ => {}
        }
    }
}

impl<S> Layer<S> for Statements
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "request" {
            return;
        }
        let (mut route, mut request_id) = (None, None);
        attrs.record(&mut Visit(&mut route, &mut request_id));
        if let (Some(span), Some(route), Some(request_id)) = (ctx.span(id), route, request_id) {
            span.extensions_mut().insert(Route(route));
            span.extensions_mut().insert(RequestId(request_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let extensions = span.extensions();
            if let (Some(Route(route)), Some(RequestId(id))) =
                (extensions.get::<Route>(), extensions.get::<RequestId>())
            {
                let mut statement = Statement::default();
                event.record(&mut statement);
                let text = if statement.statement.trim().is_empty() {
                    statement.summary
                } else {
                    statement.statement
                };
                self.0
                    .lock()
                    .unwrap()
                    .entry(format!("{route} {id}"))
                    .or_default()
                    .push(text.split_whitespace().collect::<Vec<_>>().join(" "));
                return;
            }
        }
    }
}

impl Statements {
    /// The statements of the one request to `route` sent since the last
    /// call (the map is emptied).
    fn take_one(&self, route: &str) -> Vec<String> {
        let mut all = self.0.lock().unwrap();
        let keys: Vec<String> = all
            .keys()
            .filter(|k| k.starts_with(&format!("{route} ")))
            .cloned()
            .collect();
        assert_eq!(keys.len(), 1, "one request to {route}, saw {keys:?}");
        let statements = all.remove(&keys[0]).unwrap();
        all.clear();
        statements
    }

    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

#[tokio::test]
async fn a_request_reads_its_caller_once() {
    let statements = Statements::default();
    tracing_subscriber::registry()
        .with(
            statements.clone().with_filter(
                Targets::new()
                    .with_target("sqlx::query", tracing::Level::TRACE)
                    .with_target("mobile_backend", tracing::Level::INFO),
            ),
        )
        .init();

    let app = TestApp::spawn().await;
    let user = app.signed_up_user("counted@example.com").await;
    // sqlx logs a statement when it finishes: give the sign-up's last ones
    // time to land before counting from a clean slate.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    // GET /v1/me: the caller's context, which carries the account's row,
    // and nothing else: no second session check, no tier query, no read of
    // the user key, no second read of the row.
    statements.clear();
    let r = app.get_auth("/v1/me", user.access()).await;
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = r.json().await.unwrap();
    assert_eq!(me["email"], "counted@example.com", "{me}");
    let seen = statements.take_one("/v1/me");
    assert_eq!(seen.len(), 1, "GET /v1/me ran {seen:?}");
    assert!(
        seen[0].contains("LEFT JOIN sessions") && seen[0].contains("LEFT JOIN user_keys"),
        "the first statement reads the caller's context: {seen:?}"
    );

    // A raised tier costs nothing more: it comes with the context.
    sqlx::query("UPDATE users SET rate_limit_tier = 'high' WHERE user_id = $1")
        .bind(user.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    statements.clear();
    let r = app.get_auth("/v1/me", user.access()).await;
    assert_eq!(r.status(), 200);
    let seen = statements.take_one("/v1/me");
    assert_eq!(seen.len(), 1, "GET /v1/me at a raised tier ran {seen:?}");

    // Another read: the context and the list, nothing else.
    statements.clear();
    let r = app.get_auth("/v1/sessions", user.access()).await;
    assert_eq!(r.status(), 200);
    let seen = statements.take_one("/v1/sessions");
    assert_eq!(seen.len(), 2, "GET /v1/sessions ran {seen:?}");

    // A device-bound (DPoP) session: the same one read, plus the proof's
    // entry in the replay cache (PostgreSQL here, without REDIS_URL).
    let key = ProofKey::generate();
    let now = app.clock.now().timestamp();
    let base = app
        .state
        .config
        .public_base_url
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let r = app
        .client
        .post(app.url("/v1/auth/login"))
        .header(
            "DPoP",
            key.proof("POST", &format!("{base}/v1/auth/login"), now, None),
        )
        .json(&serde_json::json!({"email": user.email, "password": user.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bound: serde_json::Value = r.json().await.unwrap();
    let access = bound["access_token"].as_str().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    statements.clear();
    let r = app
        .client
        .get(app.url("/v1/me"))
        .header("Authorization", format!("DPoP {access}"))
        .header(
            "DPoP",
            key.proof("GET", &format!("{base}/v1/me"), now, Some(access)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = statements.take_one("/v1/me");
    assert_eq!(seen.len(), 2, "a bound GET /v1/me ran {seen:?}");
    assert!(seen[0].contains("dpop_proofs_seen"), "{seen:?}");

    // A session that ended is refused after that one read.
    let r = app.post_auth("/v1/auth/logout", user.access(), None).await;
    assert!(r.status().is_success(), "{}", r.status());
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    statements.clear();
    let r = app.get_auth("/v1/me", user.access()).await;
    assert_eq!(r.status(), 401);
    let seen = statements.take_one("/v1/me");
    assert_eq!(seen.len(), 1, "a dead session's GET /v1/me ran {seen:?}");
}

/// A P-256 device key that signs DPoP proofs.
struct ProofKey {
    der: Vec<u8>,
    jwk: serde_json::Value,
}

impl ProofKey {
    fn generate() -> Self {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw().to_vec();
        Self {
            der: pair.serialize_der(),
            jwk: serde_json::json!({"kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}),
        }
    }

    fn proof(&self, method: &str, htu: &str, iat: i64, access_token: Option<&str>) -> String {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        use sha2::Digest;
        let mut claims = serde_json::json!({"jti": uuid::Uuid::new_v4().to_string(), "htm": method,
            "htu": htu, "iat": iat});
        if let Some(token) = access_token {
            claims["ath"] = URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(token.as_bytes()))
                .into();
        }
        let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.der);
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::ES256)
                .unwrap();
        format!("{input}.{sig}")
    }
}
