//! `/v1/me`: the caller's own account. Read and update the profile, change
//! the email (code to the new address, notice to the old), delete the
//! account (crypto-shredding), export everything stored about the caller.

use super::{db, me_response, open_text, users_aad, Address, AddressPatch, MeResponse};
use crate::{
    accounts::{codes, email::Email, Role, StatusResponse},
    audit::{self, events, AuditEvent, Outcome},
    error::{ApiError, FieldError},
    http::{
        auth::{Aal2, AuthUser},
        extract::{ClientInfo, Json},
        routes::ApiRouter,
        validate,
    },
    mail::{self, notices::Notice, templates},
    mfa::{verify_factor, Factor, Secret},
    rate_limit::policy::Class,
    state::AppState,
    user_keys::{self, UserKey},
};
use axum::{
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    Json as JsonResponse,
};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(Method::GET, "/v1/me", "get_me", Class::Reads, get_me)
        .route(
            Method::PATCH,
            "/v1/me",
            "update_me",
            Class::Writes,
            update_me,
        )
        .route(
            Method::DELETE,
            "/v1/me",
            "delete_me",
            Class::Credentials,
            delete_me,
        )
        .route(
            Method::POST,
            "/v1/me/email",
            "request_email_change",
            Class::Credentials,
            request_email_change,
        )
        .route(
            Method::POST,
            "/v1/me/email/confirm",
            "confirm_email_change",
            Class::Credentials,
            confirm_email_change,
        )
        .route(
            Method::GET,
            "/v1/me/export",
            "export_me",
            Class::Reads,
            export_me,
        )
}

/// Reads the caller's row and builds their view with their (already
/// unwrapped) key.
async fn load_me(conn: &mut sqlx::PgConnection, key: &UserKey) -> Result<MeResponse, ApiError> {
    let row = db::user_row(&mut *conn, key.user_id())
        .await?
        .ok_or_else(crate::http::auth::invalid_token)?;
    Ok(me_response(key, &row)?)
}

/// The caller's view, from the row read with their session: no query of
/// its own (the read is part of authenticating the request).
pub async fn get_me(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<JsonResponse<MeResponse>, ApiError> {
    let key = UserKey::of(&state.keys.data, &auth)?;
    let context = auth
        .caller
        .context
        .as_ref()
        .ok_or_else(crate::http::auth::invalid_token)?;
    let account = &context.account;
    let row = db::UserRow {
        user_id: auth.user_id,
        email_ciphertext: account.email_ciphertext.clone(),
        display_name_ciphertext: account.display_name_ciphertext.clone(),
        phone_ciphertext: account.phone_ciphertext.clone(),
        date_of_birth_ciphertext: account.date_of_birth_ciphertext.clone(),
        address_ciphertext: account.address_ciphertext.clone(),
        role: account.role,
        status: account.status,
        rate_limit_tier: context.rate_limit_tier.clone(),
        email_verified_at: account.email_verified_at,
        created_at: account.created_at,
        mfa_enabled: account.mfa_enabled,
    };
    Ok(JsonResponse(me_response(&key, &row)?))
}

/// Only these four fields: `role`, `email`, `id`, `email_verified`,
/// `status` or anything else is an unknown field, refused with 422 before
/// any work (mass assignment).
#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    #[serde(default, deserialize_with = "validate::present")]
    #[validate(
        length(min = 1, max = 64),
        custom(function = "validate::no_control_chars")
    )]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::present")]
    #[validate(custom(function = "validate::e164"))]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::present")]
    pub date_of_birth: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "validate::present")]
    /// Merged into the stored address under `application/merge-patch+json`,
    /// replacing it under `application/json` (see [`AddressPatch`]).
    #[validate(nested)]
    pub address: Option<Option<AddressPatch>>,
}

/// Youngest age allowed to hold an account (COPPA and GDPR art. 8 floor).
const MIN_AGE_YEARS: i32 = 13;

