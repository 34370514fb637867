//! The successor of a refresh token: 256 random bits, and where it is kept
//! while a retry may still need it.
//!
//! A successor is not derived from anything. (It used to be an HMAC of the
//! session and the parent token under `CODE_HMAC_KEY`: whoever held that key
//! and any token the session ever issued, say an old one in a log or a
//! device backup, could compute every later token, the live one included,
//! and refresh with it without tripping reuse detection.)
//!
//! A retired token presented again while its successor has never been used
//! (the answer was lost: the app was suspended or killed mid-refresh) must
//! get the *same* successor. So, until the successor's first use, the
//! parent's row keeps the successor sealed (AES-256-GCM under the master
//! data key ring, [`crate::crypto::aead`]) with associated data naming the
//! table, the column, the session and the parent row: a sealed successor
//! copied to another row or session does not open. It is cleared (set to
//! NULL) when the successor is first used ([`super::db::retire_token`]) and
//! when the session is revoked ([`super::db::revoke_session`],
//! [`super::db::revoke_all_sessions`]); [`run_sweeper`] clears those of
//! sessions that expired (idle or absolute lifetime). So a copy of the
//! database holds, per live session, at most one sealed token: the live
//! one, which only the master data key opens.

use crate::{
    crypto::{aead, random, Aad, CryptoError, KeyRing},
    state::AppState,
};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Bytes of randomness in every refresh token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// How often [`run_sweeper`] clears the sealed successors of expired
/// sessions (revocation clears them at once; this is for expiry).
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A fresh refresh token from the OS CSPRNG, base64url (43 characters).
pub fn new_token() -> String {
    random::token(TOKEN_BYTES)
}

/// The binding: `refresh_tokens.successor` of the parent's row, with the
/// session's id carried in the column label (every field of the
/// associated data is length-prefixed, so this label cannot be confused
/// with any other table or column).
fn column(session_id: Uuid) -> String {
    format!("successor/session={session_id}")
}

/// Seals `successor` for storage in its parent's row.
pub fn seal(
    ring: &KeyRing,
    session_id: Uuid,
    parent_id: Uuid,
    successor: &str,
) -> Result<Vec<u8>, CryptoError> {
    let column = column(session_id);
    aead::seal_str(
        ring,
        &Aad::new("refresh_tokens", &column, parent_id),
        successor,
    )
}

/// Opens a successor sealed by [`seal`] for the same session and parent.
pub fn open(
    ring: &KeyRing,
    session_id: Uuid,
    parent_id: Uuid,
    sealed: &[u8],
) -> Result<Zeroizing<String>, CryptoError> {
    let column = column(session_id);
    aead::open_string(
        ring,
        &Aad::new("refresh_tokens", &column, parent_id),
        sealed,
    )
}

/// Clears every sealed successor whose session can no longer refresh at
/// `now`: revoked, idle-expired or past its absolute lifetime (no retry
/// can use it any more), and removes the push registrations made through
/// such sessions; returns how many successors were cleared.
pub async fn clear_expired(db: &PgPool, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let cleared = sqlx::query!(
        r#"UPDATE refresh_tokens rt SET successor_ciphertext = NULL
           FROM sessions s
           WHERE rt.successor_ciphertext IS NOT NULL AND s.session_id = rt.session_id
             AND (s.revoked_at IS NOT NULL OR s.idle_expires_at <= $1
                  OR s.absolute_expires_at <= $1)"#,
        now,
    )
    .execute(db)
    .await?;
    // A push registration ends with the session that made it, however the
    // session ends: revoked sessions drop theirs at once (in the revoking
    // transaction), and here go those of sessions that simply expired.
    let devices = sqlx::query!(
        r#"DELETE FROM devices d
           USING sessions s
           WHERE d.session_id = s.session_id
             AND (s.revoked_at IS NOT NULL OR s.idle_expires_at <= $1
                  OR s.absolute_expires_at <= $1)"#,
        now,
    )
    .execute(db)
    .await?;
    if devices.rows_affected() > 0 {
        metrics::counter!("devices_removed_with_sessions_total").increment(devices.rows_affected());
    }
    Ok(cleared.rows_affected())
}

/// Clears expired sealed successors (and expired entries of the DPoP
/// replay cache) every [`SWEEP_INTERVAL`] until `stop`.
pub async fn run_sweeper(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let now = state.clock.now();
        match clear_expired(&state.db, now).await {
            Ok(n) if n > 0 => {
                metrics::counter!("refresh_successors_cleared_total").increment(n);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "clearing sealed refresh successors failed"),
        }
        // The PostgreSQL DPoP replay cache expires with the proof window.
        if let Err(e) = crate::dpop::replay::purge_expired(&state.db, now).await {
            tracing::warn!(error = %e, "purging the DPoP replay cache failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_random_bits() {
        let a = new_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_token());
    }

    #[test]
    fn a_sealed_successor_opens_only_for_its_session_and_parent() {
        let ring = KeyRing::generate_single(1);
        let (session, parent) = (Uuid::now_v7(), Uuid::now_v7());
        let token = new_token();
        let sealed = seal(&ring, session, parent, &token).unwrap();
        assert!(!sealed.windows(token.len()).any(|w| w == token.as_bytes()));
        assert_eq!(&**open(&ring, session, parent, &sealed).unwrap(), &token);
        assert_eq!(
            open(&ring, Uuid::now_v7(), parent, &sealed).unwrap_err(),
            CryptoError::Decrypt
        );
        assert_eq!(
            open(&ring, session, Uuid::now_v7(), &sealed).unwrap_err(),
            CryptoError::Decrypt
        );
        let other = KeyRing::generate_single(1);
        assert!(open(&other, session, parent, &sealed).is_err());
    }
}
