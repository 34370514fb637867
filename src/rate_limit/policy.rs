//! The policy table: every limited class of endpoint and its default
//! quota. One place to read (and change) what the service allows. Which
//! routes belong to a class is said where each route is registered
//! (`ApiRouter::route`), and `openapi.yaml` repeats it per operation
//! (`x-rate-limit-class`, checked by a test).

use super::gcra::Quota;

/// A class of endpoint with its own quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Every route that checks a password or a code: sign-in, sign-up,
    /// codes and recovery, and the signed-in routes that take the current
    /// password or a code. Per client IP.
    Credentials,
    /// The same endpoints per account (the email's blind index), so one
    /// address cannot be hammered from many IPs.
    CredentialsAccount,
    /// Wrong passwords per (account, IP): the soft lock. The owner signing
    /// in from another network is not affected.
    LoginFailures,
    /// Refreshing tokens, per client IP.
    Refresh,
    /// Every other `GET`, per user (a valid access token) or client IP.
    Reads,
    /// Every other operation, per user or client IP.
    Writes,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Self::Credentials,
        Self::CredentialsAccount,
        Self::LoginFailures,
        Self::Refresh,
        Self::Reads,
        Self::Writes,
    ];

    /// The classes a route is registered with; the others count the
    /// credential routes a second way (per account, per account and IP).
    pub const ROUTED: [Class; 4] = [Self::Credentials, Self::Refresh, Self::Reads, Self::Writes];

    /// The policy name in `RateLimit-Policy` / `RateLimit` headers, and in
    /// the spec's `x-rate-limit-class`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Credentials => "credentials",
            Self::CredentialsAccount => "credentials_account",
            Self::LoginFailures => "login_failures",
            Self::Refresh => "refresh",
            Self::Reads => "reads",
            Self::Writes => "writes",
        }
    }

    /// The variable that overrides the default, as `LIMIT/WINDOW_SECS`.
    pub fn env_var(self) -> &'static str {
        match self {
            Self::Credentials => "RATE_LIMIT_CREDENTIALS",
            Self::CredentialsAccount => "RATE_LIMIT_CREDENTIALS_ACCOUNT",
            Self::LoginFailures => "RATE_LIMIT_LOGIN_FAILURES",
            Self::Refresh => "RATE_LIMIT_REFRESH",
            Self::Reads => "RATE_LIMIT_READS",
            Self::Writes => "RATE_LIMIT_WRITES",
        }
    }

    /// Strict where a guess is worth something, generous for reads.
    pub fn default_quota(self) -> Quota {
        match self {
            Self::Credentials => Quota::per_seconds(20, 60),
            Self::CredentialsAccount => Quota::per_seconds(10, 300),
            Self::LoginFailures => Quota::per_seconds(5, 900),
            Self::Refresh => Quota::per_seconds(30, 60),
            Self::Reads => Quota::per_seconds(300, 60),
            Self::Writes => Quota::per_seconds(60, 60),
        }
    }

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
/// Ordered from the lowest to the highest (`Standard < Raised < High`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
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

/// Parses `LIMIT/WINDOW_SECS`, e.g. `20/60`.
pub fn parse_quota(s: &str) -> Option<Quota> {
    let (limit, window) = s.split_once('/')?;
    let limit: u32 = limit.trim().parse().ok().filter(|n| *n > 0)?;
    let window: i64 = window
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=86_400).contains(n))?;
    Some(Quota::per_seconds(limit, window))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_and_nonsense_is_refused() {
        assert_eq!(parse_quota("20/60"), Some(Quota::per_seconds(20, 60)));
        assert_eq!(parse_quota("0/60"), None);
        assert_eq!(parse_quota("5/0"), None);
        assert_eq!(parse_quota("five"), None);
    }
}
