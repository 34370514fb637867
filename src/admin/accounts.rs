//! User administration: search by email (blind index), read one account,
//! change role or status, end a user's sessions.
//!
//! Support and administrators read; only administrators change roles and
//! status. Every call needs aal2 (`RequireRole`) and writes an audit event
//! naming actor and target, reads included: looking at someone's personal
//! data is itself a security-relevant act. Support sees phone, date of
//! birth, address and email masked ([`AdminUserView`]).

use crate::{
    accounts::{email::Email, Role, Status},
    audit::{self, events, AuditEvent, Outcome},
    crypto::CryptoError,
    error::ApiError,
    http::{
        auth::{Admin, AuthUser, RequireRole, Staff},
        extract::{ClientInfo, Json, Path, Query},
        routes::ApiRouter,
    },
    profile::{db::UserRow, decrypt_profile, mask, mask_email, open_email, Address},
    rate_limit::policy::Class,
    state::AppState,
    user_keys::UserKey,
};
use axum::{extract::State, http::Method, Json as JsonResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(
            Method::GET,
            "/v1/admin/users",
            "admin_list_users",
            Class::Reads,
            admin_list_users,
        )
        .route(
            Method::GET,
            "/v1/admin/users/{id}",
            "admin_get_user",
            Class::Reads,
            admin_get_user,
        )
        .route(
            Method::PATCH,
            "/v1/admin/users/{id}",
            "admin_update_user",
            Class::Writes,
            admin_update_user,
        )
        .route(
            Method::POST,
            "/v1/admin/users/{id}/revoke-sessions",
            "admin_revoke_user_sessions",
            Class::Writes,
            admin_revoke_user_sessions,
        )
}

/// The profile as staff see it: personal fields in clear for
/// administrators, masked for support.
#[derive(Debug, Serialize)]
pub struct AdminProfile {
    pub display_name: Option<String>,
    pub phone: Option<String>,
    /// `YYYY-MM-DD`, or `****-**-**` when masked.
    pub date_of_birth: Option<String>,
    /// When masked, every line is `***` and only the country shows.
    pub address: Option<Address>,
}

/// One account as support and administrators see it. Never a password
/// hash, key, token or code: those fields do not exist on this type.
#[derive(Debug, Serialize)]
pub struct AdminUserView {
    pub id: Uuid,
    pub email: String,
    pub email_verified: bool,
    pub role: Role,
    pub status: Status,
    pub mfa_enabled: bool,
    pub rate_limit_tier: String,
    #[serde(serialize_with = "crate::clock::millis")]
    pub created_at: DateTime<Utc>,
    pub active_sessions: i64,
    /// Of those, how many are bound to a device key (DPoP) and how many
    /// signed in with an attested key (App Attest, Play Integrity).
    pub dpop_bound_sessions: i64,
    pub attested_sessions: i64,
    /// Whether personal fields are masked in this view (support).
    pub pii_masked: bool,
    pub profile: AdminProfile,
}

impl AdminUserView {
    fn build(
        key: &UserKey,
        row: &UserRow,
        sessions: SessionCounts,
        masked: bool,
    ) -> Result<Self, CryptoError> {
        let email = open_email(key, &row.email_ciphertext)?;
        let p = decrypt_profile(key, row)?;
        let profile = if masked {
            AdminProfile {
                display_name: p.display_name,
                phone: p.phone.map(|v| mask(&v, 3, 2)),
                date_of_birth: p.date_of_birth.map(|_| "****-**-**".to_owned()),
                address: p.address.map(|a| Address {
                    line1: "***".into(),
                    line2: a.line2.map(|_| "***".into()),
                    city: "***".into(),
                    region: a.region.map(|_| "***".into()),
                    postal_code: "***".into(),
                    country: a.country,
                }),
            }
        } else {
            AdminProfile {
                display_name: p.display_name,
                phone: p.phone,
                date_of_birth: p.date_of_birth.map(|d| d.format("%Y-%m-%d").to_string()),
                address: p.address,
            }
        };
        Ok(Self {
            id: row.user_id,
            email: if masked { mask_email(&email) } else { email },
            email_verified: row.email_verified_at.is_some(),
            role: row.role,
            status: row.status,
            mfa_enabled: row.mfa_enabled,
            rate_limit_tier: row.rate_limit_tier.clone(),
            created_at: row.created_at,
            active_sessions: sessions.active,
            dpop_bound_sessions: sessions.dpop_bound,
            attested_sessions: sessions.attested,
            pii_masked: masked,
            profile,
        })
    }
}

