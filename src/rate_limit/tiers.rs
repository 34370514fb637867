//! Rate-limit tiers: the tier in force for a user, the one way to change
//! it (shared by `PUT /v1/admin/users/{id}/rate-limit-tier` and an approved
//! rate-limit request), and the background pass that ends granted tiers
//! whose time is up and keeps the 429 evidence table current.
//!
//! A tier may carry an expiry (`users.rate_limit_tier_expires_at`). The
//! limiter treats an expired tier as `standard` at once ([`in_force`]);
//! the pass ([`expire_due`]) then writes `standard` back and audits it as
//! `rate_limit.tier.expired`, so the stored tier never lies for long.

use super::policy::Tier;
use crate::{
    audit::{self, events, AuditEvent, Outcome},
    background::{Next, Periodic, Stop},
    error::ApiError,
    state::AppState,
};
use chrono::{DateTime, Days, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// How often the background pass runs.
const INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Accounts whose tier ends, per transaction.
const BATCH: i64 = 100;
/// Days before today whose 429 counts are kept: with today, 31 days
/// (staff see the last 30).
const REFUSALS_KEPT_DAYS: u64 = 30;

/// A user's tier as the limiter applies it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierInForce {
    pub tier: Tier,
    /// When it returns to `standard`; `None`: it does not expire.
    pub expires_at: Option<DateTime<Utc>>,
}

