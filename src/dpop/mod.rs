//! DPoP (RFC 9449): sessions bound to a key that never leaves the device.
//! A proof is a short JWT signed by that key for one request.
//!
//! [`verify`] is the one entry point: it reads the request's `DPoP`
//! header, checks the proof ([`proof`]: shape, `typ`, ES256 only, a public
//! P-256 `jwk`, the signature, `htm`, `htu`, `iat`, `jti`, `ath`), the
//! server nonce when `DPOP_NONCE=true` ([`nonce`]), and spends the proof
//! in the replay cache ([`replay`]). Every refusal is the same 401
//! `dpop_proof_invalid` (the reason is logged at debug level only), except
//! a missing or stale nonce: 401 `use_dpop_nonce` with a fresh nonce in
//! `DPoP-Nonce`.

pub mod db;
pub mod extract;
pub mod nonce;
pub mod proof;
pub mod replay;

pub use crate::config::{DpopConfig, DpopPolicy};

use crate::{error::ApiError, state::AppState};
use axum::http::{HeaderMap, Method};
use chrono::Duration;
use url::Url;

/// A proof that verified for this request.
#[derive(Clone, Debug)]
pub struct VerifiedProof {
    /// RFC 7638 SHA-256 thumbprint of the proof's key, base64url without padding.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

/// The request header carrying a proof.
pub const HEADER: &str = "dpop";

/// 401 `dpop_proof_invalid`: the same answer whatever check failed.
pub fn proof_invalid() -> ApiError {
    ApiError::Unauthorized {
        code: "dpop_proof_invalid",
        detail: "A valid DPoP proof for this request is required.",
    }
}

/// 401 `dpop_key_mismatch`: a valid proof, by another key than the one the
/// session is bound to.
pub fn key_mismatch() -> ApiError {
    ApiError::Unauthorized {
        code: "dpop_key_mismatch",
        detail: "The DPoP proof is signed by another key than the one this session is bound to.",
    }
}

/// 401 `dpop_required`: the policy (`DPOP_POLICY`) needs a bound session
/// and the sign-in carried no proof.
pub fn required() -> ApiError {
    ApiError::Unauthorized {
        code: "dpop_required",
        detail: "This account must sign in with a DPoP proof (a device-bound session).",
    }
}

/// 401 `use_dpop_nonce`: the proof lacks the server's current nonce; the
/// response carries one in `DPoP-Nonce` (added by [`nonce::advertise`]).
pub fn use_nonce() -> ApiError {
    ApiError::Unauthorized {
        code: "use_dpop_nonce",
        detail: "Sign the DPoP proof again with the nonce from the DPoP-Nonce header.",
    }
}

/// The `htu` a proof for `path` must name: the public base URL
/// (`PUBLIC_BASE_URL`, or the listener's URL in development) and the path.
pub fn request_url(base: &Url, path: &str) -> Option<Url> {
    let base = base.as_str().trim_end_matches('/');
    let path = path.strip_prefix('/').unwrap_or(path);
    Url::parse(&format!("{base}/{path}")).ok()
}

/// `DPOP_POLICY` at sign-in, once the credentials are proven: whether an
/// account of `role` may get a session without a proof (401
/// `dpop_required` if not). `staff` covers support and admin accounts.
pub fn check_policy(
    config: &DpopConfig,
    role: crate::accounts::roles::Role,
    proof: Option<&VerifiedProof>,
) -> Result<(), ApiError> {
    let needed = match config.policy {
        DpopPolicy::Optional => false,
        DpopPolicy::Staff => role.is_staff(),
        DpopPolicy::Required => true,
    };
    if needed && proof.is_none() {
        metrics::counter!("dpop_required_refusals_total").increment(1);
        return Err(required());
    }
    Ok(())
}

fn refuse(reason: &'static str) -> ApiError {
    tracing::debug!(reason, "dpop proof refused");
    metrics::counter!("dpop_proofs_refused_total").increment(1);
    proof_invalid()
}

/// Verifies the request's `DPoP` header, if any, for `method` and `path`
/// (the request path, no query). `access_token` = Some(token) when the
/// proof must carry `ath` (resource requests with `Authorization: DPoP`).
/// `Ok(None)` when there is no DPoP header. Consumes the jti (replay
/// cache) on success.
pub async fn verify(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    access_token: Option<&str>,
) -> Result<Option<VerifiedProof>, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(refuse("more than one DPoP header"));
    }
    if value.len() > proof::MAX_PROOF_BYTES {
        return Err(refuse("proof too large"));
    }
    let Ok(raw) = value.to_str() else {
        return Err(refuse("proof is not ASCII"));
    };
    let config = state.config.dpop;
    let Some(htu) = request_url(&state.config.public_base_url, path) else {
        return Err(refuse("request URL not formed"));
    };
    let now = state.clock.now();
    let checked = proof::check(
        raw,
        &proof::Expected {
            method: method.as_str(),
            htu: &htu,
            access_token,
            now: now.timestamp(),
            max_age_secs: config.max_age_secs,
        },
    )
    .map_err(refuse)?;
    if config.nonce {
        let fresh = checked
            .nonce
            .as_deref()
            .is_some_and(|n| nonce::is_fresh(state, n, now.timestamp()));
        if !fresh {
            tracing::debug!("dpop proof without a fresh server nonce");
            return Err(use_nonce());
        }
    }
    let ttl = Duration::seconds(config.max_age_secs + proof::FUTURE_SKEW_SECS + 1);
    if !replay::consume(state, &checked.jkt, &checked.jti, now, ttl).await? {
        return Err(refuse("proof replayed"));
    }
    Ok(Some(VerifiedProof {
        jkt: checked.jkt,
        jti: checked.jti,
        iat: checked.iat,
    }))
}
