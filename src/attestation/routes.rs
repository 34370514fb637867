//! `/v1/attestation/*`: challenges and the two platform attestations.
//! See the module docs of `attestation` for the flow.

use super::{
    apple, attestation_invalid, challenge_hash, client_data_hash, db, play, CHALLENGE_TTL_SECS,
};
use crate::{
    audit::{self, events, AuditEvent, Outcome},
    crypto::random,
    dpop::{self, VerifiedProof},
    error::ApiError,
    http::{
        extract::{ClientInfo, Json},
        routes::ApiRouter,
    },
    rate_limit::policy::Class,
    state::AppState,
};
use axum::{
    extract::State,
    http::{HeaderMap, Method},
    Json as JsonResponse,
};
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(
            Method::POST,
            "/v1/attestation/challenge",
            "attestation_challenge",
            Class::Credentials,
            attestation_challenge,
        )
        .route(
            Method::POST,
            "/v1/attestation/apple",
            "attest_apple",
            Class::Credentials,
            attest_apple,
        )
        .route(
            Method::POST,
            "/v1/attestation/android",
            "attest_android",
            Class::Credentials,
            attest_android,
        )
}

#[derive(Debug, Serialize)]
pub struct ChallengeResponse {
    /// 32 random bytes, base64url without padding.
    pub challenge: String,
    pub expires_in: i64,
}

/// A single-use challenge for one attestation, valid five minutes.
pub async fn attestation_challenge(
    State(state): State<AppState>,
) -> Result<JsonResponse<ChallengeResponse>, ApiError> {
    let raw: [u8; 32] = random::random_bytes();
    let challenge = URL_SAFE_NO_PAD.encode(raw);
    let hash = challenge_hash(&challenge)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("challenge encoding")))?;
    let expires_at = state.clock.now() + chrono::Duration::seconds(CHALLENGE_TTL_SECS);
    let mut conn = state.db.acquire().await?;
    db::insert_challenge(&mut conn, &hash, expires_at).await?;
    Ok(JsonResponse(ChallengeResponse {
        challenge,
        expires_in: CHALLENGE_TTL_SECS,
    }))
}

