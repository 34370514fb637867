//! Tests of Google's decoding mode against a fake Google: a small axum
//! server on 127.0.0.1 with a token endpoint (which checks the RS256
//! assertion with the test key's public half) and a decode endpoint.
//! The real Google is never called.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use super::super::{check_verdict, request_hash, PlayIntegrityConfig};
use super::*;

const PACKAGE: &str = "com.example.secureapp";
const CLIENT_EMAIL: &str = "verifier@test-project.iam.gserviceaccount.com";
const ACCESS_TOKEN: &str = "fake-access-token-1";
const INTEGRITY_TOKEN: &str = "an.opaque.integrity.token.from-the-app";
const PRIVATE_KEY: &str = include_str!("../../../tests/support/fixtures/google_test_sa_key.pem");
const PUBLIC_KEY: &str = include_str!("../../../tests/support/fixtures/google_test_sa_pub.pem");
const GRANT_FORM: &str = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// What the fake decode endpoint answers.
#[derive(Clone)]
enum DecodeAnswer {
    Payload(Value),
    Status(u16),
    Body(Value),
    RedirectTo(String),
}

struct Fake {
    token_uri: String,
    token_status: u16,
    expires_in: u64,
    decode: DecodeAnswer,
    token_calls: AtomicUsize,
    decode_calls: AtomicUsize,
    /// Hits on `/elsewhere`, the target of the redirect case.
    elsewhere_calls: AtomicUsize,
}

/// The fixture's public key as jsonwebtoken's RustCrypto backend takes it.
fn public_key() -> DecodingKey {
    use rsa::{pkcs1::EncodeRsaPublicKey, pkcs8::DecodePublicKey, PublicKey};
    let key = PublicKey::from_public_key_pem(PUBLIC_KEY.trim()).unwrap();
    DecodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes())
}

async fn token_endpoint(State(fake): State<Arc<Fake>>, body: String) -> Response {
    fake.token_calls.fetch_add(1, Ordering::SeqCst);
    if fake.token_status != 200 {
        return StatusCode::from_u16(fake.token_status)
            .unwrap()
            .into_response();
    }
    let mut fields = body.split('&');
    assert_eq!(fields.next(), Some(GRANT_FORM));
    let assertion = fields
        .next()
        .and_then(|f| f.strip_prefix("assertion="))
        .expect("an assertion field");
    assert!(fields.next().is_none());
    // The signature must verify with the service account's public key.
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&fake.token_uri]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let data = jsonwebtoken::decode::<Value>(assertion, &public_key(), &validation)
        .expect("the assertion verifies");
    assert_eq!(data.header.alg, Algorithm::RS256);
    assert_eq!(data.header.kid.as_deref(), Some("test-key-id"));
    assert_eq!(data.claims["scope"], SCOPE);
    let iat = data.claims["iat"].as_u64().unwrap();
    let exp = data.claims["exp"].as_u64().unwrap();
    assert!(exp > iat && exp - iat <= 3600);
    Json(json!({
        "access_token": ACCESS_TOKEN,
        "expires_in": fake.expires_in,
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn decode_endpoint(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    fake.decode_calls.fetch_add(1, Ordering::SeqCst);
    assert_eq!(
        headers.get("authorization").unwrap().to_str().unwrap(),
        format!("Bearer {ACCESS_TOKEN}")
    );
    assert_eq!(body, json!({ "integrity_token": INTEGRITY_TOKEN }));
    match &fake.decode {
        DecodeAnswer::Payload(p) => Json(json!({ "tokenPayloadExternal": p })).into_response(),
        DecodeAnswer::Status(s) => (
            StatusCode::from_u16(*s).unwrap(),
            Json(json!({"error": {"code": s, "status": "FAILED"}})),
        )
            .into_response(),
        DecodeAnswer::Body(b) => Json(b.clone()).into_response(),
        DecodeAnswer::RedirectTo(to) => {
            (StatusCode::TEMPORARY_REDIRECT, [("location", to.as_str())]).into_response()
        }
    }
}

async fn elsewhere(State(fake): State<Arc<Fake>>) -> Response {
    fake.elsewhere_calls.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "tokenPayloadExternal": {"stolen": true} })).into_response()
}

