//! Queries over the caller's own `users` row: each takes the user id, and
//! the sealed columns travel as bytes (they are opened with the user's key
//! in `mod.rs`, never in SQL).

use crate::accounts::{Role, Status};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Everything the projections need from one user's row. `mfa_enabled` is
/// `mfa::db::mfa_enabled`'s predicate, spelled the same.
pub struct UserRow {
    pub user_id: Uuid,
    pub email_ciphertext: Vec<u8>,
    pub display_name_ciphertext: Option<Vec<u8>>,
    pub phone_ciphertext: Option<Vec<u8>>,
    pub date_of_birth_ciphertext: Option<Vec<u8>>,
    pub address_ciphertext: Option<Vec<u8>>,
    pub role: Role,
    pub status: Status,
    pub rate_limit_tier: String,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub mfa_enabled: bool,
}

pub async fn user_row(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT u.user_id, u.email_ciphertext, u.display_name_ciphertext, u.phone_ciphertext,
                  u.date_of_birth_ciphertext, u.address_ciphertext,
                  u.role AS "role: Role", u.status AS "status: Status",
                  u.rate_limit_tier, u.email_verified_at, u.created_at,
                  EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.user_id AND m.enabled_at IS NOT NULL)
                      AS "mfa_enabled!"
           FROM users u WHERE u.user_id = $1"#,
        user_id,
    )
    .fetch_optional(conn)
    .await
}

/// The sealed profile columns to write; `None` leaves a column as it is,
/// `Some(None)` clears it.
#[derive(Default)]
pub struct ProfileUpdate {
    pub display_name: Option<Option<Vec<u8>>>,
    pub phone: Option<Option<Vec<u8>>>,
    pub date_of_birth: Option<Option<Vec<u8>>>,
    pub address: Option<Option<Vec<u8>>>,
}

