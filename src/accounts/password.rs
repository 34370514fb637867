//! Argon2id password hashing and verification on a bounded worker pool.
//!
//! Threats: (1) a stolen database: argon2id is memory-hard, so offline
//! guessing is slow and GPUs gain little; (2) a login flood: each hash takes
//! ~19 MiB and tens of ms of a core, so at most `max_concurrent` run at once
//! (on as many dedicated threads, each reusing one argon2 buffer, never on
//! the async workers: memory stays fixed however many come, see [`Memory`]),
//! at most `max_waiting` callers queue, and the rest get `Overloaded` at once
//! (the HTTP layer answers 503 with Retry-After) instead of piling up;
//! (3) account enumeration: an
//! unknown email is verified against a dummy hash with the current parameters,
//! so it costs the same time as a known one.
//!
//! Passwords are NFKC-normalised here as in `policy::check`, so a caller that
//! forgets to normalise still hashes what the policy checked.
//!
//! **Pepper** (`PASSWORD_PEPPER_KEYS`, optional, a ring, current first): the
//! current key is argon2's secret input (RFC 9106 §3.1, `K`), and its id is
//! written into the PHC string as argon2's `keyid` parameter
//! (`$argon2id$v=19$m=…,t=…,p=…,keyid=AAAAAQ$salt$hash`, the id as 4 bytes
//! big-endian), which argon2 itself does not hash. A stolen database without
//! the pepper cannot be guessed at offline at all. A hash verifies under the
//! key its `keyid` names (no `keyid`: written before a pepper, verified
//! without one), and a hash under an older key than the current one, or
//! under no key while a key is current, is re-hashed at the next successful
//! sign-in (`needs_rehash`), like one with old cost parameters. Rollout is
//! in two steps (`crypto::pepper`: every process learns a key, then it
//! becomes current), so no process meets a key it does not hold. A pepper key cannot
//! leave the ring while hashes use it (their owners could no longer sign in
//! and would have to reset their password); `keys status` counts them.
//!
//! **Equal cost for every refusal.** Argon2's run time grows with the
//! memory blocks it fills times its passes. An unknown email is checked
//! against a dummy hash with the current parameters; a real account whose
//! hash has older, cheaper parameters would be checked faster and so stand
//! out, until its next sign-in re-hashes it. Two measures close that gap:
//! (1) after verifying a cheaper stored hash, the shortfall is spent on a
//! filler argon2 run, so the total work equals the current parameters'
//! (within eight blocks per pass; argon2 fills memory four blocks at a
//! time); the work each call does is counted (`work_blocks`), which is what
//! the tests compare. (2) Equal work is not quite equal time (a smaller
//! hash stays in the CPU cache and runs faster per block), so every check,
//! whatever it checked, lasts at least as long as checking a current hash
//! has lately taken (a moving average whose samples are capped, so a flood
//! cannot inflate it for long), waiting asynchronously for the rest.
//! A hash *more* expensive than the current parameters (after lowering
//! them) cannot be hidden this way and costs more until re-hashed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, KeyId, Params, ParamsBuilder, Version};
use rand::rngs::OsRng;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use zeroize::{Zeroize, Zeroizing};

use super::policy;
use crate::config::Argon2Params;
use crate::crypto::PepperKeys;

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
/// And together: at most 1 GiB filled once (or 8 times the current work).
const MAX_STORED_WORK: u64 = 1024 * 1024;

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

/// A hashing job: runs on one of the hashing threads with its memory.
type Job = Box<dyn FnOnce(&mut Memory) + Send>;

struct Inner {
    params: Params,
    /// Jobs for the hashing threads (see [`Memory`]).
    jobs: std::sync::mpsc::Sender<Job>,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    max_waiting: usize,
    waiting: AtomicUsize,
    /// The pepper ring; its primary key peppers every new hash.
    pepper: Option<PepperKeys>,
    /// Hash of a random password nobody knows, verified for unknown emails.
    dummy_phc: String,
    /// Argon2 memory blocks filled so far, summed over passes (see the
    /// module comment): proportional to the CPU time spent hashing.
    work_blocks: AtomicU64,
    /// How long checking a hash with the current parameters takes lately.
    typical: Typical,
    /// When an unusable stored hash was last logged (seconds since the
    /// Unix epoch).
    last_unusable_log: AtomicU64,
}

