-- The service runs as a role that owns nothing, and audit history has no
-- client-settable bypass.
--
-- Before: the service owned every table, and the append-only trigger let
-- any session that set `mobile_backend.audit_retention` delete sealed
-- rows; with the service's own credentials (an SQL-capable foothold) one
-- could cut recent history and let the sealer re-seal the rest. Now:
--
-- * Tables, triggers and functions belong to the role that runs the
--   migrations (the owner: MIGRATION_DATABASE_URL). The service logs in as
--   a role that is a member of the NOLOGIN group `mobile_backend_app`,
--   created here, which holds only the grants below: it cannot alter or
--   disable a trigger, drop a table, update or delete an audit row (it may
--   only set the two chain columns, which the trigger allows once), or
--   write a checkpoint or the retention policy. Operators run, once:
--   `GRANT mobile_backend_app TO <service login role>`.
-- * Retention deletes only through `audit_apply_retention()`, a SECURITY
--   DEFINER function owned by the owner, with its search_path pinned: it
--   deletes sealed rows older than the retention period the owner recorded
--   (`audit_retention_policy`, written by `migrate` from
--   AUDIT_RETENTION_DAYS), by the database's clock, and writes the
--   checkpoint first. The trigger lets a sealed row go only in a
--   transaction that wrote a checkpoint covering it (no GUC is consulted).
-- * New rows (hash version 2) seal a salted digest of their IP address and
--   user agent instead of the values, so `audit_erase_client_details()`
--   can clear both (and the salt) when an account is deleted and the chain
--   still verifies; the digest without its salt links to no one.
--
-- When the service and the migrations use the same role (development),
-- that role owns everything as before; the trigger rules still hold.

-- The group role (cluster-wide, so it may exist already). Creating it needs
-- CREATEROLE; a DBA can create it beforehand instead.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mobile_backend_app') THEN
        BEGIN
            CREATE ROLE mobile_backend_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL; -- another database on this server created it meanwhile
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'the migration role may not create the group role mobile_backend_app'
                    USING HINT = 'Create it once as a superuser (CREATE ROLE mobile_backend_app NOLOGIN), then run migrate again.';
        END;
    END IF;
END
$$;

-- Hash version 2: the chain covers a salted digest of (IP, user agent).
ALTER TABLE audit_events
    ADD COLUMN hash_version  smallint NOT NULL DEFAULT 1,
    ADD COLUMN client_salt   bytea,
    ADD COLUMN client_digest bytea,
    ADD CONSTRAINT audit_events_hash_version_valid CHECK (hash_version IN (1, 2)),
    ADD CONSTRAINT audit_events_client_salt_length CHECK (length(client_salt) = 16);
ALTER TABLE audit_events ALTER COLUMN hash_version SET DEFAULT 2;

-- Rows not sealed yet have no hash: they move to version 2 now, so every
-- row sealed from here on is erasable. (Rows sealed before keep version 1
-- and their client details until retention removes them.)
ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only;
UPDATE audit_events
SET hash_version = 2,
    client_salt = CASE WHEN ip IS NOT NULL OR user_agent IS NOT NULL THEN uuid_send(gen_random_uuid()) END
WHERE chain_pos IS NULL;
UPDATE audit_events
SET client_digest = sha256(client_salt || convert_to(jsonb_build_array(host(ip), user_agent)::text, 'UTF8'))
WHERE chain_pos IS NULL AND client_salt IS NOT NULL;
ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only;

-- Every insert: the database's own time, unsealed, version 2, and the
-- salted digest computed here (a writer cannot supply its own).
CREATE FUNCTION audit_events_prepare_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.inserted_at := clock_timestamp();
    NEW.chain_pos := NULL;
    NEW.chain_hash := NULL;
    NEW.hash_version := 2;
    IF NEW.ip IS NULL AND NEW.user_agent IS NULL THEN
        NEW.client_salt := NULL;
        NEW.client_digest := NULL;
    ELSE
        NEW.client_salt := uuid_send(gen_random_uuid());
        NEW.client_digest := sha256(NEW.client_salt
            || convert_to(jsonb_build_array(host(NEW.ip), NEW.user_agent)::text, 'UTF8'));
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_events_prepare
    BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_prepare_insert();

