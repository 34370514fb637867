//! App attestation over HTTP: real App Attest objects (a test CA standing in
//! for Apple's root) and real Play Integrity tokens (test keys standing in
//! for the Play Console's), each made for a challenge and a DPoP key; and
//! every way an attacker could reuse, move or forge one.

#[path = "../support/app_attest.rs"]
mod app_attest;
#[path = "../support/play_integrity.rs"]
mod play_integrity;

use crate::dpop::{builder as dpop_builder, DeviceKey};
use crate::helpers::*;
use app_attest::{Spec, TestCa};
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use play_integrity::PlayKeys;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;

pub const APP_ID: &str = "ABCDE12345.com.example.app";
pub const PACKAGE: &str = "com.example.app";

/// Everything a test needs to attest against an app configured for both
/// platforms: the test CA's root in a file, the Play test keys.
pub struct Platforms {
    pub ca: TestCa,
    pub play: PlayKeys,
    _dir: tempfile::TempDir,
    root_file: String,
}

impl Platforms {
    pub fn new() -> Self {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.pem");
        std::fs::write(&path, &ca.root_pem).unwrap();
        Self {
            ca,
            play: PlayKeys::generate(),
            root_file: path.to_str().unwrap().to_owned(),
            _dir: dir,
        }
    }

    /// An app (DPoP-ready base URL) with both platforms configured.
    pub fn builder(&self) -> TestAppBuilder {
        dpop_builder()
            .env("APP_ATTEST_APP_ID", APP_ID)
            .env("APP_ATTEST_ROOT_CA_FILE", &self.root_file)
            .env("PLAY_INTEGRITY_PACKAGE_NAME", PACKAGE)
            .env(
                "PLAY_INTEGRITY_DECRYPTION_KEY",
                &self.play.decryption_key_b64(),
            )
            .env(
                "PLAY_INTEGRITY_VERIFICATION_KEY",
                &self.play.verification_key_b64(),
            )
    }

