//! `/v1/admin/alerts`: the alerts raised, newest first, and their
//! acknowledgement. Administrators only (aal2), audited.

use crate::{
    audit::{self, events, AuditEvent, Outcome},
    error::ApiError,
    http::{
        auth::{Admin, RequireRole},
        extract::{ClientInfo, Path, Query},
        routes::ApiRouter,
    },
    rate_limit::policy::Class,
    state::AppState,
};
use axum::{extract::State, http::Method, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(
            Method::GET,
            "/v1/admin/alerts",
            "list_alerts",
            Class::Reads,
            list_alerts,
        )
        .route(
            Method::POST,
            "/v1/admin/alerts/{id}/acknowledge",
            "acknowledge_alert",
            Class::Writes,
            acknowledge_alert,
        )
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    #[validate(range(min = 1, max = 200))]
    pub limit: Option<i64>,
    /// Cursor: the id of the last alert of the previous page.
    pub before: Option<Uuid>,
    /// Only alerts nobody has acknowledged yet.
    pub unacknowledged: Option<bool>,
}

#[derive(Serialize)]
pub struct AlertView {
    pub id: Uuid,
    #[serde(serialize_with = "crate::clock::millis")]
    pub created_at: DateTime<Utc>,
    pub rule: String,
    pub severity: String,
    pub user_id: Option<Uuid>,
    pub ip: Option<String>,
    pub details: serde_json::Value,
    #[serde(serialize_with = "crate::clock::millis_opt")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<Uuid>,
}

#[derive(Serialize)]
pub struct AlertList {
    pub items: Vec<AlertView>,
    pub next_cursor: Option<Uuid>,
}

pub async fn list_alerts(
    State(state): State<AppState>,
    RequireRole(_admin, _): RequireRole<Admin>,
    Query(q): Query<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    let mut conn = state.db.acquire().await?;
    let items = sqlx::query_as!(
        AlertView,
        r#"SELECT security_alert_id AS id, created_at, rule, severity, user_id, host(ip) AS ip, details,
                  acknowledged_at, acknowledged_by
           FROM security_alerts
           WHERE ($1::uuid IS NULL OR security_alert_id < $1)
             AND (NOT $2 OR acknowledged_at IS NULL)
           ORDER BY security_alert_id DESC
           LIMIT $3"#,
        q.before,
        q.unacknowledged.unwrap_or(false),
        limit,
    )
    .fetch_all(&mut *conn)
    .await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|a| a.id))
        .flatten();
    Ok(Json(AlertList { items, next_cursor }))
}

pub async fn acknowledge_alert(
    State(state): State<AppState>,
    RequireRole(admin, _): RequireRole<Admin>,
    client: ClientInfo,
    Path(id): Path<Uuid>,
) -> Result<Json<AlertView>, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let alert = sqlx::query_as!(
        AlertView,
        r#"UPDATE security_alerts
           SET acknowledged_at = COALESCE(acknowledged_at, $2), acknowledged_by = COALESCE(acknowledged_by, $3)
           WHERE security_alert_id = $1
           RETURNING security_alert_id AS id, created_at, rule, severity, user_id, host(ip) AS ip, details,
                     acknowledged_at, acknowledged_by"#,
        id,
        now,
        admin.user_id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::ADMIN_ALERT_ACKNOWLEDGED, Outcome::Success)
            .actor(admin.user_id)
            .session(admin.session_id)
            .client(&client)
            .detail("alert_id", id.to_string())
            .detail("rule", alert.rule.clone()),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(alert))
}
