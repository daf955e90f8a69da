-- Erasure in stages: the trash, restoring, purging; legal holds; the
-- suppression list.

\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS gdprcrm;
RESET client_min_messages;

SELECT setval('gdprcrm.people_id_seq', greatest(500000, (SELECT last_value FROM gdprcrm.people_id_seq)))
    IS NOT NULL AS fresh_ids;

CREATE ROLE regress_er_admin IN ROLE gdprcrm_admin;
CREATE ROLE regress_er_other_admin IN ROLE gdprcrm_admin;
CREATE ROLE regress_er_app IN ROLE gdprcrm_app;
SELECT gdprcrm.create_project('Erasure Co', ARRAY['regress_er_admin', 'regress_er_app']::name[]) AS proj \gset
SELECT gdprcrm.create_project('Elsewhere', ARRAY['regress_er_other_admin']::name[]) AS other \gset
SELECT gdprcrm.define_purpose('er_support', 'contract', 'Answering requests');
SELECT gdprcrm.define_purpose('er_news', 'consent', 'Newsletter');

-- Two people with a little of everything; Bob must come through untouched.
SELECT gdprcrm.identify(:proj, 'er-ada', ' Ada.Lovelace@Example.org ', '{"plan": "pro"}') AS ada \gset
SELECT gdprcrm.identify(:proj, 'er-bob', 'bob@example.org') AS bob \gset
UPDATE gdprcrm.people SET name = gdprcrm.encrypt(id, CASE id WHEN :ada THEN 'Ada Lovelace' ELSE 'Bob' END,
                                                 'crm.people.name')
WHERE id IN (:ada, :bob);
SELECT gdprcrm.track(:proj, p, 'signup', '{"source": "web"}') FROM unnest(ARRAY[:ada, :bob]) AS p;
SELECT gdprcrm.track_page_view(:proj, p, 'https://example.org/pricing', 'Pricing') FROM unnest(ARRAY[:ada, :bob]) AS p;
SELECT gdprcrm.add_message(:proj, p, 'inbound', 'email', 'Hello', 'Dear team, this is Ada Lovelace') > 0 AS message
FROM unnest(ARRAY[:ada, :bob]) AS p;
SELECT gdprcrm.add_enrichment(:proj, p, 'registry', 'company', '"Analytical Engines"') > 0 AS enrichment
FROM unnest(ARRAY[:ada, :bob]) AS p;
INSERT INTO gdprcrm.companies (project_id, name) VALUES (:proj, 'Analytical Engines') RETURNING id AS company \gset
INSERT INTO gdprcrm.person_companies (project_id, person_id, company_id, title)
SELECT :proj, p, :company, 'Engineer' FROM unnest(ARRAY[:ada, :bob]) AS p;
SELECT gdprcrm.grant_consent(p, 'er_news', source => 'signup form', method => 'checkbox',
                             notice_version => 'v1', wording => 'Yes, send me news',
                             evidence => jsonb_build_object('ip', CASE p WHEN :ada THEN '192.0.2.1'
                                                                         ELSE '198.51.100.7' END)) > 0 AS consent
FROM unnest(ARRAY[:ada, :bob]) AS p;
SELECT gdprcrm.restrict_processing(:ada, 'Ada Lovelace contests the accuracy') > 0 AS restricted;
SELECT gdprcrm.lift_restriction(:ada, 'corrected') > 0 AS lifted;

-- Application tables, registered: orders refer to accounts, so a purge
-- deletes orders before accounts whatever the order it tries them in;
-- invoices are kept, anonymised.
CREATE TABLE regress_er_accounts (
    id bigserial PRIMARY KEY,
    customer bigint NOT NULL,
    login text
);
CREATE TABLE regress_er_orders (
    id bigserial PRIMARY KEY,
    customer bigint NOT NULL,
    account bigint REFERENCES regress_er_accounts,
    note gdprcrm.encrypted_text
);
CREATE TABLE regress_er_invoices (
    id bigserial PRIMARY KEY,
    customer bigint NOT NULL,
    amount numeric NOT NULL,
    billing_name text,
    note gdprcrm.encrypted_text
);
SELECT gdprcrm.protect(t, 'customer')
FROM unnest(ARRAY['regress_er_accounts', 'regress_er_orders', 'regress_er_invoices']::regclass[]) AS t;
SELECT gdprcrm.register_table('regress_er_accounts', 'customer', 'accounts');
SELECT gdprcrm.register_table('regress_er_orders', 'customer', 'orders', contexts => '{"note": "shop.orders.note"}');
SELECT gdprcrm.register_table('regress_er_invoices', 'customer', 'invoices', on_purge => 'anonymise',
                              anonymise_columns => ARRAY['billing_name']::name[]);