#[derive(Debug, Serialize)]
pub struct AttestedResponse {
    pub attested: bool,
    pub platform: &'static str,
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AppleAttestationRequest {
    /// `DCAppAttestService`'s key identifier, base64 as the app gets it.
    #[validate(length(min = 1, max = 64))]
    pub key_id: String,
    /// The attestation object, base64.
    #[validate(length(min = 1, max = 60000))]
    pub attestation_object: String,
    #[validate(length(min = 43, max = 43))]
    pub challenge: String,
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AndroidAttestationRequest {
    /// The Play Integrity token, as the app received it.
    #[validate(length(min = 1, max = 16384))]
    pub integrity_token: String,
    #[validate(length(min = 43, max = 43))]
    pub challenge: String,
}

/// The DPoP proof an attestation must carry: it names the key attested.
async fn proof_for(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<VerifiedProof, ApiError> {
    dpop::verify(state, headers, &Method::POST, path, None)
        .await?
        .ok_or_else(dpop::proof_invalid)
}

/// Takes the challenge (single use: gone whatever happens next).
async fn take(state: &AppState, challenge: &str) -> Result<bool, ApiError> {
    let Some(hash) = challenge_hash(challenge) else {
        return Ok(false);
    };
    let mut conn = state.db.acquire().await?;
    Ok(db::take_challenge(&mut conn, &hash, state.clock.now()).await?)
}

/// Audits a refused attestation and answers the one refusal.
async fn refuse(
    state: &AppState,
    client: &ClientInfo,
    platform: &'static str,
    reason: &str,
) -> ApiError {
    tracing::info!(platform, reason, "attestation refused");
    let event = AuditEvent::new(events::ATTESTATION_FAILED, Outcome::Failure)
        .client(client)
        .detail("platform", platform)
        .detail("reason", reason);
    match state.db.acquire().await {
        Ok(mut conn) => {
            if let Err(e) = audit::record(&mut conn, state.clock.now(), &event).await {
                return ApiError::from(e);
            }
            attestation_invalid()
        }
        Err(e) => ApiError::from(e),
    }
}

/// Records the key as attested and audits it, in one transaction.
async fn accept(
    state: &AppState,
    client: &ClientInfo,
    key: db::AttestedKey<'_>,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    db::record_attested_key(&mut tx, &key).await?;
    audit::record(
        &mut tx,
        key.now,
        &AuditEvent::new(events::ATTESTATION_SUCCEEDED, Outcome::Success)
            .client(client)
            .detail("platform", key.platform)
            .detail("jkt", key.jkt),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Apple App Attest: the attestation object made for this challenge and
/// this DPoP key.
pub async fn attest_apple(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    Json(req): Json<AppleAttestationRequest>,
) -> Result<JsonResponse<AttestedResponse>, ApiError> {
    let proof = proof_for(&state, &headers, "/v1/attestation/apple").await?;
    let Some(config) = state.attestation.apple.as_ref() else {
        return Err(ApiError::NotFound);
    };
    if !take(&state, &req.challenge).await? {
        return Err(refuse(&state, &client, "ios", "unknown_or_expired_challenge").await);
    }
    let (Ok(key_id), Ok(object)) = (
        STANDARD.decode(&req.key_id),
        STANDARD.decode(&req.attestation_object),
    ) else {
        return Err(refuse(&state, &client, "ios", "not_base64").await);
    };
    let now = state.clock.now();
    let hash = client_data_hash(&req.challenge, &proof.jkt);
    let verdict = match apple::verify(config, &key_id, &object, &hash, now) {
        Ok(v) => v,
        Err(e) => return Err(refuse(&state, &client, "ios", &e.to_string()).await),
    };
    let environment = match verdict.environment {
        apple::Environment::Production => "production",
        apple::Environment::Development => "development",
    };
    accept(
        &state,
        &client,
        db::AttestedKey {
            jkt: &proof.jkt,
            platform: "ios",
            app_id: &config.app_id,
            apple_key_id: Some(&key_id),
            verdicts: json!({"environment": environment}),
            now,
        },
    )
    .await?;
    Ok(JsonResponse(AttestedResponse {
        attested: true,
        platform: "ios",
    }))
}

/// Google Play Integrity: a standard request's token whose request hash
/// is `base64url(SHA-256(challenge ‖ thumbprint))`.
pub async fn attest_android(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    Json(req): Json<AndroidAttestationRequest>,
) -> Result<JsonResponse<AttestedResponse>, ApiError> {
    let proof = proof_for(&state, &headers, "/v1/attestation/android").await?;
    let Some(verifier) = state.attestation.play.as_ref() else {
        return Err(ApiError::NotFound);
    };
    if !take(&state, &req.challenge).await? {
        return Err(refuse(&state, &client, "android", "unknown_or_expired_challenge").await);
    }
    let now = state.clock.now();
    let expected = play::request_hash(req.challenge.as_bytes(), proof.jkt.as_bytes());
    let verdict = match verifier
        .decoder
        .decode(&req.integrity_token)
        .await
        .and_then(|payload| play::check_verdict(&verifier.config, &payload, &expected, now))
    {
        Ok(v) => v,
        Err(e) => return Err(refuse(&state, &client, "android", &e.to_string()).await),
    };
    accept(
        &state,
        &client,
        db::AttestedKey {
            jkt: &proof.jkt,
            platform: "android",
            app_id: &verifier.config.package_name,
            apple_key_id: None,
            verdicts: json!({
                "app": verdict.app_recognition,
                "device": verdict.device_recognition,
                "licensing": verdict.licensing,
            }),
            now,
        },
    )
    .await?;
    Ok(JsonResponse(AttestedResponse {
        attested: true,
        platform: "android",
    }))
}
