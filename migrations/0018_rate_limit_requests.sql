-- Users ask for a higher rate-limit tier; staff decide (#18).
--
-- * `rate_limit_requests`: one row per request, kept after a decision or a
--   withdrawal (the 30-day cap counts every request made, withdrawn ones
--   included). The reason and the staff note are personal data: sealed
--   under the owner's data key, bound to (rate_limit_requests, reason |
--   note, request_id), so deleting the account shreds them and the rows go
--   with it (ON DELETE CASCADE). At most one pending request per account,
--   enforced here (a partial unique index) as well as by the handler.
-- * `users.rate_limit_tier_expires_at`: an approved tier may be granted
--   for a number of days; the limiter treats it as `standard` from then on,
--   and a background pass puts `standard` back and audits it.
-- * `rate_limit_refusals`: per account and day, how many `reads`/`writes`
--   requests were refused with 429, so staff decide on evidence. Kept 31
--   days (the background pass deletes older rows), one row per account
--   and day at most.
CREATE TABLE rate_limit_requests (
    request_id        uuid        NOT NULL,
    user_id           uuid        NOT NULL,
    requested_tier    text        NOT NULL,
    reason_ciphertext bytea       NOT NULL,
    status            text        NOT NULL,
    created_at        timestamptz NOT NULL,
    decided_at        timestamptz,
    decided_by        uuid,
    note_ciphertext   bytea,
    tier_expires_at   timestamptz,
    CONSTRAINT rate_limit_requests_pkey PRIMARY KEY (request_id),
    -- `decided_by` (the deciding administrator) has no foreign key, like
    -- the audit trail's actor: the decision keeps naming them after their
    -- own account is deleted, and only `user_id` ties a row to an owner.
    CONSTRAINT rate_limit_requests_user_fkey FOREIGN KEY (user_id)
        REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT rate_limit_requests_tier_valid CHECK (requested_tier IN ('raised', 'high')),
    CONSTRAINT rate_limit_requests_status_valid
        CHECK (status IN ('pending', 'approved', 'denied', 'withdrawn')),
    CONSTRAINT rate_limit_requests_decided_consistent
        CHECK ((status = 'pending') = (decided_at IS NULL)),
    -- A decision always names who made it; nothing else carries a decider
    -- or a note.
    CONSTRAINT rate_limit_requests_decider_consistent
        CHECK ((status IN ('approved', 'denied')) = (decided_by IS NOT NULL)
               AND (status IN ('approved', 'denied') OR note_ciphertext IS NULL)),
    CONSTRAINT rate_limit_requests_expiry_consistent
        CHECK (tier_expires_at IS NULL OR status = 'approved')
);
CREATE UNIQUE INDEX rate_limit_requests_one_pending
    ON rate_limit_requests (user_id) WHERE status = 'pending';
CREATE INDEX rate_limit_requests_user_idx ON rate_limit_requests (user_id, request_id DESC);
CREATE INDEX rate_limit_requests_status_idx ON rate_limit_requests (status, request_id DESC);

ALTER TABLE users
    ADD COLUMN rate_limit_tier_expires_at timestamptz,
    ADD CONSTRAINT users_rate_limit_tier_expiry_consistent
        CHECK (rate_limit_tier_expires_at IS NULL OR rate_limit_tier <> 'standard');
CREATE INDEX users_rate_limit_tier_expiry_idx
    ON users (rate_limit_tier_expires_at) WHERE rate_limit_tier_expires_at IS NOT NULL;

CREATE TABLE rate_limit_refusals (
    refusal_id uuid    NOT NULL,
    user_id    uuid    NOT NULL,
    refused_on date    NOT NULL,
    refusals   integer NOT NULL,
    CONSTRAINT rate_limit_refusals_pkey PRIMARY KEY (refusal_id),
    CONSTRAINT rate_limit_refusals_user_day_key UNIQUE (user_id, refused_on),
    CONSTRAINT rate_limit_refusals_user_fkey FOREIGN KEY (user_id)
        REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT rate_limit_refusals_positive CHECK (refusals > 0)
);
CREATE INDEX rate_limit_refusals_day_idx ON rate_limit_refusals (refused_on);
