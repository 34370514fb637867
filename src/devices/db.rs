//! Queries over `devices`; each takes the owner, so "not yours" and
//! "missing" are the same empty result.

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

pub struct NewDevice<'a> {
    pub device_id: Uuid,
    pub user_id: Uuid,
    pub platform: &'a str,
    pub name: Option<&'a str>,
    pub token_ciphertext: &'a [u8],
    pub token_index: &'a [u8],
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
/// them (then registering it again is a refresh, not a new device).
pub async fn registered(
    conn: &mut PgConnection,
    user_id: Uuid,
    token_index: &[u8],
) -> sqlx::Result<(i64, bool)> {
    let r = sqlx::query!(
        r#"SELECT count(*) AS "n!", coalesce(bool_or(push_token_index = $2), false) AS "known!"
           FROM devices WHERE user_id = $1"#,
        user_id,
        token_index,
    )
    .fetch_one(conn)
    .await?;
    Ok((r.n, r.known))
}

/// Registers (or refreshes) a device for its owner.
pub async fn upsert(conn: &mut PgConnection, d: &NewDevice<'_>) -> sqlx::Result<DeviceRow> {
    sqlx::query_as!(
        DeviceRow,
        r#"INSERT INTO devices (device_id, user_id, platform, name, push_token_ciphertext,
                               push_token_index, created_at, last_seen_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
           ON CONFLICT ON CONSTRAINT devices_user_token_key
           DO UPDATE SET platform = EXCLUDED.platform, name = EXCLUDED.name, last_seen_at = EXCLUDED.last_seen_at
           RETURNING device_id, platform, name, created_at, last_seen_at, (xmax = 0) AS "inserted!""#,
        d.device_id,
        d.user_id,
        d.platform,
        d.name,
        d.token_ciphertext,
        d.token_index,
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
