//! Rotating the master data keys (`DATA_KEYS`): `keys rewrap`, and what
//! `keys status` reports about that ring.
//!
//! Three kinds of stored value are sealed under the master ring, and each
//! names its key in its authenticated header ([`crate::crypto::aead`]):
//!
//! - the per-user data keys (`user_keys.wrapped_key`, [`crate::user_keys`]);
//! - mail waiting in the outbox (`mail_outbox.payload`, [`crate::mail`]):
//!   a reset code or a security notice queued before a rotation must
//!   still go out after the old key has left;
//! - refresh successors kept for the retry window
//!   (`refresh_tokens.successor_ciphertext`, [`crate::sessions::successor`]).
//!
//! `keys rewrap` re-seals every one of them not under the current key, in
//! batches that are each a short transaction over rows locked `FOR UPDATE
//! SKIP LOCKED`, chosen by the header's key id (never by a plain column
//! that could have been edited) and paged by row id. A value that does not
//! open (corrupt, or under a key not in the ring) is reported with its row
//! and reason and passed over; the run finishes every other row, and then
//! exits non-zero. An old master key may leave the ring only when nothing
//! is left under it: the run says so only then, and `keys status` says so
//! per key.

use crate::{
    crypto::{aead, KeyRing},
    mail,
    sessions::successor,
    user_keys,
};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use uuid::Uuid;

pub use crate::user_keys::{Batch, Unreadable};

/// What is sealed under the master ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    UserKeys,
    Outbox,
    Successors,
}

impl Sealed {
    pub const ALL: [Sealed; 3] = [Sealed::UserKeys, Sealed::Outbox, Sealed::Successors];

