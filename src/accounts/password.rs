//! Argon2id password hashing and verification on a bounded worker pool.
//!
//! Threats: (1) a stolen database: argon2id is memory-hard, so offline
//! guessing is slow and GPUs gain little; (2) a login flood: each hash takes
//! ~19 MiB and tens of ms of a core, so at most `max_concurrent` run at once
//! (on the blocking pool, never on the async workers), at most `max_waiting`
//! callers queue, and the rest get `Overloaded` at once (the HTTP layer answers
//! 503 with Retry-After) instead of piling up; (3) account enumeration: an
//! unknown email is verified against a dummy hash with the current parameters,
//! so it costs the same time as a known one.
//!
//! Passwords are NFKC-normalised here as in `policy::check`, so a caller that
//! forgets to normalise still hashes what the policy checked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use zeroize::Zeroizing;

use super::policy;
use crate::config::Argon2Params;

/// Longest accepted password in UTF-8 bytes: `MAX_CHARS` of up to 4 bytes each.
const MAX_BYTES: usize = policy::MAX_CHARS * 4;
/// NFKC composition shrinks text at most 3-fold (Hangul jamo), so raw input
/// longer than this cannot be an acceptable password; refused unnormalised.
const MAX_RAW_BYTES: usize = MAX_BYTES * 4;
/// 128-bit salts, as RFC 9106 recommends.
const SALT_BYTES: usize = 16;
/// A stored hash asking for more than this is corrupt or hostile: refusing it
/// beats letting one database row make the process allocate gigabytes.
const MAX_STORED_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_STORED_ITERATIONS: u32 = 64;
const MAX_STORED_PARALLELISM: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many hashes running and waiting: shed load (503 + Retry-After).
    #[error("password hashing is overloaded")]
    Overloaded,
    /// Longer than any password the policy accepts.
    #[error("password is too long")]
    TooLong,
    /// Bad configuration, a malformed stored hash, or a failed worker.
    #[error("password hashing failed: {0}")]
    Internal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The password was right but the stored hash uses other parameters (or
    /// variant): store `hash(password)` now. Always false when `ok` is false.
    pub needs_rehash: bool,
}

/// Cheap to clone; clones share the pool limits.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    argon2: Argon2<'static>,
    params: Params,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    max_waiting: usize,
    waiting: AtomicUsize,
    /// Hash of a random password nobody knows, verified for unknown emails.
    dummy_phc: String,
}

