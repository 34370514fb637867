//! Security notices to users: the account's owner hears about sign-ins
//! from new devices and about every change to how they sign in, so a
//! takeover does not go unnoticed. Queued in the caller's transaction.

use super::{enqueue, templates};
use crate::{error::ApiError, state::AppState};
use sqlx::PgConnection;
use uuid::Uuid;

pub enum Notice<'a> {
    NewDeviceSignIn {
        device: &'a str,
    },
    PasswordChanged,
    PasswordReset,
    MfaEnabled,
    MfaDisabled,
    /// To the current address, when a change to `new_masked` is requested.
    EmailChangeRequested {
        new_masked: &'a str,
    },
    /// To the old address, once the change is confirmed.
    EmailChanged {
        new_masked: &'a str,
    },
    /// To the address of an account that was just deleted.
    AccountDeleted,
}

impl Notice<'_> {
    fn template(&self) -> &'static str {
        match self {
            Self::NewDeviceSignIn { .. } => "notice_new_device",
            Self::PasswordChanged => "notice_password_changed",
            Self::PasswordReset => "notice_password_reset",
            Self::MfaEnabled => "notice_mfa_enabled",
            Self::MfaDisabled => "notice_mfa_disabled",
            Self::EmailChangeRequested { .. } => "notice_email_change_requested",
            Self::EmailChanged { .. } => "notice_email_changed",
            Self::AccountDeleted => "notice_account_deleted",
        }
    }

    fn advice(&self) -> &'static str {
        match self {
            // The account is gone, or this address no longer signs in to
            // it: a password reset from here cannot help any more.
            Self::AccountDeleted | Self::EmailChanged { .. } => {
                "If it was not you, contact support at once: the change was made with your password (and your second factor, if enabled)."
            }
            _ => templates::ADVICE_SECURE_ACCOUNT,
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
            Self::EmailChangeRequested { new_masked } => (
                "Email change requested",
                format!("A change of your sign-in email to {new_masked} was requested. It takes effect only when a code sent to that address is entered."),
            ),
            Self::EmailChanged { new_masked } => (
                "Email address changed",
                format!("Your sign-in email is now {new_masked}. This address no longer signs in."),
            ),
            Self::AccountDeleted => (
                "Account deleted",
                "Your account and its personal data were deleted. This cannot be undone.".into(),
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
    let email = crate::accounts::email_of(&mut *conn, state, user_id).await?;
    let now = state.clock.now();
    let (what, details) = notice.text();
    let mail = templates::security_notice(email.as_str(), what, &details, notice.advice(), now);
    enqueue(&mut *conn, &state.keys, now, notice.template(), &mail)
        .await
        .map_err(ApiError::internal)?;
    metrics::counter!("security_notices_total", "kind" => notice.template()).increment(1);
    Ok(())
}
