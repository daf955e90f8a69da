-- The CRM data model: identify, track, merge, lookups, restricted data,
-- team isolation and stale review.

-- PL/pgSQL line numbers are not part of the contract.
\set SHOW_CONTEXT never

-- Subject ids below 100000 were used by earlier tests.
SELECT setval('gdprcrm.people_id_seq', 100000) IS NOT NULL AS fresh_ids;
SELECT gdprcrm.create_event_partitions('2026-01-01', '2027-01-01') AS partitions;
-- Every role here works for one purpose; consent.sql covers the filter.
SELECT gdprcrm.define_purpose('crm_operations', 'contract', 'Operating the customer relationship');
SET gdprcrm.purpose = 'crm_operations';
SELECT gdprcrm.create_event_partitions('2026-06-01', '2026-08-01') AS already_there;
SELECT gdprcrm.create_event_partitions('2026-06-01', '2026-01-01');

CREATE ROLE regress_alice IN ROLE gdprcrm_app;
CREATE ROLE regress_bob IN ROLE gdprcrm_app;
CREATE ROLE regress_carol IN ROLE gdprcrm_admin;
CREATE ROLE regress_dave IN ROLE gdprcrm_analyst;
CREATE ROLE regress_outsider;
SELECT gdprcrm.create_project('Acme', ARRAY['regress_alice', 'regress_carol', 'regress_dave']::name[]) AS acme \gset
SELECT gdprcrm.create_project('Globex', ARRAY['regress_bob']::name[]) AS globex \gset
SELECT gdprcrm.create_project('Nobody', ARRAY['no_such_role']::name[]);
SELECT gdprcrm.create_project(' ');

SET ROLE regress_alice;

-- identify is idempotent: the same identifiers give the same person.
SELECT gdprcrm.identify(:acme, 'user-1', 'Ada@Example.org', '{"plan": "pro"}') AS ada \gset
SELECT gdprcrm.identify(:acme, 'user-1', 'Ada@Example.org', '{"plan": "pro"}') = :ada AS same_person,
       gdprcrm.identify(:acme, 'user-1') = :ada AS by_external_id,
       gdprcrm.identify(:acme, NULL, '  ada@EXAMPLE.org ') = :ada AS by_normalised_email;
SELECT count(*) AS people FROM gdprcrm.people;
SELECT gdprcrm.identify(:acme);

-- Traits merge; updated_at moves with the profile only.
SELECT gdprcrm.identify(:acme, 'user-1', NULL, '{"seats": 5}') = :ada AS same;
SELECT traits FROM gdprcrm.people WHERE id = :ada;

-- An anonymous visitor browses, then identifies: the history moves.
SELECT gdprcrm.identify(:acme, 'visitor-9') AS visitor \gset
SELECT status FROM gdprcrm.people WHERE id = :visitor;
SELECT gdprcrm.track_page_view(:acme, :visitor, 'https://acme.test/pricing?ref=ad#plans', 'Pricing',
                               'https://search.test/', '{}', '2026-03-01 10:00+00');
SELECT gdprcrm.track(:acme, :visitor, 'trial_started', '{"plan": "team"}', '2026-03-01 10:05+00');
SELECT gdprcrm.add_message(:acme, :visitor, 'inbound', 'chat', 'Question', 'Do you offer SSO?') IS NOT NULL AS message;
SELECT gdprcrm.identify(:acme, 'visitor-9', 'grace@example.net') AS grace \gset
SELECT :grace = :visitor AS visitor_became_grace;
-- Now the visitor's id was only a cookie and Grace signs up with another id:
SELECT gdprcrm.identify(:acme, 'cookie-77') AS cookie \gset
SELECT gdprcrm.track(:acme, :cookie, 'pricing_viewed', '{}', '2026-03-02 09:00+00');
SELECT gdprcrm.add_message(:acme, :cookie, 'outbound', 'email', 'Welcome', 'Hello there') IS NOT NULL AS message;
SELECT gdprcrm.identify(:acme, 'cookie-77', 'grace@example.net') = :grace AS merged_into_grace;
-- The merged visitor's key is destroyed, so only a superuser still sees it.
SELECT count(*) AS merged_visible_to_app FROM gdprcrm.people WHERE id = :cookie;
RESET ROLE;
SELECT status, merged_into = :grace AS into_grace, email IS NULL AS no_email
FROM gdprcrm.people WHERE id = :cookie;
SET ROLE regress_alice;
SELECT person_id = :grace AS grace_owns, name, path FROM gdprcrm.events ORDER BY occurred_at;
SELECT gdprcrm.decrypt(subject, 'crm.messages.subject', person_id) AS subject,
       gdprcrm.decrypt(body, 'crm.messages.body', person_id) AS body
