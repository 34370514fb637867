//! The catalogue of audit event types (`area.noun.verb`, matching the
//! `audit_events_event_type_format` constraint). Features add theirs here,
//! and SECURITY.md documents each one: when it fires and what it holds.

/// The service started and applied its migrations. Details: `version`.
pub const SYSTEM_STARTED: &str = "system.service.started";

/// A registration was accepted (new account). Details: none.
pub const REGISTERED: &str = "auth.account.registered";
/// Someone tried to register an address that already has an account; its
/// owner was notified. Details: none.
pub const REGISTRATION_DUPLICATE: &str = "auth.account.registration_duplicate";
/// A new registration of an address whose account was still unverified:
/// the new password replaced the old one and every earlier code was
/// retired. Details: `codes_retired`.
pub const REGISTRATION_REPLACED: &str = "auth.account.registration_replaced";
/// An account never verified was deleted `UNVERIFIED_ACCOUNT_TTL_HOURS`
/// after its last registration. Details: `ttl_hours`.
pub const UNVERIFIED_DELETED: &str = "auth.account.unverified_deleted";
/// A verification code was sent (registration or resend). Details: none.
pub const VERIFICATION_SENT: &str = "auth.email.verification_sent";
/// An email verification succeeded or failed. Details: `reason` on failure.
pub const VERIFICATION: &str = "auth.email.verified";
/// A sign-in completed and a session started. Details: `aal`, `amr`.
pub const LOGIN_SUCCEEDED: &str = "auth.login.succeeded";
/// A sign-in was refused. Details: `reason` (`invalid_credentials`,
/// `email_not_verified`, `account_locked`); user id when the account exists.
pub const LOGIN_FAILED: &str = "auth.login.failed";
/// A refresh token was rotated. Details: `retry` (true when a retired
/// token whose successor was unused got that same successor again).
pub const REFRESH_ROTATED: &str = "auth.refresh.rotated";
/// A refresh was refused. Details: `reason` (the refresh failure code).
pub const REFRESH_FAILED: &str = "auth.refresh.failed";
/// A retired refresh token was presented after its successor had been
/// used; the session was revoked. Details: `seconds_since_use`.
pub const REFRESH_REUSE_DETECTED: &str = "auth.refresh.reuse_detected";
/// The current session was ended by its user.
pub const LOGOUT: &str = "auth.session.logout";
/// Every session of the user was ended by the user. Details: `sessions`.
pub const LOGOUT_ALL: &str = "auth.session.logout_all";
/// One session was ended from the session list. Details: none.
pub const SESSION_REVOKED: &str = "auth.session.revoked";
/// The password was changed; other sessions ended. Details: `sessions_ended`.
pub const PASSWORD_CHANGED: &str = "auth.password.changed";
/// A password reset was requested for an existing account.
pub const PASSWORD_RESET_REQUESTED: &str = "auth.password.reset_requested";
/// A password reset completed (or failed). Details: `sessions_ended` or `reason`.
pub const PASSWORD_RESET: &str = "auth.password.reset";

/// MFA enrolment started (a pending TOTP secret was created).
pub const MFA_ENROLMENT_STARTED: &str = "mfa.totp.enrolment_started";
/// MFA enrolment confirmed: TOTP enabled, recovery codes issued, session aal2.
pub const MFA_ENABLED: &str = "mfa.totp.enabled";
/// MFA disabled (success), or a refused attempt. Details: `reason` or `sessions_ended`.
pub const MFA_DISABLED: &str = "mfa.totp.disabled";
/// The second step of a sign-in passed or failed. Details: `method`.
pub const MFA_CHALLENGE: &str = "mfa.challenge.completed";
/// A recovery code was used to sign in (the user is emailed).
pub const RECOVERY_CODE_USED: &str = "mfa.recovery_code.used";
/// A new set of recovery codes replaced the old one.
pub const RECOVERY_CODES_REGENERATED: &str = "mfa.recovery_codes.regenerated";
/// An aal1 session tried an action that needs the second factor.
pub const STEP_UP_REFUSED: &str = "mfa.step_up.refused";

/// An administrator changed a user's rate-limit tier, directly or by
/// approving the user's request. Actor: the admin; user: the target.
/// Details: `from`, `to`, `expires_at` (`null`: no expiry); `request_id`
/// when it approved a request.
pub const ADMIN_RATE_LIMIT_TIER_CHANGED: &str = "admin.user.rate_limit_tier_changed";
/// An administrator's attempt to change their own tier, directly or by
/// deciding their own request, was refused. Actor and user: the admin.
/// Details: `reason` (`own_account`), `request_id` for a decision.
pub const ADMIN_RATE_LIMIT_TIER_REFUSED: &str = "admin.user.rate_limit_tier_refused";
/// A tier granted until a date reached it and went back to `standard`
/// (the background pass; no actor). Details: `from`, `expired_at`.
pub const RATE_LIMIT_TIER_EXPIRED: &str = "rate_limit.tier.expired";

