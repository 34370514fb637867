//! The old-client gate: apps below the minimum version for their platform
//! get 426 `client_upgrade_required` on every `/v1` call.
//!
//! Mobile apps live for years on phones that never update. When a release
//! ships a vulnerability (a leaked key, a broken pinning config), raising
//! the minimum is the kill switch. The minimum lives in [`ClientPolicy`],
//! seeded from `MIN_CLIENT_VERSION_*` and replaceable at run time. Clients
//! that send no version headers (web, scripts) pass; a half-sent or
//! malformed pair is a 400, because a real app always sends both. The
//! version's grammar and order are [`AppVersion`]'s: `2`, `2.3`, `2.3.0`,
//! `2.3.0-beta.1` and `2.3.0+45` are all versions, compared numerically
//! with the tags ignored.

pub use crate::app_version::AppVersion;
use crate::{config::Config, error::ApiError};
use axum::http::HeaderMap;
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
    pub version: AppVersion,
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
                let version = AppVersion::parse(v).map_err(|e| {
                    ApiError::bad_request(
                        "invalid_client_version",
                        format!("X-Client-Version is not valid. {e}"),
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

/// The minimum version and store link of one platform.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformPolicy {
    pub min_version: Option<AppVersion>,
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
    pub ios: Option<AppVersion>,
    pub android: Option<AppVersion>,
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
                min_version: Some(AppVersion::parse("2.10.0").unwrap()),
                store_url: None,
            },
            android: PlatformPolicy {
                min_version: Some(AppVersion::parse("2.3").unwrap()),
                store_url: None,
            },
        });
        let check = |p, v| policy.check(&client(p, v).unwrap().unwrap());
        assert!(check("ios", "2.9.9").is_err());
        assert!(check("ios", "2.9").is_err());
        assert!(check("ios", "2.10.0").is_ok());
        assert!(check("ios", "2.10").is_ok(), "missing parts are 0");
        assert!(check("ios", "10").is_ok());
        assert!(check("android", "2.3.0-beta.1").is_ok(), "tags ignored");
        assert!(check("android", "2.3.0-debug").is_ok());
        assert!(check("android", "2.3+45").is_ok());
        assert!(check("android", "2.2.9-rc.1").is_err());
        assert!(check("android", "2.2.99.99").is_err());
        assert!(check("web", "0.0.1").is_ok());
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert!(client("symbian", "1.0.0").is_err());
        assert!(client("ios", "one").is_err());
        assert!(client("ios", "v1.0").is_err());
        assert!(client("ios", "1..3").is_err());
        assert!(client("ios", "1.2.3.4.5").is_err());
        assert!(client("ios", "1234567890.0.0").is_err());
        assert!(client("ios", "+1.2.3").is_err());
        assert!(client("ios", "1.0.0-").is_err());
        assert!(client("ios", "1.0.0-beta_1").is_err());
        assert!(client("ios", "1.0.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_err());
        assert!(client("IOS", "1.0.0").is_err());
        // …and accepts what phones send.
        for ok in [
            "2",
            "2.3",
            "2.3.1",
            "2.3.1.4",
            "2.3.0-beta.1",
            "2.3.0+45",
            "2024.01.15",
        ] {
            let parsed = client("android", ok).unwrap().unwrap();
            assert_eq!(parsed.version.as_str(), ok);
        }
        let refused = client("ios", "v2.3").unwrap_err();
        assert!(
            matches!(&refused, ApiError::BadRequest { code: "invalid_client_version", detail }
                if detail.contains("must be a number")),
            "{refused:?}"
        );
        let mut h = HeaderMap::new();
        h.insert("x-client-platform", HeaderValue::from_static("ios"));
        assert!(ClientVersion::from_headers(&h).is_err());
        assert!(ClientVersion::from_headers(&HeaderMap::new())
            .unwrap()
            .is_none());
    }
}
