-- Binds a pending TOTP enrolment to the session that started it.
--
-- `POST /v1/mfa/totp/setup` now takes the current password; the session
-- that proved it is recorded here, and only that session, within ten
-- minutes of the setup, may confirm the enrolment and be upgraded to aal2.
-- A stolen session alone (no password) can no longer bind an
-- authenticator, and a second session cannot confirm what another started.
ALTER TABLE mfa_totp ADD COLUMN pending_session_id uuid;
ALTER TABLE mfa_totp ADD CONSTRAINT mfa_totp_pending_session_fkey
    FOREIGN KEY (pending_session_id) REFERENCES sessions (session_id) ON DELETE SET NULL;
