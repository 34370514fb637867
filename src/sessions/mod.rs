//! Sessions: one per sign-in on a device, each with a chain of single-use
//! refresh tokens, and the `TokenPair` every sign-in answers with.
//!
//! Every refresh token, the first of a session and each successor, is 256
//! random bits, stored only as its SHA-256. A successor is kept sealed in
//! its parent's row until its own first use (or the session's end), so
//! that a retry of a retired token whose answer was lost gets the same
//! successor (see [`refresh`] and [`successor`]).

pub mod db;
pub mod refresh;
pub mod routes;
pub mod successor;

use crate::{
    accounts::{Aal, Role},
    audit::{self, events, AuditEvent, Outcome},
    crypto::hash,
    error::ApiError,
    http::extract::ClientInfo,
    state::AppState,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{types::ipnetwork::IpNetwork, PgConnection};
use uuid::Uuid;
use validator::Validate;

/// The body of every successful sign-in and refresh. It is serialized with
/// `"result": "tokens"` in front (the `discriminator` of `LoginResponse` in
/// `openapi.yaml`), so an app tells it from an `MfaRequired` by one member
/// on every operation that can sign in, whichever struct literal built it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename = "tokens")]
pub struct TokenPair {
    pub token_type: String,
    pub access_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub refresh_token: String,
    /// Seconds until the session expires if unused (idle, capped by absolute).
    pub refresh_expires_in: i64,
    pub session_id: Uuid,
}

/// What the app says about the device signing in (all optional, bounded).
#[derive(Clone, Debug, Default, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct DeviceInfo {
    #[validate(
        length(min = 1, max = 64),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub name: Option<String>,
    #[validate(custom(function = "crate::http::validate::platform"))]
    pub platform: Option<String>,
    #[validate(
        length(min = 1, max = 64),
        custom(function = "crate::http::validate::no_control_chars")
    )]
    pub model: Option<String>,
}

/// Who is signing in and how strongly.
pub struct SignIn<'a> {
    pub user_id: Uuid,
    pub role: Role,
    pub aal: Aal,
    pub amr: Vec<String>,
    pub device: Option<&'a DeviceInfo>,
    /// The sign-in request's verified DPoP proof: with one, the session is
    /// bound to the proof's key (`sessions.dpop_jkt`) for its whole life.
    /// (A later check of the device, such as app attestation, can use the
    /// same key here.)
    pub dpop: Option<&'a crate::dpop::VerifiedProof>,
    /// Whether that proof's key is attested (`attestation::gate`, run
    /// before the credentials were checked).
    pub attested: bool,
}

/// Creates a session and its first refresh token in the caller's
/// transaction, audits the sign-in, and returns the token pair.
pub async fn start(
    conn: &mut PgConnection,
    state: &AppState,
    client: &ClientInfo,
    sign_in: SignIn<'_>,
) -> Result<TokenPair, ApiError> {
    let now = state.clock.now();
    // Device binding (RFC 9449): DPOP_POLICY decides whether this account
    // may have a session without a proof; a proof binds the session.
    crate::dpop::check_policy(&state.config.dpop, sign_in.role, sign_in.dpop)?;
    let dpop_jkt = sign_in.dpop.map(|p| p.jkt.as_str());
    let auth = &state.config.auth;
    let session_id = Uuid::now_v7();
    let absolute = now + auth.refresh_absolute_ttl;
    let idle = (now + auth.refresh_idle_ttl).min(absolute);
    let device = sign_in.device.cloned().unwrap_or_default();
    let install_id_index = client.install_id.map(|id| install_id_index(state, id));
    let platform = device.platform.clone().or_else(|| {
        client
            .client
            .as_ref()
            .map(|c| platform_str(c.platform).to_owned())
    });
    // The new-device rule (alerts::device) decides; its notice is mailed here.
    let new_device = crate::alerts::device::new_device(
        &mut *conn,
        state,
        &crate::alerts::device::SignInDevice {
            user_id: sign_in.user_id,
            session_id,
            ip: client.ip,
            platform: platform.as_deref(),
            name: device.name.as_deref(),
            model: device.model.as_deref(),
            user_agent: client.user_agent.as_deref(),
        },
    )
    .await?;
    if new_device {
        let label = [
            device.name.as_deref(),
            device.model.as_deref(),
            platform.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        let label = if label.is_empty() {
            client
                .user_agent
                .clone()
                .unwrap_or_else(|| "an unnamed device".into())
        } else {
            label
        };
        crate::mail::notices::notify(
            &mut *conn,
            state,
            sign_in.user_id,
            crate::mail::notices::Notice::NewDeviceSignIn { device: &label },
        )
        .await?;
    }
    if let Some(country) = &client.country {
        crate::alerts::rules::new_country(&mut *conn, state, sign_in.user_id, country, client.ip)
            .await?;
    }
    db::insert_session(
        &mut *conn,
        &db::NewSession {
            session_id,
            user_id: sign_in.user_id,
            now,
            idle_expires_at: idle,
            absolute_expires_at: absolute,
            auth_time: now,
            aal: sign_in.aal,
            amr: &sign_in.amr,
            device_name: device.name.as_deref(),
            platform: platform.as_deref(),
            model: device.model.as_deref(),
            app_version: client.client.as_ref().map(|c| c.version.to_string()),
            ip: IpNetwork::from(client.ip),
            user_agent: client.user_agent.as_deref(),
            country: client.country.as_deref(),
            install_id_index,
            dpop_jkt,
            attested: sign_in.attested && dpop_jkt.is_some(),
        },
    )
    .await?;
    let refresh_token = successor::new_token();
    db::insert_refresh_token(
        &mut *conn,
        session_id,
        &hash::hash_token(&refresh_token),
        None,
        now,
    )
    .await?;
    audit::record(
        &mut *conn,
        now,
        &AuditEvent::new(events::LOGIN_SUCCEEDED, Outcome::Success)
            .user(sign_in.user_id)
            .session(session_id)
            .client(client)
            .detail("aal", sign_in.aal.as_str())
            .detail("amr", sign_in.amr.clone())
            .detail("dpop_bound", dpop_jkt.is_some())
            .detail("attested", sign_in.attested && dpop_jkt.is_some()),
    )
    .await?;
    let access = AccessGrant {
        user_id: sign_in.user_id,
        session_id,
        role: sign_in.role,
        aal: sign_in.aal,
        amr: &sign_in.amr,
        auth_time: now,
        idle_expires_at: idle,
        dpop_jkt,
    };
    issue_pair(state, now, &access, refresh_token)
}

/// The claims of an access token for one session.
pub struct AccessGrant<'a> {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub role: Role,
    pub aal: Aal,
    pub amr: &'a [String],
    pub auth_time: DateTime<Utc>,
    pub idle_expires_at: DateTime<Utc>,
    /// The device key of a bound session: its tokens carry `cnf.jkt` and
    /// are of type `DPoP`.
    pub dpop_jkt: Option<&'a str>,
}