GRANT SELECT ON regress_er_accounts, regress_er_orders, regress_er_invoices TO regress_er_app;
INSERT INTO regress_er_accounts (customer, login) VALUES (:ada, 'ada.l'), (:bob, 'bob');
INSERT INTO regress_er_orders (customer, account, note)
SELECT a.customer, a.id, gdprcrm.encrypt(a.customer, 'gift wrap for ' || a.login, 'shop.orders.note')
FROM regress_er_accounts a;
INSERT INTO regress_er_invoices (customer, amount, billing_name, note)
SELECT a.customer, 42, initcap(a.login), gdprcrm.encrypt(a.customer, 'paid', 'public.regress_er_invoices.note')
FROM regress_er_accounts a;

-- The ciphertext of Ada's email, for the application to try.
CREATE TEMP TABLE ada_cipher AS SELECT email FROM gdprcrm.people WHERE id = :ada;
GRANT SELECT ON ada_cipher TO regress_er_app;

-- What the application sees of each person, every table through the filters.
CREATE FUNCTION pg_temp.seen(person bigint) RETURNS TABLE (tab text, n bigint)
LANGUAGE sql AS $$
    SELECT 'people', count(*) FROM gdprcrm.people WHERE id = person
    UNION ALL SELECT 'person_identities', count(*) FROM gdprcrm.person_identities WHERE person_id = person
    UNION ALL SELECT 'person_companies', count(*) FROM gdprcrm.person_companies WHERE person_id = person
    UNION ALL SELECT 'events', count(*) FROM gdprcrm.events WHERE person_id = person
    UNION ALL SELECT 'messages', count(*) FROM gdprcrm.messages WHERE person_id = person
    UNION ALL SELECT 'enrichments', count(*) FROM gdprcrm.enrichments WHERE person_id = person
    UNION ALL SELECT 'accounts', count(*) FROM regress_er_accounts WHERE customer = person
    UNION ALL SELECT 'orders', count(*) FROM regress_er_orders WHERE customer = person
    UNION ALL SELECT 'invoices', count(*) FROM regress_er_invoices WHERE customer = person
$$;
GRANT EXECUTE ON FUNCTION pg_temp.seen(bigint) TO regress_er_app;

SET ROLE regress_er_app;
SET gdprcrm.purpose = 'er_support';
SELECT * FROM pg_temp.seen(:ada);
SELECT gdprcrm.decrypt(email, 'crm.people.email') AS email FROM ada_cipher;
RESET ROLE;

-- Only superusers and the gdprcrm_admin members of the subject's team.
SET ROLE regress_er_app;
SELECT gdprcrm.erase_subject(:ada);
SET ROLE regress_er_other_admin;
SELECT gdprcrm.erase_subject(:ada);
SELECT gdprcrm.restore_subject(:ada);
SELECT gdprcrm.purge_subject(:ada);
SELECT gdprcrm.place_legal_hold(:ada, 'audit');
SELECT gdprcrm.release_legal_hold(:ada);
SELECT gdprcrm.unsuppress(:proj, 'ada.lovelace@example.org');
RESET ROLE;
SELECT gdprcrm.erase_subject(:ada + 100000);
SELECT gdprcrm.purge_subject(0);

