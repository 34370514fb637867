//! Rate limiting: per endpoint class, per client IP, per account and per
//! (account, IP), with progressive penalties and clear 429s.
//!
//! * `policy.rs`: the classes and their default quotas; every quota can be
//!   overridden (`RATE_LIMIT_*`). Each route names its class where it is
//!   registered (`ApiRouter::route`).
//! * `gcra.rs`: the algorithm and the penalty rule, pure and property-tested.
//! * `memory.rs` / `redis_store.rs`: where the state lives. With
//!   `REDIS_URL` set, every process shares one limit through Redis.
//! * `layer.rs`: the middleware (per IP, or per user for authenticated
//!   reads and writes), the class of each routed request read from the
//!   route table (`RouteClasses`), and the IETF `RateLimit-Policy` /
//!   `RateLimit` headers.
//! * `tiers.rs`: the tier in force for a user (tiers may expire), the one
//!   function that changes it, and the background pass that ends expired
//!   tiers; `refusals.rs`: the per-account 429 counts staff see when they
//!   decide a rate-limit request.
//!
//! When Redis is unreachable, credential classes fail closed (503
//! `rate_limit_unavailable` with `Retry-After`), because unlimited guessing
//! is worse than a short outage; the other classes fall back to the
//! in-process store. Every Redis call has a short deadline and a circuit
//! breaker (`breaker.rs`, driven by `redis_store.rs`) stops calling a Redis
//! that is down or hung, so the degraded path costs a request nothing.
//! The outage is logged once when it starts and once when it ends, and
//! each degraded request is counted (`rate_limit_store_errors_total`),
//! never logged.

pub mod breaker;
pub mod gcra;
pub mod layer;
pub mod memory;
pub mod policy;
pub mod redis_store;
pub mod refusals;
pub mod tiers;

use crate::{config::RedisFaults, error::ApiError};
use gcra::{Decision, Quota};
use memory::MemoryStore;
use policy::Class;
use redis_store::RedisStore;
use std::collections::HashMap;

pub struct Limiter {
    memory: MemoryStore,
    redis: Option<RedisStore>,
    quotas: HashMap<Class, Quota>,
}

fn store_down() -> ApiError {
    ApiError::Unavailable {
        code: "rate_limit_unavailable",
        retry_after_secs: 5,
    }
}

impl Limiter {
    pub fn new(
        quotas: HashMap<Class, Quota>,
        redis_url: Option<&str>,
        redis_prefix: &str,
        redis_faults: RedisFaults,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            memory: MemoryStore::default(),
            redis: redis_url
                .map(|u| RedisStore::new(u, redis_prefix, redis_faults))
                .transpose()?,
            quotas,
        })
    }

    /// With `REDIS_URL` set, whether Redis is considered unavailable (the
    /// circuit breaker is open); `None` without Redis.
    pub fn redis_unavailable(&self) -> Option<bool> {
        self.redis.as_ref().map(RedisStore::is_open)
    }

    /// With `REDIS_URL` set, records `key` once in Redis for `ttl_ms`
    /// (see [`RedisStore::set_once`]): `Some(Ok(true))` the first time,
    /// `Some(Ok(false))` after; `None` without Redis. Failures are not
    /// degraded here: the caller decides (a replay cache fails closed).
    pub async fn redis_set_once(&self, key: &str, ttl_ms: u64) -> Option<redis::RedisResult<bool>> {
        match &self.redis {
            Some(redis) => Some(redis.set_once(key, ttl_ms).await),
            None => None,
        }
    }

    pub fn quota(&self, class: Class) -> Quota {
        self.quotas
            .get(&class)
            .copied()
            .unwrap_or_else(|| class.default_quota())
    }

    /// Counts one request of `class` for `subject` (an IP, user or account
    /// key) at `now_us`.
    pub async fn check(
        &self,
        class: Class,
        subject: &str,
        now_us: i64,
    ) -> Result<Decision, ApiError> {
        self.check_with(class, self.quota(class), subject, now_us)
            .await
    }

    /// As [`Self::check`], with an explicit quota (a user's tier).
    pub async fn check_with(
        &self,
        class: Class,
        quota: Quota,
        subject: &str,
        now_us: i64,
    ) -> Result<Decision, ApiError> {
        let key = format!("{}:{subject}", class.name());
        let Some(redis) = &self.redis else {
            return Ok(self.memory.check(&key, now_us, quota));
        };
        match redis.check(&key, now_us, quota).await {
            Ok(d) => Ok(d),
            Err(_) => self
                .degraded(class)
                .map(|()| self.memory.check(&key, now_us, quota)),
        }
    }

    /// Whether `subject` is currently refused in `class`, without counting.
    pub async fn blocked(
        &self,
        class: Class,
        subject: &str,
        now_us: i64,
    ) -> Result<Option<u64>, ApiError> {
        let quota = self.quota(class);
        let key = format!("{}:{subject}", class.name());
        let Some(redis) = &self.redis else {
            return Ok(self.memory.peek(&key, now_us, quota));
        };
        match redis.peek(&key, now_us, quota).await {
            Ok(d) => Ok(d),
            Err(_) => self
                .degraded(class)
                .map(|()| self.memory.peek(&key, now_us, quota)),
        }
    }

    /// The degraded path: counted, not logged (the store logs the outage
    /// once when it starts and once when it ends).
    fn degraded(&self, class: Class) -> Result<(), ApiError> {
        let closed = class.fail_closed();
        metrics::counter!("rate_limit_store_errors_total", "class" => class.name(), "fail_closed" => closed.to_string()).increment(1);
        if closed {
            Err(store_down())
        } else {
            Ok(())
        }
    }

    /// Refuses with 429 unless `decision` allowed the request.
    pub fn enforce(class: Class, decision: Decision) -> Result<(), ApiError> {
        if decision.allowed {
            return Ok(());
        }
        metrics::counter!("rate_limit_refusals_total", "class" => class.name()).increment(1);
        Err(ApiError::RateLimited {
            retry_after_secs: decision.retry_after_secs,
        })
    }
}
