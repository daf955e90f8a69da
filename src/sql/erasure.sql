/*
 * erasure: erasure in stages (trash, restore, purge), legal holds, and the
 * suppression list that keeps a purged person from being created again.
 *
 * erase_subject() moves a subject to the trash: subject_state.trashed_at,
 * announced like every change of a subject's state, hides it at once from
 * every purpose (the row filter) and withholds its data key from every
 * role but superusers (the key cache).  Nothing is deleted, and
 * restore_subject() brings everything back until gdprcrm.trash_retention
 * has passed.  purge_subject() deletes (or anonymises) its rows in every
 * registered table, moves its identifiers to the suppression list as keyed
 * hashes, destroys its data key and reduces its consent and restriction
 * ledger rows to what proves the erasure.  A legal hold blocks erasure to
 * the trash and the purge.
 *
 * Every stage takes the subject's state row lock (lock_subject_state),
 * which consent changes, holds and key shredding take too: the stages of
 * one subject serialise, and a purge that waited for another finds the
 * subject purged and does nothing.  A purge is one transaction: a crash at
 * any point of it leaves the subject as it was before, never half purged,
 * and calling it again purges it.
 */

/* C side: the per-call checks, from each backend's copy of the states. */
CREATE FUNCTION @extschema@.in_trash(subject bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'gdprcrm_in_trash' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.in_trash(bigint) IS
    'Whether a subject is in the trash or was purged from it (for identify and import_people)';
REVOKE ALL ON FUNCTION @extschema@.in_trash(bigint) FROM PUBLIC;

CREATE FUNCTION @extschema@.require_not_erased(project bigint, subject bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'gdprcrm_require_not_erased' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.require_not_erased(bigint, bigint) IS
    'Raise when a person of the project is in the trash (55000) or purged (22023): for the write functions';
REVOKE ALL ON FUNCTION @extschema@.require_not_erased(bigint, bigint) FROM PUBLIC;

/*
 * The purge's DELETE or UPDATE of a registered table, run as the table's
 * owner: its triggers and functions never run with the rights of the
 * purge's owner, a superuser (erasure.c).
 */
CREATE FUNCTION @extschema@.purge_rows(tab regclass, statement text, subjects bigint[]) RETURNS bigint
    AS 'MODULE_PATHNAME', 'gdprcrm_purge_rows' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.purge_rows(regclass, text, bigint[]) IS
    'Run a purge statement on a registered table as the table''s owner (for purge_subject)';
REVOKE ALL ON FUNCTION @extschema@.purge_rows(regclass, text, bigint[]) FROM PUBLIC;

/*
 * Legal holds (GDPR Art. 17(3)(e)): one row per hold, kept after its
 * release.  At most one hold of a subject is current.  Rows are never
 * deleted, and only their release is ever written after them.
 */
CREATE TABLE @extschema@.legal_hold_history (
    id bigint GENERATED ALWAYS AS IDENTITY,
    subject bigint NOT NULL,
    project_id bigint,
    reason text NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    placed_by name NOT NULL,
    released_at timestamptz,
    released_by name,
    PRIMARY KEY (subject, id),
    CHECK ((released_at IS NULL) = (released_by IS NULL))
);
CREATE UNIQUE INDEX legal_hold_history_current ON @extschema@.legal_hold_history (subject)
    WHERE released_at IS NULL;
COMMENT ON TABLE @extschema@.legal_hold_history IS
    'Legal holds placed on subjects and their release: a held subject can be neither erased nor purged';
REVOKE ALL ON @extschema@.legal_hold_history FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.legal_hold_history', '');
ALTER TABLE @extschema@.legal_hold_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.legal_hold_history FORCE ROW LEVEL SECURITY;
CREATE POLICY team_only ON @extschema@.legal_hold_history USING (@extschema@.in_team(project_id));

CREATE FUNCTION @extschema@.protect_legal_holds() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.released_at IS NULL AND NEW.released_at IS NOT NULL
           AND (NEW.id, NEW.subject, NEW.project_id, NEW.reason, NEW.placed_at, NEW.placed_by)
               IS NOT DISTINCT FROM (OLD.id, OLD.subject, OLD.project_id, OLD.reason, OLD.placed_at, OLD.placed_by) THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'legal holds are kept as they were placed' USING ERRCODE = 'insufficient_privilege',
        HINT = 'Release a hold with gdprcrm.release_legal_hold().';
END $$;
COMMENT ON FUNCTION @extschema@.protect_legal_holds() IS
    'Trigger keeping legal holds as placed: only their release is written';
REVOKE ALL ON FUNCTION @extschema@.protect_legal_holds() FROM PUBLIC;
CREATE TRIGGER kept BEFORE UPDATE OR DELETE ON @extschema@.legal_hold_history
    FOR EACH ROW EXECUTE FUNCTION @extschema@.protect_legal_holds();
CREATE TRIGGER kept_truncate BEFORE TRUNCATE ON @extschema@.legal_hold_history
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.protect_legal_holds();

CREATE VIEW @extschema@.legal_holds WITH (security_barrier, security_invoker = true) AS
    SELECT h.subject, h.project_id, h.reason, h.placed_at, h.placed_by, h.id AS hold_id
    FROM @extschema@.legal_hold_history h
    WHERE h.released_at IS NULL;
COMMENT ON VIEW @extschema@.legal_holds IS
    'Current legal holds: subjects that can be neither erased nor purged until released';
REVOKE ALL ON @extschema@.legal_holds FROM PUBLIC;

/*
 * The suppression list: identifiers of purged people, per project, as the
 * blind indexes person_identities keys them by (keyed hashes, never the
 * value).  identify() and import_people() create nobody for them, and the
 * triggers below refuse them in people and person_identities.  subject is
 * the purged subject they came from, for the rights log.
 */
CREATE TABLE @extschema@.suppressed_identifiers (
    project_id bigint NOT NULL,
    kind text NOT NULL CHECK (kind IN ('external_id', 'email')),
    key bytea NOT NULL,
    subject bigint NOT NULL,
    suppressed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (project_id, kind, key)
);
COMMENT ON TABLE @extschema@.suppressed_identifiers IS
    'Identifiers of purged people (blind indexes of email and external id) that are not identified again';
REVOKE ALL ON @extschema@.suppressed_identifiers FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.suppressed_identifiers', '');
ALTER TABLE @extschema@.suppressed_identifiers ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.suppressed_identifiers FORCE ROW LEVEL SECURITY;
CREATE POLICY team_only ON @extschema@.suppressed_identifiers USING (@extschema@.in_team(project_id));

/*
 * A suppressed identifier written into people or person_identities by
 * anyone, past identify(), is refused.  Inserts are checked once per
 * statement over its new rows (import_people inserts thousands at once);
 * updates row by row, and only where an identifier changes, so that the
 * updates of last_seen_at by track() pay nothing.  SECURITY DEFINER: the
 * writer need not read the list, nor hash external ids.
 */
CREATE FUNCTION @extschema@.refuse_suppressed_identifiers() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        IF NOT EXISTS (SELECT 1 FROM @extschema@.suppressed_identifiers) THEN
            RETURN NULL;
        END IF;
        IF TG_TABLE_NAME = 'people' THEN
            IF NOT EXISTS (SELECT 1 FROM new_rows n JOIN @extschema@.suppressed_identifiers s
                           ON s.project_id = n.project_id AND s.kind = 'email' AND s.key = n.email_bidx)
               AND NOT EXISTS (SELECT 1 FROM new_rows n JOIN @extschema@.suppressed_identifiers s
                               ON s.project_id = n.project_id AND s.kind = 'external_id'
                              AND s.key = @extschema@.blind_index(n.external_id, 'external_id')
                               WHERE n.external_id IS NOT NULL) THEN
                RETURN NULL;
            END IF;
        ELSIF NOT EXISTS (SELECT 1 FROM new_rows n JOIN @extschema@.suppressed_identifiers s
                          ON s.project_id = n.project_id AND s.kind = n.kind AND s.key = n.key) THEN
            RETURN NULL;
        END IF;
    ELSIF TG_TABLE_NAME = 'people' THEN
        IF NOT (NEW.email_bidx IS DISTINCT FROM OLD.email_bidx AND EXISTS (
                    SELECT 1 FROM @extschema@.suppressed_identifiers s
                    WHERE s.project_id = NEW.project_id AND s.kind = 'email' AND s.key = NEW.email_bidx))
           AND NOT (NEW.external_id IS DISTINCT FROM OLD.external_id AND NEW.external_id IS NOT NULL AND EXISTS (
                    SELECT 1 FROM @extschema@.suppressed_identifiers s
                    WHERE s.project_id = NEW.project_id AND s.kind = 'external_id'
                      AND s.key = @extschema@.blind_index(NEW.external_id, 'external_id'))) THEN
            RETURN NEW;
        END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM @extschema@.suppressed_identifiers s
                      WHERE s.project_id = NEW.project_id AND s.kind = NEW.kind AND s.key = NEW.key) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'an email or external id of a purged person is suppressed in this project'
        USING ERRCODE = 'check_violation',
              DETAIL = 'The person was purged at their request; gdprcrm does not let them be created again.',
              HINT = 'If the person comes back and asks, gdprcrm.unsuppress() lifts the suppression.';
END $$;
COMMENT ON FUNCTION @extschema@.refuse_suppressed_identifiers() IS
    'Trigger refusing suppressed identifiers in people and person_identities';
REVOKE ALL ON FUNCTION @extschema@.refuse_suppressed_identifiers() FROM PUBLIC;
CREATE TRIGGER refuse_suppressed AFTER INSERT ON @extschema@.people
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.refuse_suppressed_identifiers();
CREATE TRIGGER refuse_suppressed_update BEFORE UPDATE ON @extschema@.people
    FOR EACH ROW WHEN (NEW.email_bidx IS DISTINCT FROM OLD.email_bidx OR NEW.external_id IS DISTINCT FROM OLD.external_id)
    EXECUTE FUNCTION @extschema@.refuse_suppressed_identifiers();
CREATE TRIGGER refuse_suppressed AFTER INSERT ON @extschema@.person_identities
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.refuse_suppressed_identifiers();
CREATE TRIGGER refuse_suppressed_update BEFORE UPDATE ON @extschema@.person_identities
    FOR EACH ROW WHEN (NEW.key IS DISTINCT FROM OLD.key OR NEW.kind IS DISTINCT FROM OLD.kind
                       OR NEW.project_id IS DISTINCT FROM OLD.project_id)
    EXECUTE FUNCTION @extschema@.refuse_suppressed_identifiers();

/*
 * The one answer for a held subject: names the hold (its id, when and by
 * whom it was placed), never the subject.  SQLSTATE 55006 (object in use).
 */
CREATE FUNCTION @extschema@.refuse_held(subject bigint, stage text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_hold record;
BEGIN
    SELECT h.id, h.placed_at, h.placed_by INTO v_hold FROM @extschema@.legal_hold_history h
    WHERE h.subject = refuse_held.subject AND h.released_at IS NULL;
    IF FOUND THEN
        RAISE EXCEPTION 'the subject is under legal hold %', v_hold.id
            USING ERRCODE = 'object_in_use',
                  DETAIL = pg_catalog.format('Legal hold %s was placed at %s by %s; a held subject cannot be %s.',
                                             v_hold.id, v_hold.placed_at, v_hold.placed_by, stage),
                  HINT = 'Release the hold with gdprcrm.release_legal_hold() once it no longer applies.';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.refuse_held(bigint, text) IS
    'Raise (55006) when the subject is under a legal hold, naming the hold';
REVOKE ALL ON FUNCTION @extschema@.refuse_held(bigint, text) FROM PUBLIC;

/*
 * The trash retention, gdprcrm.trash_retention, as an interval.  The
 * setting is seconds with time units, and shows in its largest exact unit
 * ('30d', '90min'), which the interval input reads.
 */
CREATE FUNCTION @extschema@.trash_retention() RETURNS interval
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.current_setting('gdprcrm.trash_retention')::interval
$$;
COMMENT ON FUNCTION @extschema@.trash_retention() IS
    'gdprcrm.trash_retention as an interval: how long a subject in the trash stays restorable';

/*
 * erase_subject: move a subject to the trash.  True when this call did,
 * false when the subject already was in the trash or purged.
 */
CREATE FUNCTION @extschema@.erase_subject(subject bigint, reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint := @extschema@.require_subject_admin(subject);
    v_state @extschema@.subject_state;
BEGIN
    IF v_project IS NULL THEN
        RAISE EXCEPTION 'no such person' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Subjects are erased by the id of their person in gdprcrm.people.';
    END IF;
    PERFORM @extschema@.lock_subject_state(subject);
    SELECT * INTO v_state FROM @extschema@.subject_state s WHERE s.subject = erase_subject.subject;
    IF v_state.trashed_at IS NOT NULL OR v_state.purged_at IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM @extschema@.refuse_held(subject, 'erased');
    UPDATE @extschema@.subject_state s SET trashed_at = pg_catalog.now(), project_id = v_project,
        updated_at = pg_catalog.now()
    WHERE s.subject = erase_subject.subject;
    PERFORM @extschema@.publish_state_change(subject);
    PERFORM @extschema@.log_right(subject, v_project, 'erase', 'trash', reason);
    RETURN true;
END $$;
COMMENT ON FUNCTION @extschema@.erase_subject(bigint, text) IS
    'Move a subject to the trash: hidden from every purpose and role at once, restorable until gdprcrm.trash_retention has passed';

/*
 * restore_subject: take a subject out of the trash.  True when this call
 * did, false when it was not in the trash.
 */
CREATE FUNCTION @extschema@.restore_subject(subject bigint)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint := @extschema@.require_subject_admin(subject);
    v_state @extschema@.subject_state;
BEGIN
    IF v_project IS NULL THEN
        RAISE EXCEPTION 'no such person' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM @extschema@.lock_subject_state(subject);
    SELECT * INTO v_state FROM @extschema@.subject_state s WHERE s.subject = restore_subject.subject;
    IF v_state.purged_at IS NOT NULL THEN
        RAISE EXCEPTION 'the subject was purged and cannot be restored'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF v_state.erased_at IS NOT NULL THEN
        RAISE EXCEPTION 'the subject was erased and cannot be restored'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its data key was destroyed.';
    END IF;
    IF v_state.trashed_at IS NULL THEN
        RETURN false;
    END IF;
    IF v_state.trashed_at <= pg_catalog.now() - @extschema@.trash_retention() THEN
        RAISE EXCEPTION 'the subject has been in the trash for longer than gdprcrm.trash_retention'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'It can only be purged now, with gdprcrm.purge_subject().';
    END IF;
    UPDATE @extschema@.subject_state s SET trashed_at = NULL, updated_at = pg_catalog.now()
    WHERE s.subject = restore_subject.subject;
    PERFORM @extschema@.publish_state_change(subject);
    PERFORM @extschema@.log_right(subject, v_project, 'restore', 'trash', NULL);
    RETURN true;
END $$;
COMMENT ON FUNCTION @extschema@.restore_subject(bigint) IS
    'Take a subject out of the trash, until gdprcrm.trash_retention has passed';

/*
 * purge_subject: erase a subject for good, from the trash or at once.
 * True when this call purged it, false when it already was purged.
 *
 * One transaction, in steps that each leave the next one's inputs in
 * place: mark the subject trashed (hidden from everyone at commit); copy
 * its identifiers to the suppression list while they are still there;
 * delete or anonymise its rows in every registered table; destroy its data
 * key, which records the erasure (and lets the ledger trigger accept the
 * next step); reduce its ledger rows; mark it purged and log it.  A crash
 * anywhere rolls all of it back.  People merged into the subject earlier
 * (merge_people() leaves their row, emptied, with their external id) are
 * purged with it.
 *
 * Tables are emptied application tables first, the CRM tables next and
 * people last; a table whose rows another table still refers to through a
 * foreign key is tried again after the others (each attempt in a
 * subtransaction), so any order of dependencies between registered tables
 * works.  An anonymised table must not refer to people through its subject
 * column, or the person cannot be deleted.  Each statement runs as its
 * table's owner (purge_rows), so that an application's triggers on its
 * own table never run with the rights of this function's owner.
 *
 * Locks: the person row first, then the subject's state, the order of
 * identify() and merge_people(); holding the person keeps concurrent
 * writes that refer to it (track, add_message) waiting until the purge
 * ends, when they fail on the missing person.
 */
CREATE FUNCTION @extschema@.purge_subject(subject bigint, reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint := @extschema@.require_subject_admin(subject);
    v_state @extschema@.subject_state;
    v_subjects bigint[];
    v_pending regclass[];
    v_left regclass[];
    v_table @extschema@.registered_tables;
    v_relation regclass;
    v_rows bigint;
    v_deleted bigint := 0;
    v_anonymised bigint := 0;
    v_error text;
BEGIN
    IF v_project IS NULL THEN
        RAISE EXCEPTION 'no such person' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Subjects are purged by the id of their person in gdprcrm.people.';
    END IF;
    PERFORM FROM @extschema@.people p WHERE p.id = subject FOR UPDATE;
    PERFORM @extschema@.lock_subject_state(subject);
    SELECT * INTO v_state FROM @extschema@.subject_state s WHERE s.subject = purge_subject.subject;
    IF v_state.purged_at IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM @extschema@.refuse_held(subject, 'purged');

    -- Hidden from everyone from its commit on, as in the trash.
    UPDATE @extschema@.subject_state s SET trashed_at = coalesce(s.trashed_at, pg_catalog.now()),
        project_id = v_project, updated_at = pg_catalog.now()
    WHERE s.subject = purge_subject.subject;
    PERFORM @extschema@.publish_state_change(subject);

    SELECT ARRAY[subject] || coalesce(array_agg(p.id ORDER BY p.id), '{}') INTO v_subjects
    FROM @extschema@.people p WHERE p.merged_into = subject AND p.project_id = v_project;

    -- Identifiers, as keyed hashes, before their rows go.
    INSERT INTO @extschema@.suppressed_identifiers (project_id, kind, key, subject)
    SELECT v_project, x.kind, x.key, subject
    FROM (SELECT i.kind, i.key FROM @extschema@.person_identities i
          WHERE i.person_id = ANY (v_subjects) AND i.project_id = v_project
          UNION
          SELECT 'email', p.email_bidx FROM @extschema@.people p
          WHERE p.id = ANY (v_subjects) AND p.project_id = v_project AND p.email_bidx IS NOT NULL
          UNION
          SELECT 'external_id', @extschema@.blind_index(p.external_id, 'external_id') FROM @extschema@.people p
          WHERE p.id = ANY (v_subjects) AND p.project_id = v_project AND p.external_id IS NOT NULL) AS x
    ON CONFLICT DO NOTHING;

    -- Rows of every registered table.
    v_pending := ARRAY(SELECT r.relation FROM @extschema@.registered_tables r
                       ORDER BY r.relation = '@extschema@.people'::regclass, r.builtin, r.relation::text);
    LOOP
        v_left := '{}';
        FOREACH v_relation IN ARRAY v_pending LOOP
            SELECT * INTO v_table FROM @extschema@.registered_tables r WHERE r.relation = v_relation;
            BEGIN
                IF v_table.on_purge = 'anonymise' THEN
                    v_rows := @extschema@.purge_rows(v_relation,
                        pg_catalog.format('UPDATE %s SET %s WHERE %I OPERATOR(pg_catalog.=) ANY ($1)',
                            v_relation,
                            (SELECT pg_catalog.string_agg(pg_catalog.format('%I = NULL', c), ', ')
                             FROM unnest(v_table.anonymise_columns) AS c),
                            v_table.subject_column),
                        v_subjects);
                    v_anonymised := v_anonymised + v_rows;
                ELSE
                    v_rows := @extschema@.purge_rows(v_relation,
                        pg_catalog.format('DELETE FROM %s WHERE %I OPERATOR(pg_catalog.=) ANY ($1)',
                            v_relation, v_table.subject_column),
                        v_subjects);
                    v_deleted := v_deleted + v_rows;
                END IF;
            EXCEPTION WHEN foreign_key_violation THEN
                v_left := v_left || v_relation;
                GET STACKED DIAGNOSTICS v_error = MESSAGE_TEXT;
            END;
        END LOOP;
        EXIT WHEN pg_catalog.cardinality(v_left) = 0;
        IF pg_catalog.cardinality(v_left) = pg_catalog.cardinality(v_pending) THEN
            RAISE EXCEPTION 'could not purge the rows of % of the subject', v_left[1]
                USING ERRCODE = 'foreign_key_violation', DETAIL = v_error,
                      HINT = 'A row that is kept (anonymised, or in a table that is not registered) refers to a row of the subject.';
        END IF;
        v_pending := v_left;
    END LOOP;

    -- The data key: a tombstone stays, and the erasure is recorded.
    PERFORM @extschema@.shred_subject_key(x) FROM unnest(v_subjects) AS x;

    -- The ledgers keep what proves consent and its end; evidence, its
    -- source and method, and the reasons of restrictions go.
    UPDATE @extschema@.consent_events e SET source = NULL, method = NULL, evidence = NULL
    WHERE e.subject = ANY (v_subjects)
      AND (e.source IS NOT NULL OR e.method IS NOT NULL OR e.evidence IS NOT NULL);
    UPDATE @extschema@.restriction_events e SET reason = NULL
    WHERE e.subject = ANY (v_subjects) AND e.reason IS NOT NULL;

    UPDATE @extschema@.subject_state s SET purged_at = pg_catalog.now(), updated_at = pg_catalog.now()
    WHERE s.subject = purge_subject.subject;
    PERFORM @extschema@.publish_state_change(subject);
    PERFORM @extschema@.log_right(subject, v_project, 'purge',
        pg_catalog.format('%s: %s rows deleted, %s anonymised',
                          CASE WHEN v_state.trashed_at IS NULL THEN 'at once' ELSE 'from the trash' END,
                          v_deleted, v_anonymised),
        reason);
    RETURN true;
END $$;
COMMENT ON FUNCTION @extschema@.purge_subject(bigint, text) IS
    'Erase a subject for good: rows deleted or anonymised, data key destroyed, identifiers suppressed, ledgers reduced';

/* Subjects whose trash retention has passed and that no hold keeps. */
CREATE FUNCTION @extschema@.expired_trash()
RETURNS TABLE (subject bigint, project_id bigint, trashed_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_caller name := @extschema@.calling_role();
    v_super boolean;
BEGIN
    v_super := (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) v_caller);
    IF NOT v_super AND NOT pg_catalog.pg_has_role(v_caller, 'gdprcrm_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'only superusers and members of gdprcrm_admin may list the trash'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
        SELECT s.subject, s.project_id, s.trashed_at
        FROM @extschema@.subject_state s
        WHERE s.trashed_at IS NOT NULL AND s.purged_at IS NULL
          AND s.trashed_at <= pg_catalog.now() - @extschema@.trash_retention()
          AND NOT EXISTS (SELECT 1 FROM @extschema@.legal_hold_history h
                          WHERE h.subject = s.subject AND h.released_at IS NULL)
          AND (v_super OR @extschema@.caller_in_team(s.project_id))
        ORDER BY s.trashed_at, s.subject;
END $$;
COMMENT ON FUNCTION @extschema@.expired_trash() IS
    'Subjects in the trash for longer than gdprcrm.trash_retention and under no legal hold: due for purging';

/*
 * Legal holds.  A hold is placed under the subject's state lock, so that
 * it and an erasure or purge of the subject serialise: whichever commits
 * first wins, and a purge that waited for a hold is refused.
 */
CREATE FUNCTION @extschema@.place_legal_hold(subject bigint, reason text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint := @extschema@.require_subject_admin(subject);
    v_id bigint;
BEGIN
    IF coalesce(pg_catalog.btrim(reason), '') = '' THEN
        RAISE EXCEPTION 'a legal hold needs a reason' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_project IS NULL THEN
        RAISE EXCEPTION 'no such person' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM @extschema@.lock_subject_state(subject);
    IF EXISTS (SELECT 1 FROM @extschema@.subject_state s
               WHERE s.subject = place_legal_hold.subject AND s.purged_at IS NOT NULL) THEN
        RAISE EXCEPTION 'the subject was purged' USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = 'Nothing is left to hold.';
    END IF;
    SELECT h.id INTO v_id FROM @extschema@.legal_hold_history h
    WHERE h.subject = place_legal_hold.subject AND h.released_at IS NULL;
    IF FOUND THEN
        RAISE EXCEPTION 'the subject is already under legal hold %', v_id USING ERRCODE = 'duplicate_object',
            HINT = 'Release it first to place another one.';
    END IF;
    INSERT INTO @extschema@.legal_hold_history (subject, project_id, reason, placed_by)
    VALUES (subject, v_project, reason, @extschema@.calling_role())
    RETURNING id INTO v_id;
    PERFORM @extschema@.log_right(subject, v_project, 'place_hold', 'hold ' || v_id, reason);
    RETURN v_id;
END $$;
COMMENT ON FUNCTION @extschema@.place_legal_hold(bigint, text) IS
    'Place a legal hold on a subject (GDPR Art. 17(3)(e)): it can be neither erased nor purged until released; returns the hold id';

CREATE FUNCTION @extschema@.release_legal_hold(subject bigint)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint := @extschema@.require_subject_admin(subject);
    v_id bigint;
BEGIN
    IF v_project IS NULL THEN
        RAISE EXCEPTION 'no such person' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM @extschema@.lock_subject_state(subject);
    UPDATE @extschema@.legal_hold_history h SET released_at = pg_catalog.now(),
        released_by = @extschema@.calling_role()
    WHERE h.subject = release_legal_hold.subject AND h.released_at IS NULL
    RETURNING h.id INTO v_id;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM @extschema@.log_right(subject, v_project, 'release_hold', 'hold ' || v_id, NULL);
    RETURN true;
END $$;
COMMENT ON FUNCTION @extschema@.release_legal_hold(bigint) IS
    'Release the current legal hold of a subject; true if there was one';

/*
 * unsuppress: a purged person who comes back and asks to be known again.
 * Each identifier lifted is logged against the purged subject it came from.
 */
CREATE FUNCTION @extschema@.unsuppress(project bigint, email text DEFAULT NULL, external_id text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_caller name := @extschema@.calling_role();
    v_email_key bytea;
    v_ext_key bytea;
    v_count integer := 0;
    r record;
BEGIN
    IF project IS NULL THEN
        RAISE EXCEPTION 'unsuppress needs a project' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (SELECT x.rolsuper FROM pg_catalog.pg_roles x WHERE x.rolname OPERATOR(pg_catalog.=) v_caller)
       AND NOT (pg_catalog.pg_has_role(v_caller, 'gdprcrm_admin', 'MEMBER')
                AND @extschema@.caller_in_team(project)) THEN
        RAISE EXCEPTION 'permission denied for this project' USING ERRCODE = 'insufficient_privilege',
            HINT = 'Subject rights are exercised by superusers and by gdprcrm_admin members of the project team.';
    END IF;
    IF email IS NULL AND external_id IS NULL THEN
        RAISE EXCEPTION 'unsuppress needs an email or an external id' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF email IS NOT NULL THEN
        v_email_key := @extschema@.blind_index(@extschema@.normalize_email(pg_catalog.btrim(email)), 'email');
    END IF;
    IF external_id IS NOT NULL THEN
        v_ext_key := @extschema@.blind_index(external_id, 'external_id');
    END IF;
    FOR r IN DELETE FROM @extschema@.suppressed_identifiers s
             WHERE s.project_id = unsuppress.project
               AND (s.kind = 'email' AND s.key = v_email_key OR s.kind = 'external_id' AND s.key = v_ext_key)
             RETURNING s.subject, s.kind LOOP
        PERFORM @extschema@.log_right(r.subject, project, 'unsuppress', r.kind, NULL);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END $$;
COMMENT ON FUNCTION @extschema@.unsuppress(bigint, text, text) IS
    'Lift the suppression of a purged person''s email and/or external id in a project; returns how many were lifted';

/*
 * Grants.  Erasure, holds and suppression are for superusers and the
 * gdprcrm_admin members of the subject's team (require_subject_admin);
 * the write functions' check runs as the application.
 */
REVOKE ALL ON FUNCTION @extschema@.trash_retention() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.erase_subject(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.restore_subject(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.purge_subject(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.expired_trash() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.place_legal_hold(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.release_legal_hold(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.unsuppress(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.require_not_erased(bigint, bigint) TO gdprcrm_app, gdprcrm_admin;
GRANT SELECT ON @extschema@.legal_hold_history, @extschema@.legal_holds, @extschema@.suppressed_identifiers
    TO gdprcrm_admin;
GRANT EXECUTE ON FUNCTION
    @extschema@.trash_retention(),
    @extschema@.erase_subject(bigint, text),
    @extschema@.restore_subject(bigint),
    @extschema@.purge_subject(bigint, text),
    @extschema@.expired_trash(),
    @extschema@.place_legal_hold(bigint, text),
    @extschema@.release_legal_hold(bigint),
    @extschema@.unsuppress(bigint, text, text)
    TO gdprcrm_admin;
