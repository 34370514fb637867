//! Refresh, logout, logout-everywhere, and the caller's session list.

use super::{db, refresh, TokenPair};
use crate::{
    audit::{self, events, AuditEvent, Outcome},
    dpop::extract::DpopProof,
    error::ApiError,
    http::{auth::AuthUser, extract::ClientInfo, extract::Json, extract::Path, routes::ApiRouter},
    rate_limit::policy::Class,
    state::AppState,
};
use axum::{extract::State, http::Method, http::StatusCode, Json as JsonResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(
            Method::POST,
            "/v1/auth/refresh",
            "refresh_tokens",
            Class::Refresh,
            refresh_tokens,
        )
        .route(
            Method::POST,
            "/v1/auth/logout",
            "logout",
            Class::Writes,
            logout,
        )
        .route(
            Method::POST,
            "/v1/auth/logout-all",
            "logout_all",
            Class::Writes,
            logout_all,
        )
        .route(
            Method::GET,
            "/v1/sessions",
            "list_sessions",
            Class::Reads,
            list_sessions,
        )
        .route(
            Method::DELETE,
            "/v1/sessions/{id}",
            "delete_session",
            Class::Writes,
            delete_session,
        )
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[validate(length(min = 1, max = 256))]
    pub refresh_token: String,
}

pub async fn refresh_tokens(
    State(state): State<AppState>,
    client: ClientInfo,
    DpopProof(proof): DpopProof,
    Json(req): Json<RefreshRequest>,
) -> Result<JsonResponse<TokenPair>, ApiError> {
    refresh::refresh(&state, &client, &req.refresh_token, proof.as_ref())
        .await
        .map(JsonResponse)
}

pub async fn logout(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
) -> Result<StatusCode, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    db::revoke_session(&mut tx, auth.user_id, auth.session_id, now, "logout").await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::LOGOUT, Outcome::Success)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn logout_all(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
) -> Result<StatusCode, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let ended = db::revoke_all_sessions(&mut tx, auth.user_id, None, now, "logout_all").await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::LOGOUT_ALL, Outcome::Success)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client)
            .detail("sessions", ended),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One of the caller's sessions, as the session list shows it.
#[derive(Serialize)]
pub struct SessionView {
    pub id: Uuid,
    pub device_name: Option<String>,
    pub platform: Option<String>,
    #[serde(serialize_with = "crate::clock::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::clock::millis")]
    pub last_seen_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub current: bool,
    /// Whether the session is bound to a device key (DPoP).
    pub dpop_bound: bool,
    /// Whether it signed in with a device key that App Attest or Play
    /// Integrity attested.
    pub attested: bool,
}

pub async fn list_sessions(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<JsonResponse<Vec<SessionView>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(JsonResponse(session_views(&mut conn, &state, &auth).await?))
}

/// The caller's live sessions (also part of the data export).
pub async fn session_views(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    auth: &AuthUser,
) -> Result<Vec<SessionView>, ApiError> {
    let rows = db::list_live_sessions(conn, auth.user_id, state.clock.now()).await?;
    Ok(rows
        .into_iter()
        .map(|r| SessionView {
            current: r.session_id == auth.session_id,
            id: r.session_id,
            device_name: r.device_name,
            platform: r.platform,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            ip: r.ip,
            dpop_bound: r.dpop_bound,
            attested: r.attested,
        })
        .collect())
}

pub async fn delete_session(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    // Filtered by owner in SQL: another user's id is indistinguishable from a missing one.
    if !db::revoke_session(&mut tx, auth.user_id, id, now, "revoked_by_user").await? {
        return Err(ApiError::NotFound);
    }
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::SESSION_REVOKED, Outcome::Success)
            .user(auth.user_id)
            .session(id)
            .client(&client),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
