//! Enrolment and management of the second factor: status, setup, confirm,
//! disable and recovery-code regeneration.

use super::{db, recovery, totp, verify_factor, Factor, Secret};
use crate::{
    audit::{self, events, AuditEvent, Outcome},
    crypto::random,
    error::ApiError,
    http::{
        auth::{Aal2, AuthUser},
        extract::{self, ClientInfo, Json},
        routes::ApiRouter,
        validate,
    },
    state::AppState,
    user_keys::UserKey,
};
use axum::{body::Bytes, extract::State, http::Method, http::StatusCode, Json as JsonResponse};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(Method::GET, "/v1/mfa", "get_mfa", get_mfa)
        .route(Method::POST, "/v1/mfa/totp/setup", "setup_totp", setup_totp)
        .route(
            Method::POST,
            "/v1/mfa/totp/confirm",
            "confirm_totp",
            confirm_totp,
        )
        .route(
            Method::POST,
            "/v1/mfa/totp/disable",
            "disable_totp",
            disable_totp,
        )
        .route(
            Method::POST,
            "/v1/mfa/recovery-codes",
            "regenerate_recovery_codes",
            regenerate_recovery_codes,
        )
}

#[derive(Serialize)]
pub struct MfaStatus {
    pub totp_enabled: bool,
    pub recovery_codes_remaining: i64,
}

pub async fn get_mfa(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<JsonResponse<MfaStatus>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(JsonResponse(MfaStatus {
        totp_enabled: db::mfa_enabled(&mut conn, auth.user_id).await?,
        recovery_codes_remaining: db::recovery_codes_remaining(&mut conn, auth.user_id).await?,
    }))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    #[validate(custom(function = "validate::six_digits"))]
    pub code: String,
}

#[derive(Serialize)]
pub struct SetupResponse {
    /// Base32, for typing into an authenticator by hand.
    pub secret: String,
    pub otpauth_uri: String,
    /// The URI as an SVG QR code, for web clients.
    pub qr_svg: String,
}

/// Starts (or restarts) enrolment. While MFA is already on, replacing the
/// authenticator needs aal2 *and* a code from the current one, so a stolen
/// session alone cannot move the factor to the thief's phone.
pub async fn setup_totp(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    body: Bytes,
) -> Result<JsonResponse<SetupResponse>, ApiError> {
    let req: Option<CodeRequest> = if body.is_empty() {
        None
    } else {
        Some(extract::parse(&body)?)
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if auth.mfa_enabled {
        Aal2::check(&state, &auth, &client).await?;
        let code = req.as_ref().map(|r| r.code.as_str()).ok_or_else(|| {
            ApiError::invalid_field(
                "code",
                "required",
                "A code from your current authenticator is required.",
            )
        })?;
        if let Err(f) = verify_factor(
            &mut tx,
            &state,
            auth.user_id,
            &Factor::Totp(code, Secret::Active),
        )
        .await?
        {
            tx.commit().await?;
            return Err(f.into_error(false));
        }
    }
    let secret = random::random_bytes::<{ totp::SECRET_BYTES }>();
    let user_key = UserKey::load(&mut tx, &state.keys.data, auth.user_id).await?;
    let sealed = user_key.seal(&super::secret_aad(auth.user_id, Secret::Pending), &secret)?;
    db::set_pending_secret(&mut tx, auth.user_id, &sealed, now).await?;
    let email = crate::auth::email_of(&mut tx, &state, auth.user_id).await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::MFA_ENROLMENT_STARTED, Outcome::Success)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client),
    )
    .await?;
    tx.commit().await?;
    let uri = totp::otpauth_uri(&secret, &state.config.mfa_issuer, email.as_str())
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("otpauth URI")))?;
    let qr = qrcode::QrCode::new(uri.as_bytes()).map_err(ApiError::internal)?;
    let qr_svg = qr
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Ok(JsonResponse(SetupResponse {
        secret: totp::secret_base32(&secret),
        otpauth_uri: uri,
        qr_svg,
    }))
}

#[derive(Serialize)]
pub struct RecoveryCodesResponse {
    pub recovery_codes: Vec<String>,
}

async fn new_recovery_codes(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    user_id: uuid::Uuid,
) -> Result<Vec<String>, ApiError> {
    let codes = recovery::generate();
    let hashes: Vec<Vec<u8>> = codes
        .iter()
        .filter_map(|c| recovery::normalize(c))
        .map(|n| recovery::hash(&state.keys, user_id, &n))
        .collect();
    db::replace_recovery_codes(conn, user_id, &hashes, state.clock.now()).await?;
    Ok(codes)
}

