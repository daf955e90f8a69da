/*
 * gdprcrm 0.4.0 -> 0.4.1: fixes from the outside audit of 0.4.0.
 *
 * Team membership by exact role name, consent ledgers scoped by project,
 * person ids from the sequence only, writes that need no purpose, bounded
 * memory, and a faster identify() with a set-based import.
 */

\echo Use "ALTER EXTENSION gdprcrm UPDATE TO '0.4.1'" to load this file. \quit

/* ---- teams ---- */

/*
 * Team members are roles identified by name, compared exactly (never
 * parsed as SQL identifiers), and bound to the OID the role had when the
 * membership was recorded: see src/team.c for why both.  The binding is
 * made by a trigger on every insert, so a restore from pg_dump binds each
 * member to the role of that name in the new cluster.
 */
ALTER TABLE @extschema@.project_members ADD COLUMN member_oid oid;
COMMENT ON COLUMN @extschema@.project_members.member_oid IS
    'OID of the role named member when the membership was recorded or restored; the membership counts only while they still match';

/*
 * Only a new row or a new name is bound: an UPDATE of anything else must
 * not bind a stale row to whatever role now has its name.
 */
CREATE FUNCTION @extschema@.bind_member() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.member IS DISTINCT FROM OLD.member THEN
        NEW.member_oid := (SELECT r.oid FROM pg_catalog.pg_roles r
                           WHERE r.rolname OPERATOR(pg_catalog.=) NEW.member);
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION @extschema@.bind_member() IS
    'Trigger binding a new project member to the role that has its name now';
REVOKE ALL ON FUNCTION @extschema@.bind_member() FROM PUBLIC;
CREATE TRIGGER bind_member BEFORE INSERT OR UPDATE ON @extschema@.project_members
    FOR EACH ROW EXECUTE FUNCTION @extschema@.bind_member();
UPDATE @extschema@.project_members m SET member_oid = r.oid
FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) m.member;

/*
 * The role gdprcrm's SECURITY DEFINER functions act for, in C so that it
 * can refuse to answer during maintenance operations (src/team.c).
 */
CREATE OR REPLACE FUNCTION @extschema@.calling_role() RETURNS name
    AS 'MODULE_PATHNAME', 'gdprcrm_calling_role' LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@.announce_team_change() RETURNS trigger
    AS 'MODULE_PATHNAME', 'gdprcrm_announce_team_change' LANGUAGE C;
COMMENT ON FUNCTION @extschema@.announce_team_change() IS
    'Trigger telling every backend that a project''s team changed';
REVOKE ALL ON FUNCTION @extschema@.announce_team_change() FROM PUBLIC;
CREATE TRIGGER announce_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.project_members
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.announce_team_change();

