//! Refresh-token rotation, lost responses and reuse detection.
//!
//! * Every refresh retires the presented token and answers with its
//!   successor: 256 fresh random bits, derived from nothing, so no key and
//!   no old token predicts it. Tokens are stored as SHA-256 hashes.
//! * A retired token whose successor has **never been used** gets the
//!   *same* successor again (and a fresh access token), however much later,
//!   as long as the session is live (not revoked, within its idle and
//!   absolute lifetimes): a phone whose response was lost because the app
//!   was suspended or killed mid-refresh, or that refreshed twice at once,
//!   stays signed in. Until the successor's first use, the retired token's
//!   row keeps the successor sealed under the master data key ring
//!   ([`super::successor`]).
//! * A retired token whose successor *has* been used is reuse (a stolen
//!   token raced its owner): the whole session is revoked, audited, an
//!   alert is raised, and every token of it answers `refresh_token_reused`.
//!
//! The token row and its session are locked (`FOR UPDATE`) for the whole
//! transaction, so concurrent refreshes of one token are serialised and all
//! end holding the same successor.

use super::{db, issue_pair, AccessGrant, TokenPair};
use crate::{
    accounts::Status,
    alerts::device::Install,
    audit::{self, events, AuditEvent, Outcome},
    crypto::hash,
    error::ApiError,
    http::extract::ClientInfo,
    state::AppState,
};
use sqlx::types::ipnetwork::IpNetwork;

/// Why a refresh failed; each is a stable `code` so an app can tell
/// "sign the user out" from "retry".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshFailure {
    Invalid,
    Reused,
    Revoked,
    ExpiredIdle,
    ExpiredAbsolute,
}

impl RefreshFailure {
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "refresh_token_invalid",
            Self::Reused => "refresh_token_reused",
            Self::Revoked => "session_revoked",
            Self::ExpiredIdle => "session_expired_idle",
            Self::ExpiredAbsolute => "session_expired_absolute",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Self::Invalid => "The refresh token is not valid. Sign in again.",
            Self::Reused => "This refresh token was already used; the session was ended to protect the account. Sign in again.",
            Self::Revoked => "The session was ended. Sign in again.",
            Self::ExpiredIdle => "The session expired after a period of inactivity. Sign in again.",
            Self::ExpiredAbsolute => "The session reached its maximum lifetime. Sign in again.",
        }
    }

    pub fn into_error(self) -> ApiError {
        ApiError::Unauthorized {
            code: self.code(),
            detail: self.detail(),
        }
    }
}

/// The reason stored on a session revoked for reuse.
pub const REUSE_REASON: &str = "refresh_token_reused";

