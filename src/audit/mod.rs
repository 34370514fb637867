//! The audit trail: `record()` writes one event in the caller's transaction.
//!
//! Writing in the same transaction as the change is the point: an audited
//! action and its audit row commit or roll back together, so the trail
//! cannot miss an action that happened or show one that did not. The table
//! is append-only (database triggers refuse UPDATE, DELETE and TRUNCATE,
//! and the service's role holds no such privilege on it; see
//! `retention.rs` and migration 0014 for the only exceptions).
//!
//! Details are JSON chosen by the caller and must never hold a secret; as a
//! second line of defence, values under secret-sounding keys are replaced
//! by `"[redacted]"` before they are stored.

pub mod chain;
pub mod events;
pub mod retention;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{types::ipnetwork::IpNetwork, PgConnection};
use std::net::IpAddr;
use uuid::Uuid;

/// What an audit row records of the calling client. The http layer's
/// `ClientInfo` implements it, so this module names no http type.
pub trait AuditClient {
    fn ip(&self) -> IpAddr;
    fn user_agent(&self) -> Option<&str>;
    /// Empty when there is none.
    fn request_id(&self) -> &str;
}

/// How the audited attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Refused by policy (authorization, step-up, lock-out).
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }
}

/// One audit event, built with the chained setters.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub event_type: &'static str,
    pub outcome: Outcome,
    pub user_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub details: Map<String, Value>,
}

impl AuditEvent {
    pub fn new(event_type: &'static str, outcome: Outcome) -> Self {
        Self {
            event_type,
            outcome,
            user_id: None,
            actor_id: None,
            session_id: None,
            ip: None,
            user_agent: None,
            request_id: None,
            details: Map::new(),
        }
    }

    /// The user the event is about.
    pub fn user(mut self, id: Uuid) -> Self {
        self.user_id = Some(id);
        self
    }

    /// Who acted, when it is not the user themself (an administrator).
    pub fn actor(mut self, id: Uuid) -> Self {
        self.actor_id = Some(id);
        self
    }

    pub fn session(mut self, id: Uuid) -> Self {
        self.session_id = Some(id);
        self
    }

    /// IP, user agent and request id of the calling client.
    pub fn client(mut self, client: &impl AuditClient) -> Self {
        self.ip = Some(client.ip());
        self.user_agent = client.user_agent().map(str::to_owned);
        self.request_id = Some(client.request_id().to_owned()).filter(|r| !r.is_empty());
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Keys whose values are never stored, whatever a caller passes.
const SECRET_KEYS: &[&str] = &["password", "token", "secret", "code", "key", "otp"];

fn redact(details: &Map<String, Value>) -> Map<String, Value> {
    details
        .iter()
        .map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            // Machine-readable outcome codes are not secrets.
            let exempt = matches!(lower.as_str(), "reason" | "reason_code" | "error_code")
                || lower.ends_with("_reason");
            let secret = !exempt && SECRET_KEYS.iter().any(|s| lower.contains(s));
            let v = match v {
                _ if secret => Value::String("[redacted]".into()),
                Value::Object(inner) => Value::Object(redact(inner)),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// Writes `event` at time `at` using the caller's connection or transaction.
pub async fn record(
    conn: &mut PgConnection,
    at: DateTime<Utc>,
    event: &AuditEvent,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let details = Value::Object(redact(&event.details));
    let ip = event.ip.map(IpNetwork::from);
    sqlx::query!(
        r#"INSERT INTO audit_events
            (audit_event_id, occurred_at, event_type, outcome, user_id, actor_id,
             session_id, ip, user_agent, request_id, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"#,
        id,
        at,
        event.event_type,
        event.outcome.as_str(),
        event.user_id,
        event.actor_id,
        event.session_id,
        ip,
        event.user_agent.as_deref(),
        event.request_id.as_deref(),
        details,
    )
    .execute(conn)
    .await?;
    metrics::counter!("audit_events_total", "type" => event.event_type, "outcome" => event.outcome.as_str()).increment(1);
    Ok(id)
}

/// The background pass: seals new rows every few seconds, samples the
/// resource gauges and applies retention hourly, until `stop`.
pub async fn maintenance(state: crate::state::AppState, stop: crate::background::Stop) {
    use std::time::{Duration, Instant};
    let mut last_retention: Option<Instant> = None;
    crate::background::Periodic::new("audit maintenance", Duration::from_secs(10))
        .run(stop, move || {
            let retention_due =
                last_retention.is_none_or(|t| t.elapsed() > Duration::from_secs(3600));
            if retention_due {
                last_retention = Some(Instant::now());
            }
            let state = state.clone();
            async move {
                // One step failing does not skip the others; the pass
                // reports every failure at its end.
                let mut failed = Vec::new();
                // Keep sealing while full batches come back, so a burst is caught up at once.
                loop {
                    match chain::seal_pending(&state.db, 5.0).await {
                        Ok(n) if n as i64 == chain::BATCH => continue,
                        Ok(_) => break,
                        Err(e) => {
                            failed.push(format!("sealing: {e:#}"));
                            break;
                        }
                    }
                }
                // Gauges of shared resources, sampled on the same cadence.
                metrics::gauge!("db_pool_connections").set(f64::from(state.db.size()));
                metrics::gauge!("db_pool_idle_connections").set(state.db.num_idle() as f64);
                metrics::gauge!("password_hash_queue_depth").set(state.hasher.queue_depth() as f64);
                metrics::gauge!("password_hash_in_flight").set(state.hasher.in_flight() as f64);
                if retention_due {
                    if let Err(e) = retention::purge(&state.db).await {
                        failed.push(format!("retention: {e:#}"));
                    }
                }
                if failed.is_empty() {
                    Ok(crate::background::Next::Wait)
                } else {
                    Err(anyhow::anyhow!("{}", failed.join("; ")))
                }
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_sounding_details_are_redacted_even_when_nested() {
        let event = AuditEvent::new("auth.login", Outcome::Failure)
            .detail("reason", "invalid_credentials")
            .detail("reason_code", "refresh_token_reused")
            .detail("password", "hunter2hunter2")
            .detail("nested", json!({"refresh_token": "abc", "device": "Pixel"}));
        let stored = Value::Object(redact(&event.details)).to_string();
        assert!(!stored.contains("hunter2"));
        assert!(!stored.contains("abc"));
        assert!(stored.contains("invalid_credentials"));
        assert!(stored.contains("refresh_token_reused"));
        assert!(stored.contains("Pixel"));
    }
}