/// A moving average (weight 1/8 per sample) of a duration, lock-free. Each
/// sample counts for at most 4 times the first one (measured at start-up),
/// so a flood or a stall that slows hashing for a while cannot push the
/// floor every check waits for beyond that.
struct Typical {
    average: AtomicU64,
    first: AtomicU64,
}

impl Typical {
    fn new() -> Self {
        Self {
            average: AtomicU64::new(0),
            first: AtomicU64::new(0),
        }
    }

    fn record(&self, sample: std::time::Duration) {
        let sample = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
        let first = match self.first.load(Ordering::Relaxed) {
            0 => {
                self.first.store(sample.max(1), Ordering::Relaxed);
                sample.max(1)
            }
            first => first,
        };
        let sample = sample.min(first.saturating_mul(4));
        // A lost update between two racing samples only skips one sample.
        let old = self.average.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.average.store(new, Ordering::Relaxed);
    }

    fn get(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.average.load(Ordering::Relaxed))
    }
}

impl PasswordHasher {
    /// Builds the hasher and computes the dummy hash, which runs one argon2
    /// hash on this thread: call it once at start-up, not per request.
    /// `pepper`: `PASSWORD_PEPPER_KEYS`, if set.
    pub fn new(
        params: Argon2Params,
        pepper: Option<PepperKeys>,
        max_concurrent: usize,
        max_waiting: usize,
    ) -> Result<Self, HashError> {
        Self::with_nice(params, pepper, max_concurrent, max_waiting, 0)
    }

