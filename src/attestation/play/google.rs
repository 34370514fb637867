//! Play Integrity "Google decodes" mode: the token is sent to Google's
//! `decodeIntegrityToken` endpoint instead of being decrypted here.
//!
//! Flow, per [`IntegrityTokenDecoder::decode`]:
//!
//! 1. An OAuth 2.0 access token for the scope [`SCOPE`] is taken from the
//!    cache, or obtained by posting an RS256-signed JWT assertion (RFC 7523:
//!    `iss` = the service account's `client_email`, `aud` = its
//!    `token_uri`, lifetime [`ASSERTION_LIFETIME`]) to `token_uri` with
//!    `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`. It is cached
//!    until [`REFRESH_MARGIN`] before its `expires_in`; a 401 from the
//!    decode endpoint drops it.
//! 2. `POST {api_base}/v1/{package}:decodeIntegrityToken` with
//!    `{"integrity_token": …}` and the bearer token; the answer's
//!    `tokenPayloadExternal` object is the payload that
//!    [`super::check_verdict`] then judges, exactly as in local mode.
//!
//! Threats and controls: outbound calls go through
//! [`crate::outbound::client`] (no redirects followed, so a 3xx is an
//! error; a total timeout) and [`crate::outbound::read_capped`] (bounded
//! bodies). The service-account key, the assertion, the access token and the
//! integrity token never appear in errors or logs; errors carry HTTP status
//! codes only. A token longer than [`super::MAX_TOKEN_LEN`] is refused before
//! any call. The package name is restricted to the characters of an Android
//! application id, so it cannot change the request path.
//!
//! Both base URLs (`token_uri` in the key file and the API base, default
//! [`DEFAULT_API_BASE`]) can be pointed elsewhere; that is how the tests run
//! this against a fake Google. It has not been run against the real one.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::{pkcs1::EncodeRsaPrivateKey, pkcs8::DecodePrivateKey, PrivateKey};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::{DecodeFuture, IntegrityTokenDecoder, PlayIntegrityError, MAX_TOKEN_LEN};

/// Where Google's Play Integrity API lives.
pub const DEFAULT_API_BASE: &str = "https://playintegrity.googleapis.com";
/// The OAuth 2.0 scope the access token is asked for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/playintegrity";
/// The RFC 7523 grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long a signed assertion is valid (Google accepts at most one hour).
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// A cached access token is replaced this long before it expires.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Total time allowed for one outbound call.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from either endpoint.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The fields of a Google Cloud service-account JSON key that are used.
#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: Zeroizing<String>,
    token_uri: String,
    #[serde(default)]
    private_key_id: Option<String>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Zeroizing<String>,
    expires_in: u64,
}

struct CachedToken {
    access_token: SecretString,
    refresh_at: Instant,
}

/// Decodes integrity tokens by asking Google, authenticated as a service
/// account that is linked to the app in the Play Console.
pub struct GoogleDecoder {
    client_email: String,
    key_id: Option<String>,
    signing_key: EncodingKey,
    token_uri: String,
    decode_url: String,
    http: reqwest::Client,
    cache: Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for GoogleDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleDecoder")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("decode_url", &self.decode_url)
            .finish_non_exhaustive()
    }
}

impl GoogleDecoder {
    /// Reads a service-account JSON key (`client_email`, `private_key` as
    /// PEM PKCS#8 RSA, `token_uri`) and prepares calls to
    /// `{api_base}/v1/{package}:decodeIntegrityToken`.
    pub fn from_service_account_json(
        key_json: &[u8],
        package: &str,
        api_base: &str,
    ) -> Result<Self, PlayIntegrityError> {
        let key: ServiceAccountKey = serde_json::from_slice(key_json)
            .map_err(|_| PlayIntegrityError::InvalidServiceAccount)?;
        if key.client_email.trim().is_empty() || key.token_uri.trim().is_empty() {
            return Err(PlayIntegrityError::InvalidServiceAccount);
        }
        let signing_key = signing_key(&key.private_key)?;
        let package = package.trim();
        if package.is_empty()
            || !package
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        {
            return Err(PlayIntegrityError::InvalidPackageName);
        }
        let http = crate::outbound::client(HTTP_TIMEOUT)
            .map_err(|_| PlayIntegrityError::GoogleUnavailable("building the HTTP client"))?;
        Ok(Self {
            client_email: key.client_email.trim().to_owned(),
            key_id: key.private_key_id,
            signing_key,
            token_uri: key.token_uri.trim().to_owned(),
            decode_url: format!(
                "{}/v1/{package}:decodeIntegrityToken",
                api_base.trim().trim_end_matches('/')
            ),
            http,
            cache: Mutex::new(None),
        })
    }

