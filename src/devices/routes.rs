//! `/v1/devices`: register, list, read and delete the caller's own push
//! registrations. A user may hold at most `MAX_DEVICES_PER_USER` (409
//! `too_many_devices` beyond it; re-registering a known token is a refresh).
//!
//! Phones are shared and change hands: a push token belongs to **one**
//! account at most, the latest to register it (registering a token another
//! account holds removes it from that account, and the answer is the same
//! as for a new token), and a registration ends with the session that made
//! it (`db::delete_for_ended_sessions`, run by every revocation), unless
//! the app registers it again from a newer session.

use super::db;
use crate::{
    audit::{self, events, AuditEvent, Outcome},
    crypto::Aad,
    error::ApiError,
    http::{
        auth::AuthUser,
        extract::{ClientInfo, Json, Path},
        routes::ApiRouter,
        validate,
    },
    rate_limit::policy::Class,
    state::AppState,
    user_keys::UserKey,
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
            "/v1/devices",
            "register_device",
            Class::Writes,
            register_device,
        )
        .route(
            Method::GET,
            "/v1/devices",
            "list_devices",
            Class::Reads,
            list_devices,
        )
        .route(
            Method::GET,
            "/v1/devices/{id}",
            "get_device",
            Class::Reads,
            get_device,
        )
        .route(
            Method::DELETE,
            "/v1/devices/{id}",
            "delete_device",
            Class::Writes,
            delete_device,
        )
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RegisterDeviceRequest {
    #[validate(custom(function = "validate::platform"))]
    pub platform: String,
    #[validate(
        length(min = 1, max = 4096),
        custom(function = "validate::no_control_chars")
    )]
    pub push_token: String,
    #[validate(
        length(min = 1, max = 64),
        custom(function = "validate::no_control_chars")
    )]
    pub name: Option<String>,
}

/// The owner's view of a device: never the push token.
#[derive(Serialize)]
pub struct Device {
    pub id: Uuid,
    pub platform: String,
    pub name: Option<String>,
    #[serde(serialize_with = "crate::clock::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::clock::millis")]
    pub last_seen_at: DateTime<Utc>,
}

impl From<db::DeviceRow> for Device {
    fn from(r: db::DeviceRow) -> Self {
        Self {
            id: r.device_id,
            platform: r.platform,
            name: r.name,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
        }
    }
}

pub async fn register_device(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    Json(req): Json<RegisterDeviceRequest>,
) -> Result<(StatusCode, JsonResponse<Device>), ApiError> {
    let now = state.clock.now();
    let device_id = Uuid::now_v7();
    let index = state
        .keys
        .blind_index
        .compute(db::PUSH_TOKEN_CONTEXT, &req.push_token);
    let lookup = state
        .keys
        .blind_index
        .lookup(db::PUSH_TOKEN_CONTEXT, &req.push_token);
    let mut tx = state.db.begin().await?;
    // The cap (`MAX_DEVICES_PER_USER`): counted under a per-user lock held
    // to commit, so concurrent registrations cannot all see room for one
    // more. A token already registered is a refresh and always allowed.
    db::lock_owner(&mut tx, auth.user_id).await?;
    // One account per push token: the latest registration wins. The
    // account it leaves is not named to the caller, who gets the answer a
    // new token gets; the removal is in that account's audit trail.
    db::lock_token(&mut tx, &lookup).await?;
    for (previous_owner, removed) in db::release_token(&mut tx, auth.user_id, &lookup).await? {
        audit::record(
            &mut tx,
            now,
            &AuditEvent::new(events::DEVICE_DELETED, Outcome::Success)
                .user(previous_owner)
                .detail("device_id", removed.to_string())
                .detail("reason", "push_token_registered_by_another_account"),
        )
        .await?;
    }
    let (count, known) = db::registered(&mut tx, auth.user_id, &lookup, &index).await?;
    if !known && count >= state.config.max_devices_per_user {
        return Err(too_many_devices());
    }
    // Seal first under the new id; an upsert that hits an existing row keeps
    // that row's own sealed token (same value), so the binding stays right.
    let user_key = UserKey::of(&state.keys.data, &auth)?;
    let sealed = user_key.seal(
        &Aad {
            table: "devices",
            column: "push_token",
            row_id: device_id,
        },
        req.push_token.as_bytes(),
    )?;
    let row = db::upsert(
        &mut tx,
        &db::NewDevice {
            device_id,
            user_id: auth.user_id,
            platform: &req.platform,
            name: req.name.as_deref(),
            token_ciphertext: &sealed,
            token_index: &index,
            session_id: auth.session_id,
            now,
        },
    )
    .await?;
    let created = row.inserted;
    if created {
        audit::record(
            &mut tx,
            now,
            &AuditEvent::new(events::DEVICE_REGISTERED, Outcome::Success)
                .user(auth.user_id)
                .session(auth.session_id)
                .client(&client)
                .detail("device_id", row.device_id.to_string()),
        )
        .await?;
    }
    tx.commit().await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, JsonResponse(row.into())))
}

/// 409 `too_many_devices`.
pub fn too_many_devices() -> ApiError {
    ApiError::Conflict {
        code: "too_many_devices",
        detail: "This account has registered the maximum number of devices. Remove one first.",
    }
}

pub async fn list_devices(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<JsonResponse<Vec<Device>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let rows = db::list(&mut conn, auth.user_id).await?;
    Ok(JsonResponse(rows.into_iter().map(Device::from).collect()))
}

pub async fn get_device(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<JsonResponse<Device>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let row = db::get(&mut conn, auth.user_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(JsonResponse(row.into()))
}

pub async fn delete_device(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !db::delete(&mut tx, auth.user_id, id).await? {
        return Err(ApiError::NotFound);
    }
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::DEVICE_DELETED, Outcome::Success)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client)
            .detail("device_id", id.to_string()),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
