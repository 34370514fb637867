//! `/v1/admin/rate-limit-requests`: staff read users' requests for a
//! higher rate-limit tier with the evidence (the account's tier and its
//! 429s of the last 30 days), and administrators decide them.
//!
//! Support and administrators list (aal2; the address is masked for
//! support, and the listing is audited: reasons are personal data).
//! Only administrators decide (aal2), never on their own request (403
//! `own_account`), and a request is decided once (409 `already_decided`,
//! under a row lock). An approval sets the tier through
//! `rate_limit::tiers::set`, the code the set-tier endpoint uses, in the
//! same transaction, optionally until a date; the user is mailed the
//! outcome through the outbox, without the reason or the note.

use crate::{
    accounts::{email_aad, email_of, Role},
    audit::{self, events, AuditEvent, Outcome},
    error::ApiError,
    http::{
        auth::{Admin, AuthUser, RequireRole, Staff},
        extract::{ClientInfo, Json, Path, Query},
        routes::ApiRouter,
        validate,
    },
    mail::{self, templates},
    profile::mask_email,
    rate_limit::{policy::Class, policy::Tier, tiers},
    rate_limit_requests::{
        db, decode_cursor, next_cursor, request_aad, routes::already_decided, Opened, Status,
    },
    state::AppState,
    user_keys::UserKey,
};
use axum::{extract::State, http::Method, Json as JsonResponse};
use chrono::{DateTime, Days, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{hash_map::Entry, HashMap};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(
            Method::GET,
            "/v1/admin/rate-limit-requests",
            "admin_list_rate_limit_requests",
            Class::Reads,
            admin_list_rate_limit_requests,
        )
        .route(
            Method::POST,
            "/v1/admin/rate-limit-requests/{id}/decision",
            "decide_rate_limit_request",
            Class::Writes,
            decide_rate_limit_request,
        )
}

/// Days of 429 counts shown with a request (today included).
const EVIDENCE_DAYS: u64 = 30;

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AdminListRateLimitRequestsQuery {
    /// Only requests in this state (`pending` for the queue); all when absent.
    pub status: Option<Status>,
    #[validate(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[validate(length(min = 1, max = 64))]
    pub cursor: Option<String>,
}

/// A request as staff see it, with the evidence to decide on.
#[derive(Debug, Serialize)]
pub struct AdminRateLimitRequestView {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The requester's address; masked for support.
    pub email: String,
    pub pii_masked: bool,
    /// The tier in force now, and when it ends (`null`: it does not).
    pub current_tier: Tier,
    #[serde(serialize_with = "crate::clock::millis_opt")]
    pub current_tier_expires_at: Option<DateTime<Utc>>,
    pub requested_tier: Tier,
    /// As the user wrote it (JSON-encoded here; render it as text, never
    /// as markup).
    pub reason: String,
    pub status: Status,
    pub note: Option<String>,
    #[serde(serialize_with = "crate::clock::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::clock::millis_opt")]
    pub decided_at: Option<DateTime<Utc>>,
    /// The administrator who approved or denied it.
    pub decided_by: Option<Uuid>,
    /// For an approval with a time limit: when the granted tier ends.
    #[serde(serialize_with = "crate::clock::millis_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests of this account refused with 429 on `reads`/`writes` in
    /// the last 30 days.
    pub rate_limited_last_30_days: i64,
}

impl AdminRateLimitRequestView {
    fn build(
        row: &db::StaffRow,
        key: &UserKey,
        masked: bool,
        now: DateTime<Utc>,
    ) -> Result<Self, ApiError> {
        let opened = Opened::open(key, &row.request())?;
        let email = key.open_string(&email_aad(row.user_id), &row.email_ciphertext)?;
        let email = if masked {
            mask_email(&email)
        } else {
            email.as_str().to_owned()
        };
        let current = match row.current_tier_expires_at {
            Some(at) if at <= now => (Tier::Standard, None),
            at => (Tier::parse(&row.current_tier), at),
        };
        Ok(Self {
            id: row.request_id,
            user_id: row.user_id,
            email,
            pii_masked: masked,
            current_tier: current.0,
            current_tier_expires_at: current.1,
            requested_tier: Tier::parse(&row.requested_tier),
            reason: opened.reason,
            status: Status::parse(&row.status)?,
            note: opened.note,
            created_at: row.created_at,
            decided_at: row.decided_at,
            decided_by: row.decided_by,
            expires_at: row.tier_expires_at,
            rate_limited_last_30_days: row.rate_limited,
        })
    }
}

