//! `mobile-backend admin create` and `admin promote`: how the first
//! administrator comes to exist. They run with database access and the
//! service's keys (an operator's shell), never over HTTP, and are audited
//! without an actor.
//!
//! Staff roles require a second factor, so a staff password alone never
//! reaches a staff route: `create` enrols TOTP for the new account and
//! hands its secret and recovery codes to the operator once; `promote` to
//! support or admin refuses an account without MFA.

use crate::{
    accounts::{db, email::Email, password::PasswordHasher, policy, Role},
    audit::{self, events, AuditEvent, Outcome},
    clock::Clock,
    config::Config,
    keys::Keys,
    user_keys::UserKey,
};
use anyhow::Context;
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

/// What `create` made: the account, and for a staff role the enrolled
/// authenticator, shown to the operator once and never stored in clear.
pub struct Created {
    pub user_id: Uuid,
    pub totp: Option<EnrolledTotp>,
}

pub struct EnrolledTotp {
    pub otpauth_uri: String,
    pub secret_base32: String,
    pub recovery_codes: Vec<String>,
}

/// Creates a verified account with `role`. Fails if the address already
/// has an account (use [`promote`]); the password must pass the same
/// policy as any sign-up. A staff account is created with TOTP enrolled.
pub async fn create(
    pool: &PgPool,
    config: &Config,
    keys: &Keys,
    email: &str,
    password: &str,
    role: Role,
) -> anyhow::Result<Created> {
    let email =
        Email::parse(email, "email").map_err(|_| anyhow::anyhow!("not a valid email address"))?;
    let normalised = policy::normalize(password);
    policy::check(&normalised, email.as_str())
        .map_err(|v| anyhow::anyhow!("password refused: {}", v.message))?;
    let hasher = PasswordHasher::new(
        config.auth.argon2.clone(),
        config.keys.password_pepper_keys.clone(),
        1,
        1,
    )
    .map_err(|e| anyhow::anyhow!("password hasher: {e}"))?;
    let hash = hasher
        .hash(&SecretString::from(normalised))
        .await
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    let now = Clock::system().now();
    let user_id = Uuid::now_v7();
    let user_key = UserKey::generate(user_id);
    let sealed = user_key.seal(
        &crate::accounts::email_aad(user_id),
        email.as_str().as_bytes(),
    )?;
    let lookup = email.lookup(keys);
    let mut tx = pool.begin().await?;
    db::lock_address(&mut tx, &lookup).await?;
    let created = db::insert_user(
        &mut tx,
        &db::NewUser {
            user_id,
            email_ciphertext: &sealed,
            email_blind_index: &email.blind_index(keys),
            email_lookup: &lookup,
            password_hash: &hash,
            now,
        },
    )
    .await?;
    anyhow::ensure!(
        created,
        "an account with this email already exists: use `admin promote`"
    );
    user_key
        .insert(&mut tx, &keys.data, now)
        .await
        .map_err(|e| anyhow::anyhow!("storing the data key: {e}"))?;
    db::mark_verified(&mut tx, user_id, now).await?;
    set_role(&mut tx, user_id, role, now).await?;
    let totp = if role.is_staff() {
        Some(
            enrol_totp(
                &mut tx,
                config,
                keys,
                &user_key,
                user_id,
                email.as_str(),
                now,
            )
            .await?,
        )
    } else {
        None
    };
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::ADMIN_BOOTSTRAPPED, Outcome::Success)
            .user(user_id)
            .detail("role", role.as_str())
            .detail("created", true)
            .detail("mfa_enrolled", totp.is_some()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("audit: {e}"))?;
    tx.commit().await?;
    Ok(Created { user_id, totp })
}

/// Enrols TOTP at once (the operator is the channel that delivers the
/// secret), with ten recovery codes.
async fn enrol_totp(
    conn: &mut sqlx::PgConnection,
    config: &Config,
    keys: &Keys,
    user_key: &UserKey,
    user_id: Uuid,
    email: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<EnrolledTotp> {
    use crate::mfa::{self, db as mfa_db, totp};
    let secret =
        zeroize::Zeroizing::new(crate::crypto::random::random_bytes::<{ totp::SECRET_BYTES }>());
    let sealed = user_key.seal(
        &mfa::secret_aad(user_id, mfa::Secret::Active),
        secret.as_slice(),
    )?;
    mfa_db::set_pending_secret(&mut *conn, user_id, &sealed, now, None).await?;
    mfa_db::activate_pending(&mut *conn, user_id, &sealed, now).await?;
    let recovery_codes = mfa::routes::new_recovery_codes(&mut *conn, keys, user_id, now).await?;
    let otpauth_uri = totp::otpauth_uri(secret.as_slice(), &config.mfa_issuer, email)
        .context("building the otpauth URI")?;
    Ok(EnrolledTotp {
        otpauth_uri,
        secret_base32: totp::secret_base32(secret.as_slice()),
        recovery_codes,
    })
}

/// Gives an existing account `role` (found by its email's blind index).
pub async fn promote(pool: &PgPool, keys: &Keys, email: &str, role: Role) -> anyhow::Result<Uuid> {
    let email =
        Email::parse(email, "email").map_err(|_| anyhow::anyhow!("not a valid email address"))?;
    let now = Clock::system().now();
    let mut tx = pool.begin().await?;
    let user = db::find_by_email(&mut tx, &email.lookup(keys))
        .await?
        .context("no account with this email")?;
    // The same rule as the API: the last active administrator cannot be
    // demoted (admin rows are locked first, in the API's order).
    let admins = super::accounts::lock_active_admins(&mut tx).await?;
    anyhow::ensure!(
        role == Role::Admin || !admins.contains(&user.user_id) || admins.len() > 1,
        "this is the last active administrator: promote another account to admin first"
    );
    let account = crate::mfa::db::lock_account(&mut tx, user.user_id)
        .await?
        .context("no account with this email")?;
    anyhow::ensure!(
        !role.is_staff() || account.mfa_enabled,
        "this account has no second factor, and the {} role requires one: sign in as it and \
         turn on two-factor authentication (POST /v1/mfa/totp/setup), then promote it again",
        role.as_str()
    );
    set_role(&mut tx, user.user_id, role, now).await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::ADMIN_BOOTSTRAPPED, Outcome::Success)
            .user(user.user_id)
            .detail("role", role.as_str())
            .detail("created", false),
    )
    .await
    .map_err(|e| anyhow::anyhow!("audit: {e}"))?;
    tx.commit().await?;
    Ok(user.user_id)
}

async fn set_role(
    conn: &mut sqlx::PgConnection,
    user_id: Uuid,
    role: Role,
    now: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE users SET role = $2, updated_at = $3 WHERE user_id = $1",
        user_id,
        role.as_str(),
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}
