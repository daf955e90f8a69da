-- Purposes, the consent ledger and the purpose-checking row filter.

\set SHOW_CONTEXT never

-- People of this test start at 200000 (earlier tests used lower ids).
SELECT setval('gdprcrm.people_id_seq', 200000) IS NOT NULL AS fresh_ids;
SELECT gdprcrm.define_purpose('marketing', 'consent', 'Newsletters and offers', interval '2 years');
SELECT gdprcrm.define_purpose('support', 'contract', 'Answering customer requests');
SELECT gdprcrm.define_purpose('analytics', 'legitimate_interests', 'Product analytics');
SELECT gdprcrm.define_purpose('legal_claims', 'legal_obligation', 'Establishing and defending legal claims',
                              NULL, false, true);
SELECT gdprcrm.define_purpose('Bad Name', 'consent', 'x');
SELECT gdprcrm.define_purpose('telepathy', 'hunch', 'x');
SELECT gdprcrm.define_purpose('quiet', 'consent', '');
SELECT name, bit, lawful_basis, retention, special_category, allowed_when_restricted
FROM gdprcrm.purposes ORDER BY bit;
-- Redefining keeps the bit.
SELECT gdprcrm.define_purpose('analytics', 'legitimate_interests', 'Product analytics, aggregated');
SELECT bit, description FROM gdprcrm.purposes WHERE name = 'analytics';

CREATE ROLE regress_eve IN ROLE gdprcrm_app;
CREATE ROLE regress_mallory IN ROLE gdprcrm_app;
SELECT gdprcrm.create_project('Consent Co', ARRAY['regress_eve']::name[]) AS proj \gset
SELECT gdprcrm.create_project('Other Co', ARRAY['regress_mallory']::name[]) AS other \gset

SET ROLE regress_eve;
SELECT count(gdprcrm.identify(:proj, 'c' || i, 'c' || i || '@consent.test')) AS people
FROM generate_series(1, 6) AS i;
RESET ROLE;
SELECT min(id) AS p1 FROM gdprcrm.people WHERE project_id = :proj \gset
SELECT :p1 + 1 AS p2, :p1 + 2 AS p3, :p1 + 3 AS p4, :p1 + 4 AS p5, :p1 + 5 AS p6 \gset
SELECT set_config('regress.p5', :'p5', false) IS NOT NULL AS p5_known;

-- No purpose declared: no personal rows at all, and a way to see why.
SET ROLE regress_eve;
SELECT count(*) AS people, (SELECT count(*) FROM gdprcrm.events) AS events FROM gdprcrm.people;
SELECT gdprcrm.explain_access(:p1);
-- An undefined purpose shows nothing either.
SET gdprcrm.purpose = 'astrology';
SELECT count(*) AS astrology FROM gdprcrm.people;
SELECT gdprcrm.set_purpose('astrology');

-- Consent-based: only subjects who consented and did not withdraw.
SET gdprcrm.purpose = 'marketing';
SELECT count(*) AS before_consent FROM gdprcrm.people;
SELECT gdprcrm.grant_consent(:p1, 'marketing', 'signup form', 'checkbox', 'privacy-v3',
                             'Send me product news', '{"ip_prefix": "192.0.2.0/24"}') > 0 AS granted;
SELECT gdprcrm.grant_consent(:p2, 'marketing', 'signup form', 'checkbox', 'privacy-v3', 'Send me product news') > 0 AS granted;
SELECT id - :p1 AS person FROM gdprcrm.people ORDER BY id;
SELECT gdprcrm.withdraw_consent(:p2, 'marketing', 'unsubscribe link') > 0 AS withdrawn;
SELECT id - :p1 AS person FROM gdprcrm.people ORDER BY id;
SELECT gdprcrm.grant_consent(:p2, 'nonsense');
SELECT gdprcrm.grant_consent(:p2, 'marketing', captured_at => now() + interval '1 day');

