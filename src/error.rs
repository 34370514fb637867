//! `ApiError`: the one error type handlers return, rendered as RFC 9457
//! `application/problem+json`.
//!
//! Every variant documents its status and stable `code`, which clients
//! switch on. 5xx bodies are deliberately opaque: the cause chain travels to
//! the request log in a response extension (logged exactly once by the
//! telemetry layer) and never to the client, so no SQL text, stack trace or
//! internal type name can leak.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use std::sync::Arc;

/// One invalid field of a request body.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `device.name`; empty for the body itself.
    pub field: String,
    /// Stable machine code: `unknown_field`, `missing_field`, `invalid_type`, `length`, …
    pub code: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed_json`: the body is not syntactically valid JSON.
    #[error("malformed JSON body")]
    MalformedJson,
    /// 400 with a specific code, e.g. `invalid_header`.
    #[error("bad request: {code}")]
    BadRequest { code: &'static str, detail: String },
    /// 401: credentials missing or invalid. `code` e.g. `invalid_token`.
    #[error("unauthorized: {code}")]
    Unauthorized {
        code: &'static str,
        detail: &'static str,
    },
    /// 401 `reauthentication_required`: the token is valid but the session's
    /// last real sign-in is older than a staff route allows; the app signs
    /// in again (a refresh does not help). RFC 9470's step-up challenge.
    #[error("reauthentication required")]
    ReauthenticationRequired { max_age_secs: u64 },
    /// 403: authenticated but not allowed. `code` e.g. `forbidden`.
    #[error("forbidden: {code}")]
    Forbidden {
        code: &'static str,
        detail: &'static str,
    },
    /// 404 `not_found`: missing *or not yours*; the two are indistinguishable.
    #[error("not found")]
    NotFound,
    /// 405 `method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 with a specific code.
    #[error("conflict: {code}")]
    Conflict {
        code: &'static str,
        detail: &'static str,
    },
    /// 413 `payload_too_large`: the body exceeds the 64 KiB limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 414 `uri_too_long`: the request target exceeds `MAX_URI_BYTES`.
    #[error("URI too long")]
    UriTooLong { max_bytes: usize },
    /// 431 `headers_too_large`: the request headers exceed `MAX_HEADER_BYTES`.
    #[error("request headers too large")]
    HeadersTooLarge { max_bytes: usize },
    /// 415 `unsupported_media_type`: a body that is not `application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 422 `validation_failed`: well-formed JSON that breaks the schema or a rule.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 426 `client_upgrade_required`: the app is older than the platform minimum.
    #[error("client upgrade required")]
    UpgradeRequired {
        min_version: String,
        store_url: Option<String>,
    },
    /// 429 `rate_limited`, with `Retry-After`.
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// 503 with `Retry-After`; `code` e.g. `not_ready`, `request_timeout`, `overloaded`.
    #[error("service unavailable: {code}")]
    Unavailable {
        code: &'static str,
        retry_after_secs: u64,
    },
    /// 503 `database_unavailable` with `Retry-After`: the database
    /// connection a request was using broke under it (the backend was
    /// terminated, a failover, a network cut). The cause is logged like a
    /// 500's; the response carries [`ConnectionLost`] so the read-retry
    /// layer ([`crate::http::retry`]) may run a safe request once more.
    #[error("database connection lost")]
    ConnectionLost(#[source] anyhow::Error),
    /// 500 `internal_error`: a bug or an unexpected failure; the cause is logged, not sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Marks a response whose request failed because its database connection
/// was lost (not because the pool was exhausted): nothing the request did
/// is known to have committed unless it was a read.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLost;

/// Seconds a client waits before retrying after a lost database
/// connection: a fresh connection is normally there at once, a failover
/// takes a few seconds.
pub const CONNECTION_LOST_RETRY_AFTER_SECS: u64 = 1;

/// Whether `e` means the connection to PostgreSQL itself failed (rather
/// than the statement): an I/O or TLS error, a protocol desync after a
/// cut, a closed pool or crashed worker, or a server error of SQLSTATE
/// class 08 (connection exception) or 57P01–57P03 (terminated by an
/// administrator, `pg_terminate_backend`, a crash or a shutdown).
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// The cause of a 5xx, carried to the logging layer in the response extensions.
#[derive(Clone, Debug)]
pub struct ErrorCause(pub Arc<anyhow::Error>);

impl ApiError {
    /// A 500, unless the cause is a lost database connection somewhere in
    /// its chain (then the 503 [`Self::ConnectionLost`]).
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        let lost = e.chain().any(|c| {
            c.downcast_ref::<sqlx::Error>()
                .is_some_and(is_connection_error)
        });
        if lost {
            Self::ConnectionLost(e)
        } else {
            Self::Internal(e)
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    /// A single-field validation error.
    pub fn invalid_field(field: &str, code: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError {
            field: field.to_owned(),
            code: code.to_owned(),
            message: message.to_owned(),
        }])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson | Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } | Self::ReauthenticationRequired { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UpgradeRequired { .. } => StatusCode::UPGRADE_REQUIRED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } | Self::ConnectionLost(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::BadRequest { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unavailable { code, .. } => code,
            Self::ReauthenticationRequired { .. } => "reauthentication_required",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UriTooLong { .. } => "uri_too_long",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Validation(_) => "validation_failed",
            Self::UpgradeRequired { .. } => "client_upgrade_required",
            Self::RateLimited { .. } => "rate_limited",
            Self::ConnectionLost(_) => "database_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::MalformedJson => "Malformed JSON",
            Self::BadRequest { .. } => "Bad request",
            Self::Unauthorized { .. } => "Unauthorized",
            Self::ReauthenticationRequired { .. } => "Reauthentication required",
            Self::Forbidden { .. } => "Forbidden",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Conflict { .. } => "Conflict",
            Self::PayloadTooLarge => "Payload too large",
            Self::UriTooLong { .. } => "URI too long",
            Self::HeadersTooLarge { .. } => "Request header fields too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::Validation(_) => "Validation failed",
            Self::UpgradeRequired { .. } => "Client upgrade required",
            Self::RateLimited { .. } => "Too many requests",
            Self::Unavailable { .. } | Self::ConnectionLost(_) => "Service unavailable",
            Self::Internal(_) => "Internal server error",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::MalformedJson => "The request body is not valid JSON.".into(),
            Self::BadRequest { detail, .. } => detail.clone(),
            Self::Unauthorized { detail, .. }
            | Self::Forbidden { detail, .. }
            | Self::Conflict { detail, .. } => (*detail).into(),
            Self::ReauthenticationRequired { .. } => {
                "Staff actions need a recent sign-in. Sign in again with your password and second factor.".into()
            }
            Self::NotFound => "The resource does not exist.".into(),
            Self::MethodNotAllowed => "This method is not allowed on this resource.".into(),
            Self::PayloadTooLarge => "The request body exceeds 64 KiB.".into(),
            Self::UriTooLong { max_bytes } => {
                format!("The request target exceeds {max_bytes} bytes.")
            }
            Self::HeadersTooLarge { max_bytes } => {
                format!("The request headers exceed {max_bytes} bytes in total.")
            }
            Self::UnsupportedMediaType => {
                "Request bodies must be sent as Content-Type: application/json.".into()
            }
            Self::Validation(errors) => match errors.as_slice() {
                [one] if one.field.is_empty() => one.message.clone(),
                [one] => format!("`{}`: {}", one.field, one.message),
                _ => format!("{} fields are invalid.", errors.len()),
            },
            Self::UpgradeRequired { min_version, .. } => {
                format!(
                    "This app version is no longer supported. Update to {min_version} or later."
                )
            }
            Self::RateLimited { retry_after_secs } => {
                format!("Too many requests. Try again in {retry_after_secs} seconds.")
            }
            Self::Unavailable {
                code: "request_timeout",
                ..
            } => "The request took too long and was stopped. Retry later.".into(),
            Self::Unavailable { .. } | Self::ConnectionLost(_) => {
                "The service is temporarily unavailable. Retry later.".into()
            }
            Self::Internal(_) => "An unexpected error occurred.".into(),
        }
    }
}

