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
-- Predefined roles are no team members any more (refuse_predefined_role).
DELETE FROM @extschema@.project_members m WHERE pg_catalog.starts_with(m.member::text, 'pg_');

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
    AS 'MODULE_PATHNAME', 'gdprcrm_in_team' LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.in_team(bigint) IS
    'Whether the current role is in the project''s team (the tenant filter of the CRM tables)';

CREATE FUNCTION @extschema@.caller_in_team(project bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'gdprcrm_caller_in_team' LANGUAGE C STABLE PARALLEL RESTRICTED;
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
    IF pg_catalog.starts_with(member::text, 'pg_') THEN
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

/*
 * Foreign keys to people (project_id, id) and companies (project_id, id)
 * are checked by a query PostgreSQL plans once per session.  Planned while
 * the table is small and has no statistics, it may choose any index that
 * leads with project_id, and with people_activity or companies_domain it
 * then reads every person or company of the project for each event,
 * message or link written, for as long as the session lives.  Partial
 * indexes, whose predicate a key lookup does not imply, leave it the
 * unique indexes; the queries they serve (stale_people, lookups by
 * domain) imply their predicates.
 */
DROP INDEX @extschema@.people_activity;
CREATE INDEX people_activity ON @extschema@.people
    (project_id, greatest(updated_at, coalesce(last_seen_at, '-infinity'::timestamptz)))
    WHERE status <> 'merged';
DROP INDEX @extschema@.companies_domain;
CREATE INDEX companies_domain ON @extschema@.companies (project_id, domain) WHERE domain IS NOT NULL;

/* ---- identify and import ---- */

/*
 * New people's data keys, made in one statement and cached, so that the
 * first encrypt() of each finds its key without a query of its own
 * (src/subject_keys.c): import_people() makes a batch's keys at once, at
 * about half the cost of making them one by one.
 */
CREATE FUNCTION @extschema@.create_subject_keys(subjects bigint[]) RETURNS integer
    AS 'MODULE_PATHNAME', 'gdprcrm_create_subject_keys' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.create_subject_keys(bigint[]) IS
    'Create and cache the first data keys of new subjects (for import_people); returns how many were created';
REVOKE ALL ON FUNCTION @extschema@.create_subject_keys(bigint[]) FROM PUBLIC;

/*
 * identify: the same contract as in 0.3.0, at a cost that depends on
 * neither the size of the tables nor their statistics.
 *
 * Every statement finds its rows by a whole key: identifiers by the
 * primary key of person_identities (project, kind, blind index), people by
 * id.  The old email of a person whose email changes is found by person
 * (person_identities_person), without the project: with the project in
 * the condition the planner could, without statistics, prefer a scan of
 * the project's prefix of the primary key, that is of every email of the
 * project, and PL/pgSQL then kept that plan for the session.  A new person
 * has no old email, so nothing is deleted for one.
 *
 * Identifiers are claimed with INSERT ... ON CONFLICT DO NOTHING instead
 * of a block that catches unique violations: such a block makes every call
 * a subtransaction with a transaction id of its own, and a transaction
 * that identifies more than 64 people overflows the cache of those ids
 * that the snapshots of every session consult (they then look them up in
 * pg_subtrans while it runs).  A claim that finds the identifier taken
 * waits, like the unique violation did, for the transaction that took it;
 * a new person that lost a claim is withdrawn again (row, claims and the
 * data key its email was encrypted with) and the lookup runs again.  Under
 * REPEATABLE READ an identifier taken by a transaction the snapshot does
 * not see is a serialization failure.
 *
 * A known person is locked before a new identifier is claimed for it, so
 * that two sessions changing one person's email serialise as before.  A
 * call that changes nothing writes nothing.
 */
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
COMMENT ON FUNCTION @extschema@.identify(bigint, text, text, jsonb) IS
    'Find or create a person by external id and/or email, merging an anonymous visitor into the identified person; returns the person id';

/*
 * import_people: identify many people in a few statements over the whole
 * batch.  people is a JSON array of objects with the keys external_id,
 * email (strings) and traits (an object), each as identify() takes them;
 * the result has one row per element, in order: its 1-based position and
 * its person.
 *
 * The result is the one of identify() called on each element in array
 * order.  Elements that share no identifier and no person with another
 * element and whose identifiers are all new make new people (one INSERT of
 * the people, one of their identifiers); those whose identifiers all
 * belong to one person already there update it (one UPDATE, and only
 * where something changes).  The rest (an identifier repeated within the
 * batch, a new identifier for a known person, two people to merge) go
 * through identify() one by one, in array order, after the others: they
 * touch no person and no identifier that the others touch.
 *
 * Identifiers are looked up by the whole primary key, one probe per
 * identifier, so the cost follows the batch, not the tables.  Known
 * people are updated (locked) before any identifier is claimed, as
 * identify() does, and identifiers are claimed in key order, so that
 * imports and identify() calls of the same people wait for each other
 * instead of deadlocking.  The claims are one INSERT in a subtransaction
 * (one for the whole batch): if a concurrent session claimed one of them
 * first, they are made again without failing on a conflict, and the new
 * people that lost one are withdrawn (row, claims, data key) and
 * identified one by one like the rest.
 */
CREATE FUNCTION @extschema@.import_people(project bigint, people jsonb)
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
    v_class "char"[];       -- n: new person, m: matches one person, s: one by one
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
COMMENT ON FUNCTION @extschema@.import_people(bigint, jsonb) IS
    'Identify many people at once from a JSON array of {external_id, email, traits}, as identify() would one by one; returns each element''s position and person id';
REVOKE ALL ON FUNCTION @extschema@.import_people(bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.import_people(bigint, jsonb) TO gdprcrm_app, gdprcrm_admin;
