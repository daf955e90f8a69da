#!/usr/bin/env bash
# gdprcrm demo, from a fresh Debian 12 machine: installs what it needs,
# builds and installs the extension, starts a private PostgreSQL instance
# with gdprcrm preloaded and a development key, and walks through what
# gdprcrm does, printing each step.  Nothing outside a temporary directory
# is touched besides the installed extension; the instance is stopped and
# removed at the end (DEMO_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

demo=$(mktemp -d /tmp/gdprcrm-demo.XXXXXX)
data=$demo/data
port=5499

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say()  { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
note() { printf '   %s\n' "$*"; }
sql()  { as_run_user "$bindir/psql" -X -q -h "$demo" -p "$port" -d "${DB:-demo}" \
             -v ON_ERROR_STOP=1 -v SHOW_CONTEXT=never --echo-queries -P pager=off "$@"; }
pg_ctl() { as_run_user "$bindir/pg_ctl" -D "$data" -l "$demo/server.log" -w "$@" >/dev/null; }

cleanup() {
    [ -n "${bindir:-}" ] && pg_ctl stop -m fast 2>/dev/null || true
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo "instance kept in $demo (start: $bindir/pg_ctl -D $data start)"
    else
        rm -rf "$demo"
    fi
}
trap cleanup EXIT

say "1. Installing dependencies, building with -Wall -Wextra -Werror, installing"
bash test/deps.sh
build_and_install
bindir=$("$PG_CONFIG" --bindir)
note "installed gdprcrm $(sed -n "s/^default_version = '\(.*\)'/\1/p" gdprcrm.control) into $("$PG_CONFIG" --pkglibdir)"

say "2. A private PostgreSQL instance with gdprcrm preloaded"
# gdprcrm.key_command is left empty: the development key file is used.
# The logging settings keep plaintext that PostgreSQL itself would log (the
# text of a failing statement, the context line of a refused COPY value)
# out of the server log (doc/operations.md, "Logging").
init_private_instance "$demo" "$port" \
    "log_error_verbosity = terse" "log_min_error_statement = panic" \
    "log_parameter_max_length_on_error = 0" "log_statement = none" "log_min_duration_statement = -1"
pg_ctl start
note "data directory: $data (socket in $demo, no TCP listener)"
note "the server log at start:"
grep -E 'gdprcrm' "$demo/server.log" | sed 's/^/     /'

say "3. The development root key: created once, private to the server"
ls -l "$data/gdprcrm_dev_root.key" | awk '{print "   " $1, $3, $NF}'
note "(its content is never printed, logged or returned by SQL)"

say "4. Installing the extension"
DB=postgres sql -c "CREATE DATABASE demo" >/dev/null
sql -c "CREATE EXTENSION gdprcrm" -c "\\dx gdprcrm"

say "5. What SQL may know of the root key: a keyed fingerprint, its source, its load time"
sql -c "SELECT * FROM gdprcrm.key_info()"
fingerprint=$(as_run_user "$bindir/psql" -X -Atq -h "$demo" -p "$port" -d demo -c "SELECT fingerprint FROM gdprcrm.key_info()")

say "6. The key survives a restart unchanged"
pg_ctl restart
after=$(as_run_user "$bindir/psql" -X -Atq -h "$demo" -p "$port" -d demo -c "SELECT fingerprint FROM gdprcrm.key_info()")
note "fingerprint before: $fingerprint"
note "fingerprint after:  $after"
[ "$fingerprint" = "$after" ] && note "same key"

say "7. Application roles reach no key material"
sql <<'SQL'
CREATE ROLE demo_app LOGIN;
SET ROLE demo_app;
\set ON_ERROR_STOP off
SELECT * FROM gdprcrm.key_info();
SHOW gdprcrm.key_command;
\set ON_ERROR_STOP on
RESET ROLE;
SQL

say "8. Random bytes from the fork-safe generator behind every nonce and key"
sql <<'SQL'
SELECT encode(gdprcrm.random_bytes(24), 'hex') AS a_24_byte_nonce;
SELECT count(DISTINCT gdprcrm.random_bytes(24)) AS distinct_of_100000
FROM generate_series(1, 100000);
SQL

say "9. Encrypted columns: one data key per person"
sql <<'SQL'
-- Subject ids are shared by every encrypted column of a database; the CRM
-- below numbers its people from 1, so this small table uses 900001 and up.
CREATE TABLE people (
    id bigint PRIMARY KEY,
    email gdprcrm.encrypted_text,
    email_bidx bytea,
    traits gdprcrm.encrypted_jsonb
);
CREATE INDEX ON people (email_bidx);
INSERT INTO people
SELECT id,
       gdprcrm.encrypt(id, email, 'crm.people.email'),
       gdprcrm.blind_index(gdprcrm.normalize_email(email), 'email'),
       gdprcrm.encrypt(id, traits, 'crm.people.traits')
FROM (VALUES (900001, 'Ada.Lovelace@Example.org', '{"plan": "pro"}'::jsonb),
             (900002, 'alan@example.com',         '{"plan": "free"}'),
             (900003, 'grace@example.net',        '{"plan": "team"}')) AS v(id, email, traits);
-- What the table holds: envelopes, not emails.
SELECT id, left(email::text, 40) || '...' AS stored_email FROM people ORDER BY id;
-- What an authorised query reads.
SELECT id, gdprcrm.decrypt(email, 'crm.people.email', id) AS email,
       gdprcrm.decrypt(traits, 'crm.people.traits', id) AS traits
FROM people ORDER BY id;
SQL

say "10. Lookup by email through the blind index (an index scan, no decryption)"
sql <<'SQL'
EXPLAIN (COSTS OFF) SELECT id FROM people
WHERE email_bidx = gdprcrm.blind_index(gdprcrm.normalize_email(' ada.lovelace@EXAMPLE.org '), 'email');
SELECT id, gdprcrm.decrypt(email, 'crm.people.email', id) AS email FROM people
WHERE email_bidx = gdprcrm.blind_index(gdprcrm.normalize_email(' ada.lovelace@EXAMPLE.org '), 'email');
SQL

say "11. Ciphertext is bound to its person and column"
sql <<'SQL'
\set ON_ERROR_STOP off
-- Alan's email copied into Grace's row:
SELECT gdprcrm.decrypt(p2.email, 'crm.people.email', 900003) FROM people p2 WHERE id = 900002;
-- Decrypted as if it were another column:
SELECT gdprcrm.decrypt(email, 'crm.people.name', id) FROM people WHERE id = 900002;
-- Plaintext cannot be stored in an encrypted column:
INSERT INTO people (id, email) VALUES (900004, 'someone@example.com');
\set ON_ERROR_STOP on
SQL

say "12. Erasure by destroying one key (crypto-shredding)"
sql <<'SQL'
SELECT gdprcrm.shred_subject_key(900002) AS alan_erased;
SELECT id, gdprcrm.decrypt(email, 'crm.people.email', id) AS email,
       gdprcrm.is_erased(email) AS erased
FROM people ORDER BY id;
-- The key table keeps a tombstone, never a key:
SELECT subject, wrapped_key IS NULL AS key_gone, destroyed_at IS NOT NULL AS tombstone
FROM gdprcrm.subject_keys WHERE subject > 900000 ORDER BY subject;
SQL

say "13. A sample CRM: a project, its team, 5,000 people and 1,000,000 events"
sql <<'SQL'
SELECT gdprcrm.create_event_partitions((date_trunc('month', now()) - interval '12 months')::date,
                                       (date_trunc('month', now()) + interval '2 months')::date) AS monthly_partitions;
CREATE ROLE demo_crm LOGIN IN ROLE gdprcrm_app;
CREATE ROLE demo_rival LOGIN IN ROLE gdprcrm_app;
SELECT gdprcrm.create_project('Acme Analytics', ARRAY['demo_crm']::name[]) AS acme,
       gdprcrm.create_project('Rival Inc', ARRAY['demo_rival']::name[]) AS rival;
-- Why the application processes personal data, each with its lawful basis (Art. 6).
SELECT gdprcrm.define_purpose('support', 'contract', 'Serving customers under their contract');
SELECT gdprcrm.define_purpose('marketing', 'consent', 'Newsletters and product offers', interval '2 years');
SELECT gdprcrm.define_purpose('product_analytics', 'legitimate_interests', 'Improving the product');
SELECT gdprcrm.define_purpose('legal_claims', 'legal_obligation', 'Establishing or defending legal claims',
                              NULL, false, true);
SET ROLE demo_crm;
SET gdprcrm.purpose = 'support';
\timing on
-- Every person through identify(): external id, email (encrypted, with its blind index), traits.
SELECT count(gdprcrm.identify(1, 'user-' || i, 'user' || i || '@example.com',
                              jsonb_build_object('plan', (ARRAY['free', 'pro', 'team'])[1 + i % 3])))
       AS people_identified
FROM generate_series(1, 5000) AS i;
-- A year of history, loaded in bulk (the same checks apply to every row).
INSERT INTO gdprcrm.events (project_id, person_id, occurred_at, kind, name, url, path, properties)
SELECT 1, p.id,
       -- one person in ten has been inactive for over 200 days
       now() - CASE WHEN p.id % 10 = 0 THEN 200 + random() * 165 ELSE random() * 150 END * interval '1 day',
       CASE WHEN g % 3 = 0 THEN 'custom' ELSE 'page_view' END,
       CASE WHEN g % 3 = 0 THEN 'feature_used' ELSE 'page_view' END,
       CASE WHEN g % 3 <> 0 THEN 'https://acme.test/docs/' || g % 50 END,
       CASE WHEN g % 3 <> 0 THEN '/docs/' || g % 50 END,
       CASE WHEN g % 3 = 0 THEN jsonb_build_object('feature', 'export') ELSE '{}' END
FROM generate_series(1, 1000000) AS g
JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM gdprcrm.people) AS p ON p.n = g % 5000;
-- As if each person had been created at their first visit (a loading step,
-- done by the DBA: applications cannot rewrite created_at).
RESET ROLE;
UPDATE gdprcrm.people p SET first_seen_at = e.first, last_seen_at = e.last,
                            created_at = e.first, updated_at = e.first
