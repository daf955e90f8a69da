#!/usr/bin/env bash
# identify() and import_people() side by side with a plain upsert and a
# pgcrypto upsert of the same row, at several table sizes, with and without
# planner statistics.
#
#   bash test/bench/identify.sh                   # about 4 minutes on 2 cores
#   SIZES="1000 10000" REPS=3 bash test/bench/identify.sh       # quick run
#   GDPRCRM_VERSION=0.5.0 GROWTH=5000 bash test/bench/identify.sh   # an installed older version
#
# Starts a private PostgreSQL 15 instance (a temporary directory, a Unix
# socket in it and no TCP listener, gdprcrm preloaded with a development
# key; autovacuum, parallel query and JIT off, so that no table has
# statistics until the script runs ANALYZE and every timed statement runs
# alone).  For each size S in SIZES it creates a database holding one
# project with S people (written directly, as a bulk load would: people,
# their identifiers and their encrypted emails) and two tables of S rows
# for the baselines:
#
#   bench.people_plain     the columns of gdprcrm.people with the email in
#                          plain text, the same indexes but a unique one on
#                          (project_id, external_id) instead of the
#                          identifier table, and the foreign key to projects;
#   bench.people_pgcrypto  the same with the email encrypted by pgcrypto
#                          (encrypt_iv, aes-cbc, a random IV per row) and an
#                          HMAC-SHA256 blind index of it, indexed.
#
# Then, in that database, first without statistics and then after ANALYZE
# (each in a new session, as the application role bench_app, a member of
# gdprcrm_app, with no purpose declared), one untimed round of the
# existing-row loops and REPS rounds of these timed statements, round
# robin:
#
#   plain new / plain existing      BATCH times, from a PL/pgSQL loop:
#       INSERT INTO bench.people_plain ... ON CONFLICT (project_id,
#       external_id) DO UPDATE SET email = EXCLUDED.email, traits = traits
#       || EXCLUDED.traits RETURNING id, of a row not there yet / already there;
#   pgcrypto new / pgcrypto existing   the same into bench.people_pgcrypto,
#       encrypting the email and computing its HMAC in the statement;
#   identify new / identify existing   BATCH calls of gdprcrm.identify(project,
#       external_id, email, traits) from the same kind of loop;
#   import new   one call of gdprcrm.import_people(project, people) with
#       IMPORT new people;
#   import existing   the same with min(IMPORT, S) people already there.
#
# Each timed statement runs in a transaction that is rolled back, and what
# it left behind is vacuumed away before the next one (untimed; VACUUM
# leaves pg_statistic empty), so every statement meets the same S people;
# identifiers of new people differ between rounds.  Times are taken with
# clock_timestamp() around the loop or the call.  Finally GROWTH new people
# are identified in one transaction of a new database, from empty tables
# without statistics, in 20 slices, and the last slice is compared with
# the first.
#
# Prints min, median and max per call (per person for the import), the
# ratios of the medians, and PASS/MISS against the targets (informational:
# the exit status is 0 unless something failed).  gdprcrm (and pgcrypto)
# must be installed into the PostgreSQL that PG_CONFIG names.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../lib.sh"    # PG_CONFIG, run_user, as_run_user, init_private_instance

SIZES=${SIZES:-"1000 100000"}
BATCH=${BATCH:-2000}
IMPORT=${IMPORT:-20000}
REPS=${REPS:-5}
GROWTH=${GROWTH:-20000}
VERSION=${GDPRCRM_VERSION:-}
for v in BATCH IMPORT REPS GROWTH; do
    if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
        echo "$v must be a positive integer, not '${!v}'" >&2
        exit 2
    fi
done
for s in $SIZES; do
    if ! [[ $s =~ ^[1-9][0-9]*$ ]]; then
        echo "SIZES must be positive integers, not '$SIZES'" >&2
        exit 2
    fi
