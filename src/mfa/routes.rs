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
    rate_limit::policy::Class,
    state::AppState,
    user_keys::UserKey,
};
use axum::{body::Bytes, extract::State, http::Method, http::StatusCode, Json as JsonResponse};
use serde::{Deserialize, Serialize};
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(Method::GET, "/v1/mfa", "get_mfa", Class::Reads, get_mfa)
        .route(
            Method::POST,
            "/v1/mfa/totp/setup",
            "setup_totp",
            Class::Credentials,
            setup_totp,
        )
        .route(
            Method::POST,
            "/v1/mfa/totp/confirm",
            "confirm_totp",
            Class::Credentials,
            confirm_totp,
        )
        .route(
            Method::POST,
            "/v1/mfa/totp/disable",
            "disable_totp",
            Class::Credentials,
            disable_totp,
        )
        .route(
            Method::POST,
            "/v1/mfa/recovery-codes",
            "regenerate_recovery_codes",
            Class::Credentials,
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

#[derive(Default, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    /// Required: a session alone must not bind an authenticator.
    #[validate(length(max = 4096))]
    pub current_password: Option<String>,
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    /// Required while MFA is on: a code from the current authenticator.
    #[validate(custom(function = "validate::six_digits"))]
    pub code: Option<String>,
}

#[derive(Serialize)]
pub struct SetupResponse {
    /// Base32, for typing into an authenticator by hand.
    pub secret: String,
    pub otpauth_uri: String,
    /// The URI as an SVG QR code, for web clients.
    pub qr_svg: String,
}

/// How long after a setup its session may confirm the enrolment.
pub const ENROLMENT_TTL: chrono::Duration = chrono::Duration::minutes(10);

/// One answer for a wrong password and a wrong code, so a session holder
/// cannot use these routes to learn which of the two they have right.
pub fn wrong_password_or_code() -> ApiError {
    ApiError::Forbidden {
        code: "invalid_credentials",
        detail: "The password or the code is incorrect.",
    }
}

/// 429 while the code throttle holds, decided before the password check.
pub async fn refuse_if_throttled(state: &AppState, auth: &AuthUser) -> Result<(), ApiError> {
    let mut conn = state.db.acquire().await?;
    match db::throttled_for(&mut conn, auth.user_id, state.clock.now()).await? {
        Some(wait) => Err(ApiError::RateLimited {
            retry_after_secs: wait,
        }),
        None => Ok(()),
    }
}

/// Checks the current password (outside any transaction: argon2 is slow
/// and must not hold a row lock), then opens the transaction and locks the
/// account, whose MFA state and role the caller decides on from here.
async fn password_then_lock(
    state: &AppState,
    auth: &AuthUser,
    client: &ClientInfo,
    password: &str,
    action: &'static str,
) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, db::AccountMfa), ApiError> {
    if !crate::accounts::verify_current_password(state, auth, client, password, action).await? {
        return Err(wrong_password_or_code());
    }
    let mut tx = state.db.begin().await?;
    let account = db::lock_account(&mut tx, auth.user_id)
        .await?
        .ok_or_else(crate::http::auth::invalid_token)?;
    Ok((tx, account))
}

fn required(field: &str, message: &str) -> ApiError {
    ApiError::invalid_field(field, "required", message)
}