FROM (SELECT person_id, min(occurred_at) AS first, max(occurred_at) AS last FROM gdprcrm.events GROUP BY person_id) e
WHERE e.person_id = p.id;
\timing off
RESET ROLE;
ANALYZE gdprcrm.people;
ANALYZE gdprcrm.events;
SET ROLE demo_crm;
SET gdprcrm.purpose = 'support';
SELECT count(*) AS events, count(DISTINCT person_id) AS people_with_events FROM gdprcrm.events;
SQL

say "14. identify() is idempotent, and merges an anonymous visitor into the person"
sql <<'SQL'
SET ROLE demo_crm;
SET gdprcrm.purpose = 'support';
SELECT gdprcrm.identify(1, 'user-42') AS by_external_id,
       gdprcrm.identify(1, NULL, ' USER42@example.com ') AS by_email,
       gdprcrm.identify(1, 'user-42', 'user42@example.com') AS by_both;
-- A visitor browses anonymously...
SELECT gdprcrm.identify(1, 'anon-cookie-9f3') AS visitor \gset
SELECT gdprcrm.track_page_view(1, :visitor, 'https://acme.test/pricing?utm=ad', 'Pricing');
SELECT gdprcrm.track(1, :visitor, 'trial_started', '{"plan": "team"}');
-- ...then signs in as user 42: the visitor's history moves to user 42.
SELECT gdprcrm.identify(1, 'anon-cookie-9f3', 'user42@example.com') AS identified_as;
SELECT name, path, occurred_at > now() - interval '1 minute' AS just_now
FROM gdprcrm.events WHERE person_id = gdprcrm.identify(1, 'user-42') AND occurred_at > now() - interval '1 minute';
SELECT id, status, merged_into FROM gdprcrm.people WHERE external_id = 'anon-cookie-9f3';
SQL