-- Contract: everyone, unless restricted; objections do not apply.
SET gdprcrm.purpose = 'support';
SELECT gdprcrm.restrict_processing(:p3, 'accuracy contested') > 0 AS restricted;
SELECT gdprcrm.object(:p4, 'support') > 0 AS objected;
SELECT id - :p1 AS person FROM gdprcrm.people ORDER BY id;
-- Allowed under restriction: legal claims still see the restricted person.
SET gdprcrm.purpose = 'legal_claims';
SELECT count(*) AS legal_claims FROM gdprcrm.people;
-- Legitimate interests: everyone but objectors and the restricted.
SET gdprcrm.purpose = 'analytics';
SELECT gdprcrm.object(:p5, 'analytics') > 0 AS objected;
SELECT id - :p1 AS person FROM gdprcrm.people ORDER BY id;
SELECT gdprcrm.withdraw_objection(:p5, 'analytics') > 0 AS objection_withdrawn;
SELECT gdprcrm.lift_restriction(:p3, 'accuracy confirmed') > 0 AS lifted;
SELECT id - :p1 AS person FROM gdprcrm.people ORDER BY id;

-- Why each person is visible or not.
SELECT id - :p1 AS person, gdprcrm.explain_access(id, 'marketing') AS marketing
FROM generate_series(:p1, :p6) AS id ORDER BY id;
SELECT gdprcrm.may_process(:p1, 'marketing') AS p1_marketing, gdprcrm.may_process(:p2, 'marketing') AS p2_marketing;

-- Events, messages and enrichments follow their person.
SET gdprcrm.purpose = 'support';
SELECT gdprcrm.track(:proj, id, 'login', '{}', '2026-06-01') FROM generate_series(:p1, :p6) AS id;
SELECT gdprcrm.add_message(:proj, :p1, 'inbound', 'email', 'Hi', 'Help') IS NOT NULL AS message;
SELECT gdprcrm.add_message(:proj, :p2, 'inbound', 'email', 'Hi', 'Help') IS NOT NULL AS message;
SET gdprcrm.purpose = 'marketing';
SELECT (SELECT count(*) FROM gdprcrm.events) AS events, (SELECT count(*) FROM gdprcrm.messages) AS messages;

-- SET LOCAL lasts one transaction, as behind a transaction pooler: the
-- next request on the same connection sees nothing.
RESET gdprcrm.purpose;
BEGIN;
SELECT gdprcrm.set_purpose('support');
SELECT count(*) AS inside_request FROM gdprcrm.people;
COMMIT;
SELECT count(*) AS next_request FROM gdprcrm.people;
BEGIN;
SET LOCAL gdprcrm.purpose = 'marketing';
SELECT count(*) AS inside_request FROM gdprcrm.people;
ROLLBACK;
SELECT count(*) AS after_rollback, current_setting('gdprcrm.purpose') = '' AS purpose_cleared FROM gdprcrm.people;

-- A leaky function in WHERE sees no hidden row: the filter runs first
-- (one notice for the one visible row).
RESET ROLE;
CREATE FUNCTION leak(bigint) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN RAISE NOTICE 'leak saw a row'; RETURN true; END $$;
GRANT EXECUTE ON FUNCTION leak(bigint) TO regress_eve;
SET ROLE regress_eve;
SET gdprcrm.purpose = 'marketing';
SELECT count(*) FROM gdprcrm.people WHERE leak(id);
-- Errors reveal nothing about hidden rows.
SELECT 1 / (id - :p2) FROM gdprcrm.people;
SELECT count(*) FROM gdprcrm.people WHERE id = :p2;
-- Writes to a hidden person's row change nothing.
UPDATE gdprcrm.people SET traits = '{"touched": true}' WHERE id = :p2;
SELECT count(*) AS untouched FROM gdprcrm.people WHERE traits ? 'touched';
RESET ROLE;
SELECT count(*) AS really_untouched FROM gdprcrm.people WHERE traits ? 'touched';

