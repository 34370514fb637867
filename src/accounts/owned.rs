//! The registry of user-owned tables: every table that holds rows about a
//! user, how each row leaves with the account, where it appears in the
//! export, and what every column is (sealed, blind index, digest, or clear
//! and why).
//!
//! It is plain data, read by no code path of the service: it is the
//! statement the tests hold the schema and the API to. `tests/api/owned.rs`
//! walks it and fails when
//! - a table with a `user_id` column is in neither [`OWNED`] nor
//!   [`NOT_OWNED`], or a registered table has a column not classified here;
//! - a [`Erasure::Cascade`] table's foreign key to `users` is not
//!   `ON DELETE CASCADE`, or a sealed column is not `bytea`;
//! - a seeded value of a sealed column is found in clear anywhere, does not
//!   open with its registered binding `(table, column, row id)`, or still
//!   opens (or is served by the API) after being swapped with another row's;
//! - an exported table is missing from `GET /v1/me/export`, or some of its
//!   rows are;
//! - a row survives the account's deletion (or a retained row keeps an
//!   erased column);
//! - another user reaches a row through any route with an id in its path.
//!
//! A new owned table (docs/architecture.md, "Adding a user-owned
//! resource") gets its entry here, and a seed in `tests/api/owned.rs`.

/// The key a sealed column is sealed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealKey {
    /// The owner's data key (`UserKey`): shredded with the account.
    User,
    /// The master ring (`DATA_KEYS`): only the wrapped data keys.
    Master,
}

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// AES-256-GCM sealed, bound to `Aad { table, column: aad_column,
    /// row_id: <the row's value of row_id> }`.
    Sealed {
        aad_column: &'static str,
        row_id: &'static str,
        key: SealKey,
    },
    /// A keyed blind index (HMAC) under this context, for equality look-ups.
    BlindIndex { context: &'static str },
    /// A one-way hash or keyed MAC of a secret (password, token, code, chain).
    Digest { reason: &'static str },
    /// Stored as is, and why that is acceptable.
    Clear { reason: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub class: Class,
}

/// How a table's rows go when the account is deleted (`DELETE /v1/me`,
/// and the deletion of unverified accounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    /// `ON DELETE CASCADE` on the foreign key to `users`.
    Cascade,
    /// Deleted explicitly by the deletion, by the function named.
    Explicit { by: &'static str },
    /// Kept after the account is gone (no foreign key, by design), with the
    /// `erased` columns cleared by `profile::db::erase_client_details`.
    Retained {
        reason: &'static str,
        erased: &'static [&'static str],
    },
}

/// Where a table appears in `GET /v1/me/export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// A list under `key`, one item per row; `id` names the item field that
    /// holds the row's primary key, when items carry it.
    Rows {
        key: &'static str,
        id: Option<&'static str>,
    },
    /// One object under `key` that summarises the rows (the account, the
    /// multi-factor state).
    Summary { key: &'static str },
    /// Not exported, and why.
    No { reason: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedTable {
    pub table: &'static str,
    /// The column holding the owner's user id.
    pub owner: &'static str,
    pub primary_key: &'static str,
    pub erasure: Erasure,
    pub export: Export,
    /// Every column of the table, each exactly once.
    pub columns: &'static [Column],
}

impl OwnedTable {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The sealed columns, with their binding.
    pub fn sealed(
        &self,
    ) -> impl Iterator<Item = (&'static str, &'static str, &'static str, SealKey)> {
        self.columns.iter().filter_map(|c| match c.class {
            Class::Sealed {
                aad_column,
                row_id,
                key,
            } => Some((c.name, aad_column, row_id, key)),
            _ => None,
        })
    }
}

const fn sealed(name: &'static str, aad_column: &'static str, row_id: &'static str) -> Column {
    Column {
        name,
        class: Class::Sealed {
            aad_column,
            row_id,
            key: SealKey::User,
        },
    }
}

const fn index(name: &'static str, context: &'static str) -> Column {
    Column {
        name,
        class: Class::BlindIndex { context },
    }
}

const fn digest(name: &'static str, reason: &'static str) -> Column {
    Column {
        name,
        class: Class::Digest { reason },
    }
}

const fn clear(name: &'static str, reason: &'static str) -> Column {
    Column {
        name,
        class: Class::Clear { reason },
    }
}

const ID: &str = "an id";
const OWNER: &str = "the owner's id";
const TIME: &str = "a timestamp of the row's life cycle";
/// A key id beside an index or a MAC (`keys status`, `keys reindex`).
const KEY_ID: &str = "the id of the ring key the index or MAC beside it is under";
const STATE: &str = "state of a security control (counters, flags, levels)";

/// Every table that holds rows about a user.
pub const OWNED: &[OwnedTable] = &[
    OwnedTable {
        table: "users",
        owner: "user_id",
        primary_key: "user_id",
        erasure: Erasure::Explicit {
            by: "profile::db::delete_user",
        },
        export: Export::Summary { key: "account" },
        columns: &[
            clear("user_id", OWNER),
            sealed("email_ciphertext", "email", "user_id"),
            index("email_blind_index", "users.email"),
            clear("email_blind_index_key_id", KEY_ID),
            sealed("display_name_ciphertext", "display_name", "user_id"),
            digest("password_hash", "argon2id PHC string"),
            clear("role", "authorization: read on every request"),
            clear("status", STATE),
            clear("email_verified_at", TIME),
            clear("password_changed_at", TIME),
            clear("created_at", TIME),
            clear("updated_at", TIME),
            clear("rate_limit_tier", STATE),
            clear("rate_limit_tier_expires_at", TIME),
            sealed("phone_ciphertext", "phone", "user_id"),
            sealed("date_of_birth_ciphertext", "date_of_birth", "user_id"),
            sealed("address_ciphertext", "address", "user_id"),
            sealed("pending_email_ciphertext", "pending_email", "user_id"),
            index("pending_email_blind_index", "users.email"),
            clear("pending_email_blind_index_key_id", KEY_ID),
        ],
    },
    OwnedTable {
        table: "user_keys",
        owner: "user_id",
        primary_key: "user_id",
        erasure: Erasure::Explicit {
            by: "user_keys::shred (first: crypto-shredding)",
        },
        export: Export::No {
            reason: "key material that protects the data, not data about the user",
        },
        columns: &[
            clear("user_id", OWNER),
            clear("master_key_id", "which master key wraps it, for rotation"),
            Column {
                name: "wrapped_key",
                class: Class::Sealed {
                    aad_column: "wrapped_key",
                    row_id: "user_id",
                    key: SealKey::Master,
                },
            },
            clear("created_at", TIME),
            clear("rewrapped_at", TIME),
        ],
    },
    OwnedTable {
        table: "sessions",
        owner: "user_id",
        primary_key: "session_id",
        erasure: Erasure::Cascade,
        export: Export::Rows {
            key: "sessions",
            id: Some("id"),
        },
        columns: &[
            clear("session_id", ID),
            clear("user_id", OWNER),
            clear("created_at", TIME),
            clear("last_seen_at", TIME),
            clear("idle_expires_at", TIME),
            clear("absolute_expires_at", TIME),
            clear("auth_time", TIME),
            clear("aal", STATE),
            clear("amr", STATE),
            clear("revoked_at", TIME),
            clear("revoked_reason", STATE),
            clear(
                "device_name",
                "the app's label for the device, shown in the session list (≤ 64 characters)",
            ),
            clear("platform", "ios, android or web"),
            clear(
                "model",
                "the device model the app reports (≤ 64 characters)",
            ),
            clear(
                "app_version",
                "the app version, for the client-version gate",
            ),
            clear(
                "last_ip",
                "shown to the owner to spot a stolen session; goes with the row",
            ),
            clear("user_agent", "shown to the owner; goes with the row"),
            clear(
                "country",
                "two-letter code from a trusted proxy, for the new-country rule",
            ),
            index("install_id_index", "sessions.install_id"),
            clear("install_id_index_key_id", KEY_ID),
            clear(
                "dpop_jkt",
                "the public device key's SHA-256 thumbprint a bound session needs proofs by",
            ),
            clear(
                "attested",
                "whether the session signed in with an attested device key",
            ),
        ],
    },
    OwnedTable {
        table: "email_codes",
        owner: "user_id",
        primary_key: "email_code_id",
        erasure: Erasure::Cascade,
        export: Export::No {
            reason: "single-use codes alive 15 minutes, kept only as MACs",
        },
        columns: &[
            clear("email_code_id", ID),
            clear("user_id", OWNER),
            clear("purpose", STATE),
            digest("code_hash", "HMAC under a key of CODE_HMAC_KEYS"),
            clear("code_hash_key_id", KEY_ID),
            clear("created_at", TIME),
            clear("expires_at", TIME),
            clear("attempts", STATE),
            clear("used_at", TIME),
        ],
    },
    OwnedTable {
        table: "mfa_totp",
        owner: "user_id",
        primary_key: "user_id",
        erasure: Erasure::Cascade,
        export: Export::Summary { key: "mfa" },
        columns: &[
            clear("user_id", OWNER),
            sealed("secret_ciphertext", "secret", "user_id"),
            clear("enabled_at", TIME),
            sealed("pending_secret_ciphertext", "pending_secret", "user_id"),
            clear("pending_created_at", TIME),
            clear("last_used_step", STATE),
            clear("failed_attempts", STATE),
            clear("throttled_until", STATE),
            clear(
                "pending_session_id",
                "the session that started the enrolment",
            ),
        ],
    },
    OwnedTable {
        table: "recovery_codes",
        owner: "user_id",
        primary_key: "recovery_code_id",
        erasure: Erasure::Cascade,
        export: Export::Summary { key: "mfa" },
        columns: &[
            clear("recovery_code_id", ID),
            clear("user_id", OWNER),
            digest("code_hash", "HMAC under a key of CODE_HMAC_KEYS"),
            clear("code_hash_key_id", KEY_ID),
            clear("created_at", TIME),
            clear("used_at", TIME),
        ],
    },
    OwnedTable {
        table: "mfa_challenges",
        owner: "user_id",
        primary_key: "mfa_challenge_id",
        erasure: Erasure::Cascade,
        export: Export::No {
            reason: "the second step of one sign-in, alive five minutes",
        },
        columns: &[
            clear("mfa_challenge_id", ID),
            clear("user_id", OWNER),
            digest("token_hash", "SHA-256 of the bearer mfa_token"),
            clear("created_at", TIME),
            clear("expires_at", TIME),
            clear("attempts", STATE),
            clear("used_at", TIME),
            clear("device_name", "copied to the session it starts"),
            clear("platform", "copied to the session it starts"),
            clear("model", "copied to the session it starts"),
            clear(
                "dpop_jkt",
                "the password step's device-key thumbprint the second step must match",
            ),
        ],
    },
    OwnedTable {
        table: "devices",
        owner: "user_id",
        primary_key: "device_id",
        erasure: Erasure::Cascade,
        export: Export::Rows {
            key: "devices",
            id: Some("id"),
        },
        columns: &[
            clear("device_id", ID),
            clear("user_id", OWNER),
            clear("platform", "ios, android or web"),
            clear("name", "the app's label for the device (≤ 64 characters)"),
            sealed("push_token_ciphertext", "push_token", "device_id"),
            index("push_token_index", "devices.push_token"),
            clear("push_token_index_key_id", KEY_ID),
            clear("created_at", TIME),
            clear("last_seen_at", TIME),
            clear(
                "session_id",
                "the session that registered it: the registration ends with that session",
            ),
        ],
    },
    OwnedTable {
        table: "notes",
        owner: "user_id",
        primary_key: "note_id",
        erasure: Erasure::Cascade,
        export: Export::Rows {
            key: "notes",
            id: Some("id"),
        },
        columns: &[
            clear("note_id", ID),
            clear("user_id", OWNER),
            sealed("title_ciphertext", "title", "note_id"),
            sealed("body_ciphertext", "body", "note_id"),
            clear("created_at", TIME),
            clear("updated_at", TIME),
        ],
    },
    OwnedTable {
        table: "rate_limit_requests",
        owner: "user_id",
        primary_key: "request_id",
        erasure: Erasure::Cascade,
        export: Export::Rows {
            key: "rate_limit_requests",
            id: Some("id"),
        },
        columns: &[
            clear("request_id", ID),
            clear("user_id", OWNER),
            clear("requested_tier", "raised or high"),
            sealed("reason_ciphertext", "reason", "request_id"),
            clear("status", "pending, approved, denied or withdrawn"),
            clear("created_at", TIME),
            clear("decided_at", TIME),
            clear(
                "decided_by",
                "the deciding administrator's id, as the audit trail's actor",
            ),
            sealed("note_ciphertext", "note", "request_id"),
            clear("tier_expires_at", TIME),
        ],
    },
    OwnedTable {
        table: "rate_limit_refusals",
        owner: "user_id",
        primary_key: "refusal_id",
        erasure: Erasure::Cascade,
        export: Export::Rows {
            key: "rate_limit_refusals",
            id: None,
        },
        columns: &[
            clear("refusal_id", ID),
            clear("user_id", OWNER),
            clear("refused_on", "a day (UTC)"),
            clear("refusals", STATE),
        ],
    },
    OwnedTable {
        table: "audit_events",
        owner: "user_id",
        primary_key: "audit_event_id",
        erasure: Erasure::Retained {
            reason: "the audit trail is append-only and hash-chained: a deleted \
                     account keeps its events (ids, types, outcomes) as a tombstone",
            erased: &["ip", "user_agent", "client_salt"],
        },
        export: Export::Rows {
            key: "audit_events",
            id: None,
        },
        columns: &[
            clear("audit_event_id", ID),
            clear("occurred_at", TIME),
            clear("event_type", "the catalogue in SECURITY.md"),
            clear("outcome", STATE),
            clear(
                "user_id",
                "the subject's id (no foreign key: kept after deletion)",
            ),
            clear("actor_id", "the staff member who acted, if any"),
            clear("session_id", ID),
            clear("ip", "security evidence; erased with the account"),
            clear("user_agent", "security evidence; erased with the account"),
            clear("request_id", "correlates with the logs"),
            clear(
                "details",
                "ids, reasons and counts: never a personal value (SECURITY.md)",
            ),
            clear("inserted_at", TIME),
            clear("chain_pos", "position in the hash chain"),
            digest("chain_hash", "SHA-256 hash chain"),
            clear("hash_version", STATE),
            clear(
                "client_salt",
                "random salt of client_digest; erased with the account",
            ),
            digest("client_digest", "salted SHA-256 of (ip, user agent)"),
        ],
    },
    OwnedTable {
        table: "security_alerts",
        owner: "user_id",
        primary_key: "security_alert_id",
        erasure: Erasure::Retained {
            reason: "the operators' record of attacks on the service outlives \
                     the account it was about",
            erased: &["ip"],
        },
        export: Export::No {
            reason: "staff's security records, written by the anomaly rules",
        },
        columns: &[
            clear("security_alert_id", ID),
            clear("created_at", TIME),
            clear("rule", STATE),
            clear("severity", STATE),
            clear(
                "user_id",
                "the subject's id (no foreign key: kept after deletion)",
            ),
            clear("ip", "security evidence; erased with the account"),
            clear(
                "details",
                "rule facts; device and user-agent keys are erased with the account",
            ),
            clear("acknowledged_at", TIME),
            clear("acknowledged_by", "the admin who acknowledged it"),
            clear("webhook_status", STATE),
            clear("webhook_attempts", STATE),
            clear("webhook_next_at", TIME),
            clear("webhook_locked_until", TIME),
        ],
    },
];

/// Every other table, and why it holds no row owned by a user.
pub const NOT_OWNED: &[(&str, &str)] = &[
    ("_sqlx_migrations", "the migration history"),
    (
        "refresh_tokens",
        "owned through its session: session_id → sessions ON DELETE CASCADE; \
         holds only SHA-256 token hashes, and a retired token's successor \
         sealed under the master key for the retry grace only",
    ),
    (
        "mail_outbox",
        "outgoing mail, payload sealed under the master key bound to its row \
         and erased once sent (the deletion notice outlives the account)",
    ),
    (
        "audit_checkpoints",
        "hash-chain checkpoints of audit retention",
    ),
    ("audit_retention_policy", "the retention period, one row"),
    (
        "dpop_proofs_seen",
        "the DPoP replay cache: SHA-256 of a key thumbprint and a proof id, \
         for about a minute; names no user",
    ),
    (
        "client_policy",
        "minimum app versions per platform; updated_by names the admin who set it",
    ),
    (
        "attestation_challenges",
        "single-use attestation challenges, stored as their SHA-256 for five \
         minutes; names no user",
    ),
    (
        "attested_keys",
        "device keys (public-key thumbprints) that App Attest or Play Integrity \
         attested, with the platform's verdicts; attested before any sign-in, \
         so they name no user (a session that uses one says so itself)",
    ),
];

/// The registry entry of `table`.
pub fn owned(table: &str) -> Option<&'static OwnedTable> {
    OWNED.iter().find(|t| t.table == table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_entry_is_consistent() {
        let mut tables = BTreeSet::new();
        for t in OWNED {
            assert!(tables.insert(t.table), "{} twice", t.table);
            let mut names = BTreeSet::new();
            for c in t.columns {
                assert!(names.insert(c.name), "{}.{} twice", t.table, c.name);
            }
            assert!(t.column(t.owner).is_some(), "{}: owner column", t.table);
            assert!(t.column(t.primary_key).is_some(), "{}: key column", t.table);
            for (name, _, row_id, _) in t.sealed() {
                assert!(t.column(row_id).is_some(), "{}.{name}: row id", t.table);
            }
            if let Erasure::Retained { erased, .. } = t.erasure {
                for e in erased {
                    assert!(t.column(e).is_some(), "{}.{e}: erased column", t.table);
                }
            }
        }
        for (t, _) in NOT_OWNED {
            assert!(!tables.contains(t), "{t} is both owned and not");
        }
    }
}
