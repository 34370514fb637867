//! `GET`/`PUT /v1/admin/client-policy`: the minimum app version per
//! platform, changed at run time without a redeploy (the kill switch for a
//! vulnerable release).
//!
//! The minimums live in the database so every API process agrees; each
//! process re-reads them every `CLIENT_POLICY_REFRESH_SECS` into the
//! in-memory [`ClientPolicy`] the version gate consults, so the gate never
//! waits on the database. The process that takes the `PUT` applies it at
//! once. A platform without a run-time minimum falls back to
//! `MIN_CLIENT_VERSION_<PLATFORM>`. Admin only (aal2), audited.

use crate::{
    audit::{self, events, AuditEvent, Outcome},
    background::{Next, Periodic, Stop},
    error::ApiError,
    http::{
        auth::{Admin, RequireRole},
        client_version::{AppVersion, Overrides, PlatformPolicy},
        extract::{ClientInfo, Json},
        routes::ApiRouter,
    },
    rate_limit::policy::Class,
    state::AppState,
};
use axum::{extract::State, http::Method, Json as JsonResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use validator::{Validate, ValidationError};

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(
            Method::GET,
            "/v1/admin/client-policy",
            "get_client_policy",
            Class::Reads,
            get_client_policy,
        )
        .route(
            Method::PUT,
            "/v1/admin/client-policy",
            "put_client_policy",
            Class::Writes,
            put_client_policy,
        )
}

/// Reads the run-time minimums. A stored value that no longer parses is
/// ignored with a warning (the configured fallback applies).
pub async fn load(conn: &mut PgConnection) -> sqlx::Result<Overrides> {
    let rows = sqlx::query!("SELECT platform, min_version FROM client_policy")
        .fetch_all(conn)
        .await?;
    let mut out = Overrides::default();
    for row in rows {
        let version = row.min_version.as_deref().and_then(|v| {
            let parsed = AppVersion::parse(v).ok();
            if parsed.is_none() {
                tracing::warn!(platform = %row.platform, "ignoring an unparsable stored minimum version");
            }
            parsed
        });
        match row.platform.as_str() {
            "ios" => out.ios = version,
            "android" => out.android = version,
            _ => {}
        }
    }
    Ok(out)
}

/// Loads the run-time minimums into this process's policy.
pub async fn refresh(state: &AppState) -> Result<(), sqlx::Error> {
    let mut conn = state.db.acquire().await?;
    let overrides = load(&mut conn).await?;
    state.client_policy.apply(&overrides);
    Ok(())
}

/// Background task: re-reads the policy every `CLIENT_POLICY_REFRESH_SECS`
/// until shutdown. A failed read keeps the last policy in force.
pub async fn run_refresh(state: AppState, stop: Stop) {
    Periodic::new("client policy refresh", state.config.client_policy_refresh)
        .run(stop, move || {
            let state = state.clone();
            async move {
                refresh(&state).await?;
                Ok::<_, sqlx::Error>(Next::Wait)
            }
        })
        .await
}

/// One platform's minimum as shown to administrators.
#[derive(Serialize)]
pub struct PlatformView {
    /// The minimum in force (`null`: every version is accepted).
    pub min_version: Option<String>,
    /// Where it comes from: `runtime` (set here), `configuration`
    /// (`MIN_CLIENT_VERSION_*`) or `none`.
    pub source: &'static str,
    pub store_url: Option<String>,
}

#[derive(Serialize)]
pub struct ClientPolicyView {
    pub ios: PlatformView,
    pub android: PlatformView,
    #[serde(serialize_with = "crate::clock::millis_opt")]
    pub updated_at: Option<DateTime<Utc>>,
}

fn platform_view(runtime: Option<&AppVersion>, fallback: &PlatformPolicy) -> PlatformView {
    let (min, source) = match (runtime, &fallback.min_version) {
        (Some(v), _) => (Some(v.to_string()), "runtime"),
        (None, Some(v)) => (Some(v.to_string()), "configuration"),
        (None, None) => (None, "none"),
    };
    PlatformView {
        min_version: min,
        source,
        store_url: fallback.store_url.as_ref().map(ToString::to_string),
    }
}

/// The policy as stored, and its view for administrators.
async fn current_view(
    conn: &mut PgConnection,
    state: &AppState,
) -> Result<(Overrides, ClientPolicyView), ApiError> {
    let overrides = load(&mut *conn).await?;
    let updated_at = sqlx::query_scalar!("SELECT max(updated_at) FROM client_policy")
        .fetch_one(&mut *conn)
        .await?;
    let fallback = state.client_policy.fallback();
    let view = ClientPolicyView {
        ios: platform_view(overrides.ios.as_ref(), &fallback.ios),
        android: platform_view(overrides.android.as_ref(), &fallback.android),
        updated_at,
    };
    Ok((overrides, view))
}

pub async fn get_client_policy(
    State(state): State<AppState>,
    RequireRole(_admin, _): RequireRole<Admin>,
) -> Result<JsonResponse<ClientPolicyView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (_, view) = current_view(&mut conn, &state).await?;
    Ok(JsonResponse(view))
}

/// The same grammar as the `X-Client-Version` header (and `openapi.yaml`'s
/// pattern): [`AppVersion`].
fn plain_version(value: &str) -> Result<(), ValidationError> {
    match AppVersion::parse(value) {
        Ok(_) => Ok(()),
        Err(why) => {
            let mut e = ValidationError::new("version_format");
            e.message = Some(why.to_string().into());
            Err(e)
        }
    }
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct PlatformMinimum {
    /// `null` removes the run-time minimum (the configured one applies).
    #[validate(custom(function = "plain_version"))]
    pub min_version: Option<String>,
}

/// Platforms left out are unchanged.
#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ClientPolicyRequest {
    #[validate(nested)]
    pub ios: Option<PlatformMinimum>,
    #[validate(nested)]
    pub android: Option<PlatformMinimum>,
}

pub async fn put_client_policy(
    State(state): State<AppState>,
    RequireRole(admin, _): RequireRole<Admin>,
    client: ClientInfo,
    Json(req): Json<ClientPolicyRequest>,
) -> Result<JsonResponse<ClientPolicyView>, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let mut event = AuditEvent::new(events::ADMIN_CLIENT_POLICY_CHANGED, Outcome::Success)
        .actor(admin.user_id)
        .session(admin.session_id)
        .client(&client);
    for (platform, minimum) in [("ios", &req.ios), ("android", &req.android)] {
        let Some(minimum) = minimum else { continue };
        sqlx::query!(
            r#"INSERT INTO client_policy (platform, min_version, updated_at, updated_by)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT ON CONSTRAINT client_policy_pkey
               DO UPDATE SET min_version = EXCLUDED.min_version, updated_at = EXCLUDED.updated_at,
                             updated_by = EXCLUDED.updated_by"#,
            platform,
            minimum.min_version,
            now,
            admin.user_id,
        )
        .execute(&mut *tx)
        .await?;
        event = event.detail(platform, minimum.min_version.clone());
    }
    audit::record(&mut tx, now, &event).await?;
    let (overrides, view) = current_view(&mut tx, &state).await?;
    tx.commit().await?;
    // In force here at once; other processes within the refresh interval.
    state.client_policy.apply(&overrides);
    Ok(JsonResponse(view))
}