FROM gdprcrm.messages WHERE person_id = :grace ORDER BY id;
SELECT gdprcrm.identify(:acme, 'cookie-77') = :grace AS cookie_resolves_to_grace;
-- Two identified people are never merged silently.
SELECT gdprcrm.identify(:acme, 'user-1', 'grace@example.net');

-- last_seen_at follows events, to the minute.
SELECT last_seen_at AS grace_last_seen FROM gdprcrm.people WHERE id = :grace;

-- Lookup by email uses the blind index.
EXPLAIN (COSTS OFF)
SELECT id FROM gdprcrm.people
WHERE project_id = 1 AND email_bidx = gdprcrm.blind_index(gdprcrm.normalize_email('ada@example.org'), 'email');

-- Enrichments keep their provenance.
SELECT gdprcrm.add_enrichment(:acme, :ada, 'public_profile', 'twitter', '{"handle": "@ada", "followers": 1815}',
                              '2026-03-05 12:00+00') IS NOT NULL AS enriched;
SELECT source, field, value, fetched_at FROM gdprcrm.enrichments;

-- Restricted data is refused wherever it hides, naming the path only.
SELECT gdprcrm.track(:acme, :ada, 'checkout', '{"order": {"items": [{"sku": "A"}, {"payment": {"card": "4111-1111-1111-1111"}}]}}');
SELECT gdprcrm.track(:acme, :ada, 'checkout', '{"cc": 4012888888881881}');
SELECT gdprcrm.track(:acme, :ada, 'checkout', '{"weird key": ["x", "5555 5555 5555 4444"]}');
SELECT gdprcrm.identify(:acme, 'user-1', NULL, '{"profile": {"healthStatus": "fine"}}');
SELECT gdprcrm.add_enrichment(:acme, :ada, 'scraper', 'bio', '{"Religion": "x"}');
SELECT gdprcrm.add_enrichment(:acme, :ada, 'scraper', 'bio', '{"sexual_orientation": "x"}');
UPDATE gdprcrm.people SET traits = '{"medical_notes": "x"}' WHERE id = :ada;
-- Look-alikes pass: timestamps, short or Luhn-invalid numbers, "healthy".
SELECT gdprcrm.track(:acme, :ada, 'ok', '{"ts": 1767225600000, "phone": "+44 20 7946 0958", "order": "4111111111111112", "healthy": true, "preferences": {"theme": "dark"}}');
SELECT count(*) AS ada_events FROM gdprcrm.events WHERE person_id = :ada;

-- Page views need a url; events need a name.
SELECT gdprcrm.track_page_view(:acme, :ada, '');
SELECT gdprcrm.track(:acme, :ada, '');

-- A person of another project cannot be written to from this one.
RESET ROLE;
SET ROLE regress_bob;
SELECT gdprcrm.identify(:globex, 'bob-user', 'bob@globex.test') AS bob_person \gset
RESET ROLE;
SET ROLE regress_alice;
SELECT gdprcrm.track(:acme, :bob_person, 'cross_project');

