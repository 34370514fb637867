//! The old-client gate: apps below the minimum version for their platform
//! get 426 `client_upgrade_required` on every `/v1` call.
//!
//! Mobile apps live for years on phones that never update. When a release
//! ships a vulnerability (a leaked key, a broken pinning config), raising
//! the minimum is the kill switch. The minimum lives in [`ClientPolicy`],
//! seeded from `MIN_CLIENT_VERSION_*` and replaceable at run time. Clients
//! that send no version headers (web, scripts) pass; a half-sent or
//! malformed pair is a 400, because a real app always sends both.

use crate::{config::Config, error::ApiError};
use axum::http::HeaderMap;
use semver::Version;
use serde::{Deserialize, Serialize};
use std::sync::{PoisonError, RwLock};
use url::Url;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Ios,
    Android,
    Web,
}

/// What the app says it is (`X-Client-Platform`, `X-Client-Version`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientVersion {
    pub platform: Platform,
    pub version: Version,
}

impl ClientVersion {
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let get = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("\u{0}").trim())
        };
        match (get("x-client-platform"), get("x-client-version")) {
            (None, None) => Ok(None),
            (Some(p), Some(v)) => {
                // Exactly the spec's enum: lower case, nothing else.
                let platform = match p {
                    "ios" => Platform::Ios,
                    "android" => Platform::Android,
                    "web" => Platform::Web,
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid_client_platform",
                            "X-Client-Platform must be ios, android or web.",
                        ))
                    }
                };
                let version = parse_plain_version(v).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_client_version",
                        "X-Client-Version must be MAJOR.MINOR.PATCH.",
                    )
                })?;
                Ok(Some(Self { platform, version }))
            }
            _ => Err(ApiError::bad_request(
                "invalid_client_version",
                "X-Client-Platform and X-Client-Version must be sent together.",
            )),
        }
    }
}

/// A plain `MAJOR.MINOR.PATCH` version: three numbers of one to nine
/// digits without leading zeros (`0` itself is fine), no pre-release or
/// build tag. This is exactly the pattern `openapi.yaml` gives
/// `X-Client-Version` and `min_version`:
/// `^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$`
/// (SemVer 2.0 §2 refuses leading zeros: `1.02.3` is not a version).
pub fn parse_plain_version(v: &str) -> Option<Version> {
    let mut parts = v.split('.');
    let mut next = || -> Option<u64> {
        let n = parts.next()?;
        let digits_ok = (1..=9).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit());
        let no_leading_zero = n == "0" || !n.starts_with('0');
        (digits_ok && no_leading_zero)
            .then(|| n.parse().ok())
            .flatten()
    };
    let (major, minor, patch) = (next()?, next()?, next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(Version::new(major, minor, patch))
}

/// The minimum version and store link of one platform.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformPolicy {
    pub min_version: Option<Version>,
    pub store_url: Option<Url>,
}

/// The minimum app versions in force; readable by every request without
/// touching the database. Seeded from `MIN_CLIENT_VERSION_*` (the
/// fallback); an administrator's run-time minimums (table `client_policy`,
/// `admin/client_policy.rs`) are applied over it when set and re-read by
/// every process on a short interval.
#[derive(Debug, Default)]
pub struct ClientPolicy {
    fallback: Policies,
    current: RwLock<Policies>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policies {
    pub ios: PlatformPolicy,
    pub android: PlatformPolicy,
}

/// Minimums set at run time; `None` means "use the configured fallback".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub ios: Option<Version>,
    pub android: Option<Version>,
}

impl ClientPolicy {
    pub fn from_config(config: &Config) -> Self {
        let fallback = Policies {
            ios: PlatformPolicy {
                min_version: config.min_client_version_ios.clone(),
                store_url: config.store_url_ios.clone(),
            },
            android: PlatformPolicy {
                min_version: config.min_client_version_android.clone(),
                store_url: config.store_url_android.clone(),
            },
        };
        Self {
            current: RwLock::new(fallback.clone()),
            fallback,
        }
    }

