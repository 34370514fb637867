//! The policy table: which routes belong to each class of endpoint, which
//! classes fail closed, and the per-user tiers. One place to read (and
//! change) what the service allows; the classes themselves, with their
//! variables and default quotas, are configuration (`config::Class`,
//! re-exported here), since configuration reads them.

use super::gcra::Quota;
/// A class of endpoint with its own quota (a configuration value).
pub use crate::config::Class;

impl Class {
    /// Whether the class must fail closed when the shared store is down:
    /// an attacker who can knock Redis over must not get unlimited guesses.
    pub fn fail_closed(self) -> bool {
        matches!(
            self,
            Self::Credentials | Self::CredentialsAccount | Self::LoginFailures
        )
    }
}

/// A user's tier: a multiplier on the per-user read and write quotas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Standard,
    Raised,
    High,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Raised => "raised",
            Self::High => "high",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "raised" => Self::Raised,
            "high" => Self::High,
            _ => Self::Standard,
        }
    }

    pub fn multiplier(self) -> u32 {
        match self {
            Self::Standard => 1,
            Self::Raised => 5,
            Self::High => 20,
        }
    }

    pub fn apply(self, quota: Quota) -> Quota {
        Quota {
            limit: quota.limit.saturating_mul(self.multiplier()),
            window_ms: quota.window_ms,
        }
    }
}

/// The class of a routed request, by route template and method.
pub fn classify(method: &axum::http::Method, route: &str) -> Option<Class> {
    use axum::http::Method;
    match route {
        "/v1/auth/register"
        | "/v1/auth/verify-email"
        | "/v1/auth/verify-email/resend"
        | "/v1/auth/login"
        | "/v1/auth/mfa"
        | "/v1/auth/password/forgot"
        | "/v1/auth/password/reset"
        | "/v1/auth/password/change"
        | "/v1/me/email"
        | "/v1/me/email/confirm"
        // Every route that checks the current password or a code is a
        // guess, whoever holds the session.
        | "/v1/mfa/totp/setup"
        | "/v1/mfa/totp/confirm"
        | "/v1/mfa/totp/disable"
        | "/v1/mfa/recovery-codes" => Some(Class::Credentials),
        // Deleting the account takes the password (and a code): a guess.
        "/v1/me" if *method == Method::DELETE => Some(Class::Credentials),
        "/v1/auth/refresh" => Some(Class::Refresh),
        r if r.starts_with("/v1/") => Some(if *method == Method::GET || *method == Method::HEAD {
            Class::Reads
        } else {
            Class::Writes
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn routes_map_to_their_class_and_operations_are_unlimited() {
        assert_eq!(
            classify(&Method::POST, "/v1/auth/login"),
            Some(Class::Credentials)
        );
        assert_eq!(
            classify(&Method::POST, "/v1/auth/refresh"),
            Some(Class::Refresh)
        );
        assert_eq!(classify(&Method::GET, "/v1/sessions"), Some(Class::Reads));
        for route in [
            "/v1/mfa/totp/setup",
            "/v1/mfa/totp/disable",
            "/v1/auth/password/change",
        ] {
            assert_eq!(
                classify(&Method::POST, route),
                Some(Class::Credentials),
                "{route} checks a password"
            );
        }
        assert_eq!(
            classify(&Method::DELETE, "/v1/sessions/{id}"),
            Some(Class::Writes)
        );
        assert_eq!(classify(&Method::GET, "/healthz"), None);
        assert_eq!(classify(&Method::GET, "/.well-known/jwks.json"), None);
    }
}
