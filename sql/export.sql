-- Subject access export: every registered row of a subject, decrypted, and
-- nothing of anyone else's; purposes, recipients, sources; who may export;
-- the rights log; CSV and HTML.

\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS gdprcrm;
RESET client_min_messages;

SELECT setval('gdprcrm.people_id_seq', greatest(500000, (SELECT last_value FROM gdprcrm.people_id_seq)))
    IS NOT NULL AS fresh_ids;
SELECT gdprcrm.create_event_partitions('2026-01-01', '2026-03-01') IS NOT NULL AS partitions;

CREATE ROLE regress_ex_admin IN ROLE gdprcrm_admin;
CREATE ROLE regress_ex_app IN ROLE gdprcrm_app;
CREATE ROLE regress_ex_analyst IN ROLE gdprcrm_analyst;
CREATE ROLE regress_ex_other_admin IN ROLE gdprcrm_admin;
CREATE ROLE regress_ex_nobody;
SELECT gdprcrm.create_project('Export Co',
    ARRAY['regress_ex_admin', 'regress_ex_app', 'regress_ex_analyst']::name[]) AS proj \gset
SELECT gdprcrm.create_project('Elsewhere Ltd', ARRAY['regress_ex_other_admin']::name[]) AS other \gset

SELECT gdprcrm.define_purpose('ex_service', 'contract', 'Providing the service you signed up for', interval '1 year');
SELECT gdprcrm.define_purpose('ex_news', 'consent', 'Sending our newsletter');
SELECT gdprcrm.define_purpose('ex_ads', 'legitimate_interests', 'Showing you our offers');
SELECT gdprcrm.define_purpose('ex_unused', 'consent', 'A purpose nobody consented to');

-- Recipients of a purpose: declared by an administrator.
SET ROLE regress_ex_admin;
SELECT gdprcrm.set_purpose_recipients('ex_news', ARRAY['Mailing service provider (EU)', 'Printing partner']);
SELECT gdprcrm.set_purpose_recipients('ex_ads', ARRAY['Advertising networks']);
SELECT gdprcrm.set_purpose_recipients('ex_unused', ARRAY[]::text[]);
SELECT gdprcrm.set_purpose_recipients('ex_nothing', ARRAY['x']);
SELECT gdprcrm.set_purpose_recipients('ex_news', ARRAY['ok', ' ']);
SET ROLE regress_ex_app;
SELECT gdprcrm.set_purpose_recipients('ex_news', NULL);
RESET ROLE;
SELECT name, recipients FROM gdprcrm.purposes WHERE name LIKE 'ex\_%' ORDER BY name;

-- Ada, the subject; Bob in the same project and Eve in another, with
-- data like hers (their secrets must never show up in her export).
SELECT gdprcrm.identify(:proj, 'ex-ada', 'ada@export.test', '{"plan": "pro", "language": "en"}') AS ada \gset
SELECT gdprcrm.identify(:proj, 'ex-bob', 'bob@export.test', '{"plan": "BOB-SECRET"}') AS bob \gset
SELECT gdprcrm.identify(:other, 'ex-ada', 'ada@export.test', '{"plan": "EVE-SECRET"}') AS eve \gset
UPDATE gdprcrm.people SET
    name = gdprcrm.encrypt(id, CASE id WHEN :ada THEN 'Ada, "the Countess" <b>&</b>'
                                       WHEN :bob THEN 'Bob BOB-SECRET' ELSE 'Eve EVE-SECRET' END, 'crm.people.name'),
    phone = gdprcrm.encrypt(id, CASE id WHEN :ada THEN '+44 20 7946 0000' ELSE '+1 555 SECRET' END, 'crm.people.phone')
WHERE id IN (:ada, :bob, :eve);
SELECT gdprcrm.track(:proj, p, 'signed_up', '{"plan": "pro", "note": "comma, \"quote\"\nnew line"}',
                     '2026-01-05 10:00+00')
