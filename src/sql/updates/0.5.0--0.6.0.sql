/*
 * gdprcrm 0.5.0 -> 0.6.0: subject rights.
 *
 * Written by hand beside the concern sources, which say what a fresh
 * install of 0.6.0 has; test/t/012_extension_upgrade.pl checks that this
 * script leads 0.5.0 to the same place.
 */

\echo Use "ALTER EXTENSION gdprcrm UPDATE TO '0.6.0'" to load this file. \quit

/* ---- rights (new concern: src/sql/rights.sql) ---- */

/*
 * rights: the registry of tables that hold personal data, which drives
 * subject access export, erasure and retention; who may act on a subject's
 * rights; the log of what was done; finding a requester's subject ids.
 */

/*
 * The registry.  One row per table holding personal data, with the column
 * that holds its subject id.  The CRM tables are registered by crm.sql;
 * applications register their own.  Encrypted columns are found from the
 * catalog; contexts maps a column to the context its values were
 * encrypted with, and a column without one uses
 * '<schema>.<table>.<column>'.
 */
CREATE TABLE @extschema@.registered_tables (
    relation regclass PRIMARY KEY,
    subject_column name NOT NULL,
    category text,
    description text,
    contexts jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(contexts) = 'object'),
    on_purge text NOT NULL DEFAULT 'delete' CHECK (on_purge IN ('delete', 'anonymise')),
    anonymise_columns name[],
    builtin boolean NOT NULL DEFAULT false,
    registered_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    registered_by name NOT NULL
);
COMMENT ON TABLE @extschema@.registered_tables IS
    'Tables that hold personal data, each with its subject column: what export and erasure reach';
REVOKE ALL ON @extschema@.registered_tables FROM PUBLIC;
-- The CRM tables' rows come back with CREATE EXTENSION; an application's
-- registrations are data.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.registered_tables', 'WHERE NOT builtin');

/*
 * The encrypted columns of a registered table and the context each was
 * encrypted with, in column order.
 */
CREATE FUNCTION @extschema@.encrypted_columns(tab regclass)
RETURNS TABLE (column_name name, type regtype, context text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.attname, a.atttypid::regtype,
           coalesce(r.contexts ->> a.attname,
                    n.nspname || '.' || c.relname || '.' || a.attname)
    FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN @extschema@.registered_tables r ON r.relation = tab
    WHERE a.attrelid = tab AND a.attnum > 0 AND NOT a.attisdropped
      AND a.atttypid IN ('@extschema@.encrypted_text'::regtype, '@extschema@.encrypted_jsonb'::regtype,
                         '@extschema@.encrypted_bytea'::regtype)
    ORDER BY a.attnum
$$;
COMMENT ON FUNCTION @extschema@.encrypted_columns(regclass) IS
    'Encrypted columns of a table and the context of each (from its registration, else schema.table.column)';

CREATE FUNCTION @extschema@.register_table(
    tab regclass, subject_column name, category text DEFAULT NULL, description text DEFAULT NULL,
    contexts jsonb DEFAULT NULL, on_purge text DEFAULT 'delete', anonymise_columns name[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_caller name := @extschema@.calling_role();
    v_kind "char";
    v_owner oid;
    v_type regtype;
    v_column text;
BEGIN
    SELECT c.relkind, c.relowner INTO v_kind, v_owner FROM pg_catalog.pg_class c WHERE c.oid = tab;
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) v_caller) THEN
        IF NOT pg_catalog.pg_has_role(v_caller, 'gdprcrm_admin', 'MEMBER')
           OR NOT pg_catalog.pg_has_role(v_caller, v_owner, 'MEMBER') THEN
            RAISE EXCEPTION 'only a superuser, or a member of gdprcrm_admin who owns the table, may register it'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tab USING ERRCODE = 'wrong_object_type',
            HINT = 'Register the tables a view reads from.';
    END IF;
    SELECT a.atttypid::regtype INTO v_type FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = tab AND a.attname = subject_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF v_type IS NULL THEN
        RAISE EXCEPTION 'column "%" does not exist in %', subject_column, tab USING ERRCODE = 'undefined_column';
    END IF;
    IF v_type <> 'bigint'::regtype THEN
        RAISE EXCEPTION 'subject column "%" of % must be bigint, not %', subject_column, tab, v_type
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF contexts IS NOT NULL AND pg_catalog.jsonb_typeof(contexts) <> 'object' THEN
        RAISE EXCEPTION 'contexts must be a JSON object of column names and contexts'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_column IN SELECT k FROM pg_catalog.jsonb_object_keys(coalesce(contexts, '{}')) AS k LOOP
        IF NOT EXISTS (SELECT 1 FROM @extschema@.encrypted_columns(tab) e WHERE e.column_name = v_column) THEN
            RAISE EXCEPTION 'column "%" of % is not an encrypted column', v_column, tab
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF pg_catalog.jsonb_typeof(contexts -> v_column) <> 'string' THEN
            RAISE EXCEPTION 'the context of column "%" must be a JSON string', v_column
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF on_purge IS NULL OR on_purge NOT IN ('delete', 'anonymise') THEN
        RAISE EXCEPTION 'on_purge must be delete or anonymise' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF on_purge = 'anonymise' THEN
        IF coalesce(pg_catalog.cardinality(anonymise_columns), 0) = 0 THEN
            RAISE EXCEPTION 'anonymise needs the columns to clear' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Encrypted columns need not be listed: the purge destroys their key.';
        END IF;
        FOREACH v_column IN ARRAY anonymise_columns LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                           WHERE a.attrelid = tab AND a.attname = v_column AND a.attnum > 0
                             AND NOT a.attisdropped AND NOT a.attnotnull) THEN
                RAISE EXCEPTION 'column "%" of % does not exist or cannot be set to null', v_column, tab
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = tab AND p.polname = 'gdprcrm_purpose') THEN
        RAISE WARNING '% is not protected by gdprcrm.protect()', tab
            USING HINT = 'Without it, its rows are visible whatever the purpose, whether the subject consented, and while the subject is in the trash.';
    END IF;
    INSERT INTO @extschema@.registered_tables AS r (relation, subject_column, category, description, contexts,
                                                    on_purge, anonymise_columns, builtin, registered_by)
    VALUES (tab, subject_column, category, description, coalesce(contexts, '{}'), on_purge,
            CASE WHEN on_purge = 'anonymise' THEN anonymise_columns END,
            (SELECT n.nspname = '@extschema@' FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tab),
            v_caller)
    ON CONFLICT (relation) DO UPDATE SET
        subject_column = EXCLUDED.subject_column, category = EXCLUDED.category,
        description = EXCLUDED.description, contexts = EXCLUDED.contexts, on_purge = EXCLUDED.on_purge,
        anonymise_columns = EXCLUDED.anonymise_columns, registered_at = EXCLUDED.registered_at,
        registered_by = EXCLUDED.registered_by;
END $$;
COMMENT ON FUNCTION @extschema@.register_table(regclass, name, text, text, jsonb, text, name[]) IS
    'Register a table holding personal data, with its subject column, for export, erasure and retention';

CREATE FUNCTION @extschema@.unregister_table(tab regclass) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_caller name := @extschema@.calling_role();
    v_owner oid;
BEGIN
    SELECT c.relowner INTO v_owner FROM pg_catalog.pg_class c WHERE c.oid = tab;
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) v_caller)
       AND NOT (pg_catalog.pg_has_role(v_caller, 'gdprcrm_admin', 'MEMBER')
                AND pg_catalog.pg_has_role(v_caller, v_owner, 'MEMBER')) THEN
        RAISE EXCEPTION 'only a superuser, or a member of gdprcrm_admin who owns the table, may unregister it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.registered_tables r WHERE r.relation = tab AND r.builtin) THEN
        RAISE EXCEPTION '% is a CRM table and stays registered', tab
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    DELETE FROM @extschema@.registered_tables r WHERE r.relation = tab;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION @extschema@.unregister_table(regclass) IS
    'Remove an application table from the registry; true if it was registered';

/*
 * A dropped table leaves the registry with it.  SECURITY DEFINER: it runs
 * at every DROP of anyone, who may not write the registry.
 */
CREATE FUNCTION @extschema@.forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM @extschema@.registered_tables r
    WHERE r.relation::oid IN (SELECT d.objid FROM pg_catalog.pg_event_trigger_dropped_objects() d
                              WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0);
END $$;
COMMENT ON FUNCTION @extschema@.forget_dropped_tables() IS
    'Event trigger removing dropped tables from the registry';
REVOKE ALL ON FUNCTION @extschema@.forget_dropped_tables() FROM PUBLIC;
CREATE EVENT TRIGGER gdprcrm_forget_dropped_tables ON sql_drop
    EXECUTE FUNCTION @extschema@.forget_dropped_tables();

/*
 * Who may act on a subject's rights: superusers, and members of
 * gdprcrm_admin in the team of the subject's project.  Returns the
 * project (NULL for a superuser and a subject that is no person).  An
 * unknown subject and another project's subject get the same error.
 */
CREATE FUNCTION @extschema@.require_subject_admin(subject bigint) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_caller name := @extschema@.calling_role();
    v_project bigint;
BEGIN
    IF subject IS NULL OR subject <= 0 THEN
        RAISE EXCEPTION 'subject ids are positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT p.project_id INTO v_project FROM @extschema@.people p WHERE p.id = subject;
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) v_caller) THEN
        RETURN v_project;
    END IF;
    IF NOT pg_catalog.pg_has_role(v_caller, 'gdprcrm_admin', 'MEMBER')
       OR v_project IS NULL OR NOT @extschema@.caller_in_team(v_project) THEN
        RAISE EXCEPTION 'permission denied for this subject' USING ERRCODE = 'insufficient_privilege',
            HINT = 'Subject rights are exercised by superusers and by gdprcrm_admin members of the subject''s project team.';
    END IF;
    RETURN v_project;
END $$;
COMMENT ON FUNCTION @extschema@.require_subject_admin(bigint) IS
    'Raise unless the caller may act on the subject''s rights; returns the subject''s project';

/*
 * What was done about a subject's rights: exports, erasures, restores,
 * purges, legal holds.  Append-only, and kept after a purge as its proof:
 * subject ids, actions and who acted, never a personal value.
 */
CREATE TABLE @extschema@.rights_log (
    id bigint GENERATED ALWAYS AS IDENTITY,
    subject bigint NOT NULL,
    project_id bigint,
    action text NOT NULL CHECK (action IN ('export', 'erase', 'restore', 'purge', 'place_hold',
                                           'release_hold', 'unsuppress')),
    detail text,
    reason text,
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    recorded_by name NOT NULL,
    PRIMARY KEY (subject, id)
);
COMMENT ON TABLE @extschema@.rights_log IS
    'Append-only log of actions on subjects'' rights (export, erasure, restore, purge, legal hold)';
COMMENT ON COLUMN @extschema@.rights_log.detail IS
    'What kind of action: the export format, the erasure stage';
REVOKE ALL ON @extschema@.rights_log FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.rights_log', '');
ALTER TABLE @extschema@.rights_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.rights_log FORCE ROW LEVEL SECURITY;
CREATE POLICY team_only ON @extschema@.rights_log USING (@extschema@.in_team(project_id));
GRANT SELECT ON @extschema@.rights_log TO gdprcrm_admin;

CREATE FUNCTION @extschema@.protect_rights_log() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'the rights log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
COMMENT ON FUNCTION @extschema@.protect_rights_log() IS 'Trigger keeping the rights log append-only';
REVOKE ALL ON FUNCTION @extschema@.protect_rights_log() FROM PUBLIC;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON @extschema@.rights_log
    FOR EACH ROW EXECUTE FUNCTION @extschema@.protect_rights_log();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON @extschema@.rights_log
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.protect_rights_log();