done
if [ -n "$VERSION" ] && ! [[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "GDPRCRM_VERSION must look like 0.4.0, not '$VERSION'" >&2
    exit 2
fi
SLICE=$(( (GROWTH + 19) / 20 ))

bindir=$("$PG_CONFIG" --bindir)
if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/gdprcrm.control" ]; then
    echo "gdprcrm is not installed into $("$PG_CONFIG" --sharedir); run make install first" >&2
    exit 1
fi

work=$(mktemp -d /tmp/gdprcrm-bench-identify.XXXXXX)
data=$work/data
port=5496
results=$work/results

cleanup() {
    if [ -f "$data/postmaster.pid" ]; then
        as_run_user "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# psql_db DB [psql options]: statements from stdin or -c/-f, errors fatal.
# RESULT lines come back as NOTICEs, on stderr.
psql_db() {
    local db=$1
    shift
    PGOPTIONS='-c client_min_messages=warning' as_run_user "$bindir/psql" -X -q -At \
        -v ON_ERROR_STOP=1 -h "$work" -p "$port" -d "$db" "$@"
}
# results_of DB FILE: run FILE and keep its RESULT lines.
results_of() {
    if ! PGOPTIONS='-c client_min_messages=notice' as_run_user "$bindir/psql" -X -q -At \
            -v ON_ERROR_STOP=1 -h "$work" -p "$port" -d "$1" -f "$2" >/dev/null 2>"$work/notices"; then
        grep -v 'NOTICE:  RESULT' "$work/notices" >&2
        return 1
    fi
    sed -n 's/.*NOTICE:  \(RESULT .*\)/\1/p' "$work/notices"
}

# ---------------------------------------------------------------- machine
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "== machine"
echo "cpu: $cpu, $(nproc) cores; kernel $(uname -r); $("$bindir/postgres" --version)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (figures vary on a shared machine)"

# ---------------------------------------------------------------- instance
echo "== starting a private instance in $work"
init_private_instance "$work" "$port" \
    "shared_buffers = 1GB" "max_wal_size = 8GB" "min_wal_size = 1GB" \
    "checkpoint_timeout = 30min" "autovacuum = off" \
    "max_parallel_workers_per_gather = 0" "jit = off"
if ! as_run_user "$bindir/pg_ctl" -D "$data" -l "$work/server.log" -w start >/dev/null; then
    cat "$work/server.log" >&2
    exit 1
fi
echo "sizes: $SIZES people; $BATCH calls per timed loop, $IMPORT people per import, $REPS rounds;" \
     "growth: $GROWTH people in one transaction${VERSION:+; gdprcrm version $VERSION}"

# After each rolled back statement, untimed: what it left behind is
# vacuumed away, so that every statement meets the same tables (dead
# index entries would slow the later ones).  VACUUM keeps pg_statistic
# as it is: empty before ANALYZE.
VACUUM="RESET ROLE; VACUUM gdprcrm.people, gdprcrm.person_identities, gdprcrm.subject_keys, bench.people_plain, bench.people_pgcrypto; SET ROLE bench_app;"

# The baselines' pgcrypto keys, fixed as an application's would be.
CBC_KEY="'\\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea"
MAC_KEY="'\\x202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f'::bytea"
TRAITS="'{\"plan\": \"pro\"}'::jsonb"

# create_db DB: a database with gdprcrm, pgcrypto, one project (id 1) whose
# team is bench_app, and the two baseline tables, all empty.
create_db() {
    local db=$1
    psql_db postgres -c "CREATE DATABASE $db" >/dev/null
    psql_db "$db" >/dev/null <<SQL
CREATE EXTENSION gdprcrm ${VERSION:+VERSION '$VERSION'};
CREATE EXTENSION pgcrypto;
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_app') THEN
        CREATE ROLE bench_app LOGIN IN ROLE gdprcrm_app;
    END IF;
END \$\$;
SELECT gdprcrm.create_project('bench', ARRAY['bench_app']::name[]);

CREATE SCHEMA bench;
CREATE SEQUENCE bench.people_id_seq;
CREATE TABLE bench.people_plain (
    id bigint PRIMARY KEY DEFAULT nextval('bench.people_id_seq'),
    project_id bigint NOT NULL REFERENCES gdprcrm.projects,
    external_id text,
    email text,
    name text,
    phone text,
    traits jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'identified' CHECK (status IN ('anonymous', 'identified', 'merged')),
    merged_into bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    first_seen_at timestamptz,
    last_seen_at timestamptz,
    UNIQUE (project_id, id),
    UNIQUE (project_id, external_id)
);
CREATE INDEX ON bench.people_plain (project_id, lower(email)) WHERE email IS NOT NULL;
CREATE INDEX ON bench.people_plain
    (project_id, greatest(updated_at, coalesce(last_seen_at, '-infinity'::timestamptz)));
CREATE TABLE bench.people_pgcrypto (LIKE bench.people_plain INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    email_hmac bytea,
    UNIQUE (project_id, id),
    UNIQUE (project_id, external_id),
    FOREIGN KEY (project_id) REFERENCES gdprcrm.projects);
ALTER TABLE bench.people_pgcrypto ALTER COLUMN email TYPE bytea USING NULL;
CREATE INDEX ON bench.people_pgcrypto (project_id, email_hmac) WHERE email_hmac IS NOT NULL;
CREATE INDEX ON bench.people_pgcrypto
    (project_id, greatest(updated_at, coalesce(last_seen_at, '-infinity'::timestamptz)));
ALTER TABLE bench.people_pgcrypto ADD PRIMARY KEY (id);
GRANT USAGE ON SCHEMA bench TO bench_app;
GRANT SELECT, INSERT, UPDATE ON bench.people_plain, bench.people_pgcrypto TO bench_app;
GRANT USAGE ON SEQUENCE bench.people_id_seq TO bench_app;
SQL
}

# fill_db DB SIZE: SIZE people u1..uSIZE with emails user<i>@example.com
# and traits {"plan": "pro"}, in gdprcrm and in both baselines.
fill_db() {
    local db=$1 n=$2
    psql_db "$db" >/dev/null <<SQL
INSERT INTO gdprcrm.people (id, project_id, external_id, email, email_bidx, traits, status, first_seen_at)
SELECT i, 1, 'u' || i, gdprcrm.encrypt(i, 'user' || i || '@example.com', 'crm.people.email'),
       gdprcrm.blind_index(gdprcrm.normalize_email('user' || i || '@example.com'), 'email'),
       $TRAITS, 'identified', now()
FROM generate_series(1, $n) AS i;
SELECT setval('gdprcrm.people_id_seq', $n);
INSERT INTO gdprcrm.person_identities (project_id, kind, key, person_id)
SELECT 1, 'external_id', gdprcrm.blind_index('u' || i, 'external_id'), i FROM generate_series(1, $n) AS i;
INSERT INTO gdprcrm.person_identities (project_id, kind, key, person_id)
SELECT 1, 'email', email_bidx, id FROM gdprcrm.people;
INSERT INTO bench.people_plain (project_id, external_id, email, traits, first_seen_at)
SELECT 1, 'u' || i, 'user' || i || '@example.com', $TRAITS, now() FROM generate_series(1, $n) AS i;
INSERT INTO bench.people_pgcrypto (project_id, external_id, email, email_hmac, traits, first_seen_at)
SELECT 1, 'u' || i, iv || encrypt_iv(convert_to(e, 'UTF8'), $CBC_KEY, iv, 'aes-cbc/pad:pkcs'),
       hmac(convert_to(lower(e), 'UTF8'), $MAC_KEY, 'sha256'), $TRAITS, now()
FROM (SELECT i, 'user' || i || '@example.com' AS e, gen_random_bytes(16) AS iv
      FROM generate_series(1, $n) AS i) AS s;
CHECKPOINT;
SQL
}

# The statement of one loop iteration, per variant; i runs over the loop,
# n names new rows (unique per round), e existing ones.
loop_stmt() {
    case $1 in
        plain)
            echo "INSERT INTO bench.people_plain AS p (project_id, external_id, email, traits, first_seen_at)" \
                 "VALUES (1, k, m, $TRAITS, now())" \
                 "ON CONFLICT (project_id, external_id) DO UPDATE SET email = EXCLUDED.email, traits = p.traits || EXCLUDED.traits" \
                 "RETURNING id INTO v;" ;;
        pgcrypto)
            echo "iv := gen_random_bytes(16);" \
                 "INSERT INTO bench.people_pgcrypto AS p (project_id, external_id, email, email_hmac, traits, first_seen_at)" \
                 "VALUES (1, k, iv || encrypt_iv(convert_to(m, 'UTF8'), $CBC_KEY, iv, 'aes-cbc/pad:pkcs')," \
                 "hmac(convert_to(lower(m), 'UTF8'), $MAC_KEY, 'sha256'), $TRAITS, now())" \
                 "ON CONFLICT (project_id, external_id) DO UPDATE SET email = EXCLUDED.email," \
                 "email_hmac = EXCLUDED.email_hmac, traits = p.traits || EXCLUDED.traits" \
                 "RETURNING id INTO v;" ;;
        identify)
            echo "v := gdprcrm.identify(1, k, m, $TRAITS);" ;;
    esac
}

