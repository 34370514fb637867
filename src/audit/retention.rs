//! Retention: deleting audit rows older than `AUDIT_RETENTION_DAYS`
//! (default 365) without breaking verification.
//!
//! The only path that deletes audit rows is the database function
//! `audit_apply_retention()` (migration 0014): `SECURITY DEFINER`, owned by
//! the migration owner, its `search_path` pinned. Under the chain lock it
//! deletes the oldest *sealed* rows inserted before the period (by the
//! database's clock, so a caller cannot move time), after writing the
//! checkpoint (that position and its hash) from which `verify` then
//! starts. The period is the one `migrate` recorded in
//! `audit_retention_policy`, a table the service role can only read: with
//! the service's credentials, retention can be run early but not widened.
//! Unsealed rows are never deleted, and nothing a session sets (no GUC)
//! lets a `DELETE` through the append-only trigger.

use sqlx::PgPool;

/// What one retention pass did.
#[derive(Debug, PartialEq, Eq)]
pub struct Purged {
    pub deleted: i64,
    /// The checkpoint written, when rows were deleted.
    pub up_to_chain_pos: Option<i64>,
    pub retention_days: i32,
}

/// Applies the database's retention policy once.
pub async fn purge(db: &PgPool) -> anyhow::Result<Purged> {
    let row = sqlx::query!(
        r#"SELECT deleted_rows AS "deleted!", up_to_chain_pos, retention_days AS "retention_days!"
           FROM audit_apply_retention()"#
    )
    .fetch_one(db)
    .await?;
    let purged = Purged {
        deleted: row.deleted,
        up_to_chain_pos: row.up_to_chain_pos,
        retention_days: row.retention_days,
    };
    if purged.deleted > 0 {
        tracing::info!(
            deleted = purged.deleted,
            up_to_chain_pos = purged.up_to_chain_pos,
            retention_days = purged.retention_days,
            "audit retention applied"
        );
    }
    Ok(purged)
}

/// Records the retention period the database enforces. Run by `migrate`
/// (as the owner); the service's role may not write it.
pub async fn set_policy(db: &PgPool, retention: chrono::Duration) -> anyhow::Result<()> {
    let days = i32::try_from(retention.num_days())?;
    sqlx::query!(
        r#"INSERT INTO audit_retention_policy (singleton, retention_days, updated_at)
           VALUES (true, $1, now())
           ON CONFLICT (singleton) DO UPDATE SET retention_days = EXCLUDED.retention_days, updated_at = now()
           WHERE audit_retention_policy.retention_days IS DISTINCT FROM EXCLUDED.retention_days"#,
        days,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The retention period the database enforces, in days.
pub async fn policy_days(db: &PgPool) -> anyhow::Result<Option<i64>> {
    let days = sqlx::query_scalar!("SELECT retention_days FROM audit_retention_policy")
        .fetch_optional(db)
        .await?;
    Ok(days.map(i64::from))
}

/// Whether the connected role owns `audit_events` (or is a member of its
/// owner): then it could disable the triggers that protect it.
pub async fn service_owns_audit_trail(db: &PgPool) -> anyhow::Result<bool> {
    let owns = sqlx::query_scalar!(
        r#"SELECT pg_has_role(current_user, c.relowner, 'USAGE') AS "owns!"
           FROM pg_class c WHERE c.oid = 'audit_events'::regclass"#
    )
    .fetch_one(db)
    .await?;
    Ok(owns)
}