#[derive(Serialize)]
pub struct AdminRateLimitRequestList {
    pub items: Vec<AdminRateLimitRequestView>,
    /// The cursor of the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// The first day of the evidence window ending `now`.
fn evidence_since(now: DateTime<Utc>) -> NaiveDate {
    let today = now.date_naive();
    today
        .checked_sub_days(Days::new(EVIDENCE_DAYS - 1))
        .unwrap_or(today)
}

fn masked_for(staff: &AuthUser) -> bool {
    staff.role != Role::Admin
}

pub async fn admin_list_rate_limit_requests(
    State(state): State<AppState>,
    RequireRole(staff, _): RequireRole<Staff>,
    client: ClientInfo,
    Query(q): Query<AdminListRateLimitRequestsQuery>,
) -> Result<JsonResponse<AdminRateLimitRequestList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    let before = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor(&state.keys.blind_index, c))
        .transpose()?;
    let now = state.clock.now();
    // This process's latest 429s count too (other processes write theirs
    // within a pass).
    state.refusals.flush(&state.db, now.date_naive()).await?;
    let masked = masked_for(&staff);
    let mut tx = state.db.begin().await?;
    let rows = db::staff_page(
        &mut tx,
        q.status.map(Status::as_str),
        before,
        limit,
        evidence_since(now),
    )
    .await?;
    let mut keys: HashMap<Uuid, UserKey> = HashMap::new();
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let key = match keys.entry(row.user_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                e.insert(UserKey::load(&mut tx, &state.keys.data, row.user_id).await?)
            }
        };
        items.push(AdminRateLimitRequestView::build(row, key, masked, now)?);
    }
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::ADMIN_RATE_LIMIT_REQUESTS_LISTED, Outcome::Success)
            .actor(staff.user_id)
            .session(staff.session_id)
            .client(&client)
            .detail("status", q.status.map(Status::as_str))
            .detail("matches", items.len())
            .detail("masked", masked),
    )
    .await?;
    tx.commit().await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.request_id).collect();
    Ok(JsonResponse(AdminRateLimitRequestList {
        items,
        next_cursor: next_cursor(&state.keys.blind_index, &ids, limit),
    }))
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct DecideRateLimitRequest {
    pub decision: Decision,
    /// Shown to the user in the app (never mailed). Left out: none;
    /// `null` is refused, as in the spec.
    #[serde(default, deserialize_with = "validate::non_null")]
    #[validate(
        length(min = 1, max = 500),
        custom(function = "validate::no_control_chars"),
        custom(function = "validate::no_bidi_controls")
    )]
    pub note: Option<String>,
    /// For an approval: the tier returns to `standard` after this many days.
    #[serde(default, deserialize_with = "validate::whole_number")]
    #[validate(range(min = 1, max = 365))]
    pub expires_in_days: Option<i64>,
}

/// 409 `tier_not_higher`: the account's tier is already at or above the
/// requested one (it was raised since the request was made).
fn tier_already_reached() -> ApiError {
    ApiError::Conflict {
        code: "tier_not_higher",
        detail: "The account's tier is already at or above the requested one: deny the request, or set the tier directly.",
    }
}

/// 409 `tier_would_lapse`.
fn tier_would_lapse() -> ApiError {
    ApiError::Conflict {
        code: "tier_would_lapse",
        detail: "The account holds a raised tier that lasts longer than this approval; when it ended, the account would fall to standard. Approve without expires_in_days, or set the tier directly.",
    }
}