/// The date must be in the past, make the user at least 13, and not be
/// absurdly old. Checked against the service clock (tests move it).
fn check_date_of_birth(dob: NaiveDate, now: DateTime<Utc>) -> Result<(), ApiError> {
    let today = now.date_naive();
    let field = |code: &str, message: &str| ApiError::invalid_field("date_of_birth", code, message);
    if dob >= today {
        return Err(field("in_future", "The date of birth must be in the past."));
    }
    let thirteenth = NaiveDate::from_ymd_opt(dob.year() + MIN_AGE_YEARS, dob.month(), dob.day())
        // 29 February: the birthday counts from 1 March.
        .or_else(|| NaiveDate::from_ymd_opt(dob.year() + MIN_AGE_YEARS, 3, 1));
    if thirteenth.is_none_or(|d| d > today) {
        return Err(field("too_young", "You must be at least 13 years old."));
    }
    if dob.year() < 1900 {
        return Err(field("out_of_range", "Enter a date after 1900."));
    }
    Ok(())
}

/// The address a `PATCH /v1/me` leaves: under `application/merge-patch+json`
/// the patch merged into the stored address (read and locked in the
/// handler's transaction, so concurrent patches do not lose each other's
/// members), under `application/json` the patch alone. An address that
/// would lack a member `Address` requires is 422, naming each.
async fn patched_address(
    tx: &mut sqlx::PgConnection,
    key: &UserKey,
    headers: &HeaderMap,
    patch: AddressPatch,
) -> Result<Address, ApiError> {
    let base = if crate::http::headers::is_merge_patch(headers) {
        let sealed = db::lock_address(tx, key.user_id()).await?;
        open_text(key, "address", sealed.as_deref())?
            .map(|a| serde_json::from_str::<Address>(&a).map_err(ApiError::internal))
            .transpose()?
    } else {
        None
    };
    patch.apply(base).map_err(|missing| {
        ApiError::Validation(
            missing
                .into_iter()
                .map(|field| FieldError {
                    field: field.into(),
                    code: "missing_field".into(),
                    message: "This field is required.".into(),
                })
                .collect(),
        )
    })
}

