-- Key lifecycle (#17): a key id beside every keyed MAC, so the blind-index
-- and code keys can rotate.
--
-- Blind indexes (BLIND_INDEX_KEYS) and code MACs (CODE_HMAC_KEYS): the id
-- of the key that computed each value. Every existing value was computed
-- under the single key of BLIND_INDEX_KEY / CODE_HMAC_KEY, which a ring
-- reads as key 1. Writes name their key explicitly (no defaults are left),
-- lookups match the index under every key of the ring, `keys reindex`
-- moves indexes to the current key, and `keys status` counts the rows under
-- each id. Ids are smallint (1..=32767), as the rings enforce.
ALTER TABLE users
    ADD COLUMN email_blind_index_key_id smallint NOT NULL DEFAULT 1,
    ADD COLUMN pending_email_blind_index_key_id smallint;
UPDATE users SET pending_email_blind_index_key_id = 1 WHERE pending_email_blind_index IS NOT NULL;
ALTER TABLE users
    ALTER COLUMN email_blind_index_key_id DROP DEFAULT,
    ADD CONSTRAINT users_email_blind_index_key_id_valid CHECK (email_blind_index_key_id >= 1),
    ADD CONSTRAINT users_pending_email_blind_index_key_id_valid
        CHECK ((pending_email_blind_index IS NULL) = (pending_email_blind_index_key_id IS NULL)
               AND coalesce(pending_email_blind_index_key_id, 1) >= 1);
-- `keys reindex` walks the rows not under the current key, batch by batch.
CREATE INDEX users_email_blind_index_key_id_idx ON users (email_blind_index_key_id, user_id);

ALTER TABLE devices ADD COLUMN push_token_index_key_id smallint NOT NULL DEFAULT 1;
ALTER TABLE devices
    ALTER COLUMN push_token_index_key_id DROP DEFAULT,
    ADD CONSTRAINT devices_push_token_index_key_id_valid CHECK (push_token_index_key_id >= 1);
CREATE INDEX devices_push_token_index_key_id_idx ON devices (push_token_index_key_id, device_id);

-- The install id is stored only as its index, so these cannot be
-- recomputed: they are compared under their own key while it stays in the
-- ring, and leave with their session.
ALTER TABLE sessions ADD COLUMN install_id_index_key_id smallint;
UPDATE sessions SET install_id_index_key_id = 1 WHERE install_id_index IS NOT NULL;
ALTER TABLE sessions
    ADD CONSTRAINT sessions_install_id_index_key_id_valid
        CHECK ((install_id_index IS NULL) = (install_id_index_key_id IS NULL)
               AND coalesce(install_id_index_key_id, 1) >= 1);

ALTER TABLE email_codes ADD COLUMN code_hash_key_id smallint NOT NULL DEFAULT 1;
ALTER TABLE email_codes
    ALTER COLUMN code_hash_key_id DROP DEFAULT,
    ADD CONSTRAINT email_codes_code_hash_key_id_valid CHECK (code_hash_key_id >= 1);

ALTER TABLE recovery_codes ADD COLUMN code_hash_key_id smallint NOT NULL DEFAULT 1;
ALTER TABLE recovery_codes
    ALTER COLUMN code_hash_key_id DROP DEFAULT,
    ADD CONSTRAINT recovery_codes_code_hash_key_id_valid CHECK (code_hash_key_id >= 1);