/// Reads and decrypts one account for a staff member (`None`: no such user).
async fn view(
    conn: &mut PgConnection,
    state: &AppState,
    staff: &AuthUser,
    id: Uuid,
) -> Result<Option<AdminUserView>, ApiError> {
    let Some(row) = crate::profile::db::user_row(&mut *conn, id).await? else {
        return Ok(None);
    };
    let key = UserKey::load(&mut *conn, &state.keys.data, id).await?;
    let sessions = active_sessions(&mut *conn, id, state.clock.now()).await?;
    Ok(Some(AdminUserView::build(
        &key,
        &row,
        sessions,
        staff.role != Role::Admin,
    )?))
}

/// A user's live sessions, counted.
struct SessionCounts {
    active: i64,
    dpop_bound: i64,
    attested: i64,
}

async fn active_sessions(
    conn: &mut PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<SessionCounts> {
    sqlx::query_as!(
        SessionCounts,
        r#"SELECT count(*) AS "active!",
                  count(*) FILTER (WHERE dpop_jkt IS NOT NULL) AS "dpop_bound!",
                  count(*) FILTER (WHERE attested) AS "attested!"
           FROM sessions
           WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2 AND absolute_expires_at > $2"#,
        user_id,
        now,
    )
    .fetch_one(conn)
    .await
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ListUsersQuery {
    /// Exact address (normalised like sign-in); looked up by blind index.
    #[validate(length(min = 1, max = 320))]
    pub email: Option<String>,
    #[validate(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

#[derive(Serialize)]
pub struct AdminUserList {
    pub items: Vec<AdminUserView>,
    pub next_cursor: Option<Uuid>,
}

/// Users by exact email (the only search an encrypted column allows, and
/// the only one support needs), or all users newest first, by cursor.
pub async fn admin_list_users(
    State(state): State<AppState>,
    RequireRole(staff, _): RequireRole<Staff>,
    client: ClientInfo,
    Query(q): Query<ListUsersQuery>,
) -> Result<JsonResponse<AdminUserList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    let blind = q
        .email
        .as_deref()
        .map(|e| Email::parse(e, "email").map(|e| e.lookup(&state.keys)))
        .transpose()?;
    let mut tx = state.db.begin().await?;
    let ids = sqlx::query_scalar!(
        r#"SELECT user_id FROM users
           WHERE ($1::bytea[] IS NULL OR email_blind_index = ANY($1))
             AND ($2::uuid IS NULL OR user_id < $2)
           ORDER BY user_id DESC LIMIT $3"#,
        blind.as_deref(),
        q.cursor,
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut items = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(v) = view(&mut tx, &state, &staff, *id).await? {
            items.push(v);
        }
    }
    audit::record(
        &mut tx,
        state.clock.now(),
        &AuditEvent::new(events::ADMIN_USERS_SEARCHED, Outcome::Success)
            .actor(staff.user_id)
            .session(staff.session_id)
            .client(&client)
            .detail("by_email", q.email.is_some())
            .detail("matches", items.len()),
    )
    .await?;
    tx.commit().await?;
    let next_cursor = (ids.len() as i64 == limit)
        .then(|| ids.last().copied())
        .flatten();
    Ok(JsonResponse(AdminUserList { items, next_cursor }))
}

pub async fn admin_get_user(
    State(state): State<AppState>,
    RequireRole(staff, _): RequireRole<Staff>,
    client: ClientInfo,
    Path(id): Path<Uuid>,
) -> Result<JsonResponse<AdminUserView>, ApiError> {
    let mut tx = state.db.begin().await?;
    let user = view(&mut tx, &state, &staff, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    audit::record(
        &mut tx,
        state.clock.now(),
        &AuditEvent::new(events::ADMIN_USER_VIEWED, Outcome::Success)
            .actor(staff.user_id)
            .user(id)
            .session(staff.session_id)
            .client(&client)
            .detail("masked", user.pii_masked),
    )
    .await?;
    tx.commit().await?;
    Ok(JsonResponse(user))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// Left out: unchanged. `null` is refused (the spec's `Role` is not
    /// nullable, and "no role" means nothing).
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    pub role: Option<Role>,
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    pub status: Option<Status>,
}

/// Changes a user's role and/or status. Locking ends every session of the
/// user at once (and sign-in then fails with `account_locked`). The last
/// active administrator can be neither demoted nor locked, by anyone
/// including themselves: 409 `last_admin`.
pub async fn admin_update_user(
    State(state): State<AppState>,
    RequireRole(admin, _): RequireRole<Admin>,
    client: ClientInfo,
    Path(id): Path<Uuid>,
    Json(req): Json<UpdateUserRequest>,
) -> Result<JsonResponse<AdminUserView>, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let admins = lock_active_admins(&mut tx).await?;
    let current = sqlx::query!(
        r#"SELECT role AS "role: Role", status AS "status: Status"
           FROM users WHERE user_id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    // Staff roles require a second factor: a staff password alone must
    // never reach a staff route. (The row lock above orders this with the
    // account's own MFA changes, which lock the same row.)
    // A refusal is audited (and committed) before it is answered.
    let refused = AuditEvent::new(events::ADMIN_USER_UPDATED, Outcome::Denied)
        .actor(admin.user_id)
        .user(id)
        .session(admin.session_id)
        .client(&client);
    if req.role.is_some_and(Role::is_staff) && !crate::mfa::db::mfa_enabled(&mut tx, id).await? {
        audit::record(&mut tx, now, &refused.detail("reason", "mfa_not_enrolled")).await?;
        tx.commit().await?;
        return Err(ApiError::Conflict {
            code: "mfa_not_enrolled",
            detail:
                "Staff roles require two-factor authentication: the account must turn it on first.",
        });
    }
    let role = req.role.unwrap_or(current.role);
    let status = req.status.unwrap_or(current.status);
    let loses_admin = admins.contains(&id) && (role != Role::Admin || status != Status::Active);
    if loses_admin && admins.len() <= 1 {
        audit::record(&mut tx, now, &refused.detail("reason", "last_admin")).await?;
        tx.commit().await?;
        return Err(last_admin());
    }
    sqlx::query!(
        "UPDATE users SET role = $2, status = $3, updated_at = $4 WHERE user_id = $1",
        id,
        role.as_str(),
        status.as_str(),
        now,
    )
    .execute(&mut *tx)
    .await?;
    let sessions_ended = if status == Status::Locked && current.status != Status::Locked {
        crate::sessions::db::revoke_all_sessions(&mut tx, id, None, now, "account_locked").await?
    } else {
        0
    };
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::ADMIN_USER_UPDATED, Outcome::Success)
            .actor(admin.user_id)
            .user(id)
            .session(admin.session_id)
            .client(&client)
            .detail("role_from", current.role.as_str())
            .detail("role_to", role.as_str())
            .detail("status_from", current.status.as_str())
            .detail("status_to", status.as_str())
            .detail("sessions_ended", sessions_ended),
    )
    .await?;
    let user = view(&mut tx, &state, &admin, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(JsonResponse(user))
}

/// The ids of every active administrator, row-locked until the caller's
/// transaction ends, so two concurrent demotions (or deletions) cannot each
/// see "another admin remains".
pub async fn lock_active_admins(conn: &mut PgConnection) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "SELECT user_id FROM users WHERE role = 'admin' AND status = 'active' ORDER BY user_id FOR UPDATE"
    )
    .fetch_all(conn)
    .await
}

