//! Password recovery and change: forgot, reset, change.
//!
//! A reset proves control of the mailbox, so it ends every session (a thief
//! holding a refresh token is thrown out) and marks the email verified; a
//! change proves knowledge of the current password and ends every *other*
//! session. MFA, once enabled, still applies at the next sign-in. Both
//! retire every live email code of the account and end its pending MFA
//! sign-ins (`mfa_token`s).

use super::EmailOnlyRequest;
use crate::{
    accounts::{
        codes::{self, Purpose},
        db,
        email::Email,
        invalid_code,
    },
    audit::{self, events, AuditEvent, Outcome},
    error::ApiError,
    http::{auth::Aal2, extract::ClientInfo, extract::Json, routes::ApiRouter, validate},
    rate_limit::policy::Class,
    state::AppState,
};
use axum::{extract::State, http::Method, http::StatusCode};
use serde::Deserialize;
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(
            Method::POST,
            "/v1/auth/password/forgot",
            "forgot_password",
            Class::Credentials,
            forgot_password,
        )
        .route(
            Method::POST,
            "/v1/auth/password/reset",
            "reset_password",
            Class::Credentials,
            reset_password,
        )
        .route(
            Method::POST,
            "/v1/auth/password/change",
            "change_password",
            Class::Credentials,
            change_password,
        )
}

pub async fn forgot_password(
    State(state): State<AppState>,
    client: ClientInfo,
    Json(req): Json<EmailOnlyRequest>,
) -> Result<axum::response::Response, ApiError> {
    super::code_by_email(&state, &client, &req.email, Purpose::PasswordReset, |_| {
        true
    })
    .await
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    #[validate(length(max = 320))]
    pub email: String,
    #[validate(custom(function = "validate::six_digits"))]
    pub code: String,
    #[validate(length(max = 1024))]
    pub new_password: crate::http::secret::SecretText,
}

pub async fn reset_password(
    State(state): State<AppState>,
    client: ClientInfo,
    Json(req): Json<ResetPasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let email = Email::parse(&req.email, "email")?;
    crate::accounts::limit_account(&state, &email).await?;
    let password =
        crate::accounts::accept_new_password(&state, &req.new_password, &email, "new_password")
            .await?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let user = db::find_by_email(&mut tx, &email.lookup(&state.keys)).await?;
    // An unknown address runs the same code query (for no user) and writes
    // the same audit row, so its answer costs what a wrong code costs.
    let outcome = codes::consume(
        &mut tx,
        &state.keys,
        now,
        user.as_ref().map_or(uuid::Uuid::nil(), |u| u.user_id),
        Purpose::PasswordReset,
        &req.code,
    )
    .await?;
    let user = match (user, outcome) {
        (Some(user), Ok(())) => user,
        (user, outcome) => {
            let mut event = AuditEvent::new(events::PASSWORD_RESET, Outcome::Failure)
                .client(&client)
                .detail(
                    "reason",
                    match (&user, outcome) {
                        (None, _) => "unknown_account",
                        (Some(_), Err(e)) => e.as_str(),
                        (Some(_), Ok(())) => "no_live_code",
                    },
                );
            if let Some(u) = &user {
                event = event.user(u.user_id);
            }
            audit::record(&mut tx, now, &event).await?;
            tx.commit().await?;
            return Err(invalid_code());
        }
    };
    let hash = crate::accounts::hash_password(&state, &password).await?;
    db::set_password_hash(&mut tx, user.user_id, &hash, now, true).await?;
    db::mark_verified(&mut tx, user.user_id, now).await?;
    // Every other code mailed so far (another reset code, a pending email
    // change) dies with the old password; pending MFA sign-ins end with
    // the sessions (`end_sessions_after`).
    codes::retire_all(&mut tx, user.user_id, now).await?;
    crate::sessions::end_sessions_after(
        &mut tx,
        &state,
        crate::sessions::CredentialChange {
            user_id: user.user_id,
            keep: None,
            client: &client,
            event: events::PASSWORD_RESET,
            reason: "password_reset",
            notice: crate::mail::notices::Notice::PasswordReset,
        },
    )
    .await?;
    tx.commit().await?;
    state.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[validate(length(max = 4096))]
    pub current_password: crate::http::secret::SecretText,
    #[validate(length(max = 1024))]
    pub new_password: crate::http::secret::SecretText,
}

/// Needs aal2 when MFA is on: a session signed in before the factor was
/// turned on (aal1) must not end the owner's aal2 sessions and keep its
/// own by changing the password.
pub async fn change_password(
    State(state): State<AppState>,
    Aal2(auth): Aal2,
    client: ClientInfo,
    Json(req): Json<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    crate::accounts::check_current_password(
        &state,
        &auth,
        &client,
        &req.current_password,
        events::PASSWORD_CHANGED,
    )
    .await?;
    let mut conn = state.db.acquire().await?;
    let email = crate::accounts::email_of(&mut conn, &state, auth.user_id).await?;
    drop(conn);
    let password =
        crate::accounts::accept_new_password(&state, &req.new_password, &email, "new_password")
            .await?;
    let hash = crate::accounts::hash_password(&state, &password).await?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    db::set_password_hash(&mut tx, auth.user_id, &hash, now, true).await?;
    codes::retire_all(&mut tx, auth.user_id, now).await?;
    crate::sessions::end_sessions_after(
        &mut tx,
        &state,
        crate::sessions::CredentialChange {
            user_id: auth.user_id,
            keep: Some(auth.session_id),
            client: &client,
            event: events::PASSWORD_CHANGED,
            reason: "password_changed",
            notice: crate::mail::notices::Notice::PasswordChanged,
        },
    )
    .await?;
    tx.commit().await?;
    state.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}