impl PasswordHasher {
    /// Builds the hasher and computes the dummy hash, which runs one argon2
    /// hash on this thread: call it once at start-up, not per request.
    pub fn new(
        params: Argon2Params,
        max_concurrent: usize,
        max_waiting: usize,
    ) -> Result<Self, HashError> {
        if max_concurrent == 0 || max_concurrent > Semaphore::MAX_PERMITS {
            return Err(HashError::Internal(format!(
                "max_concurrent must be 1..={}",
                Semaphore::MAX_PERMITS
            )));
        }
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| HashError::Internal(format!("invalid argon2 parameters: {e}")))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());

        let mut dummy_password = Zeroizing::new([0u8; 32]);
        fill_random(dummy_password.as_mut())?;
        let dummy_phc = hash_blocking(&argon2, dummy_password.as_ref())?;

        Ok(Self {
            inner: Arc::new(Inner {
                argon2,
                params,
                permits: Arc::new(Semaphore::new(max_concurrent)),
                max_concurrent,
                max_waiting,
                waiting: AtomicUsize::new(0),
                dummy_phc,
            }),
        })
    }

    /// Callers waiting for a hashing slot (a gauge for metrics).
    pub fn queue_depth(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// Hashes running now (a gauge for metrics).
    pub fn in_flight(&self) -> usize {
        (self.inner.max_concurrent).saturating_sub(self.inner.permits.available_permits())
    }

    /// PHC string `$argon2id$v=19$m=…,t=…,p=…$salt$hash` with a fresh salt.
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        let password = prepare(password)?;
        let argon2 = self.inner.argon2.clone();
        self.run(move || hash_blocking(&argon2, password.as_bytes()))
            .await
    }

    /// Checks `password` against the stored PHC string, or against the dummy
    /// hash when there is no account (`None`), which always gives `ok: false`.
    pub async fn verify(
        &self,
        password: &SecretString,
        phc: Option<&str>,
    ) -> Result<Verified, HashError> {
        let password = prepare(password)?;
        let account_exists = phc.is_some();
        let phc = phc.unwrap_or(&self.inner.dummy_phc).to_owned();
        // Parse before taking a slot: a corrupt row should not cost a hash.
        let stale = self.is_stale(&PasswordHash::new(&phc).map_err(malformed)?)?;
        let argon2 = self.inner.argon2.clone();
        let matches = self
            .run(move || {
                let parsed = PasswordHash::new(&phc).map_err(malformed)?;
                // Uses the algorithm, version, parameters and salt in `parsed`.
                match argon2.verify_password(password.as_bytes(), &parsed) {
                    Ok(()) => Ok(true),
                    Err(argon2::password_hash::Error::Password) => Ok(false),
                    Err(e) => Err(malformed(e)),
                }
            })
            .await?;
        let ok = matches && account_exists;
        Ok(Verified {
            ok,
            needs_rehash: ok && stale,
        })
    }

    /// Whether `stored` differs from what `hash` would produce now; refuses
    /// hashes this module could not have written, or that cost absurdly much.
    fn is_stale(&self, stored: &PasswordHash<'_>) -> Result<bool, HashError> {
        if stored.salt.is_none() || stored.hash.is_none() {
            return Err(HashError::Internal(
                "stored hash has no salt or output".into(),
            ));
        }
        let algorithm = Algorithm::try_from(stored.algorithm).map_err(malformed)?;
        let stored_params = Params::try_from(stored).map_err(malformed)?;
        let current = &self.inner.params;
        // The caps never refuse what the current parameters themselves write.
        if stored_params.m_cost() > MAX_STORED_MEMORY_KIB.max(current.m_cost())
            || stored_params.t_cost() > MAX_STORED_ITERATIONS.max(current.t_cost())
            || stored_params.p_cost() > MAX_STORED_PARALLELISM.max(current.p_cost())
        {
            return Err(HashError::Internal(
                "stored hash parameters out of range".into(),
            ));
        }
        Ok(algorithm != Algorithm::Argon2id
            || stored.version != Some(Version::V0x13.into())
            || stored_params.m_cost() != current.m_cost()
            || stored_params.t_cost() != current.t_cost()
            || stored_params.p_cost() != current.p_cost()
            || stored_params
                .output_len()
                .unwrap_or(Params::DEFAULT_OUTPUT_LEN)
                != current.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN))
    }

    /// Runs `work` on the blocking pool once a slot is free. The permit moves
    /// into the task, so a caller that gives up (client gone) still counts
    /// until the CPU work really ends.
    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, HashError> + Send + 'static,
    {
        // spawn_blocking panics outside a runtime; this reports it instead.
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| HashError::Internal(format!("no tokio runtime: {e}")))?;
        let waited = std::time::Instant::now();
        let permit = self.acquire().await?;
        metrics::histogram!("password_hash_wait_duration_seconds")
            .record(waited.elapsed().as_secs_f64());
        runtime
            .spawn_blocking(move || {
                let _permit = permit;
                work()
            })
            .await
            .map_err(|e| HashError::Internal(format!("hashing task failed: {e}")))?
    }

    async fn acquire(&self) -> Result<OwnedSemaphorePermit, HashError> {
        let inner = &self.inner;
        match Arc::clone(&inner.permits).try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(closed()),
            Err(TryAcquireError::NoPermits) => {}
        }
        // Take a place in the queue only if one is free; never over-count.
        inner
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < inner.max_waiting).then_some(waiting + 1)
            })
            .map_err(|_| HashError::Overloaded)?;
        // Leaves the queue on every exit, including a dropped future.
        let _place = QueuePlace(&inner.waiting);
        Arc::clone(&inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| closed())
    }

    /// Test hook: occupies one hashing slot until the permit is dropped.
    #[cfg(test)]
    fn occupy_slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.inner.permits).try_acquire_owned().ok()
    }
}

struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Length checks, then NFKC into memory that is wiped when dropped.
fn prepare(password: &SecretString) -> Result<Zeroizing<String>, HashError> {
    let raw = password.expose_secret();
    if raw.len() > MAX_RAW_BYTES {
        return Err(HashError::TooLong);
    }
    let normalized = Zeroizing::new(policy::normalize(raw));
    if normalized.len() > MAX_BYTES {
        return Err(HashError::TooLong);
    }
    Ok(normalized)
}

fn hash_blocking(argon2: &Argon2<'_>, password: &[u8]) -> Result<String, HashError> {
    let mut salt = [0u8; SALT_BYTES];
    fill_random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Internal(e.to_string()))?;
    argon2
        .hash_password(password, &salt)
        .map(|phc| phc.to_string())
        .map_err(|e| HashError::Internal(format!("argon2: {e}")))
}

/// OsRng's `fill_bytes` panics if the OS has no randomness; this returns it.
fn fill_random(buf: &mut [u8]) -> Result<(), HashError> {
    OsRng
        .try_fill_bytes(buf)
        .map_err(|e| HashError::Internal(format!("OS random source failed: {e}")))
}

fn malformed(e: argon2::password_hash::Error) -> HashError {
    HashError::Internal(format!("malformed stored password hash: {e}"))
}

fn closed() -> HashError {
    HashError::Internal("hashing pool closed".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