-- To the trash: hidden at once, in this session, from every purpose.
SET ROLE regress_er_admin;
SELECT gdprcrm.erase_subject(:ada, 'request #1') AS trashed;
SELECT gdprcrm.erase_subject(:ada) AS trashed_again;
RESET ROLE;
SELECT trashed_at IS NOT NULL AS in_trash, project_id = :proj AS project_kept, erased_at, purged_at
FROM gdprcrm.subject_state WHERE subject = :ada;
SET ROLE regress_er_app;
SET gdprcrm.purpose = 'er_support';
SELECT * FROM pg_temp.seen(:ada);
SELECT * FROM pg_temp.seen(:bob);
SET gdprcrm.purpose = 'er_news';
SELECT count(*) AS news_readers FROM gdprcrm.people WHERE id IN (:ada, :bob);
SELECT gdprcrm.explain_access(:ada, 'er_support');
-- Its key is withheld: decrypting reads NULL (an error under strict
-- erasure), encrypting is refused.
SELECT gdprcrm.decrypt(email, 'crm.people.email') IS NULL AS email_withheld FROM ada_cipher;
SET gdprcrm.strict_erasure = on;
SELECT gdprcrm.decrypt(email, 'crm.people.email') FROM ada_cipher;
RESET gdprcrm.strict_erasure;
SELECT gdprcrm.encrypt(:ada, 'new value', 'crm.people.name');
-- Nothing more is recorded about it.
SELECT gdprcrm.track(:proj, :ada, 'login');
SELECT gdprcrm.track_page_view(:proj, :ada, 'https://example.org/');
SELECT gdprcrm.add_message(:proj, :ada, 'outbound', 'email', 'Hi', 'Welcome back');
SELECT gdprcrm.add_enrichment(:proj, :ada, 'registry', 'title', '"Countess"');
SELECT gdprcrm.grant_consent(:ada, 'er_news');
SELECT gdprcrm.restrict_processing(:ada, 'again');
-- identify() and import_people() leave the person alone and create nobody.
SELECT gdprcrm.identify(:proj, 'er-ada') AS by_external_id;
SELECT gdprcrm.identify(:proj, NULL, 'ADA.LOVELACE@example.org') AS by_email;
SELECT gdprcrm.identify(:proj, 'er-ada', 'someone.new@example.org') AS new_email;
SELECT gdprcrm.identify(:proj, 'er-someone-new', 'ada.lovelace@example.org') AS new_external_id;
SELECT ordinality, person_id IS NULL AS none
FROM gdprcrm.import_people(:proj, '[{"email": "Ada.Lovelace@Example.org"}, {"external_id": "er-ada"},
                                     {"external_id": "er-bob", "traits": {"vip": true}}]');
RESET gdprcrm.purpose;
RESET ROLE;
-- Nor does merging move anything to or from it.
SELECT gdprcrm.merge_people(:proj, :bob, :ada);
SELECT gdprcrm.merge_people(:proj, :ada, :bob);
SELECT count(*) AS people_named FROM gdprcrm.person_identities
WHERE project_id = :proj AND key IN (gdprcrm.blind_index('er-someone-new', 'external_id'),
                                     gdprcrm.blind_index('someone.new@example.org', 'email'));
SELECT traits FROM gdprcrm.people WHERE id = :bob;
-- Superusers, and so the rights functions, still reach it.
SELECT gdprcrm.decrypt(name, 'crm.people.name') AS name, traits FROM gdprcrm.people WHERE id = :ada;
SELECT subject = :ada AS is_ada, action, detail, reason, recorded_by FROM gdprcrm.rights_log
WHERE project_id = :proj ORDER BY id;
SELECT count(*) AS expired FROM gdprcrm.expired_trash();

-- Restored: everything back.
SET ROLE regress_er_admin;
SELECT gdprcrm.restore_subject(:ada) AS restored;
SELECT gdprcrm.restore_subject(:ada) AS restored_again;
SET ROLE regress_er_app;
SET gdprcrm.purpose = 'er_support';
SELECT * FROM pg_temp.seen(:ada);
SELECT gdprcrm.decrypt(email, 'crm.people.email') AS email FROM ada_cipher;
SELECT gdprcrm.explain_access(:ada, 'er_support');
SELECT gdprcrm.identify(:proj, 'er-ada') = :ada AS identified;
SELECT gdprcrm.track(:proj, :ada, 'login');
RESET gdprcrm.purpose;
RESET ROLE;

-- The trash retention: superusers set it; past it, no restore.
SHOW gdprcrm.trash_retention;
SELECT gdprcrm.trash_retention();
SET ROLE regress_er_admin;
SET gdprcrm.trash_retention = '90d';
SELECT gdprcrm.erase_subject(:ada) AS trashed;
RESET ROLE;
UPDATE gdprcrm.subject_state SET trashed_at = trashed_at - interval '31 days' WHERE subject = :ada;
SELECT subject = :ada AS is_ada, project_id = :proj AS in_proj FROM gdprcrm.expired_trash();
SET ROLE regress_er_other_admin;
SELECT count(*) AS not_my_team FROM gdprcrm.expired_trash();
SET ROLE regress_er_admin;
SELECT gdprcrm.restore_subject(:ada);
RESET ROLE;
SET gdprcrm.trash_retention = '90min';
SELECT gdprcrm.trash_retention();
SET gdprcrm.trash_retention = '45d';
SELECT count(*) AS expired FROM gdprcrm.expired_trash();
SELECT gdprcrm.restore_subject(:ada) AS restored_within_45_days;
RESET gdprcrm.trash_retention;

