//! The shared store: the same GCRA and penalty arithmetic as `gcra.rs`, run
//! atomically inside Redis by a Lua script, so every API process enforces
//! one combined limit. The caller passes its clock's time, so all
//! processes (and tests with a manual clock) agree on "now".
//!
//! Losing Redis costs a request almost nothing:
//!
//! * every call (connecting included) has a deadline, `REDIS_TIMEOUT_MS`;
//! * a circuit breaker ([`super::breaker`]) opens after
//!   `REDIS_BREAKER_FAILURES` consecutive failures or timeouts. While it is
//!   open no request calls Redis: each gets an immediate error and takes
//!   the degraded path (`super::Limiter`);
//! * one background probe every `REDIS_PROBE_INTERVAL_MS` connects afresh
//!   and sends `PING`; on success the new connection replaces the old one
//!   and the breaker closes, so no request pays for reconnecting;
//! * each change is logged once (`redis unavailable`, `redis available
//!   again`) and exported: `dependency_up{dependency="redis"}` (1 or 0),
//!   `circuit_breaker_open{dependency="redis"}` (1 or 0) and
//!   `circuit_breaker_transitions_total{dependency="redis",to=…}`.

use super::breaker::{Breaker, Change};
use super::gcra::{self, Decision, Quota, MAX_BLOCK_US, QUIET_US};
use crate::config::RedisFaults;
use redis::{aio::ConnectionManager, Script};
use std::sync::{Arc, Weak};

/// KEYS[1] = key; ARGV = now_us, limit, window_us, quiet_us, max_block_us,
/// mode (1 = check, 0 = peek). Returns `{1, used_us, used_frac}` when
/// allowed (peek: `{1, 0, 0}`) and `{0, wait_us, reset_us}` when refused.
///
/// TAT is whole microseconds (`tat`) plus a remainder in units of
/// `1 / limit` µs (`tf`), as in `gcra.rs`: every number is an integer below
/// 2^53, so Lua's doubles hold them exactly.
const SCRIPT: &str = r#"
local now, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local quiet, max_block, mode = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local r = window % limit
local q = (window - r) / limit
local s = redis.call('HMGET', KEYS[1], 'tat', 'tf', 'v', 'lv', 'bu')
local tat, tf = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local v, lv, bu = tonumber(s[3]) or 0, tonumber(s[4]) or 0, tonumber(s[5]) or 0
if bu > now then
  return {0, bu - now, bu - now}
end
if tf < 0 then tf = 0 end
if tf >= limit then
  local rest = tf % limit
  tat = tat + (tf - rest) / limit
  tf = rest
end
if tat < now then tat, tf = now, 0 end
local nt, nf = tat + q, tf + r
if nf >= limit then nt, nf = nt + 1, nf - limit end
local over = nt - now - window
if nf > 0 then over = over + 1 end
if over > 0 then
  if mode == 0 then return {0, over, 0} end
  if now - lv > quiet then v = 0 end
  v = v + 1
  local block = over
  if v > 1 then
    block = math.min(math.max(window * (2 ^ math.min(v - 2, 20)), over), max_block)
  end
  local reset = tat - now
  if tf > 0 then reset = reset + 1 end
  redis.call('HSET', KEYS[1], 'v', v, 'lv', now, 'bu', now + block)
  redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(block, quiet, reset) / 1000) + 1000)
  return {0, block, reset}
end
if mode == 0 then return {1, 0, 0} end
redis.call('HSET', KEYS[1], 'tat', nt, 'tf', nf)
redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(nt - now + 1, quiet) / 1000) + 1000)
return {1, nt - now, nf}
"#;

/// Why a call did not reach Redis, or Redis did not answer in time.
fn unavailable(why: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, why))
}

const DEPENDENCY: &str = "redis";

/// What the store and its probe share.
struct Shared {
    prefix: String,
    client: redis::Client,
    /// The connection in use (a clone per call, under a read lock, so
    /// requests do not queue for it); replaced by the probe after an outage.
    conn: std::sync::RwLock<Option<ConnectionManager>>,
    /// Held while making the first connection, so only one is made.
    connecting: tokio::sync::Mutex<()>,
    script: Script,
    breaker: Breaker,
    faults: RedisFaults,
}

/// Connects lazily (the service starts while Redis is down); see the
/// module documentation for how failures are contained.
pub struct RedisStore {
    shared: Arc<Shared>,
}

impl Shared {
    fn manager_config(&self) -> redis::aio::ConnectionManagerConfig {
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.faults.timeout))
            .set_response_timeout(Some(self.faults.timeout))
            .set_number_of_retries(1)
    }

    /// A new connection, within the deadline.
    async fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        tokio::time::timeout(
            self.faults.timeout,
            ConnectionManager::new_with_config(self.client.clone(), self.manager_config()),
        )
        .await
        .map_err(|_| unavailable("redis connect timed out"))?
    }

    fn current(&self) -> Option<ConnectionManager> {
        self.conn
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn install(&self, conn: ConnectionManager) {
        *self
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(conn);
    }

    /// The connection in use, made on first use.
    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let _one = self.connecting.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let conn = self.connect().await?;
        self.install(conn.clone());
        metrics::gauge!("dependency_up", "dependency" => DEPENDENCY).set(1.0);
        Ok(conn)
    }

    /// Reports a change of the breaker, once.
    fn report(self: &Arc<Self>, change: Change, error: Option<&redis::RedisError>) {
        let (up, to) = match change {
            Change::Opened => {
                tracing::warn!(
                    error = error.map(tracing::field::display),
                    failures = self.faults.breaker_failures,
                    probe_interval_ms = self.faults.probe_interval.as_millis() as u64,
                    "redis unavailable"
                );
                (0.0, "open")
            }
            Change::Closed => {
                tracing::info!("redis available again");
                (1.0, "closed")
            }
        };
        metrics::gauge!("dependency_up", "dependency" => DEPENDENCY).set(up);
        metrics::gauge!("circuit_breaker_open", "dependency" => DEPENDENCY).set(1.0 - up);
        metrics::counter!("circuit_breaker_transitions_total", "dependency" => DEPENDENCY, "to" => to)
            .increment(1);
        if change == Change::Opened {
            tokio::spawn(probe(Arc::downgrade(self)));
        }
    }

    /// One probe: a fresh connection and a `PING`, within the deadline.
    async fn probe_once(&self) -> redis::RedisResult<ConnectionManager> {
        let mut conn = self.connect().await?;
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        tokio::time::timeout(self.faults.timeout, ping)
            .await
            .map_err(|_| unavailable("redis ping timed out"))??;
        Ok(conn)
    }
}