    pub fn name(self) -> &'static str {
        match self {
            Self::UserKeys => "user keys",
            Self::Outbox => "mail waiting in the outbox",
            Self::Successors => "sealed refresh successors",
        }
    }

    /// Re-seals up to `batch` values after `after` not under the current key.
    pub async fn rewrap_batch(
        self,
        pool: &PgPool,
        ring: &KeyRing,
        after: Option<Uuid>,
        batch: i64,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Batch> {
        match self {
            Self::UserKeys => user_keys::rewrap_batch(pool, ring, after, batch, now).await,
            Self::Outbox => outbox_batch(pool, ring, after, batch).await,
            Self::Successors => successors_batch(pool, ring, after, batch).await,
        }
    }

    /// Values not yet under the current key.
    pub async fn remaining(self, pool: &PgPool, ring: &KeyRing) -> sqlx::Result<u64> {
        let header = aead::header_for(ring.primary_id());
        let n = match self {
            Self::UserKeys => return user_keys::remaining(pool, ring).await,
            Self::Outbox => {
                sqlx::query_scalar!(
                    r#"SELECT count(*) AS "n!" FROM mail_outbox
                       WHERE status = 'pending' AND payload IS NOT NULL
                         AND substring(payload FROM 1 FOR 5) <> $1"#,
                    &header[..],
                )
                .fetch_one(pool)
                .await?
            }
            Self::Successors => {
                sqlx::query_scalar!(
                    r#"SELECT count(*) AS "n!" FROM refresh_tokens
                       WHERE successor_ciphertext IS NOT NULL
                         AND substring(successor_ciphertext FROM 1 FOR 5) <> $1"#,
                    &header[..],
                )
                .fetch_one(pool)
                .await?
            }
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

async fn outbox_batch(
    pool: &PgPool,
    ring: &KeyRing,
    after: Option<Uuid>,
    batch: i64,
) -> anyhow::Result<Batch> {
    let header = aead::header_for(ring.primary_id());
    let mut tx = pool.begin().await?;
    let rows = sqlx::query!(
        r#"SELECT mail_id, payload AS "payload!" FROM mail_outbox
           WHERE ($1::uuid IS NULL OR mail_id > $1)
             AND status = 'pending' AND payload IS NOT NULL
             AND substring(payload FROM 1 FOR 5) <> $2
           ORDER BY mail_id LIMIT $3
           FOR UPDATE SKIP LOCKED"#,
        after,
        &header[..],
        batch,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Batch {
        last: rows.last().map(|r| r.mail_id),
        ..Batch::default()
    };
    for row in rows {
        let aad = mail::payload_aad(row.mail_id);
        let resealed =
            aead::open(ring, &aad, &row.payload).and_then(|plain| aead::seal(ring, &aad, &plain));
        let resealed = match resealed {
            Ok(v) => v,
            Err(e) => {
                out.unreadable
                    .push(Unreadable::new("mail_outbox", row.mail_id, &e));
                continue;
            }
        };
        // Only if the sender has not sent (and cleared) it meanwhile.
        sqlx::query!(
            r#"UPDATE mail_outbox SET payload = $2
               WHERE mail_id = $1 AND status = 'pending' AND payload = $3"#,
            row.mail_id,
            resealed,
            row.payload,
        )
        .execute(&mut *tx)
        .await?;
        out.done += 1;
    }
    tx.commit().await?;
    Ok(out)
}

async fn successors_batch(
    pool: &PgPool,
    ring: &KeyRing,
    after: Option<Uuid>,
    batch: i64,
) -> anyhow::Result<Batch> {
    let header = aead::header_for(ring.primary_id());
    let mut tx = pool.begin().await?;
    let rows = sqlx::query!(
        r#"SELECT refresh_token_id, session_id, successor_ciphertext AS "sealed!"
           FROM refresh_tokens
           WHERE ($1::uuid IS NULL OR refresh_token_id > $1)
             AND successor_ciphertext IS NOT NULL
             AND substring(successor_ciphertext FROM 1 FOR 5) <> $2
           ORDER BY refresh_token_id LIMIT $3
           FOR UPDATE SKIP LOCKED"#,
        after,
        &header[..],
        batch,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Batch {
        last: rows.last().map(|r| r.refresh_token_id),
        ..Batch::default()
    };
    for row in rows {
        let resealed = successor::open(ring, row.session_id, row.refresh_token_id, &row.sealed)
            .and_then(|token| successor::seal(ring, row.session_id, row.refresh_token_id, &token));
        let resealed = match resealed {
            Ok(v) => v,
            Err(e) => {
                out.unreadable
                    .push(Unreadable::new("refresh_tokens", row.refresh_token_id, &e));
                continue;
            }
        };
        // Only if it was not used (and cleared) or swept meanwhile.
        sqlx::query!(
            r#"UPDATE refresh_tokens SET successor_ciphertext = $2
               WHERE refresh_token_id = $1 AND successor_ciphertext = $3"#,
            row.refresh_token_id,
            resealed,
            row.sealed,
        )
        .execute(&mut *tx)
        .await?;
        out.done += 1;
    }
    tx.commit().await?;
    Ok(out)
}

/// The outcome of a whole `keys rewrap`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Per kind: how many values were re-sealed, how many remain not
    /// under the current key (the unreadable ones among them).
    pub per_kind: Vec<(Sealed, u64, u64)>,
    pub unreadable: Vec<Unreadable>,
}

impl Outcome {
    /// True when nothing at all is left under an older key: only then may
    /// an older master key leave `DATA_KEYS`.
    pub fn complete(&self) -> bool {
        self.unreadable.is_empty() && self.per_kind.iter().all(|(_, _, left)| *left == 0)
    }
}

/// Passes over one kind before giving up on rows that stay locked or keep
/// appearing under an old key (a process still sealing with an older ring).
const MAX_PASSES: u32 = 20;

/// Re-seals everything under the current master key: every kind, in
/// batches of `batch`, calling `progress` with a line per batch. Rows
/// locked by another run or a request are retried in later passes (half a
/// second apart); unreadable rows are collected, not retried.
pub async fn run(
    pool: &PgPool,
    ring: &KeyRing,
    batch: i64,
    now: impl Fn() -> DateTime<Utc>,
    mut progress: impl FnMut(String),
) -> anyhow::Result<Outcome> {
    let current = ring.primary_id();
    let mut outcome = Outcome::default();
    for kind in Sealed::ALL {
        let mut failed = BTreeMap::<Uuid, Unreadable>::new();
        let mut total = 0u64;
        let mut left;
        let mut passes = 0;
        loop {
            passes += 1;
            let mut after = None;
            loop {
                let step = kind.rewrap_batch(pool, ring, after, batch, now()).await?;
                total += step.done;
                for u in step.unreadable {
                    progress(format!(
                        "{}: row {}: does not open ({}); skipped, left as it is",
                        u.what, u.row, u.reason
                    ));
                    failed.insert(u.row, u);
                }
                match step.last {
                    Some(last) => after = Some(last),
                    None => break,
                }
                progress(format!(
                    "{}: {total} re-sealed under master key {current}",
                    kind.name()
                ));
            }
            left = kind.remaining(pool, ring).await?;
            // Only unreadable rows left (they stay so), or nothing at all.
            if left <= failed.len() as u64 || passes >= MAX_PASSES {
                break;
            }
            // Rows locked by another run or a request: another pass.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        progress(format!(
            "{}: {total} re-sealed under master key {current}; {left} remaining",
            kind.name()
        ));
        outcome.per_kind.push((kind, total, left));
        outcome.unreadable.extend(failed.into_values());
    }
    Ok(outcome)
}

/// Values sealed under the master ring, per master key id (read from each
/// value's header), for `keys status`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    pub user_keys: user_keys::KeyStatus,
    /// (key id, pending mails) by id; id `None` for a malformed header.
    pub outbox: Vec<(Option<u32>, i64)>,
    /// (key id, sealed successors) by id.
    pub successors: Vec<(Option<u32>, i64)>,
}

/// Counts every value sealed under the master ring by its header's key id,
/// and checks every user key unwraps.
pub async fn usage(conn: &mut PgConnection, ring: &KeyRing) -> sqlx::Result<Usage> {
    let user_keys = user_keys::status(conn, ring).await?;
    let outbox = sqlx::query!(
        r#"SELECT substring(payload FROM 1 FOR 5) AS "header!", count(*) AS "n!"
           FROM mail_outbox WHERE status = 'pending' AND payload IS NOT NULL
           GROUP BY 1"#
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| (aead::key_id_of_header(&r.header), r.n));
    let successors = sqlx::query!(
        r#"SELECT substring(successor_ciphertext FROM 1 FOR 5) AS "header!", count(*) AS "n!"
           FROM refresh_tokens WHERE successor_ciphertext IS NOT NULL
           GROUP BY 1"#
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| (aead::key_id_of_header(&r.header), r.n));
    Ok(Usage {
        user_keys,
        outbox: by_key(outbox),
        successors: by_key(successors),
    })
}

fn by_key(rows: impl Iterator<Item = (Option<u32>, i64)>) -> Vec<(Option<u32>, i64)> {
    let mut map = BTreeMap::<Option<u32>, i64>::new();
    for (id, n) in rows {
        *map.entry(id).or_default() += n;
    }
    map.into_iter().collect()
}

/// The `keys status` lines for `DATA_KEYS`.
pub fn report(ring: &KeyRing, usage: &Usage) -> Vec<String> {
    let current = ring.primary_id();
    let note = |id: u32| {
        if id == current {
            "current"
        } else if ring.get(id).is_some() {
            "older, in DATA_KEYS: run `keys rewrap`"
        } else {
            "MISSING from DATA_KEYS: these cannot be read"
        }
    };
    let mut lines = vec![format!(
        "master data keys (DATA_KEYS): current {current}, in the ring {:?}",
        ring.ids()
    )];
    let u = &usage.user_keys;
    for (id, n) in &u.per_key {
        lines.push(format!("master key {id}: {n} user keys ({})", note(*id)));
    }
    if u.malformed > 0 {
        lines.push(format!(
            "user keys not in the sealed format: {} (these users' data cannot be read)",
            u.malformed
        ));
    }
    if u.column_mismatch > 0 {
        lines.push(format!(
            "user keys whose master_key_id column disagrees with the key that wrapped them: {} (`keys rewrap` sets it right)",
            u.column_mismatch
        ));
    }
    lines.push(format!(
        "user keys that do not unwrap with DATA_KEYS: {}",
        u.unreadable.len()
    ));
    for bad in &u.unreadable {
        lines.push(format!("  user {}: {}", bad.row, bad.reason));
    }
    let kinds = [
        (Sealed::Outbox, &usage.outbox),
        (Sealed::Successors, &usage.successors),
    ];
    for (kind, counts) in kinds {
        for (id, n) in counts {
            match id {
                Some(id) => lines.push(format!(
                    "master key {id}: {n} {} ({})",
                    kind.name(),
                    note(*id)
                )),
                None => lines.push(format!("{n} {} not in the sealed format", kind.name())),
            }
        }
    }
    for id in ring.ids().into_iter().filter(|id| *id != current) {
        let sealed = |counts: &[(Option<u32>, i64)]| -> i64 {
            counts
                .iter()
                .filter(|(k, _)| *k == Some(id))
                .map(|(_, n)| *n)
                .sum()
        };
        let under = u
            .per_key
            .iter()
            .filter(|(k, _)| *k == id)
            .map(|(_, n)| *n)
            .sum::<i64>()
            + sealed(&usage.outbox)
            + sealed(&usage.successors);
        lines.push(if under == 0 && u.unreadable.is_empty() && u.malformed == 0 {
            format!(
                "master key {id}: nothing left under it; it may leave DATA_KEYS once no backup you keep needs it"
            )
        } else if under == 0 {
            format!(
                "master key {id}: nothing readable left under it, but some user keys do not unwrap (above); keep it until they are resolved"
            )
        } else {
            format!("master key {id}: still seals {under} values; keep it, run `keys rewrap`")
        });
    }
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_old_key_may_leave_only_when_nothing_is_left_under_it_and_every_user_key_unwraps() {
        let ring = crate::keys::rotated(&KeyRing::generate_single(1)).unwrap();
        let clean = Usage {
            user_keys: user_keys::KeyStatus {
                per_key: vec![(2, 5)],
                ..Default::default()
            },
            ..Default::default()
        };
        let text = report(&ring, &clean).join("\n");
        assert!(
            text.contains("master key 1: nothing left under it; it may leave"),
            "{text}"
        );

        let mail = Usage {
            outbox: vec![(Some(1), 1)],
            ..clean.clone()
        };
        let text = report(&ring, &mail).join("\n");
        assert!(
            text.contains("master key 1: 1 mail waiting in the outbox (older"),
            "{text}"
        );
        assert!(
            text.contains("master key 1: still seals 1 values; keep it"),
            "{text}"
        );

        let successor = Usage {
            successors: vec![(Some(1), 2)],
            ..clean.clone()
        };
        let text = report(&ring, &successor).join("\n");
        assert!(
            text.contains("master key 1: still seals 2 values"),
            "{text}"
        );

        let mut broken = clean.clone();
        broken.user_keys.unreadable.push(Unreadable {
            what: "user_keys",
            row: Uuid::nil(),
            reason: "decryption failed".into(),
        });
        let text = report(&ring, &broken).join("\n");
        assert!(!text.contains("may leave"), "{text}");
        assert!(text.contains("do not unwrap with DATA_KEYS: 1"), "{text}");
    }
}
