-- Tenancy: project teams by exact role name, ledgers scoped by team, ids
-- from sequences, writes that need no purpose, keys reached only through
-- a team, and memory that no argument sizes.

\set SHOW_CONTEXT never

SELECT setval('gdprcrm.people_id_seq', 300000) IS NOT NULL AS fresh_ids;
SELECT gdprcrm.define_purpose('tenancy_ops', 'contract', 'Operating customer accounts');
SELECT gdprcrm.define_purpose('tenancy_news', 'consent', 'Sending the newsletter');

-- Role names are names, not SQL identifiers: case, dots, spaces, quotes
-- and the full 63 bytes each mean exactly one role.
CREATE ROLE "Regress_Tenant" IN ROLE gdprcrm_app;
CREATE ROLE regress_tenant IN ROLE gdprcrm_app;
CREATE ROLE "regress svc.crm ""quoted""" IN ROLE gdprcrm_app;
CREATE ROLE regress_long_role_name_that_takes_all_of_the_sixty_three_bytes IN ROLE gdprcrm_app;
CREATE ROLE regress_stranger IN ROLE gdprcrm_app;
SELECT gdprcrm.create_project('Upper', ARRAY['Regress_Tenant']::name[]) AS upper \gset
SELECT gdprcrm.create_project('Lower', ARRAY['regress_tenant']::name[]) AS lower \gset
SELECT gdprcrm.create_project('Service', ARRAY['regress svc.crm "quoted"']::name[]) AS svc \gset
SELECT gdprcrm.create_project('Long',
    ARRAY['regress_long_role_name_that_takes_all_of_the_sixty_three_bytes']::name[]) AS long \gset
SELECT gdprcrm.create_project('Nobody', ARRAY['REGRESS_TENANT']::name[]);
-- Predefined roles get members from PostgreSQL itself: not team members.
SELECT gdprcrm.create_project('Owners', ARRAY['pg_database_owner']::name[]);
SELECT gdprcrm.add_project_member(:upper, 'pg_read_all_data');

SET gdprcrm.purpose = 'tenancy_ops';
SET ROLE "Regress_Tenant";
SELECT gdprcrm.visible_projects() = ARRAY[:upper]::bigint[] AS upper_sees_only_upper;
SELECT gdprcrm.identify(:upper, 'u-1') AS upper_person \gset
SELECT gdprcrm.identify(:lower, 'u-2');
SET ROLE regress_tenant;
SELECT gdprcrm.visible_projects() = ARRAY[:lower]::bigint[] AS lower_sees_only_lower;
SELECT count(*) AS upper_people_seen_by_lower FROM gdprcrm.people WHERE project_id = :upper;
SELECT gdprcrm.identify(:lower, 'l-1') AS lower_person \gset
SET ROLE "regress svc.crm ""quoted""";
SELECT gdprcrm.visible_projects() = ARRAY[:svc]::bigint[] AS service_sees_only_service;
SELECT gdprcrm.identify(:svc, 's-1') IS NOT NULL AS service_identifies;
SET ROLE regress_long_role_name_that_takes_all_of_the_sixty_three_bytes;
SELECT gdprcrm.visible_projects() = ARRAY[:long]::bigint[] AS long_sees_only_long;
-- A member with an odd name breaks nobody else's reads.
SET ROLE regress_stranger;
SELECT gdprcrm.visible_projects() AS outsider_projects, count(*) AS outsider_people FROM gdprcrm.people;
RESET ROLE;

-- Membership through a group role counts; taking it away counts at once.
CREATE ROLE regress_group;
GRANT regress_group TO regress_stranger;
SELECT gdprcrm.add_project_member(:lower, 'regress_group');
SET ROLE regress_stranger;
SELECT gdprcrm.visible_projects() = ARRAY[:lower]::bigint[] AS group_member_sees_lower;
RESET ROLE;
REVOKE regress_group FROM regress_stranger;
SET ROLE regress_stranger;
SELECT gdprcrm.visible_projects() AS after_revoke;
RESET ROLE;
SELECT gdprcrm.remove_project_member(:lower, 'regress_group') AS removed;
DROP ROLE regress_group;

