//! Issuing an access token.
//!
//! The threat at issue time is a token that says more, or lives longer, than
//! intended: so the claims are a fixed struct (no free-form map a caller
//! could stuff), `exp` is always `now + ttl` from the caller's clock, and the
//! header is built here (`alg: EdDSA`, `typ: at+jwt`, the current `kid`), so
//! no caller can mint a token that our own verifier would treat differently.

use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, Header};
use uuid::{NoContext, Timestamp, Uuid};

use super::{AccessClaims, SigningKeys, TokenError, TokenSettings, TOKEN_TYPE};

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
        self.issue_bound(settings, now, sub, sid, role, aal, amr, auth_time, None)
    }

    /// As [`Self::issue`], for a session bound to a device key: `cnf_jkt`
    /// is the key's thumbprint, carried as `cnf.jkt` (RFC 9449 §6.1).
    #[allow(clippy::too_many_arguments)]
    pub fn issue_bound(
        &self,
        settings: &TokenSettings,
        now: DateTime<Utc>,
        sub: Uuid,
        sid: Uuid,
        role: &str,
        aal: &str,
        amr: &[&str],
        auth_time: DateTime<Utc>,
        cnf_jkt: Option<&str>,
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
            cnf: cnf_jkt.map(|jkt| super::Confirmation {
                jkt: jkt.to_owned(),
            }),
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
