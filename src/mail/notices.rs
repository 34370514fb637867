//! Security notices to users: the account's owner hears about sign-ins
//! from new devices and about every change to how they sign in, so a
//! takeover does not go unnoticed. Queued in the caller's transaction.

use super::{enqueue, templates};
use crate::{error::ApiError, state::AppState};
use sqlx::PgConnection;
use uuid::Uuid;

pub enum Notice<'a> {
    NewDeviceSignIn { device: &'a str },
    PasswordChanged,
    PasswordReset,
    MfaEnabled,
    MfaDisabled,
}

impl Notice<'_> {
    fn template(&self) -> &'static str {
        match self {
            Self::NewDeviceSignIn { .. } => "notice_new_device",
            Self::PasswordChanged => "notice_password_changed",
            Self::PasswordReset => "notice_password_reset",
            Self::MfaEnabled => "notice_mfa_enabled",
            Self::MfaDisabled => "notice_mfa_disabled",
        }
    }

    fn text(&self) -> (&'static str, String) {
        match self {
            Self::NewDeviceSignIn { device } => ("New sign-in", format!("Device: {device}")),
            Self::PasswordChanged => (
                "Password changed",
                "Your other devices were signed out.".into(),
            ),
            Self::PasswordReset => ("Password reset", "Every device was signed out.".into()),
            Self::MfaEnabled => ("Two-factor authentication turned on", String::new()),
            Self::MfaDisabled => (
                "Two-factor authentication turned off",
                "Your other devices were signed out.".into(),
            ),
        }
    }
}

pub async fn notify(
    conn: &mut PgConnection,
    state: &AppState,
    user_id: Uuid,
    notice: Notice<'_>,
) -> Result<(), ApiError> {
    let email = crate::auth::email_of(&mut *conn, state, user_id).await?;
    let now = state.clock.now();
    let (what, details) = notice.text();
    let mail = templates::security_notice(email.as_str(), what, &details, now);
    enqueue(&mut *conn, &state.keys, now, notice.template(), &mail)
        .await
        .map_err(ApiError::internal)?;
    metrics::counter!("security_notices_total", "kind" => notice.template()).increment(1);
    Ok(())
}
