//! Per-user data keys: envelope encryption with crypto-shredding.
//!
//! Each user has their own random AES-256 key. Every personal field of that
//! user (email, profile, TOTP secret, push tokens) is sealed under it with
//! associated data naming table, column and row. The key itself is stored
//! only wrapped by the current master key of `DATA_KEYS` (table
//! `user_keys`), so:
//!
//! - deleting the wrapped key destroys the user's data everywhere it was
//!   copied (crypto-shredding);
//! - rotating the master key re-wraps 32-byte keys, never re-encrypts data
//!   (`keys rotate`, `keys rewrap`, `keys status`);
//! - a value moved from one user's row to another's fails to open twice
//!   over: wrong key and wrong associated data.
//!
//! Values sealed under a user key carry key id 0 in their header; master
//! keys are numbered from 1, so a user-key value never opens with a master
//! key (and vice versa).

use crate::{
    crypto::{aead, Aad, CryptoError, Key, KeyRing},
    error::ApiError,
};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;
use zeroize::Zeroizing;

/// A value sealed under the master ring that did not open (here, or in
/// the other tables [`crate::rewrap`] re-seals): which table, which row,
/// and why. The row is left as it was; its key must stay in `DATA_KEYS`
/// (or the row be repaired or deleted) before that key leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub what: &'static str,
    pub row: Uuid,
    pub reason: String,
}

impl Unreadable {
    pub fn new(what: &'static str, row: Uuid, error: &CryptoError) -> Self {
        Self {
            what,
            row,
            reason: error.to_string(),
        }
    }
}

/// One batch of a rewrap (here, because [`crate::rewrap`] depends on this
/// module and not the other way round).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Values re-sealed under the current key.
    pub done: u64,
    /// Values that did not open: reported, left as they are, passed over.
    pub unreadable: Vec<Unreadable>,
    /// The last row id this batch looked at, where the next batch starts;
    /// `None` when nothing was left.
    pub last: Option<Uuid>,
}

/// What [`Unreadable`] reports rows of this table as.
const WHAT: &str = "user_keys";

/// The key id written into the header of values sealed under a user key.
const USER_KEY_ID: u32 = 0;

/// One user's unwrapped data key. Redacted in `Debug`, wiped on drop.
#[derive(Debug)]
pub struct UserKey {
    user_id: Uuid,
    ring: KeyRing,
}

fn wrap_aad(user_id: Uuid) -> Aad<'static> {
    Aad::new("user_keys", "wrapped_key", user_id)
}

impl UserKey {
    /// A fresh key for a new user and its wrapped form under `master`'s
    /// current key; store it with [`UserKey::insert`] in the transaction
    /// that creates the user.
    pub fn generate(user_id: Uuid) -> Self {
        Self::from_key(user_id, Key::generate())
    }

    fn from_key(user_id: Uuid, key: Key) -> Self {
        Self {
            user_id,
            ring: KeyRing::single(USER_KEY_ID, key),
        }
    }

    fn wrap(&self, master: &KeyRing) -> Result<(u32, Vec<u8>), CryptoError> {
        let (_, key) = self.ring.primary();
        let wrapped = aead::seal(master, &wrap_aad(self.user_id), key.expose())?;
        Ok((master.primary().0, wrapped))
    }

