//! The rate-limit middleware and its response headers.
//!
//! Runs after routing (it needs the route template) and before the body is
//! read, so a refused request costs almost nothing. The class of a request
//! is the one its route was registered with (`ApiRouter::route`), looked up
//! in [`RouteClasses`], built once from the route table. Reads and writes with
//! a valid access token are limited per user (an attacker cannot spend a
//! victim's budget: the token must verify); everything else per client IP,
//! resolved through `TRUSTED_PROXIES` only, and per IPv6 prefix
//! (`RATE_LIMIT_IPV6_PREFIX`) for IPv6 clients.
//!
//! Headers follow the IETF httpapi rate-limit draft's structured fields:
//! `RateLimit-Policy: "credentials";q=20;w=60` and
//! `RateLimit: "credentials";r=0;t=42`.
//!
//! A 429 counted per user (`reads`, `writes` with a valid access token) is
//! counted for staff ([`super::refusals`]) and, below the highest tier,
//! links to where the user can ask for more (`links.request_increase`).
//! Credential classes and anonymous callers get neither.

use super::{
    gcra::{Decision, Quota},
    policy::{Class, Tier},
    tiers, Limiter,
};
use crate::{
    error::ProblemLinks,
    http::{
        auth::{Authentication, NoValidToken},
        client_ip,
        routes::RouteSpec,
    },
    state::AppState,
};
use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

/// The class of every routed request: (method, route template) to the
/// class its route was registered with, `None` for an unlimited route.
#[derive(Debug, Default)]
pub struct RouteClasses {
    routes: HashMap<(Method, &'static str), Option<Class>>,
    /// Per template: `Some(class)` when all its routes share that class
    /// (`Some(None)`: all unlimited), `None` when they differ.
    paths: HashMap<&'static str, Option<Option<Class>>>,
}

impl RouteClasses {
    pub fn new(table: &[RouteSpec]) -> Self {
        let mut classes = Self::default();
        for r in table {
            classes.routes.insert((r.method.clone(), r.path), r.class);
            classes
                .paths
                .entry(r.path)
                .and_modify(|shared| {
                    if *shared != Some(r.class) {
                        *shared = None;
                    }
                })
                .or_insert(Some(r.class));
        }
        classes
    }

