//! The text of every email the service sends. Plain text only: no remote
//! images or tracking links, and nothing a phishing mail could imitate
//! beyond what the user needs to act.

use super::OutgoingMail;

pub fn verification_code(to: &str, code: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.to_owned(),
        subject: "Your verification code".into(),
        text: format!(
            "Your verification code is {code}.\n\n\
             Enter it in the app within 15 minutes to confirm this email address.\n\
             If you did not create an account, ignore this message."
        ),
    }
}

pub fn registration_attempt(to: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.to_owned(),
        subject: "Someone tried to register with your email address".into(),
        text: "Someone tried to create a new account with this email address, which already has an account.\n\n\
               If it was you, sign in instead, or reset your password if you forgot it.\n\
               If it was not you, no action is needed: your account is unchanged."
            .into(),
    }
}

pub fn password_reset_code(to: &str, code: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.to_owned(),
        subject: "Your password reset code".into(),
        text: format!(
            "Your password reset code is {code}.\n\n\
             Enter it in the app within 15 minutes to choose a new password.\n\
             If you did not ask to reset your password, ignore this message: your password is unchanged."
        ),
    }
}

pub fn email_change_code(to: &str, code: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.to_owned(),
        subject: "Confirm your new email address".into(),
        text: format!(
            "Your confirmation code is {code}.\n\n\
             Enter it in the app within 15 minutes to make this your sign-in address.\n\
             If you did not ask for this, ignore this message: nothing changes without the code."
        ),
    }
}

pub fn recovery_code_used(to: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.to_owned(),
        subject: "A recovery code was used to sign in".into(),
        text: "One of your MFA recovery codes was just used to sign in to your account.\n\n\
               If it was you, consider generating a new set of recovery codes in the app.\n\
               If it was not you, reset your password now and sign out all sessions."
            .into(),
    }
}

/// The outcome of the user's rate-limit request. Never the reason or the
/// administrator's note: free text written by someone else, sent in a mail
/// from this service, would be a phishing tool (a link, a phone number to
/// call). The app shows the note to the signed-in user.
pub fn rate_limit_request_decided(
    to: &str,
    approved: bool,
    tier: &str,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> OutgoingMail {
    let (subject, text) = if approved {
        let until = match expires_at {
            Some(at) => format!(" until {} UTC", at.format("%Y-%m-%d %H:%M")),
            None => String::new(),
        };
        (
            "Your request for higher limits was approved",
            format!(
                "Your request for a higher rate limit was approved: your account now has the \"{tier}\" tier{until}.\n\n\
                 You can see the details in the app."
            ),
        )
    } else {
        (
            "Your request for higher limits was not approved",
            "Your request for a higher rate limit was not approved. Your limits are unchanged.\n\n\
             You can see the details in the app."
                .to_owned(),
        )
    };
    OutgoingMail {
        to: to.to_owned(),
        subject: subject.into(),
        text,
    }
}

/// A security notice: something changed on the account, and what to do if
/// it was not the account's owner.
/// What to do if a notice describes something the reader did not do.
pub const ADVICE_SECURE_ACCOUNT: &str =
    "If it was not you, reset your password now, then review your signed-in devices \
     and sign out the ones you do not recognise.";

pub fn security_notice(
    to: &str,
    what: &str,
    details: &str,
    advice: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> OutgoingMail {
    OutgoingMail {
        to: to.to_owned(),
        subject: format!("Security notice: {what}"),
        text: format!(
            "{what} on your account at about {} UTC.\n{details}\n\n\
             If this was you, no action is needed.\n{advice}",
            at.format("%Y-%m-%d %H:%M"),
        ),
    }
}
