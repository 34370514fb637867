//! Accounts: registration, email verification, sign-in and password
//! recovery, all enumeration-safe (the same status, body and comparable
//! time whether or not an address has an account).
//!
//! These are the flows; the account data and checks they share live in
//! [`crate::accounts`].

pub mod deferred;
pub mod recovery;
pub mod routes;
pub mod unverified;

use crate::{
    accounts::{codes, db, email, limit_account, StatusResponse},
    error::ApiError,
    state::AppState,
};
use serde::Deserialize;
use validator::Validate;

/// The body of the "mail me a code" endpoints (resend verification,
/// forgot password).
#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct EmailOnlyRequest {
    #[validate(length(max = 320))]
    pub email: String,
}

/// Issues a fresh email code for `purpose`, queues its mail and audits it,
/// all in the caller's transaction (register, resend and forgot share it).
pub async fn send_code(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    client: &crate::http::extract::ClientInfo,
    user_id: uuid::Uuid,
    email: &email::Email,
    purpose: codes::Purpose,
) -> Result<(), ApiError> {
    use crate::{
        audit::{self, events, AuditEvent, Outcome},
        mail::{self, templates},
    };
    let now = state.clock.now();
    let ttl = state.config.auth.email_code_ttl;
    let code = codes::issue(&mut *conn, &state.keys, now, ttl, user_id, purpose).await?;
    let (message, event) = match purpose {
        codes::Purpose::EmailVerification => (
            templates::verification_code(email.as_str(), &code),
            events::VERIFICATION_SENT,
        ),
        codes::Purpose::PasswordReset => (
            templates::password_reset_code(email.as_str(), &code),
            events::PASSWORD_RESET_REQUESTED,
        ),
        codes::Purpose::EmailChange => (
            templates::email_change_code(email.as_str(), &code),
            events::EMAIL_CHANGE_REQUESTED,
        ),
    };
    mail::enqueue(&mut *conn, &state.keys, now, purpose.as_str(), &message)
        .await
        .map_err(ApiError::internal)?;
    audit::record(
        &mut *conn,
        now,
        &AuditEvent::new(event, Outcome::Success)
            .user(user_id)
            .client(client),
    )
    .await?;
    Ok(())
}

/// The enumeration-safe "mail me a code" endpoints (resend verification,
/// forgot password): the same 202 whether or not the address has an
/// account; a code is sent only when it has one and `applies` to it. The
/// per-account limit runs first, for every address alike; the look-up and
/// everything that depends on it run after the answer
/// ([`deferred`]), so the answer's time is the same for every address.
pub async fn code_by_email(
    state: &AppState,
    client: &crate::http::extract::ClientInfo,
    raw_email: &str,
    purpose: codes::Purpose,
    applies: impl FnOnce(&db::UserAuth) -> bool + Send + 'static,
) -> Result<axum::response::Response, ApiError> {
    let email = email::Email::parse(raw_email, "email")?;
    limit_account(state, &email).await?;
    let st = state.clone();
    let client = client.clone();
    let answer = (
        axum::http::StatusCode::ACCEPTED,
        axum::Json(StatusResponse { status: "accepted" }),
    );
    state
        .deferred
        .respond_then(purpose.as_str(), answer, async move {
            let mut tx = st.db.begin().await?;
            if let Some(user) = db::find_by_email(&mut tx, &email.lookup(&st.keys)).await? {
                if applies(&user) {
                    send_code(&mut tx, &st, &client, user.user_id, &email, purpose).await?;
                }
            }
            tx.commit().await?;
            st.outbox.wake();
            Ok(())
        })
}
