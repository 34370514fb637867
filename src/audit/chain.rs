//! The hash chain over the audit trail: sealing and verification.
//!
//! `chain_hash(n) = SHA-256(chain_hash(n-1) ‖ canonical(row n))`, starting
//! from 32 zero bytes or from the last retention checkpoint. The canonical
//! form is produced by PostgreSQL itself (`jsonb` text of the fields, time
//! as integer microseconds), so sealing and verifying cannot disagree about
//! formatting. Sealers in several processes are serialised by an advisory
//! lock; each pass logs the chain head, so log storage holds anchors an
//! attacker with database access cannot rewrite.

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// Serialises sealing and retention across processes.
pub const CHAIN_LOCK: i64 = 0x006d_6261_7564_6974; // "mbaudit"
/// Rows sealed per pass.
pub const BATCH: i64 = 1000;

fn link(prev: &[u8], canonical: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical.as_bytes());
    h.finalize().to_vec()
}

/// Where the chain starts: the latest checkpoint, or genesis.
async fn origin(conn: &mut sqlx::PgConnection) -> sqlx::Result<(i64, Vec<u8>)> {
    let checkpoint = sqlx::query!(
        "SELECT chain_pos, chain_hash FROM audit_checkpoints ORDER BY chain_pos DESC LIMIT 1"
    )
    .fetch_optional(conn)
    .await?;
    Ok(checkpoint.map_or((0, vec![0u8; 32]), |c| (c.chain_pos, c.chain_hash)))
}

/// Seals rows committed at least `margin_secs` ago; returns how many.
pub async fn seal_pending(db: &PgPool, margin_secs: f64) -> anyhow::Result<usize> {
    let mut tx = db.begin().await?;
    // `pg_advisory_xact_lock` returns void, which the query macros cannot
    // describe; the statement is constant.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await?;
    let head = sqlx::query!(
        r#"SELECT chain_pos AS "chain_pos!", chain_hash AS "chain_hash!" FROM audit_events
           WHERE chain_pos IS NOT NULL ORDER BY chain_pos DESC LIMIT 1"#
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (mut pos, mut prev) = match head {
        Some(h) => (h.chain_pos, h.chain_hash),
        None => origin(&mut tx).await?,
    };
    let rows = sqlx::query!(
        r#"SELECT audit_event_id,
                  jsonb_build_array(audit_event_id, (extract(epoch FROM occurred_at) * 1000000)::bigint,
                                    event_type, outcome, user_id, actor_id, session_id, host(ip),
                                    user_agent, request_id, details)::text AS "canonical!"
           FROM audit_events
           WHERE chain_pos IS NULL AND inserted_at < clock_timestamp() - make_interval(secs => $1)
           ORDER BY inserted_at, audit_event_id
           LIMIT $2"#,
        margin_secs,
        BATCH,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        pos += 1;
        prev = link(&prev, &row.canonical);
        sqlx::query!(
            "UPDATE audit_events SET chain_pos = $2, chain_hash = $3 WHERE audit_event_id = $1",
            row.audit_event_id,
            pos,
            prev,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if !rows.is_empty() {
        let head: String = prev.iter().map(|b| format!("{b:02x}")).collect();
        tracing::info!(chain_pos = pos, chain_head = %head, sealed = rows.len(), "audit chain sealed");
    }
    Ok(rows.len())
}

/// The outcome of walking the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verification {
    Intact {
        rows: u64,
        /// Rows not sealed yet (too recent, or the sealer is behind).
        unsealed: i64,
    },
    Broken {
        chain_pos: i64,
        audit_event_id: Uuid,
        reason: &'static str,
    },
}

/// Walks every sealed row from the origin and recomputes each link.
pub async fn verify(db: &PgPool) -> anyhow::Result<Verification> {
    let mut conn = db.acquire().await?;
    let (mut pos, mut prev) = origin(&mut conn).await?;
    let mut rows = 0u64;
    loop {
        let batch = sqlx::query!(
            r#"SELECT audit_event_id, chain_pos AS "chain_pos!", chain_hash AS "chain_hash!",
                      jsonb_build_array(audit_event_id, (extract(epoch FROM occurred_at) * 1000000)::bigint,
                                        event_type, outcome, user_id, actor_id, session_id, host(ip),
                                        user_agent, request_id, details)::text AS "canonical!"
               FROM audit_events
               WHERE chain_pos > $1
               ORDER BY chain_pos
               LIMIT $2"#,
            pos,
            BATCH,
        )
        .fetch_all(&mut *conn)
        .await?;
        if batch.is_empty() {
            break;
        }
        for row in batch {
            if row.chain_pos != pos + 1 {
                return Ok(Verification::Broken {
                    chain_pos: row.chain_pos,
                    audit_event_id: row.audit_event_id,
                    reason: "a row before this one is missing",
                });
            }
            let expected = link(&prev, &row.canonical);
            if expected != row.chain_hash {
                return Ok(Verification::Broken {
                    chain_pos: row.chain_pos,
                    audit_event_id: row.audit_event_id,
                    reason: "this row, or one before it, was altered",
                });
            }
            pos = row.chain_pos;
            prev = expected;
            rows += 1;
        }
    }
    let unsealed =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM audit_events WHERE chain_pos IS NULL"#)
            .fetch_one(&mut *conn)
            .await?;
    Ok(Verification::Intact { rows, unsealed })
}