pub async fn update_me(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    headers: HeaderMap,
    Json(req): Json<UpdateMeRequest>,
) -> Result<JsonResponse<MeResponse>, ApiError> {
    let now = state.clock.now();
    if let Some(Some(dob)) = req.date_of_birth {
        check_date_of_birth(dob, now)?;
    }
    let uid = auth.user_id;
    let key = UserKey::of(&state.keys.data, &auth)?;
    let mut tx = state.db.begin().await?;
    let address = match req.address.clone() {
        None => None,
        Some(None) => Some(None),
        Some(Some(patch)) => Some(Some(patched_address(&mut tx, &key, &headers, patch).await?)),
    };
    let seal = |column: &'static str, value: Option<&[u8]>| {
        value
            .map(|v| key.seal(&users_aad(column, uid), v))
            .transpose()
    };
    let address_json = match &address {
        Some(Some(a)) => Some(serde_json::to_vec(a).map_err(ApiError::internal)?),
        _ => None,
    };
    let dob_text = req
        .date_of_birth
        .flatten()
        .map(|d| d.format("%Y-%m-%d").to_string());
    let update = db::ProfileUpdate {
        display_name: req
            .display_name
            .as_ref()
            .map(|v| seal("display_name", v.as_deref().map(str::as_bytes)))
            .transpose()?,
        phone: req
            .phone
            .as_ref()
            .map(|v| seal("phone", v.as_deref().map(str::as_bytes)))
            .transpose()?,
        date_of_birth: req
            .date_of_birth
            .map(|_| seal("date_of_birth", dob_text.as_deref().map(str::as_bytes)))
            .transpose()?,
        address: address
            .as_ref()
            .map(|_| seal("address", address_json.as_deref()))
            .transpose()?,
    };
    let fields: Vec<&str> = [
        ("display_name", update.display_name.is_some()),
        ("phone", update.phone.is_some()),
        ("date_of_birth", update.date_of_birth.is_some()),
        ("address", update.address.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if !fields.is_empty() {
        db::update_profile(&mut tx, uid, &update, now).await?;
        audit::record(
            &mut tx,
            now,
            &AuditEvent::new(events::PROFILE_UPDATED, Outcome::Success)
                .user(uid)
                .session(auth.session_id)
                .client(&client)
                .detail("fields", fields),
        )
        .await?;
    }
    let me = load_me(&mut tx, &key).await?;
    tx.commit().await?;
    Ok(JsonResponse(me))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct EmailChangeRequest {
    #[validate(length(max = 320))]
    pub new_email: String,
    #[validate(length(max = 4096))]
    pub current_password: crate::http::secret::SecretText,
}

/// Starts an email change. Needs the current password, and aal2 when MFA
/// is on. The answer is the same 202 whether or not the new address
/// already has an account (that account's owner is told instead), so the
/// endpoint cannot be used to find registered addresses; and what differs
/// between the two cases (a code and two mails, or one mail) runs after
/// the answer ([`crate::auth::deferred`]), so its time does not tell them
/// apart either.
pub async fn request_email_change(
    State(state): State<AppState>,
    Aal2(auth): Aal2,
    client: ClientInfo,
    Json(req): Json<EmailChangeRequest>,
) -> Result<axum::response::Response, ApiError> {
    let new_email = Email::parse(&req.new_email, "new_email")?;
    crate::accounts::limit_account(&state, &new_email).await?;
    crate::accounts::check_current_password(
        &state,
        &auth,
        &client,
        &req.current_password,
        events::EMAIL_CHANGE_REQUESTED,
    )
    .await?;
    let uid = auth.user_id;
    let lookup = new_email.lookup(&state.keys);
    // One look-up, the same query for every address, answers "is it mine
    // already" (the one answer that may differ: the caller knows their own
    // address).
    let mut conn = state.db.acquire().await?;
    let holder = crate::accounts::db::find_by_email(&mut conn, &lookup).await?;
    drop(conn);
    if holder.as_ref().is_some_and(|u| u.user_id == uid) {
        return Err(ApiError::invalid_field(
            "new_email",
            "unchanged",
            "This is already your email address.",
        ));
    }
    let st = state.clone();
    let answer = (
        StatusCode::ACCEPTED,
        JsonResponse(StatusResponse {
            status: "code_sent",
        }),
    );
    state
        .deferred
        .respond_then("email_change", answer, async move {
            start_email_change(&st, &auth, &client, &new_email, &lookup).await
        })
}

/// The half of an email change request that depends on the new address,
/// run after the answer: a code to a free address (and a notice to the
/// current one), or a mail to the owner of a taken one.
async fn start_email_change(
    state: &AppState,
    auth: &AuthUser,
    client: &ClientInfo,
    new_email: &Email,
    lookup: &[Vec<u8>],
) -> Result<(), ApiError> {
    let now = state.clock.now();
    let uid = auth.user_id;
    let mut tx = state.db.begin().await?;
    let holder = crate::accounts::db::find_by_email(&mut tx, lookup).await?;
    if holder.is_some() {
        // Tell the address's owner, change nothing.
        mail::enqueue(
            &mut tx,
            &state.keys,
            now,
            "email_change_collision",
            &templates::registration_attempt(new_email.as_str()),
        )
        .await
        .map_err(ApiError::internal)?;
        audit::record(
            &mut tx,
            now,
            &AuditEvent::new(events::EMAIL_CHANGE_REQUESTED, Outcome::Failure)
                .user(uid)
                .session(auth.session_id)
                .client(client)
                .detail("reason", "address_in_use"),
        )
        .await?;
    } else {
        let key = UserKey::load(&mut tx, &state.keys.data, uid).await?;
        let sealed = key.seal(
            &users_aad("pending_email", uid),
            new_email.as_str().as_bytes(),
        )?;
        let blind = new_email.blind_index(&state.keys);
        db::set_pending_email(&mut tx, uid, &sealed, &blind, now).await?;
        // The code goes to the new address (proving the user controls it),
        // the notice to the current one (so a hijacker is noticed).
        crate::auth::send_code(
            &mut tx,
            state,
            client,
            uid,
            new_email,
            codes::Purpose::EmailChange,
        )
        .await?;
        let masked = super::mask_email(new_email.as_str());
        crate::mail::notices::notify(
            &mut tx,
            state,
            uid,
            Notice::EmailChangeRequested {
                new_masked: &masked,
            },
        )
        .await?;
    }
    tx.commit().await?;
    state.outbox.wake();
    Ok(())
}

/// An email change confirmed after another account took the address: the
/// same answer as the `users_email_blind_index_key` violation (`src/error.rs`).
fn email_unavailable() -> ApiError {
    ApiError::Conflict {
        code: "email_unavailable",
        detail: "That email address cannot be used for this account.",
    }
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    #[validate(custom(function = "validate::six_digits"))]
    pub code: String,
}

/// Applies a pending email change with the code sent to the new address.
pub async fn confirm_email_change(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    Json(req): Json<CodeRequest>,
) -> Result<JsonResponse<MeResponse>, ApiError> {
    let now = state.clock.now();
    let uid = auth.user_id;
    let mut tx = state.db.begin().await?;
    let pending = db::pending_email(&mut tx, uid).await?;
    let checked = codes::consume(
        &mut tx,
        &state.keys,
        now,
        uid,
        codes::Purpose::EmailChange,
        &req.code,
    )
    .await?;
    let pending = match (pending, checked) {
        (Some(pending), Ok(())) => pending,
        (_, checked) => {
            let reason = checked.err().map_or("no_pending_change", |e| e.as_str());
            audit::record(
                &mut tx,
                now,
                &AuditEvent::new(events::EMAIL_CHANGED, Outcome::Failure)
                    .user(uid)
                    .session(auth.session_id)
                    .client(&client)
                    .detail("reason", reason),
            )
            .await?;
            // The failed attempt counts: commit it, then refuse.
            tx.commit().await?;
            return Err(crate::accounts::invalid_code());
        }
    };
    let key = UserKey::load(&mut tx, &state.keys.data, uid).await?;
    let new_email = key.open_string(&users_aad("pending_email", uid), &pending.ciphertext)?;
    // Indexed afresh under the current key (the pending index may be under
    // an older one), and claimed like a registration: under the address
    // lock, refused if an account holds it under any key of the ring.
    let blind = crate::accounts::email::stored_blind_index(&state.keys, &new_email);
    let lookup = state
        .keys
        .blind_index
        .lookup(crate::accounts::email::BLIND_INDEX_CONTEXT, &new_email);
    crate::accounts::db::lock_address(&mut tx, &lookup).await?;
    if let Some(holder) = crate::accounts::db::find_by_email(&mut tx, &lookup).await? {
        if holder.user_id != uid {
            return Err(email_unavailable());
        }
    }
    let sealed = key.seal(&crate::accounts::email_aad(uid), new_email.as_bytes())?;
    let masked = super::mask_email(&new_email);
    // Told at the old address, which is still the one on file here.
    crate::mail::notices::notify(
        &mut tx,
        &state,
        uid,
        Notice::EmailChanged {
            new_masked: &masked,
        },
    )
    .await?;
    db::apply_email_change(&mut tx, uid, &sealed, &blind, now).await?;
    // Whatever was mailed to the old address (a reset code, say) must not
    // work now that the address is no longer the account's, and a sign-in
    // waiting for its second factor started before the change ends too.
    codes::retire_all(&mut tx, uid, now).await?;
    crate::mfa::db::end_challenges(&mut tx, uid, now).await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::EMAIL_CHANGED, Outcome::Success)
            .user(uid)
            .session(auth.session_id)
            .client(&client),
    )
    .await?;
    let me = load_me(&mut tx, &key).await?;
    tx.commit().await?;
    state.outbox.wake();
    Ok(JsonResponse(me))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct DeleteMeRequest {
    #[validate(length(max = 4096))]
    pub current_password: crate::http::secret::SecretText,
    #[serde(default, deserialize_with = "crate::http::validate::non_null")]
    /// A TOTP code or a recovery code; required when MFA is on.
    #[validate(length(min = 1, max = 64))]
    pub code: Option<String>,
}

/// Deletes the account. Order matters: the notice is queued while the
/// address can still be read, then the user's data key is destroyed
/// (crypto-shredding: every copy of their ciphertexts, backups included,
/// becomes unreadable), then the row goes with everything hanging off it.
/// An audit tombstone (user id, time, session) is all that remains: the IP
/// address and user agent of the account's audit rows (the tombstone's
/// included) and alerts are erased in the same transaction.
pub async fn delete_me(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    Json(req): Json<DeleteMeRequest>,
) -> Result<StatusCode, ApiError> {
    // With MFA on, a missing code and a throttled factor are answered
    // before the password is checked, and a wrong code like a wrong
    // password, so the route tells no one which of the two was right.
    if auth.mfa_enabled {
        if req.code.is_none() {
            return Err(ApiError::invalid_field(
                "code",
                "required",
                "Enter a code from your authenticator app or a recovery code.",
            ));
        }
        crate::mfa::routes::refuse_if_throttled(&state, &auth).await?;
    }
    let password_ok = crate::accounts::verify_current_password(
        &state,
        &auth,
        &client,
        &req.current_password,
        events::ACCOUNT_DELETED,
    )
    .await?;
    if !password_ok {
        return Err(if auth.mfa_enabled {
            crate::mfa::routes::wrong_password_or_code()
        } else {
            ApiError::Forbidden {
                code: "invalid_credentials",
                detail: "The current password is incorrect.",
            }
        });
    }
    let now = state.clock.now();
    let uid = auth.user_id;
    let mut tx = state.db.begin().await?;
    if auth.mfa_enabled {
        let Some(code) = req.code.as_deref() else {
            return Err(ApiError::invalid_field(
                "code",
                "required",
                "Enter a code from your authenticator app or a recovery code.",
            ));
        };
        let factor = if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            Factor::Totp(code, Secret::Active)
        } else {
            Factor::RecoveryCode(code)
        };
        if let Err(f) = verify_factor(&mut tx, &state, uid, &factor).await? {
            audit::record(
                &mut tx,
                now,
                &AuditEvent::new(events::ACCOUNT_DELETED, Outcome::Failure)
                    .user(uid)
                    .session(auth.session_id)
                    .client(&client)
                    .detail("reason", "invalid_code"),
            )
            .await?;
            tx.commit().await?;
            return Err(match f {
                crate::mfa::FactorFailure::Invalid => crate::mfa::routes::wrong_password_or_code(),
                throttled => throttled.into_error(false),
            });
        }
    }
    if auth.role == Role::Admin {
        // Same rule as demotion: the last active administrator stays.
        let admins = crate::admin::accounts::lock_active_admins(&mut tx).await?;
        if admins.len() <= 1 && admins.contains(&uid) {
            return Err(crate::admin::accounts::last_admin());
        }
    }
    crate::mail::notices::notify(&mut tx, &state, uid, Notice::AccountDeleted).await?;
    let sessions_ended =
        crate::sessions::db::revoke_all_sessions(&mut tx, uid, None, now, "account_deleted")
            .await?;
    user_keys::shred(&mut tx, uid).await?;
    db::delete_user(&mut tx, uid).await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::ACCOUNT_DELETED, Outcome::Success)
            .user(uid)
            .session(auth.session_id)
            .client(&client)
            .detail("sessions_ended", sessions_ended),
    )
    .await?;
    db::erase_client_details(&mut tx, uid).await?;
    tx.commit().await?;
    state.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}