    /// Attests `key` on iOS through the API, as an app does at first launch.
    pub async fn attest_ios(&self, app: &TestApp, key: &DeviceKey) {
        let challenge = challenge(app).await;
        let r = post_apple(app, key, &self.apple_body(&challenge, &key.jkt(), |s| s)).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// The body of an App Attest attestation made for `challenge` and the
    /// DPoP key `jkt`, with `tweak` applied to what the device does.
    pub fn apple_body(
        &self,
        challenge: &str,
        jkt: &str,
        tweak: impl FnOnce(Spec) -> Spec,
    ) -> Value {
        let spec = tweak(Spec::new(APP_ID, client_data_hash(challenge, jkt)));
        let att = self.ca.attest(&spec);
        json!({
            "key_id": STANDARD.encode(&att.key_id),
            "attestation_object": STANDARD.encode(&att.object),
            "challenge": challenge,
        })
    }

    /// A Play Integrity token for `challenge` and `jkt`, made at the app's
    /// time, with `tweak` applied to the verdict.
    pub fn play_body(
        &self,
        app: &TestApp,
        challenge: &str,
        jkt: &str,
        tweak: impl FnOnce(&mut Value),
    ) -> Value {
        let hash = URL_SAFE_NO_PAD.encode(client_data_hash(challenge, jkt));
        let mut verdict =
            play_integrity::verdict(PACKAGE, &hash, app.clock.now().timestamp_millis());
        tweak(&mut verdict);
        json!({"integrity_token": self.play.token(&verdict), "challenge": challenge})
    }
}

/// SHA-256(challenge ‖ jkt), computed here independently of the server.
pub fn client_data_hash(challenge: &str, jkt: &str) -> [u8; 32] {
    Sha256::digest(format!("{challenge}{jkt}").as_bytes()).into()
}

pub async fn challenge(app: &TestApp) -> String {
    let r = app
        .client
        .post(app.url("/v1/attestation/challenge"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["expires_in"], 300);
    body["challenge"].as_str().unwrap().to_owned()
}

async fn post_with(
    app: &TestApp,
    path: &str,
    dpop: Option<String>,
    body: &Value,
) -> reqwest::Response {
    let mut req = app.client.post(app.url(path)).json(body);
    if let Some(p) = dpop {
        req = req.header("DPoP", p);
    }
    req.send().await.unwrap()
}

pub async fn post_apple(app: &TestApp, key: &DeviceKey, body: &Value) -> reqwest::Response {
    let proof = key.proof(app, "POST", "/v1/attestation/apple", None);
    post_with(app, "/v1/attestation/apple", Some(proof), body).await
}

pub async fn post_android(app: &TestApp, key: &DeviceKey, body: &Value) -> reqwest::Response {
    let proof = key.proof(app, "POST", "/v1/attestation/android", None);
    post_with(app, "/v1/attestation/android", Some(proof), body).await
}

async fn attested_platform(app: &TestApp, jkt: &str) -> Option<String> {
    sqlx::query("SELECT platform FROM attested_keys WHERE jkt = $1")
        .bind(jkt)
        .fetch_optional(&app.state.db)
        .await
        .unwrap()
        .map(|r| r.get(0))
}

async fn failures(app: &TestApp) -> Vec<String> {
    sqlx::query(
        "SELECT details->>'reason' FROM audit_events
         WHERE event_type = 'device.attestation.failed' ORDER BY occurred_at, audit_event_id",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.get::<Option<String>, _>(0).unwrap_or_default())
    .collect()
}

async fn refused(r: reqwest::Response) {
    assert_eq!(r.status(), 403);
    let p = problem(r).await;
    assert_eq!(p["code"], "attestation_invalid", "{p}");
    assert_eq!(
        p["detail"], "The attestation could not be verified.",
        "says nothing more"
    );
}

#[tokio::test]
async fn a_challenge_is_random_single_use_and_stored_only_as_its_hash() {
    let app = Platforms::new().builder().spawn().await;
    let a = challenge(&app).await;
    let b = challenge(&app).await;
    assert_ne!(a, b);
    assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT challenge_hash FROM attestation_challenges")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    assert_eq!(stored.len(), 2);
    let raw = URL_SAFE_NO_PAD.decode(&a).unwrap();
    assert!(stored.contains(&Sha256::digest(&raw).to_vec()));
    assert!(!stored.contains(&raw), "the challenge itself is not stored");
}

#[tokio::test]
async fn a_real_app_attest_attestation_marks_its_dpop_key_once() {
    let p = Platforms::new();
    let app = p.builder().spawn().await;
    let key = DeviceKey::generate();
    let challenge = challenge(&app).await;
    let body = p.apple_body(&challenge, &key.jkt(), |s| s);
    let r = post_apple(&app, &key, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"attested": true, "platform": "ios"})
    );
    assert_eq!(
        attested_platform(&app, &key.jkt()).await.as_deref(),
        Some("ios")
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'device.attestation.succeeded'
           AND details->>'jkt' = $1",
    )
    .bind(key.jkt())
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // The same attestation again (a replay by someone who saw it): the
    // challenge is spent.
    refused(post_apple(&app, &key, &body).await).await;
    assert_eq!(failures(&app).await, ["unknown_or_expired_challenge"]);
}

#[tokio::test]
async fn app_attest_refuses_each_forgery_and_marks_nothing() {
    let p = Platforms::new();
    let app = p.builder().spawn().await;
    let key = DeviceKey::generate();
    let jkt = key.jkt();
    let other_key = DeviceKey::generate();

    // (what the attacker changes, the body it sends)
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let c = challenge(&app).await;
    cases.push((
        "made for another DPoP key",
        p.apple_body(&c, &other_key.jkt(), |s| s),
    ));
    let c = challenge(&app).await;
    let c2 = challenge(&app).await;
    let mut moved = p.apple_body(&c2, &jkt, |s| s);
    moved["challenge"] = json!(c);
    cases.push(("made for another challenge", moved));
    let c = challenge(&app).await;
    cases.push((
        "another app",
        p.apple_body(&c, &jkt, |mut s| {
            s.app_id = "ZZZZZ99999.com.example.other".into();
            s
        }),
    ));
    let c = challenge(&app).await;
    cases.push((
        "a development key under production",
        p.apple_body(&c, &jkt, Spec::development),
    ));
    let c = challenge(&app).await;
    cases.push((
        "a forged certificate chain",
        p.apple_body(&c, &jkt, |mut s| {
            s.forge_signature = true;
            s
        }),
    ));
    let c = challenge(&app).await;
    cases.push((
        "a used key (counter 1)",
        p.apple_body(&c, &jkt, |mut s| {
            s.counter = 1;
            s
        }),
    ));
    let c = challenge(&app).await;
    let mut wrong_id = p.apple_body(&c, &jkt, |s| s);
    wrong_id["key_id"] = json!(STANDARD.encode([7u8; 32]));
    cases.push(("another key id", wrong_id));
    let c = challenge(&app).await;
    let other_ca = TestCa::named("Not Apple");
    let foreign = other_ca.attest(&Spec::new(APP_ID, client_data_hash(&c, &jkt)));
    cases.push((
        "a chain to another root",
        json!({"key_id": STANDARD.encode(&foreign.key_id),
               "attestation_object": STANDARD.encode(&foreign.object), "challenge": c}),
    ));
    let c = challenge(&app).await;
    let mut garbage = p.apple_body(&c, &jkt, |s| s);
    garbage["attestation_object"] = json!(STANDARD.encode(b"not cbor at all"));
    cases.push(("garbage", garbage));
    cases.push((
        "a challenge the server never made",
        p.apple_body(&URL_SAFE_NO_PAD.encode([1u8; 32]), &jkt, |s| s),
    ));
    let c = challenge(&app).await;
    app.clock.advance(chrono::Duration::seconds(301));
    cases.push(("an expired challenge", p.apple_body(&c, &jkt, |s| s)));

    for (case, body) in &cases {
        let r = post_apple(&app, &key, body).await;
        assert_eq!(r.status(), 403, "{case}");
        refused(r).await;
    }
    assert_eq!(attested_platform(&app, &jkt).await, None);
    assert_eq!(attested_platform(&app, &other_key.jkt()).await, None);
    assert_eq!(
        failures(&app).await.len(),
        cases.len(),
        "each refusal is audited"
    );
}

#[tokio::test]
async fn an_attestation_needs_a_proof_by_the_key_it_names() {
    let p = Platforms::new();
    let app = p.builder().spawn().await;
    let key = DeviceKey::generate();
    let c = challenge(&app).await;
    let body = p.apple_body(&c, &key.jkt(), |s| s);
    // No proof at all.
    let r = post_with(&app, "/v1/attestation/apple", None, &body).await;
    assert_eq!(r.status(), 401);
    assert_eq!(problem(r).await["code"], "dpop_proof_invalid");
    // A proof for another path.
    let wrong = key.proof(&app, "POST", "/v1/attestation/android", None);
    let r = post_with(&app, "/v1/attestation/apple", Some(wrong), &body).await;
    assert_eq!(r.status(), 401);
    // The attacker's own key proving an attestation made for the victim's:
    // the nonce covers the victim's thumbprint, so it does not verify.
    let attacker = DeviceKey::generate();
    refused(post_apple(&app, &attacker, &body).await).await;
    assert_eq!(attested_platform(&app, &attacker.jkt()).await, None);
    assert_eq!(attested_platform(&app, &key.jkt()).await, None);
}

#[tokio::test]
async fn a_real_play_integrity_token_marks_its_dpop_key() {
    let p = Platforms::new();
    let app = p.builder().spawn().await;
    let key = DeviceKey::generate();
    let c = challenge(&app).await;
    let r = post_android(&app, &key, &p.play_body(&app, &c, &key.jkt(), |_| {})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"attested": true, "platform": "android"})
    );
    assert_eq!(
        attested_platform(&app, &key.jkt()).await.as_deref(),
        Some("android")
    );
    let verdicts: Value = sqlx::query_scalar("SELECT verdicts FROM attested_keys WHERE jkt = $1")
        .bind(key.jkt())
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(verdicts["app"], "PLAY_RECOGNIZED");
}

