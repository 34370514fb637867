//! Queries over `devices`; each takes the owner, so "not yours" and
//! "missing" are the same empty result.

use crate::crypto::BlindIndex;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

pub struct DeviceRow {
    pub device_id: Uuid,
    pub platform: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Whether this call created the row (false: an existing registration
    /// of the same token was refreshed).
    pub inserted: bool,
}

/// Blind-index context of `devices.push_token`.
pub const PUSH_TOKEN_CONTEXT: &str = "devices.push_token";

pub struct NewDevice<'a> {
    pub device_id: Uuid,
    pub user_id: Uuid,
    pub platform: &'a str,
    pub name: Option<&'a str>,
    pub token_ciphertext: &'a [u8],
    /// The token's index under the current key.
    pub token_index: &'a BlindIndex,
    pub now: DateTime<Utc>,
}

/// Serialises device registrations of one user until the transaction
/// ends, so the count [`registered`] returns stays true until the insert.
/// An advisory lock (namespace 0x64657673, "devs") touches no row, so it
/// cannot deadlock with anything that locks `users`.
pub async fn lock_owner(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    // `pg_advisory_xact_lock` returns void, which the query macros cannot
    // describe; the statement is constant.
    sqlx::query("SELECT pg_advisory_xact_lock(1684371059, hashtext($1::text))")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// How many devices the user has, and whether this push token is one of
/// them under any key of the index ring (`lookup`): then registering it
/// again is a refresh, not a new device. A registration found under an
/// older key is moved to `current` first, so the upsert meets it on the
/// unique index instead of adding a second row for the same token.
pub async fn registered(
    conn: &mut PgConnection,
    user_id: Uuid,
    lookup: &[Vec<u8>],
    current: &BlindIndex,
) -> sqlx::Result<(i64, bool)> {
    let r = sqlx::query!(
        r#"SELECT count(*) AS "n!", coalesce(bool_or(push_token_index = ANY($2)), false) AS "known!"
           FROM devices WHERE user_id = $1"#,
        user_id,
        lookup,
    )
    .fetch_one(&mut *conn)
    .await?;
    if r.known {
        sqlx::query!(
            r#"UPDATE devices SET push_token_index = $3, push_token_index_key_id = $4
               WHERE user_id = $1 AND push_token_index = ANY($2) AND push_token_index_key_id <> $4"#,
            user_id,
            lookup,
            &current.value[..],
            current.key_id,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok((r.n, r.known))
}

/// Registers (or refreshes) a device for its owner.
pub async fn upsert(conn: &mut PgConnection, d: &NewDevice<'_>) -> sqlx::Result<DeviceRow> {
    sqlx::query_as!(
        DeviceRow,
        r#"INSERT INTO devices (device_id, user_id, platform, name, push_token_ciphertext,
                               push_token_index, push_token_index_key_id, created_at, last_seen_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
           ON CONFLICT ON CONSTRAINT devices_user_token_key
           DO UPDATE SET platform = EXCLUDED.platform, name = EXCLUDED.name, last_seen_at = EXCLUDED.last_seen_at
           RETURNING device_id, platform, name, created_at, last_seen_at, (xmax = 0) AS "inserted!""#,
        d.device_id,
        d.user_id,
        d.platform,
        d.name,
        d.token_ciphertext,
        &d.token_index.value[..],
        d.token_index.key_id,
        d.now,
    )
    .fetch_one(conn)
    .await
}

pub async fn list(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<DeviceRow>> {
    sqlx::query_as!(
        DeviceRow,
        r#"SELECT device_id, platform, name, created_at, last_seen_at, false AS "inserted!"
           FROM devices WHERE user_id = $1 ORDER BY created_at DESC LIMIT 100"#,
        user_id,
    )
    .fetch_all(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    user_id: Uuid,
    device_id: Uuid,
) -> sqlx::Result<Option<DeviceRow>> {
    sqlx::query_as!(
        DeviceRow,
        r#"SELECT device_id, platform, name, created_at, last_seen_at, false AS "inserted!"
           FROM devices WHERE device_id = $1 AND user_id = $2"#,
        device_id,
        user_id,
    )
    .fetch_optional(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, user_id: Uuid, device_id: Uuid) -> sqlx::Result<bool> {
    let r = sqlx::query!(
        "DELETE FROM devices WHERE device_id = $1 AND user_id = $2",
        device_id,
        user_id,
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}