-- Views and SQL functions do not bypass the filter for application roles.
CREATE VIEW visible_people WITH (security_invoker = true) AS SELECT id FROM gdprcrm.people;
CREATE FUNCTION count_people() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM gdprcrm.people';
GRANT SELECT ON visible_people TO regress_eve;
GRANT EXECUTE ON FUNCTION count_people() TO regress_eve;
SET ROLE regress_eve;
SET gdprcrm.purpose = 'marketing';
SELECT (SELECT count(*) FROM visible_people) AS through_view, count_people() AS through_function;
RESET gdprcrm.purpose;
SELECT (SELECT count(*) FROM visible_people) AS through_view, count_people() AS through_function;
RESET ROLE;

-- The filter holds for the table owner too (FORCE ROW LEVEL SECURITY) on
-- an application's own protected table.
CREATE ROLE regress_owner IN ROLE gdprcrm_app;
GRANT CREATE ON SCHEMA public TO regress_owner;
SET ROLE regress_owner;
CREATE TABLE orders (id int PRIMARY KEY, customer bigint NOT NULL, total numeric);
RESET ROLE;
SELECT gdprcrm.protect('orders', 'customer');
SELECT gdprcrm.protect('orders', 'nope');
SELECT gdprcrm.protect('orders', 'total');
SET ROLE regress_owner;
INSERT INTO orders SELECT i, :p1 + i % 2, 10 * i FROM generate_series(1, 10) AS i;
SET gdprcrm.purpose = 'marketing';
SELECT count(*) AS owner_sees_marketing FROM orders;
SET gdprcrm.purpose = 'support';
SELECT count(*) AS owner_sees_support FROM orders;
RESET gdprcrm.purpose;
SELECT count(*) AS owner_sees_without_purpose FROM orders;
RESET ROLE;
DROP TABLE orders;
REVOKE CREATE ON SCHEMA public FROM regress_owner;

-- Another project's role cannot record consent for these people.
SET ROLE regress_mallory;
SELECT gdprcrm.grant_consent(:p1, 'marketing');
SELECT gdprcrm.explain_access(:p1, 'marketing');
RESET ROLE;

-- The ledger is append-only; the state row follows it.
UPDATE gdprcrm.consent_events SET action = 'grant';
DELETE FROM gdprcrm.consent_events;
TRUNCATE gdprcrm.restriction_events;
SELECT subject - :p1 AS person, purpose, action, source, method, notice_version,
       wording_hash = sha256(convert_to('Send me product news', 'UTF8')) AS wording_hashed,
       evidence, recorded_by
FROM gdprcrm.consent_events ORDER BY id;
SELECT subject - :p1 AS person, purpose, granted FROM gdprcrm.consents ORDER BY subject, purpose;
SELECT subject - :p1 AS person, action, reason FROM gdprcrm.restriction_events ORDER BY id;

-- Erasing a subject hides its rows for every purpose, and then allows its
-- ledger rows to go.
SET ROLE regress_eve;
SELECT gdprcrm.grant_consent(:p6, 'marketing') > 0 AS granted_before_erasure;
SET gdprcrm.purpose = 'support';
SELECT count(*) AS before_erasure FROM gdprcrm.people;
-- Erasure is not an application's call to make.
SELECT gdprcrm.shred_subject_key(:p6);
RESET ROLE;
SELECT gdprcrm.shred_subject_key(:p6);
SET ROLE regress_eve;
SET gdprcrm.purpose = 'support';
SELECT count(*) AS after_erasure FROM gdprcrm.people;
SELECT gdprcrm.grant_consent(:p6, 'marketing');
RESET ROLE;
SELECT gdprcrm.grant_consent(:p1, 'marketing', 'again') > 0 AS regranted;
DELETE FROM gdprcrm.consent_events WHERE subject = :p1;
DELETE FROM gdprcrm.consent_events WHERE subject = :p6;
SELECT count(*) AS ledger_rows_of_erased FROM gdprcrm.consent_events WHERE subject = :p6;