pub async fn confirm_totp(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    Json(req): Json<CodeRequest>,
) -> Result<JsonResponse<RecoveryCodesResponse>, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let pending = db::lock_totp(&mut tx, auth.user_id)
        .await?
        .and_then(|r| r.pending_secret_ciphertext);
    let Some(pending) = pending else {
        return Err(ApiError::Conflict {
            code: "no_pending_enrolment",
            detail: "Start with POST /v1/mfa/totp/setup.",
        });
    };
    if let Err(f) = verify_factor(
        &mut tx,
        &state,
        auth.user_id,
        &Factor::Totp(&req.code, Secret::Pending),
    )
    .await?
    {
        tx.commit().await?;
        return Err(f.into_error(false));
    }
    // Re-seal under the active column's binding.
    let user_key = UserKey::load(&mut tx, &state.keys.data, auth.user_id).await?;
    let secret = user_key.open(&super::secret_aad(auth.user_id, Secret::Pending), &pending)?;
    let sealed = user_key.seal(&super::secret_aad(auth.user_id, Secret::Active), &secret)?;
    db::activate_pending(&mut tx, auth.user_id, &sealed, now).await?;
    let codes = new_recovery_codes(&mut tx, &state, auth.user_id).await?;
    db::upgrade_session(&mut tx, auth.session_id, "otp").await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::MFA_ENABLED, Outcome::Success)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client),
    )
    .await?;
    crate::mail::notices::notify(
        &mut tx,
        &state,
        auth.user_id,
        crate::mail::notices::Notice::MfaEnabled,
    )
    .await?;
    tx.commit().await?;
    state.outbox.wake();
    Ok(JsonResponse(RecoveryCodesResponse {
        recovery_codes: codes,
    }))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    #[validate(length(max = 4096))]
    pub current_password: String,
    #[validate(custom(function = "validate::six_digits"))]
    pub code: String,
}

pub async fn disable_totp(
    State(state): State<AppState>,
    Aal2(auth): Aal2,
    client: ClientInfo,
    Json(req): Json<DisableRequest>,
) -> Result<StatusCode, ApiError> {
    let password = SecretString::from(crate::auth::policy::normalize(&req.current_password));
    let mut conn = state.db.acquire().await?;
    let user = crate::auth::db::find_by_id(&mut conn, auth.user_id)
        .await?
        .ok_or_else(crate::http::auth::invalid_token)?;
    drop(conn);
    let password_ok = match state
        .hasher
        .verify(&password, Some(&user.password_hash))
        .await
    {
        Ok(v) => v.ok,
        Err(crate::auth::password::HashError::TooLong) => false,
        Err(e) => return Err(e.into()),
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let refuse = |reason: &str| {
        AuditEvent::new(events::MFA_DISABLED, Outcome::Failure)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client)
            .detail("reason", reason)
    };
    if !password_ok {
        audit::record(&mut tx, now, &refuse("invalid_current_password")).await?;
        tx.commit().await?;
        return Err(ApiError::Forbidden {
            code: "invalid_credentials",
            detail: "The current password is incorrect.",
        });
    }
    if let Err(f) = verify_factor(
        &mut tx,
        &state,
        auth.user_id,
        &Factor::Totp(&req.code, Secret::Active),
    )
    .await?
    {
        audit::record(&mut tx, now, &refuse("invalid_code")).await?;
        tx.commit().await?;
        return Err(f.into_error(false));
    }
    db::delete_mfa(&mut tx, auth.user_id).await?;
    crate::sessions::end_sessions_after(
        &mut tx,
        &state,
        crate::sessions::CredentialChange {
            user_id: auth.user_id,
            keep: Some(auth.session_id),
            client: &client,
            event: events::MFA_DISABLED,
            reason: "mfa_disabled",
            notice: crate::mail::notices::Notice::MfaDisabled,
        },
    )
    .await?;
    tx.commit().await?;
    state.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    Aal2(auth): Aal2,
    client: ClientInfo,
    Json(req): Json<CodeRequest>,
) -> Result<JsonResponse<RecoveryCodesResponse>, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if let Err(f) = verify_factor(
        &mut tx,
        &state,
        auth.user_id,
        &Factor::Totp(&req.code, Secret::Active),
    )
    .await?
    {
        tx.commit().await?;
        return Err(f.into_error(false));
    }
    let codes = new_recovery_codes(&mut tx, &state, auth.user_id).await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::RECOVERY_CODES_REGENERATED, Outcome::Success)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client),
    )
    .await?;
    tx.commit().await?;
    Ok(JsonResponse(RecoveryCodesResponse {
        recovery_codes: codes,
    }))
}