    fn unwrap(master: &KeyRing, user_id: Uuid, wrapped: &[u8]) -> Result<Self, CryptoError> {
        let raw = aead::open(master, &wrap_aad(user_id), wrapped)?;
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
            raw.as_slice()
                .try_into()
                .map_err(|_| CryptoError::Malformed)?,
        );
        Ok(Self::from_key(user_id, Key::from_bytes(*bytes)))
    }

    /// Stores this key wrapped under the master ring's current key.
    pub async fn insert(
        &self,
        conn: &mut PgConnection,
        master: &KeyRing,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let (master_id, wrapped) = self.wrap(master)?;
        sqlx::query!(
            "INSERT INTO user_keys (user_id, master_key_id, wrapped_key, created_at) VALUES ($1, $2, $3, $4)",
            self.user_id,
            i64::from(master_id),
            wrapped,
            now,
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Loads and unwraps `user_id`'s key. A user without one (deleted, or
    /// never had one) is an internal error: callers only ask for users they
    /// have just found.
    pub async fn load(
        conn: &mut PgConnection,
        master: &KeyRing,
        user_id: Uuid,
    ) -> Result<Self, ApiError> {
        let wrapped = sqlx::query_scalar!(
            "SELECT wrapped_key FROM user_keys WHERE user_id = $1",
            user_id
        )
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("user {user_id} has no data key")))?;
        Ok(Self::unwrap(master, user_id, &wrapped)?)
    }

    /// The caller's own key, unwrapped from the copy read with their
    /// session (no query).
    pub fn of(master: &KeyRing, auth: &crate::http::auth::AuthUser) -> Result<Self, ApiError> {
        let wrapped = auth.wrapped_key.as_ref().ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("user {} has no data key", auth.user_id))
        })?;
        Ok(Self::unwrap(master, auth.user_id, wrapped.as_bytes())?)
    }

    /// Unwraps a wrapped key read along with other rows (a batch job that
    /// joined `user_keys`, such as `keys reindex`).
    pub fn from_wrapped(
        master: &KeyRing,
        user_id: Uuid,
        wrapped: &[u8],
    ) -> Result<Self, CryptoError> {
        Self::unwrap(master, user_id, wrapped)
    }

    pub fn user_id(&self) -> Uuid {
        self.user_id
    }

    /// Seals a field of this user's row `row_id` in `table.column`.
    pub fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        aead::seal(&self.ring, aad, plaintext)
    }

    pub fn open(&self, aad: &Aad, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        aead::open(&self.ring, aad, sealed)
    }

    pub fn open_string(&self, aad: &Aad, sealed: &[u8]) -> Result<Zeroizing<String>, CryptoError> {
        aead::open_string(&self.ring, aad, sealed)
    }
}

/// Crypto-shredding: destroys `user_id`'s wrapped key. Run first when an
/// account is deleted, in the same transaction as the rest of the erasure.
pub async fn shred(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query!("DELETE FROM user_keys WHERE user_id = $1", user_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// What a value sealed under the master ring holds for the rotation: the
/// key id in its authenticated header, or why it has none.
pub fn header_key(sealed: &[u8]) -> Result<u32, CryptoError> {
    aead::key_id_of(sealed)
}

/// What `keys status` reports about `user_keys`: how many wrapped keys
/// each master key id (read from each value's authenticated header)
/// wraps, how many rows' plain `master_key_id` column disagrees with the
/// header, and every row that does not unwrap with the ring.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// (master key id from the header, user keys), by id.
    pub per_key: Vec<(u32, i64)>,
    /// Rows whose header is not in the sealed format at all.
    pub malformed: i64,
    /// Rows whose `master_key_id` column names another key than the header.
    pub column_mismatch: i64,
    /// Rows that do not unwrap with `DATA_KEYS` (corrupt, or under a key
    /// not in the ring).
    pub unreadable: Vec<Unreadable>,
}

/// Reads every wrapped key (in pages by user id, no locks) and tries to
/// unwrap it with `master`: a full check, not a count of a plain column.
pub async fn status(conn: &mut PgConnection, master: &KeyRing) -> sqlx::Result<KeyStatus> {
    const PAGE: i64 = 1000;
    let mut out = KeyStatus::default();
    let mut per_key = std::collections::BTreeMap::<u32, i64>::new();
    let mut after: Option<Uuid> = None;
    loop {
        let rows = sqlx::query!(
            r#"SELECT user_id, master_key_id, wrapped_key FROM user_keys
               WHERE $1::uuid IS NULL OR user_id > $1
               ORDER BY user_id LIMIT $2"#,
            after,
            PAGE,
        )
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.user_id);
        for row in rows {
            match header_key(&row.wrapped_key) {
                Ok(id) => {
                    *per_key.entry(id).or_default() += 1;
                    if i64::from(id) != row.master_key_id {
                        out.column_mismatch += 1;
                    }
                }
                Err(_) => out.malformed += 1,
            }
            if let Err(e) = UserKey::unwrap(master, row.user_id, &row.wrapped_key) {
                out.unreadable.push(Unreadable::new(WHAT, row.user_id, &e));
            }
        }
    }
    out.per_key = per_key.into_iter().collect();
    Ok(out)
}