-- Legal hold: neither erased nor purged while it holds.
SET ROLE regress_er_admin;
SELECT gdprcrm.place_legal_hold(:ada, 'Litigation 2024-17') AS hold \gset
SELECT subject = :ada AS is_ada, project_id = :proj AS in_proj, reason, placed_by, hold_id = :hold AS the_hold
FROM gdprcrm.legal_holds;
\set VERBOSITY terse
SELECT gdprcrm.erase_subject(:ada);
SELECT gdprcrm.purge_subject(:ada);
SELECT gdprcrm.place_legal_hold(:ada, 'another');
SELECT gdprcrm.place_legal_hold(:ada, ' ');
\set VERBOSITY default
SET ROLE regress_er_other_admin;
SELECT count(*) AS other_team FROM gdprcrm.legal_holds;
SET ROLE regress_er_admin;
SELECT gdprcrm.release_legal_hold(:ada) AS released;
SELECT gdprcrm.release_legal_hold(:ada) AS released_again;
SELECT count(*) AS current_holds FROM gdprcrm.legal_holds;
-- A hold placed on a subject in the trash keeps it there.
SELECT gdprcrm.erase_subject(:ada) AS trashed;
SELECT gdprcrm.place_legal_hold(:ada, 'Tax audit') > 0 AS held;
\set VERBOSITY terse
SELECT gdprcrm.purge_subject(:ada);
\set VERBOSITY default
SELECT gdprcrm.restore_subject(:ada) AS restored_while_held;
SELECT gdprcrm.release_legal_hold(:ada) AS released;
RESET ROLE;
-- Holds are kept as placed.
UPDATE gdprcrm.legal_hold_history SET reason = 'changed';
DELETE FROM gdprcrm.legal_hold_history;
SELECT reason, released_at IS NOT NULL AS released, released_by FROM gdprcrm.legal_hold_history ORDER BY id;

-- Purge, from the trash.
SET ROLE regress_er_admin;
SELECT gdprcrm.erase_subject(:ada, 'request #2') AS trashed;
SELECT gdprcrm.purge_subject(:ada, 'request #2') AS purged;
SELECT gdprcrm.purge_subject(:ada) AS purged_again;
SELECT gdprcrm.erase_subject(:ada) AS trashed_again;
SELECT gdprcrm.restore_subject(:ada);
SELECT gdprcrm.place_legal_hold(:ada, 'too late');
SELECT gdprcrm.require_subject_admin(:ada) = :proj AS still_administered;
RESET ROLE;
-- No row of Ada in any registered table but the anonymised one.
CREATE FUNCTION pg_temp.rows_of(tab regclass, col name, subject bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s WHERE %I = $1', tab, col) INTO n USING subject;
    RETURN n;
END $$;
SELECT relation, on_purge, pg_temp.rows_of(relation, subject_column, :ada) AS ada_rows,
       pg_temp.rows_of(relation, subject_column, :bob) AS bob_rows
FROM gdprcrm.registered_tables ORDER BY relation::text;
SELECT amount, billing_name, gdprcrm.is_erased(note) AS note_erased FROM regress_er_invoices WHERE customer = :ada;
-- No key: a tombstone.
SELECT wrapped_key IS NULL AND destroyed_at IS NOT NULL AS tombstone FROM gdprcrm.subject_keys WHERE subject = :ada;
SELECT trashed_at IS NOT NULL AS trashed, erased_at IS NOT NULL AS erased, purged_at IS NOT NULL AS purged,
       project_id = :proj AS project_kept
FROM gdprcrm.subject_state WHERE subject = :ada;
-- The ledgers keep what proves consent and its end, nothing more.
SELECT purpose, action, source, method, notice_version, wording_hash IS NOT NULL AS wording_hash, evidence,
       captured_at IS NOT NULL AS captured
FROM gdprcrm.consent_events WHERE subject = :ada ORDER BY id;
SELECT action, reason FROM gdprcrm.restriction_events WHERE subject = :ada ORDER BY id;
SELECT count(*) AS bob_evidence FROM gdprcrm.consent_events WHERE subject = :bob AND evidence IS NOT NULL;
-- ... and are still append-only otherwise.
UPDATE gdprcrm.consent_events SET source = 'rewritten' WHERE subject = :ada;
UPDATE gdprcrm.consent_events SET captured_at = now() WHERE subject = :ada;
UPDATE gdprcrm.consent_events SET evidence = NULL WHERE subject = :bob;
-- Identifiers are suppressed as keyed hashes; no plaintext of Ada is left
-- anywhere in the database.
SELECT kind, key = CASE kind WHEN 'email' THEN gdprcrm.blind_index('ada.lovelace@example.org', 'email')
                             ELSE gdprcrm.blind_index('er-ada', 'external_id') END AS keyed_hash,
       project_id = :proj AS in_proj, subject = :ada AS from_ada
FROM gdprcrm.suppressed_identifiers ORDER BY kind;
CREATE FUNCTION pg_temp.tables_mentioning(patterns text[]) RETURNS SETOF regclass
LANGUAGE plpgsql AS $$
DECLARE
    t regclass;
    found boolean;
BEGIN
    FOR t IN SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname IN ('gdprcrm', 'public') ORDER BY c.oid LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s x WHERE to_jsonb(x)::text ILIKE ANY ($1))', t)
            INTO found USING patterns;
        IF found THEN
            RETURN NEXT t;
        END IF;
    END LOOP;
