//! Response hardening and request-body gatekeeping.
//!
//! * Security headers on every response (docs/api.md, "Security
//!   headers"): a JSON API never needs to be framed, sniffed, cached by a
//!   shared proxy or sent with a referrer.
//! * Bodies: over 64 KiB → 413 before anything reads them (the declared
//!   length is checked up front; a chunked body is capped while streaming,
//!   see [`crate::http::extract::Json`]); a body that is not JSON → 415.
//!   Both are problem+json, never axum's plain-text rejections.

use crate::{error::ApiError, state::AppState};
use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// The largest request body the API accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    // Responses carry personal data and tokens: no cache, shared or private,
    // may keep them.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if state.config.is_production() || state.tls_enabled {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    response
}

pub async fn body_gate(req: Request, next: Next) -> Response {
    if let Err(e) = check_body_headers(req.headers()) {
        return e.into_response();
    }
    next.run(req).await
}

fn check_body_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_header", "Content-Length is not a number.")
                })
        })
        .transpose()?;
    if declared_len.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let has_body =
        declared_len.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
    if has_body && !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(())
}

/// `application/json` or any `application/*+json`, with optional parameters.
pub fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|essence| {
        essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
    })
}

/// Whether the body is a JSON Merge Patch (RFC 7396), which `PATCH`
/// handlers merge member by member, nested objects included.
pub fn is_merge_patch(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|essence| essence == "application/merge-patch+json")
}

/// The `Content-Type` without its parameters, lower-cased.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json(&headers(&[("content-type", "application/json")])));
        assert!(is_json(&headers(&[(
            "content-type",
            "Application/JSON; charset=utf-8"
        )])));
        assert!(is_json(&headers(&[(
            "content-type",
            "application/merge-patch+json"
        )])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&headers(&[("content-type", "application/jsonx")])));
        assert!(!is_json(&headers(&[])));
    }

    #[test]
    fn oversized_declared_bodies_and_non_json_bodies_are_refused() {
        let big = headers(&[
            ("content-length", "65537"),
            ("content-type", "application/json"),
        ]);
        assert!(matches!(
            check_body_headers(&big),
            Err(ApiError::PayloadTooLarge)
        ));
        let text = headers(&[("content-length", "2"), ("content-type", "text/plain")]);
        assert!(matches!(
            check_body_headers(&text),
            Err(ApiError::UnsupportedMediaType)
        ));
        let empty = headers(&[("content-length", "0")]);
        assert!(check_body_headers(&empty).is_ok());
        let bogus = headers(&[("content-length", "ten")]);
        assert!(matches!(
            check_body_headers(&bogus),
            Err(ApiError::BadRequest { .. })
        ));
    }
}
