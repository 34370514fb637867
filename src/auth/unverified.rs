//! Deleting accounts nobody verified.
//!
//! An address registered but never proven is a claim by someone who may
//! not own it. It lives `UNVERIFIED_ACCOUNT_TTL_HOURS` (default 24) after
//! its last registration; then a background pass deletes it the way an
//! account deletion does (the data key is shredded, the row and everything
//! hanging off it go, the client details of its retained audit rows and
//! alerts are erased) and audits each one (`auth.account.unverified_deleted`).
//! Rows are taken with `FOR UPDATE SKIP LOCKED`, so several processes can
//! run the pass and a verification in progress is never cut short.

use crate::{
    audit::{self, events, AuditEvent, Outcome},
    background::{Next, Periodic, Stop},
    error::ApiError,
    state::AppState,
};

/// Accounts deleted per transaction.
const BATCH: i64 = 100;
/// How often the pass runs.
const INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// Deletes every account unverified for longer than the TTL; returns how
/// many.
pub async fn purge_expired(state: &AppState) -> Result<u64, ApiError> {
    let ttl = state.config.unverified_account_ttl;
    let mut total = 0;
    loop {
        let now = state.clock.now();
        let mut tx = state.db.begin().await?;
        let expired =
            crate::accounts::db::lock_expired_unverified(&mut tx, now - ttl, BATCH).await?;
        for &user_id in &expired {
            crate::user_keys::shred(&mut tx, user_id).await?;
            crate::profile::db::delete_user(&mut tx, user_id).await?;
            audit::record(
                &mut tx,
                now,
                &AuditEvent::new(events::UNVERIFIED_DELETED, Outcome::Success)
                    .user(user_id)
                    .detail("ttl_hours", ttl.num_hours()),
            )
            .await?;
            // Like `DELETE /v1/me`: the retained audit rows and alerts keep
            // no IP address or user agent (accounts::owned, `Retained`).
            crate::profile::db::erase_client_details(&mut tx, user_id).await?;
        }
        tx.commit().await?;
        total += expired.len() as u64;
        if (expired.len() as i64) < BATCH {
            break;
        }
    }
    if total > 0 {
        metrics::counter!("unverified_accounts_deleted_total").increment(total);
        tracing::info!(deleted = total, "unverified accounts deleted");
    }
    Ok(total)
}

/// The background pass: runs at start and every few minutes until `stop`.
pub async fn run(state: AppState, stop: Stop) {
    Periodic::new("unverified account deletion", INTERVAL)
        .run(stop, move || {
            let state = state.clone();
            async move {
                purge_expired(&state).await?;
                Ok::<_, ApiError>(Next::Wait)
            }
        })
        .await
}
