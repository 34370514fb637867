//! The device rules: a sign-in from a new device (`new_device`), and a
//! refresh from another platform or app install than the one that signed
//! in (`device_drift`). They are called where their events happen
//! (`sessions::start`, `sessions::refresh`) with what those know; the
//! decision is made here, with the other rules.
//!
//! Neither alert carries text the user typed (device name, model) or their
//! user agent: alerts go to a webhook and outlive the account.

use super::{raise, Alert, Rule};
use crate::state::AppState;
use sqlx::PgConnection;
use std::net::IpAddr;
use uuid::Uuid;

/// A sign-in about to become session `session_id`, and the device it
/// comes from (as the app describes it, else its user agent).
pub struct SignInDevice<'a> {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub ip: IpAddr,
    pub platform: Option<&'a str>,
    pub name: Option<&'a str>,
    pub model: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// The new-device rule: the user has signed in before, but never from a
/// device like this one (same platform, name and model; the user agent
/// when the app names no device). Raises `new_device` and returns true
/// when it fires (the caller then mails the owner a notice). Run before
/// the new session is stored.
pub async fn new_device(
    conn: &mut PgConnection,
    state: &AppState,
    d: &SignInDevice<'_>,
) -> sqlx::Result<bool> {
    let (signed_in_before, known_device) = device_history(&mut *conn, d).await?;
    if !signed_in_before || known_device {
        return Ok(false);
    }
    raise(
        conn,
        state,
        Alert::new(Rule::NewDevice)
            .user(d.user_id)
            .ip(d.ip)
            .detail("session_id", d.session_id.to_string())
            .detail("platform", d.platform.map(str::to_owned)),
    )
    .await?;
    Ok(true)
}

/// Whether the user has signed in before, and from a device like this one.
async fn device_history(
    conn: &mut PgConnection,
    d: &SignInDevice<'_>,
) -> sqlx::Result<(bool, bool)> {
    let row = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM sessions WHERE user_id = $1) AS "any!",
                  EXISTS (SELECT 1 FROM sessions
                          WHERE user_id = $1
                            AND platform IS NOT DISTINCT FROM $2
                            AND device_name IS NOT DISTINCT FROM $3
                            AND model IS NOT DISTINCT FROM $4
                            AND ($3::text IS NOT NULL OR user_agent IS NOT DISTINCT FROM $5)) AS "known!""#,
        d.user_id,
        d.platform,
        d.name,
        d.model,
        d.user_agent,
    )
    .fetch_one(conn)
    .await?;
    Ok((row.any, row.known))
}

/// A refresh of session `session_id`: what the session was bound to at
/// sign-in and what the refreshing app presents now.
pub struct RefreshDevice<'a> {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub ip: IpAddr,
    /// The platform the session signed in as, if known.
    pub signed_in_platform: Option<&'a str>,
    /// The platform the refreshing app names (`X-Client-Version`), if any.
    pub refreshing_platform: Option<&'a str>,
    /// For a session bound to an install id at sign-in: how the install id
    /// presented now compares (`None` for a session not bound to one).
    pub install: Option<Install>,
}

/// The install id a refreshing app presents, against the one its session
/// is bound to. The comparison (keyed, constant time, under the index key
/// the session was bound with) is the caller's: `sessions::install_id_differs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    Same,
    Different,
    Missing,
}

/// The device-drift rule: the app refreshing says it is another platform,
/// or another install, than the one that signed in (a stolen token
/// replayed from elsewhere, or a tampered client). A session bound to an
/// install id must keep presenting it. A signal for monitoring, not a
/// refusal: the alert carries what differed.
pub async fn device_drift(
    conn: &mut PgConnection,
    state: &AppState,
    d: &RefreshDevice<'_>,
) -> sqlx::Result<()> {
    let drift = drift(d);
    if drift.is_empty() {
        return Ok(());
    }
    let mut alert = Alert::new(Rule::DeviceDrift)
        .user(d.user_id)
        .ip(d.ip)
        .detail("session_id", d.session_id.to_string());
    for (key, value) in drift {
        alert = alert.detail(key, value);
    }
    raise(conn, state, alert).await?;
    Ok(())
}

/// What differs between the sign-in and the refresh, as alert details.
fn drift(d: &RefreshDevice<'_>) -> Vec<(&'static str, String)> {
    let mut drift = Vec::new();
    if let (Some(signed_in), Some(presented)) = (d.signed_in_platform, d.refreshing_platform) {
        if signed_in != presented {
            drift.push(("signed_in_as", signed_in.to_owned()));
            drift.push(("refreshing_as", presented.to_owned()));
        }
    }
    match d.install {
        None | Some(Install::Same) => {}
        Some(Install::Different) => drift.push(("install_id", "different".to_owned())),
        Some(Install::Missing) => drift.push(("install_id", "missing".to_owned())),
    }
    drift
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refresh<'a>(
        signed_in_platform: Option<&'a str>,
        refreshing_platform: Option<&'a str>,
        install: Option<Install>,
    ) -> RefreshDevice<'a> {
        RefreshDevice {
            user_id: Uuid::nil(),
            session_id: Uuid::nil(),
            ip: IpAddr::from([127, 0, 0, 1]),
            signed_in_platform,
            refreshing_platform,
            install,
        }
    }

    #[test]
    fn drift_names_what_differs_and_nothing_else() {
        assert!(drift(&refresh(Some("ios"), Some("ios"), Some(Install::Same))).is_empty());
        // An app that names no platform, or a session without one, is no drift.
        assert!(drift(&refresh(Some("ios"), None, None)).is_empty());
        assert!(drift(&refresh(None, Some("android"), None)).is_empty());
        assert_eq!(
            drift(&refresh(Some("ios"), Some("android"), None)),
            vec![
                ("signed_in_as", "ios".to_owned()),
                ("refreshing_as", "android".to_owned())
            ]
        );
        assert_eq!(
            drift(&refresh(None, None, Some(Install::Different))),
            vec![("install_id", "different".to_owned())]
        );
        assert_eq!(
            drift(&refresh(None, None, Some(Install::Missing))),
            vec![("install_id", "missing".to_owned())]
        );
        // A session signed in without an install id is not bound to one.
        assert!(drift(&refresh(None, None, None)).is_empty());
    }
}