pub async fn decide_rate_limit_request(
    State(state): State<AppState>,
    RequireRole(admin, _): RequireRole<Admin>,
    client: ClientInfo,
    Path(id): Path<Uuid>,
    Json(req): Json<DecideRateLimitRequest>,
) -> Result<JsonResponse<AdminRateLimitRequestView>, ApiError> {
    if req.decision == Decision::Deny && req.expires_in_days.is_some() {
        return Err(ApiError::invalid_field(
            "expires_in_days",
            "not_allowed",
            "Only an approval can have an expiry.",
        ));
    }
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let owner = db::owner_of(&mut tx, id).await?.ok_or(ApiError::NotFound)?;
    let refused = AuditEvent::new(events::ADMIN_RATE_LIMIT_REQUEST_DECIDED, Outcome::Denied)
        .actor(admin.user_id)
        .user(owner)
        .session(admin.session_id)
        .client(&client)
        .detail("request_id", id.to_string())
        .detail("decision", req.decision.as_str());
    // Four eyes: whoever asked does not decide, approving or denying.
    if owner == admin.user_id {
        let error = tiers::refuse_own_account(&mut tx, now, refused).await?;
        tx.commit().await?;
        return Err(error);
    }
    let row = db::lock_for_decision(&mut tx, id, owner)
        .await?
        .ok_or(ApiError::NotFound)?;
    if row.status != Status::Pending.as_str() {
        audit::record(&mut tx, now, &refused.detail("reason", "already_decided")).await?;
        tx.commit().await?;
        return Err(already_decided());
    }
    let requested = Tier::parse(&row.requested_tier);
    let key = UserKey::load(&mut tx, &state.keys.data, owner).await?;
    let note = req
        .note
        .as_deref()
        .map(|n| key.seal(&request_aad("note", id), n.as_bytes()))
        .transpose()?;
    let approved = req.decision == Decision::Approve;
    let expires_at = req
        .expires_in_days
        .filter(|_| approved)
        .map(|d| now + Duration::days(d));
    if approved {
        let current = tiers::in_force(&mut tx, owner, now)
            .await?
            .ok_or(ApiError::NotFound)?;
        if requested <= current.tier {
            audit::record(&mut tx, now, &refused.detail("reason", "tier_not_higher")).await?;
            tx.commit().await?;
            return Err(tier_already_reached());
        }
        // A time-limited approval falls back to `standard` when it ends: it
        // must not cut short a raised tier the account holds for longer
        // (permanently, or past this approval's end).
        if let Some(until) = expires_at {
            let outlives = current.expires_at.is_none_or(|held| held > until);
            if current.tier != Tier::Standard && outlives {
                audit::record(&mut tx, now, &refused.detail("reason", "tier_would_lapse")).await?;
                tx.commit().await?;
                return Err(tier_would_lapse());
            }
        }
    }
    db::decide(
        &mut tx,
        &db::Decision {
            request_id: id,
            status: if approved {
                Status::Approved.as_str()
            } else {
                Status::Denied.as_str()
            },
            now,
            decided_by: admin.user_id,
            note_ciphertext: note.as_deref(),
            tier_expires_at: expires_at,
        },
    )
    .await?;
    if approved {
        let event = tiers::change_event()
            .actor(admin.user_id)
            .session(admin.session_id)
            .client(&client)
            .detail("request_id", id.to_string());
        tiers::set(&mut tx, now, owner, requested, expires_at, event)
            .await?
            .ok_or(ApiError::NotFound)?;
    }
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::ADMIN_RATE_LIMIT_REQUEST_DECIDED, Outcome::Success)
            .actor(admin.user_id)
            .user(owner)
            .session(admin.session_id)
            .client(&client)
            .detail("request_id", id.to_string())
            .detail("decision", req.decision.as_str())
            .detail("requested_tier", requested.as_str())
            .detail("expires_in_days", req.expires_in_days)
            .detail("with_note", req.note.is_some()),
    )
    .await?;
    let email = email_of(&mut tx, &state, owner).await?;
    let mail = templates::rate_limit_request_decided(
        email.as_str(),
        approved,
        requested.as_str(),
        expires_at,
    );
    mail::enqueue(
        &mut tx,
        &state.keys,
        now,
        "rate_limit_request_decided",
        &mail,
    )
    .await
    .map_err(ApiError::internal)?;
    let view = db::staff_one(&mut tx, id, evidence_since(now))
        .await?
        .ok_or(ApiError::NotFound)?;
    let view = AdminRateLimitRequestView::build(&view, &key, false, now)?;
    tx.commit().await?;
    state.outbox.wake();
    Ok(JsonResponse(view))
}