#[tokio::test]
async fn play_integrity_refuses_each_forgery_and_marks_nothing() {
    let p = Platforms::new();
    let app = p.builder().spawn().await;
    let key = DeviceKey::generate();
    let jkt = key.jkt();
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let c = challenge(&app).await;
    cases.push((
        "another DPoP key",
        p.play_body(&app, &c, &DeviceKey::generate().jkt(), |_| {}),
    ));
    let c = challenge(&app).await;
    cases.push((
        "another app",
        p.play_body(&app, &c, &jkt, |v| {
            v["requestDetails"]["requestPackageName"] = json!("com.example.other");
            v["appIntegrity"]["packageName"] = json!("com.example.other");
        }),
    ));
    let c = challenge(&app).await;
    cases.push((
        "a repackaged app",
        p.play_body(&app, &c, &jkt, |v| {
            v["appIntegrity"]["appRecognitionVerdict"] = json!("UNRECOGNIZED_VERSION");
        }),
    ));
    let c = challenge(&app).await;
    cases.push((
        "a rooted device",
        p.play_body(&app, &c, &jkt, |v| {
            v["deviceIntegrity"]["deviceRecognitionVerdict"] = json!(["MEETS_BASIC_INTEGRITY"]);
        }),
    ));
    let c = challenge(&app).await;
    cases.push((
        "a stale token",
        p.play_body(&app, &c, &jkt, |v| {
            let old = v["requestDetails"]["timestampMillis"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap();
            v["requestDetails"]["timestampMillis"] = json!((old - 6 * 60 * 1000).to_string());
        }),
    ));
    let c = challenge(&app).await;
    let other_keys = PlayKeys::generate();
    let hash = URL_SAFE_NO_PAD.encode(client_data_hash(&c, &jkt));
    let foreign = other_keys.token(&play_integrity::verdict(
        PACKAGE,
        &hash,
        app.clock.now().timestamp_millis(),
    ));
    cases.push((
        "keys of another Play Console app",
        json!({"integrity_token": foreign, "challenge": c}),
    ));
    let c = challenge(&app).await;
    let c2 = challenge(&app).await;
    let mut moved = p.play_body(&app, &c2, &jkt, |_| {});
    moved["challenge"] = json!(c);
    cases.push(("made for another challenge", moved));
    for (case, body) in &cases {
        let r = post_android(&app, &key, body).await;
        assert_eq!(r.status(), 403, "{case}");
        refused(r).await;
    }
    // A token that passed once cannot be replayed with a new challenge.
    let c = challenge(&app).await;
    let good = p.play_body(&app, &c, &jkt, |_| {});
    assert_eq!(post_android(&app, &key, &good).await.status(), 200);
    let mut replay = good.clone();
    replay["challenge"] = json!(challenge(&app).await);
    refused(post_android(&app, &key, &replay).await).await;
    assert_eq!(failures(&app).await.len(), cases.len() + 1);
}

#[tokio::test]
async fn a_platform_not_configured_is_not_offered() {
    let app = dpop_builder().spawn().await;
    let key = DeviceKey::generate();
    let c = challenge(&app).await;
    let r = post_apple(
        &app,
        &key,
        &json!({"key_id": "a2V5", "attestation_object": "b2Jq", "challenge": c}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = post_android(
        &app,
        &key,
        &json!({"integrity_token": "x.y.z.w.v", "challenge": c}),
    )
    .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn attestation_settings_are_checked_at_start_up() {
    for (env, needle) in [
        (
            vec![("ATTESTATION_POLICY", "require")],
            "ATTESTATION_POLICY needs",
        ),
        (
            vec![("ATTESTATION_POLICY", "sometimes")],
            "ATTESTATION_POLICY must be",
        ),
        (
            vec![("APP_ATTEST_APP_ID", "com.example.app")],
            "APP_ATTEST_APP_ID must be",
        ),
        (
            vec![("PLAY_INTEGRITY_PACKAGE_NAME", "com.example.app")],
            "go together",
        ),
        (
            vec![("PLAY_INTEGRITY_MODE", "remote")],
            "PLAY_INTEGRITY_MODE must be",
        ),
        (
            vec![
                ("PLAY_INTEGRITY_MODE", "google"),
                ("PLAY_INTEGRITY_PACKAGE_NAME", "com.example.app"),
            ],
            "needs PLAY_INTEGRITY_PACKAGE_NAME and PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE",
        ),
        (
            vec![
                ("PLAY_INTEGRITY_MODE", "google"),
                ("PLAY_INTEGRITY_PACKAGE_NAME", "com.example.app"),
                (
                    "PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE",
                    "/run/secrets/sa.json",
                ),
                ("PLAY_INTEGRITY_DECRYPTION_KEY", "AAAA"),
            ],
            "does not use PLAY_INTEGRITY_DECRYPTION_KEY",
        ),
        (
            vec![(
                "PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE",
                "/run/secrets/sa.json",
            )],
            "need PLAY_INTEGRITY_MODE=google",
        ),
    ] {
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let err = mobile_backend::config::Config::from_lookup(lookup).unwrap_err();
        assert!(format!("{err:#}").contains(needle), "{err:#}");
    }
}

#[tokio::test]
async fn google_mode_reads_the_service_account_file_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("sa.json");
    std::fs::write(
        &good,
        json!({
            "type": "service_account",
            "client_email": "verifier@test-project.iam.gserviceaccount.com",
            "private_key": include_str!("../support/fixtures/google_test_sa_key.pem"),
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string(),
    )
    .unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"private_key": "secret-looking-text"}"#).unwrap();
    let build = |file: &std::path::Path| {
        let file = file.to_string_lossy().into_owned();
        let env = [
            ("PLAY_INTEGRITY_MODE", "google".to_owned()),
            ("PLAY_INTEGRITY_PACKAGE_NAME", "com.example.app".to_owned()),
            ("PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE", file),
        ];
        let config = mobile_backend::config::Config::from_lookup(|name: &str| {
            env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
        })
        .unwrap();
        mobile_backend::attestation::Verifiers::from_settings(&config.attestation)
    };
    let verifiers = build(&good).unwrap();
    let play = verifiers.play.unwrap();
    assert_eq!(play.config.package_name, "com.example.app");
    for file in [bad, dir.path().join("missing.json")] {
        let err = format!("{:#}", build(&file).err().unwrap());
        assert!(err.contains("PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE"), "{err}");
        assert!(!err.contains("secret-looking-text"), "{err}");
    }
}

async fn sign_up_with(app: &TestApp, key: Option<&DeviceKey>, email: &str) -> reqwest::Response {
    let mut req = app.client.post(app.url("/v1/auth/register")).json(&json!({
        "email": email, "password": "tulip orbit canyon"
    }));
    if let Some(k) = key {
        req = req.header("DPoP", k.proof(app, "POST", "/v1/auth/register", None));
    }
    req.send().await.unwrap()
}

async fn login_with(
    app: &TestApp,
    key: Option<&DeviceKey>,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let mut req = app.client.post(app.url("/v1/auth/login")).json(&json!({
        "email": email, "password": password
    }));
    if let Some(k) = key {
        req = req.header("DPoP", k.proof(app, "POST", "/v1/auth/login", None));
    }
    req.send().await.unwrap()
}

async fn sessions_of(app: &TestApp, body: &Value, key: &DeviceKey) -> Value {
    let token = body["access_token"].as_str().unwrap();
    app.client
        .get(app.url("/v1/sessions"))
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", key.proof(app, "GET", "/v1/sessions", Some(token)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn require_refuses_unattested_sign_up_and_sign_in_before_the_password_is_looked_at() {
    let p = Platforms::new();
    // An account made before the policy, by a process without it.
    let before = p.builder().spawn().await;
    let user = before.signed_up_user("ada@example.com").await;
    let app = p
        .builder()
        .env("ATTESTATION_POLICY", "require")
        .same_database_as(&before)
        .spawn()
        .await;
    let unattested = DeviceKey::generate();

    // Sign-up: with no proof, or a proof by a key never attested.
    for key in [None, Some(&unattested)] {
        let r = sign_up_with(&app, key, "new@example.com").await;
        assert_eq!(r.status(), 403);
        assert_eq!(problem(r).await["code"], "attestation_required");
    }
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(accounts, 1, "no account was made");

    // Sign-in: the same answer for the right and a wrong password, so an
    // unattested script cannot use sign-in to test passwords.
    for password in [user.password.as_str(), "wrong password entirely"] {
        for key in [None, Some(&unattested)] {
            let r = login_with(&app, key, "ada@example.com", password).await;
            assert_eq!(r.status(), 403);
            assert_eq!(problem(r).await["code"], "attestation_required");
        }
    }
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event_type = 'auth.login.failed'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(failed, 0, "the password was never checked");

    // The same device after attesting its key: sign-up and sign-in work,
    // and the session is bound and attested.
    p.attest_ios(&app, &unattested).await;
    assert_eq!(
        sign_up_with(&app, Some(&unattested), "new@example.com")
            .await
            .status(),
        202
    );
    let r = login_with(&app, Some(&unattested), "ada@example.com", &user.password).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let sessions = sessions_of(&app, &body, &unattested).await;
    let current = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap();
    assert_eq!(current["attested"], true);
    assert_eq!(current["dpop_bound"], true);

    // A thief who copies the attested session's tokens but not the key gets
    // nowhere (DPoP); one with their own attested-looking claim but another
    // key cannot sign in as attested either.
    let thief = DeviceKey::generate();
    let r = login_with(&app, Some(&thief), "ada@example.com", &user.password).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn report_serves_unattested_sign_ins_and_raises_the_alert() {
    let p = Platforms::new();
    let app = p
        .builder()
        .env("ATTESTATION_POLICY", "report")
        .spawn()
        .await;
    let user = app.signed_up_user("ada@example.com").await;
    let r = login_with(&app, None, "ada@example.com", &user.password).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    let alerts: Vec<(String, Value)> = sqlx::query_as(
        "SELECT rule, details FROM security_alerts WHERE rule = 'attestation_missing'",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    // Sign-up, the verification that signed in, then this sign-in.
    let actions: Vec<&str> = alerts
        .iter()
        .map(|(_, d)| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["register", "verify_email", "login"], "{alerts:?}");
    assert!(alerts.iter().all(|(_, d)| d["dpop_bound"] == false));

    // An attested key raises nothing and makes an attested session.
    let key = DeviceKey::generate();
    p.attest_ios(&app, &key).await;
    let r = login_with(&app, Some(&key), "ada@example.com", &user.password).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let sessions = sessions_of(&app, &body, &key).await;
    assert!(sessions
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["current"] == true && s["attested"] == true));
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM security_alerts WHERE rule = 'attestation_missing'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(n, 3, "no alert for the attested sign-in");
}

#[tokio::test]
async fn an_attested_android_key_makes_an_attested_session_even_with_the_policy_off() {
    let p = Platforms::new();
    let app = p.builder().spawn().await;
    let user = app.signed_up_user("ada@example.com").await;
    let key = DeviceKey::generate();
    let c = challenge(&app).await;
    assert_eq!(
        post_android(&app, &key, &p.play_body(&app, &c, &key.jkt(), |_| {}))
            .await
            .status(),
        200
    );
    let r = login_with(&app, Some(&key), "ada@example.com", &user.password).await;
    let body: Value = r.json().await.unwrap();
    let sessions = sessions_of(&app, &body, &key).await;
    assert!(sessions
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["current"] == true && s["attested"] == true));
    // Unattested sign-ins are served with nothing raised.
    assert_eq!(
        login_with(&app, None, "ada@example.com", &user.password)
            .await
            .status(),
        200
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM security_alerts")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(n, 0);
    // The admin view counts the attested session.
    let admin = app.staff_user("admin@example.com", "admin").await;
    let view: Value = app
        .get_auth(&format!("/v1/admin/users/{}", user.user_id), admin.access())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["attested_sessions"], 1, "{view}");
    assert_eq!(view["dpop_bound_sessions"], 1, "{view}");
    // The helper's own sign-up session, the attested one and the bearer one.
    assert_eq!(view["active_sessions"], 3, "{view}");
}

/// A fake Google for `PLAY_INTEGRITY_MODE=google`: its token endpoint hands
/// out an access token (the assertion itself is checked by the unit tests
/// in `src/attestation/play/google_tests.rs`), and its decode endpoint
/// answers the payload registered for a token, or 400.
struct FakeGoogle {
    base: String,
    payloads: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Value>>>,
    _dir: tempfile::TempDir,
    key_file: String,
}

impl FakeGoogle {
    async fn start() -> Self {
        use axum::{routing::post, Json, Router};
        let payloads = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
            String,
            Value,
        >::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let known = payloads.clone();
        let app = Router::new()
            .route(
                "/token",
                post(|| async {
                    Json(
                        json!({"access_token": "fake", "expires_in": 3600, "token_type": "Bearer"}),
                    )
                }),
            )
            .route(
                &format!("/v1/{PACKAGE}:decodeIntegrityToken"),
                post(move |Json(body): Json<Value>| {
                    let known = known.clone();
                    async move {
                        let token = body["integrity_token"].as_str().unwrap_or_default();
                        match known.lock().unwrap().get(token) {
                            Some(p) => (
                                axum::http::StatusCode::OK,
                                Json(json!({ "tokenPayloadExternal": p })),
                            ),
                            None => (
                                axum::http::StatusCode::BAD_REQUEST,
                                Json(json!({"error": {"code": 400}})),
                            ),
                        }
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.json");
        std::fs::write(
            &path,
            json!({
                "type": "service_account",
                "client_email": "verifier@test-project.iam.gserviceaccount.com",
                "private_key": include_str!("../support/fixtures/google_test_sa_key.pem"),
                "token_uri": format!("{base}/token"),
            })
            .to_string(),
        )
        .unwrap();
        Self {
            base,
            payloads,
            key_file: path.to_str().unwrap().to_owned(),
            _dir: dir,
        }
    }
}

#[tokio::test]
async fn google_mode_attests_through_the_decode_api() {
    let google = FakeGoogle::start().await;
    let app = dpop_builder()
        .env("PLAY_INTEGRITY_MODE", "google")
        .env("PLAY_INTEGRITY_PACKAGE_NAME", PACKAGE)
        .env("PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE", &google.key_file)
        .env("PLAY_INTEGRITY_API_BASE_URL", &google.base)
        .spawn()
        .await;
    let key = DeviceKey::generate();
    let c = challenge(&app).await;

    // A token Google will not decode is refused like any invalid one.
    let r = post_android(
        &app,
        &key,
        &json!({"integrity_token": "unknown-token", "challenge": c}),
    )
    .await;
    assert_eq!(r.status(), 403);

    let c = challenge(&app).await;
    let hash = URL_SAFE_NO_PAD.encode(client_data_hash(&c, &key.jkt()));
    let verdict = play_integrity::verdict(PACKAGE, &hash, app.clock.now().timestamp_millis());
    google
        .payloads
        .lock()
        .unwrap()
        .insert("opaque-token-2".to_owned(), verdict);
    let r = post_android(
        &app,
        &key,
        &json!({"integrity_token": "opaque-token-2", "challenge": c}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        attested_platform(&app, &key.jkt()).await.as_deref(),
        Some("android")
    );
}
