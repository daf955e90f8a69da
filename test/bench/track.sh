#!/usr/bin/env bash
# track() throughput against plain INSERTs into an equivalent table.
#
#   bash test/bench/track.sh            (SECONDS_PER_RUN=30 CLIENTS=2 by default)
#
# Starts a private PostgreSQL 15 instance with gdprcrm preloaded, creates a
# project with 10,000 people, then runs pgbench with CLIENTS clients, as an
# application role, for SECONDS_PER_RUN seconds each:
#   plain  INSERT into bench.events_plain: same columns, monthly partitions,
#          primary key, project/time index and foreign key to people as
#          gdprcrm.events, but no row level security, no restricted-data
#          check and no last-seen update;
#   track  SELECT gdprcrm.track(...), which also checks the properties for
#          restricted data, goes through row level security (team and
#          purpose filters) and keeps people.last_seen_at, with the role's
#          purpose set to a contract-based one.
# Prints transactions per second of each and the ratio track/plain.
# Target: track at least half the plain rate.
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

seconds=${SECONDS_PER_RUN:-30}
clients=${CLIENTS:-2}
bindir=$("$PG_CONFIG" --bindir)
dir=$(mktemp -d /tmp/gdprcrm-bench-track.XXXXXX)
port=5498

cleanup() { as_run_user "$bindir/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

init_private_instance "$dir" "$port" "shared_buffers = 512MB" "max_wal_size = 4GB"
as_run_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
psql() { as_run_user "$bindir/psql" -X -q -h "$dir" -p $port -d postgres -v ON_ERROR_STOP=1 "$@"; }

month=$(date -u +%Y-%m-01)
psql <<SQL
CREATE EXTENSION gdprcrm;
SELECT gdprcrm.create_event_partitions(('$month'::date - interval '1 month')::date, ('$month'::date + interval '2 months')::date);
CREATE ROLE bench_app LOGIN IN ROLE gdprcrm_app;
SELECT gdprcrm.create_project('bench', ARRAY['bench_app']::name[]);
-- track() updates last_seen_at only under a purpose lawful for the person.
SELECT gdprcrm.define_purpose('operations', 'contract', 'Operating the product');
ALTER ROLE bench_app SET gdprcrm.purpose = 'operations';
SET ROLE bench_app;
SELECT count(gdprcrm.identify(1, 'u' || i, 'user' || i || '@example.com')) FROM generate_series(1, 10000) AS i;
RESET ROLE;

CREATE SCHEMA bench;
CREATE TABLE bench.events_plain (LIKE gdprcrm.events INCLUDING DEFAULTS,
    FOREIGN KEY (project_id, person_id) REFERENCES gdprcrm.people (project_id, id))
    PARTITION BY RANGE (occurred_at);
DO \$\$
DECLARE m date := date_trunc('month', '$month'::date - interval '1 month');
BEGIN
    WHILE m < '$month'::date + interval '2 months' LOOP
        EXECUTE format('CREATE TABLE bench.%I PARTITION OF bench.events_plain FOR VALUES FROM (%L) TO (%L)',
                       'p_' || to_char(m, 'YYYY_MM'), m, m + interval '1 month');
        EXECUTE format('ALTER TABLE bench.%I ADD PRIMARY KEY (person_id, occurred_at, id)', 'p_' || to_char(m, 'YYYY_MM'));
        EXECUTE format('CREATE INDEX ON bench.%I (project_id, occurred_at)', 'p_' || to_char(m, 'YYYY_MM'));
        m := m + interval '1 month';
    END LOOP;
END \$\$;
GRANT USAGE ON SCHEMA bench TO bench_app;
GRANT INSERT ON bench.events_plain TO bench_app;
SQL

first=$(psql -Atc "SELECT min(id) FROM gdprcrm.people")
cat > "$dir/plain.sql" <<SQL
\set person random($first, $first + 9999)
INSERT INTO bench.events_plain (project_id, person_id, occurred_at, kind, name, properties)
VALUES (1, :person, now(), 'custom', 'feature_used', '{"feature": "export", "count": 3}');
SQL
cat > "$dir/track.sql" <<SQL
\set person random($first, $first + 9999)
SELECT gdprcrm.track(1, :person, 'feature_used', '{"feature": "export", "count": 3}');
SQL
chmod 644 "$dir"/*.sql

run() {
    psql -c CHECKPOINT
    as_run_user "$bindir/pgbench" -n -M prepared -c "$clients" -j "$clients" -T "$seconds" \
        -h "$dir" -p $port -U bench_app -f "$dir/$1.sql" postgres 2>&1 |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}

echo "pgbench, $clients clients, $seconds s each, 10,000 people, logged tables, synchronous_commit on"
plain=$(run plain)
track=$(run track)
awk -v p="$plain" -v t="$track" 'BEGIN {
    printf "%-8s %12s %8s\n", "", "tps", "ratio";
    printf "%-8s %12.0f %8.2f\n", "plain", p, 1;
    printf "%-8s %12.0f %8.2f\n", "track", t, t / p;
    printf "target: track >= 0.5 x plain: %s\n", (t / p >= 0.5) ? "PASS" : "MISS";
}'
echo "events stored: $(psql -Atc 'SELECT count(*) FROM gdprcrm.events') tracked, $(psql -Atc 'SELECT count(*) FROM bench.events_plain') plain"