/// 409 `last_admin`.
pub fn last_admin() -> ApiError {
    ApiError::Conflict {
        code: "last_admin",
        detail: "This is the last active administrator: promote another account first.",
    }
}

#[derive(Serialize)]
pub struct RevokedSessions {
    pub sessions_ended: u64,
}

/// Signs a user out everywhere (a lost phone, a suspected takeover).
pub async fn admin_revoke_user_sessions(
    State(state): State<AppState>,
    RequireRole(staff, _): RequireRole<Staff>,
    client: ClientInfo,
    Path(id): Path<Uuid>,
) -> Result<JsonResponse<RevokedSessions>, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let target_role = sqlx::query_scalar!(
        r#"SELECT role AS "role: Role" FROM users WHERE user_id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    // Support acts on users, not on the administrators it answers to.
    if target_role == Role::Admin && staff.role != Role::Admin {
        audit::record(
            &mut tx,
            now,
            &AuditEvent::new(events::ADMIN_SESSIONS_REVOKED, Outcome::Denied)
                .actor(staff.user_id)
                .user(id)
                .session(staff.session_id)
                .client(&client)
                .detail("reason", "target_is_admin"),
        )
        .await?;
        tx.commit().await?;
        return Err(ApiError::Forbidden {
            code: "forbidden",
            detail: "Support cannot act on an administrator's account.",
        });
    }
    let sessions_ended =
        crate::sessions::db::revoke_all_sessions(&mut tx, id, None, now, "revoked_by_staff")
            .await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::ADMIN_SESSIONS_REVOKED, Outcome::Success)
            .actor(staff.user_id)
            .user(id)
            .session(staff.session_id)
            .client(&client)
            .detail("sessions_ended", sessions_ended),
    )
    .await?;
    tx.commit().await?;
    Ok(JsonResponse(RevokedSessions { sessions_ended }))
}
