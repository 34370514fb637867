//! The PostgreSQL replay cache (used when `REDIS_URL` is not set).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Records a proof's hash until `expires_at`; `true` when it was not seen
/// before. One statement: the primary key decides, so two processes
/// racing with the same proof cannot both win.
pub async fn record_proof(
    db: &PgPool,
    proof_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO dpop_proofs_seen (proof_hash, expires_at) VALUES ($1, $2)
         ON CONFLICT (proof_hash) DO NOTHING",
        proof_hash,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the entries that expired before `now`; returns how many.
pub async fn purge_expired(db: &PgPool, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let done = sqlx::query!("DELETE FROM dpop_proofs_seen WHERE expires_at < $1", now)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
