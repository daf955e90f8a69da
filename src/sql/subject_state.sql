/*
 * subject_state: what is known of each subject now (consent, objections,
 * restriction of processing, trash, erasure), the lock that serialises
 * changes of one subject, and the announcement of a change to every backend.
 */

/*
 * The current state of each subject that has any: what the row filter
 * reads.  Every change of a subject's state takes its row lock first
 * (lock_subject_state), so concurrent changes of one subject serialise
 * and the last commit wins.  The consent ledger functions write consent,
 * objections and restriction; erasure writes erased_at; the erasure
 * concern writes trashed_at, project_id and purged_at.  project_id is the
 * subject's project, recorded when it goes to the trash or is purged, so
 * that who may act on it is still known once its person row is gone.
 */
CREATE TABLE @extschema@.subject_state (
    subject bigint PRIMARY KEY,
    consented bigint NOT NULL DEFAULT 0,
    objected bigint NOT NULL DEFAULT 0,
    restricted boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    erased_at timestamptz,
    trashed_at timestamptz,
    project_id bigint,
    purged_at timestamptz
);
COMMENT ON TABLE @extschema@.subject_state IS
    'Current consent (one bit per purpose), objections, restriction and erasure of each subject';
COMMENT ON COLUMN @extschema@.subject_state.erased_at IS
    'When the subject was erased (its data key destroyed); NULL unless it was';
COMMENT ON COLUMN @extschema@.subject_state.trashed_at IS
    'Since when the subject is in the trash (hidden from every purpose, restorable); NULL unless it is';
COMMENT ON COLUMN @extschema@.subject_state.project_id IS
    'The subject''s project, recorded when it went to the trash or was purged';
COMMENT ON COLUMN @extschema@.subject_state.purged_at IS
    'When the subject was purged (its rows deleted, key destroyed, identifiers suppressed)';
/* What waits in the trash, for the listing of expired trash. */
CREATE INDEX subject_state_trash ON @extschema@.subject_state (trashed_at)
    WHERE trashed_at IS NOT NULL AND purged_at IS NULL;
REVOKE ALL ON @extschema@.subject_state FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.subject_state', '');

/*
 * An erasure is permanent, like the key tombstone it goes with: the row
 * filter reads it here, so clearing erased_at or deleting the row would
 * show an erased subject's rows again.  The WHEN clauses keep the trigger
 * off every other change (the consent functions update this table).
 */
CREATE FUNCTION @extschema@.protect_erasure() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.subject = OLD.subject AND NEW.erased_at = OLD.erased_at THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'the erasure of a subject cannot be undone'
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Erasure is recorded by gdprcrm.shred_subject_key() and is permanent.';
END $$;
REVOKE ALL ON FUNCTION @extschema@.protect_erasure() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.protect_erasure() IS
    'Trigger keeping the erasure recorded in subject_state permanent';
CREATE TRIGGER protect_erasure BEFORE UPDATE ON @extschema@.subject_state
    FOR EACH ROW WHEN (OLD.erased_at IS NOT NULL) EXECUTE FUNCTION @extschema@.protect_erasure();
CREATE TRIGGER protect_erasure_delete BEFORE DELETE ON @extschema@.subject_state
    FOR EACH ROW WHEN (OLD.erased_at IS NOT NULL) EXECUTE FUNCTION @extschema@.protect_erasure();
CREATE TRIGGER protect_erasure_truncate BEFORE TRUNCATE ON @extschema@.subject_state
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.protect_erasure();

/*
 * One state row per subject, locked for the rest of the transaction: every
 * change of a subject's state takes it first, so concurrent changes of one
 * subject serialise and the last commit wins.
 */
CREATE FUNCTION @extschema@.lock_subject_state(subject bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO @extschema@.subject_state (subject) VALUES (lock_subject_state.subject)
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM @extschema@.subject_state s WHERE s.subject = lock_subject_state.subject FOR UPDATE;
END $$;
COMMENT ON FUNCTION @extschema@.lock_subject_state(bigint) IS
    'Create if needed and lock a subject''s state row (for the ledger functions)';
REVOKE ALL ON FUNCTION @extschema@.lock_subject_state(bigint) FROM PUBLIC;

CREATE FUNCTION @extschema@.publish_state_change(subject bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'gdprcrm_publish_state_change' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.publish_state_change(bigint) IS
    'Tell every backend, when this transaction commits, that a subject''s state changed';
REVOKE ALL ON FUNCTION @extschema@.publish_state_change(bigint) FROM PUBLIC;
