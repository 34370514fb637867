//! The HTTP surface: feature routers merged into one, and the layers every
//! request passes through, applied in one visible order.
//!
//! Outermost first (a request travels down this list, its response back up):
//!
//! 1. `request_id`: echo or mint `X-Request-Id`; scope it for errors and logs.
//! 2. `security_headers`: nosniff, no-referrer, CSP, no-store, HSTS.
//! 3. `close_when_draining`: from SIGTERM on, HTTP/1 responses carry
//!    `Connection: close` (see `crate::startup`).
//! 4. `telemetry::observe`: one span and log line per request; metrics.
//! 5. `request_limits`: a request target over `MAX_URI_BYTES` → 414, request
//!    headers over `MAX_HEADER_BYTES` → 431 (hyper's own limits are set
//!    above these in `crate::listener`, so these answers are problem+json).
//! 6. catch-panic: a panicking handler becomes an opaque problem+json 500.
//! 7. `shed_load`: more than `MAX_CONCURRENT_REQUESTS` at once → 503.
//! 8. `timeout`: a request running past `REQUEST_TIMEOUT_SECS` → 503.
//! 9. `retry::retry_lost_reads`: a bodiless GET/HEAD whose database
//!    connection was lost under it runs once more (from the rate limiter
//!    on, which reads the caller's context from the database too).
//! 10. `rate_limit::layer`: per the route's class (declared with the
//!    route), per IP or user → 429 with headers. For reads and writes it
//!    verifies the access token and reads the caller's session context
//!    once (`auth::Authentication`), which `AuthUser` then reuses.
//! 11. `body_gate`: declared bodies over 64 KiB → 413, non-JSON bodies → 415;
//!    `DefaultBodyLimit` caps streamed (chunked) bodies at the same size.
//! 12. `client_gate::gate`: `/v1` apps below the platform minimum → 426.
//!
//! Unknown paths and methods answer problem+json 404 / 405 like everything else.

pub mod auth;
pub mod client_gate;
pub mod client_ip;
pub mod client_version;
#[cfg(test)]
mod client_version_props;
pub mod cursor;
pub mod extract;
pub mod headers;
pub mod health;
pub mod jwks;
pub mod request_id;
pub mod retry;
pub mod routes;
pub mod secret;
pub mod validate;

use crate::{error::ApiError, rate_limit::layer::RouteClasses, state::AppState, telemetry};
use axum::{
    extract::{DefaultBodyLimit, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, Uri, Version},
    middleware::{from_fn, from_fn_with_state, Next},
    response::{IntoResponse, Response},
    Router,
};
use routes::{ApiRouter, RouteSpec};
use std::{any::Any, sync::Arc};
use tower_http::catch_panic::CatchPanicLayer;

/// Every route of the API, with its operation id and rate-limit class.
pub fn api_routes() -> ApiRouter {
    ApiRouter::new()
        .unlimited(Method::GET, "/healthz", "get_healthz", health::get_healthz)
        .unlimited(Method::GET, "/readyz", "get_readyz", health::get_readyz)
        .merge(jwks::router())
        .merge(crate::auth::routes::router())
        .merge(crate::sessions::routes::router())
        .merge(crate::mfa::routes::router())
        .merge(crate::mfa::challenge::router())
        .merge(crate::admin::routes::router())
        .merge(crate::admin::audit_events::router())
        .merge(crate::alerts::routes::router())
        .merge(crate::admin::users::router())
        .merge(crate::devices::routes::router())
        .merge(crate::notes::routes::router())
        .merge(crate::profile::routes::router())
        .merge(crate::admin::accounts::router())
        .merge(crate::admin::client_policy::router())
        .merge(crate::rate_limit_requests::routes::router())
        .merge(crate::admin::rate_limit_requests::router())
        .merge(crate::attestation::routes::router())
}

/// The complete application: the API's routes plus `extra` (tests mount
/// probes here; production passes an empty router), behind every layer.
pub fn app(state: AppState, extra: ApiRouter) -> (Router, Vec<RouteSpec>) {
    let (routes, table) = api_routes().merge(extra).into_parts();
    let classes = Arc::new(RouteClasses::new(&table));
    let router = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), client_gate::gate))
        .layer(DefaultBodyLimit::max(headers::MAX_BODY_BYTES))
        .layer(from_fn(headers::body_gate))
        .layer(from_fn_with_state(
            (state.clone(), classes),
            crate::rate_limit::layer::layer,
        ))
        // `DPoP-Nonce` on every answer when DPOP_NONCE=true (RFC 9449 §8).
        .layer(from_fn_with_state(
            state.clone(),
            crate::dpop::nonce::advertise,
        ))
        .layer(from_fn(retry::retry_lost_reads))
        .layer(from_fn_with_state(state.clone(), timeout))
        .layer(from_fn_with_state(state.clone(), shed_load))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(state.clone(), request_limits))
        .layer(from_fn(telemetry::observe))
        .layer(from_fn_with_state(state.clone(), close_when_draining))
        .layer(from_fn_with_state(state.clone(), headers::security_headers))
        .layer(from_fn(request_id::layer))
        .with_state(state);
    (router, table)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The service's own limits on the request head. The request target is