-- Which transaction wrote a checkpoint: the retention delete must be in it.
ALTER TABLE audit_checkpoints
    ADD COLUMN created_xact xid8 NOT NULL DEFAULT pg_current_xact_id();

-- The append-only rule, with exactly three exceptions: sealing (the chain
-- columns set once, at the next position after the head or the latest
-- checkpoint, nothing else changing: a row cannot be parked outside the
-- walked chain, where verify would not see it and retention would take
-- it); erasure (a version-2 row's IP,
-- user agent and salt cleared, nothing else changing: the sealed digest
-- stays); and deleting a sealed row in the transaction that wrote a
-- checkpoint at or after it (only the owner can write checkpoints).
CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.chain_pos IS NULL AND NEW.chain_pos IS NOT NULL AND NEW.chain_hash IS NOT NULL
           AND NEW.chain_pos = 1 + greatest(
                   (SELECT coalesce(max(e.chain_pos), 0) FROM audit_events e),
                   (SELECT coalesce(max(c.chain_pos), 0) FROM audit_checkpoints c))
           AND to_jsonb(NEW) - '{chain_pos,chain_hash}'::text[]
               = to_jsonb(OLD) - '{chain_pos,chain_hash}'::text[]
        THEN
            RETURN NEW;
        END IF;
        IF OLD.hash_version = 2
           AND (OLD.ip IS NOT NULL OR OLD.user_agent IS NOT NULL OR OLD.client_salt IS NOT NULL)
           AND NEW.ip IS NULL AND NEW.user_agent IS NULL AND NEW.client_salt IS NULL
           AND to_jsonb(NEW) - '{ip,user_agent,client_salt}'::text[]
               = to_jsonb(OLD) - '{ip,user_agent,client_salt}'::text[]
        THEN
            RETURN NEW;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.chain_pos IS NOT NULL AND EXISTS (
            SELECT 1 FROM audit_checkpoints c
            WHERE c.created_xact = pg_current_xact_id() AND c.chain_pos >= OLD.chain_pos)
        THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- The retention period the database enforces; only the owner writes it.
CREATE TABLE audit_retention_policy (
    singleton      boolean     NOT NULL DEFAULT true,
    retention_days integer     NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_retention_policy_pkey PRIMARY KEY (singleton),
    CONSTRAINT audit_retention_policy_singleton CHECK (singleton),
    CONSTRAINT audit_retention_policy_days_range CHECK (retention_days BETWEEN 1 AND 3650)
);
INSERT INTO audit_retention_policy (retention_days) VALUES (365);

-- Retention: under the chain lock, deletes the sealed rows from the
-- origin up to (not including) the first sealed row inserted within the
-- period, after writing the checkpoint that keeps the rest verifiable.
-- Returns how many rows went and the checkpoint's position (0, NULL when
-- nothing was due).
CREATE FUNCTION audit_apply_retention(OUT deleted_rows bigint, OUT up_to_chain_pos bigint, OUT retention_days integer)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_cutoff timestamptz;
    v_keep   bigint;
    v_hash   bytea;