FROM unnest(ARRAY[:ada, :bob]) AS p;
SELECT gdprcrm.track(:proj, :ada, 'feature_used', '{"feature": "export"}', '2026-02-01 09:30+00');
SELECT gdprcrm.track_page_view(:proj, :ada, 'https://export.test/pricing?ref=mail', 'Pricing',
                               'https://search.test/?q=ada', '{}', '2026-02-03 12:00+00');
SELECT gdprcrm.track(:proj, :bob, 'BOB-SECRET', '{}', '2026-02-01 09:30+00');
SELECT gdprcrm.track(:other, :eve, 'EVE-SECRET', '{}', '2026-02-01 09:30+00');
SELECT gdprcrm.add_message(:proj, :ada, 'outbound', 'email', 'Your order, "urgent"',
                           E'Line one\nLine two, with a comma', '2026-01-06 08:00+00') > 0 AS message;
SELECT gdprcrm.add_message(:proj, :ada, 'inbound', 'email', 'Re: Your order', 'Thanks!', '2026-01-06 09:00+00') > 0 AS message;
SELECT gdprcrm.add_message(:proj, :bob, 'outbound', 'email', 'BOB-SECRET', 'BOB-SECRET') > 0 AS message;
SELECT gdprcrm.add_message(:other, :eve, 'outbound', 'email', 'EVE-SECRET', 'EVE-SECRET') > 0 AS message;
SELECT gdprcrm.add_enrichment(:proj, :ada, 'public_registry', 'company', '{"name": "Analytical Engines Ltd"}',
                              '2026-01-07 00:00+00') > 0 AS enriched;
SELECT gdprcrm.add_enrichment(:proj, :bob, 'public_registry', 'company', '{"name": "BOB-SECRET"}') > 0 AS enriched;
INSERT INTO gdprcrm.companies (project_id, name) VALUES (:proj, 'Analytical Engines Ltd') RETURNING id AS company \gset
INSERT INTO gdprcrm.person_companies (project_id, person_id, company_id, title, since)
VALUES (:proj, :ada, :company, 'Analyst', '2025-09-01'), (:proj, :bob, :company, 'BOB-SECRET', NULL);
SELECT gdprcrm.grant_consent(:ada, 'ex_news', 'newsletter form', 'checkbox', 'privacy-v2', 'Send me news',
                             captured_at => '2026-01-05 10:01+00') > 0 AS granted;
SELECT gdprcrm.withdraw_consent(:ada, 'ex_news', 'unsubscribe link', captured_at => '2026-02-10 00:00+00') > 0 AS withdrawn;
SELECT gdprcrm.object(:ada, 'ex_ads', 'support ticket') > 0 AS objected;
SELECT gdprcrm.grant_consent(:bob, 'ex_news', 'BOB-SECRET') > 0 AS granted;
SELECT gdprcrm.restrict_processing(:ada, 'accuracy contested') > 0 AS restricted;
SELECT gdprcrm.lift_restriction(:ada, 'corrected') > 0 AS lifted;

-- An application's own table, registered with a context of its own for
-- one encrypted column; the others use schema.table.column.  Odd names
-- are quoted wherever export builds a query.
CREATE TABLE regress_ex_tickets (
    id integer PRIMARY KEY,
    "customer id" bigint NOT NULL,
    summary gdprcrm.encrypted_text,
    details gdprcrm.encrypted_jsonb,
    attachment gdprcrm.encrypted_bytea,
    "note, ""quoted""" text
);
SELECT gdprcrm.protect('regress_ex_tickets', 'customer id');
SELECT gdprcrm.register_table('regress_ex_tickets', 'customer id', 'support', 'Support tickets',
                              '{"summary": "shop.tickets.summary"}');
