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
    // (A string, number or null at the top level fails in serde itself and
    // is answered the same way by `from_serde`.)
    if bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'[')
    {
        return Err(ApiError::Validation(vec![not_an_object()]));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => value,
        Err(e) => {
            return Err(match from_serde(e, bytes) {
                ApiError::Validation(first) => ApiError::Validation(every_error::<T>(bytes, first)),
                other => other,
            })
        }
    };
    de.end().map_err(|_| ApiError::MalformedJson)?;
    value
        .validate()
        .map_err(|e| ApiError::Validation(flatten_validation("", &e)))?;
    Ok(value)
}

/// At most this many passes look for further problems in a body that
/// failed: bounded work whatever the body holds.
const MAX_PASSES: usize = 24;

/// Every problem of a body that failed to deserialise, not just the first
/// (`first`, from serde): an app can mark every wrong field of a form at
/// once. serde stops at the first problem, so the body is read as JSON
/// and deserialised again with each problem taken out of the way: an
/// unknown or wrongly typed member is removed, and a missing one gets a
/// stand-in of some JSON type it accepts. When the body then
/// deserialises, the validation rules run too, and report the fields not
/// already reported. Bounded by [`MAX_PASSES`].
fn every_error<T: DeserializeOwned + Validate>(
    bytes: &[u8],
    first: Vec<FieldError>,
) -> Vec<FieldError> {
    let mut errors = first;
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return errors;
    };
    let mut passes = 0;
    while passes < MAX_PASSES {
        passes += 1;
        let err = match serde_path_to_error::deserialize::<_, T>(&doc) {
            Ok(value) => {
                if let Err(e) = value.validate() {
                    for more in flatten_validation("", &e) {
                        if !reported(&errors, &more.field) {
                            errors.push(more);
                        }
                    }
                }
                break;
            }
            Err(err) => err,
        };
        let segments = members(err.path());
        let message = strip_position(&err.inner().to_string());
        let found = describe(&err.path().to_string(), &message, Source::Body);
        if !reported(&errors, &found.field) {
            errors.push(found.clone());
        }
        let moved = if let Some(name) = quoted_after(&message, "unknown field `") {
            remove_member(&mut doc, &segments, name)
        } else if let Some(name) = quoted_after(&message, "missing field `") {
            stand_in::<T>(&mut doc, &segments, name, passes)
        } else {
            match segments.split_last() {
                Some((name, parent)) => remove_member(&mut doc, parent, name),
                None => false,
            }
        };
        if !moved {
            break;
        }
    }
    errors
}

/// The member names and array indices of a serde path, as keys into the
/// body's JSON.
fn members(path: &serde_path_to_error::Path) -> Vec<String> {
    path.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
            _ => None,
        })
        .collect()
}

/// Whether `field` (or a field inside it) was reported already.
fn reported(errors: &[FieldError], field: &str) -> bool {
    errors.iter().any(|e| {
        e.field == field || field.starts_with(&format!("{}.", e.field)) && !e.field.is_empty()
    })
}