/// The MFA state in an export: never a secret or a code.
#[derive(Serialize)]
pub struct MfaExport {
    pub totp_enabled: bool,
    #[serde(serialize_with = "crate::clock::millis_opt")]
    pub enabled_at: Option<DateTime<Utc>>,
    pub recovery_codes_remaining: i64,
}

/// One of the caller's own audit events.
#[derive(Serialize)]
pub struct AuditExport {
    #[serde(serialize_with = "crate::clock::millis")]
    pub occurred_at: DateTime<Utc>,
    pub event_type: String,
    pub outcome: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// `GET /v1/me/export`: everything stored about the caller (GDPR art. 15
/// and 20), decrypted, and nothing about anyone else.
#[derive(Serialize)]
pub struct ExportResponse {
    #[serde(serialize_with = "crate::clock::millis")]
    pub exported_at: DateTime<Utc>,
    pub account: MeResponse,
    pub sessions: Vec<crate::sessions::routes::SessionView>,
    pub devices: Vec<crate::devices::routes::Device>,
    pub notes: Vec<crate::notes::Note>,
    /// The caller's requests for a higher rate-limit tier, newest first.
    pub rate_limit_requests: Vec<crate::rate_limit_requests::RateLimitRequest>,
    /// Per day, how many of the caller's requests were refused with 429
    /// (today and the 30 days before, shown to staff deciding a
    /// rate-limit request).
    pub rate_limit_refusals: Vec<crate::rate_limit::refusals::RefusalDay>,
    pub mfa: MfaExport,
    /// The most recent 1000 events about the caller.
    pub audit_events: Vec<AuditExport>,
}

/// Needs aal2 when MFA is on: an export is every personal field at once.
pub async fn export_me(
    State(state): State<AppState>,
    Aal2(auth): Aal2,
    client: ClientInfo,
) -> Result<JsonResponse<ExportResponse>, ApiError> {
    let now = state.clock.now();
    let uid = auth.user_id;
    let mut tx = state.db.begin().await?;
    let key = UserKey::load(&mut tx, &state.keys.data, uid).await?;
    let account = load_me(&mut tx, &key).await?;
    let sessions = crate::sessions::routes::session_views(&mut tx, &state, &auth).await?;
    let devices = crate::devices::db::list(&mut tx, uid)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    let notes = crate::notes::export(&mut tx, &key).await?;
    let rate_limit_requests = crate::rate_limit_requests::export(&mut tx, &key).await?;
    state.refusals.flush(&state.db, now.date_naive()).await?;
    let rate_limit_refusals = crate::rate_limit::refusals::days(&mut tx, uid).await?;
    let mfa = db::mfa_state(&mut tx, uid).await?;
    let audit_events = db::own_audit_events(&mut tx, uid, 1000)
        .await?
        .into_iter()
        .map(|e| AuditExport {
            occurred_at: e.occurred_at,
            event_type: e.event_type,
            outcome: e.outcome,
            ip: e.ip,
            user_agent: e.user_agent,
        })
        .collect();
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::DATA_EXPORTED, Outcome::Success)
            .user(uid)
            .session(auth.session_id)
            .client(&client),
    )
    .await?;
    tx.commit().await?;
    Ok(JsonResponse(ExportResponse {
        exported_at: now,
        account,
        sessions,
        devices,
        notes,
        rate_limit_requests,
        rate_limit_refusals,
        mfa: MfaExport {
            totp_enabled: mfa.enabled_at.is_some(),
            enabled_at: mfa.enabled_at,
            recovery_codes_remaining: mfa.recovery_codes_remaining,
        },
        audit_events,
    }))
}