-- Nothing more is recorded about an erased subject, restrictions included,
-- and the erasure itself cannot be undone, not even by the tables' owner.
SET ROLE regress_eve;
SELECT gdprcrm.restrict_processing(:p6, 'after erasure');
SELECT gdprcrm.lift_restriction(:p6);
RESET ROLE;
SELECT count(*) AS restrictions_of_erased FROM gdprcrm.restriction_events WHERE subject = :p6;
UPDATE gdprcrm.subject_state SET erased_at = NULL WHERE subject = :p6;
UPDATE gdprcrm.subject_state SET erased_at = erased_at - interval '1 day' WHERE subject = :p6;
UPDATE gdprcrm.subject_state SET subject = subject + 1000 WHERE subject = :p6;
DELETE FROM gdprcrm.subject_state WHERE subject = :p6;
TRUNCATE gdprcrm.subject_state;
-- Other changes of state rows still work (the trigger fires only on erased rows).
UPDATE gdprcrm.subject_state SET updated_at = updated_at WHERE subject = :p1;
SELECT count(*) AS erased_rows FROM gdprcrm.subject_state WHERE erased_at IS NOT NULL;
-- Subject ids are positive; 0 stands for the purposes.
SELECT gdprcrm.shred_subject_key(0);
SELECT gdprcrm.shred_subject_key(-1);

-- Consent is recorded only for existing people, never for id 0 or for ids
-- not yet created (which would pre-consent whoever gets them).
SET ROLE regress_eve;
SELECT gdprcrm.grant_consent(0, 'marketing');
SELECT gdprcrm.grant_consent(:p6 + 1000, 'marketing');
SELECT gdprcrm.restrict_processing(-5, 'x');

-- A transaction sees its own consent changes at once, and a rolled-back
-- change leaves nothing behind.
SET gdprcrm.purpose = 'marketing';
BEGIN;
SELECT gdprcrm.grant_consent(:p3, 'marketing') > 0 AS granted_in_transaction;
SELECT count(*) AS own_write_visible FROM gdprcrm.people WHERE id = :p3;
ROLLBACK;
SELECT count(*) AS after_rollback FROM gdprcrm.people WHERE id = :p3;

-- A second change of the same subject in a transaction counts too.
BEGIN;
SELECT gdprcrm.grant_consent(:p3, 'marketing') > 0 AS granted_first;
SELECT count(*) AS visible_after_grant FROM gdprcrm.people WHERE id = :p3;
SELECT gdprcrm.withdraw_consent(:p3, 'marketing') > 0 AS withdrawn_second;
SELECT count(*) AS hidden_after_withdrawal FROM gdprcrm.people WHERE id = :p3;
ROLLBACK;

-- A change rolled back to a savepoint counts no more than one rolled back
-- whole, for the rest of the transaction.
BEGIN;
SAVEPOINT a;
SELECT gdprcrm.grant_consent(:p3, 'marketing') > 0 AS granted_in_savepoint;
SELECT count(*) AS visible_in_savepoint FROM gdprcrm.people WHERE id = :p3;
ROLLBACK TO a;
SELECT count(*) AS after_rollback_to_savepoint FROM gdprcrm.people WHERE id = :p3;
SELECT gdprcrm.may_process(:p3, 'marketing') AS may_process_after_rollback_to_savepoint;
-- A change made before the savepoint survives its rollback.
SELECT gdprcrm.grant_consent(:p4, 'marketing') > 0 AS granted_before_savepoint;
SAVEPOINT b;
SELECT gdprcrm.withdraw_consent(:p4, 'marketing') > 0 AS withdrawn_in_savepoint;
SELECT count(*) AS hidden_in_savepoint FROM gdprcrm.people WHERE id = :p4;
ROLLBACK TO b;
SELECT count(*) AS granted_survives FROM gdprcrm.people WHERE id = :p4;
ROLLBACK;
-- The same through a PL/pgSQL exception block: a lifted restriction that
-- the block undoes keeps the subject hidden.
SET gdprcrm.purpose = 'support';
RESET ROLE;
SELECT gdprcrm.restrict_processing(:p5, 'accuracy contested') > 0 AS restricted;
SET ROLE regress_eve;
SET gdprcrm.purpose = 'support';
DO $$
DECLARE
    v_seen bigint;
