#!/usr/bin/env bash
# Cost of the purpose-checking row filter, side by side with no filter and
# with a naive policy.
#
#   bash test/bench/consent.sh             (PEOPLE=1000000 EVENTS=10000000 REPS=3)
#
# Starts a private PostgreSQL 15 instance with gdprcrm preloaded and fills
# gdprcrm.people with PEOPLE people and gdprcrm.events with EVENTS events of
# one project (written directly, as a bulk load would, not through
# identify/track).  Half of the people consented to the purpose
# 'newsletter' (bit set in gdprcrm.subject_state, and a row in a plain
# consents table for the naive policy).  Then it times, REPS times each
# and keeps the median:
#   none   count(*) over a copy of the table without row level security;
#   naive  the same copy under a policy
#          USING (EXISTS (SELECT 1 FROM bench.consents c WHERE c.subject = ...
#                 AND c.purpose = current_setting('gdprcrm.purpose') AND c.granted));
#   gdprcrm  count(*) over gdprcrm.people / gdprcrm.events as an application
#          role with gdprcrm.purpose = 'newsletter': the project filter and
#          gdprcrm.lawful() on every row.
# Parallel query is off for all three, so each is one backend's work.
# Targets: people at most 1.5x none, events at most 2x none.
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

people=${PEOPLE:-1000000}
events=${EVENTS:-10000000}
reps=${REPS:-3}
bindir=$("$PG_CONFIG" --bindir)
dir=$(mktemp -d /tmp/gdprcrm-bench-consent.XXXXXX)
port=5497