pub fn issue_pair(
    state: &AppState,
    now: DateTime<Utc>,
    grant: &AccessGrant<'_>,
    refresh_token: String,
) -> Result<TokenPair, ApiError> {
    let amr: Vec<&str> = grant.amr.iter().map(String::as_str).collect();
    let (access_token, claims) = state
        .keys
        .signing
        .issue_bound(
            &state.token_settings,
            now,
            grant.user_id,
            grant.session_id,
            grant.role.as_str(),
            grant.aal.as_str(),
            &amr,
            grant.auth_time,
            grant.dpop_jkt,
        )
        .map_err(ApiError::internal)?;
    Ok(TokenPair {
        token_type: if grant.dpop_jkt.is_some() {
            "DPoP"
        } else {
            "Bearer"
        }
        .into(),
        access_token,
        expires_in: claims.exp - now.timestamp(),
        refresh_token,
        refresh_expires_in: (grant.idle_expires_at - now).num_seconds().max(0),
        session_id: grant.session_id,
    })
}

/// Blind-index context of `sessions.install_id`.
const INSTALL_ID_CONTEXT: &str = "sessions.install_id";

/// The keyed blind index of an app install id (`X-App-Install-Id`), under
/// the current index key.
pub fn install_id_index(state: &AppState, install_id: Uuid) -> crate::crypto::BlindIndex {
    state
        .keys
        .blind_index
        .compute(INSTALL_ID_CONTEXT, &install_id.to_string())
}

/// Whether `install_id` provably differs from the one a session was bound
/// to (`signed_in`, an index under key `key_id`), compared in constant
/// time. The install id itself is never stored, so a session's index
/// cannot be recomputed under a new key: while its key stays in
/// `BLIND_INDEX_KEYS` it is compared under that key, and once the key has
/// left the ring there is nothing to compare with (false; `keys status`
/// counts the sessions still bound under each key).
pub fn install_id_differs(
    state: &AppState,
    install_id: Uuid,
    key_id: Option<i16>,
    signed_in: &[u8],
) -> bool {
    let presented = key_id.and_then(|id| {
        state
            .keys
            .blind_index
            .compute_with(id, INSTALL_ID_CONTEXT, &install_id.to_string())
    });
    match presented {
        Some(p) => !hash::constant_time_eq(&p, signed_in),
        None => false,
    }
}

pub fn platform_str(p: crate::http::client_version::Platform) -> &'static str {
    use crate::http::client_version::Platform;
    match p {
        Platform::Ios => "ios",
        Platform::Android => "android",
        Platform::Web => "web",
    }
}

/// What changed about how a user signs in, for [`end_sessions_after`].
pub struct CredentialChange<'a> {
    pub user_id: Uuid,
    /// The session to keep (the one that made the change), or none.
    pub keep: Option<Uuid>,
    pub client: &'a ClientInfo,
    pub event: &'static str,
    /// Stored as the sessions' revocation reason.
    pub reason: &'static str,
    pub notice: crate::mail::notices::Notice<'a>,
}

/// After a change to how a user signs in (password changed or reset, MFA
/// turned off): ends the other sessions, audits the change with how many
/// ended, and emails the owner, all in the caller's transaction.
pub async fn end_sessions_after(
    conn: &mut PgConnection,
    state: &AppState,
    change: CredentialChange<'_>,
) -> Result<u64, ApiError> {
    let now = state.clock.now();
    let ended =
        db::revoke_all_sessions(&mut *conn, change.user_id, change.keep, now, change.reason)
            .await?;
    let mut event = AuditEvent::new(change.event, Outcome::Success)
        .user(change.user_id)
        .client(change.client)
        .detail("sessions_ended", ended);
    if let Some(session) = change.keep {
        event = event.session(session);
    }
    audit::record(&mut *conn, now, &event).await?;
    crate::mail::notices::notify(&mut *conn, state, change.user_id, change.notice).await?;
    Ok(ended)
}