BEGIN
    BEGIN
        PERFORM gdprcrm.lift_restriction(current_setting('regress.p5')::bigint, 'by mistake');
        SELECT count(*) INTO v_seen FROM gdprcrm.people WHERE id = current_setting('regress.p5')::bigint;
        RAISE NOTICE 'visible inside the block: %', v_seen;
        RAISE EXCEPTION 'undo';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    SELECT count(*) INTO v_seen FROM gdprcrm.people WHERE id = current_setting('regress.p5')::bigint;
    RAISE NOTICE 'visible after the block: %', v_seen;
END $$;
SELECT count(*) AS restricted_stays_hidden FROM gdprcrm.people WHERE id = :p5;
RESET ROLE;
SELECT gdprcrm.lift_restriction(:p5, 'accuracy confirmed') > 0 AS lifted;
SET ROLE regress_eve;
SET gdprcrm.purpose = 'marketing';

-- Rows cannot be moved to another person by an application.
SET gdprcrm.purpose = 'support';
UPDATE gdprcrm.events SET person_id = :p2 WHERE person_id = :p1;
UPDATE gdprcrm.people SET id = id + 100 WHERE id = :p1;
UPDATE gdprcrm.people SET traits = '{"tier": "gold"}' WHERE id = :p1;
SELECT traits FROM gdprcrm.people WHERE id = :p1;
SELECT count(*) AS identities_visible FROM gdprcrm.person_identities;
INSERT INTO gdprcrm.person_identities VALUES (:proj, 'email', '\x00', :p1);
-- merge_people is identify()'s tool, not an application's.
SELECT gdprcrm.merge_people(:proj, :p2, :p1);
RESET ROLE;

-- A card number used as a key is refused without being echoed.
SELECT gdprcrm.check_unrestricted('{"cards": {"4111 1111 1111 1111": true}}', 'test document');

-- The lawful basis of an existing purpose is changed only by a superuser.
CREATE ROLE regress_admin IN ROLE gdprcrm_admin;
SET ROLE regress_admin;
SELECT gdprcrm.define_purpose('marketing', 'legitimate_interests', 'Newsletters and offers');
SELECT gdprcrm.define_purpose('marketing', 'consent', 'Newsletters, offers and events', interval '2 years');
RESET ROLE;
SELECT lawful_basis, description FROM gdprcrm.purposes WHERE name = 'marketing';

-- Parallel mode: decrypting and filtering still work (no new snapshot is
-- taken there), from a fresh backend whose caches are empty.
\c
SET force_parallel_mode = on;
SET ROLE regress_eve;
SET gdprcrm.purpose = 'marketing';
SELECT count(*) AS parallel_mode_people, count(gdprcrm.decrypt(email, 'crm.people.email', id)) AS decrypted
FROM gdprcrm.people;
RESET ROLE;
RESET force_parallel_mode;

-- A transaction that changed consent cannot be prepared.
BEGIN;
SELECT gdprcrm.withdraw_consent(:p1, 'marketing') > 0;
PREPARE TRANSACTION 'consent';

-- The CRM tables carry the filter; pg_dump keeps the ledger.
SELECT c.relname, p.polname, p.polpermissive
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
WHERE c.relnamespace = 'gdprcrm'::regnamespace AND p.polname = 'gdprcrm_purpose' ORDER BY 1;
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) AS cfg(oid) JOIN pg_class c ON c.oid = cfg.oid
WHERE e.extname = 'gdprcrm' AND c.relname IN ('purposes', 'consent_events', 'restriction_events', 'subject_state')
ORDER BY 1;
DROP FUNCTION leak(bigint);
DROP ROLE regress_admin;
DROP VIEW visible_people;
DROP FUNCTION count_people();
