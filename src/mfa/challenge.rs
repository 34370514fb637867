//! The second step of sign-in: `POST /v1/auth/mfa`.
//!
//! After a correct password, a user with MFA gets an `mfa_token` instead of
//! tokens: 256 random bits, stored as SHA-256, bound to the user and the
//! device of that login, single use, five minutes, five wrong codes.

use super::{db, verify_factor, Factor, Secret};
use crate::{
    accounts::{Aal, Status},
    audit::{self, events, AuditEvent, Outcome},
    crypto::{hash, random},
    dpop::extract::DpopProof,
    error::ApiError,
    http::{extract::ClientInfo, extract::Json, routes::ApiRouter},
    mail::{self, templates},
    rate_limit::policy::Class,
    sessions::{self, DeviceInfo, SignIn, TokenPair},
    state::AppState,
};
use axum::{extract::State, http::Method, Json as JsonResponse};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;
use validator::Validate;

pub const TOKEN_TTL: Duration = Duration::minutes(5);
pub const MAX_ATTEMPTS: i32 = 5;

pub fn router() -> ApiRouter {
    ApiRouter::new().route(
        Method::POST,
        "/v1/auth/mfa",
        "complete_mfa",
        Class::Credentials,
        complete_mfa,
    )
}

/// The login answer for an account with MFA: no tokens yet. Serialized
/// with `"result": "mfa_required"` in front (see `TokenPair`);
/// `mfa_required: true` stays for apps that branch on its presence.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename = "mfa_required")]
pub struct MfaRequired {
    pub mfa_required: bool,
    pub mfa_token: String,
    pub expires_in: i64,
    pub methods: Vec<String>,
}

/// Creates a challenge in the caller's transaction.
pub async fn create(
    conn: &mut PgConnection,
    state: &AppState,
    user_id: Uuid,
    device: Option<&DeviceInfo>,
    dpop_jkt: Option<&str>,
) -> Result<MfaRequired, ApiError> {
    let now = state.clock.now();
    let token = random::token(32);
    let device = device.cloned().unwrap_or_default();
    db::insert_challenge(
        conn,
        &db::NewChallenge {
            user_id,
            token_hash: &hash::hash_token(&token),
            now,
            expires_at: now + TOKEN_TTL,
            device_name: device.name.as_deref(),
            platform: device.platform.as_deref(),
            model: device.model.as_deref(),
            dpop_jkt,
        },
    )
    .await?;
    Ok(MfaRequired {
        mfa_required: true,
        mfa_token: token,
        expires_in: TOKEN_TTL.num_seconds(),
        methods: vec!["totp".into(), "recovery_code".into()],
    })
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CompleteMfaRequest {
    #[validate(length(min = 1, max = 256))]
    pub mfa_token: String,
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    #[validate(length(min = 1, max = 16))]
    pub code: Option<String>,
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    #[validate(length(min = 1, max = 32))]
    pub recovery_code: Option<String>,
}

fn invalid_mfa_token() -> ApiError {
    ApiError::Unauthorized {
        code: "mfa_token_invalid",
        detail: "The sign-in attempt expired or is no longer valid. Sign in again.",
    }
}

pub async fn complete_mfa(
    State(state): State<AppState>,
    client: ClientInfo,
    DpopProof(proof): DpopProof,
    Json(req): Json<CompleteMfaRequest>,
) -> Result<JsonResponse<TokenPair>, ApiError> {
    // Before the token or the factor is looked at (ATTESTATION_POLICY).
    let attested =
        crate::attestation::gate(&state, proof.as_ref(), &client, "complete_mfa").await?;
    let factor = match (&req.code, &req.recovery_code) {
        (Some(code), None) => Factor::Totp(code, Secret::Active),
        (None, Some(code)) => Factor::RecoveryCode(code),
        _ => {
            return Err(ApiError::invalid_field(
                "code",
                "one_of",
                "Send exactly one of `code` and `recovery_code`.",
            ))
        }
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let Some(c) = db::lock_challenge(&mut tx, &hash::hash_token(&req.mfa_token)).await? else {
        return Err(invalid_mfa_token());
    };
    if c.used_at.is_some()
        || c.expires_at <= now
        || c.attempts >= MAX_ATTEMPTS
        || c.status != Status::Active
    {
        return Err(invalid_mfa_token());
    }
    // DPOP_POLICY before the factor is checked: a sign-in that may not get
    // a session without a proof is refused without spending an attempt.
    crate::dpop::check_policy(&state.config.dpop, c.role, proof.as_ref())?;
    // A password step made with a device key binds the whole sign-in to
    // it: the second step must be made by the same key, or an MFA token
    // seen elsewhere could finish the sign-in bound to another device (or
    // to none). Refused before the factor, so no attempt is spent.
    if let Some(bound) = c.dpop_jkt.as_deref() {
        match proof.as_ref() {
            None => return Err(crate::dpop::proof_invalid()),
            Some(p) if p.jkt != bound => return Err(crate::dpop::key_mismatch()),
            Some(_) => {}
        }
    }
    let event = |outcome| {
        AuditEvent::new(events::MFA_CHALLENGE, outcome)
            .user(c.user_id)
            .client(&client)
            .detail("method", factor.method())
    };
    if let Err(failure) = verify_factor(&mut tx, &state, c.user_id, &factor).await? {
        // A throttled attempt checked no code: it does not use up the token.
        if failure == super::FactorFailure::Invalid {
            db::challenge_failed(&mut tx, c.mfa_challenge_id).await?;
        }
        audit::record(&mut tx, now, &event(Outcome::Failure)).await?;
        tx.commit().await?;
        return Err(failure.into_error(true));
    }
    db::challenge_used(&mut tx, c.mfa_challenge_id, now).await?;
    audit::record(&mut tx, now, &event(Outcome::Success)).await?;
    if let Factor::RecoveryCode(_) = factor {
        audit::record(
            &mut tx,
            now,
            &AuditEvent::new(events::RECOVERY_CODE_USED, Outcome::Success)
                .user(c.user_id)
                .client(&client),
        )
        .await?;
        let email = crate::accounts::email_of(&mut tx, &state, c.user_id).await?;
        mail::enqueue(
            &mut tx,
            &state.keys,
            now,
            "recovery_code_used",
            &templates::recovery_code_used(email.as_str()),
        )
        .await
        .map_err(ApiError::internal)?;
    }
    let device = DeviceInfo {
        name: c.device_name.clone(),
        platform: c.platform.clone(),
        model: c.model.clone(),
    };
    let pair = sessions::start(
        &mut tx,
        &state,
        &client,
        SignIn {
            user_id: c.user_id,
            role: c.role,
            aal: Aal::Aal2,
            amr: vec!["pwd".into(), factor.amr().into()],
            device: Some(&device),
            dpop: proof.as_ref(),
            attested,
        },
    )
    .await?;
    tx.commit().await?;
    state.outbox.wake();
    Ok(JsonResponse(pair))
}