/// The JSON value at `path` in `doc`.
fn at_path<'a>(
    doc: &'a mut serde_json::Value,
    path: &[String],
) -> Option<&'a mut serde_json::Value> {
    path.iter().try_fold(doc, |v, key| match v {
        serde_json::Value::Object(map) => map.get_mut(key),
        serde_json::Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

/// Removes member `name` of the object at `path` (serde may or may not
/// have put the member itself at the end of the path); whether it did.
fn remove_member(doc: &mut serde_json::Value, path: &[String], name: &str) -> bool {
    if let Some(serde_json::Value::Object(map)) = at_path(doc, path) {
        if map.remove(name).is_some() {
            return true;
        }
    }
    match path.split_last() {
        Some((last, parent)) if last == name => match at_path(doc, parent) {
            Some(serde_json::Value::Object(map)) => map.remove(name).is_some(),
            _ => false,
        },
        _ => false,
    }
}

/// Puts a stand-in for the missing member `name` of the object at `path`,
/// the first JSON type that gets serde past it; whether one did.
fn stand_in<T: DeserializeOwned>(
    doc: &mut serde_json::Value,
    path: &[String],
    name: &str,
    passes: usize,
) -> bool {
    let candidates = [
        serde_json::Value::String(String::new()),
        serde_json::Value::from(0),
        serde_json::Value::Bool(false),
        serde_json::Value::Array(Vec::new()),
        serde_json::Value::Object(serde_json::Map::new()),
    ];
    let mut member = path.to_vec();
    member.push(name.to_owned());
    for (tried, candidate) in candidates.into_iter().enumerate() {
        if passes + tried >= MAX_PASSES {
            return false;
        }
        match at_path(doc, path) {
            Some(serde_json::Value::Object(map)) => {
                map.insert(name.to_owned(), candidate);
            }
            _ => return false,
        }
        match serde_path_to_error::deserialize::<_, T>(&*doc) {
            Ok(_) => return true,
            Err(err) => {
                let stuck = members(err.path());
                let still_here = stuck.starts_with(&member)
                    || quoted_after(&err.inner().to_string(), "missing field `") == Some(name)
                        && stuck == path;
                if !still_here {
                    return true;
                }
            }
        }
    }
    if let Some(serde_json::Value::Object(map)) = at_path(doc, path) {
        map.remove(name);
    }
    false
}

fn not_an_object() -> FieldError {
    FieldError {
        field: String::new(),
        code: "invalid_type".into(),
        message: "The body must be a JSON object.".into(),
    }
}

fn from_serde(err: serde_path_to_error::Error<serde_json::Error>, bytes: &[u8]) -> ApiError {
    use serde_json::error::Category;
    if !matches!(err.inner().classify(), Category::Data) {
        // serde_json reports a non-string where an enum is expected
        // (`{"role": null}`, `{"role": 5}`) as a syntax error, though the
        // JSON is well-formed: that is a wrong type at the path.
        let well_formed = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        let path = err.path().to_string();
        if well_formed && !matches!(path.as_str(), "." | "") {
            return ApiError::Validation(vec![FieldError {
                field: printable_prefix_path(&path),
                code: "invalid_type".into(),
                message: "Expected one of the allowed values (a string).".into(),
            }]);
        }
        return ApiError::MalformedJson;
    }
    let path = err.path().to_string();
    let message = strip_position(&err.inner().to_string());
    let error = describe(&path, &message, Source::Body);
    ApiError::Validation(vec![error])
}

/// Where a rejected value came from: its wording differs (a query
/// parameter is text, never a JSON type).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Body,
    Query,
}

/// The most characters of a client-supplied name (an unknown field or
/// parameter) an error repeats.
pub const MAX_ECHOED_NAME: usize = 64;

/// At most [`MAX_ECHOED_NAME`] characters of `raw`, up to its first
/// character that is not printable (a control, format or bidirectional
/// character, e.g. an ANSI escape), with `…` when anything was left out.
/// Client text goes through this before it reaches an error (and nothing
/// here logs it).
pub fn printable_prefix(raw: &str) -> String {
    let printable = |c: &char| !c.is_control() && !is_invisible_format(*c);
    let kept: String = raw
        .chars()
        .take_while(printable)
        .take(MAX_ECHOED_NAME)
        .collect();
    if kept.len() < raw.len() {
        format!("{kept}…")
    } else {
        kept
    }
}

/// Unicode format characters that change how text reads without showing
/// (bidirectional controls, zero-width characters, the BOM).
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// Translates one serde error (`message`, at `path`) into the API's own
/// words: the field, and what was expected as a JSON type or value. No
/// Rust type name (`struct LoginRequest`, `u32`, `sequence`), no echo of
/// the rejected value, and a client-supplied name only as a bounded
/// printable prefix.
fn describe(path: &str, message: &str, source: Source) -> FieldError {
    let path = if path == "." || path == "?" { "" } else { path };
    let field = |p: &str| printable_prefix_path(p);
    if let Some(name) = quoted_after(message, "unknown field `") {
        return FieldError {
            field: field(&join_path(path, Some(name), true)),
            code: "unknown_field".into(),
            message: match source {
                Source::Body => "This field is not allowed here.".into(),
                Source::Query => "This query parameter is not allowed here.".into(),
            },
        };
    }
    if let Some(name) = quoted_after(message, "missing field `") {
        return FieldError {
            field: field(&join_path(path, Some(name), false)),
            code: "missing_field".into(),
            message: "This field is required.".into(),
        };
    }
    if let Some(name) = quoted_after(message, "duplicate field `") {
        return FieldError {
            field: field(&join_path(path, Some(name), true)),
            code: "invalid_value".into(),
            message: match source {
                Source::Body => "This field is given more than once.".into(),
                Source::Query => "This query parameter is given more than once.".into(),
            },
        };
    }
    let field = field(path);
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if field.is_empty() && source == Source::Body {
            return not_an_object();
        }
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let message = match source {
            Source::Body => format!(
                "Expected {}, got {}.",
                expected_json_type(expected),
                sent_json_type(got)
            ),
            Source::Query => format!("Expected {}.", expected_json_type(expected)),
        };
        return FieldError {
            field,
            code: "invalid_type".into(),
            message,
        };
    }
    if message.starts_with("invalid length") {
        return FieldError {
            field,
            code: "invalid_type".into(),
            message: "The array has the wrong number of items.".into(),
        };
    }
    let message = if let Some(rest) = message.strip_prefix("unknown variant `") {
        // "unknown variant `x`, expected one of `a`, `b`": the allowed
        // values are the API's own; the rejected one is not repeated.
        match rest.rsplit_once("`, expected ") {
            Some((_, allowed)) => format!("Must be {}.", allowed.replace('`', "")),
            None => "Not one of the allowed values.".into(),
        }
    } else if message.starts_with("invalid value: integer")
        || message.starts_with("invalid value: floating point")
        || message.contains("number too large")
        || message.contains("number too small")
        || message.contains("invalid digit")
    {
        if message.contains("invalid digit") {
            "Expected a whole number.".into()
        } else {
            "The number is out of range.".into()
        }
    } else if message.contains("UUID") || message.contains("uuid") {
        "Expected a UUID.".into()
    } else if message.contains("input contains invalid characters")
        || message.contains("premature end of input")
        || message.contains("input is out of range")
        || message.contains("trailing input")
        || message.contains("input is not enough")
    {
        "Expected a date or time in ISO 8601 / RFC 3339 form.".into()
    } else if message.contains("provided string was not `true` or `false`") {
        "Expected true or false.".into()
    } else {
        "The value is not valid here.".into()
    };
    FieldError {
        field,
        code: "invalid_value".into(),
        message,
    }
}

