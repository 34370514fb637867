//! Queries over `attestation_challenges` and `attested_keys`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

/// Stores a new challenge (its SHA-256 only).
pub async fn insert_challenge(
    conn: &mut PgConnection,
    challenge_hash: &[u8; 32],
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO attestation_challenges (challenge_hash, expires_at) VALUES ($1, $2)",
        challenge_hash.as_slice(),
        expires_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes a challenge: deletes it and answers whether it was there and
/// unexpired. Single use, whether or not the attestation then passes.
pub async fn take_challenge(
    conn: &mut PgConnection,
    challenge_hash: &[u8; 32],
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let row = sqlx::query_scalar!(
        "DELETE FROM attestation_challenges WHERE challenge_hash = $1 RETURNING expires_at",
        challenge_hash.as_slice(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some_and(|expires_at| expires_at > now))
}

/// Removes expired challenges (the periodic sweep).
pub async fn delete_expired_challenges(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "DELETE FROM attestation_challenges WHERE expires_at <= $1",
        now
    )
    .execute(conn)
    .await?
    .rows_affected())
}

pub struct AttestedKey<'a> {
    pub jkt: &'a str,
    pub platform: &'a str,
    pub app_id: &'a str,
    pub apple_key_id: Option<&'a [u8]>,
    pub verdicts: Value,
    pub now: DateTime<Utc>,
}

/// Records a key as attested (again: the latest attestation replaces).
pub async fn record_attested_key(
    conn: &mut PgConnection,
    key: &AttestedKey<'_>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO attested_keys (jkt, platform, app_id, apple_key_id, verdicts, attested_at, last_used_at)
           VALUES ($1, $2, $3, $4, $5, $6, $6)
           ON CONFLICT (jkt) DO UPDATE
              SET platform = EXCLUDED.platform, app_id = EXCLUDED.app_id,
                  apple_key_id = EXCLUDED.apple_key_id, verdicts = EXCLUDED.verdicts,
                  attested_at = EXCLUDED.attested_at, last_used_at = EXCLUDED.last_used_at"#,
        key.jkt,
        key.platform,
        key.app_id,
        key.apple_key_id,
        key.verdicts,
        key.now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The platform a key was attested for, if it was; marks it used.
pub async fn use_attested_key(
    conn: &mut PgConnection,
    jkt: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "UPDATE attested_keys SET last_used_at = $2 WHERE jkt = $1 RETURNING platform",
        jkt,
        now,
    )
    .fetch_optional(conn)
    .await
}

/// Forgets attested keys unused since `before` (no sign-in or refresh used
/// them): an app that comes back after that attests again.
pub async fn delete_unused_keys(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
) -> sqlx::Result<u64> {
    Ok(
        sqlx::query!("DELETE FROM attested_keys WHERE last_used_at < $1", before)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
