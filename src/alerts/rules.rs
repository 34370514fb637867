//! The anomaly rules on sign-in and refresh events: failed-login spikes,
//! a new country, refresh-token reuse (the device rules are in
//! `device.rs`, the data-access volume rule in `access.rs`). Each is cheap;
//! a threshold rule is configurable and fires at most once per window and
//! subject (once the count reaches the threshold and no such alert was
//! raised in the window), so an ongoing attack is one alert, not
//! thousands, and two failures arriving together cannot skip past the
//! threshold.

use super::{raise, Alert, Rule};
use crate::{rate_limit::gcra::Quota, state::AppState};
use chrono::Duration;
use sqlx::{types::ipnetwork::IpNetwork, PgConnection};
use std::net::IpAddr;
use uuid::Uuid;

/// After a failed login was audited: per account, per IP and globally,
/// over sliding windows of the audit trail.
pub async fn failed_login(
    conn: &mut PgConnection,
    state: &AppState,
    user_id: Option<Uuid>,
    ip: IpAddr,
) -> sqlx::Result<()> {
    let now = state.clock.now();
    let t = state.config.alert_thresholds;
    let since = |q: Quota| now - Duration::milliseconds(q.window_ms);
    if let Some(user_id) = user_id {
        let n = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM audit_events
               WHERE event_type = 'auth.login.failed' AND user_id = $1 AND occurred_at > $2"#,
            user_id,
            since(t.per_account),
        )
        .fetch_one(&mut *conn)
        .await?;
        if n >= i64::from(t.per_account.limit)
            && !recently_raised(
                conn,
                Rule::FailedLoginsAccount,
                Some(user_id),
                None,
                since(t.per_account),
            )
            .await?
        {
            raise(
                conn,
                state,
                Alert::new(Rule::FailedLoginsAccount)
                    .user(user_id)
                    .ip(ip)
                    .detail("failures", n),
            )
            .await?;
        }
    }
    // Counted per client network, as the rate limits count: an IPv4
    // address, or the IPv6 prefix one host owns (`RATE_LIMIT_IPV6_PREFIX`),
    // so rotating addresses inside a /64 is still one attacker.
    let network = client_network(ip, state.config.rate_limit_ipv6_prefix);
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_events
           WHERE event_type = 'auth.login.failed' AND ip <<= $1 AND occurred_at > $2"#,
        network,
        since(t.per_ip),
    )
    .fetch_one(&mut *conn)
    .await?;
    if n >= i64::from(t.per_ip.limit)
        && !recently_raised(
            conn,
            Rule::FailedLoginsIp,
            None,
            Some(network),
            since(t.per_ip),
        )
        .await?
    {
        raise(
            conn,
            state,
            Alert::new(Rule::FailedLoginsIp)
                .ip(ip)
                .detail("failures", n),
        )
        .await?;
    }
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_events
           WHERE event_type = 'auth.login.failed' AND occurred_at > $1"#,
        since(t.global),
    )
    .fetch_one(&mut *conn)
    .await?;
    if n >= i64::from(t.global.limit)
        && !recently_raised(conn, Rule::FailedLoginsGlobal, None, None, since(t.global)).await?
    {
        raise(
            conn,
            state,
            Alert::new(Rule::FailedLoginsGlobal).detail("failures", n),
        )
        .await?;
    }
    Ok(())
}

/// The network a client address is counted under: the address itself
/// for IPv4 (as `/32`), its prefix for IPv6.
fn client_network(ip: IpAddr, ipv6_prefix: u8) -> IpNetwork {
    let ip = ip.to_canonical();
    let prefix = if ip.is_ipv4() {
        32
    } else {
        ipv6_prefix.min(128)
    };
    IpNetwork::new(ip, prefix).unwrap_or_else(|_| IpNetwork::from(ip))
}

/// Whether `rule` already fired for this subject since `since` (an alert
/// whose IP lies in `network`, when one is given).
async fn recently_raised(
    conn: &mut PgConnection,
    rule: Rule,
    user_id: Option<Uuid>,
    network: Option<IpNetwork>,
    since: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM security_alerts
                          WHERE rule = $1 AND created_at > $2
                            AND ($3::uuid IS NULL OR user_id = $3)
                            AND ($4::inet IS NULL OR ip <<= $4)) AS "raised!""#,
        rule.name(),
        since,
        user_id,
        network,
    )
    .fetch_one(conn)
    .await
}

/// A retired refresh token presented again (after the grace window, or
/// after its successor was used): the session was just revoked for it, and
/// every such reuse is an alert.
pub async fn refresh_token_reuse(
    conn: &mut PgConnection,
    state: &AppState,
    user_id: Uuid,
    session_id: Uuid,
    ip: IpAddr,
) -> sqlx::Result<()> {
    raise(
        conn,
        state,
        Alert::new(Rule::RefreshTokenReuse)
            .user(user_id)
            .ip(ip)
            .detail("session_id", session_id.to_string()),
    )
    .await?;
    Ok(())
}

/// A sign-in from a country the user has not signed in from before
/// (known only behind a trusted proxy that sends `GEO_COUNTRY_HEADER`).
pub async fn new_country(
    conn: &mut PgConnection,
    state: &AppState,
    user_id: Uuid,
    country: &str,
    ip: IpAddr,
) -> sqlx::Result<()> {
    let row = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM sessions WHERE user_id = $1 AND country IS NOT NULL) AS "any!",
                  EXISTS (SELECT 1 FROM sessions WHERE user_id = $1 AND country = $2) AS "seen!""#,
        user_id,
        country,
    )
    .fetch_one(&mut *conn)
    .await?;
    if row.any && !row.seen {
        raise(
            conn,
            state,
            Alert::new(Rule::NewCountry)
                .user(user_id)
                .ip(ip)
                .detail("country", country),
        )
        .await?;
    }
    Ok(())
}
