#!/usr/bin/env bash
# Subject access export of one subject among many.
#
#   bash test/bench/sar.sh
#   PEOPLE=10000 DURATION=10 bash test/bench/sar.sh     (a quick run: 1,000,000 events)
#
#   PURGE_ROUNDS=7                                        (purge rounds timed)
#
# Starts a private PostgreSQL 15 instance with gdprcrm preloaded and builds
# one project of PEOPLE people (100,000) with EVENTS events each (100), in
# the twelve monthly partitions of 2025, in time order as they would arrive:
# 10,000,000 events.  One subject, person 1, has SUBJECT_EVENTS events
# (10,000) among them, each written among the others' (one every 1,000
# events), 100 messages, 20 enrichments, consent events and a restriction;
# every other person has 2 messages, 2 enrichments and a consent.  Names,
# emails and message subjects and bodies are encrypted under each person's
# key.  The load skips foreign key checks (session_replication_role =
# replica: the rows are consistent by construction) and then runs ANALYZE.
#
# Then one pgbench session, as a superuser over the Unix socket, runs these
# variants in random order (equal weights), one transaction per call, for
# DURATION seconds (30):
#   baseline  plain SQL: the subject's rows of the same tables as one jsonb
#             document (each row as JSON, ordered, converted to jsonb once;
#             no decryption, purposes, sources or logging);
#   jsonb     SELECT gdprcrm.sar_export(1);
#   csv       SELECT * FROM gdprcrm.sar_export_csv(1);
#   html      SELECT gdprcrm.sar_export_html(1).
# Prints min / median / max milliseconds per call, the first call of each
# left out (pgbench's per-transaction log: the call, the transfer of the
# result and the commit, which for the exports writes a row of the rights
# log), the ratio of medians to the baseline, the size of each result, and
# the plan of the events query inside sar_export (auto_explain).  Target:
# jsonb under 100 ms.
#
# Then the purge of the same subject, in one psql session, each call in
# its own BEGIN ... ROLLBACK so that it can be repeated on the same data:
#   baseline  plain SQL: DELETE of the subject's rows from the registered
#             tables, in the purge's order (people last); nothing else;
#   purge     SELECT gdprcrm.purge_subject(1) (suppressed identifiers,
#             rows deleted, data key destroyed, ledgers reduced, logged).
# A call's time is that of its BEGIN, call and ROLLBACK (psql's \timing).
# The first call of each runs right after a CHECKPOINT, so that it writes
# the full page images a purge of pages untouched since the last checkpoint
# writes, and is shown apart; then PURGE_ROUNDS rounds of both, the order
# of the two swapped every round.  Prints min / median / max milliseconds
# and the ratio of medians to the baseline.
#
# Then the server is restarted with glibc told to keep the memory it frees,
# and the export session runs again (doc/benchmarks.md says why).
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

people=${PEOPLE:-100000}
events=${EVENTS:-100}
subject_events=${SUBJECT_EVENTS:-10000}
duration=${DURATION:-30}
purge_rounds=${PURGE_ROUNDS:-7}
bindir=$("$PG_CONFIG" --bindir)
dir=$(mktemp -d /tmp/gdprcrm-bench-sar.XXXXXX)
port=5497

