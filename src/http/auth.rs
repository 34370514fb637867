//! `AuthUser`: the extractor that makes a handler authenticated.
//!
//! A handler that takes `AuthUser` can only run for a valid access token
//! (signature, algorithm, type, key id, issuer, audience and expiry, see
//! `tokens`) whose session is still live and whose account is active: the
//! session check on every request is what makes logout, logout-everywhere,
//! reuse detection and locking take effect at once rather than when the
//! token expires. No handler reads a token itself.

use crate::crypto::hash::constant_time_eq;
use crate::{
    accounts::roles::{Aal, Role},
    audit::{self, events, AuditEvent, Outcome},
    error::ApiError,
    http::extract::ClientInfo,
    sessions::db::{self, RequestContext},
    state::AppState,
    tokens::AccessClaims,
};
use axum::{
    extract::FromRequestParts,
    http::{request::Parts, HeaderMap, Method},
};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// The current role, read from the database (not trusted from the token).
    pub role: Role,
    /// `aal1` (password) or `aal2` (second factor), read from the session,
    /// so an upgrade (MFA confirmed in this session) applies at once.
    pub aal: Aal,
    /// Whether the account has a second factor.
    pub mfa_enabled: bool,
    /// When the person last proved a credential in this session.
    pub auth_time: chrono::DateTime<chrono::Utc>,
    /// The user's data key as stored (wrapped by the master key), read in
    /// the same query as the session, so a handler opens it with
    /// [`crate::user_keys::UserKey::of`] without a query of its own.
    pub wrapped_key: Option<WrappedKey>,
    /// Everything read about the caller for this request (the caller's
    /// `users` row included), for a handler that can answer from it.
    pub caller: Arc<Authentication>,
}

/// A user's wrapped data key, as read with the session. Ciphertext under
/// the master key: unwrapping it is the handler's decision.
#[derive(Clone)]
pub struct WrappedKey(Arc<[u8]>);

impl WrappedKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WrappedKey(..)")
    }
}

pub fn invalid_token() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_token",
        detail: "The access token is missing, invalid or expired, or its session has ended.",
    }
}

/// How the access token was presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    /// `Authorization: Bearer` (RFC 6750): unbound tokens only.
    Bearer,
    /// `Authorization: DPoP` (RFC 9449 §7.1): bound tokens, with a proof.
    Dpop,
}

/// The token of `Authorization: Bearer <token>` or `Authorization: DPoP
/// <token>` (scheme case-insensitive).
fn presented(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return None;
    };
    Some((scheme, token.trim())).filter(|(_, t)| !t.is_empty())
}

/// Why a request's access token was not accepted; each is one 401.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token, a token that does not verify, or one presented under the
    /// wrong scheme (a bound token as `Bearer`, an unbound one as `DPoP`):
    /// `invalid_token`.
    Token,
    /// A bound token without a valid proof for this request: `dpop_proof_invalid`.
    DpopProof,
    /// A valid proof by another key than the token's: `dpop_key_mismatch`.
    DpopKey,
    /// `DPOP_NONCE=true` and the proof lacks a fresh nonce: `use_dpop_nonce`.
    DpopNonce,
}

impl Refusal {
    pub fn error(self) -> ApiError {
        match self {
            Self::Token => invalid_token(),
            Self::DpopProof => crate::dpop::proof_invalid(),
            Self::DpopKey => crate::dpop::key_mismatch(),
            Self::DpopNonce => crate::dpop::use_nonce(),
        }
    }
}

/// What one request's access token proved, worked out once.
///
/// The rate-limit layer needs the caller (to count per user, at the user's
/// tier) before the handler runs, and `AuthUser` needs the same caller
/// with the session's state. Both come from here: the token's signature
/// and claims are verified once, and the session, role, MFA state, tier
/// and wrapped data key are read in one query on one connection
/// ([`db::request_context`]). The layer keeps the result in the request's
/// extensions (which only the server's own layers can write), and
/// `AuthUser` takes it from there instead of verifying and querying again.
pub struct Authentication {
    pub claims: AccessClaims,
    /// `None`: the token's account does not exist (any more).
    pub context: Option<RequestContext>,
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authentication")
            .field("user_id", &self.claims.sub)
            .field("session_id", &self.claims.sid)
            .finish_non_exhaustive()
    }
}

