//! `PUT /v1/admin/users/{id}/rate-limit-tier`: raise (or restore) a user's
//! limits for authenticated reads and writes. Admin only, aal2, audited
//! with actor and target.

use crate::{
    audit::{self, events, AuditEvent, Outcome},
    error::ApiError,
    http::{
        auth::{Admin, RequireRole},
        extract::{ClientInfo, Json, Path},
        routes::ApiRouter,
    },
    rate_limit::policy::{Class, Tier},
    state::AppState,
};
use axum::{extract::State, http::Method, Json as JsonResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new().route(
        Method::PUT,
        "/v1/admin/users/{id}/rate-limit-tier",
        "set_rate_limit_tier",
        Class::Writes,
        set_rate_limit_tier,
    )
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RateLimitTierRequest {
    pub tier: Tier,
}

#[derive(Serialize)]
pub struct RateLimitTierResponse {
    pub id: Uuid,
    pub rate_limit_tier: Tier,
}

pub async fn set_rate_limit_tier(
    State(state): State<AppState>,
    RequireRole(admin, _): RequireRole<Admin>,
    client: ClientInfo,
    Path(id): Path<Uuid>,
    Json(req): Json<RateLimitTierRequest>,
) -> Result<JsonResponse<RateLimitTierResponse>, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let previous = sqlx::query_scalar!(
        r#"UPDATE users u SET rate_limit_tier = $2, updated_at = $3
           FROM (SELECT rate_limit_tier FROM users WHERE user_id = $1 FOR UPDATE) old
           WHERE u.user_id = $1
           RETURNING old.rate_limit_tier"#,
        id,
        req.tier.as_str(),
        now,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::ADMIN_RATE_LIMIT_TIER_CHANGED, Outcome::Success)
            .user(id)
            .actor(admin.user_id)
            .session(admin.session_id)
            .client(&client)
            .detail("from", previous)
            .detail("to", req.tier.as_str()),
    )
    .await?;
    tx.commit().await?;
    Ok(JsonResponse(RateLimitTierResponse {
        id,
        rate_limit_tier: req.tier,
    }))
}