/// A dotted path whose segments may be client-supplied (map keys, unknown
/// names): each segment is cut to a printable prefix.
fn printable_prefix_path(path: &str) -> String {
    if path.chars().count() <= MAX_ECHOED_NAME
        && path
            .chars()
            .all(|c| !c.is_control() && !is_invisible_format(c))
    {
        return path.to_owned();
    }
    printable_prefix(path)
}

/// The name in ``prefix`name`, …`` (serde's own messages), found from the
/// end so a backtick inside a client's name cannot cut it short.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    for tail in ["`, expected ", "`, there are no fields"] {
        if let Some(i) = rest.rfind(tail) {
            return Some(&rest[..i]);
        }
    }
    Some(rest.strip_suffix('`').unwrap_or(rest))
}

/// What serde expected, as a JSON type (`expected` is serde's wording,
/// e.g. `u32`, `a string`, `struct DeviceInfo`, `a boolean`).
fn expected_json_type(expected: &str) -> &'static str {
    let e = expected.trim();
    let is_int = e.contains("integer")
        || e.contains("whole number")
        || ["u8", "u16", "u32", "u64", "u128", "usize"]
            .iter()
            .chain(&["i8", "i16", "i32", "i64", "i128", "isize"])
            .any(|t| e == *t || e.ends_with(&format!(" {t}")));
    if is_int {
        "a whole number"
    } else if e == "f32" || e == "f64" || e.contains("float") || e.contains("number") {
        "a number"
    } else if e.contains("bool") {
        "true or false"
    } else if e.starts_with("struct ") || e.contains("map") || e.contains("object") {
        "a JSON object"
    } else if e.contains("sequence") || e.contains("tuple") || e.contains("array") {
        "a JSON array"
    } else if e.starts_with("enum ") || e.contains("variant") {
        "one of the allowed values (a string)"
    } else if e.contains("date") || e.contains("time") {
        "a date or time string"
    } else if e.contains("UUID") || e.contains("uuid") {
        "a UUID string"
    } else if e.contains("string") || e.contains("str") || e.contains("char") {
        "a string"
    } else {
        "another type"
    }
}

/// What the client sent, as a JSON type (serde's `unexpected` wording:
/// `string "x"`, `integer `5``, `sequence`, `map`, `unit`, …), without the
/// value itself.
fn sent_json_type(got: &str) -> &'static str {
    let g = got.trim();
    if g.starts_with("string") || g.starts_with("character") {
        "a string"
    } else if g.starts_with("integer") || g.starts_with("floating point") {
        "a number"
    } else if g.starts_with("boolean") {
        "true or false"
    } else if g == "unit" || g.starts_with("null") || g.starts_with("unit") {
        "null"
    } else if g.starts_with("sequence") {
        "an array"
    } else if g.starts_with("map") {
        "an object"
    } else {
        "another type"
    }
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
                            .unwrap_or_else(|| rule_message(e)),
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

