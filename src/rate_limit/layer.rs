//! The rate-limit middleware and its response headers.
//!
//! Runs after routing (it needs the route template) and before the body is
//! read, so a refused request costs almost nothing. Reads and writes with
//! a valid access token are limited per user (an attacker cannot spend a
//! victim's budget: the token must verify); everything else per client IP,
//! resolved through `TRUSTED_PROXIES` only, and per IPv6 prefix
//! (`RATE_LIMIT_IPV6_PREFIX`) for IPv6 clients.
//!
//! Headers follow the IETF httpapi rate-limit draft's structured fields:
//! `RateLimit-Policy: "credentials";q=20;w=60` and
//! `RateLimit: "credentials";r=0;t=42`.

use super::{
    gcra::{Decision, Quota},
    policy::{classify, Class, Tier},
    Limiter,
};
use crate::{http::client_ip, state::AppState};
use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(class) = route.and_then(|r| classify(req.method(), &r)) else {
        return next.run(req).await;
    };
    let (mut subject, user) = subject(&state, &req, class);
    let mut quota = state.limiter.quota(class);
    if let Some(user_id) = user {
        // A raised tier scales this user's read and write quotas; the tier
        // is part of the key, so a change starts from a clean slate.
        match tier_of(&state, user_id).await {
            Ok(tier) => {
                quota = tier.apply(quota);
                subject = format!("{subject}:{}", tier.as_str());
            }
            Err(e) => return e.into_response(),
        }
    }
    let now_ms = state.clock.now().timestamp_millis();
    let decision = match state
        .limiter
        .check_with(class, quota, &subject, now_ms)
        .await
    {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let mut response = match Limiter::enforce(class, decision) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
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

async fn tier_of(state: &AppState, user_id: uuid::Uuid) -> Result<Tier, crate::error::ApiError> {
    let mut conn = state.db.acquire().await?;
    let tier = sqlx::query_scalar!(
        "SELECT rate_limit_tier FROM users WHERE user_id = $1",
        user_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(tier.map_or(Tier::Standard, |t| Tier::parse(&t)))
}

/// The key to count against, and the user when it is a verified one.
fn subject(state: &AppState, req: &Request, class: Class) -> (String, Option<uuid::Uuid>) {
    if matches!(class, Class::Reads | Class::Writes) {
        let token = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        if let Some(claims) = token.and_then(|t| {
            state
                .keys
                .signing
                .verify(&state.token_settings, state.clock.now(), t)
                .ok()
        }) {
            return (format!("user:{}", claims.sub), Some(claims.sub));
        }
    }
    let ip = client_ip(state, req);
    let key = client_ip::rate_key(ip, state.config.rate_limit_ipv6_prefix);
    (format!("ip:{key}"), None)
}

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
