//! Queries over `users`. Each takes an executor; the handler owns the
//! transaction.

use super::roles::{Role, Status};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// What sign-in needs to know about an account.
#[derive(Debug)]
pub struct UserAuth {
    pub user_id: Uuid,
    pub password_hash: String,
    pub role: Role,
    pub status: Status,
    pub email_verified_at: Option<DateTime<Utc>>,
}

pub struct NewUser<'a> {
    pub user_id: Uuid,
    pub email_ciphertext: &'a [u8],
    pub email_blind_index: &'a [u8],
    pub password_hash: &'a str,
    pub now: DateTime<Utc>,
}

/// Inserts a user; `Ok(false)` when the email is already registered (the
/// unique blind index decided, so a concurrent registration cannot slip in).
pub async fn insert_user(conn: &mut PgConnection, u: &NewUser<'_>) -> sqlx::Result<bool> {
    let result = sqlx::query!(
        r#"INSERT INTO users (user_id, email_ciphertext, email_blind_index, password_hash,
                              password_changed_at, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $5, $5)
           ON CONFLICT ON CONSTRAINT users_email_blind_index_key DO NOTHING"#,
        u.user_id,
        u.email_ciphertext,
        u.email_blind_index,
        u.password_hash,
        u.now,
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn find_by_email(
    conn: &mut PgConnection,
    blind_index: &[u8],
) -> sqlx::Result<Option<UserAuth>> {
    sqlx::query_as!(
        UserAuth,
        r#"SELECT user_id, password_hash, role AS "role: Role", status AS "status: Status",
                  email_verified_at
           FROM users WHERE email_blind_index = $1"#,
        blind_index,
    )
    .fetch_optional(conn)
    .await
}

pub async fn find_by_id(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<UserAuth>> {
    sqlx::query_as!(
        UserAuth,
        r#"SELECT user_id, password_hash, role AS "role: Role", status AS "status: Status",
                  email_verified_at
           FROM users WHERE user_id = $1"#,
        user_id,
    )
    .fetch_optional(conn)
    .await
}

pub async fn mark_verified(
    conn: &mut PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $2), updated_at = $2 WHERE user_id = $1",
        user_id,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the password hash; `changed` says whether this is a new
/// password (it moves `password_changed_at`) or a re-hash of the same one.
pub async fn set_password_hash(
    conn: &mut PgConnection,
    user_id: Uuid,
    hash: &str,
    now: DateTime<Utc>,
    changed: bool,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE users SET password_hash = $2, updated_at = $3,
                  password_changed_at = CASE WHEN $4 THEN $3 ELSE password_changed_at END
           WHERE user_id = $1"#,
        user_id,
        hash,
        now,
        changed,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the sealed display name chosen at registration.
pub async fn set_display_name(
    conn: &mut PgConnection,
    user_id: Uuid,
    sealed: &[u8],
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE users SET display_name_ciphertext = $2 WHERE user_id = $1",
        user_id,
        sealed,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The sealed email of a user (open it with `super::email_aad`).
pub async fn email_ciphertext(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar!(
        "SELECT email_ciphertext FROM users WHERE user_id = $1",
        user_id
    )
    .fetch_optional(conn)
    .await
}

/// What a current-password check needs, in one read: the hash to verify
/// and the email's blind index (the account's rate-limit identity).
pub struct CurrentCredentials {
    pub password_hash: String,
    pub email_blind_index: Vec<u8>,
}

pub async fn current_credentials(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<Option<CurrentCredentials>> {
    sqlx::query_as!(
        CurrentCredentials,
        "SELECT password_hash, email_blind_index FROM users WHERE user_id = $1",
        user_id
    )
    .fetch_optional(conn)
    .await
}

/// The account of an address, its row locked until the transaction ends
/// (verify-email holds it while it checks that the password it verified
/// is still the account's).
pub async fn lock_by_email(
    conn: &mut PgConnection,
    blind_index: &[u8],
) -> sqlx::Result<Option<UserAuth>> {
    sqlx::query_as!(
        UserAuth,
        r#"SELECT user_id, password_hash, role AS "role: Role", status AS "status: Status",
                  email_verified_at
           FROM users WHERE email_blind_index = $1 FOR UPDATE"#,
        blind_index,
    )
    .fetch_optional(conn)
    .await
}

/// A new registration of an address whose account is still unverified:
/// the newest registrant's password replaces the old one (and the display
/// name is cleared for the caller to set). Returns the account, or `None`
/// when the address is verified (or gone). The row lock and the
/// `email_verified_at IS NULL` condition make this atomic with
/// verification: a verified account is never changed here.
pub async fn replace_unverified(
    conn: &mut PgConnection,
    blind_index: &[u8],
    password_hash: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"UPDATE users SET password_hash = $2, password_changed_at = $3, updated_at = $3,
                  display_name_ciphertext = NULL
           WHERE email_blind_index = $1 AND email_verified_at IS NULL
           RETURNING user_id"#,
        blind_index,
        password_hash,
        now,
    )
    .fetch_optional(conn)
    .await
}

/// Up to `limit` accounts never verified whose last registration is older
/// than `before`, locked (skipping rows another transaction holds, such as
/// a verification in progress).
pub async fn lock_expired_unverified(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"SELECT user_id FROM users
           WHERE email_verified_at IS NULL AND password_changed_at < $1
           ORDER BY password_changed_at
           LIMIT $2
           FOR UPDATE SKIP LOCKED"#,
        before,
        limit,
    )
    .fetch_all(conn)
    .await
}