END $$;
SELECT * FROM pg_temp.tables_mentioning(ARRAY['%er-ada%', '%lovelace%', '%ada.l%', '%192.0.2.1%']);
SELECT * FROM pg_temp.tables_mentioning(ARRAY['%er-bob%']);
SELECT subject = :ada AS is_ada, action, detail, reason FROM gdprcrm.rights_log
WHERE project_id = :proj AND action IN ('purge', 'place_hold', 'release_hold') ORDER BY id;

-- Not created again: by identify() in any letter case, by import_people(),
-- by a direct write.
SET ROLE regress_er_app;
SELECT gdprcrm.identify(:proj, 'er-ada') AS by_external_id;
SELECT gdprcrm.identify(:proj, NULL, '  ADA.Lovelace@EXAMPLE.org') AS by_email;
SELECT gdprcrm.identify(:proj, 'er-ada-2', 'ada.lovelace@example.org') AS with_a_new_external_id;
SELECT gdprcrm.identify(:proj, 'er-bob', 'ada.lovelace@example.org') AS onto_bob;
SELECT ordinality, person_id IS NULL AS none
FROM gdprcrm.import_people(:proj, '[{"email": "Ada.Lovelace@Example.org"}, {"external_id": "er-ada", "email": "x@example.org"},
                                     {"external_id": "er-carl", "email": "carl@example.org"}]');
SELECT gdprcrm.track(:proj, :ada, 'login');
SELECT gdprcrm.grant_consent(:ada, 'er_news');
SELECT gdprcrm.decrypt(email, 'crm.people.email') IS NULL AS email_gone FROM ada_cipher;
INSERT INTO gdprcrm.people (project_id, external_id) VALUES (:proj, 'er-ada');
SET gdprcrm.purpose = 'er_support';
UPDATE gdprcrm.people SET external_id = 'er-ada' WHERE id = :bob;
UPDATE gdprcrm.people SET email = gdprcrm.encrypt(id, 'ada.lovelace@example.org', 'crm.people.email'),
    email_bidx = gdprcrm.blind_index('ada.lovelace@example.org', 'email')
WHERE id = :bob;
RESET gdprcrm.purpose;
RESET ROLE;
INSERT INTO gdprcrm.person_identities (project_id, kind, key, person_id)
VALUES (:proj, 'email', gdprcrm.blind_index('ada.lovelace@example.org', 'email'), :bob);
SELECT count(*) AS people_with_ada_ids FROM gdprcrm.people
WHERE project_id = :proj AND (external_id IN ('er-ada', 'er-ada-2')
                              OR email_bidx = gdprcrm.blind_index('ada.lovelace@example.org', 'email'));
-- Another project is another list.
SELECT gdprcrm.identify(:other, 'er-ada', 'ada.lovelace@example.org') > 0 AS elsewhere;
-- A DPO finds the purged requester.
SET ROLE regress_er_admin;
SELECT project_id = :proj AS in_proj, subject = :ada AS is_ada, matched_by
FROM gdprcrm.find_subject(email => 'Ada.Lovelace@example.org', external_id => 'er-ada');
RESET ROLE;