/// Starts a fake Google and returns it with a decoder pointed at it.
async fn fake_google(
    token_status: u16,
    expires_in: u64,
    decode: impl FnOnce(&str) -> DecodeAnswer,
) -> (Arc<Fake>, GoogleDecoder) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fake = Arc::new(Fake {
        token_uri: format!("{base}/token"),
        token_status,
        expires_in,
        decode: decode(&base),
        token_calls: AtomicUsize::new(0),
        decode_calls: AtomicUsize::new(0),
        elsewhere_calls: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/token", post(token_endpoint))
        .route(
            &format!("/v1/{PACKAGE}:decodeIntegrityToken"),
            post(decode_endpoint),
        )
        .route("/elsewhere", post(elsewhere))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let key = json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "test-key-id",
        "private_key": PRIVATE_KEY,
        "client_email": CLIENT_EMAIL,
        "token_uri": fake.token_uri,
    });
    let decoder = GoogleDecoder::from_service_account_json(
        key.to_string().as_bytes(),
        PACKAGE,
        &format!("{base}/"),
    )
    .unwrap();
    (fake, decoder)
}

fn verdict(hash: &str, timestamp_millis: i64) -> Value {
    json!({
        "requestDetails": {
            "requestPackageName": PACKAGE,
            "requestHash": hash,
            "timestampMillis": timestamp_millis.to_string(),
        },
        "appIntegrity": {
            "appRecognitionVerdict": "PLAY_RECOGNIZED",
            "packageName": PACKAGE,
            "certificateSha256Digest": ["abc"],
            "versionCode": "7",
        },
        "deviceIntegrity": { "deviceRecognitionVerdict": ["MEETS_DEVICE_INTEGRITY"] },
        "accountDetails": { "appLicensingVerdict": "LICENSED" },
    })
}

#[tokio::test]
async fn decodes_through_google_and_caches_the_access_token() {
    let hash = request_hash(b"challenge", b"thumbprint");
    let now = chrono::Utc::now();
    let payload = verdict(&hash, now.timestamp_millis());
    let (fake, decoder) = fake_google(200, 3600, |_| DecodeAnswer::Payload(payload.clone())).await;

    let first = decoder.decode(INTEGRITY_TOKEN).await.unwrap();
    assert_eq!(first, payload);
    let second = decoder.decode(INTEGRITY_TOKEN).await.unwrap();
    assert_eq!(second, payload);
    assert_eq!(fake.token_calls.load(Ordering::SeqCst), 1);
    assert_eq!(fake.decode_calls.load(Ordering::SeqCst), 2);

    // The payload goes through the unchanged verdict checks.
    let cfg = PlayIntegrityConfig::verdict_only(PACKAGE).unwrap();
    let checked = check_verdict(&cfg, &first, &hash, now).unwrap();
    assert_eq!(checked.package_name, PACKAGE);
    assert_eq!(checked.licensing.as_deref(), Some("LICENSED"));
}

