//! `PUT /v1/admin/users/{id}/rate-limit-tier`: raise (or restore) a user's
//! limits for authenticated reads and writes, for good. Admin only, aal2,
//! never on the caller's own account, audited with actor and target. The
//! change itself is `rate_limit::tiers::set`, which approving a user's
//! request (`admin/rate_limit_requests.rs`) shares.

use crate::{
    audit::{events, AuditEvent, Outcome},
    error::ApiError,
    http::{
        auth::{Admin, RequireRole},
        extract::{ClientInfo, Json, Path},
        routes::ApiRouter,
    },
    rate_limit::{
        policy::{Class, Tier},
        tiers,
    },
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

/// Sets the tier for good (clearing any expiry an approved request gave
/// it). Not on the caller's own account (403 `own_account`).
pub async fn set_rate_limit_tier(
    State(state): State<AppState>,
    RequireRole(admin, _): RequireRole<Admin>,
    client: ClientInfo,
    Path(id): Path<Uuid>,
    Json(req): Json<RateLimitTierRequest>,
) -> Result<JsonResponse<RateLimitTierResponse>, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if id == admin.user_id {
        let refused = AuditEvent::new(events::ADMIN_RATE_LIMIT_TIER_REFUSED, Outcome::Denied)
            .user(id)
            .actor(admin.user_id)
            .session(admin.session_id)
            .client(&client)
            .detail("to", req.tier.as_str());
        let error = tiers::refuse_own_account(&mut tx, now, refused).await?;
        tx.commit().await?;
        return Err(error);
    }
    let event = tiers::change_event()
        .actor(admin.user_id)
        .session(admin.session_id)
        .client(&client);
    tiers::set(&mut tx, now, id, req.tier, None, event)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(JsonResponse(RateLimitTierResponse {
        id,
        rate_limit_tier: req.tier,
    }))
}
