-- Shared phones. A push token registered by one account stayed that
-- account's after it signed out and another signed in on the same phone,
-- so the first account's notifications reached the second person. Now:
--
-- * A push token belongs to one account at most, the latest to register
--   it: uniqueness is on the blind index alone (it was per account). Rows
--   already holding one token under several accounts keep the most
--   recently seen registration; the others are removed here.
-- * A registration remembers the session that made it, and ends with that
--   session (logout, logout-all, revocation, a password change or reset,
--   a lock, account deletion). Rows from before this migration have no
--   session and stay until deleted or registered again.
DELETE FROM devices d
 USING devices newer
 WHERE newer.push_token_index = d.push_token_index
   AND newer.device_id <> d.device_id
   AND (newer.last_seen_at, newer.device_id) > (d.last_seen_at, d.device_id);
ALTER TABLE devices DROP CONSTRAINT devices_user_token_key;
ALTER TABLE devices ADD CONSTRAINT devices_push_token_key UNIQUE (push_token_index);
ALTER TABLE devices ADD COLUMN session_id uuid;
ALTER TABLE devices
    ADD CONSTRAINT devices_session_fkey FOREIGN KEY (session_id)
        REFERENCES sessions (session_id) ON DELETE CASCADE;
CREATE INDEX devices_session_idx ON devices (session_id) WHERE session_id IS NOT NULL;