/// A user asked for a higher rate-limit tier. Details: `request_id`,
/// `requested_tier`, `current_tier` (never the reason).
pub const RATE_LIMIT_REQUEST_CREATED: &str = "rate_limit.request.created";
/// A user withdrew their pending request. Details: `request_id`.
pub const RATE_LIMIT_REQUEST_WITHDRAWN: &str = "rate_limit.request.withdrawn";
/// An administrator approved or denied a request (or was refused: outcome
/// `denied`, `reason` `already_decided`, `tier_not_higher` or
/// `own_account`). Actor: the admin; user: the requester. Details:
/// `request_id`, `decision`, `requested_tier`, `expires_in_days`,
/// `with_note` (whether a note was written, never the note).
pub const ADMIN_RATE_LIMIT_REQUEST_DECIDED: &str = "admin.rate_limit_request.decided";
/// Support or an administrator listed rate-limit requests (their reasons
/// are personal data). Actor: the caller. Details: `status` (the filter,
/// `null` for all), `matches`, `masked`.
pub const ADMIN_RATE_LIMIT_REQUESTS_LISTED: &str = "admin.rate_limit_request.listed";

/// A caller without the required role tried an administrative route
/// (function-level authorization). Details: `role`, `path`.
pub const ROLE_DENIED: &str = "authz.role.denied";

/// An administrator acknowledged a security alert. Actor: the admin.
/// Details: `alert_id`, `rule`.
pub const ADMIN_ALERT_ACKNOWLEDGED: &str = "admin.alert.acknowledged";

/// A push-notification device was registered. Details: `device_id`.
pub const DEVICE_REGISTERED: &str = "device.registration.created";
/// A device registration was deleted by its owner. Details: `device_id`.
pub const DEVICE_DELETED: &str = "device.registration.deleted";
/// A device key passed App Attest or Play Integrity (details: platform, jkt).
pub const ATTESTATION_SUCCEEDED: &str = "device.attestation.succeeded";
/// An attestation was refused (details: platform, the reason; the client
/// is told only `attestation_invalid`).
pub const ATTESTATION_FAILED: &str = "device.attestation.failed";

/// A note was created by its owner. Details: `note_id`.
pub const NOTE_CREATED: &str = "notes.note.created";
/// A note was deleted by its owner. Details: `note_id`.
pub const NOTE_DELETED: &str = "notes.note.deleted";

/// The owner changed profile fields. Details: `fields` (names only, never values).
pub const PROFILE_UPDATED: &str = "user.profile.updated";
/// An email change was requested: a code went to the new address and a
/// notice to the old one. Details: `reason` on failure.
pub const EMAIL_CHANGE_REQUESTED: &str = "user.email.change_requested";
/// An email change was confirmed with its code (or refused: `reason`).
pub const EMAIL_CHANGED: &str = "user.email.changed";
/// The account was deleted by its owner: the tombstone that remains.
/// Details: `sessions_ended`; `reason` on failure.
pub const ACCOUNT_DELETED: &str = "user.account.deleted";
/// The owner downloaded the export of their data. Details: none.
pub const DATA_EXPORTED: &str = "user.data.exported";

/// Support or an administrator listed or searched users. Actor: the
/// caller. Details: `by_email` (whether an address was given, never the
/// address), `matches`.
pub const ADMIN_USERS_SEARCHED: &str = "admin.user.searched";
/// Support or an administrator opened a user's record. Actor: the caller;
/// user: the target. Details: `masked`.
pub const ADMIN_USER_VIEWED: &str = "admin.user.viewed";
/// An administrator changed a user's role or status (or was refused).
/// Actor: the admin; user: the target. Details: `role_from`, `role_to`,
/// `status_from`, `status_to`, `sessions_ended`; `reason` on refusal.
pub const ADMIN_USER_UPDATED: &str = "admin.user.updated";
/// Support or an administrator ended all of a user's sessions. Actor: the
/// caller; user: the target. Details: `sessions_ended`.
pub const ADMIN_SESSIONS_REVOKED: &str = "admin.user.sessions_revoked";
/// An administrator changed the minimum app versions. Actor: the admin.
/// Details: `ios`, `android` (the new minimums).
pub const ADMIN_CLIENT_POLICY_CHANGED: &str = "admin.client_policy.changed";
/// The `admin create` / `admin promote` command created or promoted an
/// account (no actor: run by an operator with database access). Details:
/// `role`, `created`.
pub const ADMIN_BOOTSTRAPPED: &str = "admin.cli.account_bootstrapped";