impl Authentication {
    /// Verifies the request's access token at `now`: its signature and
    /// claims, and for a DPoP-bound token (`cnf.jkt`) the scheme `DPoP` and
    /// a proof by that key for this `method` and `path`, bound to the token
    /// (`ath`). `Ok(Err(_))`: refused (the caller is then anonymous to the
    /// limiter, and `AuthUser` answers 401); `Err`: the replay cache failed.
    pub async fn verify(
        state: &AppState,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<AccessClaims, Refusal>, ApiError> {
        let Some((scheme, token)) = presented(headers) else {
            return Ok(Err(Refusal::Token));
        };
        let claims = match state.keys.signing.verify(&state.token_settings, now, token) {
            Ok(claims) => claims,
            Err(e) => {
                tracing::debug!(error = %e, "access token refused");
                metrics::counter!("auth_access_token_rejected_total").increment(1);
                return Ok(Err(Refusal::Token));
            }
        };
        let bound = claims.cnf.as_ref().map(|c| c.jkt.as_str());
        let refusal = match (scheme, bound) {
            (Scheme::Bearer, None) => None,
            (Scheme::Bearer, Some(_)) | (Scheme::Dpop, None) => {
                tracing::debug!(
                    ?scheme,
                    bound = bound.is_some(),
                    "access token under the wrong scheme"
                );
                Some(Refusal::Token)
            }
            (Scheme::Dpop, Some(jkt)) => {
                match crate::dpop::verify(state, headers, method, path, Some(token)).await {
                    Ok(Some(proof)) if constant_time_eq(proof.jkt.as_bytes(), jkt.as_bytes()) => {
                        None
                    }
                    Ok(Some(_)) => Some(Refusal::DpopKey),
                    Ok(None) => Some(Refusal::DpopProof),
                    Err(e) => match e.code() {
                        "use_dpop_nonce" => Some(Refusal::DpopNonce),
                        "dpop_proof_invalid" => Some(Refusal::DpopProof),
                        _ => return Err(e),
                    },
                }
            }
        };
        if let Some(refusal) = refusal {
            metrics::counter!("auth_access_token_rejected_total").increment(1);
            return Ok(Err(refusal));
        }
        Ok(Ok(claims))
    }

    /// Reads the context of verified `claims`: one query, one connection.
    pub async fn load(
        state: &AppState,
        claims: AccessClaims,
        now: DateTime<Utc>,
    ) -> Result<Arc<Self>, ApiError> {
        let acquired = std::time::Instant::now();
        let mut conn = state.db.acquire().await?;
        metrics::histogram!("db_pool_acquire_duration_seconds")
            .record(acquired.elapsed().as_secs_f64());
        let context = db::request_context(&mut conn, claims.sub, claims.sid, now).await?;
        Ok(Arc::new(Self { claims, context }))
    }

    /// The caller, when the session is good.
    fn user(self: &Arc<Self>) -> Option<AuthUser> {
        let context = self.context.as_ref()?;
        let live = context.live.as_ref()?;
        // The token's key binding must be the session's own: a bound
        // session's tokens carry its key, an unbound one's carry none.
        let token_jkt = self.claims.cnf.as_ref().map(|c| c.jkt.as_bytes());
        let same = match (token_jkt, live.dpop_jkt.as_deref()) {
            (None, None) => true,
            (Some(t), Some(s)) => constant_time_eq(t, s.as_bytes()),
            _ => false,
        };
        if !same {
            return None;
        }
        Some(AuthUser {
            user_id: self.claims.sub,
            session_id: self.claims.sid,
            role: live.role,
            aal: live.aal,
            mfa_enabled: live.mfa_enabled,
            auth_time: live.auth_time,
            wrapped_key: context
                .wrapped_key
                .as_deref()
                .map(|k| WrappedKey(Arc::from(k))),
            caller: Arc::clone(self),
        })
    }
}

/// Left in a request's extensions by the rate limiter when the request
/// carries no access token that verifies, so `AuthUser` refuses it without
/// verifying (and counting the refusal, or spending a DPoP proof) a second
/// time, with the same answer.
#[derive(Clone, Copy, Debug)]
pub struct NoValidToken(pub Refusal);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(NoValidToken(refusal)) = parts.extensions.get::<NoValidToken>() {
            // The rate limiter already found no valid token (and counted
            // the refusal): the same answer without checking again.
            return Err(refusal.error());
        }
        let authentication = match parts.extensions.get::<Arc<Authentication>>() {
            Some(done) => done.clone(),
            None => {
                let now = state.clock.now();
                let verified = Authentication::verify(
                    state,
                    &parts.headers,
                    &parts.method,
                    parts.uri.path(),
                    now,
                )
                .await?;
                let claims = match verified {
                    Ok(claims) => claims,
                    Err(refusal) => {
                        parts.extensions.insert(NoValidToken(refusal));
                        return Err(refusal.error());
                    }
                };
                let done = Authentication::load(state, claims, now).await?;
                parts.extensions.insert(done.clone());
                done
            }
        };
        let user = authentication.user().ok_or_else(invalid_token)?;
        tracing::Span::current().record("user_id", tracing::field::display(user.user_id));
        // DPOP_POLICY holds for every session, not only new sign-ins: an
        // unbound session of an account the policy covers (one from before
        // the policy, or an account promoted to staff since) is refused
        // with 401 `dpop_required`, so the app signs in again with a proof.
        if authentication.claims.cnf.is_none() {
            crate::dpop::check_policy(&state.config.dpop, user.role, None)?;
        }
        Ok(user)
    }
}

