//! The old-client gate middleware: enforces the client policy in force
//! (`AppState::client_policy`, see [`super::client_version`]) on every
//! `/v1` call. Kept apart from `client_version.rs` because it needs the
//! state, while the state holds `client_version`'s `ClientPolicy`: one
//! file for both would import the state that imports it.

use super::client_version::ClientVersion;
use crate::state::AppState;
use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// Applies to `/v1` only: load balancers and operators call the
/// operational endpoints without app headers.
pub async fn gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/v1/") || req.uri().path() == "/v1" {
        let checked = ClientVersion::from_headers(req.headers())
            .and_then(|c| c.map_or(Ok(()), |c| state.client_policy.check(&c)))
            .and_then(|()| crate::http::extract::install_id(req.headers()).map(drop));
        if let Err(e) = checked {
            return e.into_response();
        }
    }
    next.run(req).await
}