CREATE FUNCTION @extschema@.in_team(project bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'gdprcrm_in_team' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.in_team(bigint) IS
    'Whether the current role is in the project''s team (the tenant filter of the CRM tables)';

CREATE FUNCTION @extschema@.caller_in_team(project bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'gdprcrm_caller_in_team' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.caller_in_team(bigint) IS
    'Whether the calling role (outside SECURITY DEFINER functions) is in the project''s team';

CREATE OR REPLACE FUNCTION @extschema@.visible_projects() RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'gdprcrm_visible_projects' LANGUAGE C STABLE PARALLEL RESTRICTED;

/*
 * The tenant filter, without a subquery: in_team() answers from a
 * per-backend list that is rebuilt only when a team or a role changes.
 */
DROP POLICY team_only ON @extschema@.projects;
CREATE POLICY team_only ON @extschema@.projects USING (@extschema@.in_team(id));
DROP POLICY own_memberships ON @extschema@.project_members;
CREATE POLICY team_only ON @extschema@.project_members USING (@extschema@.in_team(project_id));

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['people', 'person_identities', 'companies', 'person_companies', 'events',
                             'messages', 'enrichments'] LOOP
        EXECUTE pg_catalog.format('DROP POLICY team_only ON @extschema@.%I', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY team_only ON @extschema@.%I'
            ' USING (@extschema@.in_team(project_id)) WITH CHECK (@extschema@.in_team(project_id))', t);
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.require_project_admin(project bigint) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_caller name := @extschema@.calling_role();
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) v_caller) THEN
        RETURN;
    END IF;
    IF NOT pg_catalog.pg_has_role(v_caller, 'gdprcrm_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'only members of gdprcrm_admin may manage projects'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF project IS NOT NULL AND NOT @extschema@.caller_in_team(project) THEN
        RAISE EXCEPTION 'permission denied for this project'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only members of a project''s team may change it.';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.require_project_member(project bigint) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT @extschema@.caller_in_team(project) THEN
        RAISE EXCEPTION 'permission denied for this project' USING ERRCODE = 'insufficient_privilege',
            HINT = 'The current role is not in the project''s team.';
    END IF;
END $$;

/*
 * The subject must be a person of a project whose team includes the
 * caller.  An unknown id and another project's person get the same error,
 * so that the answer says nothing about other projects.
 */
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

/*
 * Predefined roles (pg_database_owner, pg_read_all_data, ...) get their
 * members from PostgreSQL itself, without a change of pg_auth_members that
 * would tell the backends' team lists: they are not team members.
 */
CREATE FUNCTION @extschema@.refuse_predefined_role(member name) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF member::text LIKE 'pg\_%' THEN
        RAISE EXCEPTION 'predefined role "%" cannot be a team member', member
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add a role of your own and grant it to the roles that should be in the team.';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.refuse_predefined_role(name) IS
    'Raise for a predefined role (pg_*), whose members a team could not follow';
REVOKE ALL ON FUNCTION @extschema@.refuse_predefined_role(name) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@.create_project(name text, members name[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project bigint;
    v_member name;
BEGIN
    PERFORM @extschema@.require_project_admin(NULL);
    IF coalesce(pg_catalog.btrim(name), '') = '' THEN
        RAISE EXCEPTION 'project name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO @extschema@.projects (name) VALUES (create_project.name) RETURNING id INTO v_project;
    FOREACH v_member IN ARRAY coalesce(members, ARRAY[@extschema@.calling_role()]) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) v_member) THEN
            RAISE EXCEPTION 'role "%" does not exist', v_member USING ERRCODE = 'undefined_object';
        END IF;
        PERFORM @extschema@.refuse_predefined_role(v_member);
        INSERT INTO @extschema@.project_members AS m (project_id, member) VALUES (v_project, v_member)
        ON CONFLICT ON CONSTRAINT project_members_pkey DO UPDATE SET member_oid = EXCLUDED.member_oid;
    END LOOP;
    RETURN v_project;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.add_project_member(project bigint, member name)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.require_project_admin(project);
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) member) THEN
        RAISE EXCEPTION 'role "%" does not exist', member USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM @extschema@.refuse_predefined_role(member);
    -- Adding a name again binds it to the role that has it now.
    INSERT INTO @extschema@.project_members AS m (project_id, member) VALUES (project, member)
    ON CONFLICT ON CONSTRAINT project_members_pkey DO UPDATE SET member_oid = EXCLUDED.member_oid;
END $$;

