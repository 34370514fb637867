//! Request extractors that make the rules in docs/architecture.md
//! impossible to skip.
//!
//! * [`Json`] replaces axum's: wrong content type → 415, oversized → 413,
//!   malformed → 400, and unknown / missing / mistyped fields or a failed
//!   validation → 422 with `errors[]` naming each field. It always runs the
//!   DTO's `validator` rules, so a handler cannot forget to validate.
//! * [`ClientInfo`] is who is calling from where: the client IP (proxy-aware,
//!   see `client_ip`), user agent, request id and app platform/version, for
//!   sessions and audit rows.

use super::{client_ip, client_version::ClientVersion, headers, request_id::RequestId};
use crate::{
    error::{ApiError, FieldError},
    state::AppState,
};
use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, ConnectInfo, FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

/// A strict JSON body: `T` must derive `Deserialize` with
/// `#[serde(deny_unknown_fields)]` and `Validate`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !headers::is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(_)
                    if std::error::Error::source(&rejection).is_some_and(is_length_limit)
                        || rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::PayloadTooLarge
                }
                _ => {
                    ApiError::bad_request("body_unreadable", "The request body could not be read.")
                }
            })?;
        parse(&bytes).map(Json)
    }
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// Deserialises and validates a JSON body; public so property tests can
/// hammer it without a server.
pub fn parse<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde reads a struct from a JSON array too (`["title", "body"]` as
    // `{title, body}`, fields by position): every body is an object here.
    if bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'[')
    {
        return Err(ApiError::Validation(vec![FieldError {
            field: String::new(),
            code: "invalid_type".into(),
            message: "The body must be a JSON object.".into(),
        }]));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(from_serde)?;
    de.end().map_err(|_| ApiError::MalformedJson)?;
    value
        .validate()
        .map_err(|e| ApiError::Validation(flatten_validation("", &e)))?;
    Ok(value)
}

fn from_serde(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    if !matches!(err.inner().classify(), Category::Data) {
        return ApiError::MalformedJson;
    }
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = strip_position(&err.inner().to_string());
    let named = between_backticks(&message);
    let (code, field) = if message.starts_with("unknown field") {
        ("unknown_field", join_path(&path, named, true))
    } else if message.starts_with("missing field") {
        ("missing_field", join_path(&path, named, false))
    } else if message.starts_with("invalid type") || message.starts_with("invalid length") {
        ("invalid_type", path)
    } else {
        ("invalid_value", path)
    };
    // Keep messages short and free of our type names.
    let message = match code {
        "unknown_field" => "This field is not allowed here.".to_owned(),
        "missing_field" => "This field is required.".to_owned(),
        _ => message,
    };
    ApiError::Validation(vec![FieldError {
        field,
        code: code.to_owned(),
        message,
    }])
}

/// serde_path_to_error may or may not have pushed the offending key already.
fn join_path(path: &str, name: Option<&str>, key_may_be_in_path: bool) -> String {
    match name {
        None => path.to_owned(),
        Some(n) if key_may_be_in_path && (path == n || path.ends_with(&format!(".{n}"))) => {
            path.to_owned()
        }
        Some(n) if path.is_empty() => n.to_owned(),
        Some(n) => format!("{path}.{n}"),
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn between_backticks(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// Flattens validator's nested errors into `errors[]`, sorted by field.
pub fn flatten_validation(prefix: &str, errors: &ValidationErrors) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                out.extend(list.iter().map(|e| {
                    FieldError {
                        field: path.clone(),
                        code: e.code.to_string(),
                        message: e
                            .message
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_else(|| format!("Failed the `{}` rule.", e.code)),
                    }
                }));
            }
            ValidationErrorsKind::Struct(inner) => out.extend(flatten_validation(&path, inner)),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    out.extend(flatten_validation(&format!("{path}[{i}]"), inner));
                }
            }
        }
    }
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

/// A query string, strictly: unknown parameters (with
/// `deny_unknown_fields`), wrong types and failed rules are a 422 problem.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let value = axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map_err(|rejection| {
                let text = rejection.body_text();
                let message = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text)
                    .to_owned();
                ApiError::Validation(vec![FieldError {
                    field: "query".into(),
                    code: "invalid_query".into(),
                    message,
                }])
            })?
            .0;
        value
            .validate()
            .map_err(|e| ApiError::Validation(flatten_validation("", &e)))?;
        Ok(Query(value))
    }
}