# timed_loop SIZE STATS VARIANT AGE ROUND: BATCH iterations in a rolled
# back transaction, printing "RESULT size stats variant-age round n seconds".
timed_loop() {
    local size=$1 stats=$2 variant=$3 age=$4 round=$5 k m
    if [ "$age" = new ]; then
        k="'n$round-' || i"
        m="'new$round-' || i || '@example.com'"
    else
        k="'u' || (i % $size + 1)"
        m="'user' || (i % $size + 1) || '@example.com'"
    fi
    cat <<SQL
BEGIN;
DO \$\$
DECLARE v bigint; iv bytea; k text; m text; t0 timestamptz;
BEGIN
    t0 := clock_timestamp();
    FOR i IN 1 .. $BATCH LOOP
        k := $k;
        m := $m;
        $(loop_stmt "$variant")
    END LOOP;
    RAISE NOTICE 'RESULT $size $stats $variant-$age $round $BATCH %', extract(epoch FROM clock_timestamp() - t0);
END \$\$;
ROLLBACK;
$VACUUM
SQL
}

# timed_import SIZE STATS AGE ROUND: one import_people call in a rolled
# back transaction; its document is built before the clock starts.
timed_import() {
    local size=$1 stats=$2 age=$3 round=$4 n k m
    if [ "$age" = new ]; then
        n=$IMPORT
        k="'i$round-' || i"
        m="'imp$round-' || i || '@example.com'"
    else
        n=$(( IMPORT < size ? IMPORT : size ))
        k="'u' || i"
        m="'user' || i || '@example.com'"
    fi
    cat <<SQL
BEGIN;
DO \$\$
DECLARE doc jsonb; c bigint; t0 timestamptz;
BEGIN
    SELECT jsonb_agg(jsonb_build_object('external_id', $k, 'email', $m, 'traits', $TRAITS))
    INTO doc FROM generate_series(1, $n) AS i;
    t0 := clock_timestamp();
    SELECT count(*) INTO c FROM gdprcrm.import_people(1, doc);
    RAISE NOTICE 'RESULT $size $stats import-$age $round $n %', extract(epoch FROM clock_timestamp() - t0);
    IF c <> $n THEN
        RAISE EXCEPTION 'import_people returned % rows for % people', c, $n;
    END IF;
END \$\$;
ROLLBACK;
$VACUUM
SQL
}