cleanup() { as_run_user "$bindir/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

init_private_instance "$dir" "$port" "shared_buffers = 2GB" "max_wal_size = 16GB" \
    "checkpoint_timeout = 1h" "maintenance_work_mem = 512MB" "work_mem = 64MB" \
    "jit = off" "autovacuum = off" \
    "gdprcrm.key_command = 'echo 6764707263726d2d726567726573732d746573742d6b65792d30303030303031'"
as_run_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
psql() { as_run_user "$bindir/psql" -X -q -h "$dir" -p $port -d postgres -v ON_ERROR_STOP=1 "$@"; }

started=$(date +%s)
echo "loading: $people people x $events events, subject 1 with $subject_events events"
psql -v people="$people" -v events="$events" -v subject_events="$subject_events" <<'SQL'
CREATE EXTENSION gdprcrm;
SELECT gdprcrm.create_event_partitions('2025-01-01', '2026-01-01') AS partitions \gset
SELECT gdprcrm.create_project('Bench & Co');
SELECT gdprcrm.define_purpose('operations', 'contract', 'Operating the product', interval '3 years');
SELECT gdprcrm.define_purpose('newsletter', 'consent', 'Newsletter');
SELECT gdprcrm.set_purpose_recipients('newsletter', ARRAY['Mailing service provider']);

-- People 1..N, their keys made in batches, then their encrypted values.
SELECT sum(gdprcrm.create_subject_keys(ARRAY(SELECT generate_series(b, least(b + 9999, :people)))))
    AS keys FROM generate_series(1, :people, 10000) AS b \gset
INSERT INTO gdprcrm.people (id, project_id, external_id, email, email_bidx, name, traits, status,
                            first_seen_at, last_seen_at)
SELECT n, 1, 'u' || n, gdprcrm.encrypt(n, 'user' || n || '@example.com', 'crm.people.email'),
       gdprcrm.blind_index('user' || n || '@example.com', 'email'),
       gdprcrm.encrypt(n, 'User ' || n, 'crm.people.name'),
       jsonb_build_object('plan', CASE WHEN n % 3 = 0 THEN 'pro' ELSE 'free' END, 'language', 'en'),
       'identified', '2025-01-01', '2025-12-31'
FROM generate_series(1, :people) AS n;
SELECT setval('gdprcrm.people_id_seq', :people);
INSERT INTO gdprcrm.person_identities (project_id, kind, key, person_id)
SELECT 1, 'email', gdprcrm.blind_index('user' || n || '@example.com', 'email'), n FROM generate_series(1, :people) AS n
UNION ALL
SELECT 1, 'external_id', gdprcrm.blind_index('u' || n, 'external_id'), n FROM generate_series(1, :people) AS n;

SET session_replication_role = replica;
-- Events in the order they would arrive: slot k of each person every
-- 3.6 days, people one second apart; the subject's events one every
-- 1,000 of the others' (:subject_events of them over the slots).  The
-- series depend on each other so that they nest in this order.
INSERT INTO gdprcrm.events (id, project_id, person_id, occurred_at, kind, name, url, path, title, properties)
SELECT row_number() OVER (), 1, s.person, s.at,
       CASE WHEN s.k % 4 = 0 THEN 'page_view' ELSE 'custom' END,
       CASE WHEN s.k % 4 = 0 THEN 'page_view' ELSE 'feature_used' END,
       CASE WHEN s.k % 4 = 0 THEN 'https://bench.test/docs/page-' || s.k % 50 END,
       CASE WHEN s.k % 4 = 0 THEN '/docs/page-' || s.k % 50 END,
       CASE WHEN s.k % 4 = 0 THEN 'Documentation, page ' || s.k % 50 END,
       CASE WHEN s.k % 4 = 0 THEN '{}'::jsonb
            ELSE jsonb_build_object('feature', 'feature-' || s.k % 10, 'count', s.k % 7, 'plan', 'pro') END
FROM (SELECT k, CASE WHEN j = 1 THEN p ELSE 1 END AS person,
             timestamptz '2025-01-01 00:00+00' + k * interval '3.6 days' + p * interval '1 second' AS at
      FROM generate_series(0, :events - 1) AS k,
           generate_series(2 + 0 * k, :people) AS p,
           generate_series(1, CASE WHEN p % (:people / (:subject_events / :events)) = 0 THEN 2 ELSE 1 END) AS j) s;
SELECT setval('gdprcrm.events_id_seq', (SELECT max(id) FROM gdprcrm.events));

INSERT INTO gdprcrm.messages (project_id, person_id, direction, channel, subject, body, sent_at)
SELECT 1, p, CASE WHEN m % 2 = 0 THEN 'inbound' ELSE 'outbound' END, 'email',
       gdprcrm.encrypt(p, 'About your account, message ' || m, 'crm.messages.subject'),
       gdprcrm.encrypt(p, 'Hello, this is message ' || m || E' of our conversation.\nBest regards', 'crm.messages.body'),
       timestamptz '2025-01-01 00:00+00' + (m * 3 + p % 3) * interval '1 day'
FROM generate_series(1, :people) AS p, generate_series(1, CASE WHEN p = 1 THEN 100 ELSE 2 END) AS m;
INSERT INTO gdprcrm.enrichments (project_id, person_id, source, field, value, fetched_at)
SELECT 1, p, CASE WHEN e % 2 = 0 THEN 'company_registry' ELSE 'public_profile' END, 'field_' || e % 5,
       jsonb_build_object('value', 'value ' || e), timestamptz '2025-02-01 00:00+00' + e * interval '1 day'
FROM generate_series(1, :people) AS p, generate_series(1, CASE WHEN p = 1 THEN 20 ELSE 2 END) AS e;
INSERT INTO gdprcrm.consent_events (subject, project_id, purpose, action, captured_at, recorded_by, source, method)
SELECT p, 1, 'newsletter', 'grant', timestamptz '2025-01-02 00:00+00' + p * interval '1 second', 'bench',
       'signup form', 'checkbox'
FROM generate_series(2, :people) AS p;
INSERT INTO gdprcrm.subject_state (subject, consented)
SELECT p, (1::bigint << (SELECT bit FROM gdprcrm.purposes WHERE name = 'newsletter'))
FROM generate_series(2, :people) AS p;
RESET session_replication_role;

-- The subject's consent and restriction history, through the ledger functions.
SELECT gdprcrm.grant_consent(1, 'newsletter', 'signup form', 'checkbox', 'v1', 'Send me the newsletter',
                             captured_at => '2025-01-02') > 0 AS c1,
       gdprcrm.withdraw_consent(1, 'newsletter', 'unsubscribe link', captured_at => '2025-06-01') > 0 AS c2,
       gdprcrm.grant_consent(1, 'newsletter', 'preference centre', 'toggle', 'v2', 'Send me the newsletter',
                             captured_at => '2025-09-01') > 0 AS c3,
       gdprcrm.restrict_processing(1, 'accuracy contested') > 0 AS r1,
       gdprcrm.lift_restriction(1, 'corrected') > 0 AS r2 \gset
ANALYZE;

-- The plain SQL baseline: the subject's rows of the same tables as one
-- jsonb document, built the cheapest way (JSON text, converted once).
CREATE FUNCTION baseline(subject bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'people', (SELECT json_agg(t ORDER BY t.id) FROM gdprcrm.people t WHERE t.id = $1),
        'person_identities', (SELECT json_agg(t ORDER BY t.kind) FROM gdprcrm.person_identities t WHERE t.person_id = $1),
        'person_companies', (SELECT json_agg(t) FROM gdprcrm.person_companies t WHERE t.person_id = $1),
        'events', (SELECT json_agg(t ORDER BY t.occurred_at, t.id) FROM gdprcrm.events t WHERE t.person_id = $1),
        'messages', (SELECT json_agg(t ORDER BY t.id) FROM gdprcrm.messages t WHERE t.person_id = $1),
        'enrichments', (SELECT json_agg(t ORDER BY t.id) FROM gdprcrm.enrichments t WHERE t.person_id = $1),
        'consent_events', (SELECT json_agg(t ORDER BY t.id) FROM gdprcrm.consent_events t WHERE t.subject = $1),
        'restriction_events', (SELECT json_agg(t ORDER BY t.id) FROM gdprcrm.restriction_events t WHERE t.subject = $1))::jsonb
$$;

-- The plain SQL baseline of the purge: the subject's rows deleted from
-- the registered tables in the purge's order, people last.
CREATE FUNCTION baseline_purge(subject bigint) RETURNS void LANGUAGE sql AS $$
    DELETE FROM gdprcrm.enrichments WHERE person_id = $1;
    DELETE FROM gdprcrm.events WHERE person_id = $1;
    DELETE FROM gdprcrm.messages WHERE person_id = $1;
    DELETE FROM gdprcrm.person_companies WHERE person_id = $1;
    DELETE FROM gdprcrm.person_identities WHERE person_id = $1;
    DELETE FROM gdprcrm.people WHERE id = $1;
$$;
SQL
psql -c CHECKPOINT
loaded=$(date +%s)

echo "loaded in $((loaded - started)) s:" \
    "$(psql -Atc "SELECT to_char(count(*), 'FM999,999,999') FROM gdprcrm.events") events," \
    "$(psql -Atc "SELECT count(*) FROM gdprcrm.events WHERE person_id = 1") of the subject;" \
    "$(psql -Atc "SELECT count(*) FROM gdprcrm.messages") messages," \
    "$(psql -Atc "SELECT count(*) FROM gdprcrm.enrichments") enrichments," \
    "$(psql -Atc "SELECT count(*) FROM gdprcrm.consent_events") consent events;" \
    "database $(psql -Atc "SELECT pg_size_pretty(pg_database_size(current_database()))")"

echo "SELECT length(baseline(1)::text);" > "$dir/baseline.sql"
echo "SELECT length(gdprcrm.sar_export(1)::text);" > "$dir/jsonb.sql"
echo "SELECT table_name, length(csv) FROM gdprcrm.sar_export_csv(1);" > "$dir/csv.sql"
echo "SELECT length(gdprcrm.sar_export_html(1));" > "$dir/html.sql"
variants="baseline jsonb csv html"
chmod 644 "$dir"/*.sql
echo "result sizes: baseline $(psql -Atc 'SELECT length(baseline(1)::text)') B," \
    "jsonb $(psql -Atc 'SELECT length(gdprcrm.sar_export(1)::text)') B," \
    "csv $(psql -Atc 'SELECT sum(length(csv)) FROM gdprcrm.sar_export_csv(1)') B in" \
    "$(psql -Atc 'SELECT count(*) FROM gdprcrm.sar_export_csv(1)') documents," \
    "html $(psql -Atc 'SELECT length(gdprcrm.sar_export_html(1))') B"

# The plan of the events query inside sar_export.
echo "plan of the events query inside sar_export (auto_explain):"
psql -c "LOAD 'auto_explain'" -c "SET auto_explain.log_min_duration = 0" \
     -c "SET auto_explain.log_nested_statements = on" -c "SET auto_explain.log_level = notice" \
     -c "SELECT length(gdprcrm.sar_export(1)::text)" 2>&1 >/dev/null |
    awk '/Query Text: SELECT pg_catalog.json_agg/ && /gdprcrm.events t/ { on = 1; next }
         on && /Query Text|^(NOTICE|CONTEXT|LOG)/ { on = 0 }
         on && /[A-Za-z]/ { print "  " $0 }' | head -40

median() { awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }' "$1"; }

# time_variants LABEL: one session of pgbench running the variants in
# random order (equal weights) for DURATION seconds, each call its own
# transaction; the first call of each variant, which also fills the
# session's caches, is left out.
time_variants() {
    local label=$1 v i base med
    as_run_user "$bindir/pgbench" -n -T "$duration" -h "$dir" -p $port \
        $(for v in $variants; do printf -- '-f %s@1 ' "$dir/$v.sql"; done) \
        -l --log-prefix="$dir/log.$label" postgres >/dev/null 2>&1
    i=0
    for v in $variants; do
        awk -v s=$i '$4 == s { if (seen++) print $3 / 1000 }' "$dir"/log.$label.* | sort -n > "$dir/ms.$label.$v"
        i=$((i + 1))
    done
    base=$(median "$dir/ms.$label.baseline")
    echo "$label: the variants in random order for $duration s, one session"
    printf '%-9s %7s %9s %9s %9s %9s\n' "" calls "min ms" "median ms" "max ms" "/baseline"
    for v in $variants; do
        med=$(median "$dir/ms.$label.$v")
        printf '%-9s %7d %9.1f %9.1f %9.1f %8.1fx\n' "$v" "$(wc -l < "$dir/ms.$label.$v")" \
            "$(head -1 "$dir/ms.$label.$v")" "$med" "$(tail -1 "$dir/ms.$label.$v")" \
            "$(awk -v m="$med" -v b="$base" 'BEGIN { print m / b }')"
    done
    awk -v j="$(median "$dir/ms.$label.jsonb")" \
        'BEGIN { printf "target: jsonb median < 100 ms: %s\n", (j < 100) ? "PASS" : "MISS" }'
}

time_variants default

# The purge: the first call of each right after a checkpoint, then rounds
# of both, each call its own BEGIN ... ROLLBACK.  psql prints the time of
# every statement; a call's time is the sum of its three.
{
    echo '\o /dev/null'
    echo '\timing on'
    call() {
        echo "\echo @ $1 $2"
        echo 'BEGIN;'
        case $1 in
            baseline) echo 'SELECT baseline_purge(1);' ;;
            purge) echo "SELECT gdprcrm.purge_subject(1, 'bench');" ;;
        esac
        echo 'ROLLBACK;'
    }
    echo '\echo @ checkpoint -'
    echo 'CHECKPOINT;'
    call purge 0
    echo '\echo @ checkpoint -'
    echo 'CHECKPOINT;'
    call baseline 0
    for i in $(seq 1 "$purge_rounds"); do
        if [ $((i % 2)) -eq 1 ]; then call purge "$i"; call baseline "$i"
        else call baseline "$i"; call purge "$i"; fi
    done
} > "$dir/purge.sql"
chmod 644 "$dir/purge.sql"
echo "purge of the subject: rows $(psql -Atc "BEGIN" \
    -c "SELECT gdprcrm.purge_subject(1, 'bench')" \
    -c "SELECT detail FROM gdprcrm.rights_log WHERE subject = 1 AND action = 'purge'" -c "ROLLBACK" | tail -1)"
psql -f "$dir/purge.sql" |
    awk '/^@ / { v = $2; r = $3; next } /^Time:/ { t[v, r] += $2; n[v, r] = 1 }
         END { for (k in n) { split(k, a, SUBSEP); print a[1], a[2], t[k] } }' > "$dir/purge.times"
for v in baseline purge; do
    awk -v v=$v '$1 == v && $2 > 0 { print $3 }' "$dir/purge.times" | sort -n > "$dir/ms.purge.$v"
done
base=$(median "$dir/ms.purge.baseline")
echo "purge: BEGIN, call, ROLLBACK; first call after a CHECKPOINT, then $purge_rounds rounds, one session"
printf '%-9s %9s %7s %9s %9s %9s %9s\n' "" "first ms" calls "min ms" "median ms" "max ms" "/baseline"
for v in baseline purge; do
    med=$(median "$dir/ms.purge.$v")
    printf '%-9s %9.1f %7d %9.1f %9.1f %9.1f %8.1fx\n' "$v" \
        "$(awk -v v=$v '$1 == v && $2 == 0 { print $3 }' "$dir/purge.times")" \
        "$(wc -l < "$dir/ms.purge.$v")" "$(head -1 "$dir/ms.purge.$v")" "$med" \
        "$(tail -1 "$dir/ms.purge.$v")" "$(awk -v m="$med" -v b="$base" 'BEGIN { print m / b }')"
done
echo "subject's rows left after the rolled back purges: $(psql -Atc "SELECT count(*) FROM gdprcrm.events WHERE person_id = 1") events," \
    "purged: $(psql -Atc "SELECT purged_at IS NOT NULL FROM gdprcrm.subject_state WHERE subject = 1")"

# The same with glibc keeping the memory it frees: building a large jsonb
# value touches tens of megabytes of fresh memory, and where a page fault
# is expensive (virtual machines) that is most of its cost.
as_run_user env GLIBC_TUNABLES=glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432 \
    "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -m fast -w restart >/dev/null
time_variants kept_memory
echo "exports logged: $(psql -Atc "SELECT count(*) FROM gdprcrm.rights_log WHERE subject = 1")"
echo "total $(( $(date +%s) - started )) s"
