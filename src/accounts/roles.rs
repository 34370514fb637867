//! The account's security vocabulary as types: its [`Role`], its
//! [`Status`] and a session's assurance level ([`Aal`]).
//!
//! Each is stored as text (`users.role`, `users.status`, `sessions.aal`,
//! each with a CHECK constraint) and travels as the same lowercase text on
//! the wire and in tokens. Text becomes a value in one place, `FromStr`,
//! which is also how a column is decoded: a spelling it does not know is an
//! error, never a default. An unknown role is not read as `user`, let alone
//! as `admin`; the request that met it fails (500) instead.

use serde::{Deserialize, Serialize};
use sqlx::{
    error::BoxDynError,
    postgres::{PgTypeInfo, PgValueRef},
    Decode, Postgres, Type,
};
use std::{fmt, str::FromStr};

/// Text that names no known role, status or assurance level.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {text:?}")]
pub struct Unknown {
    kind: &'static str,
    text: String,
}

/// What an account may do. Staff roles ([`Role::STAFF`]) reach the
/// `/v1/admin` routes and must keep a second factor.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Support,
    Admin,
}

impl Role {
    /// The staff roles: support and administrators.
    pub const STAFF: &'static [Role] = &[Role::Support, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Support => "support",
            Self::Admin => "admin",
        }
    }

    /// Whether this is a staff role. Every staff role requires a second
    /// factor: a staff password alone never reaches a staff route.
    pub fn is_staff(self) -> bool {
        Self::STAFF.contains(&self)
    }
}

impl FromStr for Role {
    type Err = Unknown;

    fn from_str(s: &str) -> Result<Self, Unknown> {
        match s {
            "user" => Ok(Self::User),
            "support" => Ok(Self::Support),
            "admin" => Ok(Self::Admin),
            other => Err(unknown("role", other)),
        }
    }
}

/// Whether an account may sign in at all.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Locked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Locked => "locked",
        }
    }
}

impl FromStr for Status {
    type Err = Unknown;

    fn from_str(s: &str) -> Result<Self, Unknown> {
        match s {
            "active" => Ok(Self::Active),
            "locked" => Ok(Self::Locked),
            other => Err(unknown("status", other)),
        }
    }
}

/// A session's authenticator assurance level: `aal1` proved a password,
/// `aal2` a second factor as well.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Aal {
    Aal1,
    Aal2,
}

impl Aal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aal1 => "aal1",
            Self::Aal2 => "aal2",
        }
    }
}

impl FromStr for Aal {
    type Err = Unknown;

    fn from_str(s: &str) -> Result<Self, Unknown> {
        match s {
            "aal1" => Ok(Self::Aal1),
            "aal2" => Ok(Self::Aal2),
            other => Err(unknown("assurance level", other)),
        }
    }
}

fn unknown(kind: &'static str, text: &str) -> Unknown {
    Unknown {
        kind,
        text: text.chars().take(32).collect(),
    }
}

/// `Display`, and decoding from a `text` column through `FromStr`, for
/// each of the three (`AS "role: Role"` in a query).
macro_rules! text_value {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Type<Postgres> for $t {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, Postgres> for $t {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<Postgres>>::decode(value)?;
                Ok(text.parse()?)
            }
        }
    };
}

text_value!(Role);
text_value!(Status);
text_value!(Aal);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_reads_back_from_its_own_text_and_serde_uses_the_same_text() {
        for role in [Role::User, Role::Support, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_value(role).ok(),
                Some(serde_json::json!(role.as_str()))
            );
        }
        for status in [Status::Active, Status::Locked] {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).ok(),
                Some(serde_json::json!(status.as_str()))
            );
        }
        for aal in [Aal::Aal1, Aal::Aal2] {
            assert_eq!(aal.as_str().parse::<Aal>(), Ok(aal));
            assert_eq!(
                serde_json::to_value(aal).ok(),
                Some(serde_json::json!(aal.as_str()))
            );
        }
    }

    #[test]
    fn unknown_text_is_refused_never_read_as_a_role() {
        for text in [
            "",
            "Admin",
            "ADMIN",
            " admin",
            "admin ",
            "root",
            "superuser",
            "staff",
            "admin\0",
        ] {
            assert!(text.parse::<Role>().is_err(), "{text:?} read as a role");
        }
        for text in ["", "Active", "enabled", "deleted", "unlocked"] {
            assert!(text.parse::<Status>().is_err(), "{text:?} read as a status");
        }
        for text in ["", "AAL2", "aal3", "aal0", "2"] {
            assert!(text.parse::<Aal>().is_err(), "{text:?} read as an aal");
        }
        assert!(serde_json::from_str::<Role>("\"root\"").is_err());
    }

    #[test]
    fn staff_is_support_and_admin() {
        assert!(!Role::User.is_staff());
        assert!(Role::Support.is_staff());
        assert!(Role::Admin.is_staff());
    }
}