INSERT INTO regress_ex_tickets VALUES
    (1, :ada, gdprcrm.encrypt(:ada, 'Printer on fire', 'shop.tickets.summary'),
     gdprcrm.encrypt(:ada, '{"severity": "high", "tags": ["printer"]}'::jsonb, 'public.regress_ex_tickets.details'),
     gdprcrm.encrypt(:ada, '\xdeadbeef'::bytea, 'public.regress_ex_tickets.attachment'),
     E'comma, "quote"\nnew line'),
    (2, :bob, gdprcrm.encrypt(:bob, 'BOB-SECRET', 'shop.tickets.summary'), NULL, NULL, 'BOB-SECRET'),
    (3, :eve, gdprcrm.encrypt(:eve, 'EVE-SECRET', 'shop.tickets.summary'), NULL, NULL, 'EVE-SECRET'),
    (4, :ada, NULL, NULL, NULL, '');

-- Who may export: superusers, and gdprcrm_admin members of the subject's
-- project team.  Everyone else: 42501.
\set VERBOSITY sqlstate
SET ROLE regress_ex_app;
SELECT gdprcrm.sar_export(:ada);
SELECT * FROM gdprcrm.sar_export_csv(:ada);
SELECT gdprcrm.sar_export_html(:ada);
SET ROLE regress_ex_analyst;
SELECT gdprcrm.sar_export(:ada);
SET ROLE regress_ex_nobody;
SELECT gdprcrm.sar_export_html(:ada);
SET ROLE regress_ex_other_admin;
SELECT gdprcrm.sar_export(:ada);
SELECT * FROM gdprcrm.sar_export_csv(:ada);
SELECT gdprcrm.sar_export_html(:ada);
RESET ROLE;
SELECT gdprcrm.sar_export(0);
\set VERBOSITY default
SET ROLE regress_ex_other_admin;
SELECT gdprcrm.sar_export(:ada);
RESET ROLE;

-- The team's administrator exports, with no purpose declared and while
-- the purpose filter hides Ada from ex_news (she withdrew): the export
-- reads through every filter.
SET ROLE regress_ex_admin;
SET gdprcrm.purpose = 'ex_news';
SELECT count(*) AS ada_events_for_ex_news FROM gdprcrm.events WHERE person_id = :ada;
RESET gdprcrm.purpose;
SELECT gdprcrm.sar_export(:ada) AS doc \gset
RESET ROLE;

