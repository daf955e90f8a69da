/*
 * crm_api: the functions applications call to write and read the CRM data
 * model (identify, import, merge, track, messages, enrichments, retention
 * review) and the making of event partitions.
 */

/*
 * Monthly event partitions, made ahead of time.  SECURITY DEFINER so that
 * the extension's owner owns every partition; application roles have no
 * privilege on partitions and reach events only through the parent, where
 * its row level security applies.
 */
CREATE FUNCTION @extschema@.create_event_partitions(from_month date, to_month date)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_month date := pg_catalog.date_trunc('month', from_month)::date;
    v_name text;
    v_created integer := 0;
BEGIN
    IF to_month <= from_month OR to_month > from_month + interval '10 years' THEN
        RAISE EXCEPTION 'invalid range of months' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'to_month must be after from_month and at most ten years later.';
    END IF;
    WHILE v_month < to_month LOOP
        v_name := pg_catalog.format('events_%s', pg_catalog.to_char(v_month, 'YYYY_MM'));
        IF pg_catalog.to_regclass(pg_catalog.format('@extschema@.%I', v_name)) IS NULL THEN
            EXECUTE pg_catalog.format(
                'CREATE TABLE @extschema@.%I PARTITION OF @extschema@.events FOR VALUES FROM (%L) TO (%L)',
                v_name, v_month, (v_month + interval '1 month')::date);
            EXECUTE pg_catalog.format(
                'ALTER TABLE @extschema@.%I ADD PRIMARY KEY (person_id, occurred_at, id)', v_name);
            EXECUTE pg_catalog.format(
                'CREATE INDEX %I ON @extschema@.%I (project_id, occurred_at)', v_name || '_project_time', v_name);
            v_created := v_created + 1;
        END IF;
        v_month := (v_month + interval '1 month')::date;
    END LOOP;
    RETURN v_created;
END $$;
COMMENT ON FUNCTION @extschema@.create_event_partitions(date, date) IS
    'Create the monthly partitions of gdprcrm.events covering [from_month, to_month); returns how many were new';

/*
 * merge_people: move everything of one person to another (events,
 * messages, enrichments, company links and identifiers), re-encrypt the
 * encrypted values under the surviving person's key and destroy the merged
 * person's own key.  identify() merges an anonymous visitor this way.
 */
CREATE FUNCTION @extschema@.merge_people(project bigint, from_person bigint, into_person bigint)
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
COMMENT ON FUNCTION @extschema@.merge_people(bigint, bigint, bigint) IS
    'Move everything of one person to another, re-encrypting under the surviving person''s key, and erase the merged person''s key';

/*
 * identify: find or create the person with this external id and/or email
 * in a project, and return the person's id.  Idempotent.  When the
 * external id belongs to an anonymous visitor and the email to another
 * person, the visitor is merged into that person (merge_people).
 *
 * SECURITY DEFINER: finding a person must not depend on the purpose the
 * session declared (a person is identified before consent is recorded),
 * so it reads past the row filters and checks the caller's team itself.
 *
 * Its cost depends on neither the size of the tables nor their statistics.
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
 * waits, as a unique violation would, for the transaction that took it;
 * a new person that lost a claim is withdrawn again (row, claims and the
 * data key its email was encrypted with) and the lookup runs again.  Under
 * REPEATABLE READ an identifier taken by a transaction the snapshot does
 * not see is a serialization failure.
 *
 * A known person is locked before a new identifier is claimed for it, so
 * that two sessions changing one person's email serialise.  A call that
 * changes nothing writes nothing.
 *
 * Erasure (erasure.sql): an identifier of a person in the trash, and an
 * identifier that is not taken but suppressed by a purge, make identify()
 * return NULL and write nothing.  Whether a person is in the trash is read
 * from the backend's copy of the subjects' states (in_trash, no query);
 * the suppression list is probed by its whole key, and only for an
 * identifier that would be claimed.
 */
