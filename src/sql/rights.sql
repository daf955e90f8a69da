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
 * project (NULL for a superuser and a subject that is no person and was
 * never trashed or purged as one).  An unknown subject and another
 * project's subject get the same error.
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
 * through the blind indexes of person_identities and of the suppression
 * list, nothing decrypted.
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
