//! `/v1/me/rate-limit-requests`: the caller asks for a higher rate-limit
//! tier, lists their requests (cursor pages) and withdraws a pending one.
//! Each handler takes the owner from the token (`AuthUser`) and passes it
//! to a query that filters by it; the reason is sealed before it reaches
//! SQL and opened only for its owner (and staff).

use super::{
    db, decode_cursor, next_cursor, request_aad, RateLimitRequest, MAX_REQUESTS_PER_WINDOW,
    WINDOW_DAYS,
};
use crate::{
    audit::{self, events, AuditEvent, Outcome},
    error::{request_pending, ApiError},
    http::{
        auth::{invalid_token, Aal2, AuthUser},
        extract::{ClientInfo, Json, Path, Query},
        routes::ApiRouter,
        validate,
    },
    rate_limit::{layer::REQUEST_INCREASE_PATH, policy::Class, policy::Tier, tiers},
    state::AppState,
    user_keys::UserKey,
};
use axum::{extract::State, http::Method, http::StatusCode, Json as JsonResponse};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(
            Method::POST,
            REQUEST_INCREASE_PATH,
            "create_rate_limit_request",
            Class::Writes,
            create_rate_limit_request,
        )
        .route(
            Method::GET,
            REQUEST_INCREASE_PATH,
            "list_rate_limit_requests",
            Class::Reads,
            list_rate_limit_requests,
        )
        .route(
            Method::DELETE,
            "/v1/me/rate-limit-requests/{id}",
            "withdraw_rate_limit_request",
            Class::Writes,
            withdraw_rate_limit_request,
        )
}

/// The requester is the caller, never a body field: `user_id` (or anything
/// else) in the body is 422 `unknown_field`.
#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateRateLimitRequest {
    /// Why the caller needs more: shown to staff as written (JSON-encoded,
    /// never interpreted), so no control or text-direction characters.
    #[validate(
        length(min = 1, max = 500),
        custom(function = "validate::no_control_chars"),
        custom(function = "validate::no_bidi_controls")
    )]
    pub reason: String,
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    /// `raised` when absent.
    pub requested_tier: Option<Tier>,
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ListRateLimitRequestsQuery {
    #[validate(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[validate(length(min = 1, max = 64))]
    pub cursor: Option<String>,
}

/// One page of the caller's requests, newest first.
#[derive(Serialize)]
pub struct RateLimitRequestList {
    pub items: Vec<RateLimitRequest>,
    /// The cursor of the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// 422 naming `requested_tier`, code `tier_not_higher`.
pub fn tier_not_higher() -> ApiError {
    ApiError::invalid_field(
        "requested_tier",
        "tier_not_higher",
        "Ask for a tier above the one you have.",
    )
}

/// 409 `already_decided`.
pub fn already_decided() -> ApiError {
    ApiError::Conflict {
        code: "already_decided",
        detail: "This request was already approved, denied or withdrawn.",
    }
}

// Filing and withdrawing take an aal2 session when MFA is on (`Aal2`): a
// stolen password-level session must not be able to speak to staff in the
// owner's name, or spend the owner's five requests a month.
pub async fn create_rate_limit_request(
    State(state): State<AppState>,
    Aal2(auth): Aal2,
    client: ClientInfo,
    Json(req): Json<CreateRateLimitRequest>,
) -> Result<(StatusCode, JsonResponse<RateLimitRequest>), ApiError> {
    let now = state.clock.now();
    let requested = req.requested_tier.unwrap_or(Tier::Raised);
    let request_id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    // One pending request and the window cap: checked under a per-user lock
    // held to commit, so concurrent requests cannot both see room (the
    // partial unique index backs the pending rule up).
    db::lock_owner(&mut tx, auth.user_id).await?;
    let current = tiers::in_force(&mut tx, auth.user_id, now)
        .await?
        .ok_or_else(invalid_token)?;
    if requested <= current.tier {
        return Err(tier_not_higher());
    }
    let window_start = now - Duration::days(WINDOW_DAYS);
    let standing = db::standing(&mut tx, auth.user_id, window_start).await?;
    if standing.pending {
        return Err(request_pending());
    }
    if standing.recent >= MAX_REQUESTS_PER_WINDOW {
        // Until the oldest request in the window leaves it.
        let frees_at = standing.oldest_recent.unwrap_or(now) + Duration::days(WINDOW_DAYS);
        let wait = (frees_at - now).num_seconds().max(1);
        return Err(ApiError::RateLimited {
            retry_after_secs: u64::try_from(wait).unwrap_or(1),
        });
    }
    let key = UserKey::of(&state.keys.data, &auth)?;
    let sealed = key.seal(&request_aad("reason", request_id), req.reason.as_bytes())?;
    let row = db::insert(
        &mut tx,
        &db::NewRequest {
            request_id,
            user_id: auth.user_id,
            requested_tier: requested.as_str(),
            reason_ciphertext: &sealed,
            now,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::RATE_LIMIT_REQUEST_CREATED, Outcome::Success)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client)
            .detail("request_id", request_id.to_string())
            .detail("requested_tier", requested.as_str())
            .detail("current_tier", current.tier.as_str()),
    )
    .await?;
    let view = RateLimitRequest::open(&key, row)?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, JsonResponse(view)))
}

pub async fn list_rate_limit_requests(
    State(state): State<AppState>,
    auth: AuthUser,
    Query(q): Query<ListRateLimitRequestsQuery>,
) -> Result<JsonResponse<RateLimitRequestList>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    let before = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor(&state.keys.blind_index, c))
        .transpose()?;
    let mut conn = state.db.acquire().await?;
    let rows = db::page(&mut conn, auth.user_id, before, limit).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.request_id).collect();
    let items = if rows.is_empty() {
        Vec::new()
    } else {
        let key = UserKey::of(&state.keys.data, &auth)?;
        rows.into_iter()
            .map(|r| RateLimitRequest::open(&key, r))
            .collect::<Result<_, _>>()?
    };
    Ok(JsonResponse(RateLimitRequestList {
        items,
        next_cursor: next_cursor(&state.keys.blind_index, &ids, limit),
    }))
}

/// Withdraws a pending request (204). The row stays, and still counts
/// toward the window cap.
pub async fn withdraw_rate_limit_request(
    State(state): State<AppState>,
    Aal2(auth): Aal2,
    client: ClientInfo,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    match db::withdraw(&mut tx, auth.user_id, id, now).await? {
        None => return Err(ApiError::NotFound),
        Some(false) => return Err(already_decided()),
        Some(true) => {}
    }
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::RATE_LIMIT_REQUEST_WITHDRAWN, Outcome::Success)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client)
            .detail("request_id", id.to_string()),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