CREATE FUNCTION @extschema@.log_right(subject bigint, project bigint, action text, detail text DEFAULT NULL,
                                      reason text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO @extschema@.rights_log (subject, project_id, action, detail, reason, recorded_by)
    VALUES (subject, project, action, detail, reason, @extschema@.calling_role())
    RETURNING id
$$;
COMMENT ON FUNCTION @extschema@.log_right(bigint, bigint, text, text, text) IS
    'Append one action to the rights log (for the rights functions)';
REVOKE ALL ON FUNCTION @extschema@.log_right(bigint, bigint, text, text, text) FROM PUBLIC;

/*
 * A requester's subject ids, by email and/or external id, in every project
 * whose team the caller administers (every project for a superuser):
 * through the blind indexes of person_identities, nothing decrypted.
 */
CREATE FUNCTION @extschema@.find_subject(email text DEFAULT NULL, external_id text DEFAULT NULL)
RETURNS TABLE (project_id bigint, subject bigint, matched_by text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_caller name := @extschema@.calling_role();
    v_super boolean;
    v_email_key bytea;
    v_ext_key bytea;
BEGIN
    IF email IS NULL AND external_id IS NULL THEN
        RAISE EXCEPTION 'find_subject needs an email or an external id' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_super := (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) v_caller);
    IF NOT v_super AND NOT pg_catalog.pg_has_role(v_caller, 'gdprcrm_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'only superusers and members of gdprcrm_admin may look for a requester'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF email IS NOT NULL THEN
        v_email_key := @extschema@.blind_index(@extschema@.normalize_email(pg_catalog.btrim(email)), 'email');
    END IF;
    IF external_id IS NOT NULL THEN
        v_ext_key := @extschema@.blind_index(external_id, 'external_id');
    END IF;
    RETURN QUERY
        SELECT i.project_id, i.person_id, i.kind
        FROM @extschema@.person_identities i
        WHERE (i.kind = 'email' AND i.key = v_email_key OR i.kind = 'external_id' AND i.key = v_ext_key)
          AND (v_super OR @extschema@.caller_in_team(i.project_id))
        ORDER BY i.project_id, i.person_id, i.kind;
END $$;
COMMENT ON FUNCTION @extschema@.find_subject(text, text) IS
    'Subject ids of a requester by email and/or external id, in the projects the caller administers';

REVOKE ALL ON FUNCTION @extschema@.encrypted_columns(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.register_table(regclass, name, text, text, jsonb, text, name[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.unregister_table(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.require_subject_admin(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.find_subject(text, text) FROM PUBLIC;
GRANT SELECT ON @extschema@.registered_tables TO gdprcrm_admin;
GRANT EXECUTE ON FUNCTION
    @extschema@.encrypted_columns(regclass),
    @extschema@.register_table(regclass, name, text, text, jsonb, text, name[]),
    @extschema@.unregister_table(regclass),
    @extschema@.require_subject_admin(bigint),
    @extschema@.find_subject(text, text)
    TO gdprcrm_admin;

/* ---- crm: the CRM tables are registered ---- */

/* Every table of the CRM that holds a person's data is in the registry. */
SELECT @extschema@.register_table('@extschema@.people', 'id', 'profile',
    'Profile: external id, email, name, phone, traits, first and last seen',
    '{"email": "crm.people.email", "name": "crm.people.name", "phone": "crm.people.phone"}');
SELECT @extschema@.register_table('@extschema@.person_identities', 'person_id', 'identifiers',
    'Keyed hashes of the external id and email, for lookups');
SELECT @extschema@.register_table('@extschema@.person_companies', 'person_id', 'employment',
    'Companies the person works for, with title and start date');
SELECT @extschema@.register_table('@extschema@.events', 'person_id', 'activity',
    'Page views and custom events with their properties');
SELECT @extschema@.register_table('@extschema@.messages', 'person_id', 'communications',
    'Messages to and from the person; subject and body encrypted',
    '{"subject": "crm.messages.subject", "body": "crm.messages.body"}');
SELECT @extschema@.register_table('@extschema@.enrichments', 'person_id', 'enrichment',
    'Public-profile data with its source and fetch time');

/* ---- subject_state: the trash, the subject's project, the purge ---- */

ALTER TABLE @extschema@.subject_state
    ADD COLUMN trashed_at timestamptz,
    ADD COLUMN project_id bigint,
    ADD COLUMN purged_at timestamptz;
COMMENT ON COLUMN @extschema@.subject_state.trashed_at IS
    'Since when the subject is in the trash (hidden from every purpose, restorable); NULL unless it is';
COMMENT ON COLUMN @extschema@.subject_state.project_id IS
    'The subject''s project, recorded when it went to the trash or was purged';
COMMENT ON COLUMN @extschema@.subject_state.purged_at IS
    'When the subject was purged (its rows deleted, key destroyed, identifiers suppressed)';
/* What waits in the trash, for the listing of expired trash. */
CREATE INDEX subject_state_trash ON @extschema@.subject_state (trashed_at)
    WHERE trashed_at IS NOT NULL AND purged_at IS NULL;

/* ---- erasure (new concern: src/sql/erasure.sql) ---- */

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

/*
 * Functions of earlier concerns that erasure changes: the rights checks
 * find a purged subject's project and suppressed identifiers; the ledgers
 * refuse a subject in the trash and let a purge reduce their rows; the CRM
 * functions create nobody for a trashed person or a suppressed identifier
 * and refuse writes about a subject in the trash.
 */

CREATE OR REPLACE FUNCTION @extschema@.require_subject_admin(subject bigint) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_caller name := @extschema@.calling_role();
    v_project bigint;
BEGIN
    IF subject IS NULL OR subject <= 0 THEN
        RAISE EXCEPTION 'subject ids are positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT p.project_id INTO v_project FROM @extschema@.people p WHERE p.id = subject;
    IF v_project IS NULL THEN
        -- A purged subject's project stays with its state (erasure.sql).
        SELECT s.project_id INTO v_project FROM @extschema@.subject_state s
        WHERE s.subject = require_subject_admin.subject;
    END IF;
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) v_caller) THEN
        RETURN v_project;
    END IF;
    IF NOT pg_catalog.pg_has_role(v_caller, 'gdprcrm_admin', 'MEMBER')
       OR v_project IS NULL OR NOT @extschema@.caller_in_team(v_project) THEN
        RAISE EXCEPTION 'permission denied for this subject' USING ERRCODE = 'insufficient_privilege',
            HINT = 'Subject rights are exercised by superusers and by gdprcrm_admin members of the subject''s project team.';
    END IF;
    RETURN v_project;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.find_subject(email text DEFAULT NULL, external_id text DEFAULT NULL)
RETURNS TABLE (project_id bigint, subject bigint, matched_by text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_caller name := @extschema@.calling_role();
    v_super boolean;
    v_email_key bytea;
    v_ext_key bytea;
BEGIN
    IF email IS NULL AND external_id IS NULL THEN
        RAISE EXCEPTION 'find_subject needs an email or an external id' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_super := (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) v_caller);
    IF NOT v_super AND NOT pg_catalog.pg_has_role(v_caller, 'gdprcrm_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'only superusers and members of gdprcrm_admin may look for a requester'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF email IS NOT NULL THEN
        v_email_key := @extschema@.blind_index(@extschema@.normalize_email(pg_catalog.btrim(email)), 'email');
    END IF;
    IF external_id IS NOT NULL THEN
        v_ext_key := @extschema@.blind_index(external_id, 'external_id');
    END IF;
    -- A purged requester is found through the suppression list
    -- (erasure.sql), under the subject id it was purged as.
    RETURN QUERY
        SELECT x.project_id, x.person_id, x.kind
        FROM (SELECT i.project_id, i.person_id, i.kind
              FROM @extschema@.person_identities i
              WHERE (i.kind = 'email' AND i.key = v_email_key OR i.kind = 'external_id' AND i.key = v_ext_key)
                AND (v_super OR @extschema@.caller_in_team(i.project_id))
              UNION ALL
              SELECT s.project_id, s.subject, 'suppressed ' || s.kind
              FROM @extschema@.suppressed_identifiers s
              WHERE (s.kind = 'email' AND s.key = v_email_key OR s.kind = 'external_id' AND s.key = v_ext_key)
                AND (v_super OR @extschema@.caller_in_team(s.project_id))) AS x
        ORDER BY x.project_id, x.person_id, x.kind;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.require_subject_access(subject bigint) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_caller name := @extschema@.calling_role();
    v_project bigint;
BEGIN
    IF subject <= 0 THEN
        RAISE EXCEPTION 'subject ids are positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT p.project_id INTO v_project FROM @extschema@.people p WHERE p.id = subject;
    IF v_project IS NULL THEN
        -- A purged person's project stays with its state (erasure.sql):
        -- the ledger functions then refuse it as erased.
        SELECT s.project_id INTO v_project FROM @extschema@.subject_state s
        WHERE s.subject = require_subject_access.subject;
    END IF;
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) v_caller) THEN
        -- Only existing people: recording for an unknown id would pre-set
        -- the state of whoever is created with it later, in any project.
        IF v_project IS NULL THEN
            RAISE EXCEPTION 'no such person' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Consent and restrictions are recorded for people of gdprcrm.people.';
        END IF;
        RETURN;
    END IF;
    IF NOT (pg_catalog.pg_has_role(v_caller, 'gdprcrm_app', 'MEMBER')
            OR pg_catalog.pg_has_role(v_caller, 'gdprcrm_admin', 'MEMBER')) THEN
        RAISE EXCEPTION 'permission denied to record consent' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF v_project IS NULL OR NOT @extschema@.caller_in_team(v_project) THEN
        RAISE EXCEPTION 'permission denied for this subject' USING ERRCODE = 'insufficient_privilege',
            HINT = 'The subject must be a person of a project whose team includes the current role.';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.protect_ledger_rows() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_reducible text[] := CASE TG_TABLE_NAME WHEN 'consent_events' THEN '{source,method,evidence}'::text[]
                                             ELSE '{reason}'::text[] END;
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        IF EXISTS (SELECT 1 FROM @extschema@.subject_state s
                   WHERE s.subject = OLD.subject AND s.erased_at IS NOT NULL) THEN
            IF TG_OP = 'DELETE' THEN
                RETURN OLD;
            END IF;
            IF pg_catalog.to_jsonb(NEW) - v_reducible = pg_catalog.to_jsonb(OLD) - v_reducible
               AND NOT pg_catalog.jsonb_strip_nulls(pg_catalog.to_jsonb(NEW)) ?| v_reducible THEN
                RETURN NEW;
            END IF;
        END IF;
    END IF;
    RAISE EXCEPTION 'the % ledger is append-only', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Record a withdrawal or a lift instead; rows go only with the erasure of their subject.';
END $$;

CREATE OR REPLACE FUNCTION @extschema@.record_consent_event(
    subject bigint, purpose text, action text, captured_at timestamptz, source text, method text,
    notice_version text, wording text, evidence jsonb)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_bit smallint;
    v_mask bigint;
    v_id bigint;
BEGIN
    PERFORM @extschema@.require_subject_access(subject);
    SELECT p.bit INTO v_bit FROM @extschema@.purposes p WHERE p.name = purpose;
    IF v_bit IS NULL THEN
        RAISE EXCEPTION 'purpose "%" does not exist', purpose USING ERRCODE = 'undefined_object',
            HINT = 'Define it with gdprcrm.define_purpose().';
    END IF;
    IF captured_at > pg_catalog.now() + interval '5 minutes' THEN
        RAISE EXCEPTION 'consent cannot be captured in the future' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_mask := (1::bigint) << v_bit;

    -- Erasure is checked under the subject's lock, which erasure takes too:
    -- checked before, an erasure committed while this call waited for the
    -- lock would go unnoticed.
    PERFORM @extschema@.lock_subject_state(subject);
    IF EXISTS (SELECT 1 FROM @extschema@.subject_state s WHERE s.subject = record_consent_event.subject
               AND s.erased_at IS NOT NULL) THEN
        RAISE EXCEPTION 'the subject was erased' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.subject_state s WHERE s.subject = record_consent_event.subject
               AND s.trashed_at IS NOT NULL) THEN
        RAISE EXCEPTION 'the subject is in the trash' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Restore it with gdprcrm.restore_subject() to record data about it again.';
    END IF;

    INSERT INTO @extschema@.consent_events (subject, project_id, purpose, action, captured_at, recorded_by,
                                            source, method, notice_version, wording_hash, evidence)
    SELECT subject, p.project_id, purpose, action, coalesce(captured_at, pg_catalog.now()),
           @extschema@.calling_role(), source, method, notice_version,
           CASE WHEN wording IS NOT NULL THEN pg_catalog.sha256(pg_catalog.convert_to(wording, 'UTF8')) END,
           evidence
    FROM @extschema@.people p WHERE p.id = record_consent_event.subject
    RETURNING id INTO v_id;

    UPDATE @extschema@.subject_state s SET
        consented = CASE action WHEN 'grant' THEN s.consented | v_mask
                                WHEN 'withdraw' THEN s.consented & ~v_mask ELSE s.consented END,
        objected = CASE action WHEN 'object' THEN s.objected | v_mask
                               WHEN 'withdraw_objection' THEN s.objected & ~v_mask ELSE s.objected END,
        updated_at = pg_catalog.now()
    WHERE s.subject = record_consent_event.subject;
    PERFORM @extschema@.publish_state_change(subject);
    RETURN v_id;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.set_restriction(subject bigint, restricted boolean, reason text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM @extschema@.require_subject_access(subject);
    -- Under the subject's lock, like record_consent_event: nothing is
    -- recorded about a subject once erased.
    PERFORM @extschema@.lock_subject_state(subject);
    IF EXISTS (SELECT 1 FROM @extschema@.subject_state s WHERE s.subject = set_restriction.subject
               AND s.erased_at IS NOT NULL) THEN
        RAISE EXCEPTION 'the subject was erased' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.subject_state s WHERE s.subject = set_restriction.subject
               AND s.trashed_at IS NOT NULL) THEN
        RAISE EXCEPTION 'the subject is in the trash' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Restore it with gdprcrm.restore_subject() to record data about it again.';
    END IF;
    INSERT INTO @extschema@.restriction_events (subject, project_id, action, reason, recorded_by)
    SELECT subject, p.project_id, CASE WHEN restricted THEN 'restrict' ELSE 'lift' END, reason,
           @extschema@.calling_role()
    FROM @extschema@.people p WHERE p.id = set_restriction.subject
    RETURNING id INTO v_id;
    UPDATE @extschema@.subject_state s SET restricted = set_restriction.restricted, updated_at = pg_catalog.now()
    WHERE s.subject = set_restriction.subject;
    PERFORM @extschema@.publish_state_change(subject);
    RETURN v_id;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.explain_access(subject bigint, purpose text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_purpose text := coalesce(purpose, nullif(pg_catalog.current_setting('gdprcrm.purpose', true), ''));
    p @extschema@.purposes;
    s @extschema@.subject_state;
BEGIN
    PERFORM @extschema@.require_subject_access(subject);
    IF v_purpose IS NULL THEN
        RETURN 'hidden: no purpose declared (SET LOCAL gdprcrm.purpose = ''...'' or gdprcrm.set_purpose())';
    END IF;
    SELECT * INTO p FROM @extschema@.purposes x WHERE x.name = v_purpose;
    IF NOT FOUND THEN
        RETURN 'hidden: purpose "' || v_purpose || '" is not defined';
    END IF;
    SELECT * INTO s FROM @extschema@.subject_state x WHERE x.subject = explain_access.subject;
    IF s.erased_at IS NOT NULL THEN
        RETURN 'hidden: the subject was erased';
    END IF;
    IF s.trashed_at IS NOT NULL THEN
        RETURN 'hidden: the subject is in the trash';
    END IF;
    IF coalesce(s.restricted, false) AND NOT p.allowed_when_restricted THEN
        RETURN 'hidden: processing of the subject is restricted and "' || p.name || '" is not allowed under restriction';
    END IF;
    IF p.lawful_basis IN ('consent', 'legitimate_interests', 'public_task')
       AND coalesce(s.objected, 0) & ((1::bigint) << p.bit) <> 0 THEN
        RETURN 'hidden: the subject objected to "' || p.name || '"';
    END IF;
    IF p.lawful_basis = 'consent' AND coalesce(s.consented, 0) & ((1::bigint) << p.bit) = 0 THEN
        RETURN 'hidden: "' || p.name || '" needs consent, which the subject has not given or has withdrawn';
    END IF;
    RETURN 'visible: "' || p.name || '" is lawful for the subject (basis ' || p.lawful_basis || ')';
END $$;

CREATE OR REPLACE FUNCTION @extschema@.merge_people(project bigint, from_person bigint, into_person bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.require_project_member(project);
    -- Nothing moves to or from a person in the trash or purged (erasure.sql).
    PERFORM @extschema@.require_not_erased(project, from_person);
    PERFORM @extschema@.require_not_erased(project, into_person);
    IF from_person = into_person THEN
        RETURN;
    END IF;
    IF (SELECT count(*) FROM @extschema@.people p
        WHERE p.id IN (from_person, into_person) AND p.project_id = project) <> 2 THEN
        RAISE EXCEPTION 'both people must belong to the project' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE @extschema@.person_identities SET person_id = into_person
    WHERE person_id = from_person AND project_id = project;
    UPDATE @extschema@.events SET person_id = into_person
    WHERE person_id = from_person AND project_id = project;
    UPDATE @extschema@.messages SET person_id = into_person,
        subject = @extschema@.encrypt(into_person, @extschema@.decrypt(subject, 'crm.messages.subject', from_person), 'crm.messages.subject'),
        body = @extschema@.encrypt(into_person, @extschema@.decrypt(body, 'crm.messages.body', from_person), 'crm.messages.body')
    WHERE person_id = from_person AND project_id = project;
    UPDATE @extschema@.enrichments SET person_id = into_person
    WHERE person_id = from_person AND project_id = project;
    DELETE FROM @extschema@.person_companies s
    WHERE s.person_id = from_person AND s.project_id = project
      AND EXISTS (SELECT 1 FROM @extschema@.person_companies t
                  WHERE t.person_id = into_person AND t.company_id = s.company_id);
    UPDATE @extschema@.person_companies SET person_id = into_person
    WHERE person_id = from_person AND project_id = project;

    UPDATE @extschema@.people t SET
        traits = s.traits || t.traits,
        first_seen_at = CASE WHEN t.first_seen_at IS NULL THEN s.first_seen_at
                             WHEN s.first_seen_at IS NULL THEN t.first_seen_at
                             ELSE least(s.first_seen_at, t.first_seen_at) END,
        last_seen_at = greatest(s.last_seen_at, t.last_seen_at),
        name = coalesce(t.name, @extschema@.encrypt(into_person, @extschema@.decrypt(s.name, 'crm.people.name', from_person), 'crm.people.name')),
        phone = coalesce(t.phone, @extschema@.encrypt(into_person, @extschema@.decrypt(s.phone, 'crm.people.phone', from_person), 'crm.people.phone'))
    FROM @extschema@.people s
    WHERE t.id = into_person AND s.id = from_person AND t.project_id = project;

    UPDATE @extschema@.people SET status = 'merged', merged_into = into_person,
        email = NULL, email_bidx = NULL, name = NULL, phone = NULL, traits = '{}'
    WHERE id = from_person AND project_id = project;
    UPDATE @extschema@.people SET merged_into = into_person WHERE merged_into = from_person AND project_id = project;
    PERFORM @extschema@.shred_subject_key(from_person);
END $$;

CREATE OR REPLACE FUNCTION @extschema@.identify(project bigint, external_id text DEFAULT NULL,
                                     email text DEFAULT NULL, traits jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_email text := pg_catalog.btrim(email);
    v_traits jsonb := coalesce(traits, '{}');
    v_ext_key bytea;
    v_email_key bytea;
    v_by_ext bigint;
    v_by_email bigint;
    v_person bigint;
    v_claimed integer;
BEGIN
    IF external_id IS NULL AND email IS NULL THEN
        RAISE EXCEPTION 'identify needs an external id or an email' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM @extschema@.require_project_member(project);
    IF pg_catalog.jsonb_typeof(v_traits) <> 'object' THEN
        RAISE EXCEPTION 'traits must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.octet_length(external_id) > 1024 THEN
        RAISE EXCEPTION 'an external id is at most 1024 bytes long' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF external_id IS NOT NULL THEN
        v_ext_key := @extschema@.blind_index(external_id, 'external_id');
    END IF;
    IF v_email IS NOT NULL THEN
        v_email_key := @extschema@.blind_index(@extschema@.normalize_email(v_email), 'email');
    END IF;

    FOR attempt IN 1 .. 3 LOOP
        v_by_ext := NULL;
        v_by_email := NULL;
        IF v_ext_key IS NOT NULL THEN
            SELECT i.person_id INTO v_by_ext FROM @extschema@.person_identities i
            WHERE i.project_id = project AND i.kind = 'external_id' AND i.key = v_ext_key;
        END IF;
        IF v_email_key IS NOT NULL THEN
            SELECT i.person_id INTO v_by_email FROM @extschema@.person_identities i
            WHERE i.project_id = project AND i.kind = 'email' AND i.key = v_email_key;
        END IF;
        IF @extschema@.in_trash(v_by_ext) OR @extschema@.in_trash(v_by_email) THEN
            RETURN NULL;
        END IF;
        IF (v_ext_key IS NOT NULL AND v_by_ext IS NULL) OR (v_email_key IS NOT NULL AND v_by_email IS NULL) THEN
            IF v_by_ext IS NULL AND EXISTS (SELECT 1 FROM @extschema@.suppressed_identifiers s
                    WHERE s.project_id = project AND s.kind = 'external_id' AND s.key = v_ext_key)
               OR v_by_email IS NULL AND EXISTS (SELECT 1 FROM @extschema@.suppressed_identifiers s
                    WHERE s.project_id = project AND s.kind = 'email' AND s.key = v_email_key) THEN
                RETURN NULL;
            END IF;
        END IF;

        IF v_by_ext IS NULL AND v_by_email IS NULL THEN
            v_person := pg_catalog.nextval('@extschema@.people_id_seq');
            INSERT INTO @extschema@.people (id, project_id, external_id, email, email_bidx,
                                            traits, status, first_seen_at)
            VALUES (v_person, project, identify.external_id,
                    CASE WHEN v_email IS NOT NULL
                         THEN @extschema@.encrypt(v_person, v_email, 'crm.people.email') END,
                    v_email_key, v_traits,
                    CASE WHEN v_email IS NULL THEN 'anonymous' ELSE 'identified' END,
                    pg_catalog.now());
            -- Claimed in the order of the key (email before external_id),
            -- as import_people() claims them.
            IF v_ext_key IS NOT NULL AND v_email_key IS NOT NULL THEN
                INSERT INTO @extschema@.person_identities (project_id, kind, key, person_id)
                VALUES (project, 'email', v_email_key, v_person), (project, 'external_id', v_ext_key, v_person)
                ON CONFLICT DO NOTHING;
            ELSE
                INSERT INTO @extschema@.person_identities (project_id, kind, key, person_id)
                VALUES (project, CASE WHEN v_ext_key IS NULL THEN 'email' ELSE 'external_id' END,
                        coalesce(v_ext_key, v_email_key), v_person)
                ON CONFLICT DO NOTHING;
            END IF;
            GET DIAGNOSTICS v_claimed = ROW_COUNT;
            IF v_claimed = (v_email_key IS NOT NULL)::integer + (v_ext_key IS NOT NULL)::integer THEN
                RETURN v_person;
            END IF;
            -- Another session claimed an identifier first: withdraw this
            -- person and look again.
            DELETE FROM @extschema@.person_identities i
            WHERE i.person_id = v_person AND i.kind IN ('email', 'external_id');
            DELETE FROM @extschema@.people p WHERE p.id = v_person;
            IF v_email IS NOT NULL THEN
                PERFORM @extschema@.shred_subject_key(v_person);
            END IF;
            CONTINUE;
        END IF;

        IF v_by_ext IS NOT NULL AND v_by_email IS NOT NULL AND v_by_ext <> v_by_email THEN
            IF (SELECT p.email IS NOT NULL FROM @extschema@.people p WHERE p.id = v_by_ext) THEN
                RAISE EXCEPTION 'the external id and the email belong to two identified people'
                    USING ERRCODE = 'object_in_use',
                          HINT = 'Merge them explicitly with gdprcrm.merge_people, or correct the email.';
            END IF;
            PERFORM @extschema@.merge_people(project, v_by_ext, v_by_email);
            v_person := v_by_email;
        ELSE
            v_person := coalesce(v_by_ext, v_by_email);
            -- About to write to a known person (a claim or a change): lock
            -- it, then check that what the lookup found still holds (a
            -- concurrent identify may have merged the person away or moved
            -- an identifier while this one waited for the lock).  The test
            -- of a change is the one of the UPDATE below: keep them alike.
            -- A call that changes nothing takes no lock and writes nothing.
            IF (v_ext_key IS NOT NULL AND v_by_ext IS NULL) OR (v_email_key IS NOT NULL AND v_by_email IS NULL)
               OR EXISTS (SELECT 1 FROM @extschema@.people p WHERE p.id = v_person
                          AND (p.external_id IS NULL AND identify.external_id IS NOT NULL
                               OR v_email_key IS NOT NULL AND p.email_bidx IS DISTINCT FROM v_email_key
                               OR coalesce(v_email_key, p.email_bidx) IS NOT NULL AND p.status <> 'identified'
                               OR v_traits <> '{}' AND p.traits || v_traits IS DISTINCT FROM p.traits)) THEN
                PERFORM FROM @extschema@.people p WHERE p.id = v_person FOR NO KEY UPDATE;
                CONTINUE WHEN NOT EXISTS (SELECT 1 FROM @extschema@.people p
                                          WHERE p.id = v_person AND p.status <> 'merged')
                    OR v_ext_key IS NOT NULL AND (SELECT i.person_id FROM @extschema@.person_identities i
                        WHERE i.project_id = project AND i.kind = 'external_id' AND i.key = v_ext_key)
                        IS DISTINCT FROM v_by_ext
                    OR v_email_key IS NOT NULL AND (SELECT i.person_id FROM @extschema@.person_identities i
                        WHERE i.project_id = project AND i.kind = 'email' AND i.key = v_email_key)
                        IS DISTINCT FROM v_by_email;
            END IF;
            IF v_ext_key IS NOT NULL AND v_by_ext IS NULL THEN
                INSERT INTO @extschema@.person_identities (project_id, kind, key, person_id)
                VALUES (project, 'external_id', v_ext_key, v_person)
                ON CONFLICT DO NOTHING;
                CONTINUE WHEN NOT FOUND;
            ELSIF v_email_key IS NOT NULL AND v_by_email IS NULL THEN
                INSERT INTO @extschema@.person_identities (project_id, kind, key, person_id)
                VALUES (project, 'email', v_email_key, v_person)
                ON CONFLICT DO NOTHING;
                CONTINUE WHEN NOT FOUND;
                -- A changed email releases the old one.
                DELETE FROM @extschema@.person_identities i
                WHERE i.person_id = v_person AND i.kind = 'email' AND i.key <> v_email_key;
            END IF;
        END IF;

        UPDATE @extschema@.people p SET
            external_id = coalesce(p.external_id, identify.external_id),
            email = CASE WHEN v_email_key IS NOT NULL AND p.email_bidx IS DISTINCT FROM v_email_key
                         THEN @extschema@.encrypt(p.id, v_email, 'crm.people.email') ELSE p.email END,
            email_bidx = coalesce(v_email_key, p.email_bidx),
            status = CASE WHEN coalesce(v_email_key, p.email_bidx) IS NOT NULL
                          THEN 'identified' ELSE p.status END,
            traits = CASE WHEN v_traits = '{}' THEN p.traits ELSE p.traits || v_traits END
        WHERE p.id = v_person
          AND (p.external_id IS NULL AND identify.external_id IS NOT NULL
               OR v_email_key IS NOT NULL AND p.email_bidx IS DISTINCT FROM v_email_key
               OR coalesce(v_email_key, p.email_bidx) IS NOT NULL AND p.status <> 'identified'
               OR v_traits <> '{}' AND p.traits || v_traits IS DISTINCT FROM p.traits);
        RETURN v_person;
    END LOOP;
    RAISE EXCEPTION 'could not claim the identifiers of the person'
        USING ERRCODE = 'serialization_failure',
              DETAIL = 'Concurrent transactions changed them three times while this one tried.',
              HINT = 'Retry the transaction.';
END $$;

CREATE OR REPLACE FUNCTION @extschema@.import_people(project bigint, people jsonb)
RETURNS TABLE (ordinality bigint, person_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_bad bigint;
    v_elem jsonb;
    v_ord bigint[];
    v_ext text[];
    v_email text[];
    v_traits jsonb[];
    v_ext_key bytea[];
    v_email_key bytea[];
    v_by_ext bigint[];
    v_by_email bigint[];
    v_found boolean;
    v_skip boolean[];
    v_class "char"[];       -- n: new person, m: matches one person, s: one by one, x: none (erased)
    v_person bigint[];
    v_lost bigint[];
    v_seq_ord bigint[] := '{}';
    v_seq_person bigint[] := '{}';
    v_detail text;
    r record;
BEGIN
    PERFORM @extschema@.require_project_member(project);
    IF people IS NULL OR pg_catalog.jsonb_typeof(people) <> 'array' THEN
        RAISE EXCEPTION 'people must be a JSON array' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass one object per person with the keys external_id, email and traits.';
    END IF;

    -- The shape of every element, in one pass; the first malformed one is
    -- named by its position, never by its content.
    SELECT min(e.ord) FILTER (WHERE NOT CASE WHEN pg_catalog.jsonb_typeof(e.elem) = 'object' THEN
                   e.elem - '{external_id,email,traits}'::text[] = '{}'
                   AND coalesce(pg_catalog.jsonb_typeof(e.elem -> 'external_id'), 'null') IN ('string', 'null')
                   AND coalesce(pg_catalog.jsonb_typeof(e.elem -> 'email'), 'null') IN ('string', 'null')
                   AND coalesce(pg_catalog.jsonb_typeof(e.elem -> 'traits'), 'null') IN ('object', 'null')
                   AND (e.elem ->> 'external_id' IS NOT NULL OR e.elem ->> 'email' IS NOT NULL)
                   AND coalesce(pg_catalog.octet_length(e.elem ->> 'external_id'), 0) <= 1024
                   ELSE false END),
           array_agg(e.ord), array_agg(e.elem ->> 'external_id'), array_agg(e.elem ->> 'email'),
           array_agg(CASE WHEN pg_catalog.jsonb_typeof(e.elem -> 'traits') = 'object'
                          THEN e.elem -> 'traits' ELSE '{}' END)
    INTO v_bad, v_ord, v_ext, v_email, v_traits
    FROM pg_catalog.jsonb_array_elements(people) WITH ORDINALITY AS e (elem, ord);

    IF v_bad IS NOT NULL THEN
        v_elem := people -> (v_bad - 1)::integer;
        IF pg_catalog.jsonb_typeof(v_elem) <> 'object' THEN
            RAISE EXCEPTION 'element % of people is not a JSON object', v_bad
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF v_elem - '{external_id,email,traits}'::text[] <> '{}' THEN
            RAISE EXCEPTION 'element % of people has an unknown key', v_bad
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'The keys of an element are external_id, email and traits.';
        ELSIF coalesce(pg_catalog.jsonb_typeof(v_elem -> 'external_id'), 'null') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'external_id of element % of people is not a JSON string', v_bad
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF coalesce(pg_catalog.jsonb_typeof(v_elem -> 'email'), 'null') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'email of element % of people is not a JSON string', v_bad
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF coalesce(pg_catalog.jsonb_typeof(v_elem -> 'traits'), 'null') NOT IN ('object', 'null') THEN
            RAISE EXCEPTION 'traits of element % of people is not a JSON object', v_bad
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF pg_catalog.octet_length(v_elem ->> 'external_id') > 1024 THEN
            RAISE EXCEPTION 'external_id of element % of people is longer than 1024 bytes', v_bad
                USING ERRCODE = 'invalid_parameter_value';
        ELSE
            RAISE EXCEPTION 'element % of people has neither an external id nor an email', v_bad
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF v_ord IS NULL THEN
        RETURN;
    END IF;

    -- Blind indexes, as identify() computes them.  An invalid address is
    -- looked for element by element only once the batch failed.
    BEGIN
        SELECT array_agg(CASE WHEN x.ext IS NOT NULL THEN @extschema@.blind_index(x.ext, 'external_id') END),
               array_agg(CASE WHEN x.email IS NOT NULL
                              THEN @extschema@.blind_index(@extschema@.normalize_email(pg_catalog.btrim(x.email)),
                                                           'email') END)
        INTO v_ext_key, v_email_key
        FROM unnest(v_ext, v_email) AS x (ext, email);
    EXCEPTION WHEN invalid_parameter_value THEN
        FOR r IN SELECT x.ord, x.email FROM unnest(v_ord, v_email) AS x (ord, email)
                 WHERE x.email IS NOT NULL ORDER BY x.ord LOOP
            BEGIN
                PERFORM @extschema@.normalize_email(pg_catalog.btrim(r.email));
            EXCEPTION WHEN invalid_parameter_value THEN
                GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
                RAISE EXCEPTION 'invalid email address in element % of people', r.ord
                    USING ERRCODE = 'invalid_parameter_value', DETAIL = v_detail;
            END;
        END LOOP;
        RAISE;
    END;
    -- The CHECK constraint of people.traits refuses the same; checking
    -- first names the element.
    PERFORM @extschema@.check_unrestricted(x.traits, 'person trait (element ' || x.ord || ')')
    FROM unnest(v_ord, v_traits) AS x (ord, traits)
    WHERE x.traits <> '{}';

    -- One probe of the primary key per identifier.
    SELECT array_agg(l.by_ext), array_agg(l.by_email), bool_or(l.by_ext IS NOT NULL OR l.by_email IS NOT NULL)
    INTO v_by_ext, v_by_email, v_found
    FROM (SELECT (SELECT i.person_id FROM @extschema@.person_identities i
                  WHERE i.project_id = import_people.project AND i.kind = 'external_id'
                    AND i.key = k.ext_key) AS by_ext,
                 (SELECT i.person_id FROM @extschema@.person_identities i
                  WHERE i.project_id = import_people.project AND i.kind = 'email'
                    AND i.key = k.email_key) AS by_email
          FROM unnest(v_ext_key, v_email_key) AS k (ext_key, email_key)
          OFFSET 0) AS l;

    -- Elements naming a person in the trash, or an identifier suppressed
    -- by a purge: looked for only when a person was found or the project
    -- has suppressed identifiers at all.
    IF v_found OR EXISTS (SELECT 1 FROM @extschema@.suppressed_identifiers s
                          WHERE s.project_id = import_people.project) THEN
        SELECT array_agg(coalesce(@extschema@.in_trash(k.by_ext), false)
                         OR coalesce(@extschema@.in_trash(k.by_email), false)
                         OR k.ext_key IS NOT NULL AND k.by_ext IS NULL
                            AND EXISTS (SELECT 1 FROM @extschema@.suppressed_identifiers s
                                        WHERE s.project_id = import_people.project
                                          AND s.kind = 'external_id' AND s.key = k.ext_key)
                         OR k.email_key IS NOT NULL AND k.by_email IS NULL
                            AND EXISTS (SELECT 1 FROM @extschema@.suppressed_identifiers s
                                        WHERE s.project_id = import_people.project
                                          AND s.kind = 'email' AND s.key = k.email_key)
                         ORDER BY k.n)
        INTO v_skip
        FROM unnest(v_ext_key, v_email_key, v_by_ext, v_by_email) WITH ORDINALITY
             AS k (ext_key, email_key, by_ext, by_email, n);
    END IF;

    IF NOT v_found
       AND NOT EXISTS (SELECT 1 FROM unnest(v_ext_key) AS k (key) WHERE k.key IS NOT NULL
                       GROUP BY k.key HAVING count(*) > 1)
       AND NOT EXISTS (SELECT 1 FROM unnest(v_email_key) AS k (key) WHERE k.key IS NOT NULL
                       GROUP BY k.key HAVING count(*) > 1) THEN
        -- Only new people, each identifier once: the usual first import.
        v_class := pg_catalog.array_fill('n'::"char", ARRAY[pg_catalog.cardinality(v_ord)]);
        SELECT array_agg(pg_catalog.nextval('@extschema@.people_id_seq')) INTO v_person FROM unnest(v_ord);
    ELSE
        WITH x AS (
            SELECT k.*
            FROM unnest(v_ord, v_ext_key, v_email_key, v_by_ext, v_by_email)
                 AS k (ord, ext_key, email_key, by_ext, by_email)
        ), touched AS (
            SELECT x.ord, t.person
            FROM x CROSS JOIN LATERAL (VALUES (x.by_ext), (x.by_email)) AS t (person)
            WHERE t.person IS NOT NULL
        ), shared AS (
            SELECT DISTINCT t.ord FROM touched t
            WHERE t.person IN (SELECT t2.person FROM touched t2
                               GROUP BY t2.person HAVING count(DISTINCT t2.ord) > 1)
        ), c AS (
            SELECT x.*,
                   CASE WHEN x.ext_key IS NOT NULL AND count(*) OVER (PARTITION BY x.ext_key) > 1 THEN 's'
                        WHEN x.email_key IS NOT NULL AND count(*) OVER (PARTITION BY x.email_key) > 1 THEN 's'
                        WHEN x.ord IN (SELECT s.ord FROM shared s) THEN 's'
                        WHEN x.by_ext IS NULL AND x.by_email IS NULL THEN 'n'
                        WHEN (x.ext_key IS NULL OR x.by_ext IS NOT NULL)
                             AND (x.email_key IS NULL OR x.by_email IS NOT NULL)
                             AND (x.by_ext IS NULL OR x.by_email IS NULL OR x.by_ext = x.by_email) THEN 'm'
                        ELSE 's' END::"char" AS class
            FROM x
        )
        SELECT array_agg(c.class ORDER BY c.ord),
               array_agg(CASE c.class WHEN 'n' THEN pg_catalog.nextval('@extschema@.people_id_seq')
                                      WHEN 'm' THEN coalesce(c.by_ext, c.by_email) END ORDER BY c.ord)
        INTO v_class, v_person
        FROM (SELECT * FROM c ORDER BY c.ord) AS c;  -- new ids in the order of the elements
    END IF;
    -- The elements to leave alone get no person.  An element that shares
    -- an identifier with one of them goes one by one (class s) all the
    -- same, through identify(), which decides as for any other.
    IF true = ANY (v_skip) THEN
        SELECT array_agg(CASE WHEN x.skip THEN 'x' ELSE x.class END ORDER BY x.n),
               array_agg(CASE WHEN x.skip THEN NULL ELSE x.person END ORDER BY x.n)
        INTO v_class, v_person
        FROM unnest(v_class, v_person, v_skip) WITH ORDINALITY AS x (class, person, skip, n);
    END IF;

    -- Known people first: like identify(), a person is locked before any
    -- identifier is claimed, so that the two never wait for each other in
    -- opposite orders.  Once locked, what the lookup found must still hold:
    -- a concurrent identify may have merged one of them away or moved an
    -- identifier while this import waited.
    IF v_found THEN
        PERFORM FROM @extschema@.people p
        WHERE p.id IN (SELECT u.person FROM unnest(v_class, v_person) AS u (class, person) WHERE u.class = 'm')
        ORDER BY p.id FOR NO KEY UPDATE;
        IF EXISTS (SELECT 1 FROM unnest(v_class, v_person, v_ext_key, v_email_key)
                                 AS x (class, person, ext_key, email_key)
                   WHERE x.class = 'm'
                     AND (NOT EXISTS (SELECT 1 FROM @extschema@.people p WHERE p.id = x.person AND p.status <> 'merged')
                          OR x.ext_key IS NOT NULL AND (SELECT i.person_id FROM @extschema@.person_identities i
                              WHERE i.project_id = import_people.project AND i.kind = 'external_id'
                                AND i.key = x.ext_key) IS DISTINCT FROM x.person
                          OR x.email_key IS NOT NULL AND (SELECT i.person_id FROM @extschema@.person_identities i
                              WHERE i.project_id = import_people.project AND i.kind = 'email'
                                AND i.key = x.email_key) IS DISTINCT FROM x.person)) THEN
            RAISE EXCEPTION 'people of the batch were changed by a concurrent transaction'
                USING ERRCODE = 'serialization_failure', HINT = 'Retry the import.';
        END IF;
        UPDATE @extschema@.people p SET
            external_id = coalesce(p.external_id, x.ext),
            email = CASE WHEN x.email_key IS NOT NULL AND p.email_bidx IS DISTINCT FROM x.email_key
                         THEN @extschema@.encrypt(p.id, pg_catalog.btrim(x.email), 'crm.people.email')
                         ELSE p.email END,
            email_bidx = coalesce(x.email_key, p.email_bidx),
            status = CASE WHEN coalesce(x.email_key, p.email_bidx) IS NOT NULL
                          THEN 'identified' ELSE p.status END,
            traits = CASE WHEN x.traits = '{}' THEN p.traits ELSE p.traits || x.traits END
        FROM (SELECT u.* FROM unnest(v_class, v_person, v_ext, v_email, v_email_key, v_traits)
                              AS u (class, person, ext, email, email_key, traits)
              WHERE u.class = 'm' ORDER BY u.person) AS x
        WHERE p.id = x.person
          AND (p.external_id IS NULL AND x.ext IS NOT NULL
               OR x.email_key IS NOT NULL AND p.email_bidx IS DISTINCT FROM x.email_key
               OR coalesce(x.email_key, p.email_bidx) IS NOT NULL AND p.status <> 'identified'
               OR x.traits <> '{}' AND p.traits || x.traits IS DISTINCT FROM p.traits);
    END IF;

    PERFORM @extschema@.create_subject_keys(array_agg(x.person))
    FROM unnest(v_class, v_person, v_email) AS x (class, person, email)
    WHERE x.class = 'n' AND x.email IS NOT NULL
    HAVING count(*) > 0;
    INSERT INTO @extschema@.people (id, project_id, external_id, email, email_bidx, traits, status, first_seen_at)
    SELECT x.person, import_people.project, x.ext,
           CASE WHEN x.email IS NOT NULL
                THEN @extschema@.encrypt(x.person, pg_catalog.btrim(x.email), 'crm.people.email') END,
           x.email_key, x.traits,
           CASE WHEN x.email IS NULL THEN 'anonymous' ELSE 'identified' END,
           pg_catalog.now()
    FROM unnest(v_class, v_person, v_ext, v_email, v_email_key, v_traits)
         AS x (class, person, ext, email, email_key, traits)
    WHERE x.class = 'n';

    BEGIN
        INSERT INTO @extschema@.person_identities (project_id, kind, key, person_id)
        SELECT import_people.project, c.kind, c.key, x.person
        FROM unnest(v_class, v_person, v_ext_key, v_email_key) AS x (class, person, ext_key, email_key)
             CROSS JOIN LATERAL (VALUES ('email', x.email_key), ('external_id', x.ext_key)) AS c (kind, key)
        WHERE x.class = 'n' AND c.key IS NOT NULL
        ORDER BY c.kind, c.key;
    EXCEPTION WHEN unique_violation THEN
        INSERT INTO @extschema@.person_identities (project_id, kind, key, person_id)
        SELECT import_people.project, c.kind, c.key, x.person
        FROM unnest(v_class, v_person, v_ext_key, v_email_key) AS x (class, person, ext_key, email_key)
             CROSS JOIN LATERAL (VALUES ('email', x.email_key), ('external_id', x.ext_key)) AS c (kind, key)
        WHERE x.class = 'n' AND c.key IS NOT NULL
        ORDER BY c.kind, c.key
        ON CONFLICT DO NOTHING;
        SELECT array_agg(x.person) INTO v_lost
        FROM unnest(v_class, v_person, v_ext_key, v_email_key) AS x (class, person, ext_key, email_key)
        WHERE x.class = 'n'
          AND (x.ext_key IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM @extschema@.person_identities i
                   WHERE i.project_id = import_people.project AND i.kind = 'external_id'
                     AND i.key = x.ext_key AND i.person_id = x.person)
               OR x.email_key IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM @extschema@.person_identities i
                   WHERE i.project_id = import_people.project AND i.kind = 'email'
                     AND i.key = x.email_key AND i.person_id = x.person));
        DELETE FROM @extschema@.person_identities i
        WHERE i.person_id = ANY (v_lost) AND i.kind IN ('email', 'external_id');
        DELETE FROM @extschema@.people p WHERE p.id = ANY (v_lost);
        -- Only those with an email got a data key.
        PERFORM @extschema@.shred_subject_key(x.person)
        FROM unnest(v_class, v_person, v_email) AS x (class, person, email)
        WHERE x.person = ANY (v_lost) AND x.email IS NOT NULL;
        SELECT array_agg(CASE WHEN x.class = 'n' AND x.person = ANY (v_lost) THEN 's' ELSE x.class END
                         ORDER BY x.n)
        INTO v_class
        FROM unnest(v_class, v_person) WITH ORDINALITY AS x (class, person, n);
    END;

    IF 's' = ANY (v_class) THEN
        -- One block around the loop, not one per element: a block is a
        -- subtransaction, and thousands of them in one transaction slow
        -- every session's snapshots.
        BEGIN
            FOR r IN SELECT x.ord, x.ext, x.email, x.traits
                     FROM unnest(v_ord, v_class, v_ext, v_email, v_traits) AS x (ord, class, ext, email, traits)
                     WHERE x.class = 's' ORDER BY x.ord LOOP
                v_bad := r.ord;
                v_seq_ord := v_seq_ord || r.ord;
                v_seq_person := v_seq_person || @extschema@.identify(import_people.project, r.ext, r.email, r.traits);
            END LOOP;
        EXCEPTION WHEN object_in_use THEN
            RAISE EXCEPTION 'the external id and the email of element % of people belong to two identified people', v_bad
                USING ERRCODE = 'object_in_use',
                      HINT = 'Merge them explicitly with gdprcrm.merge_people, or correct the email.';
        END;
        RETURN QUERY
            SELECT x.ord, coalesce(s.person, x.person)
            FROM unnest(v_ord, v_person) AS x (ord, person)
            LEFT JOIN unnest(v_seq_ord, v_seq_person) AS s (ord, person) ON s.ord = x.ord
            ORDER BY x.ord;
    ELSE
        RETURN QUERY SELECT x.ord, x.person FROM unnest(v_ord, v_person) AS x (ord, person);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.track(project bigint, person bigint, event text,
                                  properties jsonb DEFAULT '{}', occurred_at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(event, '') = '' THEN
        RAISE EXCEPTION 'event name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM @extschema@.require_not_erased(project, person);
    INSERT INTO @extschema@.events (project_id, person_id, occurred_at, kind, name, properties)
    VALUES (project, person, coalesce(occurred_at, pg_catalog.now()), 'custom', event, coalesce(properties, '{}'));
    PERFORM @extschema@.note_activity(project, person, coalesce(occurred_at, pg_catalog.now()));
END $$;

CREATE OR REPLACE FUNCTION @extschema@.track_page_view(project bigint, person bigint, url text,
                                            title text DEFAULT NULL, referrer text DEFAULT NULL,
                                            properties jsonb DEFAULT '{}', occurred_at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(url, '') = '' THEN
        RAISE EXCEPTION 'page view url must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM @extschema@.require_not_erased(project, person);
    INSERT INTO @extschema@.events (project_id, person_id, occurred_at, kind, name, url, path,
                                    referrer, title, properties)
    VALUES (project, person, coalesce(occurred_at, pg_catalog.now()), 'page_view', 'page_view', url,
            coalesce(substring(url FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*([^?#]*)'), url),
            referrer, title, coalesce(properties, '{}'));
    PERFORM @extschema@.note_activity(project, person, coalesce(occurred_at, pg_catalog.now()));
END $$;

CREATE OR REPLACE FUNCTION @extschema@.add_message(project bigint, person bigint, direction text, channel text,
                                        subject text, body text, sent_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint := pg_catalog.nextval('@extschema@.messages_id_seq');
BEGIN
    PERFORM @extschema@.require_not_erased(project, person);
    INSERT INTO @extschema@.messages (id, project_id, person_id, direction, channel, subject, body, sent_at)
    VALUES (v_id, project, person, direction, channel,
            @extschema@.encrypt(person, subject, 'crm.messages.subject'),
            @extschema@.encrypt(person, body, 'crm.messages.body'),
            coalesce(sent_at, pg_catalog.now()));
    RETURN v_id;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.add_enrichment(project bigint, person bigint, source text, field text,
                                           value jsonb, fetched_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint := pg_catalog.nextval('@extschema@.enrichments_id_seq');
BEGIN
    PERFORM @extschema@.require_not_erased(project, person);
    INSERT INTO @extschema@.enrichments (id, project_id, person_id, source, field, value, fetched_at)
    VALUES (v_id, project, person, source, field, value, coalesce(fetched_at, pg_catalog.now()));
    RETURN v_id;
END $$;
/* ---- consent: recipients of a purpose ---- */

ALTER TABLE @extschema@.purposes ADD COLUMN recipients text[];
COMMENT ON COLUMN @extschema@.purposes.recipients IS
    'Recipients or categories of recipients the data is disclosed to for this purpose (GDPR Art. 13, 15)';

/*
 * Who receives data processed for a purpose: named recipients or
 * categories of recipients, as a subject access export must tell.  Like a
 * purpose's description, for any gdprcrm_admin: it changes what the
 * subject is told, not what anyone may see.  NULL or an empty array: none
 * declared.
 */
CREATE FUNCTION @extschema@.set_purpose_recipients(purpose text, recipients text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.require_project_admin(NULL);
    IF EXISTS (SELECT 1 FROM pg_catalog.unnest(recipients) AS r
               WHERE coalesce(pg_catalog.btrim(r), '') = '') THEN
        RAISE EXCEPTION 'a recipient must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE @extschema@.purposes p
    SET recipients = CASE WHEN pg_catalog.cardinality(set_purpose_recipients.recipients) > 0
                          THEN set_purpose_recipients.recipients END
    WHERE p.name = set_purpose_recipients.purpose;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'purpose "%" does not exist', purpose USING ERRCODE = 'undefined_object',
            HINT = 'Define it with gdprcrm.define_purpose().';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.set_purpose_recipients(text, text[]) IS
    'Declare the recipients or categories of recipients of a purpose''s data (NULL or empty: none)';
REVOKE ALL ON FUNCTION @extschema@.set_purpose_recipients(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.set_purpose_recipients(text, text[]) TO gdprcrm_admin;

/* ---- export (new concern: src/sql/export.sql) ---- */

/*
 * export: the subject access export (GDPR Art. 15), in forms fit for
 * portability (Art. 20): every row of a subject in every registered table,
 * encrypted columns decrypted, with what the subject is entitled to be
 * told about the processing, as one jsonb document, as CSV documents or as
 * one printable HTML document.
 *
 * The three entry points check the caller (require_subject_admin), record
 * the export in the rights log, then build the document in STABLE
 * functions, whose statements all read the one snapshot of the statement
 * that calls them: an export shows the subject at one moment even while
 * the subject's data changes.  They run as the extension's owner, past
 * every team and purpose filter (the data protection officer must see
 * everything), and every query finds rows by the registered subject
 * column: never another subject's row.
 */

/*
 * Text escaped for HTML content and attribute values.  Plain SQL without
 * SET, so that the planner inlines it (it runs for every value of the
 * HTML export); every name in it is schema-qualified instead.
 */
CREATE FUNCTION @extschema@.html_escape(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
        value, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;')
$$;
COMMENT ON FUNCTION @extschema@.html_escape(text) IS
    'Text escaped for HTML content and attribute values (& < > " '')';

/*
 * One CSV field as RFC 4180 and COPY ... CSV write it: quoted when it
 * holds a comma, a quote, a line break or is empty (so that an empty
 * string differs from NULL, which is an empty unquoted field), quotes
 * doubled.  Inlined like html_escape; callers pass a column, never an
 * expression, since the inlined body reads its argument several times.
 */
CREATE FUNCTION @extschema@.csv_field(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL THEN ''
                WHEN value OPERATOR(pg_catalog.=) '' OR value OPERATOR(pg_catalog.~) E'[",\r\n]'
                THEN '"' OPERATOR(pg_catalog.||) pg_catalog.replace(value, '"', '""') OPERATOR(pg_catalog.||) '"'
                ELSE value END
$$;
COMMENT ON FUNCTION @extschema@.csv_field(text) IS
    'One CSV field (RFC 4180): quoted when needed, NULL as an empty field';

/*
 * How export reads each column of a registered table, in column order: an
 * expression over the alias t in which $1 is the subject.  Encrypted
 * columns are decrypted with their context (encrypted_columns) and the
 * subject: a value in the subject's row that belongs to another subject is
 * an error, never a disclosure.  value_type is the type of the exported
 * value (text for encrypted_text, and so on).
 */
CREATE FUNCTION @extschema@.export_columns(tab regclass)
RETURNS TABLE (ordinal integer, column_name name, value_type text, encrypted boolean, expression text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.attnum::integer, a.attname,
           CASE WHEN e.context IS NULL THEN pg_catalog.format_type(a.atttypid, a.atttypmod)
                WHEN a.atttypid = '@extschema@.encrypted_jsonb'::regtype THEN 'jsonb'
                WHEN a.atttypid = '@extschema@.encrypted_bytea'::regtype THEN 'bytea'
                ELSE 'text' END,
           e.context IS NOT NULL,
           CASE WHEN e.context IS NULL THEN pg_catalog.format('t.%I', a.attname)
                ELSE pg_catalog.format('@extschema@.decrypt(t.%I, %L, $1)', a.attname, e.context) END
    FROM pg_catalog.pg_attribute a
    LEFT JOIN @extschema@.encrypted_columns(tab) e ON e.column_name = a.attname
    WHERE a.attrelid = tab AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum
$$;
COMMENT ON FUNCTION @extschema@.export_columns(regclass) IS
    'How export reads each column of a table: decrypting expressions for encrypted columns';

/*
 * The columns a table's rows are exported in the order of: its primary
 * key or, for a partitioned table without one, the primary key of a
 * partition (the event partitions' person_id, occurred_at, id).  NULL for
 * neither: such a table's rows come in no particular order.
 */
CREATE FUNCTION @extschema@.export_order(tab regclass) RETURNS name[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (SELECT pg_catalog.array_agg(a.attname ORDER BY k.n)
            FROM pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
            JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
    FROM pg_catalog.pg_index i
    WHERE i.indisprimary
      AND (i.indrelid = tab
           OR i.indrelid IN (SELECT h.inhrelid FROM pg_catalog.pg_inherits h WHERE h.inhparent = tab))
    ORDER BY i.indrelid <> tab, i.indrelid
    LIMIT 1
$$;
COMMENT ON FUNCTION @extschema@.export_order(regclass) IS
    'Columns export orders a table''s rows by: its primary key, or a partition''s';

/*
 * One registered table's rows of a subject, read by one query on the
 * subject column, which the table's own indexes serve (the event
 * partitions' primary keys lead with the person): the columns (name, type
 * of the exported value, whether it was encrypted), the rows as a JSON
 * array of objects, and how many.  JSON text, not jsonb: the document is
 * assembled as text and converted to jsonb once, since every conversion of
 * a large jsonb value costs more than the query (doc/benchmarks.md).
 * json_build_object takes at most 50 pairs, so wider rows are built as
 * jsonb slices put together.
 */
CREATE FUNCTION @extschema@.export_table(tab regclass, subject_column name, subject bigint,
                                         OUT columns json, OUT rows json, OUT row_count bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp SET gdprcrm.strict_erasure = off
SET intervalstyle = 'iso_8601' SET bytea_output = 'hex' AS $$
DECLARE
    v_object text;
    v_order text;
BEGIN
    SELECT CASE WHEN count(*) <= 50 THEN
               'pg_catalog.json_build_object(' ||
               pg_catalog.string_agg(pg_catalog.format('%L, %s', c.column_name, c.expression), ', ' ORDER BY c.ordinal)
               || ')'
           ELSE
               '(' || (SELECT pg_catalog.string_agg(s.part, ' OPERATOR(pg_catalog.||) ' ORDER BY s.slice)
                       FROM (SELECT x.n / 50 AS slice,
                                    'pg_catalog.jsonb_build_object(' ||
                                    pg_catalog.string_agg(pg_catalog.format('%L, %s', x.column_name, x.expression), ', '
                                                          ORDER BY x.n) || ')' AS part
                             FROM (SELECT e.*, pg_catalog.row_number() OVER (ORDER BY e.ordinal) - 1 AS n
                                   FROM @extschema@.export_columns(tab) e) x
                             GROUP BY x.n / 50) s)
               || ')::pg_catalog.json' END,
           pg_catalog.json_agg(pg_catalog.json_build_object('name', c.column_name, 'type', c.value_type,
                                                            'encrypted', c.encrypted) ORDER BY c.ordinal)
    INTO v_object, columns
    FROM @extschema@.export_columns(tab) c;
    SELECT pg_catalog.string_agg(pg_catalog.format('t.%I', o.col), ', ' ORDER BY o.n) INTO v_order
    FROM pg_catalog.unnest(@extschema@.export_order(tab)) WITH ORDINALITY AS o(col, n);

    EXECUTE pg_catalog.format('SELECT pg_catalog.json_agg(%s%s), count(*) FROM %s t WHERE t.%I OPERATOR(pg_catalog.=) $1',
                              v_object, CASE WHEN v_order IS NOT NULL THEN ' ORDER BY ' || v_order ELSE '' END,
                              tab, subject_column)
        INTO rows, row_count USING subject;
    rows := coalesce(rows, '[]');
END $$;
COMMENT ON FUNCTION @extschema@.export_table(regclass, name, bigint) IS
    'One registered table''s rows of a subject, decrypted, as JSON, with its columns (for the exports)';

/*
 * The same rows as one CSV document: a header line of column names, then
 * one line per row, each value in its PostgreSQL text form (as COPY
 * writes it: ISO dates, jsonb as JSON text, bytea in hex), lines ended by
 * CRLF.  The values are computed in a subquery that OFFSET 0 keeps from
 * being flattened, so that csv_field, inlined, reads each value without
 * decrypting it again.
 */
CREATE FUNCTION @extschema@.export_table_csv(tab regclass, subject_column name, subject bigint)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp SET gdprcrm.strict_erasure = off
SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET bytea_output = 'hex' AS $$
DECLARE
    v_header text;
    v_values text;
    v_line text;
    v_order_values text;
    v_order text;
    v_csv text;
BEGIN
    SELECT pg_catalog.string_agg(@extschema@.csv_field(c.column_name::text), ',' ORDER BY c.ordinal),
           pg_catalog.string_agg(pg_catalog.format('(%s)::text AS c%s', c.expression, c.ordinal), ', '
                                 ORDER BY c.ordinal),
           pg_catalog.string_agg(pg_catalog.format('@extschema@.csv_field(r.c%s)', c.ordinal),
                                 ' OPERATOR(pg_catalog.||) '','' OPERATOR(pg_catalog.||) ' ORDER BY c.ordinal)
    INTO v_header, v_values, v_line
    FROM @extschema@.export_columns(tab) c;
    SELECT pg_catalog.string_agg(pg_catalog.format(', t.%I AS o%s', o.col, o.n), '' ORDER BY o.n),
           pg_catalog.string_agg(pg_catalog.format('r.o%s', o.n), ', ' ORDER BY o.n)
    INTO v_order_values, v_order
    FROM pg_catalog.unnest(@extschema@.export_order(tab)) WITH ORDINALITY AS o(col, n);

    EXECUTE pg_catalog.format(
        'SELECT pg_catalog.string_agg(%s OPERATOR(pg_catalog.||) E''\r\n'', ''''%s) '
        'FROM (SELECT %s%s FROM %s t WHERE t.%I OPERATOR(pg_catalog.=) $1 OFFSET 0) r',
        v_line, CASE WHEN v_order IS NOT NULL THEN ' ORDER BY ' || v_order ELSE '' END,
        v_values, coalesce(v_order_values, ''), tab, subject_column)
        INTO v_csv USING subject;
    RETURN v_header || E'\r\n' || coalesce(v_csv, '');
END $$;
COMMENT ON FUNCTION @extschema@.export_table_csv(regclass, name, bigint) IS
    'One registered table''s rows of a subject, decrypted, as a CSV document with a header line (for the exports)';

/* A duration for people: "30 days", "1 year 6 months". */
CREATE FUNCTION @extschema@.export_duration(value interval) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.string_agg(u.n::text || ' ' || u.unit || CASE WHEN u.n = 1 THEN '' ELSE 's' END, ' '
                                 ORDER BY u.ord)
    FROM (VALUES (1, pg_catalog.date_part('year', value), 'year'),
                 (2, pg_catalog.date_part('month', value), 'month'),
                 (3, pg_catalog.date_part('day', value), 'day'),
                 (4, pg_catalog.date_part('hour', value), 'hour'),
                 (5, pg_catalog.date_part('minute', value), 'minute')) AS u(ord, n, unit)
    WHERE u.n <> 0
$$;
COMMENT ON FUNCTION @extschema@.export_duration(interval) IS
    'A retention period in words, for the HTML export';

/*
 * The whole export of a subject as one JSON document (doc/export.md
 * describes it), which sar_export converts to jsonb once.  project is the
 * subject's project, as require_subject_admin returned it.  What the
 * subject is told about the purposes comes from explain_access, the same
 * rules as the row filter.
 */
CREATE FUNCTION @extschema@.export_document(subject bigint, project bigint)
RETURNS json
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp SET gdprcrm.strict_erasure = off
SET intervalstyle = 'iso_8601' SET bytea_output = 'hex' AS $$
DECLARE
    v_known boolean;
    v_state jsonb;
    v_since timestamptz;
    v_tables json;
    v_purposes jsonb;
    v_consents jsonb;
    v_restrictions jsonb;
    v_sources jsonb;
    v_recipients jsonb;
    v_categories jsonb;
BEGIN
    SELECT true, p.created_at INTO v_known, v_since FROM @extschema@.people p
    WHERE p.id = export_document.subject;
    v_known := coalesce(v_known, false);
    SELECT pg_catalog.to_jsonb(s) - ARRAY['subject', 'consented', 'objected'] INTO v_state
    FROM @extschema@.subject_state s WHERE s.subject = export_document.subject;

    -- The data: one query per registered table, the profile first; and
    -- the categories of personal data, the tables that hold some.
    SELECT coalesce(pg_catalog.json_agg(
               pg_catalog.json_build_object('table', r.relation::text, 'category', r.category,
                                            'description', r.description, 'subject_column', r.subject_column,
                                            'columns', x.columns, 'rows', x.rows)
               ORDER BY r.relation <> '@extschema@.people'::regclass, NOT r.builtin, r.relation::text), '[]'),
           coalesce(pg_catalog.jsonb_agg(
               pg_catalog.jsonb_build_object('category', coalesce(r.category, r.relation::text),
                                             'description', r.description, 'table', r.relation::text,
                                             'records', x.row_count)
               ORDER BY r.relation <> '@extschema@.people'::regclass, NOT r.builtin, r.relation::text)
               FILTER (WHERE x.row_count > 0), '[]')
    INTO v_tables, v_categories
    FROM @extschema@.registered_tables r
    CROSS JOIN LATERAL @extschema@.export_table(r.relation, r.subject_column, export_document.subject) x;

    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', e.id, 'purpose', e.purpose, 'action', e.action, 'captured_at', e.captured_at,
               'recorded_at', e.recorded_at, 'recorded_by', e.recorded_by, 'source', e.source,
               'method', e.method, 'notice_version', e.notice_version,
               'wording_sha256', pg_catalog.encode(e.wording_hash, 'hex'), 'evidence', e.evidence)
               ORDER BY e.captured_at, e.id), '[]')
    INTO v_consents FROM @extschema@.consent_events e WHERE e.subject = export_document.subject;
    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', e.id, 'action', e.action, 'reason', e.reason, 'recorded_at', e.recorded_at,
               'recorded_by', e.recorded_by) ORDER BY e.recorded_at, e.id), '[]')
    INTO v_restrictions FROM @extschema@.restriction_events e WHERE e.subject = export_document.subject;

    -- Purposes lawful for the subject now, and those with consent history.
    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'purpose', p.name, 'description', p.description, 'lawful_basis', p.lawful_basis,
               'lawful_basis_reference', 'GDPR Art. 6(1)(' || CASE p.lawful_basis
                   WHEN 'consent' THEN 'a' WHEN 'contract' THEN 'b' WHEN 'legal_obligation' THEN 'c'
                   WHEN 'vital_interests' THEN 'd' WHEN 'public_task' THEN 'e' ELSE 'f' END || ')',
               'special_category', p.special_category,
               'lawful_now', coalesce(x.explanation LIKE 'visible:%', false), 'explanation', x.explanation,
               'consent', CASE c.action WHEN 'grant' THEN 'given' WHEN 'withdraw' THEN 'withdrawn' END,
               'consent_changed_at', c.captured_at,
               'objected', coalesce(o.action = 'object', false), 'objection_changed_at', o.captured_at,
               'retention', p.retention,
               'retention_criteria', CASE WHEN p.retention IS NULL
                   THEN 'No fixed period is declared: the data is kept while this purpose applies and its lawful basis holds.'
                   ELSE 'Kept for at most the retention period (an ISO 8601 duration), then erased or anonymised.' END,
               'recipients', coalesce(pg_catalog.to_jsonb(p.recipients), '[]'))
               ORDER BY p.name), '[]')
    INTO v_purposes
    FROM @extschema@.purposes p
    CROSS JOIN LATERAL (SELECT CASE WHEN v_known THEN @extschema@.explain_access(export_document.subject, p.name)
                               END AS explanation) x
    LEFT JOIN LATERAL (SELECT e.action, e.captured_at FROM @extschema@.consent_events e
                       WHERE e.subject = export_document.subject AND e.purpose = p.name
                         AND e.action IN ('grant', 'withdraw')
                       ORDER BY e.id DESC LIMIT 1) c ON true
    LEFT JOIN LATERAL (SELECT e.action, e.captured_at FROM @extschema@.consent_events e
                       WHERE e.subject = export_document.subject AND e.purpose = p.name
                         AND e.action IN ('object', 'withdraw_objection')
                       ORDER BY e.id DESC LIMIT 1) o ON true
    WHERE x.explanation LIKE 'visible:%' OR c.action IS NOT NULL OR o.action IS NOT NULL;

    -- Recipients of the listed purposes: those the data was or will be disclosed to.
    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('recipient', r.recipient,
                                                                       'purposes', r.purposes)
                                         ORDER BY r.recipient), '[]')
    INTO v_recipients
    FROM (SELECT x.recipient, pg_catalog.jsonb_agg(p ->> 'purpose' ORDER BY p ->> 'purpose') AS purposes
          FROM pg_catalog.jsonb_array_elements(v_purposes) AS p,
               pg_catalog.jsonb_array_elements_text(p -> 'recipients') AS x(recipient)
          GROUP BY x.recipient) r;

    -- Where the data comes from.
    SELECT coalesce(pg_catalog.jsonb_agg(s.source ORDER BY s.ord, s.first_at, s.source::text), '[]')
    INTO v_sources
    FROM (SELECT 1 AS ord, v_since AS first_at, pg_catalog.jsonb_build_object(
                     'kind', 'direct', 'since', v_since,
                     'description', 'Provided by you, or recorded by the controller''s application as you used its services') AS source
          WHERE v_known
          UNION ALL
          SELECT 2, min(n.fetched_at), pg_catalog.jsonb_build_object(
                     'kind', 'enrichment', 'source', n.source, 'field', n.field, 'records', count(*),
                     'first_fetched_at', min(n.fetched_at), 'last_fetched_at', max(n.fetched_at))
          FROM @extschema@.enrichments n WHERE n.person_id = export_document.subject
          GROUP BY n.source, n.field
          UNION ALL
          SELECT 3, min(e.captured_at), pg_catalog.jsonb_build_object(
                     'kind', 'consent_capture', 'source', e.source, 'method', e.method, 'events', count(*),
                     'first_captured_at', min(e.captured_at), 'last_captured_at', max(e.captured_at))
          FROM @extschema@.consent_events e
          WHERE e.subject = export_document.subject AND (e.source IS NOT NULL OR e.method IS NOT NULL)
          GROUP BY e.source, e.method) s;

    -- The ledgers are categories too.
    SELECT v_categories || coalesce(pg_catalog.jsonb_agg(c.category ORDER BY c.n), '[]') INTO v_categories
    FROM (SELECT 1 AS n, pg_catalog.jsonb_build_object('category', 'consent',
                     'description', 'Your consents, their withdrawals and your objections, with where and how they were recorded',
                     'table', 'consent_history', 'records', pg_catalog.jsonb_array_length(v_consents)) AS category
          WHERE pg_catalog.jsonb_array_length(v_consents) > 0
          UNION ALL
          SELECT 2, pg_catalog.jsonb_build_object('category', 'restriction',
                     'description', 'Restrictions of processing and their lifting',
                     'table', 'restriction_history', 'records', pg_catalog.jsonb_array_length(v_restrictions)) AS category
          WHERE pg_catalog.jsonb_array_length(v_restrictions) > 0) c;

    RETURN pg_catalog.json_build_object(
        'format', 'gdprcrm subject access export',
        'format_version', 1,
        'generated_at', pg_catalog.now(),
        'time_zone', pg_catalog.current_setting('TimeZone'),
        'controller', pg_catalog.jsonb_build_object(
            'project_id', project,
            'project', (SELECT j.name FROM @extschema@.projects j WHERE j.id = project)),
        'subject', pg_catalog.jsonb_build_object(
            'id', export_document.subject, 'known', v_known,
            'erased', coalesce((v_state ->> 'erased_at') IS NOT NULL, false),
            'state', coalesce(v_state, '{}')),
        'notes', CASE WHEN (v_state ->> 'erased_at') IS NOT NULL THEN pg_catalog.jsonb_build_array(
            'The subject was erased: the data key was destroyed, and encrypted values, which can no longer be read, are null.')
            ELSE '[]' END,
        'article_15', pg_catalog.jsonb_build_object(
            'purposes', v_purposes,
            'categories_of_personal_data', v_categories,
            'recipients', v_recipients,
            'retention', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                  'purpose', p -> 'purpose', 'retention', p -> 'retention',
                                  'criteria', p -> 'retention_criteria')), '[]')
                          FROM pg_catalog.jsonb_array_elements(v_purposes) AS p),
            'rights', pg_catalog.jsonb_build_object(
                'access', 'You may obtain a copy of your personal data and the information in this document (GDPR Art. 15).',
                'rectification', 'You may have inaccurate data about you corrected and incomplete data completed (GDPR Art. 16).',
                'erasure', 'You may have your data erased where it is no longer needed, you withdraw consent, you object or it was processed unlawfully (GDPR Art. 17).',
                'restriction', 'You may have the processing of your data restricted while its accuracy or lawfulness is checked (GDPR Art. 18).',
                'objection', 'You may object to processing based on legitimate interests or a public task, and at any time to direct marketing (GDPR Art. 21).',
                'portability', 'You may receive the data you provided in a structured, machine-readable form such as this one and have it sent to another controller (GDPR Art. 20).',
                'withdraw_consent', 'Where processing is based on your consent, you may withdraw it at any time, without affecting processing before the withdrawal (GDPR Art. 7(3)).'),
            'complaint', 'You have the right to lodge a complaint with a supervisory authority, in particular in the Member State of your habitual residence, place of work or place of the alleged infringement (GDPR Art. 77).',
            'sources', v_sources,
            'automated_decision_making', pg_catalog.jsonb_build_object(
                'used', false,
                'explanation', 'No decision about you is based solely on automated processing, including profiling (GDPR Art. 22).')),
        'data', v_tables,
        'consent_history', v_consents,
        'restrictions', v_restrictions);
END $$;
COMMENT ON FUNCTION @extschema@.export_document(bigint, bigint) IS
    'The export of a subject as one JSON document, unchecked and unlogged (for the exports)';

/*
 * The CSV documents of a subject: one per registered table (the profile
 * first), then the consent and the restriction history.
 */
CREATE FUNCTION @extschema@.export_csv(subject bigint)
RETURNS TABLE (table_name text, csv text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp SET gdprcrm.strict_erasure = off
SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET bytea_output = 'hex' AS $$
BEGIN
    RETURN QUERY
        SELECT r.relation::text, @extschema@.export_table_csv(r.relation, r.subject_column, export_csv.subject)
        FROM @extschema@.registered_tables r
        ORDER BY r.relation <> '@extschema@.people'::regclass, NOT r.builtin, r.relation::text;
    RETURN QUERY
        SELECT 'consent_history'::text,
               'id,purpose,action,captured_at,recorded_at,recorded_by,source,method,notice_version,wording_sha256,evidence'
               || E'\r\n' || coalesce(pg_catalog.string_agg(
                   @extschema@.csv_field(e.id::text) || ',' || @extschema@.csv_field(e.purpose) || ',' ||
                   @extschema@.csv_field(e.action) || ',' || @extschema@.csv_field(e.captured_at::text) || ',' ||
                   @extschema@.csv_field(e.recorded_at::text) || ',' || @extschema@.csv_field(e.recorded_by::text) || ',' ||
                   @extschema@.csv_field(e.source) || ',' || @extschema@.csv_field(e.method) || ',' ||
                   @extschema@.csv_field(e.notice_version) || ',' ||
                   @extschema@.csv_field(pg_catalog.encode(e.wording_hash, 'hex')) || ',' ||
                   @extschema@.csv_field(e.evidence::text) || E'\r\n', '' ORDER BY e.captured_at, e.id), '')
        FROM @extschema@.consent_events e WHERE e.subject = export_csv.subject;
    RETURN QUERY
        SELECT 'restriction_history'::text,
               'id,action,reason,recorded_at,recorded_by' || E'\r\n' || coalesce(pg_catalog.string_agg(
                   @extschema@.csv_field(e.id::text) || ',' || @extschema@.csv_field(e.action) || ',' ||
                   @extschema@.csv_field(e.reason) || ',' || @extschema@.csv_field(e.recorded_at::text) || ',' ||
                   @extschema@.csv_field(e.recorded_by::text) || E'\r\n', '' ORDER BY e.recorded_at, e.id), '')
        FROM @extschema@.restriction_events e WHERE e.subject = export_csv.subject;
END $$;
COMMENT ON FUNCTION @extschema@.export_csv(bigint) IS
    'The export of a subject as CSV documents, unchecked and unlogged (for the exports)';

/*
 * Helpers of the HTML export, plain SQL without SET so that they are
 * inlined into its queries (every name schema-qualified instead): a jsonb
 * value as escaped text (strings unquoted, NULL as nothing), a timestamp
 * as "2026-05-01 14:30" in the session's time zone, and an object as
 * name/value pairs (anything else as escaped JSON).
 */
CREATE FUNCTION @extschema@.html_value(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT @extschema@.html_escape(CASE pg_catalog.jsonb_typeof(value)
                                       WHEN 'string' THEN value OPERATOR(pg_catalog.#>>) '{}'
                                       WHEN 'null' THEN NULL
                                       ELSE value::pg_catalog.text END)
$$;
COMMENT ON FUNCTION @extschema@.html_value(jsonb) IS
    'A jsonb value as HTML-escaped text (strings unquoted), for the HTML export';

CREATE FUNCTION @extschema@.html_time(value text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.to_char(value::pg_catalog.timestamptz, 'YYYY-MM-DD HH24:MI')
$$;
COMMENT ON FUNCTION @extschema@.html_time(text) IS
    'A timestamp as YYYY-MM-DD HH24:MI in the session''s time zone, for the HTML export';

CREATE FUNCTION @extschema@.html_pairs(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_catalog.jsonb_typeof(value) OPERATOR(pg_catalog.=) 'object' THEN
               (SELECT pg_catalog.string_agg('<span class="pair"><span class="k" dir="auto">'
                                             OPERATOR(pg_catalog.||) @extschema@.html_escape(x.key)
                                             OPERATOR(pg_catalog.||) '</span> <bdi>'
                                             OPERATOR(pg_catalog.||) coalesce(@extschema@.html_value(x.value), '')
                                             OPERATOR(pg_catalog.||) '</bdi></span>', ' ' ORDER BY x.key)
                FROM pg_catalog.jsonb_each(value) AS x)
           ELSE @extschema@.html_value(value) END
$$;
COMMENT ON FUNCTION @extschema@.html_pairs(jsonb) IS
    'A jsonb object as HTML name/value pairs (anything else as escaped JSON), for the HTML export';

/*
 * The HTML document of an export, rendered from its JSON document: one
 * self-contained page a person can read and print.  Every value goes
 * through html_escape and sits in an element with dir="auto" (or in a
 * bdi), so that right-to-left text keeps its direction inside English
 * sentences.  The Content-Security-Policy allows inline styles and
 * nothing else: even markup that slipped past the escaping could neither
 * run a script nor load anything.
 */
CREATE FUNCTION @extschema@.export_html(document json) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_builtin text[] := ARRAY['@extschema@.people'::regclass::text, '@extschema@.events'::regclass::text,
                              '@extschema@.messages'::regclass::text, '@extschema@.enrichments'::regclass::text];
    doc jsonb;          -- the document, each table without its rows
    v_data json;
    v_tables jsonb;
    v_rows json[];      -- the rows of each table of doc -> 'data', in order
    v_person jsonb;
    v_events json;
    v_messages json;
    v_enrichments json;
    v_a15 jsonb;
    v_project text;
    v_name text;
    v_none text;
    v_html text[];
    v_part text;
BEGIN
    -- Taken apart once, the rows kept as JSON: building a large jsonb
    -- value costs more than the page.
    SELECT pg_catalog.jsonb_object_agg(e.key, e.value::jsonb) FILTER (WHERE e.key <> 'data'),
           (pg_catalog.array_agg(e.value) FILTER (WHERE e.key = 'data'))[1]
    INTO doc, v_data FROM pg_catalog.json_each(document) AS e;
    SELECT pg_catalog.jsonb_agg(t.meta ORDER BY t.n), pg_catalog.array_agg(t.rows ORDER BY t.n)
    INTO v_tables, v_rows
    FROM (SELECT x.n, pg_catalog.jsonb_object_agg(f.key, f.value::jsonb) FILTER (WHERE f.key <> 'rows') AS meta,
                 (pg_catalog.array_agg(f.value) FILTER (WHERE f.key = 'rows'))[1] AS rows
          FROM pg_catalog.json_array_elements(v_data) WITH ORDINALITY AS x(t, n), pg_catalog.json_each(x.t) AS f
          GROUP BY x.n) t;
    doc := doc || pg_catalog.jsonb_build_object('data', coalesce(v_tables, '[]'));
    v_a15 := doc -> 'article_15';
    v_project := coalesce(doc #>> '{controller,project}', 'us');
    v_none := CASE WHEN (doc #>> '{subject,erased}')::boolean THEN '<span class="muted">unreadable: erased</span>'
                   ELSE '<span class="muted">none recorded</span>' END;
    SELECT (v_rows[t.n] -> 0)::jsonb INTO v_person
    FROM jsonb_array_elements(doc -> 'data') WITH ORDINALITY AS t(meta, n) WHERE t.meta ->> 'table' = v_builtin[1];
    SELECT v_rows[t.n] INTO v_events
    FROM jsonb_array_elements(doc -> 'data') WITH ORDINALITY AS t(meta, n) WHERE t.meta ->> 'table' = v_builtin[2];
    SELECT v_rows[t.n] INTO v_messages
    FROM jsonb_array_elements(doc -> 'data') WITH ORDINALITY AS t(meta, n) WHERE t.meta ->> 'table' = v_builtin[3];
    SELECT v_rows[t.n] INTO v_enrichments
    FROM jsonb_array_elements(doc -> 'data') WITH ORDINALITY AS t(meta, n) WHERE t.meta ->> 'table' = v_builtin[4];
    v_events := coalesce(v_events, '[]');
    v_messages := coalesce(v_messages, '[]');
    v_enrichments := coalesce(v_enrichments, '[]');
    v_name := coalesce(v_person ->> 'name', v_person ->> 'email', v_person ->> 'external_id',
                       'person ' || (doc #>> '{subject,id}'));

    v_html := ARRAY[
'<!DOCTYPE html>
<html lang="en" dir="ltr">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src ''none''; style-src ''unsafe-inline''; base-uri ''none''; form-action ''none''">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="color-scheme" content="light">
<title>Personal data held about ' || @extschema@.html_escape(v_name) || ' by ' || @extschema@.html_escape(v_project) || '</title>
<style>
:root { --ink: #1d2733; --muted: #5b6b7c; --line: #dfe5ec; --soft: #f3f6f9; --accent: #24527a; --ok: #1d6b3f; --off: #8a4b08; }
* { box-sizing: border-box; }
html { background: #e9eef3; }
body { margin: 0; color: var(--ink); font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", "Noto Sans Arabic", "Noto Sans Hebrew", Arial, sans-serif, "Noto Color Emoji", "Apple Color Emoji", "Segoe UI Emoji"; }
main { max-width: 62rem; margin: 2rem auto; padding: 2.5rem 3rem 2rem; background: #fff; border-radius: 10px; box-shadow: 0 2px 14px rgba(20, 40, 60, .12); }
header.cover { border-bottom: 3px solid var(--accent); padding-bottom: 1.2rem; }
.kicker { margin: 0; color: var(--accent); font-weight: 600; letter-spacing: .08em; text-transform: uppercase; font-size: .8rem; }
h1 { margin: .2rem 0 .4rem; font-size: 2rem; line-height: 1.2; }
.lead { margin: 0 0 1rem; font-size: 1.1rem; color: var(--muted); }
.lead strong { color: var(--ink); }
h2 { margin: 2.4rem 0 .8rem; padding-bottom: .3rem; font-size: 1.3rem; color: var(--accent); border-bottom: 1px solid var(--line); }
h3 { margin: 1.4rem 0 .4rem; font-size: 1.05rem; }
p { margin: .4rem 0 .8rem; }
.muted { color: var(--muted); }
.intro { color: var(--muted); margin-top: -.3rem; }
dl.facts { display: grid; grid-template-columns: minmax(9rem, max-content) 1fr; gap: .35rem 1.5rem; margin: .6rem 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
nav.toc { margin: 1.4rem 0 0; padding: .9rem 1.2rem; background: var(--soft); border-radius: 8px; }
nav.toc h2 { margin: 0 0 .3rem; border: 0; padding: 0; font-size: 1rem; color: var(--ink); }
nav.toc ol { margin: 0; padding-inline-start: 1.3rem; columns: 2; column-gap: 2rem; }
nav.toc a { color: var(--accent); text-decoration: none; }
.notice { margin: 1rem 0; padding: .8rem 1rem; border-inline-start: 4px solid var(--off); background: #fdf4e7; border-radius: 4px; }
.table-wrap { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-size: .9rem; margin: .4rem 0 1rem; }
th, td { padding: .4rem .55rem; border-bottom: 1px solid var(--line); text-align: start; vertical-align: top; overflow-wrap: break-word; }
.cap::first-letter { text-transform: uppercase; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.when { white-space: nowrap; color: var(--muted); font-variant-numeric: tabular-nums; }
td.num { text-align: end; font-variant-numeric: tabular-nums; }
td.body { white-space: pre-wrap; }
.pair { display: inline-block; margin: 0 .3rem .2rem 0; padding: 0 .4rem; border-radius: 4px; background: var(--soft); font-size: .85rem; }
.pair .k { color: var(--muted); }
.url { color: var(--muted); font-size: .85rem; overflow-wrap: anywhere; }
.purposes { display: grid; grid-template-columns: repeat(auto-fill, minmax(17rem, 1fr)); gap: .9rem; }
.purpose { border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem; break-inside: avoid; }
.purpose h3 { margin: 0 0 .2rem; display: flex; gap: .6rem; align-items: baseline; justify-content: space-between; }
.purpose dl.facts { grid-template-columns: max-content 1fr; font-size: .9rem; }
.badge { font-size: .75rem; font-weight: 600; padding: .1rem .5rem; border-radius: 999px; white-space: nowrap; }
.badge.on { background: #e3f3e9; color: var(--ok); }
.badge.off { background: #f6ece0; color: var(--off); }
ul.plain { padding-inline-start: 1.2rem; }
ul.plain li { margin: .25rem 0; }
footer { margin-top: 2.5rem; padding-top: 1rem; border-top: 1px solid var(--line); color: var(--muted); font-size: .85rem; }
@page { margin: 16mm 14mm; }
@media print {
  html, body { background: #fff; }
  body { font-size: 10pt; }
  main { max-width: none; margin: 0; padding: 0; border-radius: 0; box-shadow: none; }
  nav.toc { display: none; }
  h2 { break-after: avoid; }
  h3 { break-after: avoid; }
  tr, .purpose, dl.facts { break-inside: avoid; }
  thead { display: table-header-group; }
  .table-wrap { overflow: visible; }
  a { color: inherit; text-decoration: none; }
}
</style>
</head>
<body>
<main>
<header class="cover">
<p class="kicker">Subject access report</p>
<h1>Your personal data</h1>
<p class="lead">held by <strong><bdi>' || @extschema@.html_escape(v_project) || '</bdi></strong> about <strong><bdi>'
    || @extschema@.html_escape(v_name) || '</bdi></strong></p>
<dl class="facts">
<dt>Prepared on</dt><dd>' || @extschema@.html_time(doc ->> 'generated_at') || '</dd>
<dt>Your reference</dt><dd>' || @extschema@.html_value(doc #> '{subject,id}') || '</dd>
<dt>Times are shown in</dt><dd dir="auto">' || @extschema@.html_value(doc -> 'time_zone') || '</dd>
</dl>'];
    SELECT string_agg('<p class="notice" dir="auto">' || @extschema@.html_value(n) || '</p>', E'\n') INTO v_part
    FROM jsonb_array_elements(doc -> 'notes') AS n;
    v_html := v_html || (coalesce(v_part, '') || '</header>
<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>
<li><a href="#who">Who we hold data about</a></li>
<li><a href="#what">What data we hold</a></li>
<li><a href="#why">Why we use it</a></li>
<li><a href="#since">Since when, and for how long</a></li>
<li><a href="#sources">Where the data comes from</a></li>
<li><a href="#recipients">Who we share it with</a></li>
<li><a href="#messages">Messages</a></li>
<li><a href="#events">Events and page views</a></li>
<li><a href="#consent">Consent history</a></li>
<li><a href="#restrictions">Restrictions of processing</a></li>
<li><a href="#other">Other records</a></li>
<li><a href="#automated">Automated decisions</a></li>
<li><a href="#rights">Your rights</a></li>
</ol></nav>');

    -- Who.
    v_html := v_html || ('<section id="who"><h2>Who we hold data about</h2>
<dl class="facts">
<dt>Name</dt><dd dir="auto">' || coalesce(@extschema@.html_value(v_person -> 'name'), v_none) || '</dd>
<dt>Email</dt><dd dir="auto">' || coalesce(@extschema@.html_value(v_person -> 'email'), v_none) || '</dd>
<dt>Phone</dt><dd dir="auto">' || coalesce(@extschema@.html_value(v_person -> 'phone'), v_none) || '</dd>
<dt>Your id in our application</dt><dd dir="auto">' || coalesce(@extschema@.html_value(v_person -> 'external_id'), '<span class="muted">none</span>') || '</dd>
<dt>Profile</dt><dd>' || CASE v_person ->> 'status' WHEN 'anonymous' THEN 'anonymous visitor'
                                   WHEN 'merged' THEN 'merged into another profile'
                                   WHEN 'identified' THEN 'identified person'
                                   ELSE '<span class="muted">no profile</span>' END || '</dd>
<dt>Other details</dt><dd>' || coalesce(nullif(@extschema@.html_pairs(v_person -> 'traits'), ''), '<span class="muted">none</span>') || '</dd>
</dl></section>');

    -- What.
    SELECT string_agg(format('<tr><td class="cap" dir="auto">%s</td><td dir="auto">%s</td><td class="num">%s</td></tr>',
                             @extschema@.html_value(c -> 'category'), @extschema@.html_value(c -> 'description'), @extschema@.html_value(c -> 'records')),
                      E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(v_a15 -> 'categories_of_personal_data') WITH ORDINALITY AS x(c, n);
    v_html := v_html || ('<section id="what"><h2>What data we hold</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>We hold no data about you.</p>'
                ELSE '<div class="table-wrap"><table><thead><tr><th>Category</th><th>What it is</th><th>Records</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Why.
    SELECT string_agg(format('<div class="purpose"><h3><bdi>%s</bdi><span class="badge %s">%s</span></h3><p dir="auto">%s</p><dl class="facts"><dt>Legal basis</dt><dd>%s</dd>%s%s<dt>Kept for</dt><dd>%s</dd><dt>Shared with</dt><dd dir="auto">%s</dd></dl></div>',
                             @extschema@.html_value(p -> 'purpose'),
                             CASE WHEN (p ->> 'lawful_now')::boolean THEN 'on' ELSE 'off' END,
                             CASE WHEN (p ->> 'lawful_now')::boolean THEN 'in use now' ELSE 'not in use now' END,
                             @extschema@.html_value(p -> 'description'),
                             CASE p ->> 'lawful_basis'
                                 WHEN 'consent' THEN 'your consent'
                                 WHEN 'contract' THEN 'a contract with you, or steps you asked for before one'
                                 WHEN 'legal_obligation' THEN 'a legal obligation we must meet'
                                 WHEN 'vital_interests' THEN 'protecting your or someone else''s vital interests'
                                 WHEN 'public_task' THEN 'a task in the public interest'
                                 ELSE 'our legitimate interests' END
                                 || ' <span class="muted">(' || @extschema@.html_value(p -> 'lawful_basis_reference') || ')</span>',
                             CASE WHEN p ->> 'consent' IS NOT NULL THEN
                                 '<dt>Your consent</dt><dd>' || @extschema@.html_value(p -> 'consent') || ' on '
                                 || @extschema@.html_time(p ->> 'consent_changed_at') || '</dd>'
                                  WHEN p ->> 'lawful_basis' = 'consent' THEN '<dt>Your consent</dt><dd>not given</dd>'
                                  ELSE '' END,
                             CASE WHEN p ->> 'objection_changed_at' IS NOT NULL THEN
                                 '<dt>Your objection</dt><dd>' || CASE WHEN (p ->> 'objected')::boolean
                                     THEN 'made on ' ELSE 'withdrawn on ' END
                                 || @extschema@.html_time(p ->> 'objection_changed_at') || '</dd>'
                                  ELSE '' END,
                             CASE WHEN p ->> 'retention' IS NULL THEN 'no fixed period: while this purpose applies'
                                  ELSE @extschema@.html_escape(@extschema@.export_duration((p ->> 'retention')::interval)) END,
                             coalesce((SELECT string_agg(@extschema@.html_escape(r), ', ' ORDER BY n)
                                       FROM jsonb_array_elements_text(p -> 'recipients') WITH ORDINALITY AS y(r, n)),
                                      '<span class="muted">nobody</span>')),
                      E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(v_a15 -> 'purposes') WITH ORDINALITY AS x(p, n);
    v_html := v_html || ('<section id="why"><h2>Why we use it</h2><p class="intro">Each purpose for which we use your data, the law that allows it, and whether it applies to you now.</p>'
        || CASE WHEN v_part IS NULL THEN '<p>We use your data for no purpose.</p>'
                ELSE '<div class="purposes">' || v_part || '</div>' END || '</section>');

    -- Since when.
    SELECT '<section id="since"><h2>Since when, and for how long</h2><dl class="facts">'
           || '<dt>First recorded</dt><dd>' || coalesce(@extschema@.html_time(v_person ->> 'created_at'), '<span class="muted">unknown</span>') || '</dd>'
           || coalesce('<dt>First seen</dt><dd>' || @extschema@.html_time(v_person ->> 'first_seen_at') || '</dd>', '')
           || coalesce('<dt>Last seen</dt><dd>' || @extschema@.html_time(v_person ->> 'last_seen_at') || '</dd>', '')
           || coalesce('<dt>Profile last changed</dt><dd>' || @extschema@.html_time(v_person ->> 'updated_at') || '</dd>', '')
           || coalesce('<dt>Events recorded</dt><dd>' || to_char(min((e ->> 'occurred_at')::timestamptz), 'YYYY-MM-DD HH24:MI')
                       || ' to ' || to_char(max((e ->> 'occurred_at')::timestamptz), 'YYYY-MM-DD HH24:MI') || '</dd>', '')
           || '</dl><h3>How long we keep it</h3><ul class="plain">'
           || coalesce((SELECT string_agg('<li><bdi>' || @extschema@.html_value(p -> 'purpose') || '</bdi>: '
                                          || CASE WHEN p ->> 'retention' IS NULL
                                                  THEN @extschema@.html_value(p -> 'retention_criteria')
                                                  ELSE 'at most ' || @extschema@.html_escape(@extschema@.export_duration((p ->> 'retention')::interval)) END
                                          || '</li>', '' ORDER BY n)
                        FROM jsonb_array_elements(v_a15 -> 'purposes') WITH ORDINALITY AS x(p, n)),
                       '<li>No purpose applies.</li>')
           || '</ul></section>'
    INTO v_part FROM (SELECT j.value::jsonb AS e FROM json_array_elements(v_events) AS j OFFSET 0) AS x;
    v_html := v_html || v_part;

    -- Sources.
    SELECT string_agg('<li dir="auto">' || CASE s ->> 'kind'
               WHEN 'direct' THEN 'Provided by you, or recorded by <bdi>' || @extschema@.html_escape(v_project)
                   || '</bdi>''s application as you used its services, since ' || @extschema@.html_time(s ->> 'since') || '.'
               WHEN 'enrichment' THEN 'Public-profile data (<bdi>' || @extschema@.html_value(s -> 'field') || '</bdi>) from <bdi>'
                   || @extschema@.html_value(s -> 'source') || '</bdi> (' || @extschema@.html_value(s -> 'records')
                   || CASE WHEN (s ->> 'records')::integer = 1 THEN ' record' ELSE ' records' END
                   || ', last fetched ' || @extschema@.html_time(s ->> 'last_fetched_at') || ').'
               ELSE 'Consent records captured' || coalesce(' through <bdi>' || @extschema@.html_value(s -> 'source') || '</bdi>', '')
                   || coalesce(' by <bdi>' || @extschema@.html_value(s -> 'method') || '</bdi>', '') || ' ('
                   || @extschema@.html_value(s -> 'events') || CASE WHEN (s ->> 'events')::integer = 1 THEN ' record' ELSE ' records' END
                   || ', first on ' || @extschema@.html_time(s ->> 'first_captured_at') || ').' END
               || '</li>', E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(v_a15 -> 'sources') WITH ORDINALITY AS x(s, n);
    v_html := v_html || ('<section id="sources"><h2>Where the data comes from</h2><ul class="plain">'
        || coalesce(v_part, '<li>We hold no data about you.</li>') || '</ul>');
    SELECT string_agg(format('<tr><td class="when">%s</td><td dir="auto">%s</td><td dir="auto">%s</td><td dir="auto">%s</td></tr>',
                             @extschema@.html_time(r ->> 'fetched_at'), @extschema@.html_value(r -> 'source'), @extschema@.html_value(r -> 'field'),
                             @extschema@.html_pairs(r -> 'value')), E'\n' ORDER BY n)
    INTO v_part FROM (SELECT j.value::jsonb AS r, j.n FROM json_array_elements(v_enrichments) WITH ORDINALITY AS j(value, n)
                      OFFSET 0) AS x;
    v_html := v_html || (CASE WHEN v_part IS NULL THEN '' ELSE
        '<h3>Data from other sources</h3><div class="table-wrap"><table><thead><tr><th>Fetched</th><th>Source</th><th>Field</th><th>Value</th></tr></thead><tbody>'
        || v_part || '</tbody></table></div>' END || '</section>');

    -- Recipients.
    SELECT string_agg(format('<tr><td dir="auto">%s</td><td dir="auto">%s</td></tr>', @extschema@.html_value(r -> 'recipient'),
                             (SELECT string_agg(@extschema@.html_escape(u), ', ' ORDER BY m)
                              FROM jsonb_array_elements_text(r -> 'purposes') WITH ORDINALITY AS y(u, m))),
                      E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(v_a15 -> 'recipients') WITH ORDINALITY AS x(r, n);
    v_html := v_html || ('<section id="recipients"><h2>Who we share it with</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>We have declared no recipient of your data.</p>'
                ELSE '<p class="intro">Recipients, or categories of recipients, to whom your data is or may be disclosed.</p><div class="table-wrap"><table><thead><tr><th>Recipient</th><th>For the purposes</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Messages.
    SELECT string_agg(format('<tr><td class="when">%s</td><td>%s</td><td dir="auto">%s</td><td dir="auto">%s</td><td class="body" dir="auto">%s</td></tr>',
                             @extschema@.html_time(m ->> 'sent_at'),
                             CASE m ->> 'direction' WHEN 'inbound' THEN 'from you' WHEN 'outbound' THEN 'to you'
                                  ELSE @extschema@.html_value(m -> 'direction') END,
                             @extschema@.html_value(m -> 'channel'), @extschema@.html_value(m -> 'subject'), @extschema@.html_value(m -> 'body')),
                      E'\n' ORDER BY n)
    INTO v_part FROM (SELECT j.value::jsonb AS m, j.n FROM json_array_elements(v_messages) WITH ORDINALITY AS j(value, n)
                      OFFSET 0) AS x;
    v_html := v_html || ('<section id="messages"><h2>Messages</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>No messages.</p>'
                ELSE '<div class="table-wrap"><table><thead><tr><th>When</th><th>Sent</th><th>Channel</th><th>Subject</th><th>Message</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Events.
    SELECT string_agg(format('<tr><td class="when">%s</td><td dir="auto">%s</td><td dir="auto">%s</td><td>%s</td></tr>',
                             @extschema@.html_time(e ->> 'occurred_at'),
                             CASE WHEN e ->> 'kind' = 'page_view' THEN 'viewed a page' ELSE @extschema@.html_value(e -> 'name') END,
                             concat_ws('<br>', '<bdi>' || @extschema@.html_value(e -> 'title') || '</bdi>',
                                       '<span class="url">' || @extschema@.html_value(e -> 'url') || '</span>',
                                       '<span class="url">from ' || @extschema@.html_value(e -> 'referrer') || '</span>'),
                             coalesce(p.pairs, CASE WHEN jsonb_typeof(e -> 'properties') <> 'object'
                                                    THEN @extschema@.html_value(e -> 'properties') END, '')),
                      E'\n' ORDER BY n)
    INTO v_part FROM (SELECT j.value::jsonb AS e, j.n FROM json_array_elements(v_events) WITH ORDINALITY AS j(value, n)
                      OFFSET 0) AS x
    -- html_pairs, written out: a function with a subquery is not inlined,
    -- and calling it for each of many events costs more than the rest.
    LEFT JOIN LATERAL (SELECT string_agg('<span class="pair"><span class="k" dir="auto">' || @extschema@.html_escape(k.key)
                                         || '</span> <bdi>' || coalesce(@extschema@.html_value(k.value), '')
                                         || '</bdi></span>', ' ' ORDER BY k.key) AS pairs
                       FROM jsonb_each(CASE WHEN jsonb_typeof(e -> 'properties') = 'object' THEN e -> 'properties' END) AS k
                      ) AS p ON true;
    v_html := v_html || ('<section id="events"><h2>Events and page views</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>No events.</p>'
                ELSE '<p class="intro">' || json_array_length(v_events) || ' recorded, oldest first.</p><div class="table-wrap"><table><thead><tr><th>When</th><th>What</th><th>Page</th><th>Details</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Consent history.
    SELECT string_agg(format('<tr><td class="when">%s</td><td dir="auto">%s</td><td>%s</td><td dir="auto">%s</td><td dir="auto">%s</td><td dir="auto">%s</td></tr>',
                             @extschema@.html_time(c ->> 'captured_at'), @extschema@.html_value(c -> 'purpose'),
                             CASE c ->> 'action' WHEN 'grant' THEN 'you gave consent'
                                 WHEN 'withdraw' THEN 'you withdrew consent' WHEN 'object' THEN 'you objected'
                                 WHEN 'withdraw_objection' THEN 'you withdrew your objection'
                                 ELSE @extschema@.html_value(c -> 'action') END,
                             @extschema@.html_value(c -> 'source'), @extschema@.html_value(c -> 'method'), @extschema@.html_value(c -> 'notice_version')),
                      E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(doc -> 'consent_history') WITH ORDINALITY AS x(c, n);
    v_html := v_html || ('<section id="consent"><h2>Consent history</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>No consent or objection has been recorded.</p>'
                ELSE '<div class="table-wrap"><table><thead><tr><th>When</th><th>Purpose</th><th>What happened</th><th>Where</th><th>How</th><th>Notice</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Restrictions.
    SELECT string_agg(format('<tr><td class="when">%s</td><td>%s</td><td dir="auto">%s</td></tr>',
                             @extschema@.html_time(r ->> 'recorded_at'),
                             CASE r ->> 'action' WHEN 'restrict' THEN 'processing restricted'
                                 WHEN 'lift' THEN 'restriction lifted' ELSE @extschema@.html_value(r -> 'action') END,
                             @extschema@.html_value(r -> 'reason')),
                      E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(doc -> 'restrictions') WITH ORDINALITY AS x(r, n);
    v_html := v_html || ('<section id="restrictions"><h2>Restrictions of processing</h2>'
        || CASE WHEN v_part IS NULL THEN '<p>Processing of your data has never been restricted.</p>'
                ELSE '<div class="table-wrap"><table><thead><tr><th>When</th><th>What happened</th><th>Reason</th></tr></thead><tbody>'
                     || v_part || '</tbody></table></div>' END || '</section>');

    -- Every other registered table, as it is.
    SELECT string_agg('<h3 class="cap" dir="auto">' || coalesce(@extschema@.html_value(t -> 'category'), @extschema@.html_value(t -> 'table'))
                      || '</h3>' || coalesce('<p class="muted" dir="auto">' || @extschema@.html_value(t -> 'description') || '</p>', '')
                      || '<div class="table-wrap"><table><thead><tr>'
                      || (SELECT string_agg('<th dir="auto">' || @extschema@.html_value(c -> 'name') || '</th>', '' ORDER BY m)
                          FROM jsonb_array_elements(t -> 'columns') WITH ORDINALITY AS y(c, m))
                      || '</tr></thead><tbody>'
                      || (SELECT string_agg('<tr>' || (SELECT string_agg('<td dir="auto">'
                                                                          || coalesce(@extschema@.html_value(z.r -> (c ->> 'name')), '')
                                                                          || '</td>', '' ORDER BY m)
                                                       FROM jsonb_array_elements(t -> 'columns') WITH ORDINALITY AS y(c, m))
                                            || '</tr>', E'\n' ORDER BY z.k)
                          FROM (SELECT j.value::jsonb AS r, j.k FROM json_array_elements(v_rows[x.n]) WITH ORDINALITY AS j(value, k)
                                OFFSET 0) AS z)
                      || '</tbody></table></div>', E'\n' ORDER BY n)
    INTO v_part FROM jsonb_array_elements(doc -> 'data') WITH ORDINALITY AS x(t, n)
    WHERE NOT (t ->> 'table' = ANY (v_builtin)) AND json_array_length(v_rows[x.n]) > 0;
    v_html := v_html || ('<section id="other"><h2>Other records</h2>'
        || coalesce(v_part, '<p>No other records.</p>') || '</section>');

    v_html := v_html || ('<section id="automated"><h2>Automated decisions</h2><p>'
        || @extschema@.html_value(v_a15 #> '{automated_decision_making,explanation}') || '</p></section>');

    SELECT string_agg('<li>' || @extschema@.html_value(v_a15 #> ARRAY['rights', k]) || '</li>', E'\n' ORDER BY n)
    INTO v_part
    FROM unnest(ARRAY['access', 'rectification', 'erasure', 'restriction', 'objection', 'portability',
                      'withdraw_consent']) WITH ORDINALITY AS x(k, n);
    v_html := v_html || ('<section id="rights"><h2>Your rights</h2><ul class="plain">' || coalesce(v_part, '')
        || '</ul><p>' || @extschema@.html_value(v_a15 -> 'complaint') || '</p></section>');

    v_html := v_html || ('<footer><p>Prepared on ' || @extschema@.html_time(doc ->> 'generated_at') || ' by <bdi>'
        || @extschema@.html_escape(v_project) || '</bdi> with gdprcrm (' || @extschema@.html_value(doc -> 'format') || ', format version '
        || @extschema@.html_value(doc -> 'format_version') || '). The same data is available in machine-readable form (JSON and CSV).</p></footer>
</main>
</body>
</html>
');
    RETURN array_to_string(v_html, E'\n');
END $$;
COMMENT ON FUNCTION @extschema@.export_html(json) IS
    'The HTML document of an export, rendered from its JSON document (for the exports)';

/*
 * The entry points.  SECURITY DEFINER, owned by the extension's owner: the
 * export reads past every team and purpose filter, and decrypts.  The
 * caller is checked first and the export logged before anything is read;
 * the document is then built by one STABLE function, on one snapshot.
 */
CREATE FUNCTION @extschema@.sar_export(subject bigint) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint := @extschema@.require_subject_admin(subject);
BEGIN
    -- Erasure takes the same lock: an export sees the subject wholly before
    -- a purge or not at all, never half decrypted.
    PERFORM @extschema@.lock_subject_state(subject);
    PERFORM @extschema@.log_right(subject, v_project, 'export', 'jsonb');
    RETURN @extschema@.export_document(subject, v_project)::jsonb;
END $$;
COMMENT ON FUNCTION @extschema@.sar_export(bigint) IS
    'Subject access export (GDPR Art. 15, 20): every registered row of the subject, decrypted, with purposes, recipients, sources and rights, as jsonb; logged';

CREATE FUNCTION @extschema@.sar_export_csv(subject bigint) RETURNS TABLE (table_name text, csv text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint := @extschema@.require_subject_admin(subject);
BEGIN
    -- Erasure takes the same lock: an export sees the subject wholly before
    -- a purge or not at all, never half decrypted.
    PERFORM @extschema@.lock_subject_state(subject);
    PERFORM @extschema@.log_right(subject, v_project, 'export', 'csv');
    RETURN QUERY SELECT c.table_name, c.csv FROM @extschema@.export_csv(subject) c;
END $$;
COMMENT ON FUNCTION @extschema@.sar_export_csv(bigint) IS
    'Subject access export as CSV: one document per registered table, then the consent and restriction history; logged';

CREATE FUNCTION @extschema@.sar_export_html(subject bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint := @extschema@.require_subject_admin(subject);
BEGIN
    -- Erasure takes the same lock: an export sees the subject wholly before
    -- a purge or not at all, never half decrypted.
    PERFORM @extschema@.lock_subject_state(subject);
    PERFORM @extschema@.log_right(subject, v_project, 'export', 'html');
    RETURN @extschema@.export_html(@extschema@.export_document(subject, v_project));
END $$;
COMMENT ON FUNCTION @extschema@.sar_export_html(bigint) IS
    'Subject access export as one self-contained, printable HTML document; logged';

/* The exports are for administrators; their helpers for nobody. */
REVOKE ALL ON FUNCTION @extschema@.html_escape(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.csv_field(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_columns(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_order(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_table(regclass, name, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_table_csv(regclass, name, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_duration(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_document(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_csv(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.html_value(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.html_time(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.html_pairs(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.export_html(json) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.sar_export(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.sar_export_csv(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.sar_export_html(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    @extschema@.sar_export(bigint),
    @extschema@.sar_export_csv(bigint),
    @extschema@.sar_export_html(bigint)
    TO gdprcrm_admin;