/// Rotates `presented`. `proof` is the request's verified DPoP proof: a
/// session bound to a device key refreshes only with a proof by that key,
/// checked before anything changes (so neither a missing proof nor another
/// key rotates the token, answers a lost-answer retry, or counts as reuse).
/// An unbound session refreshed with a proof stays unbound: a session is
/// bound at sign-in or never.
pub async fn refresh(
    state: &AppState,
    client: &ClientInfo,
    presented: &str,
    proof: Option<&crate::dpop::VerifiedProof>,
) -> Result<TokenPair, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let Some(row) = db::lock_refresh_token(&mut tx, &hash::hash_token(presented)).await? else {
        return Err(fail(state, client, None, RefreshFailure::Invalid).await);
    };
    let failure = if row.revoked_at.is_some() {
        Some(if row.revoked_reason.as_deref() == Some(REUSE_REASON) {
            RefreshFailure::Reused
        } else {
            RefreshFailure::Revoked
        })
    } else if row.status != Status::Active {
        Some(RefreshFailure::Revoked)
    } else if now >= row.absolute_expires_at {
        Some(RefreshFailure::ExpiredAbsolute)
    } else if now >= row.idle_expires_at {
        Some(RefreshFailure::ExpiredIdle)
    } else {
        None
    };
    if let Some(f) = failure {
        drop(tx);
        return Err(fail(state, client, Some(&row), f).await);
    }
    if let Some(bound) = row.dpop_jkt.as_deref() {
        let refused = match proof {
            None => Some(crate::dpop::proof_invalid()),
            Some(p) if !hash::constant_time_eq(p.jkt.as_bytes(), bound.as_bytes()) => {
                Some(crate::dpop::key_mismatch())
            }
            Some(_) => None,
        };
        if let Some(error) = refused {
            drop(tx);
            return Err(fail_with(state, client, Some(&row), error).await);
        }
    } else if let Err(error) = crate::dpop::check_policy(&state.config.dpop, row.role, None) {
        // An unbound session that DPOP_POLICY now covers (from before the
        // policy, or of an account promoted to staff) gets no new tokens;
        // nothing is revoked: the app signs in again with a proof.
        drop(tx);
        return Err(fail_with(state, client, Some(&row), error).await);
    }

    let successor = match (row.used_at, row.successor_ciphertext.as_deref()) {
        (None, _) => {
            let successor = super::successor::new_token();
            let sealed = super::successor::seal(
                &state.keys.data,
                row.session_id,
                row.refresh_token_id,
                &successor,
            )?;
            db::retire_token(&mut tx, row.refresh_token_id, now, &sealed).await?;
            db::insert_refresh_token(
                &mut tx,
                row.session_id,
                &hash::hash_token(&successor),
                Some(row.refresh_token_id),
                now,
            )
            .await?;
            successor
        }
        (Some(used_at), sealed) => {
            // The sealed successor is kept until the successor's first use
            // (or the session's end, or a change to what it may do):
            // without it, no retry. A retry must come from the device that
            // signed in: a session bound to an install id gets its lost
            // answer only when that install asks again. A copy of the
            // retired token used elsewhere (a backup, a log, another
            // phone) is reuse.
            let same_device = match row.install_id_index.as_deref() {
                None => true,
                Some(signed_in) => client.install_id.is_some_and(|id| {
                    !super::install_id_differs(state, id, row.install_id_index_key_id, signed_in)
                }),
            };
            let retry_ok = sealed.is_some()
                && same_device
                && db::successor_used(&mut tx, row.refresh_token_id).await? == Some(false);
            if let Some(sealed) = sealed.filter(|_| retry_ok) {
                super::successor::open(
                    &state.keys.data,
                    row.session_id,
                    row.refresh_token_id,
                    sealed,
                )?
                .to_string()
            } else {
                db::revoke_session(&mut tx, row.user_id, row.session_id, now, REUSE_REASON).await?;
                audit::record(
                    &mut tx,
                    now,
                    &AuditEvent::new(events::REFRESH_REUSE_DETECTED, Outcome::Denied)
                        .user(row.user_id)
                        .session(row.session_id)
                        .client(client)
                        .detail("seconds_since_use", (now - used_at).num_seconds()),
                )
                .await?;
                crate::alerts::rules::refresh_token_reuse(
                    &mut tx,
                    state,
                    row.user_id,
                    row.session_id,
                    client.ip,
                )
                .await?;
                tx.commit().await?;
                metrics::counter!("auth_refresh_total", "outcome" => "reuse_detected").increment(1);
                tracing::warn!(session_id = %row.session_id, "refresh token reuse detected; session revoked");
                return Err(RefreshFailure::Reused.into_error());
            }
        }
    };
    // Device fingerprint drift (the rule is alerts::device): another
    // platform or app install than the one that signed in.
    crate::alerts::device::device_drift(
        &mut tx,
        state,
        &crate::alerts::device::RefreshDevice {
            user_id: row.user_id,
            session_id: row.session_id,
            ip: client.ip,
            signed_in_platform: row.platform.as_deref(),
            refreshing_platform: client
                .client
                .as_ref()
                .map(|c| super::platform_str(c.platform)),
            // A session bound to an install id must keep presenting it
            // (compared under the index key it was bound with).
            install: row
                .install_id_index
                .as_deref()
                .map(|signed_in| match client.install_id {
                    None => Install::Missing,
                    Some(id)
                        if super::install_id_differs(
                            state,
                            id,
                            row.install_id_index_key_id,
                            signed_in,
                        ) =>
                    {
                        Install::Different
                    }
                    Some(_) => Install::Same,
                }),
        },
    )
    .await?;
    // A retry delivers the answer that was lost; it does not count as
    // activity, so retries alone cannot keep an abandoned session alive.
    let idle = if row.used_at.is_some() {
        row.idle_expires_at
    } else {
        (now + state.config.auth.refresh_idle_ttl).min(row.absolute_expires_at)
    };
    db::touch_session(
        &mut tx,
        row.session_id,
        now,
        idle,
        IpNetwork::from(client.ip),
        client.user_agent.as_deref(),
    )
    .await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::REFRESH_ROTATED, Outcome::Success)
            .user(row.user_id)
            .session(row.session_id)
            .client(client)
            .detail("retry", row.used_at.is_some()),
    )
    .await?;
    let pair = issue_pair(
        state,
        now,
        &AccessGrant {
            user_id: row.user_id,
            session_id: row.session_id,
            role: row.role,
            aal: row.aal,
            amr: &row.amr,
            auth_time: row.auth_time,
            idle_expires_at: idle,
            dpop_jkt: row.dpop_jkt.as_deref(),
        },
        successor,
    )?;
    tx.commit().await?;
    metrics::counter!("auth_refresh_total", "outcome" => "rotated").increment(1);
    Ok(pair)
}

/// Audits a refused refresh (in its own short transaction) and returns the error.
async fn fail(
    state: &AppState,
    client: &ClientInfo,
    row: Option<&db::RefreshRow>,
    failure: RefreshFailure,
) -> ApiError {
    fail_with(state, client, row, failure.into_error()).await
}

/// [`fail`] for any refusal (a DPoP one too): audited with its code.
async fn fail_with(
    state: &AppState,
    client: &ClientInfo,
    row: Option<&db::RefreshRow>,
    error: ApiError,
) -> ApiError {
    let code = error.code();
    let mut event = AuditEvent::new(events::REFRESH_FAILED, Outcome::Failure)
        .client(client)
        .detail("reason", code);
    if let Some(row) = row {
        event = event.user(row.user_id).session(row.session_id);
    }
    let recorded = async {
        let mut conn = state.db.acquire().await?;
        audit::record(&mut conn, state.clock.now(), &event).await
    }
    .await;
    metrics::counter!("auth_refresh_total", "outcome" => code).increment(1);
    match recorded {
        Ok(_) => error,
        Err(e) => ApiError::from(e),
    }
}