#[tokio::test]
async fn a_token_about_to_expire_is_not_reused() {
    // expires_in under the refresh margin: every decode fetches a new one.
    let (fake, decoder) = fake_google(200, 30, |_| DecodeAnswer::Payload(json!({"a": 1}))).await;
    decoder.decode(INTEGRITY_TOKEN).await.unwrap();
    decoder.decode(INTEGRITY_TOKEN).await.unwrap();
    assert_eq!(fake.token_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_service_account_is_an_error() {
    let (fake, decoder) = fake_google(401, 3600, |_| DecodeAnswer::Payload(json!({}))).await;
    let err = decoder.decode(INTEGRITY_TOKEN).await.unwrap_err();
    assert_eq!(err, PlayIntegrityError::GoogleAuthFailed(401));
    assert_eq!(fake.decode_calls.load(Ordering::SeqCst), 0);
    assert!(!err.to_string().contains(ACCESS_TOKEN));
}

#[tokio::test]
async fn a_failing_token_endpoint_is_unavailable() {
    let (_fake, decoder) = fake_google(503, 3600, |_| DecodeAnswer::Payload(json!({}))).await;
    assert!(matches!(
        decoder.decode(INTEGRITY_TOKEN).await.unwrap_err(),
        PlayIntegrityError::GoogleUnavailable(_)
    ));
}

#[tokio::test]
async fn decode_endpoint_errors_are_errors() {
    let (_fake, decoder) = fake_google(200, 3600, |_| DecodeAnswer::Status(400)).await;
    let err = decoder.decode(INTEGRITY_TOKEN).await.unwrap_err();
    assert_eq!(err, PlayIntegrityError::GoogleRefused(400));
    assert!(!err.to_string().contains(INTEGRITY_TOKEN));

    let (_fake, decoder) = fake_google(200, 3600, |_| DecodeAnswer::Status(500)).await;
    assert!(matches!(
        decoder.decode(INTEGRITY_TOKEN).await.unwrap_err(),
        PlayIntegrityError::GoogleUnavailable(_)
    ));
}

#[tokio::test]
async fn a_401_from_the_decode_endpoint_drops_the_cached_token() {
    let (fake, decoder) = fake_google(200, 3600, |_| DecodeAnswer::Status(401)).await;
    for _ in 0..2 {
        assert_eq!(
            decoder.decode(INTEGRITY_TOKEN).await.unwrap_err(),
            PlayIntegrityError::GoogleRefused(401)
        );
    }
    assert_eq!(fake.token_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_missing_or_odd_payload_is_an_error() {
    for body in [
        json!({}),
        json!({"tokenPayloadExternal": null}),
        json!({"tokenPayloadExternal": "text"}),
        json!([1, 2]),
    ] {
        let (_fake, decoder) = fake_google(200, 3600, |_| DecodeAnswer::Body(body.clone())).await;
        assert_eq!(
            decoder.decode(INTEGRITY_TOKEN).await.unwrap_err(),
            PlayIntegrityError::MalformedPayload,
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let (fake, decoder) = fake_google(200, 3600, |base| {
        DecodeAnswer::RedirectTo(format!("{base}/elsewhere"))
    })
    .await;
    assert!(matches!(
        decoder.decode(INTEGRITY_TOKEN).await.unwrap_err(),
        PlayIntegrityError::GoogleUnavailable(_)
    ));
    assert_eq!(fake.decode_calls.load(Ordering::SeqCst), 1);
    assert_eq!(fake.elsewhere_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_oversized_token_is_refused_before_any_call() {
    let (fake, decoder) = fake_google(200, 3600, |_| DecodeAnswer::Payload(json!({}))).await;
    let huge = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        decoder.decode(&huge).await.unwrap_err(),
        PlayIntegrityError::TokenTooLarge
    );
    assert_eq!(fake.token_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unreachable_google_is_unavailable() {
    // Bind and drop a listener so the port is (very likely) closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let key = json!({
        "private_key": PRIVATE_KEY,
        "client_email": CLIENT_EMAIL,
        "token_uri": format!("http://127.0.0.1:{port}/token"),
    });
    let decoder = GoogleDecoder::from_service_account_json(
        key.to_string().as_bytes(),
        PACKAGE,
        DEFAULT_API_BASE,
    )
    .unwrap();
    assert!(matches!(
        decoder.decode(INTEGRITY_TOKEN).await.unwrap_err(),
        PlayIntegrityError::GoogleUnavailable(_)
    ));
}

#[test]
fn bad_service_account_keys_and_packages_are_refused() {
    let good = json!({
        "private_key": PRIVATE_KEY,
        "client_email": CLIENT_EMAIL,
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    assert!(GoogleDecoder::from_service_account_json(
        good.to_string().as_bytes(),
        PACKAGE,
        DEFAULT_API_BASE
    )
    .is_ok());
    let mut cases = vec![b"not json".to_vec()];
    for (field, value) in [
        (
            "private_key",
            json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        ),
        ("private_key", json!(PUBLIC_KEY)),
        ("client_email", json!("")),
        ("token_uri", json!(null)),
    ] {
        let mut key = good.clone();
        key[field] = value;
        cases.push(key.to_string().into_bytes());
    }
    for case in cases {
        assert_eq!(
            GoogleDecoder::from_service_account_json(&case, PACKAGE, DEFAULT_API_BASE).unwrap_err(),
            PlayIntegrityError::InvalidServiceAccount
        );
    }
    for package in ["", "  ", "com.example/../other", "com.example?x=1", "a:b"] {
        assert_eq!(
            GoogleDecoder::from_service_account_json(
                good.to_string().as_bytes(),
                package,
                DEFAULT_API_BASE
            )
            .unwrap_err(),
            PlayIntegrityError::InvalidPackageName
        );
    }
}

#[test]
fn debug_output_holds_no_key() {
    let key = json!({
        "private_key": PRIVATE_KEY,
        "client_email": CLIENT_EMAIL,
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let decoder = GoogleDecoder::from_service_account_json(
        key.to_string().as_bytes(),
        PACKAGE,
        DEFAULT_API_BASE,
    )
    .unwrap();
    let shown = format!("{decoder:?}");
    assert!(!shown.contains("PRIVATE KEY"));
    assert!(shown.contains(":decodeIntegrityToken"));
}

#[test]
fn verdict_only_config_cannot_build_a_local_decoder() {
    let cfg = PlayIntegrityConfig::verdict_only(PACKAGE).unwrap();
    assert!(super::super::LocalDecoder::new(&cfg).is_err());
    assert_eq!(
        PlayIntegrityConfig::verdict_only(" ").unwrap_err(),
        PlayIntegrityError::InvalidPackageName
    );
}
