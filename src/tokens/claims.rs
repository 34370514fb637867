//! The access-token claims (RFC 9068 §2.2) and issuing a token.
//!
//! The threat at issue time is a token that says more, or lives longer, than
//! intended: so the claims are a fixed struct (no free-form map a caller
//! could stuff), `exp` is always `now + ttl` from the caller's clock, and the
//! header is built here (`alg: EdDSA`, `typ: at+jwt`, the current `kid`), so
//! no caller can mint a token that our own verifier would treat differently.

use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};
use uuid::{NoContext, Timestamp, Uuid};

use super::{SigningKeys, TokenError, TOKEN_TYPE};

/// The payload of an access token. Times are seconds since the Unix epoch
/// (RFC 7519 NumericDate). Every field is required when verifying: serde
/// rejects a token missing any of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Our issuer identifier; must equal [`TokenSettings::issuer`].
    pub iss: String,
    /// The API this token is for; must equal [`TokenSettings::audience`].
    pub aud: String,
    /// The account.
    pub sub: Uuid,
    /// The session (refresh-token family), so a revoked session can be told
    /// apart from a live one before the token expires.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    /// Unique per token (UUIDv7), for audit logs and any deny-list.
    pub jti: Uuid,
    pub role: String,
    /// Authenticator assurance level (e.g. `aal1`, `aal2`).
    pub aal: String,
    /// Authentication methods (RFC 8176 values such as `pwd`, `otp`).
    pub amr: Vec<String>,
    /// When the user last actually authenticated (OIDC `auth_time`), which
    /// refreshes do not move; sensitive operations can demand a recent one.
    pub auth_time: i64,
}

/// Issuer, audience and lifetime of access tokens, from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    /// Lifetime of a token: `exp = now + ttl`. Keep it short (minutes): an
    /// access token cannot be revoked before it expires.
    pub ttl: chrono::Duration,
}

impl SigningKeys {
    /// Issues an access token signed by the current key, valid from `now` for
    /// `settings.ttl`, for account `sub` in session `sid`. `auth_time` is when
    /// the user last authenticated. Returns the compact JWS and its claims.
    // Positional arguments because the call sites (sessions, tests) already
    // name each one; a struct here would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        &self,
        settings: &TokenSettings,
        now: DateTime<Utc>,
        sub: Uuid,
        sid: Uuid,
        role: &str,
        aal: &str,
        amr: &[&str],
        auth_time: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), TokenError> {
        if settings.ttl <= TimeDelta::zero() {
            return Err(TokenError::Internal("token ttl must be positive".into()));
        }
        let exp = now
            .checked_add_signed(settings.ttl)
            .ok_or_else(|| TokenError::Internal("token expiry out of range".into()))?;
        let claims = AccessClaims {
            iss: settings.issuer.clone(),
            aud: settings.audience.clone(),
            sub,
            sid,
            iat: now.timestamp(),
            exp: exp.timestamp(),
            jti: new_jti(now)?,
            role: role.to_owned(),
            aal: aal.to_owned(),
            amr: amr.iter().map(|m| (*m).to_owned()).collect(),
            auth_time: auth_time.timestamp(),
        };

        let key = self.current();
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| TokenError::Internal(format!("signing an access token failed: {e}")))?;
        Ok((token, claims))
    }
}

/// A UUIDv7 whose timestamp is the caller's `now` (not the system clock, so
/// tokens minted under a manual clock are consistent), with 74 random bits
/// for uniqueness.
fn new_jti(now: DateTime<Utc>) -> Result<Uuid, TokenError> {
    let secs = u64::try_from(now.timestamp())
        .map_err(|_| TokenError::Internal("clock before the Unix epoch".into()))?;
    // chrono reports a leap second as nanos past 1e9; fold it into the second.
    let nanos = now.timestamp_subsec_nanos().min(999_999_999);
    let ts = Timestamp::from_unix(NoContext, secs, nanos);
    Ok(Uuid::new_v7(ts))
}
