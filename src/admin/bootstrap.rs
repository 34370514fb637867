//! `mobile-backend admin create` and `admin promote`: how the first
//! administrator comes to exist. They run with database access and the
//! service's keys (an operator's shell), never over HTTP, and are audited
//! without an actor.

use super::accounts::Role;
use crate::{
    audit::{self, events, AuditEvent, Outcome},
    auth::{db, email::Email, password::PasswordHasher, policy},
    clock::Clock,
    config::Config,
    keys::Keys,
    user_keys::UserKey,
};
use anyhow::Context;
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

/// Creates a verified account with `role`. Fails if the address already
/// has an account (use [`promote`]); the password must pass the same
/// policy as any sign-up.
pub async fn create(
    pool: &PgPool,
    config: &Config,
    keys: &Keys,
    email: &str,
    password: &str,
    role: Role,
) -> anyhow::Result<Uuid> {
    let email =
        Email::parse(email, "email").map_err(|_| anyhow::anyhow!("not a valid email address"))?;
    let normalised = policy::normalize(password);
    policy::check(&normalised, email.as_str())
        .map_err(|v| anyhow::anyhow!("password refused: {}", v.message))?;
    let hasher = PasswordHasher::new(config.auth.argon2.clone(), 1, 1)
        .map_err(|e| anyhow::anyhow!("password hasher: {e}"))?;
    let hash = hasher
        .hash(&SecretString::from(normalised))
        .await
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    let now = Clock::system().now();
    let user_id = Uuid::now_v7();
    let user_key = UserKey::generate(user_id);
    let sealed = user_key.seal(
        &crate::auth::routes::email_aad(user_id),
        email.as_str().as_bytes(),
    )?;
    let mut tx = pool.begin().await?;
    let created = db::insert_user(
        &mut tx,
        &db::NewUser {
            user_id,
            email_ciphertext: &sealed,
            email_blind_index: &email.blind_index(keys),
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
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::ADMIN_BOOTSTRAPPED, Outcome::Success)
            .user(user_id)
            .detail("role", role.as_str())
            .detail("created", true),
    )
    .await
    .map_err(|e| anyhow::anyhow!("audit: {e}"))?;
    tx.commit().await?;
    Ok(user_id)
}

/// Gives an existing account `role` (found by its email's blind index).
pub async fn promote(pool: &PgPool, keys: &Keys, email: &str, role: Role) -> anyhow::Result<Uuid> {
    let email =
        Email::parse(email, "email").map_err(|_| anyhow::anyhow!("not a valid email address"))?;
    let now = Clock::system().now();
    let mut tx = pool.begin().await?;
    let user = db::find_by_email(&mut tx, &email.blind_index(keys))
        .await?
        .context("no account with this email")?;
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