CREATE FUNCTION @extschema@.identify(project bigint, external_id text DEFAULT NULL,
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
 *
 * Erasure (erasure.sql): an element naming a person in the trash, or an
 * identifier that is not taken but suppressed by a purge, gets no person
 * (NULL) and changes nothing, as identify() would return NULL for it.
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
COMMENT ON FUNCTION @extschema@.import_people(bigint, jsonb) IS
    'Identify many people at once from a JSON array of {external_id, email, traits}, as identify() would one by one; returns each element''s position and person id';

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

/*
 * track: record an event and keep last_seen_at to within a minute (a
 * person who is active every second is not rewritten every second).
 */
CREATE FUNCTION @extschema@.track(project bigint, person bigint, event text,
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
COMMENT ON FUNCTION @extschema@.track(bigint, bigint, text, jsonb, timestamptz) IS
    'Record a custom event of a person and update last seen';

CREATE FUNCTION @extschema@.track_page_view(project bigint, person bigint, url text,
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
COMMENT ON FUNCTION @extschema@.track_page_view(bigint, bigint, text, text, text, jsonb, timestamptz) IS
    'Record a page view (url, path, title, referrer) of a person and update last seen';

/*
 * Recording data needs no purpose.  INSERT ... RETURNING would apply the
 * purpose filter to the new row (and refuse it when its subject is hidden),
 * so the write functions take the id from the sequence first and insert
 * without RETURNING: the caller learns the id it chose, nothing more.
 */
CREATE FUNCTION @extschema@.add_message(project bigint, person bigint, direction text, channel text,
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
COMMENT ON FUNCTION @extschema@.add_message(bigint, bigint, text, text, text, text, timestamptz) IS
    'Record a message to or from a person; subject and body are encrypted under the person''s key';

CREATE FUNCTION @extschema@.add_enrichment(project bigint, person bigint, source text, field text,
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
COMMENT ON FUNCTION @extschema@.add_enrichment(bigint, bigint, text, text, jsonb, timestamptz) IS
    'Record public-profile data about a person with its source and fetch time';

CREATE FUNCTION @extschema@.stale_people(project bigint, not_active_for interval)
RETURNS TABLE (person_id bigint, external_id text, status text,
               updated_at timestamptz, last_seen_at timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.id, p.external_id, p.status, p.updated_at, p.last_seen_at
    FROM @extschema@.people p
    WHERE p.project_id = project AND p.status <> 'merged'
      AND greatest(p.updated_at, coalesce(p.last_seen_at, '-infinity'::timestamptz))
          < pg_catalog.now() - not_active_for
    ORDER BY greatest(p.updated_at, coalesce(p.last_seen_at, '-infinity'::timestamptz)), p.id
$$;
COMMENT ON FUNCTION @extschema@.stale_people(bigint, interval) IS
    'People of a project neither updated nor seen for the given time (retention review)';

/*
 * Grants.  Application roles reach the CRM tables only through row level
 * security; the SECURITY DEFINER functions check their caller's team.
 */
REVOKE ALL ON FUNCTION @extschema@.create_event_partitions(date, date) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.merge_people(bigint, bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.identify(bigint, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.import_people(bigint, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.note_activity(bigint, bigint, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.track(bigint, bigint, text, jsonb, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.track_page_view(bigint, bigint, text, text, text, jsonb, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.add_message(bigint, bigint, text, text, text, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.add_enrichment(bigint, bigint, text, text, jsonb, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.stale_people(bigint, interval) FROM PUBLIC;

-- Applications: the API.
GRANT EXECUTE ON FUNCTION
    @extschema@.identify(bigint, text, text, jsonb),
    @extschema@.import_people(bigint, jsonb),
    @extschema@.note_activity(bigint, bigint, timestamptz),
    @extschema@.track(bigint, bigint, text, jsonb, timestamptz),
    @extschema@.track_page_view(bigint, bigint, text, text, text, jsonb, timestamptz),
    @extschema@.add_message(bigint, bigint, text, text, text, text, timestamptz),
    @extschema@.add_enrichment(bigint, bigint, text, text, jsonb, timestamptz),
    @extschema@.stale_people(bigint, interval)
    TO gdprcrm_app, gdprcrm_admin;

-- Administrators: partitions.
GRANT EXECUTE ON FUNCTION @extschema@.create_event_partitions(date, date) TO gdprcrm_admin;