REVOKE ALL ON FUNCTION @extschema@.in_team(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.caller_in_team(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.in_team(bigint), @extschema@.caller_in_team(bigint)
    TO gdprcrm_admin, gdprcrm_app, gdprcrm_analyst;

/*
 * The consent and restriction ledgers carry the project of their subject,
 * so that they are filtered by team like the CRM tables.  A person's
 * project never changes, so the copy never goes stale.
 */
ALTER TABLE @extschema@.consent_events ADD COLUMN project_id bigint;
ALTER TABLE @extschema@.restriction_events ADD COLUMN project_id bigint;
ALTER TABLE @extschema@.consent_events DISABLE TRIGGER append_only;
ALTER TABLE @extschema@.restriction_events DISABLE TRIGGER append_only;
UPDATE @extschema@.consent_events e SET project_id = p.project_id
FROM @extschema@.people p WHERE p.id = e.subject;
UPDATE @extschema@.restriction_events e SET project_id = p.project_id
FROM @extschema@.people p WHERE p.id = e.subject;
ALTER TABLE @extschema@.consent_events ENABLE TRIGGER append_only;
ALTER TABLE @extschema@.restriction_events ENABLE TRIGGER append_only;
COMMENT ON COLUMN @extschema@.consent_events.project_id IS 'Project of the subject, for the team filter';
COMMENT ON COLUMN @extschema@.restriction_events.project_id IS 'Project of the subject, for the team filter';

ALTER TABLE @extschema@.consent_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.consent_events FORCE ROW LEVEL SECURITY;
CREATE POLICY team_only ON @extschema@.consent_events USING (@extschema@.in_team(project_id));
ALTER TABLE @extschema@.restriction_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.restriction_events FORCE ROW LEVEL SECURITY;
CREATE POLICY team_only ON @extschema@.restriction_events USING (@extschema@.in_team(project_id));

/* The view reads the ledger with the caller's rights, so its filter applies. */
CREATE OR REPLACE VIEW @extschema@.consents WITH (security_barrier) AS
    SELECT DISTINCT ON (e.subject, e.purpose)
           e.subject, e.purpose, p.lawful_basis,
           (e.action = 'grant') AS granted,
           e.captured_at, e.source, e.method, e.notice_version, e.wording_hash, e.id AS event_id,
           e.project_id
    FROM @extschema@.consent_events e
    JOIN @extschema@.purposes p ON p.name = e.purpose
    WHERE e.action IN ('grant', 'withdraw')
    ORDER BY e.subject, e.purpose, e.id DESC;
ALTER VIEW @extschema@.consents SET (security_invoker = true);
GRANT SELECT ON @extschema@.consent_events, @extschema@.restriction_events TO gdprcrm_admin;

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
    IF EXISTS (SELECT 1 FROM @extschema@.subject_keys k WHERE k.subject = record_consent_event.subject
               AND k.destroyed_at IS NOT NULL) THEN
        RAISE EXCEPTION 'the subject was erased' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_mask := (1::bigint) << v_bit;

    PERFORM @extschema@.lock_subject_state(subject);

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
    PERFORM @extschema@.lock_subject_state(subject);
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

/* ---- writes ---- */

/*
 * Person and company ids come from their sequences only: an application
 * that chose them could take the ids another project is about to use.
 */
REVOKE INSERT ON @extschema@.people, @extschema@.companies FROM gdprcrm_app, gdprcrm_admin;
GRANT INSERT (project_id, external_id, email, email_bidx, name, phone, traits, status,
              created_at, updated_at, first_seen_at, last_seen_at)
    ON @extschema@.people TO gdprcrm_app, gdprcrm_admin;
GRANT INSERT (project_id, name, domain, properties, created_at)
    ON @extschema@.companies TO gdprcrm_app, gdprcrm_admin;
REVOKE UPDATE ON @extschema@.companies FROM gdprcrm_app, gdprcrm_admin;
GRANT UPDATE (name, domain, properties) ON @extschema@.companies TO gdprcrm_app, gdprcrm_admin;

/*
 * Recording data needs no purpose.  INSERT ... RETURNING would apply the
 * purpose filter to the new row (and refuse it when its subject is hidden),
 * so the write functions take the id from the sequence first and insert
 * without RETURNING: the caller learns the id it chose, nothing more.
 */
CREATE OR REPLACE FUNCTION @extschema@.add_message(project bigint, person bigint, direction text, channel text,
                                                   subject text, body text, sent_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint := pg_catalog.nextval('@extschema@.messages_id_seq');
BEGIN
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
    INSERT INTO @extschema@.enrichments (id, project_id, person_id, source, field, value, fetched_at)
    VALUES (v_id, project, person, source, field, value, coalesce(fetched_at, pg_catalog.now()));
    RETURN v_id;
END $$;

/*
 * Last seen follows every tracked event, whatever the purpose declared:
 * the UPDATE runs as the owner, past the purpose filter that would skip a
 * hidden person, after checking the caller's team itself.
 */
CREATE FUNCTION @extschema@.note_activity(project bigint, person bigint, seen_at timestamptz)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT @extschema@.caller_in_team(project) THEN
        RAISE EXCEPTION 'permission denied for this project' USING ERRCODE = 'insufficient_privilege',
            HINT = 'The current role is not in the project''s team.';
    END IF;
    UPDATE @extschema@.people p SET last_seen_at = seen_at,
        first_seen_at = coalesce(p.first_seen_at, seen_at)
    WHERE p.id = person AND p.project_id = project
      AND (p.last_seen_at IS NULL OR p.last_seen_at < seen_at - interval '1 minute');
END $$;
COMMENT ON FUNCTION @extschema@.note_activity(bigint, bigint, timestamptz) IS
    'Move a person''s first and last seen times to include an activity (for track and track_page_view)';

CREATE OR REPLACE FUNCTION @extschema@.track(project bigint, person bigint, event text,
                                             properties jsonb DEFAULT '{}', occurred_at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(event, '') = '' THEN
        RAISE EXCEPTION 'event name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
    INSERT INTO @extschema@.events (project_id, person_id, occurred_at, kind, name, url, path,
                                    referrer, title, properties)
    VALUES (project, person, coalesce(occurred_at, pg_catalog.now()), 'page_view', 'page_view', url,
            coalesce(substring(url FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*([^?#]*)'), url),
            referrer, title, coalesce(properties, '{}'));
    PERFORM @extschema@.note_activity(project, person, coalesce(occurred_at, pg_catalog.now()));
END $$;

REVOKE ALL ON FUNCTION @extschema@.note_activity(bigint, bigint, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.note_activity(bigint, bigint, timestamptz) TO gdprcrm_app, gdprcrm_admin;

/* ---- identify and import ---- */