-- A dropped role's memberships go with it, and a new role of the same name
-- inherits nothing.
DROP ROLE "regress svc.crm ""quoted""";
SELECT count(*) AS memberships_left FROM gdprcrm.project_members WHERE project_id = :svc;
CREATE ROLE "regress svc.crm ""quoted""" IN ROLE gdprcrm_app;
SET ROLE "regress svc.crm ""quoted""";
SELECT gdprcrm.visible_projects() AS recreated_role_projects, count(*) AS recreated_role_people
FROM gdprcrm.people;
RESET ROLE;
-- A membership row kept where the role was dropped (another database, an
-- old dump) is bound to the old role and counts for nobody.
ALTER TABLE gdprcrm.project_members DISABLE TRIGGER bind_member;
INSERT INTO gdprcrm.project_members (project_id, member, member_oid)
VALUES (:svc, 'regress svc.crm "quoted"', 4000000000);
ALTER TABLE gdprcrm.project_members ENABLE TRIGGER bind_member;
SET ROLE "regress svc.crm ""quoted""";
SELECT gdprcrm.visible_projects() AS stale_binding_projects;
RESET ROLE;
-- Updating something else of the row does not bind it to the new role.
UPDATE gdprcrm.project_members SET added_at = added_at WHERE project_id = :svc;
SET ROLE "regress svc.crm ""quoted""";
SELECT gdprcrm.visible_projects() AS after_unrelated_update;
RESET ROLE;
-- Adding the name again binds it to the role that has it now.
SELECT gdprcrm.add_project_member(:svc, 'regress svc.crm "quoted"');
SET ROLE "regress svc.crm ""quoted""";
SELECT gdprcrm.visible_projects() = ARRAY[:svc]::bigint[] AS rebound;
RESET ROLE;

-- Ledgers and the consent view show an administrator its own projects only.
CREATE ROLE regress_upper_admin IN ROLE gdprcrm_admin;
CREATE ROLE regress_lower_admin IN ROLE gdprcrm_admin;
SELECT gdprcrm.add_project_member(:upper, 'regress_upper_admin');
SELECT gdprcrm.add_project_member(:lower, 'regress_lower_admin');
SET ROLE "Regress_Tenant";
SELECT gdprcrm.grant_consent(:upper_person, 'tenancy_news', 'form') > 0 AS upper_consent;
SELECT gdprcrm.restrict_processing(:upper_person, 'contested') > 0 AS upper_restricted;
SELECT gdprcrm.lift_restriction(:upper_person) > 0 AS upper_lifted;
SET ROLE regress_tenant;
SELECT gdprcrm.grant_consent(:lower_person, 'tenancy_news', 'form') > 0 AS lower_consent;
SET ROLE regress_lower_admin;
SELECT count(*) AS consents_seen, bool_and(project_id = :lower) AS all_own FROM gdprcrm.consents;
SELECT count(*) AS consent_events_seen, bool_and(project_id = :lower) AS all_own FROM gdprcrm.consent_events;
SELECT count(*) AS restriction_events_seen FROM gdprcrm.restriction_events;
SET ROLE regress_upper_admin;
SELECT count(*) AS consents_seen, bool_and(project_id = :upper) AS all_own FROM gdprcrm.consents;
SELECT count(*) AS restriction_events_seen, bool_and(project_id = :upper) AS all_own
FROM gdprcrm.restriction_events;
-- An application role reads no ledger directly.
SET ROLE regress_tenant;
SELECT count(*) FROM gdprcrm.consent_events;
RESET ROLE;

-- Person and company ids come from their sequences only.
SET ROLE regress_tenant;
INSERT INTO gdprcrm.people (id, project_id) VALUES (nextval('gdprcrm.people_id_seq') + 1, :lower);
INSERT INTO gdprcrm.companies (id, project_id, name) VALUES (1000000, :lower, 'Chosen');
INSERT INTO gdprcrm.people (project_id, external_id) VALUES (:lower, 'direct-insert');
INSERT INTO gdprcrm.companies (project_id, name) VALUES (:lower, 'Sequenced');
UPDATE gdprcrm.companies SET id = id + 1000000 WHERE name = 'Sequenced';
UPDATE gdprcrm.companies SET domain = 'sequenced.test' WHERE name = 'Sequenced';
SELECT count(*) AS direct_inserts FROM gdprcrm.people WHERE external_id = 'direct-insert';
RESET ROLE;

-- Recording data needs no purpose, and returns nothing of a hidden row.
SET ROLE regress_tenant;
RESET gdprcrm.purpose;
SELECT gdprcrm.add_message(:lower, :lower_person, 'inbound', 'email', 'Hello', 'A question')
       IS NOT NULL AS message_without_purpose;
