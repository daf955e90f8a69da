/*
 * consent: purposes of processing and their lawful bases, the append-only
 * ledgers of consent, objections and restrictions, the purpose filter
 * (lawful, protect) and the functions that record and explain a subject's
 * state.
 */

/*
 * Purposes of processing.  Each has one lawful basis of GDPR Art. 6 and a
 * bit number (0 to 63) under which subject_state records consent and
 * objections, so the row filter tests a bit instead of running a query.
 */
CREATE TABLE @extschema@.purposes (
    name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    bit smallint NOT NULL UNIQUE CHECK (bit BETWEEN 0 AND 63),
    lawful_basis text NOT NULL CHECK (lawful_basis IN
        ('consent', 'contract', 'legal_obligation', 'vital_interests', 'public_task', 'legitimate_interests')),
    description text NOT NULL,
    retention interval,
    special_category boolean NOT NULL DEFAULT false,
    allowed_when_restricted boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    recipients text[]
);
COMMENT ON TABLE @extschema@.purposes IS
    'Purposes of processing, each with its lawful basis (GDPR Art. 6)';
COMMENT ON COLUMN @extschema@.purposes.recipients IS
    'Recipients or categories of recipients the data is disclosed to for this purpose (GDPR Art. 13, 15)';

/*
 * The consent ledger: append-only.  Rows are changed only once their
 * subject is erased (its data key destroyed): deleted, or reduced by a
 * purge to what proves the consent and its end (source, method and
 * evidence cleared).  The consent
 * and restriction ledgers carry the project of their subject, so that they
 * are filtered by team like the CRM tables.  A person's project never
 * changes, so the copy never goes stale.
 */
CREATE TABLE @extschema@.consent_events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    subject bigint NOT NULL,
    purpose text NOT NULL REFERENCES @extschema@.purposes,
    action text NOT NULL CHECK (action IN ('grant', 'withdraw', 'object', 'withdraw_objection')),
    captured_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    recorded_by name NOT NULL,
    source text,
    method text,
    notice_version text,
    wording_hash bytea,
    evidence jsonb,
    project_id bigint,
    PRIMARY KEY (subject, id)
);
CREATE INDEX consent_events_purpose ON @extschema@.consent_events (purpose, captured_at);
COMMENT ON TABLE @extschema@.consent_events IS
    'Append-only ledger of consent grants and withdrawals and of objections (Art. 21)';
COMMENT ON COLUMN @extschema@.consent_events.project_id IS 'Project of the subject, for the team filter';

CREATE TABLE @extschema@.restriction_events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    subject bigint NOT NULL,
    action text NOT NULL CHECK (action IN ('restrict', 'lift')),
    reason text,
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    recorded_by name NOT NULL,
    project_id bigint,
    PRIMARY KEY (subject, id)
);
COMMENT ON TABLE @extschema@.restriction_events IS
    'Append-only ledger of restrictions of processing (Art. 18) and their lifting';
COMMENT ON COLUMN @extschema@.restriction_events.project_id IS 'Project of the subject, for the team filter';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.purposes', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.consent_events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.restriction_events', '');

/*
 * Whether a subject is erased is read from subject_state.erased_at.  Of an
 * erased subject's rows, an update may only clear the columns that hold
 * more than the proof needs: source, method and evidence of a consent
 * event, the reason of a restriction event.
 */
CREATE FUNCTION @extschema@.protect_ledger_rows() RETURNS trigger
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
COMMENT ON FUNCTION @extschema@.protect_ledger_rows() IS
    'Trigger keeping the consent and restriction ledgers append-only';
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON @extschema@.consent_events
    FOR EACH ROW EXECUTE FUNCTION @extschema@.protect_ledger_rows();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON @extschema@.restriction_events
    FOR EACH ROW EXECUTE FUNCTION @extschema@.protect_ledger_rows();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON @extschema@.consent_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.protect_ledger_rows();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON @extschema@.restriction_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.protect_ledger_rows();

/*
 * Row level security, forced: the ledgers are filtered by team like the
 * CRM tables.
 */
ALTER TABLE @extschema@.consent_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.consent_events FORCE ROW LEVEL SECURITY;
CREATE POLICY team_only ON @extschema@.consent_events USING (@extschema@.in_team(project_id));
ALTER TABLE @extschema@.restriction_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.restriction_events FORCE ROW LEVEL SECURITY;
CREATE POLICY team_only ON @extschema@.restriction_events USING (@extschema@.in_team(project_id));

