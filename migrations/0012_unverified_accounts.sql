-- Unverified accounts are deleted UNVERIFIED_ACCOUNT_TTL_HOURS after their
-- last registration (password_changed_at: a new registration of the same
-- unverified address replaces the password and restarts the clock). The
-- background pass finds them through this partial index.
CREATE INDEX users_unverified_registered_idx
    ON users (password_changed_at)
    WHERE email_verified_at IS NULL;