cleanup() { as_run_user "$bindir/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

init_private_instance "$dir" "$port" "shared_buffers = 2GB" "max_wal_size = 16GB" \
    "checkpoint_timeout = 30min" "autovacuum = off" "max_parallel_workers_per_gather = 0" "jit = off"
as_run_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
psql() { as_run_user "$bindir/psql" -X -q -h "$dir" -p $port -d postgres -v ON_ERROR_STOP=1 "$@"; }

echo "loading $people people and $events events (untimed)"
psql <<SQL
CREATE EXTENSION gdprcrm;
SELECT gdprcrm.create_event_partitions('2026-01-01', '2026-02-01');
CREATE ROLE bench_app LOGIN IN ROLE gdprcrm_app;
SELECT gdprcrm.create_project('bench', ARRAY['bench_app']::name[]);
SELECT gdprcrm.define_purpose('newsletter', 'consent', 'Monthly newsletter');
INSERT INTO gdprcrm.people (id, project_id, external_id, status)
SELECT i, 1, 'u' || i, 'anonymous' FROM generate_series(1, $people) AS i;
SELECT setval('gdprcrm.people_id_seq', $people);
INSERT INTO gdprcrm.subject_state (subject, consented)
SELECT i, 1 FROM generate_series(1, $people, 2) AS i;
INSERT INTO gdprcrm.events (project_id, person_id, occurred_at, kind, name)
SELECT 1, 1 + (i::bigint * 7919) % $people, '2026-01-01'::timestamptz + (i % 2592000) * interval '1 second',
       'custom', 'feature_used'
FROM generate_series(1, $events) AS i;

CREATE SCHEMA bench;
CREATE TABLE bench.consents (subject bigint, purpose text, granted boolean, PRIMARY KEY (subject, purpose));
INSERT INTO bench.consents SELECT i, 'newsletter', true FROM generate_series(1, $people, 2) AS i;
-- Copies with the same indexes as the real tables, so that the planner
-- has the same choices for all three.
CREATE TABLE bench.people_none (LIKE gdprcrm.people INCLUDING INDEXES);
CREATE TABLE bench.people_naive (LIKE gdprcrm.people INCLUDING INDEXES);
INSERT INTO bench.people_none SELECT * FROM gdprcrm.people;
INSERT INTO bench.people_naive SELECT * FROM gdprcrm.people;
CREATE TABLE bench.events_none (LIKE gdprcrm.events, PRIMARY KEY (person_id, occurred_at, id));
CREATE TABLE bench.events_naive (LIKE gdprcrm.events, PRIMARY KEY (person_id, occurred_at, id));
CREATE INDEX ON bench.events_none (project_id, occurred_at);
CREATE INDEX ON bench.events_naive (project_id, occurred_at);
INSERT INTO bench.events_none SELECT * FROM gdprcrm.events;
INSERT INTO bench.events_naive SELECT * FROM gdprcrm.events;
DO \$\$
DECLARE t text; c text;
BEGIN
    FOR t, c IN VALUES ('people_naive', 'id'), ('events_naive', 'person_id') LOOP
        EXECUTE format('ALTER TABLE bench.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY naive ON bench.%I USING (EXISTS (SELECT 1 FROM bench.consents c'
                       ' WHERE c.subject = %I AND c.purpose = current_setting(''gdprcrm.purpose'') AND c.granted))', t, c);
    END LOOP;
END \$\$;
GRANT USAGE ON SCHEMA bench TO bench_app;
GRANT SELECT ON ALL TABLES IN SCHEMA bench TO bench_app;
VACUUM ANALYZE;
CHECKPOINT;
SQL

# time_sql QUERY: median seconds of REPS runs of count(*) over QUERY, as
# bench_app with the purpose set, after one untimed run that warms the
# buffers and the backend's copy of the subject states.  Timings come back
# as NOTICEs, on stderr.
time_sql() {
    { psql -At 2>&1 >/dev/null <<SQL
SET ROLE bench_app;
SET gdprcrm.purpose = 'newsletter';
SELECT count(*) FROM ($1) AS warm;
DO \$\$
DECLARE t0 timestamptz; n bigint;
BEGIN
    FOR r IN 1 .. $reps LOOP
        t0 := clock_timestamp();
        EXECUTE 'SELECT count(*) FROM ($1) AS q';
        RAISE NOTICE 'seconds %', extract(epoch FROM clock_timestamp() - t0);
    END LOOP;
END \$\$;
SQL
    } | sed -n 's/.*seconds \([0-9.]*\).*/\1/p' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

visible_people=$(psql -At -c "SET ROLE bench_app; SET gdprcrm.purpose = 'newsletter'; SELECT count(*) FROM gdprcrm.people")
visible_events=$(psql -At -c "SET ROLE bench_app; SET gdprcrm.purpose = 'newsletter'; SELECT count(*) FROM gdprcrm.events")
echo "rows visible under 'newsletter': $visible_people of $people people, $visible_events of $events events"

p_none=$(time_sql "SELECT 1 FROM bench.people_none")
p_naive=$(time_sql "SELECT 1 FROM bench.people_naive")
p_ours=$(time_sql "SELECT 1 FROM gdprcrm.people")
e_none=$(time_sql "SELECT 1 FROM bench.events_none")
e_naive=$(time_sql "SELECT 1 FROM bench.events_naive")
e_ours=$(time_sql "SELECT 1 FROM gdprcrm.events")

awk -v pn="$p_none" -v pv="$p_naive" -v po="$p_ours" -v en="$e_none" -v ev="$e_naive" -v eo="$e_ours" \
    -v people="$people" -v events="$events" 'BEGIN {
    printf "\n%-34s %10s %10s\n", "count(*), median seconds", "seconds", "vs none";
    printf "%-34s %10.3f %10.2fx\n", "people, no policy", pn, 1;
    printf "%-34s %10.3f %10.2fx\n", "people, naive EXISTS policy", pv, pv / pn;
    printf "%-34s %10.3f %10.2fx\n", "people, gdprcrm filter", po, po / pn;
    printf "%-34s %10.3f %10.2fx\n", "events, no policy", en, 1;
    printf "%-34s %10.3f %10.2fx\n", "events, naive EXISTS policy", ev, ev / en;
    printf "%-34s %10.3f %10.2fx\n", "events, gdprcrm filter", eo, eo / en;
    printf "\ntarget people <= 1.5x: %s\n", (po / pn <= 1.5) ? "PASS" : "MISS";
    printf "target events <= 2x:   %s\n", (eo / en <= 2) ? "PASS" : "MISS";
}'