/* C side: the row filter. */
CREATE FUNCTION @extschema@.lawful(subject bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'gdprcrm_lawful' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.lawful(bigint) IS
    'Whether the session''s declared purpose is lawful for this subject now (the row filter)';

/* Any change of the purposes, however made, reaches every backend. */
CREATE FUNCTION @extschema@.publish_purpose_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.publish_state_change(0);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@.publish_purpose_change() IS
    'Trigger announcing changes of gdprcrm.purposes to every backend';
REVOKE ALL ON FUNCTION @extschema@.publish_purpose_change() FROM PUBLIC;
CREATE TRIGGER publish_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.purposes
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.publish_purpose_change();

/*
 * Purposes.
 */
CREATE FUNCTION @extschema@.define_purpose(
    name text, lawful_basis text, description text, retention interval DEFAULT NULL,
    special_category boolean DEFAULT false, allowed_when_restricted boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_bit smallint;
BEGIN
    PERFORM @extschema@.require_project_admin(NULL);
    IF coalesce(description, '') = '' THEN
        RAISE EXCEPTION 'a purpose needs a description' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOCK TABLE @extschema@.purposes IN SHARE ROW EXCLUSIVE MODE;
    SELECT p.bit INTO v_bit FROM @extschema@.purposes p WHERE p.name = define_purpose.name;
    -- Purposes are shared by every project: changing what makes one lawful
    -- changes every project's visibility, so only a superuser may.
    IF v_bit IS NOT NULL AND EXISTS (
        SELECT 1 FROM @extschema@.purposes p
        WHERE p.name = define_purpose.name
          AND (p.lawful_basis, p.allowed_when_restricted) IS DISTINCT FROM
              (define_purpose.lawful_basis, define_purpose.allowed_when_restricted))
       AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = @extschema@.calling_role()) THEN
        RAISE EXCEPTION 'only a superuser may change the lawful basis of an existing purpose'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF v_bit IS NULL THEN
        SELECT min(b) INTO v_bit FROM pg_catalog.generate_series(0, 63) AS b
        WHERE b NOT IN (SELECT p.bit FROM @extschema@.purposes p);
        IF v_bit IS NULL THEN
            RAISE EXCEPTION 'no more than 64 purposes can be defined' USING ERRCODE = 'program_limit_exceeded';
        END IF;
    END IF;
    INSERT INTO @extschema@.purposes AS p (name, bit, lawful_basis, description, retention,
                                           special_category, allowed_when_restricted)
    VALUES (define_purpose.name, v_bit, define_purpose.lawful_basis, define_purpose.description,
            define_purpose.retention, define_purpose.special_category, define_purpose.allowed_when_restricted)
    ON CONFLICT ON CONSTRAINT purposes_pkey DO UPDATE SET
        lawful_basis = EXCLUDED.lawful_basis, description = EXCLUDED.description,
        retention = EXCLUDED.retention, special_category = EXCLUDED.special_category,
        allowed_when_restricted = EXCLUDED.allowed_when_restricted;
    -- Subject 0 stands for "the purposes changed".
    PERFORM @extschema@.publish_state_change(0);
EXCEPTION WHEN check_violation THEN
    RAISE EXCEPTION 'invalid purpose definition'
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = 'Names are lower case letters, digits and underscores; the lawful basis is one of consent, contract, legal_obligation, vital_interests, public_task, legitimate_interests.';
END $$;
COMMENT ON FUNCTION @extschema@.define_purpose(text, text, text, interval, boolean, boolean) IS
    'Define or redefine a purpose of processing with its lawful basis (GDPR Art. 6)';

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

/*
 * The ledger functions.  SECURITY DEFINER: the ledger and state tables
 * are written only here.  The subject must be a person of gdprcrm.people
 * whose project team includes the caller (superusers excepted).  An
 * unknown id and another project's person get the same error, so that the
 * answer says nothing about other projects.
 */
CREATE FUNCTION @extschema@.require_subject_access(subject bigint) RETURNS void
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
COMMENT ON FUNCTION @extschema@.require_subject_access(bigint) IS
    'Raise unless the caller may record consent and restrictions for this subject';

/* Erasure is read from subject_state: consent does not read the key tables. */
CREATE FUNCTION @extschema@.record_consent_event(
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
COMMENT ON FUNCTION @extschema@.record_consent_event(bigint, text, text, timestamptz, text, text, text, text, jsonb) IS
    'Append one consent or objection event and update the subject''s state';

CREATE FUNCTION @extschema@.grant_consent(
    subject bigint, purpose text, source text DEFAULT NULL, method text DEFAULT NULL,
    notice_version text DEFAULT NULL, wording text DEFAULT NULL, evidence jsonb DEFAULT NULL,
    captured_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@.record_consent_event(subject, purpose, 'grant', captured_at, source, method,
                                            notice_version, wording, evidence)
$$;
COMMENT ON FUNCTION @extschema@.grant_consent(bigint, text, text, text, text, text, jsonb, timestamptz) IS
    'Record consent of a subject to a purpose, with where, how and under which notice it was given; returns the ledger id';

CREATE FUNCTION @extschema@.withdraw_consent(
    subject bigint, purpose text, source text DEFAULT NULL, method text DEFAULT NULL,
    evidence jsonb DEFAULT NULL, captured_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@.record_consent_event(subject, purpose, 'withdraw', captured_at, source, method,
                                            NULL, NULL, evidence)
$$;
COMMENT ON FUNCTION @extschema@.withdraw_consent(bigint, text, text, text, jsonb, timestamptz) IS
    'Record the withdrawal of a subject''s consent to a purpose; returns the ledger id';

CREATE FUNCTION @extschema@.object(subject bigint, purpose text, source text DEFAULT NULL,
                                   evidence jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@.record_consent_event(subject, purpose, 'object', now(), source, NULL,
                                            NULL, NULL, evidence)
$$;
COMMENT ON FUNCTION @extschema@.object(bigint, text, text, jsonb) IS
    'Record a subject''s objection to a purpose (GDPR Art. 21); returns the ledger id';

CREATE FUNCTION @extschema@.withdraw_objection(subject bigint, purpose text, source text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@.record_consent_event(subject, purpose, 'withdraw_objection', now(), source, NULL,
                                            NULL, NULL, NULL)
$$;
COMMENT ON FUNCTION @extschema@.withdraw_objection(bigint, text, text) IS
    'Record that a subject withdrew an objection; returns the ledger id';

CREATE FUNCTION @extschema@.set_restriction(subject bigint, restricted boolean, reason text)
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
COMMENT ON FUNCTION @extschema@.set_restriction(bigint, boolean, text) IS
    'Record a restriction of processing or its lifting and update the subject''s state';

CREATE FUNCTION @extschema@.restrict_processing(subject bigint, reason text)
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@.set_restriction(subject, true, reason)
$$;
COMMENT ON FUNCTION @extschema@.restrict_processing(bigint, text) IS
    'Restrict processing of a subject (GDPR Art. 18): only purposes allowed under restriction see it';

CREATE FUNCTION @extschema@.lift_restriction(subject bigint, reason text DEFAULT NULL)
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@.set_restriction(subject, false, reason)
$$;
COMMENT ON FUNCTION @extschema@.lift_restriction(bigint, text) IS
    'Lift a restriction of processing (GDPR Art. 18)';

/*
 * The current state of consent, from the ledger: the last event wins.  The
 * view reads the ledger with the caller's rights, so its filter applies.
 */
CREATE VIEW @extschema@.consents WITH (security_barrier, security_invoker = true) AS
    SELECT DISTINCT ON (e.subject, e.purpose)
           e.subject, e.purpose, p.lawful_basis,
           (e.action = 'grant') AS granted,
           e.captured_at, e.source, e.method, e.notice_version, e.wording_hash, e.id AS event_id,
           e.project_id
    FROM @extschema@.consent_events e
    JOIN @extschema@.purposes p ON p.name = e.purpose
    WHERE e.action IN ('grant', 'withdraw')
    ORDER BY e.subject, e.purpose, e.id DESC;
COMMENT ON VIEW @extschema@.consents IS
    'Current consent per subject and purpose: the latest grant or withdrawal in the ledger';

/*
 * set_purpose: declare the purpose of this transaction (SET LOCAL), after
 * checking that it exists.  With a transaction-pooling connection pooler
 * this is the only safe way: SET without LOCAL would outlive the request.
 */
CREATE FUNCTION @extschema@.set_purpose(purpose text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM @extschema@.purposes p WHERE p.name = purpose) THEN
        RAISE EXCEPTION 'purpose "%" does not exist', purpose USING ERRCODE = 'undefined_object';
    END IF;
    RETURN pg_catalog.set_config('gdprcrm.purpose', purpose, true);
END $$;
COMMENT ON FUNCTION @extschema@.set_purpose(text) IS
    'Declare the purpose of processing for the current transaction (like SET LOCAL gdprcrm.purpose)';

CREATE FUNCTION @extschema@.explain_access(subject bigint, purpose text DEFAULT NULL)
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
COMMENT ON FUNCTION @extschema@.explain_access(bigint, text) IS
    'Why a subject''s rows are visible or hidden for a purpose (default: the declared one)';

CREATE FUNCTION @extschema@.may_process(subject bigint, purpose text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@.explain_access(subject, purpose) LIKE 'visible:%'
$$;
COMMENT ON FUNCTION @extschema@.may_process(bigint, text) IS
    'Whether a purpose is lawful for a subject now';

/*
 * protect: put the purpose filter on a table.  A restrictive policy, so
 * it narrows whatever other policies allow (the project filter of the CRM
 * tables).  Writes are not filtered: recording data about a person needs
 * no purpose; reading, changing and deleting it does.
 */
CREATE FUNCTION @extschema@.protect(tab regclass, subject_column name)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_type regtype;
BEGIN
    SELECT a.atttypid::regtype INTO v_type FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = tab AND a.attname = subject_column AND NOT a.attisdropped AND a.attnum > 0;
    IF v_type IS NULL THEN
        RAISE EXCEPTION 'column "%" does not exist in %', subject_column, tab USING ERRCODE = 'undefined_column';
    END IF;
    IF v_type NOT IN ('bigint'::regtype, 'integer'::regtype) THEN
        RAISE EXCEPTION 'subject column must be bigint or integer' USING ERRCODE = 'datatype_mismatch';
    END IF;
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tab);
    EXECUTE pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tab);
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = tab AND polname = 'gdprcrm_purpose') THEN
        EXECUTE pg_catalog.format('DROP POLICY gdprcrm_purpose ON %s', tab);
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE POLICY gdprcrm_purpose ON %s AS RESTRICTIVE FOR ALL USING (@extschema@.lawful(%I)) WITH CHECK (true)',
        tab, subject_column);
    -- A table without any permissive policy would show nothing at all.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = tab AND polpermissive) THEN
        EXECUTE pg_catalog.format('CREATE POLICY gdprcrm_all_rows ON %s USING (true)', tab);
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.protect(regclass, name) IS
    'Show a table''s rows only when the declared purpose is lawful for the row''s subject';

/*
 * Grants.  The row filter runs as the querying role.  Purposes are read
 * by every gdprcrm role; the ledgers, the consents view and the ledger
 * functions only by applications and administrators.
 */
REVOKE ALL ON FUNCTION @extschema@.lawful(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.lawful(bigint) TO gdprcrm_admin, gdprcrm_app, gdprcrm_analyst;
REVOKE ALL ON @extschema@.purposes, @extschema@.consent_events, @extschema@.restriction_events,
    @extschema@.consents FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.protect_ledger_rows() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.define_purpose(text, text, text, interval, boolean, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.set_purpose_recipients(text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.require_subject_access(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.record_consent_event(bigint, text, text, timestamptz, text, text, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.grant_consent(bigint, text, text, text, text, text, jsonb, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.withdraw_consent(bigint, text, text, text, jsonb, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.object(bigint, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.withdraw_objection(bigint, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.set_restriction(bigint, boolean, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.restrict_processing(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.lift_restriction(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.explain_access(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.may_process(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.protect(regclass, name) FROM PUBLIC;

GRANT SELECT ON @extschema@.purposes TO gdprcrm_admin, gdprcrm_app, gdprcrm_analyst;
GRANT SELECT ON @extschema@.consents TO gdprcrm_admin;
GRANT SELECT ON @extschema@.consent_events, @extschema@.restriction_events TO gdprcrm_admin;
GRANT EXECUTE ON FUNCTION
    @extschema@.require_subject_access(bigint),
    @extschema@.record_consent_event(bigint, text, text, timestamptz, text, text, text, text, jsonb),
    @extschema@.grant_consent(bigint, text, text, text, text, text, jsonb, timestamptz),
    @extschema@.withdraw_consent(bigint, text, text, text, jsonb, timestamptz),
    @extschema@.object(bigint, text, text, jsonb),
    @extschema@.withdraw_objection(bigint, text, text),
    @extschema@.set_restriction(bigint, boolean, text),
    @extschema@.restrict_processing(bigint, text),
    @extschema@.lift_restriction(bigint, text),
    @extschema@.explain_access(bigint, text),
    @extschema@.may_process(bigint, text)
    TO gdprcrm_app, gdprcrm_admin;
GRANT EXECUTE ON FUNCTION @extschema@.define_purpose(text, text, text, interval, boolean, boolean),
    @extschema@.set_purpose_recipients(text, text[])
    TO gdprcrm_admin;