BEGIN
    deleted_rows := 0;
    PERFORM pg_advisory_xact_lock(30788943182326132); -- audit::chain::CHAIN_LOCK
    SELECT p.retention_days INTO retention_days FROM audit_retention_policy p;
    IF retention_days IS NULL THEN
        RAISE EXCEPTION 'audit_retention_policy is empty';
    END IF;
    v_cutoff := now() - make_interval(days => retention_days);
    SELECT min(e.chain_pos) INTO v_keep
    FROM audit_events e WHERE e.chain_pos IS NOT NULL AND e.inserted_at >= v_cutoff;
    IF v_keep IS NULL THEN
        SELECT max(e.chain_pos) INTO up_to_chain_pos FROM audit_events e WHERE e.chain_pos IS NOT NULL;
    ELSE
        up_to_chain_pos := v_keep - 1;
    END IF;
    IF up_to_chain_pos IS NULL
       OR up_to_chain_pos <= (SELECT coalesce(max(c.chain_pos), 0) FROM audit_checkpoints c) THEN
        up_to_chain_pos := NULL;
        RETURN;
    END IF;
    SELECT e.chain_hash INTO v_hash FROM audit_events e WHERE e.chain_pos = up_to_chain_pos;
    IF v_hash IS NULL THEN
        RAISE EXCEPTION 'audit chain position % is missing: run audit verify', up_to_chain_pos;
    END IF;
    SELECT count(*) INTO deleted_rows FROM audit_events e
    WHERE e.chain_pos <= up_to_chain_pos AND e.inserted_at < v_cutoff;
    INSERT INTO audit_checkpoints (audit_checkpoint_id, created_at, chain_pos, chain_hash, deleted_rows)
    VALUES (gen_random_uuid(), now(), up_to_chain_pos, v_hash, deleted_rows);
    DELETE FROM audit_events e WHERE e.chain_pos <= up_to_chain_pos AND e.inserted_at < v_cutoff;
END;
$$;

-- Erasure on account deletion: the IP address, user agent and salt of the
-- version-2 rows about the (already deleted) account that its own client
-- wrote, and of rows it wrote as staff. Rows a staff member wrote about
-- the account keep that staff member's details.
CREATE FUNCTION audit_erase_client_details(p_user_id uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    n bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM users u WHERE u.user_id = p_user_id) THEN
        RAISE EXCEPTION 'client details are erased only for a deleted account'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE audit_events e
    SET ip = NULL, user_agent = NULL, client_salt = NULL
    WHERE e.hash_version = 2
      AND ((e.user_id = p_user_id AND (e.actor_id IS NULL OR e.actor_id = p_user_id))
           OR e.actor_id = p_user_id)
      AND (e.ip IS NOT NULL OR e.user_agent IS NOT NULL OR e.client_salt IS NOT NULL);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- Pin the search_path of the definer functions (and of the trigger
-- functions they fire) to this schema, then pg_temp last, so a caller's
-- temporary tables or functions cannot stand in for ours.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION audit_apply_retention() SET search_path = pg_catalog, %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION audit_erase_client_details(uuid) SET search_path = pg_catalog, %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION audit_events_refuse_change() SET search_path = pg_catalog, %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION audit_events_prepare_insert() SET search_path = pg_catalog, %I, pg_temp', current_schema());
END
$$;
REVOKE ALL ON FUNCTION audit_apply_retention() FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_erase_client_details(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_apply_retention() TO mobile_backend_app;
GRANT EXECUTE ON FUNCTION audit_erase_client_details(uuid) TO mobile_backend_app;

-- The service's grants: data access on every table, then narrowed on the
-- audit tables, the retention policy and the migration history. Tables
-- that later migrations create get the same data access by default (an
-- append-only table must narrow it like audit_events).
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO mobile_backend_app', current_schema());
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO mobile_backend_app', current_schema());
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO mobile_backend_app', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO mobile_backend_app', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO mobile_backend_app', current_schema());
    IF to_regclass('_sqlx_migrations') IS NOT NULL THEN
        REVOKE ALL ON TABLE _sqlx_migrations FROM mobile_backend_app;
        GRANT SELECT ON TABLE _sqlx_migrations TO mobile_backend_app;
    END IF;
END
$$;
REVOKE ALL ON TABLE audit_events, audit_checkpoints, audit_retention_policy FROM mobile_backend_app;
GRANT SELECT, INSERT ON TABLE audit_events TO mobile_backend_app;
GRANT UPDATE (chain_pos, chain_hash) ON TABLE audit_events TO mobile_backend_app;
GRANT SELECT ON TABLE audit_checkpoints, audit_retention_policy TO mobile_backend_app;
