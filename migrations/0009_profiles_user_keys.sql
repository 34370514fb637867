-- Per-user data keys, the profile fields, pending email changes and the
-- run-time client policy.
--
-- Every personal field (email, profile, TOTP secret, push token) is sealed
-- under its owner's own AES-256 data key. That key is stored only here,
-- wrapped (AES-256-GCM, bound to the user id) by a master key from
-- DATA_KEYS. Deleting this row is crypto-shredding: the user's ciphertexts,
-- wherever copies of them live, no longer open. `master_key_id` lets
-- `keys rewrap` find keys still wrapped by a retiring master key, and lets
-- `keys status` count them, without unwrapping anything.
--
-- Pre-release note: fields sealed by earlier migrations used the master key
-- directly; a development database from before this migration must be
-- recreated (there is no deployed data to carry over).
CREATE TABLE user_keys (
    user_id       uuid        NOT NULL,
    master_key_id bigint      NOT NULL,
    wrapped_key   bytea       NOT NULL,
    created_at    timestamptz NOT NULL,
    rewrapped_at  timestamptz,
    CONSTRAINT user_keys_pkey PRIMARY KEY (user_id),
    CONSTRAINT user_keys_user_fkey FOREIGN KEY (user_id) REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT user_keys_master_key_id_range CHECK (master_key_id BETWEEN 1 AND 4294967295)
);
CREATE INDEX user_keys_master_idx ON user_keys (master_key_id, user_id);

-- Profile fields, each sealed under the user's key and bound to its column
-- and row. The address is one sealed JSON object.
ALTER TABLE users
    ADD COLUMN phone_ciphertext         bytea,
    ADD COLUMN date_of_birth_ciphertext bytea,
    ADD COLUMN address_ciphertext       bytea,
    -- An email change waiting for its code: the new address sealed, and its
    -- blind index so confirming can claim it atomically.
    ADD COLUMN pending_email_ciphertext  bytea,
    ADD COLUMN pending_email_blind_index bytea,
    ADD CONSTRAINT users_pending_email_consistent
        CHECK ((pending_email_ciphertext IS NULL) = (pending_email_blind_index IS NULL));

ALTER TABLE email_codes DROP CONSTRAINT email_codes_purpose_valid;
ALTER TABLE email_codes ADD CONSTRAINT email_codes_purpose_valid
    CHECK (purpose IN ('email_verification', 'password_reset', 'email_change'));

-- The minimum app version per platform, set by an administrator at run
-- time (the kill switch for a vulnerable release). A missing row or a null
-- version falls back to MIN_CLIENT_VERSION_<PLATFORM>.
CREATE TABLE client_policy (
    platform    text        NOT NULL,
    min_version text,
    updated_at  timestamptz NOT NULL,
    updated_by  uuid        NOT NULL,
    CONSTRAINT client_policy_pkey PRIMARY KEY (platform),
    CONSTRAINT client_policy_platform_valid CHECK (platform IN ('ios', 'android')),
    CONSTRAINT client_policy_min_version_length CHECK (length(min_version) <= 32)
);