    /// [`PasswordHasher::new`], with hashing threads `nice` steps below the
    /// process's priority (`PASSWORD_HASH_NICE`; Linux only, elsewhere
    /// ignored). Hashing is the one long CPU task of the service: under a
    /// flood of sign-ins, a lower priority lets the kernel run the async
    /// workers first, so reads and refreshes keep their latency while the
    /// hashes take the CPU time that is left.
    pub fn with_nice(
        params: Argon2Params,
        pepper: Option<PepperKeys>,
        max_concurrent: usize,
        max_waiting: usize,
        nice: i32,
    ) -> Result<Self, HashError> {
        if max_concurrent == 0 || max_concurrent > Semaphore::MAX_PERMITS {
            return Err(HashError::Internal(format!(
                "max_concurrent must be 1..={}",
                Semaphore::MAX_PERMITS
            )));
        }
        let mut builder = ParamsBuilder::new();
        builder
            .m_cost(params.memory_kib)
            .t_cost(params.iterations)
            .p_cost(params.parallelism);
        if let Some(id) = pepper.as_ref().and_then(PepperKeys::current_id) {
            builder.keyid(key_id(id)?);
        }
        let params = builder
            .build()
            .map_err(|e| HashError::Internal(format!("invalid argon2 parameters: {e}")))?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let standing = params.block_count();
        let mut inner = Inner {
            params,
            jobs,
            pepper,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_waiting,
            waiting: AtomicUsize::new(0),
            dummy_phc: String::new(),
            work_blocks: AtomicU64::new(0),
            typical: Typical::new(),
            last_unusable_log: AtomicU64::new(0),
        };
        let mut dummy_password = Zeroizing::new([0u8; 32]);
        fill_random(dummy_password.as_mut())?;
        let started = std::time::Instant::now();
        // On this thread, in memory freed (wiped) right after.
        inner.dummy_phc =
            inner.hash_blocking(dummy_password.as_ref(), &mut Memory::new(standing))?;
        inner.typical.record(started.elapsed());
        spawn_threads(max_concurrent, standing, queue, nice)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Argon2 blocks filled (times passes) by this hasher so far: the work
    /// done, for tests and benchmarks that compare the cost of two paths.
    pub fn work_blocks(&self) -> u64 {
        self.inner.work_blocks.load(Ordering::Relaxed)
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
    /// With a pepper, `keyid=` names the pepper key.
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        let password = prepare(password)?;
        let inner = Arc::clone(&self.inner);
        self.run(move |memory| {
            let started = std::time::Instant::now();
            let phc = inner.hash_blocking(password.as_bytes(), memory);
            record_hash_time(started);
            phc
        })
        .await
    }

    /// Checks `password` against the stored PHC string, or against the dummy
    /// hash when there is no account (`None`), which always gives `ok: false`.
    ///
    /// A stored hash this process cannot use (malformed, absurd costs, a
    /// pepper key it does not hold) is answered like a wrong password, after
    /// a check of the dummy hash: a fast error would tell an enumerating
    /// caller that the account exists. It is counted
    /// (`password_hash_unusable_total{reason}`) and logged at most once a
    /// minute, so the operator hears of it without a line per attempt.
    ///
    /// Every call lasts at least as long as checking a current hash lately
    /// takes (see the module comment), whatever the hash it checked.
    pub async fn verify(
        &self,
        password: &SecretString,
        phc: Option<&str>,
    ) -> Result<Verified, HashError> {
        let password = prepare(password)?;
        let usable = match phc {
            None => None,
            // Checked before taking a slot: an unusable row costs no hash
            // of its own, only the dummy's like any other refusal.
            Some(phc) => match self.check_stored(phc) {
                Ok(stale) => Some((phc.to_owned(), stale)),
                Err(reason) => {
                    self.inner.unusable(reason);
                    None
                }
            },
        };
        let account_exists = usable.is_some();
        let (phc, stale) = usable.unwrap_or_else(|| (self.inner.dummy_phc.clone(), false));
        let inner = Arc::clone(&self.inner);
        let (matches, started) = self
            .run(move |memory| {
                let started = std::time::Instant::now();
                let parsed = PasswordHash::new(&phc).map_err(malformed)?;
                let stored = Params::try_from(&parsed).map_err(malformed)?;
                let matches = inner.matches(password.as_bytes(), &parsed, &stored, memory)?;
                inner.count(&stored);
                inner.fill_shortfall(&stored, memory)?;
                if same_costs(&stored, &inner.params) {
                    inner.typical.record(started.elapsed());
                }
                record_hash_time(started);
                Ok((matches, started))
            })
            .await?;
        // Equal work is not quite equal time (a smaller hash stays in the
        // CPU cache), so every check, whatever it checked, ends no earlier
        // than a current check lately takes; waited asynchronously, no
        // slot held.
        let floor = tokio::time::Instant::from_std(started) + self.inner.typical.get();
        tokio::time::sleep_until(floor).await;
        let ok = matches && account_exists;
        Ok(Verified {
            ok,
            needs_rehash: ok && stale,
        })
    }

    /// Whether a stored hash is stale (differs from what `hash` would write
    /// now), or why it cannot be used: not a hash this module could have
    /// written, absurd costs, or a pepper key not in the ring.
    fn check_stored(&self, phc: &str) -> Result<bool, &'static str> {
        let stored = PasswordHash::new(phc).map_err(|_| "malformed")?;
        if stored.salt.is_none() || stored.hash.is_none() {
            return Err("malformed");
        }
        let algorithm = Algorithm::try_from(stored.algorithm).map_err(|_| "malformed")?;
        let stored_params = Params::try_from(&stored).map_err(|_| "malformed")?;
        let current = &self.inner.params;
        // The caps never refuse what the current parameters themselves
        // write; the last one bounds the three together (1 GiB with 64
        // passes would be within each cap alone).
        if stored_params.m_cost() > MAX_STORED_MEMORY_KIB.max(current.m_cost())
            || stored_params.t_cost() > MAX_STORED_ITERATIONS.max(current.t_cost())
            || stored_params.p_cost() > MAX_STORED_PARALLELISM.max(current.p_cost())
            || work(&stored_params) > MAX_STORED_WORK.max(8 * work(current))
        {
            return Err("costs_out_of_range");
        }
        let pepper = pepper_id(&stored_params).map_err(|_| "malformed_keyid")?;
        if let Some(id) = pepper {
            if !self.inner.pepper.as_ref().is_some_and(|p| p.contains(id)) {
                return Err("pepper_key_missing");
            }
        }
        // Stale: no pepper or an older one while a key is current. A hash
        // under a newer key (ids grow with each rotation) was written by a
        // process already at the next rollout step: left alone, so two
        // steps of a rolling restart do not re-hash the same accounts to
        // and fro.
        let current_pepper = self.inner.pepper.as_ref().and_then(PepperKeys::current_id);
        let older_pepper = match (pepper, current_pepper) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(stored), Some(current)) => stored < current,
        };
        Ok(algorithm != Algorithm::Argon2id
            || older_pepper
            || stored.version != Some(Version::V0x13.into())
            || !same_costs(&stored_params, current))
    }

    /// Runs other CPU work of the password pipeline (the strength estimate
    /// of a new password) on a hashing thread, under the same bound as the
    /// hashes: a flood of sign-ups cannot occupy more cores than
    /// `PASSWORD_HASH_CONCURRENCY`, nor stall an async worker.
    pub async fn on_hashing_thread<T, F>(&self, work: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run(move |_memory| Ok(work())).await
    }

    /// Runs `work` on a hashing thread once a slot is free. The permit moves
    /// into the job, so a caller that gives up (client gone) still counts
    /// until the CPU work really ends; there are as many threads as slots,
    /// so a job never waits for a thread.
    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Memory) -> Result<T, HashError> + Send + 'static,
    {
        // Awaiting the answer needs a runtime; say so rather than hang.
        tokio::runtime::Handle::try_current()
            .map_err(|e| HashError::Internal(format!("no tokio runtime: {e}")))?;
        let waited = std::time::Instant::now();
        let permit = self.acquire().await?;
        metrics::histogram!("password_hash_wait_duration_seconds")
            .record(waited.elapsed().as_secs_f64());
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let result = work(memory);
            // The slot is free before the caller hears the answer.
            drop(permit);
            let _ = answer.send(result);
        });
        self.inner
            .jobs
            .send(job)
            .map_err(|_| HashError::Internal("hashing threads are gone".into()))?;
        answered
            .await
            .map_err(|_| HashError::Internal("hashing job failed".into()))?
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