-- Stale review: nobody was active "in the future".
SELECT count(*) AS stale_now FROM gdprcrm.stale_people(:acme, interval '0 seconds');
SELECT count(*) AS stale_for_a_year FROM gdprcrm.stale_people(:acme, interval '1 year');
RESET ROLE;

-- The special-category list is configurable by superusers only.
SET ROLE regress_alice;
SET gdprcrm.special_category_keys = '';
RESET ROLE;
SET gdprcrm.special_category_keys = 'salary';
SET ROLE regress_alice;
SELECT gdprcrm.track(:acme, :ada, 'x', '{"health": "now allowed", "grossSalary": 1}');
RESET ROLE;
RESET gdprcrm.special_category_keys;

-- Team isolation: Bob (Globex) sees nothing of Acme, through any table or
-- function, and cannot write into it.
SET ROLE regress_bob;
SELECT (SELECT count(*) FROM gdprcrm.projects) AS projects,
       (SELECT count(*) FROM gdprcrm.people) AS people,
       (SELECT count(*) FROM gdprcrm.events) AS events,
       (SELECT count(*) FROM gdprcrm.messages) AS messages,
       (SELECT count(*) FROM gdprcrm.enrichments) AS enrichments,
       (SELECT count(*) FROM gdprcrm.project_members) AS memberships;
SELECT count(*) AS acme_people_seen FROM gdprcrm.people WHERE project_id = 1;
SELECT * FROM gdprcrm.stale_people(1, interval '0 seconds');
SELECT gdprcrm.identify(1, 'user-1');
SELECT gdprcrm.track(1, 100001, 'intrusion');
INSERT INTO gdprcrm.people (project_id, external_id) VALUES (1, 'planted');
UPDATE gdprcrm.people SET traits = '{"x": 1}' WHERE project_id = 1;
SELECT gdprcrm.add_project_member(1, 'regress_bob');
-- Partitions and key tables are out of reach.
SELECT count(*) FROM gdprcrm.events_default;
SELECT count(*) FROM gdprcrm.subject_keys;
RESET ROLE;

-- A security_invoker view keeps the filter for whoever queries it.
CREATE VIEW crm_overview WITH (security_invoker = true) AS
    SELECT p.project_id, count(*) AS people FROM gdprcrm.people p GROUP BY p.project_id;
GRANT SELECT ON crm_overview TO regress_bob, regress_alice;
SET ROLE regress_bob;
SELECT * FROM crm_overview;
SET ROLE regress_alice;
SELECT * FROM crm_overview;
RESET ROLE;
DROP VIEW crm_overview;

-- A role outside every gdprcrm role has no privilege at all.
SET ROLE regress_outsider;
SELECT count(*) FROM gdprcrm.people;
SELECT gdprcrm.identify(1, 'x');
RESET ROLE;

-- Analysts read events and companies of their projects, not people.
SET ROLE regress_dave;
SELECT count(*) > 0 AS analyst_sees_events FROM gdprcrm.events;
SELECT count(*) FROM gdprcrm.people;
SELECT count(*) FROM gdprcrm.messages;
RESET ROLE;

-- Administrators manage their own projects' teams only.
SET ROLE regress_carol;
SELECT gdprcrm.add_project_member(:acme, 'regress_bob');
SELECT gdprcrm.add_project_member(:globex, 'regress_carol');
SELECT gdprcrm.add_project_member(:acme, 'no_such_role');
SELECT gdprcrm.remove_project_member(:acme, 'regress_bob') AS removed;
SELECT gdprcrm.create_project('Initech') AS initech \gset
SELECT member FROM gdprcrm.project_members WHERE project_id = :initech;
RESET ROLE;
SET ROLE regress_alice;
SELECT gdprcrm.create_project('Sneaky');
RESET ROLE;

-- Every CRM table is kept by pg_dump.
SELECT c.relname
FROM pg_extension e, unnest(e.extconfig) AS cfg(oid)
JOIN pg_class c ON c.oid = cfg.oid
WHERE e.extname = 'gdprcrm'
ORDER BY 1;
