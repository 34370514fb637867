//! Queries over `mfa_totp`, `recovery_codes` and `mfa_challenges`.

use crate::accounts::roles::{Role, Status};
use crate::crypto::CodeMac;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

pub struct TotpRow {
    pub secret_ciphertext: Option<Vec<u8>>,
    pub pending_secret_ciphertext: Option<Vec<u8>>,
    pub pending_created_at: Option<DateTime<Utc>>,
    /// The session that proved the password when the enrolment started.
    pub pending_session_id: Option<Uuid>,
    pub failed_attempts: i32,
    pub throttled_until: Option<DateTime<Utc>>,
}

/// The user's TOTP row, locked for the caller's transaction.
pub async fn lock_totp(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<TotpRow>> {
    sqlx::query_as!(
        TotpRow,
        r#"SELECT secret_ciphertext, pending_secret_ciphertext, pending_created_at,
                  pending_session_id, failed_attempts, throttled_until
           FROM mfa_totp WHERE user_id = $1 FOR UPDATE"#,
        user_id,
    )
    .fetch_optional(conn)
    .await
}

/// What a change of the second factor must decide under a lock: the
/// account's row is locked (so enrolment, confirmation, disabling and a
/// role change of one account run one at a time) and its MFA state and
/// role are read inside the caller's transaction.
pub struct AccountMfa {
    pub mfa_enabled: bool,
    pub role: Role,
}

pub async fn lock_account(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<Option<AccountMfa>> {
    // Two statements on purpose: under READ COMMITTED a statement that
    // waits for a row lock still answers its sub-queries from the snapshot
    // taken before the wait, so "is MFA on" must be read by a new
    // statement after the lock is held (a confirm that committed while we
    // waited is then seen).
    let role = sqlx::query_scalar!(
        r#"SELECT role AS "role: Role" FROM users WHERE user_id = $1 FOR UPDATE"#,
        user_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(role) = role else {
        return Ok(None);
    };
    Ok(Some(AccountMfa {
        mfa_enabled: mfa_enabled(conn, user_id).await?,
        role,
    }))
}

/// Whether MFA is on for `user_id`: the one definition of "MFA is on".
///
/// MFA is on when the user's `mfa_totp` row has `enabled_at` set (the
/// constraint `mfa_totp_enabled_has_secret` makes that the same as having
/// an active secret; a pending enrolment does not count). Statements that
/// need the answer inside a bigger query (`sessions::db::request_context`,
/// `profile::db::user_row`, `profile::db::mfa_state`) spell the predicate
/// exactly as here, `FROM mfa_totp m WHERE m.user_id = … AND m.enabled_at
/// IS NOT NULL`, and `tests/architecture.rs` refuses any other spelling.
pub async fn mfa_enabled(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = $1 AND m.enabled_at IS NOT NULL) AS "enabled!""#,
        user_id,
    )
    .fetch_one(conn)
    .await
}

/// Stores a new pending secret, bound to the session that proved the
/// password (`None` for the operator's `admin create`, which activates it
/// at once).
pub async fn set_pending_secret(
    conn: &mut PgConnection,
    user_id: Uuid,
    sealed: &[u8],
    now: DateTime<Utc>,
    session_id: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO mfa_totp (user_id, pending_secret_ciphertext, pending_created_at, pending_session_id)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT ON CONSTRAINT mfa_totp_pkey
           DO UPDATE SET pending_secret_ciphertext = $2, pending_created_at = $3,
                         pending_session_id = $4"#,
        user_id,
        sealed,
        now,
        session_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The pending secret becomes the active one.
pub async fn activate_pending(
    conn: &mut PgConnection,
    user_id: Uuid,
    sealed: &[u8],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE mfa_totp SET secret_ciphertext = $2, enabled_at = $3,
                  pending_secret_ciphertext = NULL, pending_created_at = NULL,
                  pending_session_id = NULL
           WHERE user_id = $1"#,
        user_id,
        sealed,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records `step` as used; false when it (or a later one) already was.
pub async fn advance_step(conn: &mut PgConnection, user_id: Uuid, step: i64) -> sqlx::Result<bool> {
    let r = sqlx::query!(
        "UPDATE mfa_totp SET last_used_step = $2 WHERE user_id = $1 AND last_used_step < $2",
        user_id,
        step,
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// After a wrong code: counts it and sets the throttle.
pub async fn record_failure(
    conn: &mut PgConnection,
    user_id: Uuid,
    throttled_until: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE mfa_totp SET failed_attempts = failed_attempts + 1, throttled_until = $2 WHERE user_id = $1",
        user_id,
        throttled_until,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn reset_failures(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE mfa_totp SET failed_attempts = 0, throttled_until = NULL WHERE user_id = $1",
        user_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes the factor and every recovery code.
pub async fn delete_mfa(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM recovery_codes WHERE user_id = $1", user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!(
        r#"UPDATE mfa_totp SET secret_ciphertext = NULL, enabled_at = NULL,
                  pending_secret_ciphertext = NULL, pending_created_at = NULL,
                  pending_session_id = NULL
           WHERE user_id = $1"#,
        user_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the user's recovery codes with `hashes` (each with its key id).
pub async fn replace_recovery_codes(
    conn: &mut PgConnection,
    user_id: Uuid,
    hashes: &[CodeMac],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM recovery_codes WHERE user_id = $1", user_id)
        .execute(&mut *conn)
        .await?;
    for hash in hashes {
        sqlx::query!(
            r#"INSERT INTO recovery_codes (recovery_code_id, user_id, code_hash, code_hash_key_id,
                                           created_at)
               VALUES ($1, $2, $3, $4, $5)"#,
            Uuid::now_v7(),
            user_id,
            hash.mac,
            hash.key_id,
            now,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Uses a recovery code; false when it does not exist or was used.
/// `candidates` is the typed code's MAC under each key of the ring: a row
/// matches only with the MAC made under its own key id.
pub async fn consume_recovery_code(
    conn: &mut PgConnection,
    user_id: Uuid,
    candidates: &[CodeMac],
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let key_ids: Vec<i16> = candidates.iter().map(|c| c.key_id).collect();
    let macs: Vec<Vec<u8>> = candidates.iter().map(|c| c.mac.clone()).collect();
    let r = sqlx::query!(
        r#"UPDATE recovery_codes SET used_at = $4
           WHERE user_id = $1 AND used_at IS NULL
             AND (code_hash_key_id, code_hash) IN (SELECT * FROM unnest($2::smallint[], $3::bytea[]))"#,
        user_id,
        &key_ids,
        &macs,
        now,
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn recovery_codes_remaining(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL"#,
        user_id,
    )
    .fetch_one(conn)
    .await
}

pub struct NewChallenge<'a> {
    pub user_id: Uuid,
    pub token_hash: &'a [u8],
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub device_name: Option<&'a str>,
    pub platform: Option<&'a str>,
    pub model: Option<&'a str>,
    /// The DPoP key of the password step, if it carried a proof.
    pub dpop_jkt: Option<&'a str>,
}

pub async fn insert_challenge(conn: &mut PgConnection, c: &NewChallenge<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO mfa_challenges (mfa_challenge_id, user_id, token_hash, created_at, expires_at,
                                       device_name, platform, model, dpop_jkt)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"#,
        Uuid::now_v7(),
        c.user_id,
        c.token_hash,
        c.now,
        c.expires_at,
        c.device_name,
        c.platform,
        c.model,
        c.dpop_jkt,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub struct ChallengeRow {
    pub mfa_challenge_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub attempts: i32,
    pub used_at: Option<DateTime<Utc>>,
    pub device_name: Option<String>,
    pub platform: Option<String>,
    pub model: Option<String>,
    pub dpop_jkt: Option<String>,
    pub role: Role,
    pub status: Status,
}

pub async fn lock_challenge(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> sqlx::Result<Option<ChallengeRow>> {
    sqlx::query_as!(
        ChallengeRow,
        r#"SELECT c.mfa_challenge_id, c.user_id, c.expires_at, c.attempts, c.used_at,
                  c.device_name, c.platform, c.model, c.dpop_jkt, u.role AS "role: Role",
                  u.status AS "status: Status"
           FROM mfa_challenges c JOIN users u ON u.user_id = c.user_id
           WHERE c.token_hash = $1
           FOR UPDATE OF c"#,
        token_hash,
    )
    .fetch_optional(conn)
    .await
}

pub async fn challenge_failed(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE mfa_challenges SET attempts = attempts + 1 WHERE mfa_challenge_id = $1",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn challenge_used(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE mfa_challenges SET used_at = $2 WHERE mfa_challenge_id = $1",
        id,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends every pending second step of sign-in of `user_id` (its
/// `mfa_token`s stop working). Called wherever sessions are ended wholesale
/// and on an email change: a token obtained with the old credentials must
/// not complete a sign-in afterwards.
pub async fn end_challenges(
    conn: &mut PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "UPDATE mfa_challenges SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
        user_id,
        now
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Upgrades a session in which the password (at setup) and a second
/// factor (now) were both proven: it becomes aal2 and its `auth_time`
/// moves to now, because the person has just authenticated in full.
pub async fn upgrade_session(
    conn: &mut PgConnection,
    session_id: Uuid,
    factor: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE sessions SET aal = 'aal2', auth_time = $3,
                  amr = CASE WHEN $2 = ANY(amr) THEN amr ELSE array_append(amr, $2) END
           WHERE session_id = $1"#,
        session_id,
        factor,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Seconds until the user's code throttle lifts, if it holds now. Read
/// before a password check, so a throttled factor answers the same for a
/// right and a wrong password.
pub async fn throttled_for(
    conn: &mut PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<u64>> {
    let until = sqlx::query_scalar!(
        "SELECT throttled_until FROM mfa_totp WHERE user_id = $1",
        user_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(until
        .flatten()
        .filter(|u| *u > now)
        .map(|u| (u - now).num_seconds().max(1) as u64))
}
