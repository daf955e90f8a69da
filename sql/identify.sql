-- identify() at a cost that depends neither on the number of people nor on
-- planner statistics, and the set-based import_people().
--
-- Costs are shown as index entries and sequential scans counted by the
-- statistics collector, never as times.  Plaintexts that must never reach
-- the server log start with CANARY.

\set SHOW_CONTEXT never
-- The extension, when this test runs on its own.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS gdprcrm;
RESET client_min_messages;

-- People of this test start at 300000 (earlier tests used lower ids).
SELECT setval('gdprcrm.people_id_seq', greatest(300000, (SELECT last_value FROM gdprcrm.people_id_seq)))
    IS NOT NULL AS fresh_ids;

CREATE ROLE regress_idf_app IN ROLE gdprcrm_app;
CREATE ROLE regress_idf_other IN ROLE gdprcrm_app;
CREATE ROLE regress_idf_nobody;
SELECT gdprcrm.create_project('Identify Co', ARRAY['regress_idf_app']::name[]) AS proj \gset
SELECT gdprcrm.create_project('Import Co', ARRAY['regress_idf_app']::name[]) AS imp \gset
SELECT gdprcrm.create_project('Elsewhere Co', ARRAY['regress_idf_other']::name[]) AS other \gset

-- Index entries read from people and person_identities, and sequential
-- scans of each, as the statistics collector has them once this backend's
-- counts are flushed.
CREATE TEMP VIEW reads AS
SELECT (SELECT coalesce(sum(i.idx_tup_read), 0) FROM pg_stat_user_indexes i
        WHERE i.relid IN ('gdprcrm.person_identities'::regclass, 'gdprcrm.people'::regclass)) AS entries,
       (SELECT t.seq_scan FROM pg_stat_user_tables t
        WHERE t.relid = 'gdprcrm.person_identities'::regclass) AS identity_scans,
       (SELECT t.seq_scan FROM pg_stat_user_tables t
        WHERE t.relid = 'gdprcrm.people'::regclass) AS people_scans;

-- No statistics: the tables were never analyzed (whatever analyzed them
-- earlier is forgotten, and nothing analyzes them during this test).
ALTER TABLE gdprcrm.person_identities SET (autovacuum_enabled = false);
ALTER TABLE gdprcrm.people SET (autovacuum_enabled = false);
DELETE FROM pg_statistic
WHERE starelid IN ('gdprcrm.person_identities'::regclass, 'gdprcrm.people'::regclass);

-- An import loop from small tables: 1,000 new people in one statement.
-- The plans made for the first calls (identify's own and those of the
-- foreign key checks) serve the later ones; each call still reads a few
-- index entries (here and below: at most ten a call), never the people
-- created before it.
SELECT pg_stat_force_next_flush();
SELECT * FROM reads \gset before_
SET ROLE regress_idf_app;
SELECT count(DISTINCT gdprcrm.identify(:proj, 'first-' || i)) AS first_people
FROM generate_series(1, 1000) AS i;
RESET ROLE;
SELECT pg_stat_force_next_flush();
SELECT entries - :before_entries <= 1000 * 10 AS few_entries_read,
       identity_scans - :before_identity_scans AS identity_scans,
       people_scans - :before_people_scans AS people_scans
FROM reads;

-- Then a CRM import of 3,000 people, loaded directly.
CREATE TEMP TABLE loaded AS
SELECT nextval('gdprcrm.people_id_seq') AS id, 'loaded-' || i AS ext, 'CANARY-loaded' || i || '@identify.test' AS email
FROM generate_series(1, 3000) AS i;
INSERT INTO gdprcrm.people (id, project_id, external_id, email, email_bidx, status)
SELECT id, :proj, ext, gdprcrm.encrypt(id, email, 'crm.people.email'),
       gdprcrm.blind_index(gdprcrm.normalize_email(email), 'email'), 'identified'
FROM loaded;
INSERT INTO gdprcrm.person_identities (project_id, kind, key, person_id)
SELECT :proj, 'external_id', gdprcrm.blind_index(ext, 'external_id'), id FROM loaded
UNION ALL
SELECT :proj, 'email', gdprcrm.blind_index(gdprcrm.normalize_email(email), 'email'), id FROM loaded;
SELECT count(*) AS statistics FROM pg_statistic
WHERE starelid IN ('gdprcrm.person_identities'::regclass, 'gdprcrm.people'::regclass);