/// Which pepper key a stored hash names, as verification reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PepperUse {
    /// No `keyid`: written without a pepper.
    None,
    Key(u32),
    /// Not a hash, or a `keyid` that is not a key id.
    Unreadable,
}

pub fn pepper_use(phc: &str) -> PepperUse {
    PasswordHash::new(phc)
        .ok()
        .and_then(|hash| Params::try_from(&hash).ok())
        .and_then(|params| pepper_id(&params).ok())
        .map_or(PepperUse::Unreadable, |id| {
            id.map_or(PepperUse::None, PepperUse::Key)
        })
}

/// The `keys status` lines for the pepper ring: how many password hashes
/// each pepper key (or none) made, and whether an older key may leave.
/// `usage`: [`super::db::password_hashes_by_pepper`].
pub fn pepper_report(pepper: Option<&PepperKeys>, usage: &[(PepperUse, i64)]) -> Vec<String> {
    let current = pepper.and_then(PepperKeys::current_id);
    let mut lines = vec![match pepper {
        Some(p) => format!(
            "password pepper keys (PASSWORD_PEPPER_KEYS): current {}, in the ring {:?}",
            current.map_or_else(|| "none (keys staged only)".to_owned(), |id| id.to_string()),
            p.ids()
        ),
        None => "password pepper keys (PASSWORD_PEPPER_KEYS): not set".to_owned(),
    }];
    let known = |id: u32| pepper.is_some_and(|p| p.contains(id));
    for (used, hashes) in usage {
        let (which, note) = match *used {
            PepperUse::None => (
                "no pepper".to_owned(),
                if current.is_none() {
                    "current".to_owned()
                } else {
                    "no pepper: re-hashed with the current key at each one's next sign-in"
                        .to_owned()
                },
            ),
            PepperUse::Unreadable => (
                "unreadable".to_owned(),
                "not a hash this service can read: these accounts cannot sign in".to_owned(),
            ),
            PepperUse::Key(id) => (
                format!("pepper key {id}"),
                if Some(id) == current {
                    "current".to_owned()
                } else if !known(id) {
                    "key NOT in PASSWORD_PEPPER_KEYS: these accounts cannot sign in until they reset their password".to_owned()
                } else if current.is_none_or(|c| id > c) {
                    "a key that is not current (staged, or current before a rollback): left as is"
                        .to_owned()
                } else {
                    "older: re-hashed with the current key at each one's next sign-in".to_owned()
                },
            ),
        };
        lines.push(format!(
            "  users.password_hash: {which}: {hashes} hashes ({note})"
        ));
    }
    for id in pepper.map(PepperKeys::ids).unwrap_or_default() {
        if Some(id) == current {
            continue;
        }
        let left: i64 = usage
            .iter()
            .filter(|(used, _)| *used == PepperUse::Key(id))
            .map(|(_, n)| n)
            .sum();
        lines.push(if left == 0 {
            format!("  pepper key {id}: no hash left under it; it may leave PASSWORD_PEPPER_KEYS")
        } else {
            format!(
                "  pepper key {id}: {left} hashes still under it; keep it (removing it makes those accounts reset their password)"
            )
        });
    }
    lines
}