    /// The class of `method` on the matched `path`. A routed method has its
    /// route's class. axum answers `HEAD` with the `GET` handler, so it
    /// counts as that `GET`. A method the path does not route (answered
    /// 405) counts in `Credentials` or `Refresh` when every route of the
    /// path is in that one class (a wrong verb on a credential path draws
    /// on the credential quota, like the right one), is unlimited when
    /// every route of the path is, and else counts in `Reads` for `GET`
    /// and `HEAD`, `Writes` for the rest.
    pub fn class(&self, method: &Method, path: &str) -> Option<Class> {
        if let Some(class) = self.routes.get(&(method.clone(), path)) {
            return *class;
        }
        if *method == Method::HEAD {
            if let Some(class) = self.routes.get(&(Method::GET, path)) {
                return *class;
            }
        }
        match self.paths.get(path) {
            None => None,
            Some(Some(shared @ (None | Some(Class::Credentials | Class::Refresh)))) => *shared,
            Some(_) if *method == Method::GET || *method == Method::HEAD => Some(Class::Reads),
            Some(_) => Some(Class::Writes),
        }
    }
}

pub async fn layer(
    State((state, classes)): State<(AppState, Arc<RouteClasses>)>,
    mut req: Request,
    next: Next,
) -> Response {
    let class = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| classes.class(req.method(), p.as_str()));
    let Some(class) = class else {
        return next.run(req).await;
    };
    let now = state.clock.now();
    // Reads and writes with a valid access token count per user, at the
    // user's tier. The token is verified and the caller's context read
    // here, once: `AuthUser` takes both from the request's extensions.
    let caller = if matches!(class, Class::Reads | Class::Writes) {
        let verified =
            Authentication::verify(&state, req.headers(), req.method(), req.uri().path(), now)
                .await;
        match verified {
            Ok(Ok(claims)) => match Authentication::load(&state, claims, now).await {
                Ok(done) => {
                    req.extensions_mut().insert(done.clone());
                    Some(done)
                }
                Err(e) => return e.into_response(),
            },
            Ok(Err(refusal)) => {
                req.extensions_mut().insert(NoValidToken(refusal));
                None
            }
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    let mut quota = state.limiter.quota(class);
    let mut tier = Tier::Standard;
    let (subject, user) = match &caller {
        Some(done) => {
            let user_id = done.claims.sub;
            // A raised tier scales this user's read and write quotas; the
            // tier is part of the key, so a change starts from a clean slate.
            if let Some(context) = &done.context {
                tier = tiers::TierInForce::from_row(
                    &context.rate_limit_tier,
                    context.rate_limit_tier_expires_at,
                    now,
                )
                .tier;
            }
            quota = tier.apply(quota);
            (format!("user:{user_id}:{}", tier.as_str()), Some(user_id))
        }
        None => {
            let ip = client_ip(&state, &req);
            let key = client_ip::rate_key(ip, state.config.rate_limit_ipv6_prefix);
            (format!("ip:{key}"), None)
        }
    };
    let now_us = now.timestamp_micros();
    let decision = match state
        .limiter
        .check_with(class, quota, &subject, now_us)
        .await
    {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let mut response = match (Limiter::enforce(class, decision), user) {
        (Ok(()), _) => next.run(req).await,
        (Err(e), Some(user_id)) => {
            state.refusals.record(user_id);
            if tier < Tier::High {
                e.into_response_with_links(ProblemLinks {
                    request_increase: Some(REQUEST_INCREASE_PATH),
                })
            } else {
                e.into_response()
            }
        }
        (Err(e), None) => e.into_response(),
    };
    set_headers(response.headers_mut(), class, quota, decision);
    response
}

pub fn client_ip(state: &AppState, req: &Request) -> IpAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    client_ip::resolve(
        peer,
        req.headers(),
        &state.config.trusted_proxies,
        state.config.trusted_proxy_header,
    )
}

/// Where a signed-in user asks for a higher tier (`POST` there); the link
/// a per-user 429 carries. The route is registered at this path
/// (`rate_limit_requests::routes`).
pub const REQUEST_INCREASE_PATH: &str = "/v1/me/rate-limit-requests";

pub fn set_headers(headers: &mut HeaderMap, class: Class, quota: Quota, d: Decision) {
    let policy = format!(
        "\"{}\";q={};w={}",
        class.name(),
        quota.limit,
        quota.window_ms / 1000
    );
    let state = format!("\"{}\";r={};t={}", class.name(), d.remaining, d.reset_secs);
    if let (Ok(p), Ok(s)) = (
        HeaderValue::from_str(&policy),
        HeaderValue::from_str(&state),
    ) {
        headers.insert("ratelimit-policy", p);
        headers.insert("ratelimit", s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table shaped like the real one: a credential route, the refresh
    /// route, a path mixing classes (`/v1/me`), reads and writes on one
    /// path, and an unlimited probe.
    fn classes() -> RouteClasses {
        let spec = |method: Method, path: &'static str, class: Option<Class>| RouteSpec {
            method,
            path,
            operation_id: "op",
            handler: "op",
            class,
        };
        RouteClasses::new(&[
            spec(Method::POST, "/v1/auth/login", Some(Class::Credentials)),
            spec(Method::POST, "/v1/auth/refresh", Some(Class::Refresh)),
            spec(Method::GET, "/v1/me", Some(Class::Reads)),
            spec(Method::PATCH, "/v1/me", Some(Class::Writes)),
            spec(Method::DELETE, "/v1/me", Some(Class::Credentials)),
            spec(Method::GET, "/v1/devices/{id}", Some(Class::Reads)),
            spec(Method::DELETE, "/v1/devices/{id}", Some(Class::Writes)),
            spec(Method::GET, "/healthz", None),
        ])
    }

    #[test]
    fn a_request_counts_in_its_routes_class() {
        let classes = classes();
        let class = |m: Method, p: &str| classes.class(&m, p);
        assert_eq!(
            class(Method::POST, "/v1/auth/login"),
            Some(Class::Credentials)
        );
        assert_eq!(
            class(Method::POST, "/v1/auth/refresh"),
            Some(Class::Refresh)
        );
        assert_eq!(class(Method::GET, "/v1/me"), Some(Class::Reads));
        assert_eq!(class(Method::PATCH, "/v1/me"), Some(Class::Writes));
        assert_eq!(class(Method::DELETE, "/v1/me"), Some(Class::Credentials));
        assert_eq!(
            class(Method::DELETE, "/v1/devices/{id}"),
            Some(Class::Writes)
        );
        // HEAD is served by the GET handler and counts as that GET.
        assert_eq!(class(Method::HEAD, "/v1/me"), Some(Class::Reads));
        assert_eq!(class(Method::HEAD, "/v1/devices/{id}"), Some(Class::Reads));
        // An unlimited route, and no matched route, have no class.
        assert_eq!(class(Method::GET, "/healthz"), None);
        assert_eq!(class(Method::GET, "/v1/nowhere"), None);
    }

    #[test]
    fn a_method_the_path_does_not_route_counts_like_the_path() {
        let classes = classes();
        let class = |m: Method, p: &str| classes.class(&m, p);
        // Every route of the path is a credential (or refresh) route.
        assert_eq!(
            class(Method::GET, "/v1/auth/login"),
            Some(Class::Credentials)
        );
        assert_eq!(
            class(Method::PUT, "/v1/auth/login"),
            Some(Class::Credentials)
        );
        assert_eq!(class(Method::GET, "/v1/auth/refresh"), Some(Class::Refresh));
        // Mixed classes, or reads and writes: by the method.
        assert_eq!(class(Method::PUT, "/v1/me"), Some(Class::Writes));
        assert_eq!(class(Method::POST, "/v1/devices/{id}"), Some(Class::Writes));
        assert_eq!(class(Method::OPTIONS, "/v1/me"), Some(Class::Writes));
        // Unlimited paths stay unlimited.
        assert_eq!(class(Method::POST, "/healthz"), None);
    }
}
