//! The background sender: leases due messages, delivers, and reschedules
//! failures with exponential back-off.
//!
//! Leasing (`locked_until`, taken with `FOR UPDATE SKIP LOCKED`) lets any
//! number of API processes drain one outbox without sending a message
//! twice, and a process that dies mid-send only delays its messages until
//! the lease expires. The attempt counter is raised when the lease is
//! taken, so a message that crashes the sender cannot loop forever.

use super::{payload_aad, transport::Transport, OutgoingMail};
use crate::{
    background::{Next, Periodic, Stop},
    crypto::aead,
    state::AppState,
};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;
use uuid::Uuid;

/// Messages per lease.
const BATCH: i64 = 10;
/// A message is given up after this many attempts (about eleven hours of back-off in all).
pub const MAX_ATTEMPTS: i32 = 12;
const LEASE: Duration = Duration::seconds(120);

/// Delay before attempt `attempts + 1`: 10 s doubling, capped at 6 hours.
pub fn backoff(attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 16) as u32 - 1;
    let secs = 10i64.saturating_mul(1i64 << exp);
    Duration::seconds(secs.min(6 * 3600))
}

/// Delivers every message that is due now; returns how many were attempted.
pub async fn deliver_due(state: &AppState, transport: &Transport) -> anyhow::Result<usize> {
    let now = state.clock.now();
    let leased = sqlx::query!(
        r#"UPDATE mail_outbox SET locked_until = $2, attempts = attempts + 1
           WHERE mail_id IN (
               SELECT mail_id FROM mail_outbox
               WHERE status = 'pending' AND next_attempt_at <= $1
                 AND (locked_until IS NULL OR locked_until < $1)
               ORDER BY next_attempt_at
               LIMIT $3
               FOR UPDATE SKIP LOCKED)
           RETURNING mail_id, template, payload, attempts"#,
        now,
        now + LEASE,
        BATCH,
    )
    .fetch_all(&state.db)
    .await?;
    let count = leased.len();
    for row in leased {
        let outcome = match open(state, row.mail_id, row.payload.as_deref()) {
            Ok(mail) => transport.send(row.mail_id, &mail).await,
            Err(e) => {
                tracing::error!(mail_id = %row.mail_id, error = %e, "outbox payload does not open (tampered or key lost)");
                Err(super::transport::SendError {
                    kind: "payload_unreadable",
                    permanent: true,
                })
            }
        };
        let now = state.clock.now();
        match outcome {
            Ok(()) => {
                mark_sent(state, row.mail_id, now).await?;
                metrics::counter!("mail_sent_total", "template" => row.template).increment(1);
            }
            Err(e) => {
                let give_up = e.permanent || row.attempts >= MAX_ATTEMPTS;
                mark_failed(state, row.mail_id, now, row.attempts, e.kind, give_up).await?;
                metrics::counter!("mail_failures_total", "template" => row.template, "kind" => e.kind, "final" => give_up.to_string()).increment(1);
            }
        }
    }
    let depth =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM mail_outbox WHERE status = 'pending'"#)
            .fetch_one(&state.db)
            .await?;
    metrics::gauge!("mail_outbox_pending").set(depth as f64);
    Ok(count)
}

fn open(state: &AppState, id: Uuid, payload: Option<&[u8]>) -> anyhow::Result<OutgoingMail> {
    let sealed = payload.ok_or_else(|| anyhow::anyhow!("payload missing"))?;
    let plain = aead::open(&state.keys.data, &payload_aad(id), sealed)?;
    Ok(serde_json::from_slice(&plain)?)
}

async fn mark_sent(state: &AppState, id: Uuid, now: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE mail_outbox
           SET status = 'sent', sent_at = $2, payload = NULL, locked_until = NULL, last_error = NULL
           WHERE mail_id = $1"#,
        id,
        now,
    )
    .execute(&state.db)
    .await?;
    Ok(())
}

async fn mark_failed(
    state: &AppState,
    id: Uuid,
    now: DateTime<Utc>,
    attempts: i32,
    kind: &str,
    give_up: bool,
) -> sqlx::Result<()> {
    // A message given up on loses its payload: it will never be read again.
    sqlx::query!(
        r#"UPDATE mail_outbox
           SET status = CASE WHEN $5 THEN 'failed' ELSE 'pending' END,
               payload = CASE WHEN $5 THEN NULL ELSE payload END,
               next_attempt_at = $2, locked_until = NULL, last_error = $3
           WHERE mail_id = $1 AND attempts = $4"#,
        id,
        now + backoff(attempts),
        kind,
        attempts,
        give_up,
    )
    .execute(&state.db)
    .await?;
    Ok(())
}

/// Drains the outbox until `stop`: every `MAIL_POLL_SECS`, at once after a
/// commit wakes it (`Outbox::wake`), and again at once after a full batch.
pub async fn run(state: AppState, transport: Transport, stop: Stop) {
    let transport = Arc::new(transport);
    Periodic::new("mail sender", state.config.mail_poll_interval)
        .woken_by(state.outbox.notifier())
        .run(stop, move || {
            let (state, transport) = (state.clone(), transport.clone());
            async move {
                let result = deliver_due(&state, &transport).await;
                // Counted failed or not: tests wait for the first pass.
                state.outbox.pass_done();
                Ok::<_, anyhow::Error>(if result? as i64 == BATCH {
                    Next::Now
                } else {
                    Next::Wait
                })
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_and_is_capped() {
        assert_eq!(backoff(1), Duration::seconds(10));
        assert_eq!(backoff(2), Duration::seconds(20));
        assert_eq!(backoff(5), Duration::seconds(160));
        assert_eq!(backoff(20), Duration::seconds(6 * 3600));
        assert_eq!(backoff(0), Duration::seconds(10));
    }
}
