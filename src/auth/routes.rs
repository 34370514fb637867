//! Sign-up and sign-in: register, verify-email, resend, login.

use super::EmailOnlyRequest;
use crate::{
    accounts::{
        codes::{self, Purpose},
        db,
        email::Email,
        email_aad, invalid_code, invalid_credentials, Aal, Status, StatusResponse,
    },
    audit::{self, events, AuditEvent, Outcome},
    crypto::Aad,
    dpop::{extract::DpopProof, VerifiedProof},
    error::ApiError,
    http::{extract::ClientInfo, extract::Json, routes::ApiRouter, validate},
    mail::{self, templates},
    mfa::{
        challenge::{self, MfaRequired},
        db as mfa_db,
    },
    rate_limit::policy::Class,
    sessions::{self, DeviceInfo, SignIn, TokenPair},
    state::AppState,
    user_keys::UserKey,
};
use axum::{extract::State, http::Method, http::StatusCode, Json as JsonResponse};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(
            Method::POST,
            "/v1/auth/register",
            "register",
            Class::Credentials,
            register,
        )
        .route(
            Method::POST,
            "/v1/auth/verify-email",
            "verify_email",
            Class::Credentials,
            verify_email,
        )
        .route(
            Method::POST,
            "/v1/auth/verify-email/resend",
            "resend_verification",
            Class::Credentials,
            resend_verification,
        )
        .route(
            Method::POST,
            "/v1/auth/login",
            "login",
            Class::Credentials,
            login,
        )
        .merge(super::recovery::router())
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[validate(length(max = 320))]
    pub email: String,
    #[validate(length(max = 1024))]
    pub password: crate::http::secret::SecretText,
    #[validate(
        length(min = 1, max = 64),
        custom(function = "validate::no_control_chars")
    )]
    pub display_name: Option<String>,
}