-- The person comes back and asks: unsuppressed, one identifier at a time.
SET ROLE regress_er_app;
SELECT gdprcrm.unsuppress(:proj, 'ada.lovelace@example.org');
SET ROLE regress_er_admin;
SELECT gdprcrm.unsuppress(:proj);
SELECT gdprcrm.unsuppress(:proj, email => ' ADA.LOVELACE@example.org') AS lifted;
SELECT gdprcrm.unsuppress(:proj, email => 'ada.lovelace@example.org') AS lifted_again;
SELECT subject = :ada AS is_ada, action, detail FROM gdprcrm.rights_log
WHERE project_id = :proj AND action = 'unsuppress';
SET ROLE regress_er_app;
SELECT gdprcrm.identify(:proj, NULL, 'ada.lovelace@example.org') NOT IN (:ada, :bob) AS a_new_person;
SELECT gdprcrm.identify(:proj, 'er-ada') AS external_id_still_suppressed;
RESET ROLE;

-- Purge at once, with an anonymous visitor merged into the person: the
-- visitor's row and id go with it.
SELECT gdprcrm.identify(:proj, 'er-carl', 'carl@example.org') AS carl \gset
SELECT gdprcrm.identify(:proj, 'visitor-7') AS visitor \gset
SELECT gdprcrm.identify(:proj, 'visitor-7', 'carl@example.org') = :carl AS merged;
SELECT gdprcrm.track(:proj, :carl, 'purchase');
SET ROLE regress_er_admin;
SELECT gdprcrm.purge_subject(:carl) AS purged;
RESET ROLE;
SELECT count(*) AS people_left FROM gdprcrm.people WHERE id IN (:carl, :visitor);
SELECT kind FROM gdprcrm.suppressed_identifiers WHERE subject = :carl ORDER BY kind, key;
SELECT detail FROM gdprcrm.rights_log WHERE subject = :carl AND action = 'purge';
SELECT gdprcrm.identify(:proj, 'visitor-7') AS visitor_again;

-- A registered table's own triggers run as the table's owner during a
-- purge, never as the superuser the purge runs as: an administrator who
-- owns a registered table gains nothing from a trigger on it.  Its rows of
-- the subject are deleted all the same, through its forced row security.
GRANT CREATE ON SCHEMA public TO regress_er_admin;
SET ROLE regress_er_admin;
CREATE TABLE regress_er_admin_notes (id bigserial PRIMARY KEY, customer bigint NOT NULL, body text);
CREATE TABLE regress_er_trigger_runs (run text, as_superuser boolean);
CREATE FUNCTION regress_er_note_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.regress_er_trigger_runs
    SELECT TG_OP || ' ' || TG_LEVEL, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    RETURN NULL;
END $$;
CREATE TRIGGER note_statement AFTER DELETE ON regress_er_admin_notes
    FOR EACH STATEMENT EXECUTE FUNCTION regress_er_note_run();
CREATE TRIGGER note_row AFTER DELETE ON regress_er_admin_notes
    FOR EACH ROW EXECUTE FUNCTION regress_er_note_run();
RESET ROLE;
SELECT gdprcrm.protect('regress_er_admin_notes', 'customer');
SET ROLE regress_er_admin;
SELECT gdprcrm.register_table('regress_er_admin_notes', 'customer', 'notes');
RESET ROLE;
SELECT gdprcrm.identify(:proj, 'er-dave') AS dave \gset
INSERT INTO regress_er_admin_notes (customer, body) VALUES (:dave, 'call back'), (:bob, 'all fine');
SET ROLE regress_er_admin;
SELECT gdprcrm.purge_subject(:dave) AS purged;
SELECT run, as_superuser FROM regress_er_trigger_runs ORDER BY run;
RESET ROLE;
SELECT customer = :bob AS only_bob FROM regress_er_admin_notes;
SELECT rolsuper AS admin_is_superuser FROM pg_roles WHERE rolname = 'regress_er_admin';
DROP TABLE regress_er_admin_notes, regress_er_trigger_runs;
DROP FUNCTION regress_er_note_run();
REVOKE CREATE ON SCHEMA public FROM regress_er_admin;

-- Bob never noticed.
SET ROLE regress_er_app;
SET gdprcrm.purpose = 'er_support';
SELECT * FROM pg_temp.seen(:bob);
SELECT gdprcrm.decrypt(name, 'crm.people.name') AS name FROM gdprcrm.people WHERE id = :bob;
RESET gdprcrm.purpose;
RESET ROLE;

DROP TABLE regress_er_orders, regress_er_accounts, regress_er_invoices;
DROP OWNED BY regress_er_admin, regress_er_other_admin, regress_er_app;
DROP ROLE regress_er_admin, regress_er_other_admin, regress_er_app;
