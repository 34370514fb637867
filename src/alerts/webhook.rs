//! Alert webhook delivery (`ALERT_WEBHOOK_URL`): JSON POSTs with retry and
//! exponential back-off, leased like the mail outbox so several processes
//! never send one alert twice. A receiver that is down receives every
//! alert once it recovers, for up to eight attempts.
//!
//! Redirects are not followed (a 3xx counts as a failed attempt, so the
//! alert cannot be steered to another host) and at most
//! [`MAX_RESPONSE_BYTES`] of the receiver's answer is read (see
//! [`crate::outbound`]).

use crate::{
    background::{Next, Periodic, Stop},
    state::AppState,
};
use chrono::Duration;
use serde_json::json;

pub const MAX_ATTEMPTS: i32 = 8;
const LEASE: Duration = Duration::seconds(60);

/// The most of a receiver's response body that is read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(crate::outbound::client(std::time::Duration::from_secs(5))?)
}

/// POSTs one alert; delivered means a 2xx answer. The body is read (up to
/// the cap) so the connection can be reused; an oversized one is dropped
/// unread and logged, and does not undo a 2xx.
async fn post(client: &reqwest::Client, url: url::Url, body: &serde_json::Value) -> bool {
    let Ok(response) = client.post(url).json(body).send().await else {
        return false;
    };
    let delivered = response.status().is_success();
    if let Err(e) = crate::outbound::read_capped(response, MAX_RESPONSE_BYTES).await {
        tracing::warn!(error = %e, "alert webhook response not read");
    }
    delivered
}

/// Sends every alert that is due; returns how many were attempted.
pub async fn deliver_due(state: &AppState, client: &reqwest::Client) -> anyhow::Result<usize> {
    let Some(url) = state.config.alert_webhook_url.clone() else {
        return Ok(0);
    };
    let now = state.clock.now();
    let due = sqlx::query!(
        r#"UPDATE security_alerts SET webhook_locked_until = $2, webhook_attempts = webhook_attempts + 1
           WHERE security_alert_id IN (
               SELECT security_alert_id FROM security_alerts
               WHERE webhook_status = 'pending' AND webhook_next_at <= $1
                 AND (webhook_locked_until IS NULL OR webhook_locked_until < $1)
               ORDER BY webhook_next_at LIMIT 20
               FOR UPDATE SKIP LOCKED)
           RETURNING security_alert_id, created_at, rule, severity, user_id, host(ip) AS ip, details,
                     webhook_attempts"#,
        now,
        now + LEASE,
    )
    .fetch_all(&state.db)
    .await?;
    let count = due.len();
    for alert in due {
        let body = json!({
            "id": alert.security_alert_id,
            "created_at": crate::clock::rfc3339_millis(&alert.created_at),
            "rule": alert.rule,
            "severity": alert.severity,
            "user_id": alert.user_id,
            "ip": alert.ip,
            "details": alert.details,
        });
        let sent = post(client, url.clone(), &body).await;
        let now = state.clock.now();
        let give_up = !sent && alert.webhook_attempts >= MAX_ATTEMPTS;
        let status = if sent {
            "sent"
        } else if give_up {
            "failed"
        } else {
            "pending"
        };
        sqlx::query!(
            r#"UPDATE security_alerts SET webhook_status = $2, webhook_next_at = $3, webhook_locked_until = NULL
               WHERE security_alert_id = $1"#,
            alert.security_alert_id,
            status,
            now + crate::mail::sender::backoff(alert.webhook_attempts),
        )
        .execute(&state.db)
        .await?;
        metrics::counter!("alert_webhook_deliveries_total", "outcome" => status).increment(1);
    }
    Ok(count)
}

/// Delivers alerts every few seconds until `stop`, at the same cadence as
/// the mail outbox (`MAIL_POLL_SECS`).
pub async fn run(state: AppState, stop: Stop) {
    let Ok(client) = client() else {
        tracing::error!(
            task = "alert webhook",
            "could not build the alert webhook client"
        );
        return;
    };
    Periodic::new("alert webhook", state.config.mail_poll_interval)
        .run(stop, move || {
            let (state, client) = (state.clone(), client.clone());
            async move {
                deliver_due(&state, &client).await?;
                Ok::<_, anyhow::Error>(Next::Wait)
            }
        })
        .await
}
