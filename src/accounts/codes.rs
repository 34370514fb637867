//! One-time email codes (verification, password reset).
//!
//! Six digits from the OS CSPRNG, stored only as an HMAC under the current
//! key of `CODE_HMAC_KEYS` bound to purpose and user (a dump of the table
//! cannot be brute-forced offline, and a reset code cannot verify an
//! email), with that key's id beside it: a code is checked under the key
//! that made it, so rotating the key does not invalidate codes already
//! mailed. A code lives 15 minutes, dies after 5 wrong attempts, and is
//! consumed with `UPDATE … WHERE used_at IS NULL`, so two racing requests
//! cannot both use it. Issuing a new code retires the previous one.

use crate::{
    crypto::{random, CodeMac},
    keys::Keys,
};
use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

pub const MAX_ATTEMPTS: i32 = 5;
const DIGITS: u32 = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    EmailVerification,
    PasswordReset,
    /// Confirms a new email address (sent to that address).
    EmailChange,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmailVerification => "email_verification",
            Self::PasswordReset => "password_reset",
            Self::EmailChange => "email_change",
        }
    }
}

/// Why a code was not accepted (the client only ever sees `invalid_code`).
#[derive(Debug, PartialEq, Eq)]
pub enum CodeError {
    /// No live code: never issued, expired, used, superseded or exhausted.
    NoLiveCode,
    Mismatch,
}

impl CodeError {
    /// The reason recorded in the audit trail.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoLiveCode => "no_live_code",
            Self::Mismatch => "wrong_code",
        }
    }
}

fn mac(keys: &Keys, purpose: Purpose, user_id: Uuid, code: &str) -> CodeMac {
    keys.codes
        .hash(purpose.as_str(), &user_id.to_string(), code)
}

fn matches(keys: &Keys, stored: &CodeMac, purpose: Purpose, user_id: Uuid, code: &str) -> bool {
    keys.codes
        .verify(stored, purpose.as_str(), &user_id.to_string(), code)
}

/// Issues a fresh code for `user_id`, retiring any live one; returns the
/// code to mail (it is never stored).
pub async fn issue(
    conn: &mut PgConnection,
    keys: &Keys,
    now: DateTime<Utc>,
    ttl: Duration,
    user_id: Uuid,
    purpose: Purpose,
) -> sqlx::Result<String> {
    let code = random::numeric_code(DIGITS);
    // Two requests issuing a code for one account at once (a resend sent
    // twice) would each retire nothing and both insert: the second would
    // fail on the one-live-code index. The account's row lock makes the
    // second wait and then retire the first's code. Found by Schemathesis.
    sqlx::query!(
        "SELECT user_id FROM users WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE email_codes SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        user_id,
        purpose.as_str(),
        now,
    )
    .execute(&mut *conn)
    .await?;
    let stored = mac(keys, purpose, user_id, &code);
    sqlx::query!(
        r#"INSERT INTO email_codes (email_code_id, user_id, purpose, code_hash, code_hash_key_id,
                                    created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        Uuid::now_v7(),
        user_id,
        purpose.as_str(),
        stored.mac,
        stored.key_id,
        now,
        now + ttl,
    )
    .execute(&mut *conn)
    .await?;
    Ok(code)
}

/// Retires every live code of `user_id`, whatever its purpose. Returns how
/// many were live.
pub async fn retire_all(
    conn: &mut PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "UPDATE email_codes SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
        user_id,
        now,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Checks and consumes a code. A wrong code costs an attempt, which the
/// caller must commit even though the request fails.
pub async fn consume(
    conn: &mut PgConnection,
    keys: &Keys,
    now: DateTime<Utc>,
    user_id: Uuid,
    purpose: Purpose,
    code: &str,
) -> sqlx::Result<Result<(), CodeError>> {
    consume_if(conn, keys, now, user_id, purpose, code, true).await
}

/// [`consume`] with a second proof that must hold too (verify-email: the
/// account's password). When `also_ok` is false, a right code is treated
/// exactly like a wrong one: it costs an attempt and is not consumed.
pub async fn consume_if(
    conn: &mut PgConnection,
    keys: &Keys,
    now: DateTime<Utc>,
    user_id: Uuid,
    purpose: Purpose,
    code: &str,
    also_ok: bool,
) -> sqlx::Result<Result<(), CodeError>> {
    let live = sqlx::query!(
        r#"SELECT email_code_id, code_hash, code_hash_key_id, attempts FROM email_codes
           WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3
           FOR UPDATE"#,
        user_id,
        purpose.as_str(),
        now,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(live) = live else {
        return Ok(Err(CodeError::NoLiveCode));
    };
    if live.attempts >= MAX_ATTEMPTS {
        return Ok(Err(CodeError::NoLiveCode));
    }
    // Checked under the key that made it (a key that has left the ring
    // matches nothing).
    let stored = CodeMac {
        key_id: live.code_hash_key_id,
        mac: live.code_hash,
    };
    let code_ok = matches(keys, &stored, purpose, user_id, code);
    if !(code_ok && also_ok) {
        sqlx::query!(
            "UPDATE email_codes SET attempts = attempts + 1 WHERE email_code_id = $1",
            live.email_code_id,
        )
        .execute(&mut *conn)
        .await?;
        return Ok(Err(CodeError::Mismatch));
    }
    let used = sqlx::query!(
        "UPDATE email_codes SET used_at = $2 WHERE email_code_id = $1 AND used_at IS NULL",
        live.email_code_id,
        now,
    )
    .execute(&mut *conn)
    .await?;
    Ok(if used.rows_affected() == 1 {
        Ok(())
    } else {
        Err(CodeError::NoLiveCode)
    })
}
