-- Accounts, sessions, refresh tokens and one-time email codes.
--
-- No secret or PII is stored in clear: the email is AES-256-GCM sealed
-- (bound to its row) with an HMAC blind index for lookups; passwords are
-- argon2id PHC strings; refresh tokens are stored as SHA-256 hashes; email
-- codes as HMACs under a server key. Every constraint is named so errors
-- map by name (src/error.rs).
CREATE TABLE users (
    user_id             uuid        NOT NULL,
    email_ciphertext    bytea       NOT NULL,
    email_blind_index   bytea       NOT NULL,
    display_name_ciphertext bytea,
    password_hash       text        NOT NULL,
    role                text        NOT NULL DEFAULT 'user',
    status              text        NOT NULL DEFAULT 'active',
    email_verified_at   timestamptz,
    password_changed_at timestamptz NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (user_id),
    CONSTRAINT users_email_blind_index_key UNIQUE (email_blind_index),
    CONSTRAINT users_role_valid CHECK (role IN ('user', 'support', 'admin')),
    CONSTRAINT users_status_valid CHECK (status IN ('active', 'locked')),
    CONSTRAINT users_password_hash_argon2id CHECK (password_hash LIKE '$argon2id$%')
);

-- One row per sign-in: the device's session. Refresh tokens hang off it.
CREATE TABLE sessions (
    session_id          uuid        NOT NULL,
    user_id             uuid        NOT NULL,
    created_at          timestamptz NOT NULL,
    last_seen_at        timestamptz NOT NULL,
    idle_expires_at     timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    auth_time           timestamptz NOT NULL,
    aal                 text        NOT NULL DEFAULT 'aal1',
    amr                 text[]      NOT NULL DEFAULT '{pwd}',
    revoked_at          timestamptz,
    revoked_reason      text,
    device_name         text,
    platform            text,
    model               text,
    app_version         text,
    last_ip             inet,
    user_agent          text,
    CONSTRAINT sessions_pkey PRIMARY KEY (session_id),
    CONSTRAINT sessions_user_fkey FOREIGN KEY (user_id) REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT sessions_aal_valid CHECK (aal IN ('aal1', 'aal2')),
    CONSTRAINT sessions_platform_valid CHECK (platform IN ('ios', 'android', 'web')),
    CONSTRAINT sessions_revocation_consistent CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL)),
    CONSTRAINT sessions_expiry_order CHECK (idle_expires_at <= absolute_expires_at),
    CONSTRAINT sessions_device_name_length CHECK (length(device_name) <= 64),
    CONSTRAINT sessions_model_length CHECK (length(model) <= 64),
    CONSTRAINT sessions_app_version_length CHECK (length(app_version) <= 32),
    CONSTRAINT sessions_user_agent_length CHECK (length(user_agent) <= 256)
);
CREATE INDEX sessions_user_idx ON sessions (user_id) WHERE revoked_at IS NULL;

-- Single-use refresh tokens, stored as SHA-256 hashes. A used token keeps
-- its row (used_at set) so a later presentation is recognised as reuse.
CREATE TABLE refresh_tokens (
    refresh_token_id uuid        NOT NULL,
    session_id       uuid        NOT NULL,
    token_hash       bytea       NOT NULL,
    parent_id        uuid,
    created_at       timestamptz NOT NULL,
    used_at          timestamptz,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (refresh_token_id),
    CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT refresh_tokens_session_fkey FOREIGN KEY (session_id) REFERENCES sessions (session_id) ON DELETE CASCADE,
    CONSTRAINT refresh_tokens_parent_fkey FOREIGN KEY (parent_id) REFERENCES refresh_tokens (refresh_token_id) ON DELETE CASCADE,
    CONSTRAINT refresh_tokens_one_successor UNIQUE (parent_id),
    CONSTRAINT refresh_tokens_hash_length CHECK (length(token_hash) = 32)
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- Six-digit codes for email verification and password reset, stored as an
-- HMAC under CODE_HMAC_KEY (a plain hash of 10^6 values is no protection).
CREATE TABLE email_codes (
    email_code_id uuid        NOT NULL,
    user_id       uuid        NOT NULL,
    purpose       text        NOT NULL,
    code_hash     bytea       NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    attempts      integer     NOT NULL DEFAULT 0,
    used_at       timestamptz,
    CONSTRAINT email_codes_pkey PRIMARY KEY (email_code_id),
    CONSTRAINT email_codes_user_fkey FOREIGN KEY (user_id) REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT email_codes_purpose_valid CHECK (purpose IN ('email_verification', 'password_reset')),
    CONSTRAINT email_codes_attempts_nonnegative CHECK (attempts >= 0)
);
-- At most one live code per user and purpose.
CREATE UNIQUE INDEX email_codes_live_key ON email_codes (user_id, purpose) WHERE used_at IS NULL;