-- Twenty calls of each kind, with custom plans and with the generic plans
-- that PL/pgSQL keeps for the session: each reads a few index entries (the
-- person's own identifiers and row), never the project's 8,000
-- identifiers, and scans no table.
SET plan_cache_mode = force_custom_plan;
SELECT pg_stat_force_next_flush();
SELECT * FROM reads \gset before_
SET ROLE regress_idf_app;
SELECT count(DISTINCT gdprcrm.identify(:proj, 'new-' || i, 'CANARY-new' || i || '@identify.test')) AS new_people
FROM generate_series(1, 20) AS i;
RESET ROLE;
SELECT pg_stat_force_next_flush();
SELECT entries - :before_entries <= 20 * 10 AS few_entries_read,
       identity_scans - :before_identity_scans AS identity_scans,
       people_scans - :before_people_scans AS people_scans
FROM reads;

SET plan_cache_mode = force_generic_plan;
SELECT pg_stat_force_next_flush();
SELECT * FROM reads \gset before_
SET ROLE regress_idf_app;
SELECT count(DISTINCT gdprcrm.identify(:proj, 'newer-' || i, 'CANARY-newer' || i || '@identify.test')) AS new_people
FROM generate_series(1, 20) AS i;
RESET ROLE;
SELECT pg_stat_force_next_flush();
SELECT entries - :before_entries <= 20 * 10 AS few_entries_read,
       identity_scans - :before_identity_scans AS identity_scans,
       people_scans - :before_people_scans AS people_scans
FROM reads;

-- Known people, as they are (nothing written) and with a new email (the
-- old one is released).
SELECT pg_stat_force_next_flush();
SELECT * FROM reads \gset before_
SET ROLE regress_idf_app;
SELECT count(DISTINCT gdprcrm.identify(:proj, 'loaded-' || i, 'CANARY-loaded' || i || '@identify.test')) AS same_people,
       count(DISTINCT gdprcrm.identify(:proj, 'loaded-' || i, 'CANARY-moved' || i || '@identify.test')) AS moved_people
FROM generate_series(1, 20) AS i;
RESET ROLE;
SELECT pg_stat_force_next_flush();
SELECT entries - :before_entries <= 40 * 10 AS few_entries_read,
       identity_scans - :before_identity_scans AS identity_scans,
       people_scans - :before_people_scans AS people_scans
FROM reads;
-- The moved emails replaced the old ones.
SELECT count(*) FILTER (WHERE i.key = gdprcrm.blind_index(gdprcrm.normalize_email('CANARY-moved' || l.n || '@identify.test'), 'email')) AS new_emails,
       count(*) FILTER (WHERE i.key = gdprcrm.blind_index(gdprcrm.normalize_email('CANARY-loaded' || l.n || '@identify.test'), 'email')) AS old_emails
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM loaded) AS l
JOIN gdprcrm.person_identities i ON i.person_id = l.id AND i.kind = 'email'
WHERE l.n <= 20;

-- An import of 40 new and 40 known people reads a few entries per person
-- and scans nothing either.
SELECT pg_stat_force_next_flush();
SELECT * FROM reads \gset before_
SET ROLE regress_idf_app;
SELECT count(*) AS rows, count(DISTINCT person_id) AS people
FROM gdprcrm.import_people(:proj, (
    SELECT jsonb_agg(jsonb_build_object('external_id', 'imported-' || i,
                                        'email', 'CANARY-imported' || i || '@identify.test'))
    FROM generate_series(1, 40) AS i) || (
    SELECT jsonb_agg(jsonb_build_object('external_id', 'loaded-' || i))
    FROM generate_series(101, 140) AS i));
RESET ROLE;
SELECT pg_stat_force_next_flush();
SELECT entries - :before_entries <= 80 * 10 AS few_entries_read,
       identity_scans - :before_identity_scans AS identity_scans,
       people_scans - :before_people_scans AS people_scans
FROM reads;

-- The same after ANALYZE, in a new session.
ANALYZE gdprcrm.person_identities, gdprcrm.people;
\c
\set SHOW_CONTEXT never
CREATE TEMP VIEW reads AS
SELECT (SELECT coalesce(sum(i.idx_tup_read), 0) FROM pg_stat_user_indexes i
        WHERE i.relid IN ('gdprcrm.person_identities'::regclass, 'gdprcrm.people'::regclass)) AS entries,
       (SELECT t.seq_scan FROM pg_stat_user_tables t
        WHERE t.relid = 'gdprcrm.person_identities'::regclass) AS identity_scans,
       (SELECT t.seq_scan FROM pg_stat_user_tables t
        WHERE t.relid = 'gdprcrm.people'::regclass) AS people_scans;
SELECT pg_stat_force_next_flush();
SELECT * FROM reads \gset before_
SET ROLE regress_idf_app;
SELECT count(DISTINCT gdprcrm.identify(:proj, 'newest-' || i, 'CANARY-newest' || i || '@identify.test')) AS new_people,
       count(DISTINCT gdprcrm.identify(:proj, 'loaded-' || i, 'CANARY-again' || i || '@identify.test')) AS moved_people
