//! Queries over `users`. Each takes an executor; the handler owns the
//! transaction.

use super::roles::{Role, Status};
use crate::crypto::BlindIndex;
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
    /// The address's index under the current key, as stored.
    pub email_blind_index: &'a BlindIndex,
    /// The address's index under every key ([`Email::lookup`]).
    ///
    /// [`Email::lookup`]: super::email::Email::lookup
    pub email_lookup: &'a [Vec<u8>],
    pub password_hash: &'a str,
    pub now: DateTime<Utc>,
}

/// Namespace of the address locks ("emal"), apart from other advisory locks.
const ADDRESS_LOCK: i32 = 0x656d_616c;

/// Serialises, until the transaction ends, everything that claims the
/// address whose indexes are `lookup` (registration, `admin create`,
/// confirming an email change). Uniqueness of an address is the unique
/// index on `email_blind_index`, which only compares indexes under one
/// key; while the ring holds several keys, or while two processes hold
/// different rings during a rolling restart, two claims of one address
/// could carry different indexes. Each claim therefore locks the index
/// under every key it holds (in a fixed order, so claims cannot deadlock)
/// and then checks for a holder under every key: two processes whose rings
/// share a key wait on that key's lock. The lock touches no row.
pub async fn lock_address(conn: &mut PgConnection, lookup: &[Vec<u8>]) -> sqlx::Result<()> {
    let mut keys: Vec<i32> = lookup
        .iter()
        .filter_map(|index| index.first_chunk::<4>().map(|b| i32::from_be_bytes(*b)))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        // `pg_advisory_xact_lock` returns void, which the query macros
        // cannot describe; the statement is constant.
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(ADDRESS_LOCK)
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Inserts a user; `Ok(false)` when the email is already registered under
/// any key of the ring (the caller holds [`lock_address`]; the unique
/// index still decides between two claims under the same key).
pub async fn insert_user(conn: &mut PgConnection, u: &NewUser<'_>) -> sqlx::Result<bool> {
    let result = sqlx::query!(
        r#"INSERT INTO users (user_id, email_ciphertext, email_blind_index, email_blind_index_key_id,
                              password_hash, password_changed_at, created_at, updated_at)
           SELECT $1, $2, $3, $4, $5, $6, $6, $6
           WHERE NOT EXISTS (SELECT 1 FROM users WHERE email_blind_index = ANY($7))
           ON CONFLICT ON CONSTRAINT users_email_blind_index_key DO NOTHING"#,
        u.user_id,
        u.email_ciphertext,
        &u.email_blind_index.value[..],
        u.email_blind_index.key_id,
        u.password_hash,
        u.now,
        u.email_lookup,
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The account of an address, found by its index under any key of the
/// ring (`lookup`, from [`Email::lookup`](super::email::Email::lookup)).
pub async fn find_by_email(
    conn: &mut PgConnection,
    lookup: &[Vec<u8>],
) -> sqlx::Result<Option<UserAuth>> {
    sqlx::query_as!(
        UserAuth,
        r#"SELECT user_id, password_hash, role AS "role: Role", status AS "status: Status",
                  email_verified_at
           FROM users WHERE email_blind_index = ANY($1)"#,
        lookup,
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

/// Replaces the password hash with a re-hash of the same password (new
/// parameters or pepper), only if it is still `old`: a reset or change
/// that committed since `old` was read wins. Returns whether it replaced.
pub async fn upgrade_password_hash(
    conn: &mut PgConnection,
    user_id: Uuid,
    old: &str,
    new: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE users SET password_hash = $3, updated_at = $4
         WHERE user_id = $1 AND password_hash = $2",
        user_id,
        old,
        new,
        now,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
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
/// and the email's blind index with its key id (the account's rate-limit
/// identity, when under the current key).
pub struct CurrentCredentials {
    pub password_hash: String,
    pub email_blind_index: Vec<u8>,
    pub email_blind_index_key_id: i16,
}

pub async fn current_credentials(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<Option<CurrentCredentials>> {
    sqlx::query_as!(
        CurrentCredentials,
        "SELECT password_hash, email_blind_index, email_blind_index_key_id FROM users WHERE user_id = $1",
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
    lookup: &[Vec<u8>],
) -> sqlx::Result<Option<UserAuth>> {
    sqlx::query_as!(
        UserAuth,
        r#"SELECT user_id, password_hash, role AS "role: Role", status AS "status: Status",
                  email_verified_at
           FROM users WHERE email_blind_index = ANY($1) FOR UPDATE"#,
        lookup,
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
    lookup: &[Vec<u8>],
    password_hash: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"UPDATE users SET password_hash = $2, password_changed_at = $3, updated_at = $3,
                  display_name_ciphertext = NULL
           WHERE email_blind_index = ANY($1) AND email_verified_at IS NULL
           RETURNING user_id"#,
        lookup,
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

/// `keys status`: how many password hashes use each pepper key, read with
/// the same parser that verifies them (a row the SQL and the service read
/// differently would misguide the operator).
pub async fn password_hashes_by_pepper(
    conn: &mut PgConnection,
) -> sqlx::Result<Vec<(super::password::PepperUse, i64)>> {
    let mut counts = std::collections::BTreeMap::new();
    let mut after = Uuid::nil();
    loop {
        let rows = sqlx::query!(
            "SELECT user_id, password_hash FROM users WHERE user_id > $1
             ORDER BY user_id LIMIT 5000",
            after
        )
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.user_id;
        for row in &rows {
            *counts
                .entry(super::password::pepper_use(&row.password_hash))
                .or_insert(0) += 1;
        }
    }
    Ok(counts.into_iter().collect())
}
