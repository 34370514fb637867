//! `GET /v1/users/{id}`: another user's public projection — exactly `id`
//! and `display_name`, nothing else (no email, phone or any other PII).
//! Every view feeds the data-access volume rule.

use crate::{
    error::ApiError,
    http::{auth::AuthUser, extract::Path, routes::ApiRouter},
    rate_limit::policy::Class,
    state::AppState,
    user_keys::UserKey,
};
use axum::{extract::State, http::Method, Json};
use serde::Serialize;
use uuid::Uuid;

pub fn router() -> ApiRouter {
    ApiRouter::new().route(
        Method::GET,
        "/v1/users/{id}",
        "get_public_user",
        Class::Reads,
        get_public_user,
    )
}

/// What any signed-in user may see of another.
#[derive(Serialize)]
pub struct PublicUser {
    pub id: Uuid,
    pub display_name: Option<String>,
}

pub async fn get_public_user(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<PublicUser>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let sealed = sqlx::query_scalar!(
        "SELECT display_name_ciphertext FROM users WHERE user_id = $1 AND status = 'active'",
        id,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ApiError::NotFound)?;
    let display_name = match sealed {
        Some(sealed) => {
            let key = UserKey::load(&mut conn, &state.keys.data, id).await?;
            crate::profile::open_text(&key, "display_name", Some(&sealed))?
        }
        None => None,
    };
    drop(conn);
    crate::alerts::access::profile_viewed(&state, auth.user_id, id).await?;
    Ok(Json(PublicUser { id, display_name }))
}