SELECT :'doc'::jsonb ->> 'format' AS format, :'doc'::jsonb -> 'format_version' AS format_version,
       :'doc'::jsonb #>> '{controller,project}' AS controller,
       (:'doc'::jsonb #>> '{subject,id}')::bigint = :ada AS is_ada,
       :'doc'::jsonb #> '{subject,known}' AS known, :'doc'::jsonb #> '{subject,erased}' AS erased;
SELECT jsonb_object_keys(:'doc'::jsonb) AS top_level ORDER BY 1;
SELECT jsonb_object_keys(:'doc'::jsonb -> 'article_15') AS article_15 ORDER BY 1;

-- Every registered row of hers, table by table, and only hers.
CREATE FUNCTION regress_ex_rows(tab regclass, col name, subject bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s WHERE %I = $1', tab, col) INTO n USING subject;
    RETURN n;
END $$;
SELECT t ->> 'table' AS registered_table, t ->> 'category' AS category,
       regress_ex_rows(r.relation, r.subject_column, :ada) AS stored,
       jsonb_array_length(t -> 'rows') AS exported,
       (SELECT coalesce(bool_and((x ->> r.subject_column)::bigint = :ada), true)
        FROM jsonb_array_elements(t -> 'rows') AS x) AS all_hers
FROM jsonb_array_elements(:'doc'::jsonb -> 'data') WITH ORDINALITY AS d(t, n)
JOIN gdprcrm.registered_tables r ON r.relation = (t ->> 'table')::regclass
ORDER BY d.n;
SELECT count(*) AS registered_tables_not_exported FROM gdprcrm.registered_tables r
WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(:'doc'::jsonb -> 'data') t
                  WHERE (t ->> 'table')::regclass = r.relation);
SELECT strpos(:'doc', 'BOB') = 0 AND strpos(:'doc', 'EVE') = 0 AND strpos(:'doc', 'SECRET') = 0
    AS nothing_of_bob_or_eve;

-- Decrypted with their contexts, the application's own included.
SELECT r ->> 'name' AS name, r ->> 'email' AS email, r ->> 'phone' AS phone, r -> 'traits' AS traits
FROM jsonb_array_elements(:'doc'::jsonb -> 'data') t, jsonb_array_elements(t -> 'rows') r
WHERE t ->> 'table' = 'gdprcrm.people';
SELECT r ->> 'direction' AS direction, r ->> 'subject' AS subject, r ->> 'body' AS body
FROM jsonb_array_elements(:'doc'::jsonb -> 'data') t, jsonb_array_elements(t -> 'rows') r
WHERE t ->> 'table' = 'gdprcrm.messages';
SELECT r - 'customer id' AS ticket
FROM jsonb_array_elements(:'doc'::jsonb -> 'data') t, jsonb_array_elements(t -> 'rows') r
WHERE t ->> 'table' = 'public.regress_ex_tickets';
SELECT c ->> 'name' AS column_name, c ->> 'type' AS type, c -> 'encrypted' AS encrypted
FROM jsonb_array_elements(:'doc'::jsonb -> 'data') t, jsonb_array_elements(t -> 'columns') c
WHERE t ->> 'table' = 'public.regress_ex_tickets';
SELECT r ->> 'occurred_at' AS occurred_at, r ->> 'name' AS event, r ->> 'url' AS url, r -> 'properties' AS properties
FROM jsonb_array_elements(:'doc'::jsonb -> 'data') t, jsonb_array_elements(t -> 'rows') r
WHERE t ->> 'table' = 'gdprcrm.events';

-- What she is told: purposes (lawful now, or with consent history; not
-- ex_unused), recipients, retention, sources, categories, history.
SELECT p ->> 'purpose' AS purpose, p ->> 'lawful_basis' AS basis, p ->> 'lawful_basis_reference' AS reference,
       p -> 'lawful_now' AS now, p ->> 'consent' AS consent, p -> 'objected' AS objected,
       p ->> 'retention' AS retention, p -> 'recipients' AS recipients
FROM jsonb_array_elements(:'doc'::jsonb #> '{article_15,purposes}') p
WHERE p ->> 'purpose' LIKE 'ex\_%';
SELECT p ->> 'explanation' AS explanation
FROM jsonb_array_elements(:'doc'::jsonb #> '{article_15,purposes}') p
WHERE p ->> 'purpose' LIKE 'ex\_%';
SELECT r ->> 'recipient' AS recipient, r -> 'purposes' AS purposes
FROM jsonb_array_elements(:'doc'::jsonb #> '{article_15,recipients}') r;
SELECT r ->> 'purpose' AS purpose, r ->> 'retention' AS retention, r ->> 'criteria' AS criteria
FROM jsonb_array_elements(:'doc'::jsonb #> '{article_15,retention}') r
WHERE r ->> 'purpose' LIKE 'ex\_%';
SELECT s ->> 'kind' AS kind, s ->> 'source' AS source, s ->> 'field' AS field, s ->> 'method' AS method,
       coalesce(s -> 'records', s -> 'events') AS records
FROM jsonb_array_elements(:'doc'::jsonb #> '{article_15,sources}') s;
SELECT c ->> 'category' AS category, c ->> 'table' AS source_table, c -> 'records' AS records
FROM jsonb_array_elements(:'doc'::jsonb #> '{article_15,categories_of_personal_data}') c;
SELECT jsonb_object_keys(:'doc'::jsonb #> '{article_15,rights}') AS rights ORDER BY 1;
SELECT :'doc'::jsonb #>> '{article_15,complaint}' AS complaint;
SELECT :'doc'::jsonb #> '{article_15,automated_decision_making}' AS automated_decision_making;
SELECT e ->> 'purpose' AS purpose, e ->> 'action' AS action, e ->> 'source' AS source, e ->> 'method' AS method,
       e ->> 'notice_version' AS notice, e ->> 'wording_sha256' = encode(sha256('Send me news'), 'hex') AS wording
FROM jsonb_array_elements(:'doc'::jsonb -> 'consent_history') e;
SELECT e ->> 'action' AS action, e ->> 'reason' AS reason
FROM jsonb_array_elements(:'doc'::jsonb -> 'restrictions') e;

-- Every export is in the rights log, with its format and who made it.
SELECT action, detail, recorded_by, project_id = :proj AS in_project
FROM gdprcrm.rights_log WHERE subject = :ada ORDER BY id;

-- CSV: one document per registered table (the profile first), then the
-- consent and restriction history; a header line; RFC 4180 quoting of
-- commas, quotes and line breaks; CRLF line ends (shown as <CR>); NULL
-- as an empty field and the empty string as "".
CREATE TEMP TABLE ada_csv AS SELECT * FROM gdprcrm.sar_export_csv(:ada);
SELECT table_name, (length(csv) - length(replace(csv, E'\r\n', ''))) / 2 - 1 AS data_lines FROM ada_csv;
SELECT replace(replace(csv, :'ada', '<ada>'), E'\r', '<CR>') AS tickets_csv
FROM ada_csv WHERE table_name = 'public.regress_ex_tickets';
SELECT regexp_replace(replace(csv, E'\r', '<CR>'), '(^|\n)\d+,\d+,\d+,', '\1<id>,<project>,<ada>,', 'g') AS messages_csv
FROM ada_csv WHERE table_name = 'gdprcrm.messages';
SELECT regexp_replace(replace(csv, E'\r', '<CR>'), '(^|\n)\d+,\d+,\d+,', '\1<id>,<project>,<ada>,', 'g') AS events_csv
FROM ada_csv WHERE table_name = 'gdprcrm.events';
SELECT split_part(csv, E'\r\n', 1) AS header, split_part(csv, E'\r\n', 2) ~ '^\d+,ex_news,grant,' AS first_event
FROM ada_csv WHERE table_name = 'consent_history';
SELECT strpos(string_agg(csv, ''), 'SECRET') = 0 AS nothing_of_bob_or_eve FROM ada_csv;

-- HTML: one self-contained page, no script, every value escaped.
SELECT gdprcrm.sar_export_html(:ada) AS html \gset
SELECT :'html' LIKE E'<!DOCTYPE html>\n<html lang="en" dir="ltr">%' AS doctype,
       strpos(:'html', '<meta http-equiv="Content-Security-Policy" content="default-src ''none''; style-src ''unsafe-inline''') > 0 AS csp,
       strpos(:'html', '@media print') > 0 AS print_style,
       strpos(lower(:'html'), '<script') = 0 AS no_script,
       :'html' !~* '(src|href)="?(https?:)?//' AS no_external_resource,
       strpos(:'html', 'Ada, &quot;the Countess&quot; &lt;b&gt;&amp;&lt;/b&gt;') > 0 AS name_escaped,
       strpos(:'html', '<b>&</b>') = 0 AS name_not_markup,
       strpos(:'html', 'SECRET') = 0 AS nothing_of_bob_or_eve;
SELECT (regexp_matches(:'html', '<h2>([^<]*)</h2>', 'g'))[1] AS heading;
SELECT action, detail FROM gdprcrm.rights_log WHERE subject = :ada ORDER BY id;

-- A value of another subject in her row is an error, never a disclosure.
INSERT INTO regress_ex_tickets VALUES (5, :ada, gdprcrm.encrypt(:bob, 'BOB-SECRET', 'shop.tickets.summary'));
SELECT gdprcrm.sar_export(:ada) IS NOT NULL;
DELETE FROM regress_ex_tickets WHERE id = 5;

-- An erased subject: rows are still exported, encrypted values as NULL,
-- even with gdprcrm.strict_erasure on.
SELECT gdprcrm.identify(:proj, 'ex-carl', 'carl@export.test') AS carl \gset
UPDATE gdprcrm.people SET name = gdprcrm.encrypt(id, 'Carl', 'crm.people.name') WHERE id = :carl;
SELECT gdprcrm.add_message(:proj, :carl, 'outbound', 'email', 'Hello Carl', 'Welcome') > 0 AS message;
INSERT INTO regress_ex_tickets VALUES (6, :carl, gdprcrm.encrypt(:carl, 'Carl''s ticket', 'shop.tickets.summary'),
                                       NULL, NULL, 'kept');
SELECT gdprcrm.shred_subject_key(:carl) AS erased;
SET gdprcrm.strict_erasure = on;
SELECT gdprcrm.sar_export(:carl) AS carl_doc \gset
RESET gdprcrm.strict_erasure;
SELECT :'carl_doc'::jsonb #> '{subject,erased}' AS erased, :'carl_doc'::jsonb -> 'notes' AS notes;
SELECT t ->> 'table' AS registered_table, r ->> 'name' AS name, r ->> 'email' AS email,
       r ->> 'subject' AS subject, r ->> 'body' AS body, r ->> 'summary' AS summary, r ->> 'note, "quoted"' AS note
FROM jsonb_array_elements(:'carl_doc'::jsonb -> 'data') t, jsonb_array_elements(t -> 'rows') r
WHERE t ->> 'table' IN ('gdprcrm.people', 'gdprcrm.messages', 'public.regress_ex_tickets')
ORDER BY 1;
SELECT replace(replace(csv, :'carl', '<carl>'), E'\r', '<CR>') AS carl_tickets_csv
FROM gdprcrm.sar_export_csv(:carl) WHERE table_name = 'public.regress_ex_tickets';
SELECT strpos(gdprcrm.sar_export_html(:carl), 'unreadable: erased') > 0 AS html_says_erased;

-- A table wider than the 50 pairs of json_build_object.
CREATE TABLE regress_ex_wide (subject bigint NOT NULL);
SELECT format('ALTER TABLE regress_ex_wide %s',
              string_agg(format('ADD COLUMN c%s integer DEFAULT %s', i, i), ', ')) AS add_columns
FROM generate_series(1, 59) AS i \gset
:add_columns;
ALTER TABLE regress_ex_wide ADD COLUMN secret gdprcrm.encrypted_text;
SELECT gdprcrm.protect('regress_ex_wide', 'subject');
SELECT gdprcrm.register_table('regress_ex_wide', 'subject', 'wide');
INSERT INTO regress_ex_wide (subject, secret) VALUES (:ada, gdprcrm.encrypt(:ada, 'far right', 'public.regress_ex_wide.secret'));
SELECT count(*) AS keys, sum((r ->> k)::integer) FILTER (WHERE k ~ '^c\d+$') AS sum_of_c, r ->> 'secret' AS secret
FROM gdprcrm.sar_export(:ada) AS d, jsonb_array_elements(d -> 'data') t, jsonb_array_elements(t -> 'rows') r,
     jsonb_object_keys(r) AS k
WHERE t ->> 'table' = 'public.regress_ex_wide'
GROUP BY r;
SELECT split_part(csv, E'\r\n', 2) ~ ('^' || :ada || ',1,2,3,.*,58,59,far right$') AS wide_csv
FROM gdprcrm.sar_export_csv(:ada) WHERE table_name = 'public.regress_ex_wide';
DROP TABLE regress_ex_wide;

-- A superuser may export an id that is no person: nothing is held.
SELECT d #> '{subject,known}' AS known, d #> '{controller,project_id}' AS project,
       (SELECT sum(jsonb_array_length(t -> 'rows')) FROM jsonb_array_elements(d -> 'data') t) AS rows,
       jsonb_array_length(d #> '{article_15,purposes}') AS purposes
FROM gdprcrm.sar_export(:ada + 900000) AS d;

DROP TABLE regress_ex_tickets;
DROP FUNCTION regress_ex_rows(regclass, name, bigint);
DROP OWNED BY regress_ex_admin, regress_ex_app, regress_ex_analyst, regress_ex_other_admin, regress_ex_nobody;
DROP ROLE regress_ex_admin, regress_ex_app, regress_ex_analyst, regress_ex_other_admin, regress_ex_nobody;