/// While the breaker is open: one probe per interval until one succeeds;
/// then the probe's connection replaces the old one and the breaker
/// closes. Ends early if the store is dropped.
async fn probe(store: Weak<Shared>) {
    loop {
        let Some(interval) = store.upgrade().map(|s| s.faults.probe_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(shared) = store.upgrade() else {
            return;
        };
        if let Ok(conn) = shared.probe_once().await {
            shared.install(conn);
            if let Some(change) = shared.breaker.on_probe_success() {
                shared.report(change, None);
            }
            return;
        }
    }
}

impl RedisStore {
    /// Checks the URL only; the connection is made on first use.
    pub fn new(url: &str, prefix: &str, faults: RedisFaults) -> anyhow::Result<Self> {
        metrics::gauge!("circuit_breaker_open", "dependency" => DEPENDENCY).set(0.0);
        Ok(Self {
            shared: Arc::new(Shared {
                prefix: prefix.to_owned(),
                client: redis::Client::open(url)?,
                conn: std::sync::RwLock::new(None),
                connecting: tokio::sync::Mutex::new(()),
                script: Script::new(SCRIPT),
                breaker: Breaker::new(faults.breaker_failures),
                faults,
            }),
        })
    }

    /// Whether the breaker is open (requests take the degraded path).
    pub fn is_open(&self) -> bool {
        self.shared.breaker.is_open()
    }

    async fn run(
        &self,
        key: &str,
        now_us: i64,
        quota: Quota,
        mode: i64,
    ) -> redis::RedisResult<[i64; 3]> {
        let shared = &self.shared;
        if shared.breaker.is_open() {
            return Err(unavailable("redis circuit breaker open"));
        }
        let call = async {
            let mut conn = shared.connection().await?;
            let mut invocation = shared.script.key(format!("{}:rl2:{key}", shared.prefix));
            invocation
                .arg(now_us)
                .arg(quota.limit.max(1))
                .arg(gcra::window_us(quota))
                .arg(QUIET_US)
                .arg(MAX_BLOCK_US)
                .arg(mode);
            invocation.invoke_async::<Vec<i64>>(&mut conn).await
        };
        let result = tokio::time::timeout(shared.faults.timeout, call)
            .await
            .map_err(|_| unavailable("redis call timed out"))
            .and_then(|r| r);
        match result {
            Ok(v) => {
                shared.breaker.on_success();
                Ok([
                    v.first().copied().unwrap_or(0),
                    v.get(1).copied().unwrap_or(0),
                    v.get(2).copied().unwrap_or(0),
                ])
            }
            Err(e) => {
                if let Some(change) = shared.breaker.on_failure() {
                    shared.report(change, Some(&e));
                }
                Err(e)
            }
        }
    }

    /// `SET key 1 NX PX ttl_ms` under this store's prefix, with the same
    /// deadline and circuit breaker as the limits: `true` when the key was
    /// new (the first use of a one-time value), `false` when it existed.
    pub async fn set_once(&self, key: &str, ttl_ms: u64) -> redis::RedisResult<bool> {
        let shared = &self.shared;
        if shared.breaker.is_open() {
            return Err(unavailable("redis circuit breaker open"));
        }
        let call = async {
            let mut conn = shared.connection().await?;
            redis::cmd("SET")
                .arg(format!("{}:{key}", shared.prefix))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms.max(1))
                .query_async::<Option<String>>(&mut conn)
                .await
        };
        let result = tokio::time::timeout(shared.faults.timeout, call)
            .await
            .map_err(|_| unavailable("redis call timed out"))
            .and_then(|r| r);
        match result {
            Ok(set) => {
                shared.breaker.on_success();
                Ok(set.is_some())
            }
            Err(e) => {
                if let Some(change) = shared.breaker.on_failure() {
                    shared.report(change, Some(&e));
                }
                Err(e)
            }
        }
    }

    pub async fn check(
        &self,
        key: &str,
        now_us: i64,
        quota: Quota,
    ) -> redis::RedisResult<Decision> {
        let [allowed, a, b] = self.run(key, now_us, quota, 1).await?;
        Ok(if allowed == 1 {
            gcra::admitted(quota, a, b)
        } else {
            gcra::refused(a, b)
        })
    }

    pub async fn peek(
        &self,
        key: &str,
        now_us: i64,
        quota: Quota,
    ) -> redis::RedisResult<Option<u64>> {
        let [allowed, wait_us, _] = self.run(key, now_us, quota, 0).await?;
        Ok((allowed == 0).then(|| gcra::ceil_secs(wait_us).max(1)))
    }
}
