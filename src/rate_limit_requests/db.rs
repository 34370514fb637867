//! Queries over `rate_limit_requests`. The user's side always takes the
//! owner (`WHERE request_id = $1 AND user_id = $2`), so "not yours" and
//! "missing" are the same empty result; the staff side ([`staff_page`],
//! [`lock_for_decision`], [`decide`]) is called only behind `RequireRole`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

pub struct RequestRow {
    pub request_id: Uuid,
    pub user_id: Uuid,
    pub requested_tier: String,
    pub reason_ciphertext: Vec<u8>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<Uuid>,
    pub note_ciphertext: Option<Vec<u8>>,
    pub tier_expires_at: Option<DateTime<Utc>>,
}

pub struct NewRequest<'a> {
    pub request_id: Uuid,
    pub user_id: Uuid,
    pub requested_tier: &'a str,
    pub reason_ciphertext: &'a [u8],
    pub now: DateTime<Utc>,
}

/// Serialises the requests of one user until the transaction ends, so the
/// pending check and the window count stay true until the insert. An
/// advisory lock (namespace 0x726c7271, "rlrq") touches no row.
pub async fn lock_owner(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    // `pg_advisory_xact_lock` returns void, which the query macros cannot
    // describe; the statement is constant.
    sqlx::query("SELECT pg_advisory_xact_lock(1919709809, hashtext($1::text))")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether the user has a pending request, how many requests they made
/// since `since`, and when the oldest of those was made.
pub struct Standing {
    pub pending: bool,
    pub recent: i64,
    pub oldest_recent: Option<DateTime<Utc>>,
}

pub async fn standing(
    conn: &mut PgConnection,
    user_id: Uuid,
    since: DateTime<Utc>,
) -> sqlx::Result<Standing> {
    let r = sqlx::query!(
        r#"SELECT coalesce(bool_or(status = 'pending'), false) AS "pending!",
                  count(*) FILTER (WHERE created_at > $2) AS "recent!",
                  min(created_at) FILTER (WHERE created_at > $2) AS oldest_recent
           FROM rate_limit_requests WHERE user_id = $1"#,
        user_id,
        since,
    )
    .fetch_one(conn)
    .await?;
    Ok(Standing {
        pending: r.pending,
        recent: r.recent,
        oldest_recent: r.oldest_recent,
    })
}

pub async fn insert(conn: &mut PgConnection, r: &NewRequest<'_>) -> sqlx::Result<RequestRow> {
    sqlx::query_as!(
        RequestRow,
        r#"INSERT INTO rate_limit_requests
               (request_id, user_id, requested_tier, reason_ciphertext, status, created_at)
           VALUES ($1, $2, $3, $4, 'pending', $5)
           RETURNING request_id, user_id, requested_tier, reason_ciphertext, status, created_at,
                     decided_at, decided_by, note_ciphertext, tier_expires_at"#,
        r.request_id,
        r.user_id,
        r.requested_tier,
        r.reason_ciphertext,
        r.now,
    )
    .fetch_one(conn)
    .await
}

/// The owner's requests, newest first, after the cursor `before`.
pub async fn page(
    conn: &mut PgConnection,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<RequestRow>> {
    sqlx::query_as!(
        RequestRow,
        r#"SELECT request_id, user_id, requested_tier, reason_ciphertext, status, created_at,
                  decided_at, decided_by, note_ciphertext, tier_expires_at
           FROM rate_limit_requests
           WHERE user_id = $1 AND ($2::uuid IS NULL OR request_id < $2)
           ORDER BY request_id DESC LIMIT $3"#,
        user_id,
        before,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Withdraws the owner's request if it is pending. `None`: no such
/// request of this owner; `Some(false)`: it is no longer pending.
pub async fn withdraw(
    conn: &mut PgConnection,
    user_id: Uuid,
    request_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<bool>> {
    let status = sqlx::query_scalar!(
        "SELECT status FROM rate_limit_requests WHERE request_id = $1 AND user_id = $2 FOR UPDATE",
        request_id,
        user_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(status) = status else {
        return Ok(None);
    };
    if status != "pending" {
        return Ok(Some(false));
    }
    sqlx::query!(
        r#"UPDATE rate_limit_requests SET status = 'withdrawn', decided_at = $3
           WHERE request_id = $1 AND user_id = $2"#,
        request_id,
        user_id,
        now,
    )
    .execute(conn)
    .await?;
    Ok(Some(true))
}

/// One row of the staff list: the request and its account's standing.
pub struct StaffRow {
    pub request_id: Uuid,
    pub user_id: Uuid,
    pub requested_tier: String,
    pub reason_ciphertext: Vec<u8>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<Uuid>,
    pub note_ciphertext: Option<Vec<u8>>,
    pub tier_expires_at: Option<DateTime<Utc>>,
    pub email_ciphertext: Vec<u8>,
    pub current_tier: String,
    pub current_tier_expires_at: Option<DateTime<Utc>>,
    /// 429s on `reads`/`writes` counted since the day given.
    pub rate_limited: i64,
}

impl StaffRow {
    pub fn request(&self) -> RequestRow {
        RequestRow {
            request_id: self.request_id,
            user_id: self.user_id,
            requested_tier: self.requested_tier.clone(),
            reason_ciphertext: self.reason_ciphertext.clone(),
            status: self.status.clone(),
            created_at: self.created_at,
            decided_at: self.decided_at,
            decided_by: self.decided_by,
            note_ciphertext: self.note_ciphertext.clone(),
            tier_expires_at: self.tier_expires_at,
        }
    }
}

/// Every account's requests (or those with `status`), newest first, after
/// the cursor `before`, with the account's address, tier and 429 count
/// since `since_day`. Staff only.
pub async fn staff_page(
    conn: &mut PgConnection,
    status: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
    since_day: chrono::NaiveDate,
) -> sqlx::Result<Vec<StaffRow>> {
    sqlx::query_as!(
        StaffRow,
        r#"SELECT r.request_id, r.user_id, r.requested_tier, r.reason_ciphertext, r.status,
                  r.created_at, r.decided_at, r.decided_by, r.note_ciphertext, r.tier_expires_at,
                  u.email_ciphertext, u.rate_limit_tier AS current_tier,
                  u.rate_limit_tier_expires_at AS current_tier_expires_at,
                  coalesce((SELECT sum(f.refusals) FROM rate_limit_refusals f
                            WHERE f.user_id = r.user_id AND f.refused_on >= $4), 0)::int8
                      AS "rate_limited!"
           FROM rate_limit_requests r JOIN users u ON u.user_id = r.user_id
           WHERE ($1::text IS NULL OR r.status = $1) AND ($2::uuid IS NULL OR r.request_id < $2)
           ORDER BY r.request_id DESC LIMIT $3"#,
        status,
        before,
        limit,
        since_day,
    )
    .fetch_all(conn)
    .await
}

/// One request as [`staff_page`] shows it. Staff only.
pub async fn staff_one(
    conn: &mut PgConnection,
    request_id: Uuid,
    since_day: chrono::NaiveDate,
) -> sqlx::Result<Option<StaffRow>> {
    sqlx::query_as!(
        StaffRow,
        r#"SELECT r.request_id, r.user_id, r.requested_tier, r.reason_ciphertext, r.status,
                  r.created_at, r.decided_at, r.decided_by, r.note_ciphertext, r.tier_expires_at,
                  u.email_ciphertext, u.rate_limit_tier AS current_tier,
                  u.rate_limit_tier_expires_at AS current_tier_expires_at,
                  coalesce((SELECT sum(f.refusals) FROM rate_limit_refusals f
                            WHERE f.user_id = r.user_id AND f.refused_on >= $2), 0)::int8
                      AS "rate_limited!"
           FROM rate_limit_requests r JOIN users u ON u.user_id = r.user_id
           WHERE r.request_id = $1"#,
        request_id,
        since_day,
    )
    .fetch_optional(conn)
    .await
}

/// The owner of a request, read without a lock (an owner never changes):
/// the decision locks the owner's `users` row before the request, in the
/// order an account deletion takes them.
pub async fn owner_of(conn: &mut PgConnection, request_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "SELECT user_id FROM rate_limit_requests WHERE request_id = $1",
        request_id
    )
    .fetch_optional(conn)
    .await
}

/// Locks the account row, then the request, until the transaction ends.
/// `None` when either is gone (a deleted account takes its requests).
pub async fn lock_for_decision(
    conn: &mut PgConnection,
    request_id: Uuid,
    user_id: Uuid,
) -> sqlx::Result<Option<RequestRow>> {
    let user = sqlx::query_scalar!(
        "SELECT user_id FROM users WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    if user.is_none() {
        return Ok(None);
    }
    sqlx::query_as!(
        RequestRow,
        r#"SELECT request_id, user_id, requested_tier, reason_ciphertext, status, created_at,
                  decided_at, decided_by, note_ciphertext, tier_expires_at
           FROM rate_limit_requests WHERE request_id = $1 AND user_id = $2 FOR UPDATE"#,
        request_id,
        user_id,
    )
    .fetch_optional(conn)
    .await
}

pub struct Decision<'a> {
    pub request_id: Uuid,
    pub status: &'a str,
    pub now: DateTime<Utc>,
    pub decided_by: Uuid,
    pub note_ciphertext: Option<&'a [u8]>,
    pub tier_expires_at: Option<DateTime<Utc>>,
}

/// Records a decision on a pending request (locked by the caller).
pub async fn decide(conn: &mut PgConnection, d: &Decision<'_>) -> sqlx::Result<RequestRow> {
    sqlx::query_as!(
        RequestRow,
        r#"UPDATE rate_limit_requests
           SET status = $2, decided_at = $3, decided_by = $4, note_ciphertext = $5, tier_expires_at = $6
           WHERE request_id = $1 AND status = 'pending'
           RETURNING request_id, user_id, requested_tier, reason_ciphertext, status, created_at,
                     decided_at, decided_by, note_ciphertext, tier_expires_at"#,
        d.request_id,
        d.status,
        d.now,
        d.decided_by,
        d.note_ciphertext,
        d.tier_expires_at,
    )
    .fetch_one(conn)
    .await
}
