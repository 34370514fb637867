//! Accounts: registration, email verification, sign-in and password
//! recovery, all enumeration-safe (the same status, body and comparable
//! time whether or not an address has an account).

pub mod breached;
pub mod codes;
pub mod db;
pub mod deferred;
pub mod email;
pub mod password;
pub mod policy;
pub mod recovery;
pub mod routes;
pub mod unverified;

use crate::{error::ApiError, state::AppState};
use password::HashError;
use secrecy::SecretString;

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            // A login flood is shed rather than queued without bound.
            HashError::Overloaded => {
                metrics::counter!("password_hash_shed_total").increment(1);
                ApiError::Unavailable {
                    code: "overloaded",
                    retry_after_secs: 1,
                }
            }
            HashError::TooLong => invalid_credentials(),
            HashError::Internal(msg) => {
                ApiError::internal(anyhow::anyhow!("password hashing: {msg}"))
            }
        }
    }
}

/// The one answer for an unknown email and a wrong password alike.
pub fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_credentials",
        detail: "The email or password is incorrect.",
    }
}

pub fn invalid_code() -> ApiError {
    ApiError::bad_request(
        "invalid_code",
        "The code is wrong, expired or already used. Request a new one if needed.",
    )
}

/// Normalises a new password and applies the policy (and, when enabled,
/// the breached-password check); the refusal names the rule so the app can
/// tell the person what to change.
pub async fn accept_new_password(
    state: &AppState,
    raw: &str,
    email: &email::Email,
    field: &str,
) -> Result<SecretString, ApiError> {
    let normalised = policy::normalize(raw);
    policy::check(&normalised, email.as_str())
        .map_err(|v| ApiError::invalid_field(field, v.code, &v.message))?;
    if let Some(check) = &state.breached_passwords {
        if check.is_breached(&normalised).await == Some(true) {
            return Err(ApiError::invalid_field(
                field,
                "password_breached",
                "This password has appeared in a data breach. Choose another one.",
            ));
        }
    }
    Ok(SecretString::from(normalised))
}

/// Hashes with the shared bounded pool.
pub async fn hash_password(state: &AppState, password: &SecretString) -> Result<String, ApiError> {
    Ok(state.hasher.hash(password).await?)
}

/// The user's email, decrypted (for mail and authenticator labels).
pub async fn email_of(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    user_id: uuid::Uuid,
) -> Result<email::Email, ApiError> {
    let sealed = db::email_ciphertext(conn, user_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("user {user_id} has no email")))?;
    let key = crate::user_keys::UserKey::load(&mut *conn, &state.keys.data, user_id).await?;
    let plain = key.open_string(&routes::email_aad(user_id), &sealed)?;
    email::Email::parse(&plain, "email")
}

/// Re-authentication for sensitive changes (password change, email change,
/// account deletion): checks the caller's current password. A wrong one is
/// audited under `event` and answered 403 `invalid_credentials` (never 401,
/// which an app would read as "signed out").
pub async fn check_current_password(
    state: &AppState,
    auth: &crate::http::auth::AuthUser,
    client: &crate::http::extract::ClientInfo,
    password: &str,
    event: &'static str,
) -> Result<(), ApiError> {
    use crate::audit::{self, AuditEvent, Outcome};
    let mut conn = state.db.acquire().await?;
    let user = db::find_by_id(&mut conn, auth.user_id)
        .await?
        .ok_or_else(crate::http::auth::invalid_token)?;
    drop(conn);
    let current = SecretString::from(policy::normalize(password));
    let ok = match state
        .hasher
        .verify(&current, Some(&user.password_hash))
        .await
    {
        Ok(v) => v.ok,
        // An over-long password is simply wrong here.
        Err(password::HashError::TooLong) => false,
        Err(e) => return Err(e.into()),
    };
    if ok {
        return Ok(());
    }
    let mut conn = state.db.acquire().await?;
    audit::record(
        &mut conn,
        state.clock.now(),
        &AuditEvent::new(event, Outcome::Failure)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(client)
            .detail("reason", "invalid_current_password"),
    )
    .await?;
    Err(ApiError::Forbidden {
        code: "invalid_credentials",
        detail: "The current password is incorrect.",
    })
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
        axum::Json(routes::StatusResponse { status: "accepted" }),
    );
    state
        .deferred
        .respond_then(purpose.as_str(), answer, async move {
            let mut tx = st.db.begin().await?;
            if let Some(user) = db::find_by_email(&mut tx, &email.blind_index(&st.keys)).await? {
                if applies(&user) {
                    send_code(&mut tx, &st, &client, user.user_id, &email, purpose).await?;
                }
            }
            tx.commit().await?;
            st.outbox.wake();
            Ok(())
        })
}

/// The per-account credential limit, keyed by the email's blind index so
/// one address cannot be hammered from many IPs. Every address string gets
/// the same treatment, so a 429 reveals nothing about whether it exists.
pub async fn limit_account(state: &AppState, email: &email::Email) -> Result<String, ApiError> {
    use crate::rate_limit::{policy::Class, Limiter};
    let account: String = email
        .blind_index(&state.keys)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let now_ms = state.clock.now().timestamp_millis();
    let decision = state
        .limiter
        .check(Class::CredentialsAccount, &account, now_ms)
        .await?;
    Limiter::enforce(Class::CredentialsAccount, decision)?;
    Ok(account)
}
