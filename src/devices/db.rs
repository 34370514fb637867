//! Queries over `devices`; each takes the owner, so "not yours" and
//! "missing" are the same empty result. Two statements reach other
//! accounts' rows, each by something the caller proves: [`release_token`]
//! by the blind index of a push token the caller holds, and
//! [`delete_for_ended_sessions`] by sessions of the user that just ended.

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
    /// The session that registered it: the registration ends with it.
    pub session_id: Uuid,
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

/// Serialises registrations of one push token, whoever registers it, until
/// the transaction ends: the token's index under every key of the ring, in
/// order (so two processes mid-rotation, whose rings share a key, still
/// meet on it). Taken after [`lock_owner`]; namespace 0x70757368, "push".
pub async fn lock_token(conn: &mut PgConnection, lookup: &[Vec<u8>]) -> sqlx::Result<()> {
    let mut keys: Vec<&Vec<u8>> = lookup.iter().collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock(1886745448, hashtext(encode($1, 'hex')))")
            .bind(&key[..])
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A push token belongs to one account at most, the latest to register it:
/// removes it from every other account (found by the token's blind index
/// under any key of the ring) and returns `(user_id, device_id)` of each
/// registration removed. The caller holds the token, and learns nothing
/// from this (not even whether anything was removed).
pub async fn release_token(
    conn: &mut PgConnection,
    user_id: Uuid,
    lookup: &[Vec<u8>],
) -> sqlx::Result<Vec<(Uuid, Uuid)>> {
    let rows = sqlx::query!(
        r#"DELETE FROM devices WHERE push_token_index = ANY($2) AND user_id <> $1
           RETURNING user_id, device_id"#,
        user_id,
        lookup,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.device_id)).collect())
}

/// Removes the push registrations made through `user_id`'s sessions that
/// have ended (revoked): signing out of a phone stops its notifications,
/// so the next person to sign in on it does not get this account's.
/// Registrations made before sessions were recorded (`session_id` NULL)
/// stay until deleted. Returns how many were removed.
pub async fn delete_for_ended_sessions(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<u64> {
    let r = sqlx::query!(
        r#"DELETE FROM devices d USING sessions s
           WHERE d.user_id = $1 AND d.session_id = s.session_id
             AND s.user_id = $1 AND s.revoked_at IS NOT NULL"#,
        user_id,
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
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

/// Registers (or refreshes) a device for its owner, bound to the session
/// that registers it (a refresh moves it to that session). The token is
/// the caller's alone by then ([`release_token`], under [`lock_token`]);
/// should another account's row still meet it, nothing is updated and the
/// statement returns no row (an error, not a takeover).
pub async fn upsert(conn: &mut PgConnection, d: &NewDevice<'_>) -> sqlx::Result<DeviceRow> {
    sqlx::query_as!(
        DeviceRow,
        r#"INSERT INTO devices (device_id, user_id, platform, name, push_token_ciphertext,
                               push_token_index, push_token_index_key_id, created_at, last_seen_at,
                               session_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)
           ON CONFLICT ON CONSTRAINT devices_push_token_key
           DO UPDATE SET platform = EXCLUDED.platform, name = EXCLUDED.name,
                         last_seen_at = EXCLUDED.last_seen_at, session_id = EXCLUDED.session_id
           WHERE devices.user_id = EXCLUDED.user_id
           RETURNING device_id, platform, name, created_at, last_seen_at, (xmax = 0) AS "inserted!""#,
        d.device_id,
        d.user_id,
        d.platform,
        d.name,
        d.token_ciphertext,
        &d.token_index.value[..],
        d.token_index.key_id,
        d.now,
        d.session_id,
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