/// `Aal2`: an authenticated caller who, if the account has a second factor,
/// proved it in this session. Sensitive actions (disabling MFA, new
/// recovery codes, replacing the authenticator) take this instead of
/// `AuthUser`; an aal1 session gets 403 `mfa_required` and must sign in
/// again through the second factor.
#[derive(Clone, Debug)]
pub struct Aal2(pub AuthUser);

impl Aal2 {
    /// The step-up rule, for handlers that decide it after extraction.
    pub async fn check(
        state: &AppState,
        auth: &AuthUser,
        client: &ClientInfo,
    ) -> Result<(), ApiError> {
        if !auth.mfa_enabled || auth.aal == Aal::Aal2 {
            return Ok(());
        }
        let mut conn = state.db.acquire().await?;
        audit::record(
            &mut conn,
            state.clock.now(),
            &AuditEvent::new(events::STEP_UP_REFUSED, Outcome::Denied)
                .user(auth.user_id)
                .session(auth.session_id)
                .client(client),
        )
        .await?;
        Err(ApiError::Forbidden {
            code: "mfa_required",
            detail: "This action needs your second factor. Sign in again and complete the authenticator step.",
        })
    }
}

impl FromRequestParts<AppState> for Aal2 {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = AuthUser::from_request_parts(parts, state).await?;
        let client = ClientInfo::from_request_parts(parts, state).await?;
        Self::check(state, &auth, &client).await?;
        Ok(Self(auth))
    }
}

/// A set of roles allowed to call a handler.
pub trait RoleSet: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// Administrators only.
pub struct Admin;
impl RoleSet for Admin {
    const ROLES: &'static [Role] = &[Role::Admin];
}

/// Support staff and administrators.
pub struct Staff;
impl RoleSet for Staff {
    const ROLES: &'static [Role] = Role::STAFF;
}

/// Audits a refused administrative call with the caller and their client.
async fn deny(
    parts: &mut Parts,
    state: &AppState,
    auth: &AuthUser,
    event: AuditEvent,
) -> Result<(), ApiError> {
    let client = ClientInfo::from_request_parts(parts, state).await?;
    let mut conn = state.db.acquire().await?;
    audit::record(
        &mut conn,
        state.clock.now(),
        &event
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client),
    )
    .await?;
    Ok(())
}

/// `RequireRole<R>`: function-level authorization. The role is read from
/// the database on every request (a demotion applies at once), a caller
/// without it gets 403 `forbidden` and no data, and every administrative
/// call additionally needs a session that completed the second factor
/// (aal2), whether or not the account's MFA state would otherwise ask.
pub struct RequireRole<R: RoleSet>(pub AuthUser, pub std::marker::PhantomData<R>);

impl<R: RoleSet> FromRequestParts<AppState> for RequireRole<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = AuthUser::from_request_parts(parts, state).await?;
        if !R::ROLES.contains(&auth.role) {
            let event = AuditEvent::new(events::ROLE_DENIED, Outcome::Denied)
                .detail("role", auth.role.as_str())
                .detail("path", parts.uri.path().to_owned());
            deny(parts, state, &auth, event).await?;
            return Err(ApiError::Forbidden {
                code: "forbidden",
                detail: "Your role does not allow this action.",
            });
        }
        if auth.aal != Aal::Aal2 {
            let event = AuditEvent::new(events::STEP_UP_REFUSED, Outcome::Denied)
                .detail("reason", "admin_requires_aal2");
            deny(parts, state, &auth, event).await?;
            return Err(ApiError::Forbidden {
                code: "mfa_required",
                detail: "Administrative actions need a session signed in with a second factor.",
            });
        }
        // A staff session is only as fresh as its last real sign-in:
        // refreshing keeps a session alive but proves nothing new, so a
        // refresh token stolen from a staff phone stops reaching staff
        // routes after STAFF_MAX_AUTH_AGE_SECS.
        let max_age = state.config.auth.staff_max_auth_age;
        if state.clock.now() - auth.auth_time > max_age {
            let event = AuditEvent::new(events::STEP_UP_REFUSED, Outcome::Denied)
                .detail("reason", "staff_auth_too_old");
            deny(parts, state, &auth, event).await?;
            return Err(ApiError::ReauthenticationRequired {
                max_age_secs: max_age.num_seconds().max(0) as u64,
            });
        }
        Ok(Self(auth, std::marker::PhantomData))
    }
}
