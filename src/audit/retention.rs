//! Retention: deleting audit rows older than `AUDIT_RETENTION_DAYS`
//! (default 365) without breaking verification.
//!
//! The only path that may delete audit rows: inside one transaction it
//! takes the chain lock, opens the trigger's retention exception for that
//! transaction only, deletes the oldest *sealed* rows up to a chain
//! position, and records a checkpoint holding that position and its hash,
//! from which `verify` then starts. Unsealed rows are never deleted.

use super::chain::CHAIN_LOCK;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Deletes sealed rows that occurred before `before`; returns how many.
pub async fn purge(db: &PgPool, before: DateTime<Utc>, now: DateTime<Utc>) -> anyhow::Result<u64> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await?;
    let Some(last) = sqlx::query!(
        r#"SELECT chain_pos AS "chain_pos!", chain_hash AS "chain_hash!" FROM audit_events
           WHERE chain_pos IS NOT NULL AND occurred_at < $1
           ORDER BY chain_pos DESC LIMIT 1"#,
        before,
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(0);
    };
    sqlx::query_scalar!(
        r#"SELECT set_config('mobile_backend.audit_retention', 'on', true) AS "v!""#
    )
    .fetch_one(&mut *tx)
    .await?;
    let deleted = sqlx::query!(
        "DELETE FROM audit_events WHERE chain_pos <= $1",
        last.chain_pos
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query!(
        r#"INSERT INTO audit_checkpoints (audit_checkpoint_id, created_at, chain_pos, chain_hash, deleted_rows)
           VALUES ($1, $2, $3, $4, $5)"#,
        Uuid::now_v7(),
        now,
        last.chain_pos,
        last.chain_hash,
        deleted as i64,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        deleted,
        up_to_chain_pos = last.chain_pos,
        "audit retention applied"
    );
    Ok(deleted)
}