/// The wording of a `validator` rule that has no message of its own,
/// from its bounds (never the rejected value, which validator also keeps).
fn rule_message(e: &validator::ValidationError) -> String {
    let bound = |name: &str| e.params.get(name).map(ToString::to_string);
    let (min, max) = (bound("min"), bound("max"));
    match (e.code.as_ref(), min, max) {
        ("length", Some(min), Some(max)) => format!("Must be {min} to {max} characters long."),
        ("length", None, Some(max)) => format!("Must be at most {max} characters long."),
        ("length", Some(min), None) => format!("Must be at least {min} characters long."),
        ("range", Some(min), Some(max)) => format!("Must be from {min} to {max}."),
        ("range", None, Some(max)) => format!("Must be at most {max}."),
        ("range", Some(min), None) => format!("Must be at least {min}."),
        ("email", _, _) => "Must be an email address.".into(),
        ("url", _, _) => "Must be a URL.".into(),
        _ => "The value is not valid here.".into(),
    }
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
        let value = parse_query::<T>(parts.uri.query().unwrap_or_default())?;
        value
            .validate()
            .map_err(|e| ApiError::Validation(flatten_validation("", &e)))?;
        Ok(Query(value))
    }
}

/// Deserialises a query string, each failure named by its parameter and
/// worded like a body's, never in serde's words; the code is always
/// `invalid_query`.
fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let mut error = describe(&path, &err.inner().to_string(), Source::Query);
        error.code = "invalid_query".into();
        ApiError::Validation(vec![error])
    })
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
        let install_id = install_id(&parts.headers)?;
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