/// Links a problem may carry to what the client can do about it, as the
/// problem's `links` member (only the links that apply are present).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ProblemLinks {
    /// Where a signed-in user asks for a higher rate-limit tier; set on a
    /// 429 of the `reads` or `writes` class counted per user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_increase: Option<&'static str>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
    request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    links: Option<ProblemLinks>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.render(None)
    }
}

impl ApiError {
    /// The problem response with a `links` member.
    pub fn into_response_with_links(self, links: ProblemLinks) -> Response {
        self.render(Some(links))
    }

    fn render(self, links: Option<ProblemLinks>) -> Response {
        let status = self.status();
        let code = self.code();
        let body = ProblemBody {
            type_: format!("urn:mobile-backend:problem:{code}"),
            title: self.title(),
            status: status.as_u16(),
            detail: self.detail(),
            code,
            request_id: crate::request_scope::current().unwrap_or_default(),
            errors: match &self {
                Self::Validation(errors) => Some(errors),
                _ => None,
            },
            min_version: match &self {
                Self::UpgradeRequired { min_version, .. } => Some(min_version),
                _ => None,
            },
            store_url: match &self {
                Self::UpgradeRequired { store_url, .. } => store_url.as_deref(),
                _ => None,
            },
            links,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            // Only a refused access token says `invalid_token`: generic
            // mobile interceptors refresh and retry on it, which is wrong
            // for a mistyped password or code (and loops on refresh).
            Self::Unauthorized {
                code: "invalid_token",
                ..
            } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            // RFC 9449 §7.1: a refused proof, or one without the server's
            // current nonce, answers with a DPoP challenge.
            Self::Unauthorized {
                code: "dpop_proof_invalid" | "dpop_key_mismatch" | "dpop_required",
                ..
            } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("DPoP algs=\"ES256\", error=\"invalid_dpop_proof\""),
                );
            }
            Self::Unauthorized {
                code: "use_dpop_nonce",
                ..
            } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("DPoP algs=\"ES256\", error=\"use_dpop_nonce\""),
                );
            }
            Self::ReauthenticationRequired { max_age_secs } => {
                let challenge = format!(
                    "Bearer error=\"insufficient_user_authentication\", max_age={max_age_secs}"
                );
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            Self::RateLimited { retry_after_secs }
            | Self::Unavailable {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::ConnectionLost(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(CONNECTION_LOST_RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        if matches!(self, Self::ConnectionLost(_)) {
            response.extensions_mut().insert(ConnectionLost);
        }
        if let Self::Internal(cause) | Self::ConnectionLost(cause) = self {
            response
                .extensions_mut()
                .insert(ErrorCause(Arc::new(cause)));
        }
        response
    }
}

/// Named database constraints that a request can legitimately violate, and
/// the answer each deserves. Mapping by name (not by a racy pre-check)
/// keeps "check then insert" races impossible: the database decides once.
/// Features add their constraints here as they land.
type ConstraintAnswer = fn() -> ApiError;
const CONSTRAINT_ERRORS: &[(&str, ConstraintAnswer)] = &[
    (
        // An email change confirmed after another account took the address.
        "users_email_blind_index_key",
        || ApiError::Conflict {
            code: "email_unavailable",
            detail: "That email address cannot be used for this account.",
        },
    ),
    (
        // A second pending rate-limit request that got past the per-user
        // lock (the handler checks first; this index is the backstop).
        "rate_limit_requests_one_pending",
        request_pending,
    ),
];

/// 409 `request_pending`: the account already has a pending rate-limit
/// request.
pub fn request_pending() -> ApiError {
    ApiError::Conflict {
        code: "request_pending",
        detail: "This account already has a pending request. Wait for the decision or withdraw it first.",
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if is_connection_error(&e) {
            return Self::ConnectionLost(e.into());
        }
        match &e {
            sqlx::Error::PoolTimedOut => {
                return Self::Unavailable {
                    code: "database_unavailable",
                    retry_after_secs: 2,
                }
            }
            sqlx::Error::Database(db) => {
                if let Some(name) = db.constraint() {
                    if let Some((_, make)) = CONSTRAINT_ERRORS.iter().find(|(n, _)| *n == name) {
                        return make();
                    }
                }
            }
            _ => {}
        }
        Self::Internal(e.into())
    }
}

impl From<crate::crypto::CryptoError> for ApiError {
    fn from(e: crate::crypto::CryptoError) -> Self {
        // A ciphertext that fails to open is either tampering or a lost key:
        // both are server-side problems the client cannot fix. Counted and
        // logged apart from other 500s so an alert can watch for it.
        if matches!(e, crate::crypto::CryptoError::Decrypt) {
            metrics::counter!("crypto_open_failures_total").increment(1);
            tracing::error!(
                security_event = "crypt_decrypt_fail",
                "a sealed field failed authentication: tampered, moved between rows, or sealed under another key"
            );
        }
        Self::Internal(anyhow::Error::new(e).context("field decryption failed"))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_a_503_with_retry_after_and_a_pool_timeout_stays_one() {
        let io = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        for e in [
            ApiError::from(io()),
            ApiError::from(sqlx::Error::PoolClosed),
            ApiError::from(sqlx::Error::Protocol("unexpected message".into())),
            ApiError::internal(anyhow::Error::new(io()).context("loading the user key")),
        ] {
            assert!(matches!(e, ApiError::ConnectionLost(_)), "{e:?}");
            assert_eq!(e.code(), "database_unavailable");
            let r = e.into_response();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(r.headers()[header::RETRY_AFTER], "1");
            assert!(r.extensions().get::<ConnectionLost>().is_some());
            assert!(
                r.extensions().get::<ErrorCause>().is_some(),
                "the cause is logged"
            );
        }
        let timeout = ApiError::from(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(timeout.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            timeout.extensions().get::<ConnectionLost>().is_none(),
            "not retried"
        );
        let other = ApiError::from(sqlx::Error::RowNotFound);
        assert!(matches!(other, ApiError::Internal(_)));
        assert!(matches!(
            ApiError::internal(anyhow::anyhow!("a bug")),
            ApiError::Internal(_)
        ));
    }
}