impl TierInForce {
    pub fn from_row(tier: &str, expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Self {
        match expires_at {
            Some(at) if at <= now => Self {
                tier: Tier::Standard,
                expires_at: None,
            },
            _ => Self {
                tier: Tier::parse(tier),
                expires_at,
            },
        }
    }
}

/// The tier in force for `user_id` at `now` (`None`: no such user).
pub async fn in_force(
    conn: &mut PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<TierInForce>> {
    let row = sqlx::query!(
        "SELECT rate_limit_tier, rate_limit_tier_expires_at FROM users WHERE user_id = $1",
        user_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| TierInForce::from_row(&r.rate_limit_tier, r.rate_limit_tier_expires_at, now)))
}

/// A tier change as it was made.
#[derive(Clone, Copy, Debug)]
pub struct TierChange {
    /// The tier in force before the change.
    pub from: Tier,
    pub to: Tier,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Sets `user_id`'s tier, until `expires_at` or for good (`standard` never
/// expires), replacing any earlier expiry, and audits it as
/// `admin.user.rate_limit_tier_changed` (details `from`, `to`,
/// `expires_at`) with what `event` already holds (actor, session, client,
/// further details), all in the caller's transaction. `None` when there is
/// no such user. The row is locked until the transaction ends.
pub async fn set(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    user_id: Uuid,
    tier: Tier,
    expires_at: Option<DateTime<Utc>>,
    event: AuditEvent,
) -> Result<Option<TierChange>, ApiError> {
    let expires_at = expires_at.filter(|_| tier != Tier::Standard);
    let previous = sqlx::query!(
        r#"UPDATE users u SET rate_limit_tier = $2, rate_limit_tier_expires_at = $3, updated_at = $4
           FROM (SELECT rate_limit_tier, rate_limit_tier_expires_at FROM users
                 WHERE user_id = $1 FOR UPDATE) old
           WHERE u.user_id = $1
           RETURNING old.rate_limit_tier, old.rate_limit_tier_expires_at"#,
        user_id,
        tier.as_str(),
        expires_at,
        now,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(previous) = previous else {
        return Ok(None);
    };
    let from = TierInForce::from_row(
        &previous.rate_limit_tier,
        previous.rate_limit_tier_expires_at,
        now,
    )
    .tier;
    audit::record(
        &mut *conn,
        now,
        &event
            .user(user_id)
            .detail("from", from.as_str())
            .detail("to", tier.as_str())
            .detail(
                "expires_at",
                expires_at.map(|t| crate::clock::rfc3339_millis(&t)),
            ),
    )
    .await?;
    Ok(Some(TierChange {
        from,
        to: tier,
        expires_at,
    }))
}

/// The audit event of a tier change by an administrator, before
/// [`set`] adds the target and the change.
pub fn change_event() -> AuditEvent {
    AuditEvent::new(events::ADMIN_RATE_LIMIT_TIER_CHANGED, Outcome::Success)
}

/// 403 `own_account`: an administrator never raises their own limits,
/// neither directly nor by approving their own request (another
/// administrator must), so one account alone cannot grant itself more.
pub fn own_account() -> ApiError {
    ApiError::Forbidden {
        code: "own_account",
        detail: "Administrators cannot change their own rate-limit tier or decide their own request: another administrator must.",
    }
}

/// Audits (on its own, committed at once) an administrator's refused
/// attempt on their own tier; `event` holds the actor, session, client and
/// any details. Returns the error to answer.
pub async fn refuse_own_account(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    event: AuditEvent,
) -> Result<ApiError, ApiError> {
    audit::record(conn, now, &event.detail("reason", "own_account")).await?;
    Ok(own_account())
}

/// Puts every tier whose expiry has passed back to `standard`, each
/// audited as `rate_limit.tier.expired` (no actor: the service did it);
/// returns how many. Rows are taken with `FOR UPDATE SKIP LOCKED`, so
/// several processes may run the pass.
pub async fn expire_due(state: &AppState) -> Result<u64, ApiError> {
    let mut total = 0;
    loop {
        let now = state.clock.now();
        let mut tx = state.db.begin().await?;
        let due = sqlx::query!(
            r#"SELECT user_id, rate_limit_tier, rate_limit_tier_expires_at AS "expires_at!"
               FROM users WHERE rate_limit_tier_expires_at <= $1
               ORDER BY rate_limit_tier_expires_at LIMIT $2
               FOR UPDATE SKIP LOCKED"#,
            now,
            BATCH,
        )
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<Uuid> = due.iter().map(|r| r.user_id).collect();
        sqlx::query!(
            r#"UPDATE users SET rate_limit_tier = 'standard', rate_limit_tier_expires_at = NULL, updated_at = $2
               WHERE user_id = ANY($1)"#,
            &ids,
            now,
        )
        .execute(&mut *tx)
        .await?;
        for r in &due {
            audit::record(
                &mut tx,
                now,
                &AuditEvent::new(events::RATE_LIMIT_TIER_EXPIRED, Outcome::Success)
                    .user(r.user_id)
                    .detail("from", r.rate_limit_tier.clone())
                    .detail("expired_at", crate::clock::rfc3339_millis(&r.expires_at)),
            )
            .await?;
        }
        tx.commit().await?;
        total += due.len() as u64;
        if (due.len() as i64) < BATCH {
            break;
        }
    }
    if total > 0 {
        metrics::counter!("rate_limit_tiers_expired_total").increment(total);
        tracing::info!(expired = total, "rate-limit tiers expired");
    }
    Ok(total)
}

/// Writes the 429 counts held in this process, and deletes counts older
/// than the staff view needs.
pub async fn flush_refusals(state: &AppState) -> Result<(), ApiError> {
    let today = state.clock.now().date_naive();
    state.refusals.flush(&state.db, today).await?;
    let oldest = today
        .checked_sub_days(Days::new(REFUSALS_KEPT_DAYS))
        .unwrap_or(today);
    sqlx::query!(
        "DELETE FROM rate_limit_refusals WHERE refused_on < $1",
        oldest
    )
    .execute(&state.db)
    .await?;
    Ok(())
}

/// The background pass: at start and every 30 seconds until `stop`, ends
/// expired tiers and writes the 429 counts; a last flush on the way out.
pub async fn run(state: AppState, stop: Stop) {
    let pass_state = state.clone();
    Periodic::new("rate-limit tiers and 429 counts", INTERVAL)
        .run(stop, move || {
            let state = pass_state.clone();
            async move {
                let expired = expire_due(&state).await;
                flush_refusals(&state).await?;
                expired?;
                Ok::<_, ApiError>(Next::Wait)
            }
        })
        .await;
    if let Err(e) = flush_refusals(&state).await {
        tracing::warn!(task = "rate-limit tiers and 429 counts", error = ?e, "writing the 429 counts at shutdown failed");
    }
}
