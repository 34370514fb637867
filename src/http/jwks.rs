//! `GET /.well-known/jwks.json`: the public keys that verify access tokens.
//!
//! Every key that may still verify a live token is listed (the current one
//! and, during a rotation, the previous ones), so a resource server that
//! caches this document never rejects a valid token.

use super::routes::ApiRouter;
use crate::state::AppState;
use axum::{extract::State, http::Method, Json};

pub fn router() -> ApiRouter {
    ApiRouter::new().unlimited(Method::GET, "/.well-known/jwks.json", "get_jwks", get_jwks)
}

pub async fn get_jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.keys.signing.jwks())
}