SELECT gdprcrm.add_enrichment(:lower, :lower_person, 'public_profile', 'city', '"Lyon"')
       IS NOT NULL AS enrichment_without_purpose;
SELECT gdprcrm.track(:lower, :lower_person, 'login', '{}', '2026-06-01 12:00+00');
SELECT gdprcrm.track_page_view(:lower, :lower_person, 'https://lower.test/a', NULL, NULL, '{}',
                               '2026-06-01 13:00+00');
SELECT count(*) AS messages_seen_without_purpose FROM gdprcrm.messages;
-- The same while the subject is hidden by the declared purpose.
SET gdprcrm.purpose = 'tenancy_news';
SELECT gdprcrm.withdraw_consent(:lower_person, 'tenancy_news') > 0 AS withdrawn;
SELECT gdprcrm.add_message(:lower, :lower_person, 'outbound', 'email', 'Bye', 'Goodbye')
       IS NOT NULL AS message_for_hidden_subject;
SELECT count(*) AS messages_seen_while_hidden FROM gdprcrm.messages;
-- Another project's person is still refused.
SELECT gdprcrm.add_message(:upper, :upper_person, 'inbound', 'email', 'x', 'y');
SELECT gdprcrm.track(:upper, :upper_person, 'login');
RESET ROLE;
SELECT last_seen_at = '2026-06-01 13:00+00' AS last_seen_moved,
       (SELECT count(*) FROM gdprcrm.messages WHERE person_id = :lower_person) AS lower_messages
FROM gdprcrm.people WHERE id = :lower_person;

-- Values are encrypted and decrypted only for people of one's projects,
-- with one answer for every other subject: another project's person, an
-- erased one, an unknown id.  No key is created for them.
SELECT gdprcrm.identify(:upper, 'u-erased') AS erased_person \gset
SELECT gdprcrm.shred_subject_key(:erased_person);
SELECT gdprcrm.encrypt(:upper_person, 'CANARY-upper', 'crm.people.name') AS upper_value,
       gdprcrm.encrypt(:lower_person, 'CANARY-lower', 'crm.people.name') AS lower_value \gset
CREATE FUNCTION pg_temp.answer(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
SET ROLE regress_tenant;
SET gdprcrm.purpose = 'tenancy_ops';
SELECT gdprcrm.decrypt(:'lower_value'::gdprcrm.encrypted_text, 'crm.people.name') = 'CANARY-lower' AS own_decrypts;
SELECT pg_temp.answer(format('SELECT gdprcrm.decrypt(%L::gdprcrm.encrypted_text, %L)', :'upper_value', 'crm.people.name'))
       AS other_project;
SELECT pg_temp.answer(format('SELECT gdprcrm.encrypt(%s, %L, %L)', :erased_person, 'x', 'crm.people.name'))
       AS erased_subject;
SELECT pg_temp.answer(format('SELECT gdprcrm.encrypt(%s, %L, %L)', 987654321, 'x', 'crm.people.name'))
       AS unknown_subject;
SELECT pg_temp.answer(format('SELECT gdprcrm.encrypt(%s, %L, %L)', :upper_person, 'x', 'crm.people.name'))
       AS other_project_encrypt;
RESET ROLE;
SELECT count(*) AS keys_of_unknown_subject FROM gdprcrm.subject_keys WHERE subject = 987654321;

-- No argument sizes an allocation: a huge subject id builds no bitmap, and
-- the key cache size is not an application's to choose.
SET gdprcrm.purpose = 'tenancy_ops';
SELECT gdprcrm.lawful(268435455) AS huge_id_lawful, gdprcrm.lawful(:lower_person) AS person_lawful;
SELECT sum(total_bytes) < 4 * 1024 * 1024 AS state_memory_small
FROM pg_backend_memory_contexts WHERE name = 'gdprcrm subject states';
SET ROLE regress_tenant;
SET gdprcrm.key_cache_size = 16000000;
RESET ROLE;
-- Nor do far-apart subject ids: a tenant that draws the sequence far ahead
-- and gives one person there a state makes no backend build a bitmap up
-- to that id.
SELECT setval('gdprcrm.people_id_seq', 268435000) IS NOT NULL AS sequence_far_ahead;
SET ROLE regress_tenant;
SELECT gdprcrm.identify(:lower, 'far-away') AS far_person \gset
SELECT gdprcrm.object(:far_person, 'tenancy_news') > 0 AS far_objection;
RESET ROLE;
\c
SET gdprcrm.purpose = 'tenancy_news';
SELECT count(*) FILTER (WHERE gdprcrm.lawful(id)) AS news_lawful, count(*) > 0 AS some_people FROM gdprcrm.people;
SET gdprcrm.purpose = 'tenancy_ops';
SELECT gdprcrm.lawful(:far_person) AS far_lawful_for_ops, gdprcrm.lawful(:far_person - 1) AS neighbour_lawful;
SELECT sum(total_bytes) < 4 * 1024 * 1024 AS state_memory_small_with_far_ids
FROM pg_backend_memory_contexts WHERE name = 'gdprcrm subject states';
SELECT setval('gdprcrm.people_id_seq', 400000) IS NOT NULL AS sequence_back;

-- Code that maintenance runs as a table's owner (index expressions during
-- ANALYZE, VACUUM, REINDEX...) cannot act through gdprcrm for the session
-- that runs the maintenance, often a superuser or autovacuum.
CREATE SCHEMA regress_tenant_schema AUTHORIZATION regress_upper_admin;
SET ROLE regress_upper_admin;
CREATE FUNCTION regress_tenant_schema.join_lower(x int) RETURNS int
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF current_setting('regress.armed', true) = 'on' THEN
        PERFORM gdprcrm.add_project_member(current_setting('regress.lower')::bigint, 'regress_upper_admin');
    END IF;
    RETURN x;
