//! The accounts core: the `users` row and everything that reads or checks
//! it without being a flow of its own (the email and its encryption
//! binding, password policy and hashing, one-time email codes, the
//! current-password check for sensitive changes and the per-account
//! credential limit), and the registry of user-owned tables
//! ([`owned`]: plain data the tests hold the schema and the API to). The
//! sign-up, sign-in and recovery flows live in [`crate::auth`]; this
//! module depends on none of them.

pub mod breached;
pub mod codes;
pub mod db;
pub mod email;
pub mod owned;
pub mod password;
pub mod policy;
pub mod roles;

use crate::{crypto::Aad, error::ApiError, state::AppState};
use password::HashError;
pub use roles::{Aal, Role, Status};
use secrecy::SecretString;
use serde::Serialize;
use uuid::Uuid;

/// The body of the answers that carry only a status (`accepted`, …).
#[derive(Serialize)]
pub struct StatusResponse {
    pub status: &'static str,
}

/// The encryption binding of a user's sealed email (`users.email`).
pub fn email_aad(user_id: Uuid) -> Aad<'static> {
    Aad {
        table: "users",
        column: "email",
        row_id: user_id,
    }
}

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
    let candidate = zeroize::Zeroizing::new(normalised.clone());
    let address = email.as_str().to_owned();
    state
        .hasher
        .on_hashing_thread(move || policy::check(&candidate, &address))
        .await?
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
    let plain = key.open_string(&email_aad(user_id), &sealed)?;
    email::Email::parse(&plain, "email")
}

/// Re-authentication for sensitive changes (password change, email change,
/// account deletion, MFA setup and disable): checks the caller's current
/// password. A wrong one is answered 403 `invalid_credentials` (never 401,
/// which an app would read as "signed out").
pub async fn check_current_password(
    state: &AppState,
    auth: &crate::http::auth::AuthUser,
    client: &crate::http::extract::ClientInfo,
    password: &str,
    event: &'static str,
) -> Result<(), ApiError> {
    if verify_current_password(state, auth, client, password, event).await? {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            code: "invalid_credentials",
            detail: "The current password is incorrect.",
        })
    }
}

/// The current-password check itself, for handlers that must answer a
/// wrong password exactly like another wrong factor (`Ok(false)`).
///
/// A session is not a licence to guess: the check runs under the same
/// per-account credential limit as sign-in (keyed by the account, so a
/// thief's guesses and sign-in attempts share one budget), is refused
/// while the (account, IP) soft lock holds, and a wrong password counts as
/// a failed sign-in (`auth.login.failed`, the soft lock and the spike
/// alert rules), whichever route it came through.
pub async fn verify_current_password(
    state: &AppState,
    auth: &crate::http::auth::AuthUser,
    client: &crate::http::extract::ClientInfo,
    password: &str,
    action: &'static str,
) -> Result<bool, ApiError> {
    use crate::{
        audit::{self, events, AuditEvent, Outcome},
        rate_limit::policy::Class,
    };
    let mut conn = state.db.acquire().await?;
    let user = db::current_credentials(&mut conn, auth.user_id)
        .await?
        .ok_or_else(crate::http::auth::invalid_token)?;
    // The same identity as sign-in's, which indexes under the current key:
    // an account not yet reindexed after a key rotation is read back.
    let account = if user.email_blind_index_key_id == state.keys.blind_index.current_id() {
        account_key(&user.email_blind_index)
    } else {
        let email = email_of(&mut conn, state, auth.user_id).await?;
        account_key(&email.blind_index(&state.keys).value)
    };
    drop(conn);
    limit_account_key(state, &account).await?;
    let pair = soft_lock_key(&account, &client.rate_key);
    let now_us = state.clock.now().timestamp_micros();
    if let Some(wait) = state
        .limiter
        .blocked(Class::LoginFailures, &pair, now_us)
        .await?
    {
        metrics::counter!("rate_limit_refusals_total", "class" => Class::LoginFailures.name())
            .increment(1);
        return Err(ApiError::RateLimited {
            retry_after_secs: wait,
        });
    }
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
        return Ok(true);
    }
    let mut conn = state.db.acquire().await?;
    audit::record(
        &mut conn,
        state.clock.now(),
        &AuditEvent::new(events::LOGIN_FAILED, Outcome::Failure)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(client)
            .detail("reason", "invalid_current_password")
            .detail("action", action),
    )
    .await?;
    crate::alerts::rules::failed_login(&mut conn, state, Some(auth.user_id), client.ip).await?;
    metrics::counter!("auth_login_total", "outcome" => "invalid_current_password").increment(1);
    state
        .limiter
        .check(Class::LoginFailures, &pair, now_us)
        .await?;
    Ok(false)
}

/// The per-account credential limit, keyed by the email's blind index so
/// one address cannot be hammered from many IPs. Every address string gets
/// the same treatment, so a 429 reveals nothing about whether it exists.
pub async fn limit_account(state: &AppState, email: &email::Email) -> Result<String, ApiError> {
    let account = account_key(&email.blind_index(&state.keys).value);
    limit_account_key(state, &account).await?;
    Ok(account)
}

/// The rate-limit key of an account: a prefix of its email's blind index
/// under the current key (never the address itself), the same whether the
/// caller named the address (sign-in) or holds a session
/// (re-authentication). A rotation of the index key starts every account's
/// count afresh.
pub fn account_key(blind_index: &[u8]) -> String {
    blind_index
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The soft-lock key: wrong passwords per (account, client network): the
/// client's rate-limit key, i.e. its IPv4 address or its IPv6 prefix.
pub fn soft_lock_key(account: &str, client_rate_key: &str) -> String {
    format!("{account}:{client_rate_key}")
}

async fn limit_account_key(state: &AppState, account: &str) -> Result<(), ApiError> {
    use crate::rate_limit::{policy::Class, Limiter};
    let now_us = state.clock.now().timestamp_micros();
    let decision = state
        .limiter
        .check(Class::CredentialsAccount, account, now_us)
        .await?;
    Limiter::enforce(Class::CredentialsAccount, decision)
}
