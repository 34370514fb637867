//! Security alerts: what the anomaly rules raise. Every rule lives here:
//! the failed-login spikes and the new country (`rules.rs`), the new
//! device and device drift (`device.rs`), the data-access volume
//! (`access.rs`) and refresh-token reuse (`rules.rs`, called by the
//! rotation that detects it). Each is called where its event happens.
//!
//! Each alert is a `security_alerts` row (written in the caller's
//! transaction when there is one), a WARN log line and a metric labelled
//! by rule; with `ALERT_WEBHOOK_URL` set it is also POSTed as JSON by a
//! background sender with retries (`webhook.rs`). Administrators list and
//! acknowledge alerts through `/v1/admin/alerts`.

pub mod access;
pub mod device;
pub mod routes;
pub mod rules;
pub mod views;
pub mod webhook;

use crate::state::AppState;
use serde_json::{Map, Value};
use sqlx::{types::ipnetwork::IpNetwork, PgConnection};
use std::net::IpAddr;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    FailedLoginsAccount,
    FailedLoginsIp,
    FailedLoginsGlobal,
    RefreshTokenReuse,
    NewDevice,
    NewCountry,
    DeviceDrift,
    DataAccessVolume,
    /// A sign-up or sign-in without an attested device key, under
    /// `ATTESTATION_POLICY=report`.
    AttestationMissing,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Self::FailedLoginsAccount => "failed_logins_account",
            Self::FailedLoginsIp => "failed_logins_ip",
            Self::FailedLoginsGlobal => "failed_logins_global",
            Self::RefreshTokenReuse => "refresh_token_reuse",
            Self::NewDevice => "new_device",
            Self::NewCountry => "new_country",
            Self::DeviceDrift => "device_drift",
            Self::DataAccessVolume => "data_access_volume",
            Self::AttestationMissing => "attestation_missing",
        }
    }

    pub fn severity(self) -> &'static str {
        match self {
            Self::RefreshTokenReuse | Self::FailedLoginsGlobal => "critical",
            Self::FailedLoginsAccount
            | Self::FailedLoginsIp
            | Self::DeviceDrift
            | Self::NewCountry
            | Self::DataAccessVolume
            | Self::AttestationMissing => "warning",
            Self::NewDevice => "info",
        }
    }
}

pub struct Alert {
    pub rule: Rule,
    pub user_id: Option<Uuid>,
    pub ip: Option<IpAddr>,
    pub details: Map<String, Value>,
}

impl Alert {
    pub fn new(rule: Rule) -> Self {
        Self {
            rule,
            user_id: None,
            ip: None,
            details: Map::new(),
        }
    }

    pub fn user(mut self, id: Uuid) -> Self {
        self.user_id = Some(id);
        self
    }

    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Records `alert`; its webhook delivery (if configured) follows the commit.
pub async fn raise(conn: &mut PgConnection, state: &AppState, alert: Alert) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    let now = state.clock.now();
    let webhook = if state.config.alert_webhook_url.is_some() {
        "pending"
    } else {
        "none"
    };
    sqlx::query!(
        r#"INSERT INTO security_alerts (security_alert_id, created_at, rule, severity, user_id, ip,
                                        details, webhook_status, webhook_next_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $2)"#,
        id,
        now,
        alert.rule.name(),
        alert.rule.severity(),
        alert.user_id,
        alert.ip.map(IpNetwork::from),
        Value::Object(alert.details),
        webhook,
    )
    .execute(conn)
    .await?;
    tracing::warn!(alert_id = %id, rule = alert.rule.name(), severity = alert.rule.severity(), "security alert");
    metrics::counter!("security_alerts_total", "rule" => alert.rule.name()).increment(1);
    Ok(id)
}
