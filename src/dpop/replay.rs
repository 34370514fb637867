//! One use per proof, across every process: a proof's `(jkt, jti)` is
//! recorded until it could no longer pass the age check, and a second
//! presentation in that time is refused.
//!
//! With `REDIS_URL` the record is a Redis key (`SET NX PX`, through the
//! rate limiter's connection, deadline and circuit breaker); without it, a
//! row of `dpop_proofs_seen` ([`super::db`]). While Redis is configured but
//! unavailable (the breaker is open, or a call fails) the check **fails
//! closed**: 503 `replay_cache_unavailable` with `Retry-After`. Falling
//! back to PostgreSQL would let a process cut off from Redis accept a
//! proof that another process already spent in Redis (a partial outage),
//! and Redis accept again what PostgreSQL saw once it is back: "once
//! across every process" would no longer hold.

use super::db;
use crate::{error::ApiError, state::AppState};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

/// The stored form of a proof's identity: SHA-256 over the length-prefixed
/// thumbprint and `jti` (so no pair can collide with another by
/// concatenation, and neither is stored in the clear).
pub fn proof_hash(jkt: &str, jti: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [jkt, jti] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// Records the proof for `ttl`; `Ok(true)` on its first use.
pub async fn consume(
    state: &AppState,
    jkt: &str,
    jti: &str,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<bool, ApiError> {
    let hash = proof_hash(jkt, jti);
    // The read-retry layer runs a request a second time after a lost
    // database connection: the proof its first run spent is this same
    // request's, not a replay (another request never shares the scope).
    if crate::request_scope::spent_by_this_request(&hash) {
        return Ok(true);
    }
    let fresh = spend(state, &hash, now, ttl).await?;
    if fresh {
        crate::request_scope::note_spent(hash);
    }
    Ok(fresh)
}

/// Records the proof in the shared store; `Ok(true)` on its first use.
async fn spend(
    state: &AppState,
    hash: &[u8; 32],
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<bool, ApiError> {
    let ttl_ms = u64::try_from(ttl.num_milliseconds()).unwrap_or(1).max(1);
    let key = format!("dpop:{}", URL_SAFE_NO_PAD.encode(hash));
    match state.limiter.redis_set_once(&key, ttl_ms).await {
        Some(Ok(fresh)) => return Ok(fresh),
        Some(Err(e)) => {
            metrics::counter!("dpop_replay_cache_unavailable_total").increment(1);
            tracing::warn!(error = %e, "dpop replay cache: redis unavailable, refusing the proof");
            return Err(ApiError::Unavailable {
                code: "replay_cache_unavailable",
                retry_after_secs: 1,
            });
        }
        None => {}
    }
    db::record_proof(&state.db, hash, now + ttl)
        .await
        .map_err(ApiError::from)
}

/// Deletes expired PostgreSQL entries (run by the session sweeper).
pub async fn purge_expired(db: &sqlx::PgPool, now: DateTime<Utc>) -> sqlx::Result<u64> {
    db::purge_expired(db, now).await
}
