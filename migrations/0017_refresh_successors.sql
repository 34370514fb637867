-- Refresh tokens (#17). A successor used to be HMAC(CODE_HMAC_KEY, session,
-- parent): whoever held the key and any token of a session could derive
-- every later one. Successors are now 256 random bits. So that a retry of
-- the just-retired token (within REFRESH_GRACE_SECS, its successor unused)
-- can be answered with the same successor, the parent row keeps the
-- successor sealed under the master data key ring (AES-256-GCM, bound to
-- the table, the column, the session and the parent row) for the grace
-- window only: it is cleared when the successor is first used, and by a
-- sweep once the window has passed. A token retired before this migration
-- (or, during a rolling upgrade, by a process still on the previous
-- version) has no sealed successor, so a retry of it within the grace
-- window is treated as reuse; and a retry answered by the previous version
-- gets a successor the database does not hold. Either way that device
-- signs in again: a few devices, within REFRESH_GRACE_SECS of the upgrade.
ALTER TABLE refresh_tokens ADD COLUMN successor_ciphertext bytea;
CREATE INDEX refresh_tokens_sealed_successor_idx
    ON refresh_tokens (used_at) WHERE successor_ciphertext IS NOT NULL;
