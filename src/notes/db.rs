//! Queries over `notes`. Every one takes the owner and filters by it in
//! SQL, so "not yours" and "missing" are the same empty result: there is
//! no query by note id alone to misuse.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A row as stored: the title and body still sealed.
pub struct NoteRow {
    pub note_id: Uuid,
    pub title_ciphertext: Vec<u8>,
    pub body_ciphertext: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct NewNote<'a> {
    pub note_id: Uuid,
    pub user_id: Uuid,
    pub title_ciphertext: &'a [u8],
    pub body_ciphertext: &'a [u8],
    pub now: DateTime<Utc>,
}

/// Serialises note creation of one user until the transaction ends, so
/// the count [`count`] returns stays true until the insert. An advisory
/// lock (namespace 0x6e6f7465, "note") touches no row.
pub async fn lock_owner(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    // `pg_advisory_xact_lock` returns void, which the query macros cannot
    // describe; the statement is constant.
    sqlx::query("SELECT pg_advisory_xact_lock(1852798053, hashtext($1::text))")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn count(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM notes WHERE user_id = $1"#,
        user_id
    )
    .fetch_one(conn)
    .await
}

pub async fn insert(conn: &mut PgConnection, n: &NewNote<'_>) -> sqlx::Result<NoteRow> {
    sqlx::query_as!(
        NoteRow,
        r#"INSERT INTO notes (note_id, user_id, title_ciphertext, body_ciphertext, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $5)
           RETURNING note_id, title_ciphertext, body_ciphertext, created_at, updated_at"#,
        n.note_id,
        n.user_id,
        n.title_ciphertext,
        n.body_ciphertext,
        n.now,
    )
    .fetch_one(conn)
    .await
}

/// One page, newest first: the owner's notes older than `before` (the
/// previous page's last id), at most `limit`. Keyset pagination: the cost
/// does not grow with the page number, and a note created meanwhile
/// neither repeats nor skips a row.
pub async fn page(
    conn: &mut PgConnection,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<NoteRow>> {
    sqlx::query_as!(
        NoteRow,
        r#"SELECT note_id, title_ciphertext, body_ciphertext, created_at, updated_at
           FROM notes
           WHERE user_id = $1 AND ($2::uuid IS NULL OR note_id < $2)
           ORDER BY note_id DESC
           LIMIT $3"#,
        user_id,
        before,
        limit,
    )
    .fetch_all(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    user_id: Uuid,
    note_id: Uuid,
) -> sqlx::Result<Option<NoteRow>> {
    sqlx::query_as!(
        NoteRow,
        r#"SELECT note_id, title_ciphertext, body_ciphertext, created_at, updated_at
           FROM notes WHERE note_id = $1 AND user_id = $2"#,
        note_id,
        user_id,
    )
    .fetch_optional(conn)
    .await
}

/// Replaces the sealed columns given (`None` keeps one) and returns the
/// row; `None` when the owner has no such note.
pub async fn update(
    conn: &mut PgConnection,
    user_id: Uuid,
    note_id: Uuid,
    title_ciphertext: Option<&[u8]>,
    body_ciphertext: Option<&[u8]>,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<NoteRow>> {
    sqlx::query_as!(
        NoteRow,
        r#"UPDATE notes SET
             title_ciphertext = coalesce($3, title_ciphertext),
             body_ciphertext = coalesce($4, body_ciphertext),
             updated_at = $5
           WHERE note_id = $1 AND user_id = $2
           RETURNING note_id, title_ciphertext, body_ciphertext, created_at, updated_at"#,
        note_id,
        user_id,
        title_ciphertext,
        body_ciphertext,
        now,
    )
    .fetch_optional(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, user_id: Uuid, note_id: Uuid) -> sqlx::Result<bool> {
    let r = sqlx::query!(
        "DELETE FROM notes WHERE note_id = $1 AND user_id = $2",
        note_id,
        user_id,
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}
