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
