-- Multi-factor authentication: TOTP (RFC 6238), recovery codes and login
-- challenges.
--
-- The TOTP secret is AES-256-GCM sealed, bound to its user. `last_used_step`
-- only moves forward (UPDATE … WHERE last_used_step < $step), so a code, or
-- any earlier one, is accepted at most once. Recovery codes and challenge
-- tokens are bearer secrets: stored as HMAC / SHA-256, single use.
CREATE TABLE mfa_totp (
    user_id                   uuid        NOT NULL,
    secret_ciphertext         bytea,
    enabled_at                timestamptz,
    pending_secret_ciphertext bytea,
    pending_created_at        timestamptz,
    last_used_step            bigint      NOT NULL DEFAULT 0,
    failed_attempts           integer     NOT NULL DEFAULT 0,
    throttled_until           timestamptz,
    CONSTRAINT mfa_totp_pkey PRIMARY KEY (user_id),
    CONSTRAINT mfa_totp_user_fkey FOREIGN KEY (user_id) REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT mfa_totp_enabled_has_secret CHECK ((enabled_at IS NULL) = (secret_ciphertext IS NULL)),
    CONSTRAINT mfa_totp_failed_attempts_nonnegative CHECK (failed_attempts >= 0)
);

CREATE TABLE recovery_codes (
    recovery_code_id uuid        NOT NULL,
    user_id          uuid        NOT NULL,
    code_hash        bytea       NOT NULL,
    created_at       timestamptz NOT NULL,
    used_at          timestamptz,
    CONSTRAINT recovery_codes_pkey PRIMARY KEY (recovery_code_id),
    CONSTRAINT recovery_codes_user_fkey FOREIGN KEY (user_id) REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT recovery_codes_hash_key UNIQUE (user_id, code_hash)
);

-- The second step of a sign-in: created after a correct password, bound to
-- the user and to the device that signed in.
CREATE TABLE mfa_challenges (
    mfa_challenge_id uuid        NOT NULL,
    user_id          uuid        NOT NULL,
    token_hash       bytea       NOT NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    used_at          timestamptz,
    device_name      text,
    platform         text,
    model            text,
    CONSTRAINT mfa_challenges_pkey PRIMARY KEY (mfa_challenge_id),
    CONSTRAINT mfa_challenges_user_fkey FOREIGN KEY (user_id) REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT mfa_challenges_token_hash_key UNIQUE (token_hash),
    CONSTRAINT mfa_challenges_attempts_nonnegative CHECK (attempts >= 0)
);
