-- Security alerts raised by the anomaly rules (src/alerts/rules.rs), with
-- their webhook delivery state, and the country a session signed in from
-- (from a trusted proxy's geo header) for the new-country rule.
CREATE TABLE security_alerts (
    security_alert_id    uuid        NOT NULL,
    created_at           timestamptz NOT NULL,
    rule                 text        NOT NULL,
    severity             text        NOT NULL,
    user_id              uuid,
    ip                   inet,
    details              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    acknowledged_at      timestamptz,
    acknowledged_by      uuid,
    webhook_status       text        NOT NULL DEFAULT 'none',
    webhook_attempts     integer     NOT NULL DEFAULT 0,
    webhook_next_at      timestamptz,
    webhook_locked_until timestamptz,
    CONSTRAINT security_alerts_pkey PRIMARY KEY (security_alert_id),
    CONSTRAINT security_alerts_rule_format CHECK (rule ~ '^[a-z][a-z0-9_]*$'),
    CONSTRAINT security_alerts_severity_valid CHECK (severity IN ('info', 'warning', 'critical')),
    CONSTRAINT security_alerts_webhook_status_valid CHECK (webhook_status IN ('none', 'pending', 'sent', 'failed')),
    CONSTRAINT security_alerts_details_object CHECK (jsonb_typeof(details) = 'object')
);
CREATE INDEX security_alerts_webhook_due_idx ON security_alerts (webhook_next_at) WHERE webhook_status = 'pending';

ALTER TABLE sessions
    ADD COLUMN country text,
    ADD CONSTRAINT sessions_country_format CHECK (country ~ '^[A-Z]{2}$');

-- The failed-login spike rule counts recent failures per IP.
CREATE INDEX audit_events_failed_login_ip_idx ON audit_events (ip, occurred_at DESC)
    WHERE event_type = 'auth.login.failed';

-- Retention checkpoints are part of the tamper evidence: append-only too.
CREATE FUNCTION audit_checkpoints_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_checkpoints is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_refuse_change();
