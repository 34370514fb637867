-- Tamper evidence for the audit trail: each row, once sealed, carries a
-- SHA-256 over the previous row's hash and its own canonical content, in
-- sealing order (chain_pos). Editing or deleting any sealed row breaks
-- every later link, which `mobile-backend audit verify` reports.
--
-- Rows are sealed shortly after they commit by a background pass (no
-- lock on every audited transaction). Retention deletes the oldest sealed
-- rows only through `audit::retention`, which records a checkpoint (the
-- last deleted row's position and hash) so the rest still verifies.
ALTER TABLE audit_events
    ADD COLUMN inserted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ADD COLUMN chain_pos bigint,
    ADD COLUMN chain_hash bytea,
    ADD CONSTRAINT audit_events_chain_sealed_together CHECK ((chain_pos IS NULL) = (chain_hash IS NULL));

CREATE UNIQUE INDEX audit_events_chain_pos_key ON audit_events (chain_pos);
CREATE INDEX audit_events_unsealed_idx ON audit_events (inserted_at) WHERE chain_pos IS NULL;

CREATE TABLE audit_checkpoints (
    audit_checkpoint_id uuid        NOT NULL,
    created_at          timestamptz NOT NULL,
    chain_pos           bigint      NOT NULL,
    chain_hash          bytea       NOT NULL,
    deleted_rows        bigint      NOT NULL,
    CONSTRAINT audit_checkpoints_pkey PRIMARY KEY (audit_checkpoint_id)
);

-- The append-only rule, with exactly two exceptions: sealing (setting the
-- chain columns once, nothing else changing) and a retention delete
-- (inside the transaction that records its checkpoint).
CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.chain_pos IS NULL AND NEW.chain_pos IS NOT NULL
       AND (NEW.audit_event_id, NEW.occurred_at, NEW.event_type, NEW.outcome, NEW.user_id,
            NEW.actor_id, NEW.session_id, NEW.ip, NEW.user_agent, NEW.request_id, NEW.details,
            NEW.inserted_at)
           IS NOT DISTINCT FROM
           (OLD.audit_event_id, OLD.occurred_at, OLD.event_type, OLD.outcome, OLD.user_id,
            OLD.actor_id, OLD.session_id, OLD.ip, OLD.user_agent, OLD.request_id, OLD.details,
            OLD.inserted_at)
    THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND current_setting('mobile_backend.audit_retention', true) = 'on'
       AND OLD.chain_pos IS NOT NULL THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
