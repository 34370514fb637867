//! Rotating the blind-index and code keys: `keys reindex`, and what `keys
//! status` reports about `BLIND_INDEX_KEYS` and `CODE_HMAC_KEYS`.
//!
//! Every blind index is stored with the id of its key, and lookups match
//! the index under every key of the ring. After a new index key is put
//! first, `keys reindex` recomputes each index not yet under it from the
//! value it indexes, decrypted with its owner's data key: the email
//! (`users.email`), a pending new email (`users.pending_email`) and push
//! tokens (`devices.push_token`). It works in batches (`--batch-size`),
//! each its own short transaction over rows chosen by "key id is not the
//! current one" and locked `FOR UPDATE SKIP LOCKED`, so it is resumable,
//! safe while the service serves, and two runs share the work. It needs
//! only the current index key (old indexes are recomputed, not read), and
//! the master keys that wrap the users' data keys.
//!
//! The app install id of a session (`sessions.install_id`) is stored only
//! as its index (nothing decryptable), so it cannot be recomputed: such
//! sessions stay under their key and leave when the session ends (at most
//! `REFRESH_ABSOLUTE_DAYS` after sign-in). While their key is in the ring
//! the install-id check compares under it; once it has left, that check is
//! skipped for them. `keys status` counts them per key.
//!
//! Code MACs cannot be recomputed either (the codes are not stored), and
//! need not be: each is verified under its own key. `keys status` counts
//! the codes still usable per key, so the operator knows when an old code
//! key may leave the ring.

use crate::{
    accounts::{self, email},
    crypto::{Aad, BlindIndex, MacKeyId},
    devices,
    keys::Keys,
    profile,
    user_keys::UserKey,
};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A blind-index column `keys reindex` can recompute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    UsersEmail,
    UsersPendingEmail,
    DevicesPushToken,
}

impl Column {
    pub const ALL: [Column; 3] = [
        Column::UsersEmail,
        Column::UsersPendingEmail,
        Column::DevicesPushToken,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::UsersEmail => "users.email",
            Self::UsersPendingEmail => "users.pending_email",
            Self::DevicesPushToken => "devices.push_token",
        }
    }
}

/// Progress of a reindex run on one column.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reindexed {
    pub reindexed: u64,
    pub remaining: u64,
}

/// Recomputes up to `batch` indexes of `column` not under the current key,
/// in one transaction; returns how many, and how many remain.
pub async fn reindex_batch(
    pool: &PgPool,
    keys: &Keys,
    column: Column,
    batch: i64,
) -> anyhow::Result<Reindexed> {
    let current = keys.blind_index.current_id();
    let mut tx = pool.begin().await?;
    let done = match column {
        Column::UsersEmail => users_email(&mut tx, keys, current, batch).await?,
        Column::UsersPendingEmail => users_pending_email(&mut tx, keys, current, batch).await?,
        Column::DevicesPushToken => devices_push_token(&mut tx, keys, current, batch).await?,
    };
    tx.commit().await?;
    let mut conn = pool.acquire().await?;
    let remaining = remaining(&mut conn, column, current).await?;
    Ok(Reindexed {
        reindexed: done,
        remaining: u64::try_from(remaining).unwrap_or(0),
    })
}

async fn remaining(
    conn: &mut PgConnection,
    column: Column,
    current: MacKeyId,
) -> sqlx::Result<i64> {
    match column {
        Column::UsersEmail => {
            sqlx::query_scalar!(
                r#"SELECT count(*) AS "n!" FROM users WHERE email_blind_index_key_id <> $1"#,
                current
            )
            .fetch_one(conn)
            .await
        }
        Column::UsersPendingEmail => sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM users WHERE pending_email_blind_index_key_id <> $1"#,
            current
        )
        .fetch_one(conn)
        .await,
        Column::DevicesPushToken => {
            sqlx::query_scalar!(
                r#"SELECT count(*) AS "n!" FROM devices WHERE push_token_index_key_id <> $1"#,
                current
            )
            .fetch_one(conn)
            .await
        }
    }
}

fn unwrap_key(keys: &Keys, user_id: Uuid, wrapped: Option<&[u8]>) -> anyhow::Result<UserKey> {
    let wrapped = wrapped.with_context(|| format!("user {user_id} has no data key"))?;
    UserKey::from_wrapped(&keys.data, user_id, wrapped).map_err(|e| {
        anyhow::anyhow!("user {user_id}: {e} (is the key that wrapped it still in DATA_KEYS?)")
    })
}

