//! The hash chain over the audit trail: sealing and verification.
//!
//! `chain_hash(n) = SHA-256(chain_hash(n-1) ‖ canonical(row n))`, starting
//! from 32 zero bytes or from the last retention checkpoint. The canonical
//! form is produced by PostgreSQL itself (`jsonb` text of the fields, time
//! as integer microseconds), so sealing and verifying cannot disagree about
//! formatting. Sealers in several processes are serialised by an advisory
//! lock.
//!
//! Hash version 1 (rows sealed before migration 0014) covers the IP address
//! and user agent themselves. Version 2 covers instead `client_digest`,
//! `SHA-256(client_salt ‖ [ip, user_agent])` with a random per-row salt set
//! by the database on insert: while the values are present, `verify` checks
//! them against the digest; when an account is deleted, the values and the
//! salt are cleared and the sealed digest (which then links to no one)
//! keeps the chain whole. An unsalted or globally keyed hash would not do:
//! an IPv4 address is found from its plain hash in seconds, and a global
//! key would let whoever holds it confirm a guess after the erasure.
//!
//! The chain alone cannot show that its newest rows were cut and the rest
//! re-sealed by someone able to write the database as its owner. So each
//! sealing pass logs the head as an `audit_chain_head` line (`anchor` =
//! `POS:HASH`), kept by log storage outside the database, and
//! `audit verify --anchor POS:HASH` fails unless the chain still holds that
//! hash at that position.

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::fmt;
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A chain head recorded outside the database: position and hash,
/// written and parsed as `POS:HEX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub chain_pos: i64,
    pub chain_hash: Vec<u8>,
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.chain_pos, hex(&self.chain_hash))
    }
}

impl std::str::FromStr for Anchor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const FORMAT: &str =
            "expected POS:HASH (a chain position and 64 hex digits), as logged in audit_chain_head";
        let (pos, hash) = s.trim().split_once(':').ok_or(FORMAT)?;
        let chain_pos: i64 = pos.parse().map_err(|_| FORMAT)?;
        if chain_pos < 1 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FORMAT.into());
        }
        let chain_hash = (0..32)
            .map(|i| u8::from_str_radix(&hash[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| FORMAT)?;
        Ok(Self {
            chain_pos,
            chain_hash,
        })
    }
}

/// The newest sealed row, if any row is sealed.
pub async fn head(db: &PgPool) -> anyhow::Result<Option<Anchor>> {
    let mut conn = db.acquire().await?;
    let row = sqlx::query!(
        r#"SELECT chain_pos AS "chain_pos!", chain_hash AS "chain_hash!" FROM audit_events
           WHERE chain_pos IS NOT NULL ORDER BY chain_pos DESC LIMIT 1"#
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(r) => Some(Anchor {
            chain_pos: r.chain_pos,
            chain_hash: r.chain_hash,
        }),
        None => {
            let (chain_pos, chain_hash) = origin(&mut conn).await?;
            (chain_pos > 0).then_some(Anchor {
                chain_pos,
                chain_hash,
            })
        }
    })
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
                  CASE hash_version
                    WHEN 1 THEN jsonb_build_array(audit_event_id, (extract(epoch FROM occurred_at) * 1000000)::bigint,
                                    event_type, outcome, user_id, actor_id, session_id, host(ip),
                                    user_agent, request_id, details)::text
                    ELSE jsonb_build_array(hash_version, audit_event_id, (extract(epoch FROM occurred_at) * 1000000)::bigint,
                                    event_type, outcome, user_id, actor_id, session_id,
                                    encode(client_digest, 'hex'), request_id, details)::text
                  END AS "canonical!"
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
        let head = Anchor {
            chain_pos: pos,
            chain_hash: prev,
        };
        // The anchor for `audit verify --anchor`: log storage keeps it
        // where a database attacker cannot rewrite it.
        tracing::info!(
            chain_pos = head.chain_pos,
            chain_hash = %hex(&head.chain_hash),
            anchor = %head,
            sealed = rows.len(),
            "audit_chain_head"
        );
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
    /// The chain verifies on its own but no longer holds an anchor taken
    /// earlier: history was cut or rewritten and re-sealed.
    AnchorMismatch {
        anchor: Anchor,
        reason: &'static str,
    },
}

/// Walks every sealed row from the origin and recomputes each link.
pub async fn verify(db: &PgPool) -> anyhow::Result<Verification> {
    verify_anchored(db, &[]).await
}

