//! `AppState`: everything a handler may touch, cloned cheaply per request.
//!
//! There is no global mutable state: the pool, keys, clock and policies live
//! here, so a test builds a fully isolated application (its own database,
//! clock and mailbox) and many run in parallel in one process.

use crate::{
    accounts::{breached::BreachedPasswords, password::PasswordHasher},
    clock::Clock,
    config::Config,
    http::client_version::ClientPolicy,
    keys::Keys,
    mail::Outbox,
    tokens::TokenSettings,
};
use sqlx::PgPool;
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub clock: Clock,
    pub keys: Arc<Keys>,
    pub client_policy: Arc<ClientPolicy>,
    pub outbox: Outbox,
    /// argon2id on a bounded pool of blocking threads.
    pub hasher: PasswordHasher,
    pub token_settings: Arc<TokenSettings>,
    /// Distinct profiles viewed per user, for the data-access volume rule.
    pub profile_views: Arc<crate::alerts::views::ViewTracker>,
    /// Rate limits (in-process, or shared through Redis).
    pub limiter: Arc<crate::rate_limit::Limiter>,
    /// 429s per account not yet written to `rate_limit_refusals`.
    pub refusals: Arc<crate::rate_limit::refusals::RefusalCounter>,
    /// Bounds the requests served at once (load shedding).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// The optional Pwned Passwords check (`PWNED_PASSWORDS_CHECK`).
    pub breached_passwords: Option<BreachedPasswords>,
    /// Work handed off to run after the answer (the account-dependent
    /// half of the enumeration-safe code endpoints).
    pub deferred: crate::auth::deferred::Deferred,
    /// Whether this process terminates TLS itself (HSTS is sent when it does).
    pub tls_enabled: bool,
    /// Set once shutdown has begun: `/readyz` answers 503 and HTTP/1
    /// responses carry `Connection: close` (see `crate::startup`).
    pub draining: Draining,
    /// The App Attest and Play Integrity verifiers, as configured.
    pub attestation: Arc<crate::attestation::verifiers::Verifiers>,
}

/// The shutdown grace period's flag: `false` while serving normally, `true`
/// (for good) from SIGTERM/SIGINT on.
#[derive(Clone, Debug, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// Starts draining (idempotent).
    pub fn begin(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