/// A unique violation while moving an index means two rows hold the same
/// value: say so instead of failing with the bare database error.
fn explain(column: Column, row: Uuid, e: sqlx::Error) -> anyhow::Error {
    let duplicate = e
        .as_database_error()
        .is_some_and(|d| d.is_unique_violation());
    if duplicate {
        anyhow::anyhow!(
            "{}: row {row} has the same value as another row already indexed under the current key; \
             resolve the duplicate, then run `keys reindex` again",
            column.name()
        )
    } else {
        e.into()
    }
}

async fn users_email(
    conn: &mut PgConnection,
    keys: &Keys,
    current: MacKeyId,
    batch: i64,
) -> anyhow::Result<u64> {
    let rows = sqlx::query!(
        r#"SELECT u.user_id, u.email_ciphertext, k.wrapped_key AS "wrapped_key?"
           FROM users u LEFT JOIN user_keys k ON k.user_id = u.user_id
           WHERE u.email_blind_index_key_id <> $1
           ORDER BY u.user_id LIMIT $2
           FOR UPDATE OF u SKIP LOCKED"#,
        current,
        batch,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut done = 0;
    for row in rows {
        let key = unwrap_key(keys, row.user_id, row.wrapped_key.as_deref())?;
        let address = key
            .open_string(&accounts::email_aad(row.user_id), &row.email_ciphertext)
            .with_context(|| format!("user {}: opening the email", row.user_id))?;
        let index = email::stored_blind_index(keys, &address);
        set_users_email(conn, row.user_id, &index)
            .await
            .map_err(|e| explain(Column::UsersEmail, row.user_id, e))?;
        done += 1;
    }
    Ok(done)
}

async fn set_users_email(
    conn: &mut PgConnection,
    user_id: Uuid,
    index: &BlindIndex,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE users SET email_blind_index = $2, email_blind_index_key_id = $3 WHERE user_id = $1",
        user_id,
        &index.value[..],
        index.key_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

async fn users_pending_email(
    conn: &mut PgConnection,
    keys: &Keys,
    current: MacKeyId,
    batch: i64,
) -> anyhow::Result<u64> {
    let rows = sqlx::query!(
        r#"SELECT u.user_id, u.pending_email_ciphertext AS "sealed!", k.wrapped_key AS "wrapped_key?"
           FROM users u LEFT JOIN user_keys k ON k.user_id = u.user_id
           WHERE u.pending_email_blind_index_key_id <> $1
           ORDER BY u.user_id LIMIT $2
           FOR UPDATE OF u SKIP LOCKED"#,
        current,
        batch,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut done = 0;
    for row in rows {
        let key = unwrap_key(keys, row.user_id, row.wrapped_key.as_deref())?;
        let address = key
            .open_string(
                &profile::users_aad("pending_email", row.user_id),
                &row.sealed,
            )
            .with_context(|| format!("user {}: opening the pending email", row.user_id))?;
        let index = email::stored_blind_index(keys, &address);
        sqlx::query!(
            r#"UPDATE users SET pending_email_blind_index = $2, pending_email_blind_index_key_id = $3
               WHERE user_id = $1"#,
            row.user_id,
            &index.value[..],
            index.key_id,
        )
        .execute(&mut *conn)
        .await?;
        done += 1;
    }
    Ok(done)
}

async fn devices_push_token(
    conn: &mut PgConnection,
    keys: &Keys,
    current: MacKeyId,
    batch: i64,
) -> anyhow::Result<u64> {
    let rows = sqlx::query!(
        r#"SELECT d.device_id, d.user_id, d.push_token_ciphertext, k.wrapped_key AS "wrapped_key?"
           FROM devices d LEFT JOIN user_keys k ON k.user_id = d.user_id
           WHERE d.push_token_index_key_id <> $1
           ORDER BY d.device_id LIMIT $2
           FOR UPDATE OF d SKIP LOCKED"#,
        current,
        batch,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut done = 0;
    for row in rows {
        let key = unwrap_key(keys, row.user_id, row.wrapped_key.as_deref())?;
        let token = key
            .open_string(
                &Aad::new("devices", "push_token", row.device_id),
                &row.push_token_ciphertext,
            )
            .with_context(|| format!("device {}: opening the push token", row.device_id))?;
        let index = keys
            .blind_index
            .compute(devices::db::PUSH_TOKEN_CONTEXT, &token);
        sqlx::query!(
            r#"UPDATE devices SET push_token_index = $2, push_token_index_key_id = $3
               WHERE device_id = $1"#,
            row.device_id,
            &index.value[..],
            index.key_id,
        )
        .execute(&mut *conn)
        .await
        .map_err(|e| explain(Column::DevicesPushToken, row.device_id, e))?;
        done += 1;
    }
    Ok(done)
}

/// Rows under one key id of a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCount {
    pub key_id: MacKeyId,
    pub rows: i64,
    /// When the last of them goes by itself, for the rows that expire
    /// (live sessions, live email codes).
    pub until: Option<DateTime<Utc>>,
}

/// How one table or column uses a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub name: &'static str,
    /// What is counted ("rows", "live sessions", ...).
    pub counted: &'static str,
    pub counts: Vec<KeyCount>,
}

/// Rows per index key id: every blind-index column, the install ids of
/// live sessions among them.
pub async fn index_usage(conn: &mut PgConnection, now: DateTime<Utc>) -> sqlx::Result<Vec<Usage>> {
    let email = sqlx::query!(
        r#"SELECT email_blind_index_key_id AS "key_id!", count(*) AS "n!"
           FROM users GROUP BY 1 ORDER BY 1"#
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| count(r.key_id, r.n, None))
    .collect();
    let pending = sqlx::query!(
        r#"SELECT pending_email_blind_index_key_id AS "key_id!", count(*) AS "n!"
           FROM users WHERE pending_email_blind_index_key_id IS NOT NULL GROUP BY 1 ORDER BY 1"#
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| count(r.key_id, r.n, None))
    .collect();
    let devices = sqlx::query!(
        r#"SELECT push_token_index_key_id AS "key_id!", count(*) AS "n!"
           FROM devices GROUP BY 1 ORDER BY 1"#
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| count(r.key_id, r.n, None))
    .collect();
    let sessions = sqlx::query!(
        r#"SELECT install_id_index_key_id AS "key_id!", count(*) AS "n!",
                  max(absolute_expires_at) AS "until!"
           FROM sessions
           WHERE install_id_index_key_id IS NOT NULL AND revoked_at IS NULL
             AND idle_expires_at > $1 AND absolute_expires_at > $1
           GROUP BY 1 ORDER BY 1"#,
        now,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| count(r.key_id, r.n, Some(r.until)))
    .collect();
    Ok(vec![
        usage(Column::UsersEmail.name(), "rows", email),
        usage(Column::UsersPendingEmail.name(), "rows", pending),
        usage(Column::DevicesPushToken.name(), "rows", devices),
        usage(SESSIONS_INSTALL_ID, "live sessions", sessions),
    ])
}

/// The one index column that cannot be reindexed.
pub const SESSIONS_INSTALL_ID: &str = "sessions.install_id";

/// Codes still usable per code key id: live email codes, unused recovery
/// codes. (Used and expired ones are never checked again.)
pub async fn code_usage(conn: &mut PgConnection, now: DateTime<Utc>) -> sqlx::Result<Vec<Usage>> {
    let email_codes = sqlx::query!(
        r#"SELECT code_hash_key_id AS "key_id!", count(*) AS "n!", max(expires_at) AS "until!"
           FROM email_codes WHERE used_at IS NULL AND expires_at > $1
           GROUP BY 1 ORDER BY 1"#,
        now,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| count(r.key_id, r.n, Some(r.until)))
    .collect();
    let recovery = sqlx::query!(
        r#"SELECT code_hash_key_id AS "key_id!", count(*) AS "n!"
           FROM recovery_codes WHERE used_at IS NULL GROUP BY 1 ORDER BY 1"#
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| count(r.key_id, r.n, None))
    .collect();
    Ok(vec![
        usage("email_codes", "live codes", email_codes),
        usage("recovery_codes", "unused codes", recovery),
    ])
}

fn count(key_id: MacKeyId, rows: i64, until: Option<DateTime<Utc>>) -> KeyCount {
    KeyCount {
        key_id,
        rows,
        until,
    }
}

fn usage(name: &'static str, counted: &'static str, counts: Vec<KeyCount>) -> Usage {
    Usage {
        name,
        counted,
        counts,
    }
}

/// The `keys status` lines for the index and code rings: per column and
/// key id, how many rows, what to do about them; then, per older key of
/// each ring, whether it is still needed.
pub fn report(keys: &Keys, index: &[Usage], codes: &[Usage]) -> Vec<String> {
    let mut lines = Vec::new();
    let ring = keys.blind_index.ring();
    lines.push(format!(
        "blind-index keys (BLIND_INDEX_KEYS): current {}, in the ring {:?}",
        ring.current_id(),
        ring.ids()
    ));
    for u in index {
        for c in &u.counts {
            let note = if c.key_id == ring.current_id() {
                "current".to_owned()
            } else if u.name == SESSIONS_INSTALL_ID {
                let until = c.until.map(|t| t.to_rfc3339()).unwrap_or_default();
                if ring.contains(c.key_id) {
                    format!(
                        "cannot be reindexed (the install id is not stored); checked under this key while it stays in the ring; the last ends by {until}"
                    )
                } else {
                    format!(
                        "key not in BLIND_INDEX_KEYS: their install-id check is skipped; the last ends by {until}"
                    )
                }
            } else if ring.contains(c.key_id) {
                "older, still found: run `keys reindex`".to_owned()
            } else {
                "key not in BLIND_INDEX_KEYS: these are NOT FOUND by lookups; run `keys reindex`"
                    .to_owned()
            };
            lines.push(format!(
                "  {}: index key {}: {} {} ({note})",
                u.name, c.key_id, c.rows, u.counted
            ));
        }
    }
    for id in ring.ids().into_iter().filter(|id| *id != ring.current_id()) {
        let users: i64 = index
            .iter()
            .flat_map(|u| &u.counts)
            .filter(|c| c.key_id == id)
            .map(|c| c.rows)
            .sum();
        lines.push(if users == 0 {
            format!("  index key {id}: nothing left under it; it may leave BLIND_INDEX_KEYS")
        } else {
            format!("  index key {id}: still used by {users} rows or sessions; keep it")
        });
    }
    let ring = keys.codes.ring();
    lines.push(format!(
        "code keys (CODE_HMAC_KEYS): current {}, in the ring {:?}",
        ring.current_id(),
        ring.ids()
    ));
    for u in codes {
        for c in &u.counts {
            let until = c
                .until
                .map(|t| format!("; the last expires by {}", t.to_rfc3339()))
                .unwrap_or_default();
            let note = if c.key_id == ring.current_id() {
                "current".to_owned()
            } else if ring.contains(c.key_id) {
                format!("older, still verified under it{until}")
            } else {
                format!("key not in CODE_HMAC_KEYS: these no longer verify{until}")
            };
            lines.push(format!(
                "  {}: code key {}: {} {} ({note})",
                u.name, c.key_id, c.rows, u.counted
            ));
        }
    }
    for id in ring.ids().into_iter().filter(|id| *id != ring.current_id()) {
        let live: i64 = codes
            .iter()
            .flat_map(|u| &u.counts)
            .filter(|c| c.key_id == id)
            .map(|c| c.rows)
            .sum();
        lines.push(if live == 0 {
            format!("  code key {id}: no usable code left under it; it may leave CODE_HMAC_KEYS")
        } else {
            format!("  code key {id}: {live} usable codes still under it; keep it")
        });
    }
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_what_each_older_key_still_holds() {
        let mut keys = Keys::generate().unwrap();
        let spec = |ring: &crate::crypto::MacKeyRing| {
            let rotated = crate::keys::RingName::BlindIndex
                .rotate(ring.key_ring())
                .unwrap();
            crate::crypto::MacKeyRing::new(rotated).unwrap()
        };
        keys.blind_index = crate::crypto::BlindIndexKeys::new(spec(keys.blind_index.ring()));
        keys.codes = crate::crypto::CodeHasher::new(spec(keys.codes.ring()));
        let until = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let index = vec![
            usage(
                "users.email",
                "rows",
                vec![count(1, 3, None), count(2, 5, None)],
            ),
            usage(
                SESSIONS_INSTALL_ID,
                "live sessions",
                vec![count(1, 2, Some(until))],
            ),
        ];
        let codes = vec![usage("recovery_codes", "unused codes", vec![])];
        let text = report(&keys, &index, &codes).join("\n");
        assert!(
            text.contains(
                "users.email: index key 1: 3 rows (older, still found: run `keys reindex`)"
            ),
            "{text}"
        );
        assert!(
            text.contains("users.email: index key 2: 5 rows (current)"),
            "{text}"
        );
        assert!(
            text.contains("sessions.install_id: index key 1: 2 live sessions (cannot be reindexed"),
            "{text}"
        );
        assert!(text.contains("2026-06-01T00:00:00+00:00"), "{text}");
        assert!(
            text.contains("index key 1: still used by 5 rows or sessions; keep it"),
            "{text}"
        );
        assert!(
            text.contains("code key 1: no usable code left under it; it may leave CODE_HMAC_KEYS"),
            "{text}"
        );
    }
}