say "15. Lookup by email: an index scan on the blind index, then one decryption"
sql <<'SQL'
SET ROLE demo_crm;
SET gdprcrm.purpose = 'support';
EXPLAIN (COSTS OFF) SELECT id FROM gdprcrm.people
WHERE project_id = 1 AND email_bidx = gdprcrm.blind_index(gdprcrm.normalize_email('User4711@Example.com'), 'email');
SELECT id, external_id, gdprcrm.decrypt(email, 'crm.people.email', id) AS email, traits
FROM gdprcrm.people
WHERE project_id = 1 AND email_bidx = gdprcrm.blind_index(gdprcrm.normalize_email('User4711@Example.com'), 'email');
-- One person's history comes from the person-leading primary key of each month:
EXPLAIN (COSTS OFF) SELECT count(*) FROM gdprcrm.events
WHERE person_id = 4711 AND occurred_at > now() - interval '30 days';
SQL

say "16. Restricted data is refused on every write, naming where it is, never what it is"
sql <<'SQL'
SET ROLE demo_crm;
SET gdprcrm.purpose = 'support';
\set ON_ERROR_STOP off
SELECT gdprcrm.track(1, 42, 'checkout', '{"order": {"payment": {"card": "4111 1111 1111 1111"}}}');
SELECT gdprcrm.identify(1, 'user-42', NULL, '{"diagnosis": "..."}');
\set ON_ERROR_STOP on
SQL

