//! Multi-factor authentication: TOTP (RFC 6238) with single-use recovery
//! codes, the second step of sign-in, and step-up for sensitive actions.
//!
//! Every code check goes through [`verify_factor`], which applies the same
//! three rules whatever the entry point: a per-user progressive throttle
//! (after five wrong codes, each further one waits twice as long, across
//! challenges, so a stolen password cannot grind through codes), replay
//! protection (a time step is accepted once, atomically), and audit.

pub mod challenge;
pub mod db;
pub mod recovery;
pub mod routes;
pub mod totp;

use crate::{crypto::Aad, error::ApiError, state::AppState};
use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Wrong codes allowed before the throttle starts.
const FREE_FAILURES: i32 = 5;
const THROTTLE_BASE_SECS: i64 = 15;
const THROTTLE_MAX_SECS: i64 = 15 * 60;

/// Which secret a TOTP code is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secret {
    Active,
    /// The one being enrolled, not yet confirmed.
    Pending,
}

/// A second factor as presented.
pub enum Factor<'a> {
    Totp(&'a str, Secret),
    RecoveryCode(&'a str),
}

impl Factor<'_> {
    pub fn method(&self) -> &'static str {
        match self {
            Self::Totp(..) => "totp",
            Self::RecoveryCode(_) => "recovery_code",
        }
    }

    /// The `amr` value (RFC 8176 `otp`; `rec` for a recovery code).
    pub fn amr(&self) -> &'static str {
        match self {
            Self::Totp(..) => "otp",
            Self::RecoveryCode(_) => "rec",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum FactorFailure {
    /// Wrong, replayed, used or unknown: one answer for all.
    Invalid,
    /// Too many recent failures: retry after this many seconds.
    Throttled(u64),
}

impl FactorFailure {
    pub fn into_error(self, status_401: bool) -> ApiError {
        match self {
            Self::Throttled(secs) => ApiError::RateLimited {
                retry_after_secs: secs,
            },
            Self::Invalid if status_401 => ApiError::Unauthorized {
                code: "invalid_code",
                detail: "The code is wrong or was already used.",
            },
            Self::Invalid => ApiError::Forbidden {
                code: "invalid_code",
                detail: "The code is wrong or was already used.",
            },
        }
    }
}

pub fn secret_aad(user_id: Uuid, which: Secret) -> Aad<'static> {
    Aad {
        table: "mfa_totp",
        column: match which {
            Secret::Active => "secret",
            Secret::Pending => "pending_secret",
        },
        row_id: user_id,
    }
}

/// Delay after the `failures`-th consecutive wrong code.
pub fn throttle_after(failures: i32) -> Option<Duration> {
    (failures >= FREE_FAILURES).then(|| {
        let doublings = (failures - FREE_FAILURES).clamp(0, 20) as u32;
        Duration::seconds(
            THROTTLE_BASE_SECS
                .saturating_mul(1 << doublings)
                .min(THROTTLE_MAX_SECS),
        )
    })
}

/// Checks a factor in the caller's transaction. A failure is recorded
/// (throttle) in that transaction too, so the caller must commit even when
/// it then refuses the request.
pub async fn verify_factor(
    conn: &mut PgConnection,
    state: &AppState,
    user_id: Uuid,
    factor: &Factor<'_>,
) -> Result<Result<(), FactorFailure>, ApiError> {
    let now = state.clock.now();
    let Some(row) = db::lock_totp(conn, user_id).await? else {
        return Ok(Err(FactorFailure::Invalid));
    };
    if let Some(until) = row.throttled_until.filter(|u| *u > now) {
        return Ok(Err(FactorFailure::Throttled(
            (until - now).num_seconds().max(1) as u64,
        )));
    }
    let ok = match factor {
        Factor::Totp(code, which) => {
            let sealed = match which {
                Secret::Active => row.secret_ciphertext.as_deref(),
                Secret::Pending => row.pending_secret_ciphertext.as_deref(),
            };
            match sealed {
                None => false,
                Some(sealed) => {
                    let key =
                        crate::user_keys::UserKey::load(conn, &state.keys.data, user_id).await?;
                    let secret = key.open(&secret_aad(user_id, *which), sealed)?;
                    match totp::matching_step(&secret, unix(now), code) {
                        // The step must be newer than any accepted before: replay-proof.
                        Some(step) => db::advance_step(conn, user_id, step as i64).await?,
                        None => false,
                    }
                }
            }
        }
        Factor::RecoveryCode(code) => match recovery::normalize(code) {
            Some(normalized) if row.secret_ciphertext.is_some() => {
                let candidates = recovery::candidates(&state.keys, user_id, &normalized);
                db::consume_recovery_code(conn, user_id, &candidates, now).await?
            }
            _ => false,
        },
    };
    if ok {
        db::reset_failures(conn, user_id).await?;
        metrics::counter!("mfa_verifications_total", "method" => factor.method(), "outcome" => "success").increment(1);
        Ok(Ok(()))
    } else {
        let until = throttle_after(row.failed_attempts + 1).map(|d| now + d);
        db::record_failure(conn, user_id, until).await?;
        metrics::counter!("mfa_verifications_total", "method" => factor.method(), "outcome" => "failure").increment(1);
        Ok(Err(FactorFailure::Invalid))
    }
}

fn unix(t: DateTime<Utc>) -> u64 {
    t.timestamp().max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_starts_after_five_failures_and_doubles_to_a_cap() {
        assert_eq!(throttle_after(4), None);
        assert_eq!(throttle_after(5), Some(Duration::seconds(15)));
        assert_eq!(throttle_after(6), Some(Duration::seconds(30)));
        assert_eq!(throttle_after(10), Some(Duration::seconds(480)));
        assert_eq!(throttle_after(40), Some(Duration::seconds(900)));
    }
}