/// A path parameter; one that does not parse (a malformed id) is answered
/// exactly like a missing object: 404, never a plain-text 400.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|_| ApiError::NotFound)
    }
}

/// Who is calling, from where, with which app.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub ip: IpAddr,
    /// What this client is counted under: `ip`, or its IPv6 prefix
    /// (`RATE_LIMIT_IPV6_PREFIX`); see [`client_ip::rate_key`].
    pub rate_key: String,
    pub user_agent: Option<String>,
    pub request_id: String,
    pub client: Option<ClientVersion>,
    /// ISO 3166 country from `GEO_COUNTRY_HEADER`, only when the socket
    /// peer is a trusted proxy (a client cannot claim a country).
    pub country: Option<String>,
    /// `X-App-Install-Id`: a random UUID the app creates at first launch.
    /// Bound to the session at sign-in; a refresh from another install is
    /// flagged as device drift.
    pub install_id: Option<uuid::Uuid>,
}

impl crate::audit::AuditClient for ClientInfo {
    fn ip(&self) -> IpAddr {
        self.ip
    }

    fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let ip = client_ip::resolve(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
            state.config.trusted_proxy_header,
        );
        let rate_key = client_ip::rate_key(ip, state.config.rate_limit_ipv6_prefix);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let client = ClientVersion::from_headers(&parts.headers)?;
        let trusted_peer = state
            .config
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&peer));
        let country = state
            .config
            .geo_country_header
            .as_deref()
            .filter(|_| trusted_peer)
            .and_then(|h| parts.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
            .map(str::to_ascii_uppercase);
        let install_id = match parts.headers.get("x-app-install-id") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_install_id",
                            "X-App-Install-Id must be a UUID.",
                        )
                    })?,
            ),
        };
        Ok(Self {
            ip,
            rate_key,
            user_agent,
            request_id,
            client,
            country,
            install_id,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Validate)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[validate(length(min = 1, max = 5))]
        name: String,
        #[validate(nested)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize, Validate)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[validate(range(min = 1, max = 9))]
        n: u8,
    }

    fn err(body: &str) -> (String, Vec<FieldError>) {
        match parse::<Body>(body.as_bytes()) {
            Err(ApiError::Validation(e)) => ("validation_failed".into(), e),
            Err(e) => (e.code().into(), vec![]),
            Ok(_) => ("ok".into(), vec![]),
        }
    }

    #[test]
    fn each_kind_of_bad_body_gets_its_own_code_and_field() {
        assert_eq!(err("{\"name\": ").0, "malformed_json");
        assert_eq!(err("{\"name\":\"a\"} trailing").0, "malformed_json");
        let (_, e) = err(r#"{"name":"a","role":"admin"}"#);
        assert_eq!(
            (e[0].field.as_str(), e[0].code.as_str()),
            ("role", "unknown_field")
        );
        let (_, e) = err(r#"{}"#);
        assert_eq!(
            (e[0].field.as_str(), e[0].code.as_str()),
            ("name", "missing_field")
        );
        let (_, e) = err(r#"{"name": 5}"#);
        assert_eq!(
            (e[0].field.as_str(), e[0].code.as_str()),
            ("name", "invalid_type")
        );
        let (_, e) = err(r#"{"name":"toolong"}"#);
        assert_eq!(
            (e[0].field.as_str(), e[0].code.as_str()),
            ("name", "length")
        );
        let (_, e) = err(r#"{"name":"a","inner":{"n":0}}"#);
        assert_eq!(
            (e[0].field.as_str(), e[0].code.as_str()),
            ("inner.n", "range")
        );
        let (_, e) = err(r#"{"name":"a","inner":{"n":1,"x":1}}"#);
        assert_eq!(
            (e[0].field.as_str(), e[0].code.as_str()),
            ("inner.x", "unknown_field")
        );
        assert_eq!(err(r#"{"name":"ok"}"#).0, "ok");
        // serde would read `["ok", null]` as `{name: "ok", inner: null}`.
        for array in [r#"["ok", null]"#, " \n [\"ok\"]"] {
            let (_, e) = err(array);
            assert_eq!(
                (e[0].field.as_str(), e[0].code.as_str()),
                ("", "invalid_type"),
                "{array}"
            );
        }
    }

    #[test]
    fn deeply_nested_json_is_refused_not_overflowed() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse::<Body>(deep.as_bytes()),
            Err(ApiError::MalformedJson | ApiError::Validation(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse::<Body>(&bytes);
        }
    }
}
