//! Access tokens: short-lived JWTs (RFC 7519) in the RFC 9068 access-token
//! profile, signed with Ed25519 (`alg: EdDSA`, RFC 8037).
//!
//! The threat is a forged or confused token being accepted: `alg: none`, an
//! HS256 token "signed" with our public key as the HMAC secret, a header that
//! points at the attacker's own key (`jku`, `jwk`, `x5u`, `x5c`), an ID token
//! or other JWT replayed as an access token, or a token from another issuer
//! or for another audience. RFC 8725 (JWT BCP) is the checklist, and the key
//! decisions follow from it:
//!
//! - One algorithm, pinned: anything but `EdDSA` is refused before a key is
//!   even looked up (RFC 8725 §3.1, §3.2). There is no HMAC key anywhere, so
//!   there is nothing to confuse an asymmetric key with.
//! - Keys come only from our ring, chosen by `kid`; header fields that name a
//!   key or a URL are never read, let alone fetched.
//! - Explicit typing: `typ` must be `at+jwt` (RFC 9068 §4, RFC 8725 §3.11).
//! - Time comes from the caller's clock, never the system's: `exp` is checked
//!   here against `now`, with [`EXP_LEEWAY_SECS`] of leeway for clock skew.
//! - Every verification failure is a [`TokenError`] that the HTTP layer turns
//!   into one indistinguishable 401; the variants exist for logs and tests.
//!
//! - A token that verified is remembered by its SHA-256 for the process's
//!   life (bounded), so the signature is checked once per token, not once
//!   per request; the time claims are checked on every use (`verified`).
//!
//! Layout: `signing` holds the key ring (parsing, kids, JWKS), `spec`
//! reads `SIGNING_KEYS`, `claims` holds the claims, `issue` issues,
//! `verify` verifies, `verified` remembers; the JWKS document is served by
//! `http::jwks` (this leaf names no http type).

mod claims;
mod issue;
mod signing;
mod spec;
#[cfg(test)]
mod tests;
mod verified;
mod verify;

pub use claims::{AccessClaims, Confirmation, TokenSettings};
pub use signing::{SigningKey, SigningKeys};

/// The `typ` header of every access token we issue (RFC 9068 §2.1).
pub const TOKEN_TYPE: &str = "at+jwt";

/// Tokens longer than this are refused before any parsing. Ours are well under
/// 1 KiB; the cap bounds the work an unauthenticated request can cause.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Clock skew tolerated on `exp` (and `nbf`, should a token carry one).
pub const EXP_LEEWAY_SECS: i64 = 30;

/// How far in the future `iat` may be. A token "issued" later than that was
/// minted by a signer whose clock is badly wrong, or crafted to outlive its
/// intended lifetime; either way it is refused.
pub const MAX_IAT_SKEW_SECS: i64 = 60;

/// Why a token could not be issued or verified, or keys could not be loaded.
///
/// Messages never contain key material or the token itself: they end up in
/// logs. `InvalidKey` names the offending entry by position, never by value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, not base64url/JSON, too long, or a header we refuse.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not `EdDSA` (including `none` and `HS256`).
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    /// The header's `typ` is not `at+jwt`.
    #[error("token is not an access token")]
    WrongType,
    /// No `kid`, a malformed one, or one that is not in the key ring.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify under the key the `kid` names.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is more than the leeway in the past.
    #[error("token expired")]
    Expired,
    /// A required claim is missing or mistyped, or `iss`, `aud`, `iat` or
    /// `nbf` do not hold.
    #[error("invalid token claims")]
    InvalidClaims,
    /// `SIGNING_KEYS` (or a key in it) could not be used.
    #[error("invalid signing key: {0}")]
    InvalidKey(String),
    /// A fault on our side (signing failed, the clock is out of range).
    #[error("token internal error: {0}")]
    Internal(String),
}
