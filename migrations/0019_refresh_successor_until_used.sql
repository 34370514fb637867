-- A retired refresh token whose successor has never been used now gets
-- that same successor again at any time within the session's lifetimes,
-- not only within a grace window of a few seconds: an app killed or
-- suspended mid-refresh lost the answer, and must not be signed out (nor
-- the operator paged for "reuse") when it retries hours later. The sealed
-- successor is therefore kept until the successor's first use, and
-- cleared when the session is revoked or, by the sweep, once it expired.
-- The sweep selects by session, not by the time of retirement.
DROP INDEX IF EXISTS refresh_tokens_sealed_successor_idx;
CREATE INDEX refresh_tokens_sealed_successor_session_idx
    ON refresh_tokens (session_id) WHERE successor_ciphertext IS NOT NULL;
