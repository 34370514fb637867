//! `DpopProof`: the extractor of sign-in and refresh handlers. It verifies
//! the request's `DPoP` header (if any) for the request's own method and
//! path, before the body is read; a present but invalid proof refuses the
//! request with 401 `dpop_proof_invalid` before anything else happens.

use super::VerifiedProof;
use crate::{error::ApiError, state::AppState};
use axum::{extract::FromRequestParts, http::request::Parts};

/// The request's verified proof, `None` without a `DPoP` header.
#[derive(Clone, Debug)]
pub struct DpopProof(pub Option<VerifiedProof>);

impl FromRequestParts<AppState> for DpopProof {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        super::verify(state, &parts.headers, &parts.method, parts.uri.path(), None)
            .await
            .map(Self)
    }
}
