//! Operational endpoints for orchestrators: liveness and readiness.
//!
//! `/healthz` touches nothing, so a slow database never gets a healthy
//! process killed. `/readyz` asks the database with a short timeout, so a
//! load balancer stops sending traffic while Postgres is away and resumes
//! when it returns, without a restart. From SIGTERM on, `/readyz` answers
//! 503 without asking the database: the process is leaving.

use crate::{error::ApiError, state::AppState};
use axum::{extract::State, Json};
use serde::Serialize;
use std::time::Duration;

#[derive(Serialize)]
pub struct HealthResponse {
    status: &'static str,
}

pub async fn get_healthz() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok" })
}

pub async fn get_readyz(State(state): State<AppState>) -> Result<Json<HealthResponse>, ApiError> {
    // Shutting down: out of rotation at once, while still serving what the
    // load balancer sends until it notices (`SHUTDOWN_GRACE_SECS`).
    if state.draining.is_draining() {
        return Err(not_ready());
    }
    let ping = sqlx::query_scalar!("SELECT 1 AS \"one!\"").fetch_one(&state.db);
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => Ok(Json(HealthResponse { status: "ready" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: database unavailable");
            Err(not_ready())
        }
        Err(_) => {
            tracing::warn!("readiness check: database did not answer within 2 s");
            Err(not_ready())
        }
    }
}

fn not_ready() -> ApiError {
    ApiError::Unavailable {
        code: "not_ready",
        retry_after_secs: 5,
    }
}
