//! Optional server nonces (RFC 9449 §8, `DPOP_NONCE=true`): a proof must
//! carry a `nonce` the server handed out recently, so a proof cannot be
//! made in advance for later use.
//!
//! Stateless: a nonce is a time window's number and an HMAC of it under the
//! current `CODE_HMAC_KEYS` key, so every process issues and accepts the
//! same nonces without storage. A nonce is accepted during its window and
//! the next one ([`WINDOW_SECS`] each); a rotated-out key's nonces keep
//! working while the key stays in the ring.

use crate::{crypto::hash::constant_time_eq, state::AppState};
use axum::{
    extract::{Request, State},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

/// Length of one nonce window, seconds.
pub const WINDOW_SECS: i64 = 300;

/// The response header that hands out the current nonce.
pub const HEADER: &str = "dpop-nonce";

/// The MAC's purpose label (keeps it apart from every code MAC).
const PURPOSE: &str = "dpop-nonce";

/// Bytes of the MAC kept in a nonce (128 bits).
const MAC_BYTES: usize = 16;

fn window_of(now_secs: i64) -> i64 {
    now_secs.div_euclid(WINDOW_SECS)
}

/// The nonce of the window containing `now_secs`.
pub fn issue(state: &AppState, now_secs: i64) -> String {
    let window = window_of(now_secs);
    let mac = state.keys.codes.hash(PURPOSE, &window.to_string(), "").mac;
    let tag = mac.get(..MAC_BYTES).unwrap_or(&mac);
    format!("{window}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Whether `nonce` was issued by [`issue`] in the current or the previous
/// window.
pub fn is_fresh(state: &AppState, nonce: &str, now_secs: i64) -> bool {
    let Some((window, tag)) = nonce.split_once('.') else {
        return false;
    };
    let Ok(window) = window.parse::<i64>() else {
        return false;
    };
    let current = window_of(now_secs);
    if window != current && window != current - 1 {
        return false;
    }
    let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
        return false;
    };
    state
        .keys
        .codes
        .candidates(PURPOSE, &window.to_string(), "")
        .iter()
        .any(|c| constant_time_eq(c.mac.get(..MAC_BYTES).unwrap_or(&c.mac), &tag))
}

/// Middleware: with `DPOP_NONCE=true`, every response carries the current
/// nonce in `DPoP-Nonce` (so the app has one before it needs it).
pub async fn advertise(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if state.config.dpop.nonce {
        let nonce = issue(&state, state.clock.now().timestamp());
        if let Ok(value) = HeaderValue::from_str(&nonce) {
            response.headers_mut().insert(HEADER, value);
        }
    }
    response
}