say "17. Teams: a role of another project sees none of these rows"
sql <<'SQL'
SET ROLE demo_rival;
SET gdprcrm.purpose = 'support';
SELECT (SELECT count(*) FROM gdprcrm.people) AS people, (SELECT count(*) FROM gdprcrm.events) AS events,
       (SELECT count(*) FROM gdprcrm.projects) AS projects;
SET ROLE demo_crm;
SET gdprcrm.purpose = 'support';
SELECT (SELECT count(*) FROM gdprcrm.people) AS people, (SELECT count(*) FROM gdprcrm.events) AS events,
       (SELECT count(*) FROM gdprcrm.projects) AS projects;
SQL

say "18. Retention review: people neither updated nor seen for six months"
sql <<'SQL'
SET ROLE demo_crm;
SET gdprcrm.purpose = 'support';
SELECT count(*) AS stale_people FROM gdprcrm.stale_people(1, interval '6 months');
SELECT person_id, external_id, last_seen_at::date FROM gdprcrm.stale_people(1, interval '6 months') LIMIT 5;
SQL

say "19. Consent and purposes: the same query, different rows for different purposes"
sql <<'SQL'
SET ROLE demo_crm;
-- 1,000 people subscribe to the newsletter, with where, how and under which notice.
SELECT count(gdprcrm.grant_consent(id, 'marketing', 'signup form', 'checkbox', 'privacy-notice-v4',
                                   'Yes, send me the monthly newsletter'))
       AS consents_recorded
FROM generate_series(1, 1000) AS id;
-- Two withdraw, one objects to analytics, one asks to restrict processing (Art. 18).
SELECT gdprcrm.withdraw_consent(7, 'marketing', 'unsubscribe link') > 0 AS withdrawn,
       gdprcrm.withdraw_consent(8, 'marketing', 'unsubscribe link') > 0 AS withdrawn,
       gdprcrm.object(9, 'product_analytics') > 0 AS objected,
       gdprcrm.restrict_processing(10, 'accuracy of the data contested') > 0 AS restricted;
-- One query, four purposes:
SET gdprcrm.purpose = 'support';
SELECT 'support' AS purpose, count(*) AS people_visible FROM gdprcrm.people WHERE project_id = 1;
SET gdprcrm.purpose = 'marketing';
SELECT 'marketing' AS purpose, count(*) AS people_visible FROM gdprcrm.people WHERE project_id = 1;
SET gdprcrm.purpose = 'product_analytics';
SELECT 'product_analytics' AS purpose, count(*) AS people_visible FROM gdprcrm.people WHERE project_id = 1;
SET gdprcrm.purpose = 'legal_claims';
SELECT 'legal_claims' AS purpose, count(*) AS people_visible FROM gdprcrm.people WHERE project_id = 1;
-- Events follow their person: marketing sees the history of subscribers only.
SET gdprcrm.purpose = 'marketing';
SELECT count(*) AS events_visible_for_marketing FROM gdprcrm.events;
-- No purpose declared: nothing, and a way to ask why.
RESET gdprcrm.purpose;
SELECT count(*) AS people_visible_without_purpose FROM gdprcrm.people;
SELECT id, gdprcrm.explain_access(id, 'marketing') AS why FROM generate_series(6, 10) AS id;
-- Behind a transaction pooler the purpose is declared per transaction:
BEGIN;
SELECT gdprcrm.set_purpose('marketing');
SELECT count(*) AS inside_the_request FROM gdprcrm.people;
COMMIT;
SELECT count(*) AS next_request_on_same_connection FROM gdprcrm.people;
SQL

