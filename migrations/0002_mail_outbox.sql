-- Transactional outbox for email: the message row is written in the same
-- transaction as the change that causes it (no mail for a rolled-back
-- sign-up, no lost mail for a committed one). A background sender delivers
-- with retry and exponential back-off; several processes share the work
-- through row leases (FOR UPDATE SKIP LOCKED).
--
-- Messages carry codes and addresses, so the payload (recipient, subject,
-- body) is sealed with AES-256-GCM, bound to its row, and erased once sent.
CREATE TABLE mail_outbox (
    mail_id         uuid        NOT NULL,
    created_at      timestamptz NOT NULL,
    template        text        NOT NULL,
    payload         bytea,
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    locked_until    timestamptz,
    last_error      text,
    sent_at         timestamptz,
    CONSTRAINT mail_outbox_pkey PRIMARY KEY (mail_id),
    CONSTRAINT mail_outbox_status_valid CHECK (status IN ('pending', 'sent', 'failed')),
    CONSTRAINT mail_outbox_template_format CHECK (template ~ '^[a-z][a-z0-9_]*$'),
    CONSTRAINT mail_outbox_attempts_nonnegative CHECK (attempts >= 0),
    CONSTRAINT mail_outbox_pending_has_payload CHECK (status <> 'pending' OR payload IS NOT NULL)
);

CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at) WHERE status = 'pending';