/// measured as its path and query (all an HTTP/1.1 origin-form target
/// carries; the authority is the `Host` header, or HTTP/2's `:authority`,
/// bounded by the HTTP/2 header list limit). Headers are measured as HTTP/2
/// measures a header list (RFC 9113 §6.5.2): for each field, the bytes of
/// its name and of its value plus 32, summed; the same on both protocols,
/// and always above the bytes an HTTP/1.1 client sends for them (name, ": ",
/// value, CRLF: 4 bytes of overhead, not 32).
async fn request_limits(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limits = state.config.listener;
    if uri_bytes(req.uri()) > limits.max_uri_bytes {
        metrics::counter!("http_requests_refused_total", "reason" => "uri_too_long").increment(1);
        return ApiError::UriTooLong {
            max_bytes: limits.max_uri_bytes,
        }
        .into_response();
    }
    if header_bytes(req.headers()) > limits.max_header_bytes {
        metrics::counter!("http_requests_refused_total", "reason" => "headers_too_large")
            .increment(1);
        return ApiError::HeadersTooLarge {
            max_bytes: limits.max_header_bytes,
        }
        .into_response();
    }
    next.run(req).await
}

/// The request target's length as [`request_limits`] counts it.
pub fn uri_bytes(uri: &Uri) -> usize {
    uri.path_and_query().map_or(0, |p| p.as_str().len())
}

/// The request headers' size as [`request_limits`] counts it.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// While the service drains before shutdown, every HTTP/1 response asks
/// the client to close the connection, so no request is sent on a
/// kept-alive connection that the server is about to close; hyper closes
/// it after the response. HTTP/2 forbids the header: those connections get
/// a GOAWAY when the listener closes (hyper's graceful shutdown).
async fn close_when_draining(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let http1 = req.version() < Version::HTTP_2;
    let mut response = next.run(req).await;
    if http1 && state.draining.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Load shedding: a request beyond the concurrency bound is refused at
/// once (503, `Retry-After`) instead of queueing without bound.
async fn shed_load(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Probes are exempt: an orchestrator that reads "overloaded" as "dead"
    // would restart a busy process and make the overload worse.
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        metrics::counter!("http_requests_shed_total").increment(1);
        return ApiError::Unavailable {
            code: "overloaded",
            retry_after_secs: 1,
        }
        .into_response();
    };
    next.run(req).await
}

async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.config.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable {
            code: "request_timeout",
            retry_after_secs: 1,
        }
        .into_response(),
    }
}

fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    ApiError::internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::policy::Class;

    fn class_of(operation_id: &str) -> Option<Class> {
        let routes = api_routes();
        let route = routes
            .table()
            .iter()
            .find(|r| r.operation_id == operation_id)
            .cloned();
        assert!(route.is_some(), "{operation_id} is not routed");
        route.and_then(|r| r.class)
    }

    #[test]
    fn head_sizes_are_counted_as_documented() {
        let uri: Uri = "/v1/users?cursor=abc".parse().unwrap_or_default();
        assert_eq!(uri_bytes(&uri), 20);
        // HTTP/2 puts the scheme and authority in the URI: not counted.
        let uri: Uri = "https://api.example.com/healthz"
            .parse()
            .unwrap_or_default();
        assert_eq!(uri_bytes(&uri), 8);
        let mut headers = HeaderMap::new();
        assert_eq!(header_bytes(&headers), 0);
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.append("x-a", HeaderValue::from_static(""));
        headers.append("x-a", HeaderValue::from_static("1"));
        // (4 + 11 + 32) + (3 + 0 + 32) + (3 + 1 + 32): repeated fields
        // count each time.
        assert_eq!(header_bytes(&headers), 47 + 35 + 36);
    }

    #[test]
    fn every_route_that_checks_a_password_or_a_code_is_a_credential_route() {
        for op in [
            "register",
            "verify_email",
            "resend_verification",
            "login",
            "complete_mfa",
            "forgot_password",
            "reset_password",
            "change_password",
            "request_email_change",
            "confirm_email_change",
            "delete_me",
            "setup_totp",
            "confirm_totp",
            "disable_totp",
            "regenerate_recovery_codes",
        ] {
            assert_eq!(class_of(op), Some(Class::Credentials), "{op}");
        }
        assert_eq!(class_of("refresh_tokens"), Some(Class::Refresh));
    }

    #[test]
    fn only_the_operational_endpoints_are_unlimited_and_routes_use_route_classes() {
        let routes = api_routes();
        for r in routes.table() {
            match r.class {
                None => assert!(
                    !r.path.starts_with("/v1"),
                    "{} {} is under /v1 and unlimited",
                    r.method,
                    r.path
                ),
                Some(class) => assert!(
                    Class::ROUTED.contains(&class),
                    "{} {}: {} is not a route class",
                    r.method,
                    r.path,
                    class.name()
                ),
            }
        }
        assert_eq!(class_of("get_healthz"), None);
        assert_eq!(class_of("get_readyz"), None);
        assert_eq!(class_of("get_jwks"), None);
    }
}