/// Re-wraps up to `batch` user keys after `after` (by user id) that are
/// not yet under `master`'s current key.
///
/// A row is chosen by the key id in its wrapped value's authenticated
/// header, not by the plain `master_key_id` column: an edited column can
/// neither hide a row from the rewrap (and so lose it when the old key
/// leaves) nor make the rewrap skip one; a row whose column disagrees with
/// its header is rewrapped too, which sets the column right.
///
/// Each batch is one short transaction that locks only its rows (`SKIP
/// LOCKED`, so two runs share the work and requests that load keys are not
/// blocked), and a row is updated only if it still holds the wrapped key we
/// read. A row that does not unwrap is reported in
/// [`Batch::unreadable`] and passed over: pages go by user id
/// (`after`), so such a row cannot hold up, or loop, the rest. Stopping at
/// any point loses nothing: a later run picks up the rows still under an
/// old key.
pub async fn rewrap_batch(
    pool: &PgPool,
    master: &KeyRing,
    after: Option<Uuid>,
    batch: i64,
    now: DateTime<Utc>,
) -> Result<Batch, anyhow::Error> {
    let current = master.primary().0;
    let header = aead::header_for(current);
    let mut tx = pool.begin().await?;
    let rows = sqlx::query!(
        r#"SELECT user_id, wrapped_key FROM user_keys
           WHERE ($1::uuid IS NULL OR user_id > $1)
             AND (substring(wrapped_key FROM 1 FOR 5) <> $2 OR master_key_id <> $3)
           ORDER BY user_id LIMIT $4
           FOR UPDATE SKIP LOCKED"#,
        after,
        &header[..],
        i64::from(current),
        batch,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Batch {
        last: rows.last().map(|r| r.user_id),
        ..Batch::default()
    };
    for row in rows {
        let key = match UserKey::unwrap(master, row.user_id, &row.wrapped_key) {
            Ok(key) => key,
            Err(e) => {
                out.unreadable.push(Unreadable::new(WHAT, row.user_id, &e));
                continue;
            }
        };
        let (master_id, wrapped) = key.wrap(master)?;
        sqlx::query!(
            r#"UPDATE user_keys SET master_key_id = $2, wrapped_key = $3, rewrapped_at = $4
               WHERE user_id = $1 AND wrapped_key = $5"#,
            row.user_id,
            i64::from(master_id),
            wrapped,
            now,
            row.wrapped_key,
        )
        .execute(&mut *tx)
        .await?;
        out.done += 1;
    }
    tx.commit().await?;
    Ok(out)
}

/// User keys not yet under `master`'s current key (by header), or whose
/// `master_key_id` column says otherwise.
pub async fn remaining(pool: &PgPool, master: &KeyRing) -> sqlx::Result<u64> {
    let current = master.primary().0;
    let header = aead::header_for(current);
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM user_keys
           WHERE substring(wrapped_key FROM 1 FOR 5) <> $1 OR master_key_id <> $2"#,
        &header[..],
        i64::from(current),
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_opens_only_for_its_user_and_values_only_under_their_key() {
        let master = KeyRing::generate_single(1);
        let alice = Uuid::now_v7();
        let bob = Uuid::now_v7();
        let key = UserKey::generate(alice);
        let (id, wrapped) = key.wrap(&master).unwrap();
        assert_eq!(id, 1);
        assert!(UserKey::unwrap(&master, bob, &wrapped).is_err());
        let again = UserKey::unwrap(&master, alice, &wrapped).unwrap();
        let aad = Aad::new("users", "phone", alice);
        let sealed = key.seal(&aad, b"+447700900123").unwrap();
        assert_eq!(&again.open(&aad, &sealed).unwrap()[..], b"+447700900123");
        // Not with the master ring, not with another user's key.
        assert_eq!(
            aead::open(&master, &aad, &sealed).unwrap_err(),
            CryptoError::UnknownKey(0)
        );
        assert_eq!(
            UserKey::generate(alice).open(&aad, &sealed).unwrap_err(),
            CryptoError::Decrypt
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = UserKey::generate(Uuid::nil());
        assert!(!format!("{key:?}").contains(&key.ring.primary().1.to_base64()));
    }
}