    /// The signed RS256 assertion for the token endpoint.
    fn assertion(&self) -> Result<String, PlayIntegrityError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| PlayIntegrityError::GoogleUnavailable("the clock is before 1970"))?
            .as_secs();
        let claims = AssertionClaims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME.as_secs(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid.clone_from(&self.key_id);
        jsonwebtoken::encode(&header, &claims, &self.signing_key)
            .map_err(|_| PlayIntegrityError::GoogleUnavailable("signing the assertion"))
    }

    /// A valid access token, from the cache or freshly obtained.
    async fn access_token(&self) -> Result<SecretString, PlayIntegrityError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref() {
            if Instant::now() < cached.refresh_at {
                return Ok(cached.access_token.clone());
            }
        }
        let assertion = self.assertion()?;
        let response = self
            .http
            .post(&self.token_uri)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|_| PlayIntegrityError::GoogleUnavailable("token endpoint unreachable"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(if status.is_client_error() {
                PlayIntegrityError::GoogleAuthFailed(status.as_u16())
            } else {
                PlayIntegrityError::GoogleUnavailable("token endpoint answered with an error")
            });
        }
        let body = crate::outbound::read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|_| PlayIntegrityError::GoogleUnavailable("token answer unreadable"))?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| PlayIntegrityError::GoogleUnavailable("token answer malformed"))?;
        let lifetime = Duration::from_secs(answer.expires_in).saturating_sub(REFRESH_MARGIN);
        let access_token = SecretString::from(answer.access_token.as_str());
        *cache = Some(CachedToken {
            access_token: access_token.clone(),
            refresh_at: Instant::now() + lifetime,
        });
        Ok(access_token)
    }

    /// The work of [`IntegrityTokenDecoder::decode`].
    pub async fn decode_token(&self, token: &str) -> Result<Value, PlayIntegrityError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(PlayIntegrityError::TokenTooLarge);
        }
        let access_token = self.access_token().await?;
        let response = self
            .http
            .post(&self.decode_url)
            .bearer_auth(access_token.expose_secret())
            .json(&json!({ "integrity_token": token }))
            .send()
            .await
            .map_err(|_| PlayIntegrityError::GoogleUnavailable("decode endpoint unreachable"))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // The access token may have been revoked: get a new one next time.
            *self.cache.lock().await = None;
        }
        if status.is_client_error() {
            return Err(PlayIntegrityError::GoogleRefused(status.as_u16()));
        }
        if !status.is_success() {
            return Err(PlayIntegrityError::GoogleUnavailable(
                "decode endpoint answered with an error or a redirect",
            ));
        }
        let body = crate::outbound::read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|_| PlayIntegrityError::GoogleUnavailable("decode answer unreadable"))?;
        let mut answer: Value =
            serde_json::from_slice(&body).map_err(|_| PlayIntegrityError::MalformedPayload)?;
        match answer.get_mut("tokenPayloadExternal").map(Value::take) {
            Some(payload @ Value::Object(_)) => Ok(payload),
            _ => Err(PlayIntegrityError::MalformedPayload),
        }
    }
}

/// jsonwebtoken's RustCrypto RSA signer takes PKCS#1 DER; Google's key
/// files hold PKCS#8 PEM. The intermediate DER is wiped on drop.
fn signing_key(pem: &str) -> Result<EncodingKey, PlayIntegrityError> {
    let key = PrivateKey::from_pkcs8_pem(pem.trim())
        .map_err(|_| PlayIntegrityError::InvalidServiceAccount)?;
    let der = key
        .to_pkcs1_der()
        .map_err(|_| PlayIntegrityError::InvalidServiceAccount)?;
    Ok(EncodingKey::from_rsa_der(der.as_bytes()))
}

impl IntegrityTokenDecoder for GoogleDecoder {
    fn decode<'a>(&'a self, token: &'a str) -> DecodeFuture<'a> {
        Box::pin(self.decode_token(token))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "google_tests.rs"]
mod tests;
