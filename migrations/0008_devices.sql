-- Push-notification registrations: the example user-owned resource. The
-- push token is sealed (bound to its row) with a blind index so one phone
-- registering twice updates its row instead of duplicating it.
CREATE TABLE devices (
    device_id             uuid        NOT NULL,
    user_id               uuid        NOT NULL,
    platform              text        NOT NULL,
    name                  text,
    push_token_ciphertext bytea       NOT NULL,
    push_token_index      bytea       NOT NULL,
    created_at            timestamptz NOT NULL,
    last_seen_at          timestamptz NOT NULL,
    CONSTRAINT devices_pkey PRIMARY KEY (device_id),
    CONSTRAINT devices_user_fkey FOREIGN KEY (user_id) REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT devices_user_token_key UNIQUE (user_id, push_token_index),
    CONSTRAINT devices_platform_valid CHECK (platform IN ('ios', 'android', 'web')),
    CONSTRAINT devices_name_length CHECK (length(name) <= 64)
);
CREATE INDEX devices_user_idx ON devices (user_id, created_at DESC);
