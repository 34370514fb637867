//! How often each account was refused with 429 on `reads` and `writes`,
//! kept so that staff deciding a rate-limit request see evidence
//! (`rate_limit_refusals`, one row per account and day, 31 days).
//!
//! A refused request must stay cheap, so the rate-limit layer only bumps
//! an in-process counter ([`RefusalCounter::record`]); the background pass
//! (`rate_limit::tiers::run`) adds the counts to the table in one statement
//! every few seconds, and staff reads flush first. The counter holds at
//! most [`MAX_PENDING_ACCOUNTS`] accounts between two flushes (refusals of
//! further accounts are dropped and counted in
//! `rate_limit_refusals_dropped_total`), so a flood of tokens cannot grow
//! it without bound. Counts not yet flushed when a process dies are lost:
//! the figure is evidence for a person, not an accounting record.

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};
use uuid::Uuid;

/// Distinct accounts held between two flushes.
pub const MAX_PENDING_ACCOUNTS: usize = 10_000;

/// Refusals per account since the last flush.
#[derive(Debug, Default)]
pub struct RefusalCounter {
    pending: Mutex<HashMap<Uuid, u32>>,
}

impl RefusalCounter {
    /// Counts one 429 for `user_id`. No I/O: a map update under a lock.
    pub fn record(&self, user_id: Uuid) {
        self.add(user_id, 1);
    }

    fn add(&self, user_id: Uuid, n: u32) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let held = pending.len();
        match pending.get_mut(&user_id) {
            Some(count) => *count = count.saturating_add(n),
            None if held < MAX_PENDING_ACCOUNTS => {
                pending.insert(user_id, n);
            }
            None => metrics::counter!("rate_limit_refusals_dropped_total").increment(1),
        }
    }

    fn take(&self) -> HashMap<Uuid, u32> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Adds the counts held so far to `day`'s rows, in one statement, and
    /// returns how many accounts it wrote. Accounts deleted meanwhile are
    /// skipped. On a database error the counts are kept for the next flush.
    pub async fn flush(&self, db: &PgPool, day: NaiveDate) -> sqlx::Result<u64> {
        let pending = self.take();
        if pending.is_empty() {
            return Ok(0);
        }
        let (users, counts): (Vec<Uuid>, Vec<i32>) = pending
            .iter()
            .map(|(user, n)| (*user, i32::try_from(*n).unwrap_or(i32::MAX)))
            .unzip();
        let written = sqlx::query!(
            r#"INSERT INTO rate_limit_refusals (refusal_id, user_id, refused_on, refusals)
               SELECT gen_random_uuid(), t.user_id, $3, t.n
               FROM unnest($1::uuid[], $2::int4[]) AS t(user_id, n)
               WHERE EXISTS (SELECT 1 FROM users u WHERE u.user_id = t.user_id)
               ON CONFLICT ON CONSTRAINT rate_limit_refusals_user_day_key
               DO UPDATE SET refusals = least(
                   rate_limit_refusals.refusals::bigint + EXCLUDED.refusals, 2147483647)::int4"#,
            &users,
            &counts,
            day,
        )
        .execute(db)
        .await;
        match written {
            Ok(done) => Ok(done.rows_affected()),
            Err(e) => {
                for (user, n) in pending {
                    self.add(user, n);
                }
                Err(e)
            }
        }
    }
}

/// One account's 429s on one day.
#[derive(Debug, Serialize)]
pub struct RefusalDay {
    pub day: NaiveDate,
    pub refusals: i32,
}

/// Every day with 429s of `user_id` still kept, newest first (the export).
pub async fn days(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<RefusalDay>> {
    sqlx::query_as!(
        RefusalDay,
        r#"SELECT refused_on AS day, refusals FROM rate_limit_refusals
           WHERE user_id = $1 ORDER BY refused_on DESC"#,
        user_id,
    )
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_account_and_the_map_is_bounded() {
        let counter = RefusalCounter::default();
        let a = Uuid::now_v7();
        counter.record(a);
        counter.record(a);
        for _ in 0..MAX_PENDING_ACCOUNTS + 5 {
            counter.record(Uuid::now_v7());
        }
        counter.record(a);
        let taken = counter.take();
        assert_eq!(taken.len(), MAX_PENDING_ACCOUNTS);
        assert_eq!(taken.get(&a), Some(&3));
        assert!(counter.take().is_empty(), "taking empties it");
    }
}
