-- App attestation (src/attestation): single-use challenges, device keys
-- whose app and device were attested, and the sessions signed in with one.

-- A challenge is stored only as its SHA-256, so a database reader cannot
-- answer one; taking it deletes it (single use).
CREATE TABLE attestation_challenges (
    challenge_hash bytea PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    CONSTRAINT attestation_challenges_hash_length CHECK (octet_length(challenge_hash) = 32)
);
CREATE INDEX attestation_challenges_expires_at ON attestation_challenges (expires_at);

-- A device key (DPoP key, by its RFC 7638 thumbprint) that passed App
-- Attest or Play Integrity. Not owned by an account: an app attests at
-- first launch, before anyone signs in, and the key is the device's.
-- Re-attesting the same key replaces the row.
CREATE TABLE attested_keys (
    jkt text PRIMARY KEY,
    platform text NOT NULL,
    app_id text NOT NULL,
    -- Apple: the App Attest key id (SHA-256 of its public key); NULL on Android.
    apple_key_id bytea,
    -- What the verdict said, for operators (no personal data).
    verdicts jsonb NOT NULL DEFAULT '{}'::jsonb,
    attested_at timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    CONSTRAINT attested_keys_platform CHECK (platform IN ('ios', 'android')),
    CONSTRAINT attested_keys_jkt_length CHECK (char_length(jkt) = 43)
);
CREATE INDEX attested_keys_last_used_at ON attested_keys (last_used_at);

ALTER TABLE sessions ADD COLUMN attested boolean NOT NULL DEFAULT false;

-- The device key (DPoP thumbprint) that proved the password of a sign-in
-- waiting for its second factor: the second step must be made by the same
-- key, so an MFA token cannot move a bound sign-in to another device.
ALTER TABLE mfa_challenges ADD COLUMN dpop_jkt text;