/// Like [`verify`], and each of `anchors` must still be in the chain: the
/// recomputed hash at its position must be its hash.
pub async fn verify_anchored(db: &PgPool, anchors: &[Anchor]) -> anyhow::Result<Verification> {
    let mut conn = db.acquire().await?;
    let (mut pos, mut prev) = origin(&mut conn).await?;
    let mut pending: Vec<&Anchor> = Vec::new();
    for anchor in anchors {
        if anchor.chain_pos < pos {
            return Ok(Verification::AnchorMismatch {
                anchor: anchor.clone(),
                reason: "its position is before the oldest retention checkpoint, so it cannot be checked; \
                         if the anchor is younger than the retention period, history was removed",
            });
        }
        if anchor.chain_pos == pos && anchor.chain_hash != prev {
            return Ok(Verification::AnchorMismatch {
                anchor: anchor.clone(),
                reason: "the retention checkpoint at this position holds another hash: history was rewritten",
            });
        }
        if anchor.chain_pos > pos {
            pending.push(anchor);
        }
    }
    let mut rows = 0u64;
    loop {
        let batch = sqlx::query!(
            r#"SELECT audit_event_id, chain_pos AS "chain_pos!", chain_hash AS "chain_hash!",
                      CASE hash_version
                        WHEN 1 THEN jsonb_build_array(audit_event_id, (extract(epoch FROM occurred_at) * 1000000)::bigint,
                                        event_type, outcome, user_id, actor_id, session_id, host(ip),
                                        user_agent, request_id, details)::text
                        ELSE jsonb_build_array(hash_version, audit_event_id, (extract(epoch FROM occurred_at) * 1000000)::bigint,
                                        event_type, outcome, user_id, actor_id, session_id,
                                        encode(client_digest, 'hex'), request_id, details)::text
                      END AS "canonical!",
                      CASE
                        WHEN hash_version = 1 THEN true
                        WHEN client_salt IS NULL THEN ip IS NULL AND user_agent IS NULL
                        ELSE client_digest IS NOT DISTINCT FROM
                             sha256(client_salt || convert_to(jsonb_build_array(host(ip), user_agent)::text, 'UTF8'))
                      END AS "client_ok!"
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
            if !row.client_ok {
                return Ok(Verification::Broken {
                    chain_pos: row.chain_pos,
                    audit_event_id: row.audit_event_id,
                    reason: "the IP address or user agent of this row was altered",
                });
            }
            if let Some(anchor) = pending.iter().find(|a| a.chain_pos == row.chain_pos) {
                if anchor.chain_hash != expected {
                    return Ok(Verification::AnchorMismatch {
                        anchor: (*anchor).clone(),
                        reason: "the chain holds another hash at this position: history was rewritten and re-sealed",
                    });
                }
            }
            pos = row.chain_pos;
            prev = expected;
            rows += 1;
        }
    }
    if let Some(anchor) = pending.iter().find(|a| a.chain_pos > pos) {
        return Ok(Verification::AnchorMismatch {
            anchor: (*anchor).clone(),
            reason: "the chain ends before this position: sealed rows were removed",
        });
    }
    let unsealed =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM audit_events WHERE chain_pos IS NULL"#)
            .fetch_one(&mut *conn)
            .await?;
    Ok(Verification::Intact { rows, unsealed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_lock_is_the_one_the_retention_function_takes() {
        // migrations/0014_audit_service_role.sql writes it as a literal.
        assert_eq!(CHAIN_LOCK, 30_788_943_182_326_132);
        let migration = include_str!("../../migrations/0014_audit_service_role.sql");
        assert!(migration.contains("pg_advisory_xact_lock(30788943182326132)"));
    }

    #[test]
    fn an_anchor_round_trips_and_bad_ones_are_refused() {
        let anchor = Anchor {
            chain_pos: 42,
            chain_hash: (0u8..32).collect(),
        };
        let text = anchor.to_string();
        assert_eq!(
            text,
            "42:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        );
        assert_eq!(text.parse::<Anchor>(), Ok(anchor));
        for bad in [
            "",
            "42",
            "42:",
            "0:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "-1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "x:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "42:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e",
            "42:zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        ] {
            assert!(bad.parse::<Anchor>().is_err(), "{bad:?} was accepted");
        }
    }
}
