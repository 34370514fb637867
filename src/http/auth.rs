//! `AuthUser`: the extractor that makes a handler authenticated.
//!
//! A handler that takes `AuthUser` can only run for a valid access token
//! (signature, algorithm, type, key id, issuer, audience and expiry, see
//! `tokens`) whose session is still live and whose account is active: the
//! session check on every request is what makes logout, logout-everywhere,
//! reuse detection and locking take effect at once rather than when the
//! token expires. No handler reads a token itself.

use crate::{error::ApiError, sessions::db, state::AppState};
use axum::{extract::FromRequestParts, http::request::Parts};
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// The current role, read from the database (not trusted from the token).
    pub role: String,
    /// `aal1` (password) or `aal2` (second factor).
    pub aal: String,
}

pub fn invalid_token() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_token",
        detail: "The access token is missing, invalid or expired, or its session has ended.",
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750).
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(invalid_token)?;
        let now = state.clock.now();
        let claims = state
            .keys
            .signing
            .verify(&state.token_settings, now, token)
            .map_err(|e| {
                tracing::debug!(error = %e, "access token refused");
                metrics::counter!("auth_access_token_rejected_total").increment(1);
                invalid_token()
            })?;
        let mut conn = state.db.acquire().await?;
        let role = db::live_session_role(&mut conn, claims.sub, claims.sid, now)
            .await?
            .ok_or_else(invalid_token)?;
        tracing::Span::current().record("user_id", tracing::field::display(claims.sub));
        Ok(Self {
            user_id: claims.sub,
            session_id: claims.sid,
            role,
            aal: claims.aal,
        })
    }
}
