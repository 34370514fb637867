//! The limiter's policy: which classes fail closed, and the per-user
//! tiers. The classes themselves, with their variables and default quotas,
//! are configuration (`config::Class`, re-exported here), since
//! configuration reads them. Which routes belong to a class is said where
//! each route is registered (`ApiRouter::route`), and `openapi.yaml`
//! repeats it per operation (`x-rate-limit-class`, checked by a test).

use super::gcra::Quota;
/// A class of endpoint with its own quota (a configuration value).
pub use crate::config::Class;

impl Class {
    /// The classes a route is registered with; the others count the
    /// credential routes a second way (per account, per account and IP).
    pub const ROUTED: [Class; 4] = [Self::Credentials, Self::Refresh, Self::Reads, Self::Writes];

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
