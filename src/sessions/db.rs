//! Queries over `sessions` and `refresh_tokens`. Every query that reads
//! or changes a session on behalf of a user filters by that user in SQL,
//! so "not yours" and "missing" are the same empty result.

use crate::accounts::roles::{Aal, Role, Status};
use chrono::{DateTime, Utc};
use sqlx::{types::ipnetwork::IpNetwork, PgConnection};
use uuid::Uuid;

pub struct NewSession<'a> {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub now: DateTime<Utc>,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub auth_time: DateTime<Utc>,
    pub aal: Aal,
    pub amr: &'a [String],
    pub device_name: Option<&'a str>,
    pub platform: Option<&'a str>,
    pub model: Option<&'a str>,
    pub app_version: Option<String>,
    pub ip: IpNetwork,
    pub user_agent: Option<&'a str>,
    pub country: Option<&'a str>,
    /// The install id's blind index and the id of its key.
    pub install_id_index: Option<crate::crypto::BlindIndex>,
    /// The device key's thumbprint of a DPoP-bound session.
    pub dpop_jkt: Option<&'a str>,
    /// Whether that key was attested (App Attest, Play Integrity).
    pub attested: bool,
}

pub async fn insert_session(conn: &mut PgConnection, s: &NewSession<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO sessions (session_id, user_id, created_at, last_seen_at, idle_expires_at,
                                 absolute_expires_at, auth_time, aal, amr, device_name, platform,
                                 model, app_version, last_ip, user_agent, country, install_id_index,
                                 install_id_index_key_id, dpop_jkt, attested)
           VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                   $18, $19)"#,
        s.session_id,
        s.user_id,
        s.now,
        s.idle_expires_at,
        s.absolute_expires_at,
        s.auth_time,
        s.aal.as_str(),
        s.amr,
        s.device_name,
        s.platform,
        s.model,
        s.app_version,
        s.ip,
        s.user_agent,
        s.country,
        s.install_id_index.as_ref().map(|i| &i.value[..]),
        s.install_id_index.as_ref().map(|i| i.key_id),
        s.dpop_jkt,
        s.attested,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_refresh_token(
    conn: &mut PgConnection,
    session_id: Uuid,
    token_hash: &[u8],
    parent_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query!(
        r#"INSERT INTO refresh_tokens (refresh_token_id, session_id, token_hash, parent_id, created_at)
           VALUES ($1, $2, $3, $4, $5)"#,
        id,
        session_id,
        token_hash,
        parent_id,
        now,
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// A refresh token with its session and user, locked for the rotation.
#[derive(Debug)]
pub struct RefreshRow {
    pub refresh_token_id: Uuid,
    pub session_id: Uuid,
    pub used_at: Option<DateTime<Utc>>,
    /// This token's successor, sealed, while a retry may still need it.
    pub successor_ciphertext: Option<Vec<u8>>,
    pub user_id: Uuid,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub auth_time: DateTime<Utc>,
    pub aal: Aal,
    pub amr: Vec<String>,
    pub role: Role,
    pub status: Status,
    pub platform: Option<String>,
    pub install_id_index: Option<Vec<u8>>,
    pub install_id_index_key_id: Option<i16>,
    /// The device key a DPoP-bound session is bound to.
    pub dpop_jkt: Option<String>,
}

/// Finds and locks the token and its session: concurrent refreshes of one
/// token queue here, and each sees the previous one's result.
pub async fn lock_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> sqlx::Result<Option<RefreshRow>> {
    sqlx::query_as!(
        RefreshRow,
        r#"SELECT rt.refresh_token_id, rt.session_id, rt.used_at,
                  rt.successor_ciphertext, s.user_id, s.revoked_at,
                  s.revoked_reason, s.idle_expires_at, s.absolute_expires_at, s.auth_time,
                  s.aal AS "aal: Aal", s.amr, u.role AS "role: Role", u.status AS "status: Status",
                  s.platform, s.install_id_index, s.install_id_index_key_id, s.dpop_jkt
           FROM refresh_tokens rt
           JOIN sessions s ON s.session_id = rt.session_id
           JOIN users u ON u.user_id = s.user_id
           WHERE rt.token_hash = $1
           FOR UPDATE OF rt, s"#,
        token_hash,
    )
    .fetch_optional(conn)
    .await
}

/// The successor of a token and whether it has been used itself.
pub async fn successor_used(
    conn: &mut PgConnection,
    parent_id: Uuid,
) -> sqlx::Result<Option<bool>> {
    let row = sqlx::query_scalar!(
        r#"SELECT used_at IS NOT NULL AS "used!" FROM refresh_tokens WHERE parent_id = $1"#,
        parent_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row)
}

/// Retires a token on its first use, keeping its successor sealed until
/// the successor's own first use, and forgets the sealed copy of this token that its
/// parent kept (this token is now used: no retry of the parent may have
/// it any more).
pub async fn retire_token(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
    sealed_successor: &[u8],
) -> sqlx::Result<()> {
    let parent = sqlx::query_scalar!(
        r#"UPDATE refresh_tokens SET used_at = $2, successor_ciphertext = $3
           WHERE refresh_token_id = $1
           RETURNING parent_id"#,
        id,
        now,
        sealed_successor,
    )
    .fetch_one(&mut *conn)
    .await?;
    if let Some(parent) = parent {
        sqlx::query!(
            "UPDATE refresh_tokens SET successor_ciphertext = NULL WHERE refresh_token_id = $1",
            parent,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records activity; the idle expiry slides but never past the absolute one.
pub async fn touch_session(
    conn: &mut PgConnection,
    session_id: Uuid,
    now: DateTime<Utc>,
    idle_expires_at: DateTime<Utc>,
    ip: IpNetwork,
    user_agent: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE sessions SET last_seen_at = $2,
                  idle_expires_at = LEAST($3, absolute_expires_at),
                  last_ip = $4, user_agent = COALESCE($5, user_agent)
           WHERE session_id = $1"#,
        session_id,
        now,
        idle_expires_at,
        ip,
        user_agent,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes one of `user_id`'s live sessions; false when there is none
/// with that id for that user.
pub async fn revoke_session(
    conn: &mut PgConnection,
    user_id: Uuid,
    session_id: Uuid,
    now: DateTime<Utc>,
    reason: &str,
) -> sqlx::Result<bool> {
    let r = sqlx::query!(
        r#"UPDATE sessions SET revoked_at = $3, revoked_reason = $4
           WHERE session_id = $1 AND user_id = $2 AND revoked_at IS NULL"#,
        session_id,
        user_id,
        now,
        reason,
    )
    .execute(&mut *conn)
    .await?;
    end_with_sessions(conn, user_id).await?;
    Ok(r.rows_affected() == 1)
}

/// What ends with `user_id`'s revoked sessions, in the revoking
/// transaction: the sealed successor each kept for a lost refresh answer
/// (an ended session never refreshes again, so nothing may keep a copy of
/// its live token), and the push registrations made through them (a phone
/// signed out gets no more of this account's notifications).
async fn end_with_sessions(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE refresh_tokens rt SET successor_ciphertext = NULL
           FROM sessions s
           WHERE rt.successor_ciphertext IS NOT NULL AND s.session_id = rt.session_id
             AND s.user_id = $1 AND s.revoked_at IS NOT NULL"#,
        user_id,
    )
    .execute(&mut *conn)
    .await?;
    crate::devices::db::delete_for_ended_sessions(conn, user_id).await?;
    Ok(())
}

/// Revokes every live session of a user except `keep`, and ends every
/// pending MFA challenge; returns how many sessions.
pub async fn revoke_all_sessions(
    conn: &mut PgConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
    now: DateTime<Utc>,
    reason: &str,
) -> sqlx::Result<u64> {
    // A sign-in waiting for its second factor is a session not yet born:
    // it ends with the others (logout-all, password reset or change, MFA
    // off, a lock or a revocation by staff).
    crate::mfa::db::end_challenges(&mut *conn, user_id, now).await?;
    let r = sqlx::query!(
        r#"UPDATE sessions SET revoked_at = $3, revoked_reason = $4
           WHERE user_id = $1 AND revoked_at IS NULL
             AND ($2::uuid IS NULL OR session_id <> $2)"#,
        user_id,
        keep,
        now,
        reason,
    )
    .execute(&mut *conn)
    .await?;
    end_with_sessions(&mut *conn, user_id).await?;
    if let Some(kept) = keep {
        // The session that made the change lives on, but a refresh token
        // it retired before the change must not bring back its successor.
        forget_lost_answers(conn, kept).await?;
    }
    Ok(r.rows_affected())
}

/// Drops the sealed successors `session_id` keeps for lost refresh
/// answers, so none of its retired refresh tokens can be retried any
/// more. Called whenever what the session may do changes (a password
/// change or MFA turned off that keeps it, a step-up to the second
/// factor): a copy of a token retired before the change must not reach
/// the session after it. The app that made the change holds the live
/// token, so it loses nothing.
pub async fn forget_lost_answers(conn: &mut PgConnection, session_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE refresh_tokens SET successor_ciphertext = NULL
           WHERE session_id = $1 AND successor_ciphertext IS NOT NULL"#,
        session_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What a request needs to know about a live session.
pub struct LiveSession {
    pub role: Role,
    pub aal: Aal,
    pub mfa_enabled: bool,
    /// When the person last proved a credential in this session (sign-in,
    /// or confirming a new authenticator); refreshes do not move it.
    pub auth_time: DateTime<Utc>,
    /// The device key the session is bound to (DPoP), if any.
    pub dpop_jkt: Option<String>,
}

/// Everything a request made with an access token needs to know about its
/// caller, read in one query on one connection: whether the session is
/// still good, the account's role, MFA state and rate-limit tier, and the
/// user's wrapped data key (so a handler that opens sealed fields needs no
/// query of its own for it). `None`: no such account.
pub struct RequestContext {
    /// The session when it is still good (not revoked, not expired) and the
    /// account is active; `None` otherwise. The rest describes the account
    /// either way, so the rate limiter can count a dead session's requests
    /// against its account at the account's tier.
    pub live: Option<LiveSession>,
    pub rate_limit_tier: String,
    pub rate_limit_tier_expires_at: Option<DateTime<Utc>>,
    /// `None` only for an account whose key is gone (a deleted account's
    /// key is shredded).
    pub wrapped_key: Option<Vec<u8>>,
    /// The rest of the caller's `users` row, as stored (sealed columns
    /// stay sealed): the same statement reads it at almost no cost, and
    /// the account's own view (`GET /v1/me`) then needs no query at all.
    pub account: AccountRow,
}

/// The caller's `users` row as the request context reads it.
pub struct AccountRow {
    pub email_ciphertext: Vec<u8>,
    pub display_name_ciphertext: Option<Vec<u8>>,
    pub phone_ciphertext: Option<Vec<u8>>,
    pub date_of_birth_ciphertext: Option<Vec<u8>>,
    pub address_ciphertext: Option<Vec<u8>>,
    pub role: Role,
    pub status: Status,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub mfa_enabled: bool,
}

/// The [`RequestContext`] of `session_id` for `user_id` at `now`. A session
/// is good when it is not revoked, neither its idle nor its absolute
/// lifetime has passed, and the account is active. "MFA is on" is
/// `mfa::db::mfa_enabled`'s predicate, spelled the same, inside this one
/// statement (it runs on every authenticated request).
pub async fn request_context(
    conn: &mut PgConnection,
    user_id: Uuid,
    session_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<RequestContext>> {
    let row = sqlx::query!(
        r#"SELECT u.role AS "role: Role",
                  (u.status = 'active' AND s.session_id IS NOT NULL) AS "live!",
                  s.aal AS "aal?: Aal", s.auth_time AS "auth_time?", s.dpop_jkt AS "dpop_jkt?",
                  EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.user_id AND m.enabled_at IS NOT NULL)
                      AS "mfa_enabled!",
                  u.rate_limit_tier, u.rate_limit_tier_expires_at,
                  k.wrapped_key AS "wrapped_key?",
                  u.email_ciphertext, u.display_name_ciphertext, u.phone_ciphertext,
                  u.date_of_birth_ciphertext, u.address_ciphertext,
                  u.status AS "status: Status", u.email_verified_at, u.created_at
           FROM users u
           LEFT JOIN sessions s
                  ON s.session_id = $1 AND s.user_id = u.user_id AND s.revoked_at IS NULL
                 AND s.idle_expires_at > $3 AND s.absolute_expires_at > $3
           LEFT JOIN user_keys k ON k.user_id = u.user_id
           WHERE u.user_id = $2"#,
        session_id,
        user_id,
        now,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| {
        let live = match (r.live, r.aal, r.auth_time) {
            (true, Some(aal), Some(auth_time)) => Some(LiveSession {
                role: r.role,
                aal,
                mfa_enabled: r.mfa_enabled,
                auth_time,
                dpop_jkt: r.dpop_jkt,
            }),
            _ => None,
        };
        RequestContext {
            live,
            rate_limit_tier: r.rate_limit_tier,
            rate_limit_tier_expires_at: r.rate_limit_tier_expires_at,
            wrapped_key: r.wrapped_key,
            account: AccountRow {
                email_ciphertext: r.email_ciphertext,
                display_name_ciphertext: r.display_name_ciphertext,
                phone_ciphertext: r.phone_ciphertext,
                date_of_birth_ciphertext: r.date_of_birth_ciphertext,
                address_ciphertext: r.address_ciphertext,
                role: r.role,
                status: r.status,
                email_verified_at: r.email_verified_at,
                created_at: r.created_at,
                mfa_enabled: r.mfa_enabled,
            },
        }
    }))
}

pub struct SessionRow {
    pub session_id: Uuid,
    pub device_name: Option<String>,
    pub platform: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub dpop_bound: bool,
    pub attested: bool,
}

pub async fn list_live_sessions(
    conn: &mut PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<SessionRow>> {
    sqlx::query_as!(
        SessionRow,
        r#"SELECT session_id, device_name, platform, created_at, last_seen_at, host(last_ip) AS ip,
                  dpop_jkt IS NOT NULL AS "dpop_bound!", attested
           FROM sessions
           WHERE user_id = $1 AND revoked_at IS NULL
             AND idle_expires_at > $2 AND absolute_expires_at > $2
           ORDER BY created_at DESC
           LIMIT 100"#,
        user_id,
        now,
    )
    .fetch_all(conn)
    .await
}
