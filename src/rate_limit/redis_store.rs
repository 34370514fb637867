//! The shared store: the same GCRA and penalty arithmetic as `gcra.rs`, run
//! atomically inside Redis by a Lua script, so every API process enforces
//! one combined limit. The caller passes its clock's time, so all
//! processes (and tests with a manual clock) agree on "now".

use super::gcra::Quota;
use super::gcra::{Decision, MAX_BLOCK_MS, QUIET_MS};
use redis::{aio::ConnectionManager, Script};
use std::time::Duration;

/// KEYS[1] = key; ARGV = now_ms, limit, window_ms, quiet_ms, max_block_ms, mode
/// (1 = check, 0 = peek). Returns {allowed, remaining, reset_ms, retry_ms}.
const SCRIPT: &str = r#"
local now, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local quiet, max_block, mode = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local t = math.max(math.floor(window / limit), 1)
local s = redis.call('HMGET', KEYS[1], 'tat', 'v', 'lv', 'bu')
local tat, v, lv, bu = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0, tonumber(s[4]) or 0
if bu > now then
  return {0, 0, bu - now, bu - now}
end
local base = math.max(tat, now)
local new_tat = base + t
if new_tat - now > window then
  if mode == 0 then return {0, 0, base - now, math.max(new_tat - now - window, 1)} end
  if now - lv > quiet then v = 0 end
  v = v + 1
  local natural = math.max(new_tat - now - window, 1)
  local block = natural
  if v > 1 then
    block = math.min(math.max(window * (2 ^ math.min(v - 2, 20)), natural), max_block)
  end
  redis.call('HSET', KEYS[1], 'v', v, 'lv', now, 'bu', now + block)
  redis.call('PEXPIRE', KEYS[1], math.max(block, quiet, base - now) + 1000)
  return {0, 0, math.max(block, base - now), block}
end
if mode == 0 then return {1, math.floor((window - (base - now)) / t), base - now, 0} end
redis.call('HSET', KEYS[1], 'tat', new_tat)
redis.call('PEXPIRE', KEYS[1], math.max(new_tat - now, quiet) + 1000)
return {1, math.floor((window - (new_tat - now)) / t), new_tat - now, 0}
"#;

/// Connects lazily and reconnects after failures, at most once a second,
/// so a Redis outage costs each request one fast error rather than a
/// connection attempt, and the service starts even while Redis is down.
pub struct RedisStore {
    prefix: String,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    last_failure: std::sync::Mutex<Option<std::time::Instant>>,
    script: Script,
}

fn unavailable() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "rate-limit store unavailable"))
}

fn secs(ms: i64) -> u64 {
    (ms.max(0) as u64).div_ceil(1000)
}

impl RedisStore {
    /// Checks the URL only; the connection is made on first use.
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            prefix: prefix.to_owned(),
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
            last_failure: std::sync::Mutex::new(None),
            script: Script::new(SCRIPT),
        })
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let recently_failed = self
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
        if recently_failed {
            return Err(unavailable());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            Duration::from_secs(2),
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| unavailable())
        .and_then(|r| r);
        match made {
            Ok(conn) => {
                *slot = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                *self
                    .last_failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(std::time::Instant::now());
                Err(e)
            }
        }
    }

    async fn run(
        &self,
        key: &str,
        now_ms: i64,
        quota: Quota,
        mode: i64,
    ) -> redis::RedisResult<[i64; 4]> {
        let mut conn = self.connection().await?;
        let mut invocation = self.script.key(format!("{}:rl:{key}", self.prefix));
        invocation
            .arg(now_ms)
            .arg(quota.limit)
            .arg(quota.window_ms)
            .arg(QUIET_MS)
            .arg(MAX_BLOCK_MS)
            .arg(mode);
        let call = invocation.invoke_async::<Vec<i64>>(&mut conn);
        let v = tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .map_err(|_| unavailable())??;
        Ok([
            v.first().copied().unwrap_or(0),
            v.get(1).copied().unwrap_or(0),
            v.get(2).copied().unwrap_or(0),
            v.get(3).copied().unwrap_or(0),
        ])
    }

    pub async fn check(
        &self,
        key: &str,
        now_ms: i64,
        quota: Quota,
    ) -> redis::RedisResult<Decision> {
        let [allowed, remaining, reset_ms, retry_ms] = self.run(key, now_ms, quota, 1).await?;
        Ok(Decision {
            allowed: allowed == 1,
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            reset_secs: secs(reset_ms),
            retry_after_secs: if allowed == 1 {
                0
            } else {
                secs(retry_ms).max(1)
            },
        })
    }

    pub async fn peek(
        &self,
        key: &str,
        now_ms: i64,
        quota: Quota,
    ) -> redis::RedisResult<Option<u64>> {
        let [allowed, _, _, retry_ms] = self.run(key, now_ms, quota, 0).await?;
        Ok((allowed == 0).then(|| secs(retry_ms).max(1)))
    }
}
