-- Device-bound sessions (RFC 9449 DPoP, issue #16).
--
-- * sessions.dpop_jkt: the RFC 7638 SHA-256 thumbprint (base64url) of the
--   device key a session was signed in with, or NULL for a bearer
--   session. A bound session refreshes, and its access tokens are used,
--   only with a proof signed by that key. It is set when the session is
--   created and never changed afterwards.
-- * dpop_proofs_seen: the replay cache when REDIS_URL is not configured.
--   One row per accepted proof, keyed by SHA-256(jkt, jti), kept until the
--   proof could no longer pass the age check anyway; the session sweeper
--   deletes older rows. Neither the key thumbprint nor the jti is stored
--   in the clear.
ALTER TABLE sessions ADD COLUMN dpop_jkt text;

CREATE TABLE dpop_proofs_seen (
    proof_hash bytea PRIMARY KEY CHECK (octet_length(proof_hash) = 32),
    expires_at timestamptz NOT NULL
);
CREATE INDEX dpop_proofs_seen_expires_idx ON dpop_proofs_seen (expires_at);