FROM generate_series(21, 40) AS i;
RESET ROLE;
SELECT pg_stat_force_next_flush();
SELECT entries - :before_entries <= 40 * 10 AS few_entries_read,
       identity_scans - :before_identity_scans AS identity_scans,
       people_scans - :before_people_scans AS people_scans
FROM reads;
ALTER TABLE gdprcrm.person_identities RESET (autovacuum_enabled);
ALTER TABLE gdprcrm.people RESET (autovacuum_enabled);

-- identify keeps its contract: idempotent, one person per identifier,
-- whatever purpose is declared (none here).
-- (outcome: the SQLSTATE and message of a statement that fails, or 'ok'.)
CREATE FUNCTION pg_temp.outcome(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SET ROLE regress_idf_app;
SELECT gdprcrm.identify(:imp, 'ada', 'CANARY-Ada@Identify.test', '{"plan": "pro"}') AS ada \gset
SELECT gdprcrm.identify(:imp, 'ada', 'CANARY-Ada@Identify.test', '{"plan": "pro"}') = :ada AS same,
       gdprcrm.identify(:imp, 'ada') = :ada AS by_external_id,
       gdprcrm.identify(:imp, NULL, ' canary-ada@identify.TEST ') = :ada AS by_email;
SELECT pg_temp.outcome(format('SELECT gdprcrm.identify(%s)', :imp)) AS no_identifier;
SELECT pg_temp.outcome(format('SELECT gdprcrm.identify(%s, %L)', :other, 'ada')) AS other_team;
RESET ROLE;

-- import_people: one row per element, in order, as identify() one by one.
SET ROLE regress_idf_app;
SELECT gdprcrm.identify(:imp, 'visitor') AS visitor \gset
SELECT gdprcrm.identify(:imp, 'cookie') AS cookie \gset
SELECT ordinality, person_id = :ada AS is_ada, person_id = :visitor AS is_visitor,
       person_id = first_value(person_id) OVER (ORDER BY ordinality) AS is_grace
FROM gdprcrm.import_people(:imp, '[
    {"external_id": "grace", "email": "CANARY-grace@identify.test", "traits": {"plan": "team"}},
    {"external_id": "ada", "traits": {"seats": 5}},
    {"email": "CANARY-linus@identify.test"},
    {"external_id": "grace", "traits": {"seats": 2}},
    {"external_id": "visitor", "email": "CANARY-margaret@identify.test"},
    {"external_id": "ken", "email": null, "traits": null},
    {"email": "canary-ADA@identify.test", "external_id": "ada"},
    {"external_id": "cookie", "email": "CANARY-grace@identify.test"}
]') ORDER BY ordinality;
RESET ROLE;
SELECT p.external_id, p.status, p.traits,
       gdprcrm.decrypt(p.email, 'crm.people.email', p.id) AS email,
       (SELECT array_agg(i.kind ORDER BY i.kind) FROM gdprcrm.person_identities i WHERE i.person_id = p.id) AS identifiers
FROM gdprcrm.people p WHERE p.project_id = :imp ORDER BY p.external_id NULLS FIRST;

-- Idempotent: the same batch again returns the same people and adds none.
SET ROLE regress_idf_app;
CREATE TEMP TABLE first_import AS
SELECT * FROM gdprcrm.import_people(:imp, '[{"external_id": "grace"}, {"email": "CANARY-linus@identify.test"},
                                              {"external_id": "new-1", "email": "CANARY-new-1@identify.test"}]');
CREATE TEMP TABLE second_import AS
SELECT * FROM gdprcrm.import_people(:imp, '[{"external_id": "grace"}, {"email": "CANARY-linus@identify.test"},
                                              {"external_id": "new-1", "email": "CANARY-new-1@identify.test"}]');
SELECT count(*) AS same_rows FROM first_import JOIN second_import USING (ordinality, person_id);
RESET ROLE;
SELECT count(*) AS people, count(*) FILTER (WHERE status = 'merged') AS merged
FROM gdprcrm.people WHERE project_id = :imp;

-- An empty batch returns nothing; malformed batches are refused with
-- SQLSTATE 22023, naming the element but never its content.
SET ROLE regress_idf_app;
SELECT count(*) AS rows FROM gdprcrm.import_people(:imp, '[]');
SELECT v.doc, pg_temp.outcome(format('SELECT * FROM gdprcrm.import_people(%s, %L)', :imp, v.doc)) AS outcome
FROM (VALUES ('{"external_id": "CANARY-x"}'), ('"CANARY-x"'), ('[{"external_id": "a"}, ["CANARY-x"]]'),
             ('[{"external_id": "a", "e-mail": "CANARY-x@identify.test"}]'),
             ('[{"external_id": 12345}]'), ('[{"email": ["CANARY-x@identify.test"]}]'),
             ('[{"external_id": "a", "traits": ["CANARY-x"]}]'), ('[{"traits": {"plan": "pro"}}]'),
             ('[{"external_id": null, "email": null}]'),
             ('[{"external_id": "a"}, {"email": "CANARY x@identify.test"}]'),
             ('[{"email": "  "}]')) AS v (doc);
SELECT pg_temp.outcome(format('SELECT * FROM gdprcrm.import_people(%s, NULL)', :imp)) AS null_batch;
-- Card numbers in traits are refused as identify() refuses them (23514).
SELECT pg_temp.outcome(format('SELECT * FROM gdprcrm.import_people(%s, %L)', :imp,
    '[{"external_id": "payer"}, {"external_id": "payer-2", "traits": {"card": "4111 1111 1111 1111"}}]')) AS card;
-- Two identified people are never merged silently (55006).
SELECT pg_temp.outcome(format('SELECT * FROM gdprcrm.import_people(%s, %L)', :imp,
    '[{"external_id": "grace", "email": "CANARY-linus@identify.test"}]')) AS two_people;
-- Nothing of a refused batch stays.
SELECT pg_temp.outcome(format('SELECT * FROM gdprcrm.import_people(%s, %L)', :imp,
    '[{"external_id": "kept-1"}, {"external_id": "kept-2", "traits": {"religion": "CANARY"}}]')) AS special_category;
RESET ROLE;
SELECT count(*) AS kept FROM gdprcrm.people WHERE external_id LIKE 'kept-%';

-- Only the project's team may import (42501), and only gdprcrm roles may
-- call it at all.
SET ROLE regress_idf_other;
SELECT pg_temp.outcome(format('SELECT * FROM gdprcrm.import_people(%s, %L)', :imp, '[{"external_id": "intruder"}]')) AS other_team;
SET ROLE regress_idf_nobody;
SELECT pg_temp.outcome(format('SELECT * FROM gdprcrm.import_people(%s, %L)', :imp, '[{"external_id": "intruder"}]')) AS no_role;
-- No project is nobody's: NULL never passes the team check, and nothing of
-- the element reaches an error (no "failing row contains").
SET ROLE regress_idf_other;
SELECT pg_temp.outcome(format('SELECT * FROM gdprcrm.import_people(NULL, %L)',
    '[{"external_id": "CANARY-null-project", "traits": {"salary": "CANARY"}}]')) AS null_project_import;
SELECT pg_temp.outcome('SELECT gdprcrm.identify(NULL, ''CANARY-null-project'')') AS null_project_identify;
SELECT pg_temp.outcome('SELECT gdprcrm.track(NULL, 1, ''login'')') AS null_project_track;
RESET ROLE;
SELECT count(*) AS intruders FROM gdprcrm.people WHERE external_id = 'intruder';

-- identify() and import_people() take the same input: traits are an
-- object, an external id at most 1 kB (a longer one would fail in the
-- index, without saying which element).
SET ROLE regress_idf_app;
SELECT pg_temp.outcome(format('SELECT gdprcrm.identify(%s, %L, NULL, %L)', :proj, 'traits-array', '[1, 2]')) AS traits_array;
SELECT pg_temp.outcome(format('SELECT gdprcrm.identify(%s, %L, NULL, %L)', :proj, 'traits-null', 'null')) AS traits_null;
SELECT pg_temp.outcome(format('SELECT gdprcrm.identify(%s, %L)', :proj, repeat('x', 1025))) AS long_external_id;
SELECT pg_temp.outcome(format('SELECT * FROM gdprcrm.import_people(%s, %L)', :imp,
    jsonb_build_array(jsonb_build_object('external_id', 'short'), jsonb_build_object('external_id', repeat('x', 1025)))))
    AS long_external_id_import;
RESET ROLE;

-- A declared purpose changes nothing.
SET ROLE regress_idf_app;
SET gdprcrm.purpose = 'no_such_purpose';
SELECT count(*) AS rows FROM gdprcrm.import_people(:imp, '[{"external_id": "grace"}, {"external_id": "purposeful"}]');
RESET gdprcrm.purpose;
RESET ROLE;

DROP OWNED BY regress_idf_app, regress_idf_other, regress_idf_nobody;
DROP ROLE regress_idf_app, regress_idf_other, regress_idf_nobody;
