//! App attestation: proof that a sign-in comes from the genuine app on a
//! genuine device (Apple App Attest, Google Play Integrity), bound to the
//! device key of a DPoP-bound session.
//!
//! The flow (docs/mobile.md shows the app's side):
//!
//! 1. `POST /v1/attestation/challenge` hands out a single-use random
//!    challenge, valid for five minutes (only its SHA-256 is stored).
//! 2. The app attests with the platform, over
//!    `SHA-256(challenge ‖ thumbprint)`, the thumbprint being the RFC 7638
//!    thumbprint of its DPoP key (both as ASCII text): the attestation
//!    names the very key that will sign the app's DPoP proofs.
//! 3. `POST /v1/attestation/apple` or `/android` carries the attestation
//!    and a DPoP proof by that key. The challenge is taken (deleted) first,
//!    so a challenge serves one attempt; the platform verifier
//!    ([`apple`], [`play`]) checks the rest; a pass records the key's
//!    thumbprint in `attested_keys`.
//! 4. A sign-in (or sign-up) whose DPoP proof is made with an attested key
//!    makes an attested session ([`check_sign_in`]). `ATTESTATION_POLICY`
//!    says what happens otherwise: nothing (`off`), an
//!    `attestation_missing` alert (`report`) or 403 `attestation_required`
//!    (`require`).
//!
//! Every refusal of an attestation is the same 403 `attestation_invalid`;
//! the reason is logged and audited, never sent, so a forger learns nothing
//! about which check failed.

pub mod apple;
pub mod challenge;
pub mod db;
pub mod play;
pub mod routes;
pub mod verifiers;

pub use challenge::{challenge_hash, client_data_hash};
pub use verifiers::{PlayVerifier, Verifiers};

use crate::{
    alerts::{self, Alert, Rule},
    config::AttestationPolicy,
    error::ApiError,
    http::extract::ClientInfo,
    state::AppState,
};

/// How long a challenge may be answered.
pub const CHALLENGE_TTL_SECS: i64 = 300;

/// An attested key unused by any sign-in for this long is forgotten; the
/// app attests again (App Attest keys survive app updates, not reinstalls).
pub const ATTESTED_KEY_UNUSED_DAYS: i64 = 180;

/// Applies `ATTESTATION_POLICY` to a sign-up or sign-in request, before
/// any credential or account is looked at (so an unattested client learns
/// nothing, not even whether a password was right), and answers whether
/// its DPoP key (`proof`; `None`: no proof came) is attested. `action`
/// names the flow in the alert.
pub async fn gate(
    state: &AppState,
    proof: Option<&crate::dpop::VerifiedProof>,
    client: &ClientInfo,
    action: &'static str,
) -> Result<bool, ApiError> {
    let policy = state.config.attestation.policy;
    if policy == AttestationPolicy::Off && !has_attestations(state) {
        return Ok(false);
    }
    let mut conn = state.db.acquire().await?;
    let attested = match proof {
        Some(p) => db::use_attested_key(&mut conn, &p.jkt, state.clock.now())
            .await?
            .is_some(),
        None => false,
    };
    if attested {
        return Ok(true);
    }
    match policy {
        AttestationPolicy::Off => Ok(false),
        AttestationPolicy::Report => {
            let alert = Alert::new(Rule::AttestationMissing)
                .ip(client.ip)
                .detail("action", action)
                .detail("dpop_bound", proof.is_some());
            alerts::raise(&mut conn, state, alert).await?;
            Ok(false)
        }
        AttestationPolicy::Require => Err(attestation_required()),
    }
}

/// Whether any platform is configured, so an attested key can exist.
fn has_attestations(state: &AppState) -> bool {
    state.config.attestation.apple.is_some() || state.config.attestation.play.is_some()
}

pub fn attestation_required() -> ApiError {
    ApiError::Forbidden {
        code: "attestation_required",
        detail: "This app must attest its device key before signing in: request a challenge, \
                 attest, then sign in with DPoP proofs made by the attested key.",
    }
}

pub fn attestation_invalid() -> ApiError {
    ApiError::Forbidden {
        code: "attestation_invalid",
        detail: "The attestation could not be verified.",
    }
}

/// Removes expired challenges and keys unused for
/// [`ATTESTED_KEY_UNUSED_DAYS`], hourly, until `stop`.
pub async fn run_sweeper(state: AppState, stop: crate::background::Stop) {
    crate::background::Periodic::new("attestation sweep", std::time::Duration::from_secs(3600))
        .run(stop, || sweep(&state))
        .await;
}

/// One pass of [`run_sweeper`].
pub async fn sweep(state: &AppState) -> sqlx::Result<crate::background::Next> {
    let now = state.clock.now();
    let mut conn = state.db.acquire().await?;
    db::delete_expired_challenges(&mut conn, now).await?;
    db::delete_unused_keys(
        &mut conn,
        now - chrono::Duration::days(ATTESTED_KEY_UNUSED_DAYS),
    )
    .await?;
    Ok(crate::background::Next::Wait)
}