/// `password_hash_duration_seconds`: the CPU time of one hash or check on
/// its thread (filler included, the wait for a slot not): with
/// PASSWORD_HASH_CONCURRENCY it bounds the sign-ins per second one process
/// can take (scripts/bench reads it).
fn record_hash_time(started: std::time::Instant) {
    metrics::histogram!("password_hash_duration_seconds").record(started.elapsed().as_secs_f64());
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

impl Inner {
    /// Counts an unusable stored hash and logs it at most once a minute.
    fn unusable(&self, reason: &'static str) {
        metrics::counter!("password_hash_unusable_total", "reason" => reason).increment(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_unusable_log.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .last_unusable_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                reason,
                "a stored password hash cannot be used (answered as a wrong password); see password_hash_unusable_total and `keys status`"
            );
        }
    }

    /// An argon2id instance with `params` and the secret of pepper key `id`.
    fn argon2(&self, id: Option<u32>, params: Params) -> Result<Argon2<'_>, HashError> {
        self.argon2_as(id, Algorithm::Argon2id, Version::V0x13, params)
    }

    /// [`Inner::argon2`] with a stored hash's algorithm and version.
    fn argon2_as(
        &self,
        id: Option<u32>,
        algorithm: Algorithm,
        version: Version,
        params: Params,
    ) -> Result<Argon2<'_>, HashError> {
        match id {
            None => Ok(Argon2::new(algorithm, version, params)),
            Some(id) => {
                let key = self
                    .pepper
                    .as_ref()
                    .and_then(|p| p.get(id))
                    .ok_or_else(|| {
                        HashError::Internal(format!(
                            "pepper key {id} is not in PASSWORD_PEPPER_KEYS"
                        ))
                    })?;
                Argon2::new_with_secret(key.expose(), algorithm, version, params)
                    .map_err(|e| HashError::Internal(format!("argon2: {e}")))
            }
        }
    }

    /// A new hash with the current parameters and pepper and a fresh salt.
    fn hash_blocking(&self, password: &[u8], memory: &mut Memory) -> Result<String, HashError> {
        let mut salt = [0u8; SALT_BYTES];
        fill_random(&mut salt)?;
        let argon2 = self.argon2(
            self.pepper.as_ref().and_then(PepperKeys::current_id),
            self.params.clone(),
        )?;
        let mut out = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
        memory.hash(&argon2, password, &salt, out.as_mut())?;
        self.count(&self.params);
        let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Internal(e.to_string()))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: (&self.params).try_into().map_err(malformed)?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(out.as_ref()).map_err(malformed)?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` gives the stored output, with the algorithm,
    /// version, parameters and salt in `parsed` and the secret of the
    /// pepper key its `keyid` names (argon2's own `verify_password`, but in
    /// this thread's memory instead of a fresh allocation).
    fn matches(
        &self,
        password: &[u8],
        parsed: &PasswordHash<'_>,
        stored: &Params,
        memory: &mut Memory,
    ) -> Result<bool, HashError> {
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(malformed)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(|e| HashError::Internal(format!("malformed stored password hash: {e}")))?
            .unwrap_or_default();
        let expected = parsed
            .hash
            .ok_or_else(|| HashError::Internal("stored hash has no output".into()))?;
        let salt = parsed
            .salt
            .ok_or_else(|| HashError::Internal("stored hash has no salt".into()))?;
        let mut salt_bytes = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_bytes).map_err(malformed)?;
        let argon2 = self.argon2_as(pepper_id(stored)?, algorithm, version, stored.clone())?;
        let mut out = Zeroizing::new(vec![0u8; expected.len()]);
        memory.hash(&argon2, password, salt, out.as_mut())?;
        // `Output`'s equality is constant-time.
        Ok(Output::new(out.as_ref()).map_err(malformed)? == expected)
    }

    fn count(&self, params: &Params) {
        self.work_blocks.fetch_add(work(params), Ordering::Relaxed);
    }

    /// After checking a hash cheaper than the current parameters, spends the
    /// difference on a throw-away argon2 run (see the module comment), so
    /// the call costs what checking a current hash (or the dummy) costs.
    fn fill_shortfall(&self, stored: &Params, memory: &mut Memory) -> Result<(), HashError> {
        let Some(filler) = filler(
            work(&self.params).saturating_sub(work(stored)),
            self.params.m_cost(),
        ) else {
            return Ok(());
        };
        let mut output = [0u8; 32];
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, filler.clone());
        memory.hash(&argon2, &[0u8; 32], &[0u8; SALT_BYTES], &mut output)?;
        self.count(&filler);
        Ok(())
    }
}

/// One hashing thread's argon2 memory: allocated on the thread's first
/// hash at the current parameters' size and reused for every later one, so
/// hashing holds `threads × ARGON2_MEMORY_KIB` however many sign-ins come
/// (a fresh 19 MiB allocation per hash let glibc keep hundreds of MiB in
/// its arenas under a login flood, and faulted pages in every time). Wiped
/// after every hash: its blocks would let whoever reads them test password
/// guesses cheaply. A stored hash asking for more memory than the current
/// parameters (bounded by the caps above) gets a temporary buffer of its
/// own, wiped and freed after.
pub struct Memory {
    blocks: Vec<Block>,
    standing: usize,
}

impl Memory {
    fn new(standing: usize) -> Self {
        Self {
            blocks: Vec::new(),
            standing,
        }
    }

    fn hash(
        &mut self,
        argon2: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), HashError> {
        let need = argon2.params().block_count();
        let argon2_error = |e: argon2::Error| HashError::Internal(format!("argon2: {e}"));
        if need > self.standing {
            let mut own = vec![Block::new(); need];
            let done = argon2.hash_password_into_with_memory(password, salt, out, &mut own[..]);
            wipe(&mut own);
            return done.map_err(argon2_error);
        }
        if self.blocks.len() < self.standing {
            // Once per thread; exact size, so it never grows (or moves) later.
            self.blocks = vec![Block::new(); self.standing];
        }
        let blocks = &mut self.blocks[..need];
        let done = argon2.hash_password_into_with_memory(password, salt, out, &mut *blocks);
        wipe(blocks);
        done.map_err(argon2_error)
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        wipe(&mut self.blocks);
    }
}

fn wipe(blocks: &mut [Block]) {
    blocks.iter_mut().for_each(Zeroize::zeroize);
}

/// The hashing threads: one per slot, each with its own [`Memory`], taking
/// jobs until every [`PasswordHasher`] clone is gone.
fn spawn_threads(
    count: usize,
    standing: usize,
    queue: std::sync::mpsc::Receiver<Job>,
    nice: i32,
) -> Result<(), HashError> {
    let queue = Arc::new(std::sync::Mutex::new(queue));
    for n in 0..count {
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name(format!("password-hash-{n}"))
            .spawn(move || {
                lower_priority(nice);
                let mut memory = Memory::new(standing);
                loop {
                    let job = {
                        let queue = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        queue.recv()
                    };
                    let Ok(job) = job else { return };
                    // A panicking job (none is expected) drops its answer
                    // channel, which its caller reports; the thread lives on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job(&mut memory);
                    }));
                }
            })
            .map_err(|e| HashError::Internal(format!("starting a hashing thread: {e}")))?;
    }
    Ok(())
}

/// Lowers the calling thread's priority by `nice` steps (Linux: the nice
/// value is per thread). A failure is logged, never fatal: hashing at the
/// process's priority is slower for reads, not wrong.
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    let tid = rustix::thread::gettid();
    let lowered = rustix::process::getpriority_process(Some(tid))
        .and_then(|now| rustix::process::setpriority_process(Some(tid), (now + nice).min(19)));
    if let Err(e) = lowered {
        tracing::warn!(error = %e, nice, "could not lower a password-hashing thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) {}

/// The same m, t, p and output length (equal work is not enough: 12 MiB
/// with 3 passes and 9 MiB with 4 fill as many blocks at another speed).
fn same_costs(a: &Params, b: &Params) -> bool {
    a.m_cost() == b.m_cost()
        && a.t_cost() == b.t_cost()
        && a.p_cost() == b.p_cost()
        && a.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)
            == b.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)
}

/// Memory blocks argon2 fills, times its passes: its cost.
fn work(params: &Params) -> u64 {
    params.block_count() as u64 * u64::from(params.t_cost())
}

/// One-lane parameters whose work is `shortfall` blocks, to within four
/// block per pass, using at most `max_kib` of memory (the current
/// parameters' memory, so the filler never needs more than a real hash).
/// `None` when the shortfall is below argon2's smallest run.
fn filler(shortfall: u64, max_kib: u32) -> Option<Params> {
    // One lane: memory is rounded down to a multiple of 4 blocks (the
    // sync points), and at least 8.
    let max_kib = u64::from(max_kib.max(8)) / 4 * 4;
    if shortfall < 8 || max_kib < 8 {
        return None;
    }
    let mut passes = shortfall.div_ceil(max_kib);
    let mut memory = shortfall / passes / 4 * 4;
    if memory < 8 {
        // Only with a tiny memory cap: the smallest run, repeated.
        (memory, passes) = (8, shortfall / 8);
    }
    Params::new(
        u32::try_from(memory).ok()?,
        u32::try_from(passes).ok()?,
        1,
        Some(32),
    )
    .ok()
}

/// A pepper key id as argon2's `keyid`: 4 bytes, big-endian.
fn key_id(id: u32) -> Result<KeyId, HashError> {
    KeyId::new(&id.to_be_bytes()).map_err(|e| HashError::Internal(format!("pepper key id: {e}")))
}

/// The pepper key a stored hash names, if any.
fn pepper_id(params: &Params) -> Result<Option<u32>, HashError> {
    match params.keyid() {
        [] => Ok(None),
        bytes => <[u8; 4]>::try_from(bytes)
            .map(|b| Some(u32::from_be_bytes(b)))
            .map_err(|_| HashError::Internal("stored hash has a malformed keyid".into())),
    }
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
