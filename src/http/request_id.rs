//! `X-Request-Id`: echo a well-formed incoming id, otherwise mint a UUIDv7.
//!
//! The id is held in a task-local (`crate::request_scope`) for the life of
//! the request, so every problem body, log line and audit row can name it
//! without threading it through each call. Incoming ids are length- and
//! charset-checked: a client must not be able to inject newlines or
//! megabytes into our logs.

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id as a request extension, for extractors.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Whether a client-supplied id is safe to echo and log.
pub fn is_well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_well_formed(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = crate::request_scope::scope(id.clone(), next.run(req)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_well_formed;

    #[test]
    fn only_short_plain_ids_are_echoed() {
        assert!(is_well_formed("abc-123_X.y"));
        assert!(is_well_formed(&"a".repeat(128)));
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&"a".repeat(129)));
        assert!(!is_well_formed("abc\r\nInjected: 1"));
        assert!(!is_well_formed("a b"));
        assert!(!is_well_formed("ünïcode"));
    }
}