END $$;
CREATE TABLE regress_tenant_schema.bait (x int);
INSERT INTO regress_tenant_schema.bait VALUES (1);
RESET ROLE;
SELECT set_config('regress.lower', :'lower', false) IS NOT NULL AS lower_known;
SET ROLE regress_upper_admin;
CREATE INDEX ON regress_tenant_schema.bait (regress_tenant_schema.join_lower(x));
RESET ROLE;
SET regress.armed = 'on';
ANALYZE regress_tenant_schema.bait;
REINDEX TABLE regress_tenant_schema.bait;
RESET regress.armed;
SELECT count(*) AS admin_joined_lower FROM gdprcrm.project_members
WHERE project_id = :lower AND member = 'regress_upper_admin';
DROP SCHEMA regress_tenant_schema CASCADE;

-- The foreign key checks of events, messages and links look a person up
-- by its key, whatever plan a session made while the table was small:
-- no index that merely leads with the project serves them.
SET plan_cache_mode = force_generic_plan;
PREPARE person_key_check(bigint, bigint) AS
    SELECT 1 FROM ONLY gdprcrm.people x WHERE project_id = $1 AND id = $2 FOR KEY SHARE OF x;
PREPARE company_key_check(bigint, bigint) AS
    SELECT 1 FROM ONLY gdprcrm.companies x WHERE project_id = $1 AND id = $2 FOR KEY SHARE OF x;
CREATE FUNCTION pg_temp.plan_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    line text;
    plan text := '';
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || statement LOOP
        plan := plan || line || ' ';
    END LOOP;
    RETURN plan;
END $$;
SELECT pg_temp.plan_of('EXECUTE person_key_check(1, 1)') ~ 'people_activity' AS person_check_scans_activity,
       pg_temp.plan_of('EXECUTE company_key_check(1, 1)') ~ 'companies_domain' AS company_check_scans_domain;
DEALLOCATE person_key_check;
DEALLOCATE company_key_check;
RESET plan_cache_mode;
-- The invariant behind it: every index of people and companies that leads
-- with project_id is unique or partial.
SELECT i.indexrelid::regclass AS index_a_key_check_could_scan
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid IN ('gdprcrm.people'::regclass, 'gdprcrm.companies'::regclass)
  AND a.attname = 'project_id' AND NOT i.indisunique AND i.indpred IS NULL;

-- Clean up the roles; their memberships go with them.
DROP ROLE "Regress_Tenant", regress_tenant, "regress svc.crm ""quoted""",
    regress_long_role_name_that_takes_all_of_the_sixty_three_bytes, regress_stranger,
    regress_upper_admin, regress_lower_admin;
SELECT count(*) AS memberships_of_dropped_roles FROM gdprcrm.project_members
WHERE project_id IN (:upper, :lower, :svc, :long);
RESET gdprcrm.purpose;