# ---------------------------------------------------------------- sizes
for size in $SIZES; do
    db=bench_$size
    echo "== $size people: loading (untimed)"
    create_db "$db"
    has_import=$(psql_db "$db" -c "SELECT to_regprocedure('gdprcrm.import_people(bigint, jsonb)') IS NOT NULL")
    fill_db "$db" "$size"
    for stats in none analyzed; do
        if [ "$stats" = analyzed ]; then
            psql_db "$db" -c "ANALYZE" >/dev/null
        fi
        nstats=$(psql_db "$db" -c "SELECT count(*) FROM pg_statistic WHERE starelid IN
                                   ('gdprcrm.people'::regclass, 'gdprcrm.person_identities'::regclass)")
        echo "== $size people, statistics: $stats ($nstats rows of pg_statistic for people and identifiers); $REPS rounds"
        {
            echo "SET ROLE bench_app;"
            # Untimed warm-up: the first calls of a session plan and
            # compile; the timed loops measure the steady state.
            for variant in plain pgcrypto identify; do
                timed_loop "$size" warmup "$variant" existing 0
            done
            for round in $(seq 1 "$REPS"); do
                for variant in plain pgcrypto identify; do
                    timed_loop "$size" "$stats" "$variant" new "$round"
                    timed_loop "$size" "$stats" "$variant" existing "$round"
                done
                if [ "$has_import" = t ]; then
                    timed_import "$size" "$stats" new "$round"
                    timed_import "$size" "$stats" existing "$round"
                fi
            done
        } > "$work/round.sql"
        results_of "$db" "$work/round.sql" | { grep -v ' warmup ' || true; } >> "$results"
    done
    # Correctness of what was timed: nothing was kept, the loaded people
    # are intact and each decrypts to its address.
    psql_db "$db" >/dev/null <<SQL
DO \$\$ BEGIN
    IF (SELECT count(*) FROM gdprcrm.people) <> $size
       OR (SELECT count(*) FROM gdprcrm.person_identities) <> 2 * $size
       OR EXISTS (SELECT 1 FROM gdprcrm.people
                  WHERE gdprcrm.decrypt(email, 'crm.people.email') <> 'user' || id || '@example.com') THEN
        RAISE EXCEPTION 'check failed: the people of bench_$size changed';
    END IF;
END \$\$;
SQL
    psql_db postgres -c "DROP DATABASE $db" >/dev/null
done

# ---------------------------------------------------------------- growth
echo "== growth: $GROWTH new people identified in one transaction, no statistics"
create_db bench_growth
cat > "$work/growth.sql" <<SQL
SET ROLE bench_app;
BEGIN;
DO \$\$
DECLARE v bigint; t0 timestamptz;
BEGIN
    FOR s IN 1 .. 20 LOOP
        t0 := clock_timestamp();
        FOR i IN (s - 1) * $SLICE + 1 .. s * $SLICE LOOP
            v := gdprcrm.identify(1, 'g' || i, 'grow' || i || '@example.com', $TRAITS);
        END LOOP;
        RAISE NOTICE 'RESULT growth none slice-% 1 $SLICE %', s, extract(epoch FROM clock_timestamp() - t0);
    END LOOP;
END \$\$;
COMMIT;
SQL
results_of bench_growth "$work/growth.sql" >> "$results"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- report
echo
awk -v sizes="$SIZES" -v batch="$BATCH" -v reps="$REPS" -v slice="$SLICE" '
function sortv(list, a,    n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n
}
function med(list,    a, n) { n = sortv(list, a); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function lo(list,    a, n) { n = sortv(list, a); return a[1] }
function hi(list,    a, n) { n = sortv(list, a); return a[n] }
function commas(x,    s, r) {
    s = sprintf("%.0f", x); r = ""
    while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
    return s r
}
$1 == "RESULT" {
    key = $2 " " $3 " " $4
    us[key] = us[key] (key in us ? " " : "") ($7 * 1e6 / $6)
    count[key] = $6
}
END {
    nv = split("plain-new pgcrypto-new identify-new import-new plain-existing pgcrypto-existing identify-existing import-existing", order, " ")
    label["plain-new"] = "plain upsert, new row"
    label["pgcrypto-new"] = "pgcrypto upsert, new row"
    label["identify-new"] = "identify, new person"
    label["import-new"] = "import_people, new people"
    label["plain-existing"] = "plain upsert, existing row"
    label["pgcrypto-existing"] = "pgcrypto upsert, existing row"
    label["identify-existing"] = "identify, existing person"
    label["import-existing"] = "import_people, existing people"
    base["plain-new"] = "plain-new"; base["pgcrypto-new"] = "plain-new"; base["identify-new"] = "plain-new"
    base["import-new"] = "plain-new"
    base["plain-existing"] = "plain-existing"; base["pgcrypto-existing"] = "plain-existing"
    base["identify-existing"] = "plain-existing"; base["import-existing"] = "plain-existing"
    ns = split(sizes, size, " ")
    fmt = "| %-32s | %9s | %9s | %9s | %8s | %11s | %7s |\n"
    for (s = 1; s <= ns; s++) {
        for (st = 1; st <= 2; st++) {
            stats = st == 1 ? "none" : "analyzed"
            printf "== %s people, %s; us per call (import: per person), %d rounds\n\n", commas(size[s]), (st == 1 ? "no statistics" : "after ANALYZE"), reps
            printf fmt, "statement", "min", "median", "max", "vs plain", "vs pgcrypto", "calls"
            printf "|%s|%s|%s|%s|%s|%s|%s|\n", "----------------------------------", "----------:", "----------:", "----------:", "---------:", "------------:", "--------:"
            for (v = 1; v <= nv; v++) {
                key = size[s] " " stats " " order[v]
                if (!(key in us)) continue
                m = med(us[key])
                b = med(us[size[s] " " stats " " base[order[v]]])
                pb = order[v] ~ /new/ ? "pgcrypto-new" : "pgcrypto-existing"
                p = med(us[size[s] " " stats " " pb])
                printf fmt, label[order[v]], sprintf("%.1f", lo(us[key])), sprintf("%.1f", m), sprintf("%.1f", hi(us[key])),
                    sprintf("%.2fx", m / b), sprintf("%.2fx", m / p), commas(count[key])
                medians[key] = m
            }
            print ""
        }
    }
    print "== flatness: median us per call by size and statistics"
    print ""
    printf "| %-32s |", "statement"
    for (s = 1; s <= ns; s++) printf " %14s | %14s |", commas(size[s]) ", none", commas(size[s]) ", analyzed"
    printf " %9s |\n", "max/min"
    printf "|%s|", "----------------------------------"
    for (s = 1; s <= ns; s++) printf "%s|%s|", "----------------:", "----------------:"
    printf "%s|\n", "----------:"
    for (v = 1; v <= nv; v++) {
        mx = 0; mn = 1e18; any = 0
        line = sprintf("| %-32s |", label[order[v]])
        for (s = 1; s <= ns; s++)
            for (st = 1; st <= 2; st++) {
                key = size[s] " " (st == 1 ? "none" : "analyzed") " " order[v]
                if (!(key in medians)) { line = line sprintf(" %14s |", "-"); continue }
                any = 1; m = medians[key]
                if (m > mx) mx = m
                if (m < mn) mn = m
                line = line sprintf(" %14.1f |", m)
            }
        if (any) printf "%s %8.2fx |\n", line, mx / mn
    }
    print ""
    first = us["growth none slice-1"]; last = us["growth none slice-20"]
    if (first != "") {
        total = 0
        for (i = 1; i <= 20; i++) total += us["growth none slice-" i] * slice / 1e6
        printf "== growth: %s people identified in one transaction without statistics: %.1f s in all;\n", commas(20 * slice), total
        printf "   first %s: %.1f us per call, last %s: %.1f us per call, last/first %.2fx\n\n", commas(slice), first, commas(slice), last, last / first
    }

    print "== targets (informational)"
    for (s = 1; s <= ns; s++)
        for (st = 1; st <= 2; st++) {
            stats = st == 1 ? "none" : "analyzed"
            k = size[s] " " stats
            if ((k " identify-new") in medians) {
                r = medians[k " identify-new"] / medians[k " plain-new"]
                printf "%-4s  identify of a new person <= 3x plain upsert (%s people, %s)  %.2fx\n",
                    (r <= 3 ? "PASS" : "MISS"), commas(size[s]), stats, r
            }
            if ((k " import-new") in medians) {
                rate = 1e6 / medians[k " import-new"]
                printf "%-4s  import >= 20,000 people/s (%s people, %s)  %s/s\n",
                    (rate >= 20000 ? "PASS" : "MISS"), commas(size[s]), stats, commas(rate)
            }
        }
    for (v = 1; v <= nv; v++) {
        if (order[v] !~ /^identify/) continue
        mx = 0; mn = 1e18
        for (s = 1; s <= ns; s++)
            for (st = 1; st <= 2; st++) {
                key = size[s] " " (st == 1 ? "none" : "analyzed") " " order[v]
                if (key in medians) { if (medians[key] > mx) mx = medians[key]; if (medians[key] < mn) mn = medians[key] }
            }
        printf "%-4s  %s flat across sizes and statistics (max/min of medians <= 1.5)  %.2fx\n",
            (mx / mn <= 1.5 ? "PASS" : "MISS"), label[order[v]], mx / mn
    }
    if (first != "")
        printf "%-4s  growth: last slice <= 1.5x the first  %.2fx\n", (last / first <= 1.5 ? "PASS" : "MISS"), last / first
}' "$results"