/// `X-App-Install-Id`, when present: exactly a hyphenated UUID (36
/// characters, as the spec says), else 400 `invalid_install_id`. Checked
/// for every `/v1` request by `client_gate`, and read here.
pub fn install_id(headers: &axum::http::HeaderMap) -> Result<Option<uuid::Uuid>, ApiError> {
    let Some(value) = headers.get("x-app-install-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|s| s.len() == 36)
        .and_then(|s| uuid::Uuid::try_parse(s).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request("invalid_install_id", "X-App-Install-Id must be a UUID.")
        })
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

    fn fields(e: &[FieldError]) -> Vec<(&str, &str)> {
        e.iter()
            .map(|e| (e.field.as_str(), e.code.as_str()))
            .collect()
    }

    #[test]
    fn every_problem_of_a_body_is_listed_not_just_the_first() {
        // Unknown, mistyped (nested) and a failed rule, all at once.
        let (_, e) = err(r#"{"role":"admin","name":"toolong","inner":{"n":"x"}}"#);
        assert_eq!(
            fields(&e),
            [
                ("role", "unknown_field"),
                ("inner.n", "invalid_type"),
                ("name", "length")
            ],
            "{e:?}"
        );
        // Missing plus unknown: both.
        let (_, e) = err(r#"{"role":"admin","inner":{"n":0,"y":1}}"#);
        assert_eq!(
            fields(&e),
            [
                ("role", "unknown_field"),
                ("inner.y", "unknown_field"),
                ("name", "missing_field"),
                ("inner.n", "range")
            ],
            "{e:?}"
        );
        // Every message is one for people, never serde's or validator's
        // own wording.
        for error in &e {
            assert!(!error.message.contains("Failed"), "{error:?}");
            assert!(!error.message.contains('`'), "{error:?}");
        }
    }

    #[test]
    fn the_search_for_more_problems_is_bounded() {
        // Hundreds of unknown members: at most MAX_PASSES (+ the first)
        // problems are looked for, and the answer is still a 422.
        let members: Vec<String> = (0..500).map(|i| format!("\"u{i}\":1")).collect();
        let body = format!("{{{}}}", members.join(","));
        let (code, e) = err(&body);
        assert_eq!(code, "validation_failed");
        assert!(e.len() <= MAX_PASSES + 1, "{}", e.len());
        assert!(e.len() > 1);
    }

    /// Words that name Rust internals rather than the API.
    pub(crate) const RUST_WORDS: &[&str] = &[
        "struct",
        "enum ",
        "sequence",
        "u8",
        "u16",
        "u32",
        "u64",
        "i32",
        "i64",
        "usize",
        "Option",
        "String",
        "::",
        "variant",
        "invalid type",
        "expected one of",
    ];

    fn assert_api_words(errors: &[FieldError]) {
        for e in errors {
            for word in RUST_WORDS {
                assert!(!e.message.contains(word), "{word:?} in {e:?}");
                assert!(!e.field.contains(word), "{word:?} in {e:?}");
            }
        }
    }

    #[test]
    fn wrong_input_is_described_in_the_apis_words() {
        for body in [
            "[1]",
            "\"text\"",
            "42",
            "null",
            "true",
            r#"{"name": 5}"#,
            r#"{"name": ["a"]}"#,
            r#"{"name": {"a": 1}}"#,
            r#"{"name": null}"#,
            r#"{"name": "a", "inner": 5}"#,
            r#"{"name": "a", "inner": []}"#,
            r#"{"name": "a", "inner": {"n": "x"}}"#,
            r#"{"name": "a", "inner": {"n": 300}}"#,
            r#"{"name": "a", "inner": {"n": -1}}"#,
            r#"{"name": "a", "inner": {"n": 1.5}}"#,
            r#"{"name": "a", "inner": {"n": 1, "x": 1}}"#,
            r#"{"name": "toolong"}"#,
            r#"{"name": "a", "inner": {"n": 0}}"#,
        ] {
            let (code, errors) = err(body);
            assert_eq!(code, "validation_failed", "{body}");
            assert!(!errors.is_empty(), "{body}");
            assert_api_words(&errors);
        }
        let (_, e) = err("\"text\"");
        assert_eq!(
            (e[0].field.as_str(), e[0].code.as_str()),
            ("", "invalid_type")
        );
        assert_eq!(e[0].message, "The body must be a JSON object.");
        let (_, e) = err(r#"{"name": ["a"]}"#);
        assert_eq!(e[0].message, "Expected a string, got an array.");
        let (_, e) = err(r#"{"name": "a", "inner": {"n": "x"}}"#);
        assert_eq!(e[0].field, "inner.n");
        assert_eq!(e[0].message, "Expected a whole number, got a string.");
        let (_, e) = err(r#"{"name": "a", "inner": {"n": 300}}"#);
        assert_eq!(
            (e[0].code.as_str(), e[0].message.as_str()),
            ("invalid_value", "The number is out of range.")
        );
        let (_, e) = err(r#"{"name": "toolong"}"#);
        assert_eq!(e[0].message, "Must be 1 to 5 characters long.");
    }

    #[test]
    fn an_unknown_name_is_echoed_only_as_a_short_printable_prefix() {
        let (_, e) = err(r#"{"name":"a","\u001b[31mred":1}"#);
        assert_eq!(
            (e[0].field.as_str(), e[0].code.as_str()),
            ("…", "unknown_field")
        );
        let (_, e) = err(r#"{"name":"a","ok\u001b[2Jwipe":1}"#);
        assert_eq!(e[0].field, "ok…");
        let long = "n".repeat(64 * 1024);
        let (_, e) = err(&format!(r#"{{"name":"a","{long}":1}}"#));
        assert_eq!(e[0].field, format!("{}…", "n".repeat(MAX_ECHOED_NAME)));
        let (_, e) = err(r#"{"name":"a","a`, expected `b":1}"#);
        assert_eq!(e[0].field, "a`, expected `b");
        let (_, e) = err(r#"{"name":"a","x\u202Egnp.exe":1}"#);
        assert_eq!(e[0].field, "x…");
        assert_eq!(printable_prefix("fine"), "fine");
    }

    #[derive(Debug, Deserialize, Validate)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        limit: Option<u32>,
        id: Option<uuid::Uuid>,
        flag: Option<bool>,
    }

    fn query_errors(query: &str) -> Vec<FieldError> {
        match parse_query::<Params>(query).unwrap_err() {
            ApiError::Validation(e) => e,
            other => vec![FieldError {
                field: String::new(),
                code: other.code().into(),
                message: String::new(),
            }],
        }
    }

    #[test]
    fn query_errors_name_the_parameter_in_the_apis_words() {
        for (query, field, message) in [
            ("limit=x", "limit", "Expected a whole number."),
            ("limit=-1", "limit", "Expected a whole number."),
            ("id=1", "id", "Expected a UUID."),
            ("flag=maybe", "flag", "Expected true or false."),
            (
                "page=2",
                "page",
                "This query parameter is not allowed here.",
            ),
            (
                "limit=1&limit=2",
                "limit",
                "This query parameter is given more than once.",
            ),
        ] {
            let e = query_errors(query);
            assert_eq!(
                (
                    e[0].field.as_str(),
                    e[0].code.as_str(),
                    e[0].message.as_str()
                ),
                (field, "invalid_query", message),
                "{query}"
            );
            assert_api_words(&e);
        }
        let long = format!("{}=1", "p".repeat(5000));
        let e = query_errors(&long);
        assert!(e[0].field.chars().count() <= MAX_ECHOED_NAME + 1);
        let e = query_errors("%1B%5B31m=1");
        assert_eq!(e[0].field, "…");
        assert!(parse_query::<Params>("limit=5&flag=true").is_ok());
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