/// Starts (or restarts) enrolment. It always takes the current password:
/// a stolen session alone cannot bind the thief's authenticator (and lock
/// the owner out). While MFA is on, replacing the authenticator also needs
/// aal2 *and* a code from the current one. Whether MFA is on is decided
/// under the account's row lock, so a setup racing the owner's confirm
/// cannot slip a new pending secret past the freshly enabled factor.
pub async fn setup_totp(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    body: Bytes,
) -> Result<JsonResponse<SetupResponse>, ApiError> {
    let req: SetupRequest = if body.is_empty() {
        SetupRequest::default()
    } else {
        extract::parse(&body)?
    };
    if !auth.mfa_enabled && auth.role.is_staff() {
        // Decided again under the lock below; refused here first so the
        // answer does not depend on the password.
        return Err(staff_enrolment_refused());
    }
    if auth.mfa_enabled {
        // Cheap refusals first: an aal1 session never gets to guess, and
        // a missing code or a throttled factor is answered before the
        // password is checked, so neither tells whether it was right.
        Aal2::check(&state, &auth, &client).await?;
        if req.code.is_none() {
            return Err(required(
                "code",
                "A code from your current authenticator is required.",
            ));
        }
        refuse_if_throttled(&state, &auth).await?;
    }
    let password = req.current_password.as_deref().ok_or_else(|| {
        required(
            "current_password",
            "Your current password is required to set up an authenticator.",
        )
    })?;
    let (mut tx, account) = password_then_lock(
        &state,
        &auth,
        &client,
        password,
        events::MFA_ENROLMENT_STARTED,
    )
    .await?;
    let now = state.clock.now();
    if !account.mfa_enabled && account.role.is_staff() {
        // A staff account without a factor (from before staff roles
        // required one) must not enrol itself: its password alone would
        // then be enough to reach the staff routes.
        audit::record(
            &mut tx,
            now,
            &AuditEvent::new(events::MFA_ENROLMENT_STARTED, Outcome::Denied)
                .user(auth.user_id)
                .session(auth.session_id)
                .client(&client)
                .detail("reason", "staff_without_mfa"),
        )
        .await?;
        tx.commit().await?;
        return Err(staff_enrolment_refused());
    }
    if account.mfa_enabled {
        let with_mfa = AuthUser {
            mfa_enabled: true,
            ..auth.clone()
        };
        Aal2::check(&state, &with_mfa, &client).await?;
        let code = req.code.as_deref().ok_or_else(|| {
            required(
                "code",
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
            return Err(match f {
                super::FactorFailure::Invalid => wrong_password_or_code(),
                throttled => throttled.into_error(false),
            });
        }
    }
    let secret = random::random_bytes::<{ totp::SECRET_BYTES }>();
    let user_key = UserKey::of(&state.keys.data, &auth)?;
    let sealed = user_key.seal(&super::secret_aad(auth.user_id, Secret::Pending), &secret)?;
    db::set_pending_secret(&mut tx, auth.user_id, &sealed, now, Some(auth.session_id)).await?;
    let email = crate::accounts::email_of(&mut tx, &state, auth.user_id).await?;
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

/// Ten fresh recovery codes for `user_id`, replacing any earlier ones.
pub async fn new_recovery_codes(
    conn: &mut sqlx::PgConnection,
    keys: &crate::keys::Keys,
    user_id: uuid::Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<String>, ApiError> {
    let codes = recovery::generate();
    let hashes: Vec<crate::crypto::CodeMac> = codes
        .iter()
        .filter_map(|c| recovery::normalize(c))
        .map(|n| recovery::hash(keys, user_id, &n))
        .collect();
    db::replace_recovery_codes(conn, user_id, &hashes, now).await?;
    Ok(codes)
}

fn no_pending_enrolment() -> ApiError {
    ApiError::Conflict {
        code: "no_pending_enrolment",
        detail: "No enrolment started in this session in the last 10 minutes. Start with POST /v1/mfa/totp/setup.",
    }
}

/// Finishes enrolment. The calling session becomes aal2 (and its
/// `auth_time` now) only because it proved the password at setup, within
/// ten minutes, and the new authenticator's code now: both factors, in
/// this session. Another session, or a stale setup, gets 409
/// `no_pending_enrolment`. Replacing an active authenticator needs aal2.
pub async fn confirm_totp(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    Json(req): Json<CodeRequest>,
) -> Result<JsonResponse<RecoveryCodesResponse>, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let account = db::lock_account(&mut tx, auth.user_id)
        .await?
        .ok_or_else(crate::http::auth::invalid_token)?;
    if account.mfa_enabled {
        let with_mfa = AuthUser {
            mfa_enabled: true,
            ..auth.clone()
        };
        Aal2::check(&state, &with_mfa, &client).await?;
    }
    let row = db::lock_totp(&mut tx, auth.user_id).await?;
    let Some((pending, row)) =
        row.and_then(|r| r.pending_secret_ciphertext.clone().map(|p| (p, r)))
    else {
        return Err(no_pending_enrolment());
    };
    let fresh = row
        .pending_created_at
        .is_some_and(|at| now - at <= ENROLMENT_TTL);
    if row.pending_session_id != Some(auth.session_id) || !fresh {
        return Err(no_pending_enrolment());
    }
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
    let user_key = UserKey::of(&state.keys.data, &auth)?;
    let secret = user_key.open(&super::secret_aad(auth.user_id, Secret::Pending), &pending)?;
    let sealed = user_key.seal(&super::secret_aad(auth.user_id, Secret::Active), &secret)?;
    db::activate_pending(&mut tx, auth.user_id, &sealed, now).await?;
    let codes = new_recovery_codes(&mut tx, &state.keys, auth.user_id, now).await?;
    db::upgrade_session(&mut tx, auth.session_id, "otp", now).await?;
    // A refresh token this session retired before the step-up must not
    // retry into the aal2 session it became.
    crate::sessions::db::forget_lost_answers(&mut tx, auth.session_id).await?;
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
    pub current_password: crate::http::secret::SecretText,
    #[validate(custom(function = "validate::six_digits"))]
    pub code: String,
}

fn staff_enrolment_refused() -> ApiError {
    ApiError::Conflict {
        code: "staff_enrolment_refused",
        detail: "A staff account without a second factor cannot enrol one itself. An administrator changes its role to user, you turn on two-factor authentication, then the role is given back.",
    }
}

fn staff_requires_mfa() -> ApiError {
    ApiError::Conflict {
        code: "staff_requires_mfa",
        detail: "Staff accounts must keep a second factor. Ask an administrator to change your role first.",
    }
}

/// Turns MFA off: aal2, the current password and a current code, with one
/// answer for a wrong password or a wrong code (403 `invalid_credentials`)
/// so the route is no password oracle; password guesses count as failed
/// sign-ins under the per-account credential limit. Staff cannot turn it
/// off (409 `staff_requires_mfa`).
pub async fn disable_totp(
    State(state): State<AppState>,
    Aal2(auth): Aal2,
    client: ClientInfo,
    Json(req): Json<DisableRequest>,
) -> Result<StatusCode, ApiError> {
    if auth.role.is_staff() {
        return Err(staff_requires_mfa());
    }
    refuse_if_throttled(&state, &auth).await?;
    let (mut tx, account) = password_then_lock(
        &state,
        &auth,
        &client,
        &req.current_password,
        events::MFA_DISABLED,
    )
    .await?;
    let now = state.clock.now();
    if account.role.is_staff() {
        return Err(staff_requires_mfa());
    }
    if let Err(f) = verify_factor(
        &mut tx,
        &state,
        auth.user_id,
        &Factor::Totp(&req.code, Secret::Active),
    )
    .await?
    {
        audit::record(
            &mut tx,
            now,
            &AuditEvent::new(events::MFA_DISABLED, Outcome::Failure)
                .user(auth.user_id)
                .session(auth.session_id)
                .client(&client)
                .detail("reason", "invalid_code"),
        )
        .await?;
        tx.commit().await?;
        return Err(match f {
            super::FactorFailure::Invalid => wrong_password_or_code(),
            throttled => throttled.into_error(false),
        });
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
    let codes = new_recovery_codes(&mut tx, &state.keys, auth.user_id, now).await?;
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
