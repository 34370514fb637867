-- The audit trail: who did what, when, from where, with what outcome.
-- Append-only: triggers refuse UPDATE, DELETE and TRUNCATE, so a bug or an
-- injected statement in the application cannot rewrite history. (A later
-- retention job deletes through an explicit, audited, privileged path.)
CREATE TABLE audit_events (
    audit_event_id uuid        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    event_type     text        NOT NULL,
    outcome        text        NOT NULL,
    user_id        uuid,
    actor_id       uuid,
    session_id     uuid,
    ip             inet,
    user_agent     text,
    request_id     text,
    details        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT audit_events_pkey PRIMARY KEY (audit_event_id),
    CONSTRAINT audit_events_event_type_format CHECK (event_type ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' AND length(event_type) <= 64),
    CONSTRAINT audit_events_outcome_valid CHECK (outcome IN ('success', 'failure', 'denied')),
    CONSTRAINT audit_events_user_agent_length CHECK (length(user_agent) <= 256),
    CONSTRAINT audit_events_request_id_length CHECK (length(request_id) <= 128),
    CONSTRAINT audit_events_details_object CHECK (jsonb_typeof(details) = 'object')
);

CREATE INDEX audit_events_user_time_idx ON audit_events (user_id, occurred_at DESC);
CREATE INDEX audit_events_type_time_idx ON audit_events (event_type, occurred_at DESC);
CREATE INDEX audit_events_time_idx ON audit_events (occurred_at DESC);

CREATE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();