say "20. Subject rights: a person asks what we hold, then to be erased"
sql <<'SQL'
-- The data protection officer administers the project's team.
CREATE ROLE demo_dpo LOGIN IN ROLE gdprcrm_admin;
SELECT gdprcrm.add_project_member(1, 'demo_dpo');
SET ROLE demo_dpo;
-- The request comes by email, in whatever letter case: found through the
-- blind index, nothing decrypted.
SELECT * FROM gdprcrm.find_subject(email => ' User4711@EXAMPLE.com ');
-- Access (Art. 15) and portability (Art. 20): one document, decrypted,
-- through every purpose filter, with consents, purposes and sources.
SELECT line AS sar_export_first_lines
FROM regexp_split_to_table(jsonb_pretty(gdprcrm.sar_export(4711)), '\n') WITH ORDINALITY AS l (line, n)
WHERE n <= 14 ORDER BY n;
SELECT table_name, length(csv) AS csv_bytes, split_part(csv, E'\n', 1) AS header
FROM gdprcrm.sar_export_csv(4711) ORDER BY table_name;
SQL
html=/tmp/gdprcrm-demo-sar-4711.html
as_run_user "$bindir/psql" -X -q -At -h "$demo" -p "$port" -d demo -v ON_ERROR_STOP=1 \
    -c "SET ROLE demo_dpo" -c "SELECT gdprcrm.sar_export_html(4711)" > "$html"
note "the printable export for the person: $html ($(wc -c < "$html") bytes; open it in a browser)"
sql <<'SQL'
SET ROLE demo_dpo;
-- Erasure (Art. 17), first to the trash: hidden at once from every purpose
-- and every application role, restorable for gdprcrm.trash_retention.
SELECT gdprcrm.erase_subject(4711, 'request by email');
SET ROLE demo_crm;
SET gdprcrm.purpose = 'support';
SELECT count(*) AS person_4711_visible, (SELECT count(*) FROM gdprcrm.events WHERE person_id = 4711) AS events_visible
FROM gdprcrm.people WHERE id = 4711;
SELECT gdprcrm.identify(1, NULL, 'user4711@example.com') AS identify_while_in_trash;
-- A mistaken erasure is undone within the trash retention.
SET ROLE demo_dpo;
SELECT gdprcrm.restore_subject(4711);
SET ROLE demo_crm;
SELECT count(*) AS visible_after_restore FROM gdprcrm.people WHERE id = 4711;
-- A legal hold (Art. 17(3)(e)) blocks erasure while it lasts.
SET ROLE demo_dpo;
SELECT gdprcrm.place_legal_hold(4711, 'pending dispute');
SQL
for refused in "gdprcrm.erase_subject(4711)" "gdprcrm.purge_subject(4711)"; do
    sql -c "SET ROLE demo_dpo" -c "SELECT $refused" 2>&1 | sed 's/^/   /' || true
done
sql <<'SQL'
SET ROLE demo_dpo;
SELECT subject, reason FROM gdprcrm.legal_holds;
SELECT gdprcrm.release_legal_hold(4711);
-- The purge: every registered row deleted, the data key destroyed, the
-- identifiers kept only as keyed hashes on a suppression list.
SELECT gdprcrm.purge_subject(4711, 'request by email');
RESET ROLE;
SELECT (SELECT count(*) FROM gdprcrm.people WHERE id = 4711) AS people_rows,
       (SELECT count(*) FROM gdprcrm.events WHERE person_id = 4711) AS event_rows,
       (SELECT destroyed_at IS NOT NULL FROM gdprcrm.subject_keys WHERE subject = 4711) AS key_destroyed;
SET ROLE demo_crm;
-- The person is not re-created by a later identify() of the same email.
SELECT gdprcrm.identify(1, NULL, 'USER4711@example.com') AS identify_after_purge;
SET ROLE demo_dpo;
SELECT subject, action, detail, recorded_by FROM gdprcrm.rights_log WHERE subject = 4711 ORDER BY id;
SQL

say "21. A key command that prints anything but a key stops the server"
pg_ctl stop
echo "gdprcrm.key_command = 'echo not-a-key-but-a-secret'" >> "$data/postgresql.conf"
if pg_ctl start 2>/dev/null; then
    note "unexpected: the server started"; exit 1
fi
note "pg_ctl start failed; the log says:"
tail -n 3 "$demo/server.log" | sed 's/^/     /'
if grep -q 'not-a-key-but-a-secret' "$demo/server.log"; then
    note "unexpected: the command's output reached the log"; exit 1
fi
note "(what the command printed appears nowhere in the log)"
sed -i '$d' "$data/postgresql.conf"
pg_ctl start
note "with the setting removed the server starts again with the same key:"
sql -c "SELECT fingerprint = '$fingerprint' AS same_key FROM gdprcrm.key_info()"

say "Done"
note "test suite: bash test/run.sh    reference: doc/reference.md"