pub async fn update_profile(
    conn: &mut PgConnection,
    user_id: Uuid,
    u: &ProfileUpdate,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE users SET
             display_name_ciphertext = CASE WHEN $2 THEN $3 ELSE display_name_ciphertext END,
             phone_ciphertext = CASE WHEN $4 THEN $5 ELSE phone_ciphertext END,
             date_of_birth_ciphertext = CASE WHEN $6 THEN $7 ELSE date_of_birth_ciphertext END,
             address_ciphertext = CASE WHEN $8 THEN $9 ELSE address_ciphertext END,
             updated_at = $10
           WHERE user_id = $1"#,
        user_id,
        u.display_name.is_some(),
        u.display_name.clone().flatten(),
        u.phone.is_some(),
        u.phone.clone().flatten(),
        u.date_of_birth.is_some(),
        u.date_of_birth.clone().flatten(),
        u.address.is_some(),
        u.address.clone().flatten(),
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_pending_email(
    conn: &mut PgConnection,
    user_id: Uuid,
    ciphertext: &[u8],
    blind_index: &crate::crypto::BlindIndex,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE users SET pending_email_ciphertext = $2, pending_email_blind_index = $3,
                  pending_email_blind_index_key_id = $4, updated_at = $5
           WHERE user_id = $1"#,
        user_id,
        ciphertext,
        &blind_index.value[..],
        blind_index.key_id,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub struct PendingEmail {
    pub ciphertext: Vec<u8>,
}

/// The sealed pending address, its row locked. (Its index is not needed
/// here: confirming indexes the address afresh under the current key.)
pub async fn pending_email(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<Option<PendingEmail>> {
    let row = sqlx::query!(
        r#"SELECT pending_email_ciphertext FROM users
           WHERE user_id = $1 FOR UPDATE"#,
        user_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|r| {
        Some(PendingEmail {
            ciphertext: r.pending_email_ciphertext?,
        })
    }))
}

/// Moves the pending address into place. The caller has checked, under
/// the address lock, that no account holds it under any key; a claim under
/// the same key that slipped in still fails with the
/// `users_email_blind_index_key` violation (mapped by constraint name).
pub async fn apply_email_change(
    conn: &mut PgConnection,
    user_id: Uuid,
    ciphertext: &[u8],
    blind_index: &crate::crypto::BlindIndex,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE users SET email_ciphertext = $2, email_blind_index = $3,
                  email_blind_index_key_id = $4,
                  pending_email_ciphertext = NULL, pending_email_blind_index = NULL,
                  pending_email_blind_index_key_id = NULL,
                  email_verified_at = $5, updated_at = $5
           WHERE user_id = $1"#,
        user_id,
        ciphertext,
        &blind_index.value[..],
        blind_index.key_id,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Erases the account: the row and, by cascade, sessions, refresh tokens,
/// codes, MFA state and devices. The caller shreds the key first.
pub async fn delete_user(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query!("DELETE FROM users WHERE user_id = $1", user_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// After the account row is gone: clears the IP address and user agent of
/// the account's audit rows (through `audit_erase_client_details`, which
/// keeps the chain verifiable: see `audit::chain`) and of its alerts, and
/// drops any free text older alerts carried. Returns the audit rows erased.
pub async fn erase_client_details(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<i64> {
    let erased = sqlx::query_scalar!(r#"SELECT audit_erase_client_details($1) AS "n!""#, user_id)
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query!(
        r#"UPDATE security_alerts
           SET ip = NULL, details = details - '{device,device_name,model,user_agent}'::text[]
           WHERE user_id = $1"#,
        user_id,
    )
    .execute(conn)
    .await?;
    Ok(erased)
}

/// The MFA state without secrets, for the export: `enabled_at` is set
/// exactly when `mfa::db::mfa_enabled` holds (its predicate, spelled the
/// same).
pub struct MfaState {
    pub enabled_at: Option<DateTime<Utc>>,
    pub recovery_codes_remaining: i64,
}

pub async fn mfa_state(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<MfaState> {
    sqlx::query_as!(
        MfaState,
        r#"SELECT (SELECT m.enabled_at FROM mfa_totp m WHERE m.user_id = $1 AND m.enabled_at IS NOT NULL) AS enabled_at,
                  (SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL) AS "recovery_codes_remaining!""#,
        user_id,
    )
    .fetch_one(conn)
    .await
}

/// The caller's own audit events (as subject), newest first.
pub struct OwnAuditEvent {
    pub occurred_at: DateTime<Utc>,
    pub event_type: String,
    pub outcome: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// An event carries its IP address and user agent only when it came from
/// one of the user's own sessions (and no staff member acted). Everything
/// else recorded under the user's id may be another person's client: a
/// staff member viewing or locking the account, someone who mistyped the
/// address at sign-in, a registration or reset requested for the address.
/// Those are listed without IP and user agent: the export is the user's
/// data, not other people's.
pub async fn own_audit_events(
    conn: &mut PgConnection,
    user_id: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<OwnAuditEvent>> {
    sqlx::query_as!(
        OwnAuditEvent,
        r#"SELECT e.occurred_at, e.event_type, e.outcome,
                  CASE WHEN s.session_id IS NOT NULL AND (e.actor_id IS NULL OR e.actor_id = e.user_id)
                       THEN host(e.ip) END AS ip,
                  CASE WHEN s.session_id IS NOT NULL AND (e.actor_id IS NULL OR e.actor_id = e.user_id)
                       THEN e.user_agent END AS user_agent
           FROM audit_events e
           LEFT JOIN sessions s ON s.session_id = e.session_id AND s.user_id = e.user_id
           WHERE e.user_id = $1
           ORDER BY e.audit_event_id DESC LIMIT $2"#,
        user_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// The sealed address, its row locked until the transaction ends, so two
/// merge patches of the address apply one after the other instead of both
/// merging into the same old value.
pub async fn lock_address(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar!(
        "SELECT address_ciphertext FROM users WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_optional(conn)
    .await?
    .flatten())
}