    pub fn get(&self) -> Policies {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The configured minimums (`MIN_CLIENT_VERSION_*`).
    pub fn fallback(&self) -> &Policies {
        &self.fallback
    }

    /// Replaces the policy in force (tests, and [`ClientPolicy::apply`]).
    /// A direct `set` lasts only until the next refresh from the database.
    pub fn set(&self, policies: Policies) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = policies;
    }

    /// Puts run-time minimums in force over the configured ones.
    pub fn apply(&self, overrides: &Overrides) {
        let mut next = self.fallback.clone();
        if let Some(v) = &overrides.ios {
            next.ios.min_version = Some(v.clone());
        }
        if let Some(v) = &overrides.android {
            next.android.min_version = Some(v.clone());
        }
        self.set(next);
    }

    /// `Err(426)` when this client is below its platform's minimum.
    pub fn check(&self, client: &ClientVersion) -> Result<(), ApiError> {
        let policies = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let policy = match client.platform {
            Platform::Ios => &policies.ios,
            Platform::Android => &policies.android,
            Platform::Web => return Ok(()),
        };
        match &policy.min_version {
            Some(min) if client.version < *min => Err(ApiError::UpgradeRequired {
                min_version: min.to_string(),
                store_url: policy.store_url.as_ref().map(ToString::to_string),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn client(p: &'static str, v: &'static str) -> Result<Option<ClientVersion>, ApiError> {
        let mut h = HeaderMap::new();
        h.insert("x-client-platform", HeaderValue::from_static(p));
        h.insert("x-client-version", HeaderValue::from_static(v));
        ClientVersion::from_headers(&h)
    }

    #[test]
    fn versions_compare_numerically_not_as_text() {
        let policy = ClientPolicy::default();
        policy.set(Policies {
            ios: PlatformPolicy {
                min_version: Some(Version::new(2, 10, 0)),
                store_url: None,
            },
            android: PlatformPolicy::default(),
        });
        assert!(policy
            .check(&client("ios", "2.9.9").unwrap().unwrap())
            .is_err());
        assert!(policy
            .check(&client("ios", "2.10.0").unwrap().unwrap())
            .is_ok());
        assert!(policy
            .check(&client("ios", "10.0.0").unwrap().unwrap())
            .is_ok());
        assert!(policy
            .check(&client("android", "0.0.1").unwrap().unwrap())
            .is_ok());
        assert!(policy
            .check(&client("web", "0.0.1").unwrap().unwrap())
            .is_ok());
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert!(client("symbian", "1.0.0").is_err());
        assert!(client("ios", "1.0").is_err());
        assert!(client("ios", "one").is_err());
        assert!(client("ios", "1.0.0-beta").is_err());
        assert!(client("ios", "1.0.0+build").is_err());
        // What the spec's pattern refuses, the server refuses.
        assert!(client("ios", "1.02.3").is_err());
        assert!(client("ios", "01.2.3").is_err());
        assert!(client("ios", "1.2.03").is_err());
        assert!(client("ios", "1234567890.0.0").is_err());
        assert!(client("ios", "1.2.3.4").is_err());
        assert!(client("ios", "1..3").is_err());
        assert!(client("ios", "+1.2.3").is_err());
        assert!(client("IOS", "1.0.0").is_err());
        // …and accepts what it admits.
        assert!(client("ios", "0.0.0").unwrap().is_some());
        assert!(client("ios", "10.20.30").unwrap().is_some());
        assert!(client("ios", "999999999.999999999.999999999")
            .unwrap()
            .is_some());
        let mut h = HeaderMap::new();
        h.insert("x-client-platform", HeaderValue::from_static("ios"));
        assert!(ClientVersion::from_headers(&h).is_err());
        assert!(ClientVersion::from_headers(&HeaderMap::new())
            .unwrap()
            .is_none());
    }
}