pub async fn register(
    State(state): State<AppState>,
    client: ClientInfo,
    DpopProof(proof): DpopProof,
    Json(req): Json<RegisterRequest>,
) -> Result<(StatusCode, JsonResponse<StatusResponse>), ApiError> {
    // ATTESTATION_POLICY first: an unattested client under `require`
    // creates nothing and learns nothing about the address.
    crate::attestation::gate(&state, proof.as_ref(), &client, "register").await?;
    let email = Email::parse(&req.email, "email")?;
    crate::accounts::limit_account(&state, &email).await?;
    let password =
        crate::accounts::accept_new_password(&state, &req.password, &email, "password").await?;
    // Hash before knowing whether the address is taken: both answers cost
    // the same argon2 run, so timing does not tell them apart.
    let hash = crate::accounts::hash_password(&state, &password).await?;
    let now = state.clock.now();
    let user_id = Uuid::now_v7();
    let blind = email.blind_index(&state.keys);
    let lookup = email.lookup(&state.keys);
    // The account's own data key: everything personal about it is sealed
    // under this key, which is stored only wrapped by the master key.
    let user_key = UserKey::generate(user_id);
    let sealed = user_key.seal(&email_aad(user_id), email.as_str().as_bytes())?;
    let mut tx = state.db.begin().await?;
    db::lock_address(&mut tx, &lookup).await?;
    let created = db::insert_user(
        &mut tx,
        &db::NewUser {
            user_id,
            email_ciphertext: &sealed,
            email_blind_index: &blind,
            email_lookup: &lookup,
            password_hash: &hash,
            now,
        },
    )
    .await?;
    if created {
        user_key.insert(&mut tx, &state.keys.data, now).await?;
        if let Some(name) = &req.display_name {
            let sealed_name = user_key.seal(
                &Aad {
                    table: "users",
                    column: "display_name",
                    row_id: user_id,
                },
                name.as_bytes(),
            )?;
            db::set_display_name(&mut tx, user_id, &sealed_name).await?;
        }
        audit::record(
            &mut tx,
            now,
            &AuditEvent::new(events::REGISTERED, Outcome::Success)
                .user(user_id)
                .client(&client),
        )
        .await?;
        super::send_code(
            &mut tx,
            &state,
            &client,
            user_id,
            &email,
            Purpose::EmailVerification,
        )
        .await?;
    } else if let Some(existing) = db::replace_unverified(&mut tx, &lookup, &hash, now).await? {
        // Nobody has proven this mailbox yet, so the newest registrant's
        // password is the one a code from it will confirm: an earlier
        // registrant (perhaps an attacker pre-registering the address)
        // loses their password and every code mailed so far.
        let retired = codes::retire_all(&mut tx, existing, now).await?;
        if let Some(name) = &req.display_name {
            let key = UserKey::load(&mut tx, &state.keys.data, existing).await?;
            let sealed_name = key.seal(
                &Aad {
                    table: "users",
                    column: "display_name",
                    row_id: existing,
                },
                name.as_bytes(),
            )?;
            db::set_display_name(&mut tx, existing, &sealed_name).await?;
        }
        audit::record(
            &mut tx,
            now,
            &AuditEvent::new(events::REGISTRATION_REPLACED, Outcome::Success)
                .user(existing)
                .client(&client)
                .detail("codes_retired", retired),
        )
        .await?;
        super::send_code(
            &mut tx,
            &state,
            &client,
            existing,
            &email,
            Purpose::EmailVerification,
        )
        .await?;
    } else {
        // A verified account: its owner is told, nothing changes.
        let existing = db::find_by_email(&mut tx, &lookup).await?;
        mail::enqueue(
            &mut tx,
            &state.keys,
            now,
            "registration_attempt",
            &templates::registration_attempt(email.as_str()),
        )
        .await
        .map_err(ApiError::internal)?;
        let mut event =
            AuditEvent::new(events::REGISTRATION_DUPLICATE, Outcome::Denied).client(&client);
        if let Some(u) = existing {
            event = event.user(u.user_id);
        }
        audit::record(&mut tx, now, &event).await?;
    }
    tx.commit().await?;
    state.outbox.wake();
    Ok((
        StatusCode::ACCEPTED,
        JsonResponse(StatusResponse {
            status: "verification_required",
        }),
    ))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailRequest {
    #[validate(length(max = 320))]
    pub email: String,
    #[validate(custom(function = "validate::six_digits"))]
    pub code: String,
    /// The password chosen at registration: the code proves the mailbox,
    /// the password binds that proof to the registrant who chose it.
    #[validate(length(max = 4096))]
    pub password: crate::http::secret::SecretText,
    #[validate(nested)]
    pub device: Option<DeviceInfo>,
}

/// Verifies an address and signs its owner in. Succeeds only with the live
/// code *and* the account's current password, so a code from the mailbox
/// confirms the password of whoever registered last, never an earlier
/// registrant's. A wrong password is the same 400 `invalid_code` as a wrong
/// code and costs the code an attempt.
///
/// Both outcomes for an unknown address and a known one do the same work
/// (one argon2 verification, against a dummy hash when there is no
/// account; the same lookups, code query, audit row and commit), so the
/// time of the answer does not tell them apart.
pub async fn verify_email(
    State(state): State<AppState>,
    client: ClientInfo,
    DpopProof(proof): DpopProof,
    Json(req): Json<VerifyEmailRequest>,
) -> Result<JsonResponse<LoginResponse>, ApiError> {
    let attested =
        crate::attestation::gate(&state, proof.as_ref(), &client, "verify_email").await?;
    let email = Email::parse(&req.email, "email")?;
    crate::accounts::limit_account(&state, &email).await?;
    let lookup = email.lookup(&state.keys);
    let password = SecretString::from(crate::accounts::policy::normalize(&req.password));
    let mut conn = state.db.acquire().await?;
    let found = db::find_by_email(&mut conn, &lookup).await?;
    drop(conn);
    // Unknown addresses verify a dummy hash: the same work either way.
    let password_ok = match state
        .hasher
        .verify(&password, found.as_ref().map(|u| u.password_hash.as_str()))
        .await
    {
        Ok(v) => v.ok,
        // No account can have such a password.
        Err(crate::accounts::password::HashError::TooLong) => false,
        Err(e) => return Err(e.into()),
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    // Read again under the row lock: if a new registration replaced the
    // password while argon2 ran, the password just checked is no longer
    // the account's, and must not verify it.
    let locked = db::lock_by_email(&mut tx, &lookup).await?;
    let still_current = match (&found, &locked) {
        (Some(f), Some(l)) => {
            password_ok && f.user_id == l.user_id && f.password_hash == l.password_hash
        }
        _ => false,
    };
    // An unknown address runs the same code query (for no user), so both
    // failures cost the same round trips.
    let outcome = codes::consume_if(
        &mut tx,
        &state.keys,
        now,
        locked.as_ref().map_or(Uuid::nil(), |u| u.user_id),
        Purpose::EmailVerification,
        &req.code,
        still_current,
    )
    .await?;
    let (user, reason) = match (locked, outcome) {
        (Some(user), Ok(())) => (user, None),
        (None, _) => {
            let event = AuditEvent::new(events::VERIFICATION, Outcome::Failure)
                .client(&client)
                .detail("reason", "unknown_account");
            audit::record(&mut tx, now, &event).await?;
            tx.commit().await?;
            return Err(invalid_code());
        }
        (Some(user), Err(e)) => {
            let reason = match e {
                codes::CodeError::Mismatch if !still_current => "wrong_code_or_password",
                other => other.as_str(),
            };
            (user, Some(reason))
        }
    };
    let event = AuditEvent::new(
        events::VERIFICATION,
        if reason.is_none() {
            Outcome::Success
        } else {
            Outcome::Failure
        },
    )
    .user(user.user_id)
    .client(&client);
    if let Some(reason) = reason {
        // The failed attempt must be counted even though the request fails.
        audit::record(&mut tx, now, &event.detail("reason", reason)).await?;
        tx.commit().await?;
        return Err(invalid_code());
    }
    db::mark_verified(&mut tx, user.user_id, now).await?;
    audit::record(&mut tx, now, &event).await?;
    if user.status != Status::Active {
        // Verified, but a locked account gets no session.
        tx.commit().await?;
        return Err(ApiError::Forbidden {
            code: "account_locked",
            detail: "This account is locked. Contact support.",
        });
    }
    // An account that was unverified cannot have MFA, but if it ever
    // does, the second factor is not skipped.
    let answer = password_proven(
        tx,
        &state,
        &client,
        &user,
        req.device.as_ref(),
        proof.as_ref(),
        attested,
    )
    .await?;
    Ok(JsonResponse(answer))
}

/// The end of a sign-in whose password was just proven, in `tx`: the
/// second step's challenge for an account with MFA (no tokens yet), else a
/// new aal1 session, bound to the key of `proof` when there is one. Commits.
/// `DPOP_POLICY` is checked first: an account that must have a bound
/// session and sent no proof gets 401 `dpop_required` (before the second
/// factor's challenge, which would be of no use).
async fn password_proven(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    state: &AppState,
    client: &ClientInfo,
    user: &db::UserAuth,
    device: Option<&DeviceInfo>,
    proof: Option<&VerifiedProof>,
    attested: bool,
) -> Result<LoginResponse, ApiError> {
    if let Err(refused) = crate::dpop::check_policy(&state.config.dpop, user.role, proof) {
        // What was done so far (a verified address, a re-hashed password)
        // stands: only the session is refused.
        audit::record(
            &mut tx,
            state.clock.now(),
            &AuditEvent::new(events::LOGIN_FAILED, Outcome::Denied)
                .user(user.user_id)
                .client(client)
                .detail("reason", refused.code()),
        )
        .await?;
        tx.commit().await?;
        return Err(refused);
    }
    if mfa_db::mfa_enabled(&mut tx, user.user_id).await? {
        let challenge = challenge::create(
            &mut tx,
            state,
            user.user_id,
            device,
            proof.map(|p| p.jkt.as_str()),
        )
        .await?;
        tx.commit().await?;
        return Ok(LoginResponse::MfaRequired(challenge));
    }
    let pair = sessions::start(
        &mut tx,
        state,
        client,
        SignIn {
            user_id: user.user_id,
            role: user.role,
            aal: Aal::Aal1,
            amr: vec!["pwd".into()],
            device,
            dpop: proof,
            attested,
        },
    )
    .await?;
    tx.commit().await?;
    state.outbox.wake();
    Ok(LoginResponse::Tokens(pair))
}

pub async fn resend_verification(
    State(state): State<AppState>,
    client: ClientInfo,
    Json(req): Json<EmailOnlyRequest>,
) -> Result<axum::response::Response, ApiError> {
    // Only an unverified account gets a new verification code.
    super::code_by_email(
        &state,
        &client,
        &req.email,
        Purpose::EmailVerification,
        |u| u.email_verified_at.is_none(),
    )
    .await
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[validate(length(max = 320))]
    pub email: String,
    #[validate(length(max = 4096))]
    pub password: crate::http::secret::SecretText,
    #[validate(nested)]
    pub device: Option<DeviceInfo>,
}

/// Tokens, or (for an account with MFA) the challenge of the second step.
#[derive(Serialize)]
#[serde(untagged)]
pub enum LoginResponse {
    Tokens(TokenPair),
    MfaRequired(MfaRequired),
}

pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    DpopProof(proof): DpopProof,
    Json(req): Json<LoginRequest>,
) -> Result<JsonResponse<LoginResponse>, ApiError> {
    // Before the password is looked at: under ATTESTATION_POLICY=require
    // an unattested client cannot use sign-in to test passwords.
    let attested = crate::attestation::gate(&state, proof.as_ref(), &client, "login").await?;
    let email = Email::parse(&req.email, "email")?;
    let account = crate::accounts::limit_account(&state, &email).await?;
    let normalised = crate::accounts::policy::normalize(&req.password);
    if normalised.chars().count() > crate::accounts::policy::MAX_CHARS {
        // No account can have such a password: refuse before any hashing,
        // so long inputs cannot be used to burn CPU.
        let mut conn = state.db.acquire().await?;
        audit::record(
            &mut conn,
            state.clock.now(),
            &AuditEvent::new(events::LOGIN_FAILED, Outcome::Failure)
                .client(&client)
                .detail("reason", "password_too_long"),
        )
        .await?;
        return Err(invalid_credentials());
    }
    let password = SecretString::from(normalised);
    // The soft lock: too many wrong passwords for this account from this
    // IP (an IPv6 client's whole prefix). Another network (the owner's) is
    // not affected.
    let pair = crate::accounts::soft_lock_key(&account, &client.rate_key);
    let now_us = state.clock.now().timestamp_micros();
    if let Some(wait) = state
        .limiter
        .blocked(Class::LoginFailures, &pair, now_us)
        .await?
    {
        let mut conn = state.db.acquire().await?;
        audit::record(
            &mut conn,
            state.clock.now(),
            &AuditEvent::new(events::LOGIN_FAILED, Outcome::Denied)
                .client(&client)
                .detail("reason", "too_many_failures"),
        )
        .await?;
        metrics::counter!("rate_limit_refusals_total", "class" => Class::LoginFailures.name())
            .increment(1);
        return Err(ApiError::RateLimited {
            retry_after_secs: wait,
        });
    }
    let mut conn = state.db.acquire().await?;
    let user = db::find_by_email(&mut conn, &email.lookup(&state.keys)).await?;
    drop(conn);
    // Unknown addresses verify a dummy hash: the same work, the same answer.
    let verified = state
        .hasher
        .verify(&password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await?;
    let now = state.clock.now();
    let refuse = |reason: &'static str, user_id: Option<Uuid>| {
        let mut event = AuditEvent::new(events::LOGIN_FAILED, Outcome::Failure)
            .client(&client)
            .detail("reason", reason);
        if let Some(id) = user_id {
            event = event.user(id);
        }
        event
    };
    let user = match user {
        Some(u) if verified.ok => u,
        other => {
            let failed_user = other.map(|u| u.user_id);
            let mut conn = state.db.acquire().await?;
            audit::record(&mut conn, now, &refuse("invalid_credentials", failed_user)).await?;
            crate::alerts::rules::failed_login(&mut conn, &state, failed_user, client.ip).await?;
            metrics::counter!("auth_login_total", "outcome" => "invalid_credentials").increment(1);
            // Count the failure against this (account, IP) pair.
            state
                .limiter
                .check(Class::LoginFailures, &pair, now_us)
                .await?;
            return Err(invalid_credentials());
        }
    };
    // Only a caller who knows the password learns the account's state.
    let denial = if user.status != Status::Active {
        Some(ApiError::Forbidden {
            code: "account_locked",
            detail: "This account is locked. Contact support.",
        })
    } else if user.email_verified_at.is_none() {
        Some(ApiError::Forbidden {
            code: "email_not_verified",
            detail: "Verify your email address before signing in.",
        })
    } else {
        None
    };
    if let Some(denial) = denial {
        let code = denial.code();
        let mut conn = state.db.acquire().await?;
        audit::record(&mut conn, now, &refuse(code, Some(user.user_id))).await?;
        metrics::counter!("auth_login_total", "outcome" => code).increment(1);
        return Err(denial);
    }
    // Re-hash (new parameters or pepper) before the transaction, best
    // effort: when the pool is busy (every account re-hashes right after a
    // pepper rotation) the sign-in still succeeds and the next one retries.
    let rehashed = if verified.needs_rehash {
        match state.hasher.hash(&password).await {
            Ok(hash) => Some(hash),
            Err(crate::accounts::password::HashError::Overloaded) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let mut tx = state.db.begin().await?;
    if let Some(rehashed) = rehashed {
        // Only over the hash this sign-in checked: a password reset or
        // change that committed meanwhile is not overwritten with a hash of
        // the old password.
        db::upgrade_password_hash(&mut tx, user.user_id, &user.password_hash, &rehashed, now)
            .await?;
    }
    // The password was right; with MFA, no tokens until the second factor is.
    let answer = password_proven(
        tx,
        &state,
        &client,
        &user,
        req.device.as_ref(),
        proof.as_ref(),
        attested,
    )
    .await?;
    let outcome = match answer {
        LoginResponse::MfaRequired(_) => "mfa_required",
        LoginResponse::Tokens(_) => "success",
    };
    metrics::counter!("auth_login_total", "outcome" => outcome).increment(1);
    Ok(JsonResponse(answer))
}
