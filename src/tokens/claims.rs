//! The access-token claims (RFC 9068 §2.2) and the settings tokens are
//! issued and verified under. Issuing is in `issue`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The payload of an access token. Times are seconds since the Unix epoch
/// (RFC 7519 NumericDate). Every field is required when verifying: serde
/// rejects a token missing any of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Our issuer identifier; must equal [`TokenSettings::issuer`].
    pub iss: String,
    /// The API this token is for; must equal [`TokenSettings::audience`].
    pub aud: String,
    /// The account.
    pub sub: Uuid,
    /// The session (refresh-token family), so a revoked session can be told
    /// apart from a live one before the token expires.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    /// Unique per token (UUIDv7), for audit logs and any deny-list.
    pub jti: Uuid,
    pub role: String,
    /// Authenticator assurance level (e.g. `aal1`, `aal2`).
    pub aal: String,
    /// Authentication methods (RFC 8176 values such as `pwd`, `otp`).
    pub amr: Vec<String>,
    /// When the user last actually authenticated (OIDC `auth_time`), which
    /// refreshes do not move; sensitive operations can demand a recent one.
    pub auth_time: i64,
    /// RFC 7800 confirmation: present on the tokens of a device-bound
    /// session (RFC 9449 §6.1), naming the key every request with this
    /// token must prove possession of. Absent on bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The `cnf` claim of a DPoP-bound token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// RFC 7638 SHA-256 thumbprint of the device key, base64url.
    pub jkt: String,
}

/// Issuer, audience and lifetime of access tokens, from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    /// Lifetime of a token: `exp = now + ttl`. Keep it short (minutes): an
    /// access token cannot be revoked before it expires.
    pub ttl: chrono::Duration,
}
